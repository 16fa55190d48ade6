"""RunConfig is typed: a wrongly typed, unknown or out-of-range value is a one-line error naming
the key (exit 2 from the CLI), never a traceback from deep inside a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cli
from noiseal_ray.config import RunConfig, make_config, save_config
from noiseal_ray.errors import ConfigError

ROOT = Path(cli.__file__).resolve().parent


@pytest.mark.parametrize(
    ("yaml_text", "key", "detail"),
    [
        ('workers: "2"\n', "workers", "valid integer"),
        ("ema_beta: high\n", "ema_beta", "valid number"),
        ("report: 'yes'\n", "report", "valid boolean"),
        ("loss_weights: [1, 1]\n", "loss_weights", "needs three numbers (R, P, H), got 2"),
        ("annotator: gpt\n", "annotator", "'none', 'knn' or 'llm'"),
        ("rounds: -1\n", "rounds", "greater than or equal to 0"),
        ("ema_beta: 1.0\n", "ema_beta", "less than 1"),
        ("rce_a: 4\n", "rce_a", "less than 0"),
        ("label_descriptions: [a, b]\n", "label_descriptions", "valid dictionary"),
        ("split: gmm\n", "split", "unknown split rule 'gmm'; one of: class-mean, gmm-both"),
        ("loss_norm: mean\n", "loss_norm", "'subset' or 'rows'"),
    ],
)
def test_a_bad_value_in_the_file_names_file_and_key(tmp_path, yaml_text, key, detail):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        make_config(file=f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: {key}: "), msg
    assert detail in msg and "\n" not in msg


def test_a_flag_overriding_the_file_is_named_without_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 3\n")
    with pytest.raises(ConfigError, match=r"^workers: Input should be greater than or equal to 1 \(got 0\)$"):
        make_config(file=f, overrides={"workers": 0})


def test_values_that_fit_are_kept_as_given(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 3\nema_beta: 0\nstrong_lr: 1\nloss_weights: [1, 0.5, 2]\nlabel_descriptions: {1: one, 2: two}\n")
    cfg = make_config(file=f)
    assert cfg.workers == 3 and cfg.ema_beta == 0.0 and cfg.strong_lr == 1.0
    assert cfg.loss_weights == (1.0, 0.5, 2.0)
    assert cfg.label_descriptions == {"1": "one", "2": "two"}


def test_saved_config_round_trips(tmp_path):
    cfg = make_config(overrides={"workers": 4, "loss_weights": (1.0, 2.0, 3.0), "llm_min_logprob": -0.5})
    save_config(cfg, tmp_path / "config.yaml")
    assert make_config(file=tmp_path / "config.yaml") == cfg


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="warmup_epochs \\+ rounds must be at least 1"):
        make_config(overrides={"warmup_epochs": 0, "rounds": 0})
    with pytest.raises(ConfigError, match="llm_min_replicas \\(3\\) exceeds llm_max_replicas \\(2\\)"):
        make_config(overrides={"llm_min_replicas": 3, "llm_max_replicas": 2})
    with pytest.raises(ConfigError, match="fits per-class thresholds: it needs per_class_threshold true"):
        make_config(overrides={"split": "gmm|class-mean-strong/weak-mean", "per_class_threshold": False})


def test_assignment_is_checked_too():
    cfg = RunConfig()
    with pytest.raises(ValueError, match="workers"):
        cfg.workers = "2"  # type: ignore[assignment]


def test_cli_exit_2_and_one_line_naming_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('workers: "2"\n')
    res = subprocess.run([sys.executable, "-m", "cli", "run", "--config", str(f), "--dry-run"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {f}: workers: Input should be a valid integer (got '2')"]
