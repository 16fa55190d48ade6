"""The CLI: command list, help examples, corrupt on real TREC, dry-run plan, error exit codes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import cli

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, list(args), catch_exceptions=False)


def test_help_lists_commands():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("run", "corrupt", "predict", "serve", "report", "export", "models"):
        assert cmd in res.output


@pytest.mark.parametrize("cmd", ["run", "corrupt", "predict", "serve", "report", "export"])
def test_every_command_help_has_an_example(cmd):
    res = invoke(cmd, "--help")
    assert res.exit_code == 0
    assert "Example" in res.output and "noiseal-ray " + cmd in res.output


@pytest.mark.parametrize("kind", ["sym", "asym", "idn"])
def test_corrupt_trec_realised_rate_and_keeps_truth(shared_data, tmp_path, kind):
    out = tmp_path / f"trec_{kind}.parquet"
    res = invoke("corrupt", "--data", str(shared_data / "trec" / "train.jsonl"), "--noise", kind, "--rate", "0.4",
                 "--seed", "0", "--out", str(out))
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pandas()
    assert len(t) == 5452
    rate = (t["noisy_label"] != t["label"]).mean()
    assert 0.37 <= rate <= 0.43
    assert f"realised rate {rate:.4f}" in res.output
    again = tmp_path / "again.parquet"
    invoke("corrupt", "--data", str(shared_data / "trec" / "train.jsonl"), "--noise", kind, "--rate", "0.4",
           "--seed", "0", "--out", str(again))
    assert pq.read_table(again).equals(pq.read_table(out))


def test_dry_run_prints_plan_without_work(tmp_path):
    out = tmp_path / "run"
    res = invoke("run", "--dry-run", "--out", str(out), "--annotator", "llm")
    assert res.exit_code == 0, res.output
    assert "800 rows, 6 classes" in res.output
    assert "at most 800" in res.output
    assert not out.exists()


def test_bad_input_exit_code_and_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,a\n,b\n")
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "cli", "run", "--data", str(bad), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=cli.__file__.rsplit("/", 1)[0])
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert f"{bad}: column 'text' is empty or whitespace-only in row 2" in res.stderr
    assert not (tmp_path / "o" / "labels.parquet").exists()


def test_unknown_config_option_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("workers: 2\nwokers: 3\n")
    from noiseal_ray.config import make_config
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config option"):
        make_config(file=cfg)
