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
    assert "LLM replicas 0-1 (an idle one goes after 60 s)" in res.output  # none held while training
    assert ("method:      split gmm|class-mean-strong/weak-mean; losses weigh every row alike; H trains on EmbMix "
            "of the model predictions") in res.output
    method = invoke("run", "--dry-run", "--out", str(out), "--split", "class-mean", "--loss-norm", "subset",
                    "--hard-loss", "embmix", "--change-min-test-precision", "0")  # the method as published
    assert ("method:      split class-mean; losses averaged per subset (R, P, H); H trains on EmbMix of the model "
            "predictions") in method.output
    assert "changes:     every change the method suggests" in method.output
    assert not out.exists()


def test_dry_run_says_which_label_changes_the_run_may_make(tmp_path):
    # The sample ships clean test data, so by default a label g moves to f only where, by the model's
    # test confusion and how often rows labelled g are f, the row is more likely f than g; 0 turns it off.
    res = invoke("run", "--dry-run", "--out", str(tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert ("changes:     a label changes only where the new label's class has precision >= 0.5 on the test data "
            "against the given label, weighing how often that label is wrong for it; the others stay, marked held"
            ) in res.output
    ungated = invoke("run", "--dry-run", "--out", str(tmp_path / "run"), "--change-min-test-precision", "0")
    assert "changes:     every change the method suggests" in ungated.output
    gated = invoke("run", "--dry-run", "--out", str(tmp_path / "run"), "--change-min-test-precision", "0.5",
                   "--change-min-prob", "0.8", "--change-precision-scope", "class")
    assert gated.exit_code == 0, gated.output
    assert ("changes:     a label changes only where the final strong model gives the new label p >= 0.8 and the "
            "new label's class has precision >= 0.5 on the test data; the others stay, marked held") in gated.output


@pytest.mark.parametrize(("workers", "batch", "steps"), [(1, 32, 150), (2, 32, 150), (8, 32, 150), (8, 64, 78)])
def test_dry_run_counts_the_optimiser_steps_the_run_makes(tmp_path, workers, batch, steps):
    """The batch is global: 800 rows in batches of 32 are 25 steps an epoch whatever --workers;
    6 epochs (2 warm-up + 4 rounds) make 150. (It said 24 at 8 workers.)"""
    res = invoke("run", "--dry-run", "--out", str(tmp_path / "run"), "--workers", str(workers),
                 "--batch-size", str(batch))
    assert res.exit_code == 0, res.output
    assert f"6 epochs, about {steps} optimiser steps per model" in res.output
    from noiseal_ray.train import per_worker_batch, steps_per_epoch

    # What a worker's loop does: its shard of rows / workers in batches of per_worker_batch rows.
    shard = -(-800 // workers)
    assert steps_per_epoch(rows=800, batch_size=batch, workers=workers) * 6 == \
        6 * -(-shard // per_worker_batch(batch_size=batch, workers=workers)) == steps


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


def test_reviewed_file_is_checked_before_any_work(tmp_path):
    """--reviewed on the shipped sample: the plan counts the trusted rows; an id the corpus lacks is
    exit 2 with the file and line, from the real command line, and no run is left behind."""
    import subprocess
    import sys

    from noiseal_ray.pipeline import sample_data_path

    import pandas as pd

    sample = pd.read_csv(sample_data_path(), dtype=str)
    good = tmp_path / "good.csv"
    good.write_text("id,label\n" + "".join(f"{i},{lab}\n" for i, lab in zip(sample["id"][:3], sample["label"][:3])))
    res = invoke("run", "--dry-run", "--out", str(tmp_path / "run"), "--reviewed", str(good))
    assert res.exit_code == 0, res.output
    changed = int((sample["label"][:3] != sample["noisy_label"][:3]).sum())
    assert f"reviewed:    {good}: 3 trusted row(s), {changed} of them relabeled by the reviewer" in res.output
    assert "move(s)" not in res.output  # a plain id,label table judges no move
    # An exported file: three rows the exporting run moved g -> f, all found to be g, refute that move.
    g = sample["noisy_label"][0]
    same = sample[sample["noisy_label"] == g].head(3)
    f = next(lab for lab in sorted(set(sample["noisy_label"])) if lab != g)
    export = tmp_path / "export.csv"
    pd.DataFrame({"id": same["id"], "given_label": g, "suggested_label": f, "review_label": g}).to_csv(export, index=False)
    res = invoke("run", "--dry-run", "--out", str(tmp_path / "run"), "--reviewed", str(export))
    assert res.exit_code == 0, res.output
    assert f"they test 1 move(s) of the run that exported them; refuted, so held back: {g} -> {f}" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,label\n{sample['id'][0]},{sample['label'][0]}\nno-such-id,{sample['label'][0]}\n")
    res = subprocess.run([sys.executable, "-m", "cli", "run", "--out", str(tmp_path / "o"), "--reviewed", str(bad)],
                         capture_output=True, text=True, cwd=cli.__file__.rsplit("/", 1)[0])
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert f"reviewed file {bad}: 1 id(s) not in the corpus: line 3 ('no-such-id')" in res.stderr
    assert not (tmp_path / "o" / "labels.parquet").exists() and not (tmp_path / "o" / "config.yaml").exists()


def test_unknown_config_option_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("workers: 2\nwokers: 3\n")
    from noiseal_ray.config import make_config
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config option"):
        make_config(file=cfg)


def test_workers_and_placement_reach_ray_trains_scaling_config(monkeypatch, tmp_path):
    """`run --workers N --train-placement S` -> RunConfig -> train.fit -> ScalingConfig(num_workers=N,
    placement_strategy=S). The pipeline's fit call is captured (no Ray here); the real fit is then
    called with those arguments and TorchTrainer replaced at the edge, where the captured
    ScalingConfig is checked and the fit stopped."""
    import noiseal_ray.pipeline as pipeline
    import ray.train.torch

    from noiseal_ray import train as train_mod

    seen = {}

    def fake_run_pipeline(*, config, out, progress=None, fit_fn=None):
        seen["config"] = config
        return {"rows": 0, "final": {"sizes": {"R": 0, "P": 0, "H": 0}}}

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    res = invoke("run", "--workers", "5", "--train-placement", "SPREAD", "--out", str(tmp_path / "o"), "-q")
    assert res.exit_code == 0, res.output
    cfg = seen["config"]
    assert (cfg.workers, cfg.train_placement) == (5, "SPREAD")

    class Stop(Exception):
        pass

    class FakeTrainer:
        def __init__(self, **kw):
            seen["scaling"] = kw["scaling_config"]
            raise Stop

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    spec = train_mod.TrainSpec(init_dir="x", epochs=1, seed=0, strong_lr=1e-5, weak_lr=1e-3, batch_size=8,
                               rce_a=-4.0, embmix_alpha=0.75, sharpen_t=0.5, loss_weights=(1.0, 1.0, 1.0))
    with pytest.raises(Stop):
        train_mod.fit(spec=spec, dataset=None, workers=cfg.workers, use_gpu=False, name="n",
                      storage_path=str(tmp_path), max_failures=0, out_dir=str(tmp_path / "m"),
                      placement_strategy=cfg.train_placement)
    assert seen["scaling"].num_workers == 5 and seen["scaling"].placement_strategy == "SPREAD"


def test_bad_placement_is_a_config_error():
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="train_placement: Input should be 'PACK', 'SPREAD'.*got 'EVERYWHERE'"):
        invoke("run", "--train-placement", "EVERYWHERE", "--dry-run")


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_object_store_out_is_refused_before_any_work(tmp_path, extra, monkeypatch):
    from noiseal_ray.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"--out s3://bucket/runs/1: the run directory must be a local or mounted"):
        invoke("run", "--out", "s3://bucket/runs/1", *extra)
    assert list(tmp_path.iterdir()) == []  # no "s3:" folder, nothing written


def test_demo_pool_stays_bounded_whatever_the_number_of_classes():
    from noiseal_ray.config import ConfigError, make_config

    cfg = make_config()
    assert cfg.demo_pool_per_class_for(6) == 2000
    assert cfg.demo_pool_per_class_for(1000) * 1000 <= 50_000
    assert make_config(overrides={"demo_pool_max_rows": 10}).demo_pool_per_class_for(1000) == 1  # never 0
    with pytest.raises(ConfigError, match="demo_pool_max_rows: Input should be greater than or equal to 1"):
        make_config(overrides={"demo_pool_max_rows": 0})
