"""Where a run's output goes: our progress lines to the user's terminal, everything else to a log file."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO


def _is_fd(stream: TextIO, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # CliRunner's buffers, closed streams
        return False


@contextmanager
def others_to_log(log_path: Path | None) -> Iterator[TextIO]:
    """Send file descriptors 1 and 2 to ``log_path`` while inside; yield a stream for our own lines.

    Ray writes to the driver's stdout and stderr from places no logging setting reaches: the
    raylet's warnings relayed by a driver thread, the driver's C++ core worker, Ray Data's
    console handler, and libraries' tqdm bars. Redirecting the descriptors catches all of them
    and keeps them, in order, in one file the user can open. The yielded stream writes to the
    terminal the command started with.

    ``log_path=None`` (``--verbose``) changes nothing and yields ``sys.stdout``. Where
    ``sys.stdout`` is not descriptor 1 (a test runner's buffer), our lines keep going to it.
    The descriptors are restored on the way out, also on an exception or Ctrl-C.
    """
    if log_path is None:
        yield sys.stdout
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ours_is_fd1 = _is_fd(sys.stdout, 1)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console = os.fdopen(os.dup(saved[1]), "w", buffering=1) if ours_is_fd1 else sys.stdout
    try:
        for fd in (1, 2):
            os.dup2(log_fd, fd)
        yield console
    finally:
        for stream in (sys.stdout, sys.stderr, console):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)
        if console is not sys.stdout:
            console.close()


class Terminal:
    """Our lines, and on a terminal a live line for the stage that is running.

    On a terminal (``stream.isatty()``) a running stage shows as a spinner with its name and the
    time spent so far (rich), and finished stages print above it; in a log or a pipe every line is
    plain text, written once. ``line`` may be called from the driver thread only.
    """

    def __init__(self, *, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._task = None

    def line(self, text: str) -> None:
        """Print one finished line (above the live stage line on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def begin(self, label: str) -> None:
        """A stage starts: a live spinner on a terminal, a ``label ...`` line elsewhere."""
        if not self.live:
            self.line(f"{label} ...")
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.end()
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                             console=Console(file=self.stream), transient=True)
        self._task = self._bar.add_task(label, total=None)
        self._bar.start()

    def end(self) -> None:
        """The running stage is over (its ``done`` line comes through ``line``)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None
