"""Quiet runs: what reaches the terminal and what goes to the log file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from noiseal_ray.console import others_to_log

CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from pathlib import Path
    from noiseal_ray.console import others_to_log

    log = Path(sys.argv[1]) if sys.argv[1] != "-" else None
    with others_to_log(log) as console:
        print("ours: stage done", file=console)
        os.write(2, b"E core_worker.cc: C++ line written to the descriptor\\n")
        print("(raylet) WARNING: 8 PYTHON worker processes", flush=True)
        logging.getLogger("ray").warning("token authentication is enabled")
        print("ours: second line", file=console)
    print("after: the command's last words")
    """
)


def _child(tmp_path, log_arg: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, log_arg], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=None)


def test_quiet_run_shows_only_our_lines_and_keeps_the_rest_in_the_log(tmp_path):
    log = tmp_path / "logs" / "ray.log"
    proc = _child(tmp_path, str(log))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ours: stage done", "ours: second line",
                                        "after: the command's last words"]
    assert proc.stderr == ""
    kept = log.read_text()
    for line in ("C++ line written to the descriptor", "8 PYTHON worker processes",
                 "token authentication is enabled"):
        assert line in kept
    assert "ours:" not in kept


def test_verbose_changes_nothing(tmp_path):
    proc = _child(tmp_path, "-")
    assert "ours: stage done" in proc.stdout and "8 PYTHON worker processes" in proc.stdout
    assert "C++ line" in proc.stderr and "token authentication" in proc.stderr


def test_descriptors_come_back_after_an_exception(tmp_path, capfd):
    log = tmp_path / "ray.log"
    try:
        with others_to_log(log):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    print("visible again")
    assert "visible again" in capfd.readouterr().out
    assert "visible again" not in log.read_text()


def test_a_log_gets_plain_lines_once(tmp_path):
    import io

    from noiseal_ray.console import Terminal

    out = io.StringIO()
    term = Terminal(stream=out)
    term.begin("  score with both models")
    term.end()
    term.line("  score with both models done in 1.0s")
    assert out.getvalue().splitlines() == ["  score with both models ...", "  score with both models done in 1.0s"]


def test_a_terminal_gets_a_live_stage_line_and_the_finished_lines(tmp_path):
    import io

    from noiseal_ray.console import Terminal

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    term = Terminal(stream=out)
    term.begin("  train 2 epoch(s)")
    term.line("  a note while it runs")
    term.end()
    term.line("  train 2 epoch(s) done in 3.0s")
    text = out.getvalue()
    assert "a note while it runs" in text and text.rstrip().endswith("train 2 epoch(s) done in 3.0s")
    assert "train 2 epoch(s) ..." not in text  # the spinner replaces the "..." line
