"""Helpers shared by the reliability suite: run the real CLI entry point in-process."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``run_cli(*args)`` calls ``cli.main()`` (the console script, with its error -> exit code
    mapping) with ``args`` and returns the exit code and what it printed."""

    def call(*args: str) -> CliResult:
        import cli

        monkeypatch.setattr(sys, "argv", ["noiseal-ray", *args])
        capsys.readouterr()
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return call
