"""Progress output of a run: one clear line per stage with counts, rate and time."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class Progress:
    """One clear line per stage with counts, rate and time; quiet otherwise.

    ``echo`` receives each line (default: print and flush); ``enabled=False`` prints nothing but
    still times the stages.
    """

    def __init__(self, enabled: bool = True, echo: Callable[[str], None] | None = None):
        self.enabled = enabled
        self.echo = echo or (lambda s: print(s, flush=True))

    @contextmanager
    def stage(self, label: str, *, rows: int | None = None) -> Iterator[dict]:
        """Announce ``label``, run the block, then print its time and rate.

        The block gets a dict it may fill: ``rows`` (overrides the argument, for the rate) and
        ``note`` (appended in parentheses). After the block the dict holds ``seconds``.
        """
        info: dict = {}
        t0 = time.time()
        if self.enabled:
            self.echo(f"  {label} ...")
        yield info
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
