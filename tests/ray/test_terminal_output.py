"""What a user sees: `noiseal-ray run` prints our progress lines and none of Ray's own messages,
which go to OUT/logs/ray.log instead (the real CLI, a real local Ray, the tiny encoder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from noiseal_ray.pipeline import sample_data_path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = sample_data_path()

# Our lines: the header, indented stage lines, the summary. Anything else came from somewhere else.
OURS = ("noiseal-ray run:", "  ", "done:", "outputs:")


def test_a_run_shows_our_lines_and_keeps_rays_in_the_log(tiny_encoder, tmp_path):
    cfg = dict(data=SAMPLE, label_col="noisy_label", clean_label_col="label", id_col="id",
               strong_model=tiny_encoder, warmup_epochs=1, rounds=1, workers=2, annotator="knn",
               max_length=32, weak_embed_dim=16, weak_hidden=16, report=False, seed=3)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NOISEAL_VERBOSE", None)
    done = subprocess.run([sys.executable, "-m", "cli", "run", "--config", str(cfg_file), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    foreign = [line for line in lines if not line.startswith(OURS)]
    assert foreign == [], foreign
    assert any("score with both models done in" in line for line in lines)
    assert any("train 1 epoch(s)" in line for line in lines)
    assert lines[-1].endswith(f"Ray's own messages: {out / 'logs' / 'ray.log'}")
    # Ray did speak (Ray Data reports every dataset it executes); it went to the log.
    kept = (out / "logs" / "ray.log").read_text()
    assert "Dataset" in kept and "execution finished" in kept


def test_ctrl_c_during_a_fit_says_what_was_kept_and_exits_130(tiny_encoder, tmp_path):
    """A real SIGINT to the CLI while Ray Train fits the warm-up (Ray Train would install its own
    handler, which ended the run silently): one line says what was kept, exit 130."""
    cfg = dict(data=SAMPLE, label_col="noisy_label", id_col="id", strong_model=tiny_encoder,
               warmup_epochs=3, rounds=1, workers=2, annotator="knn", max_length=32, weak_embed_dim=16,
               weak_hidden=16, report=False, seed=3)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "cli", "run", "--config", str(cfg_file), "--out", str(out)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:  # our lines come through the pipe as they happen
            if "[round 0/1] train" in line:
                break
        time.sleep(8)  # well inside the fit (3 epochs)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        rest_out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(said) == 1, err[-3000:]
    assert " keeps " in said[0] and "the same command resumes" in said[0]
