"""Progress output of a run: one clear line per stage with counts, rate and time."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from noiseal_ray.console import Terminal


class Progress:
    """One clear line per stage with counts, rate and time; quiet otherwise.

    Lines go to ``echo`` when given (tests and benchmarks collect them), else to ``terminal``
    (default: stdout), which on a real terminal also shows the running stage live with its
    elapsed time. ``enabled=False`` prints nothing but still times the stages.
    """

    def __init__(self, enabled: bool = True, echo: Callable[[str], None] | None = None, *,
                 terminal: Terminal | None = None):
        self.enabled = enabled
        self.terminal = None if echo else (terminal or Terminal())
        self.echo = echo or self.terminal.line

    @contextmanager
    def stage(self, label: str, *, rows: int | None = None) -> Iterator[dict]:
        """Announce ``label``, run the block, then print its time and rate.

        The block gets a dict it may fill: ``rows`` (overrides the argument, for the rate) and
        ``note`` (appended in parentheses). After the block the dict holds ``seconds``.
        """
        info: dict = {}
        t0 = time.time()
        if self.enabled:
            if self.terminal is not None:
                self.terminal.begin(f"  {label}")
            else:
                self.echo(f"  {label} ...")
        try:
            yield info
        finally:
            if self.enabled and self.terminal is not None:
                self.terminal.end()
        dt = time.time() - t0
        info["seconds"] = dt
        if self.enabled:
            n = info.get("rows", rows)
            rate = f", {n / dt:,.0f} rows/s" if n and dt > 0 else ""
            extra = f" ({info['note']})" if info.get("note") else ""
            self.echo(f"  {label} done in {dt:.1f}s{rate}{extra}")

    def note(self, text: str) -> None:
        """One indented line (when enabled)."""
        if self.enabled:
            self.echo(f"  {text}")
