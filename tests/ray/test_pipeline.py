"""The pipeline on a real local Ray cluster (one per module): Ray Train with 2 DDP workers,
Ray Data scoring, kNN annotation; outputs, exactly-once ids, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from noiseal_ray.config import make_config
from noiseal_ray.pipeline import Progress, run_pipeline, sample_data_path

SAMPLE = sample_data_path()
SAMPLE_TEST = str(Path(SAMPLE).with_name("trec_test_200.csv"))
N_ROWS = 800


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_overrides(tiny_encoder: str, **kw) -> dict:
    # change_min_test_precision 0: the tiny encoder is right on its test predictions of no class more
    # often than not, so the default gate (0.5 with test data) would hold every change, and these
    # tests follow the changes through the machinery. The gate's own test sets it.
    base = dict(data=SAMPLE, label_col="noisy_label", clean_label_col="label", id_col="id", test_data=SAMPLE_TEST,
                strong_model=tiny_encoder, warmup_epochs=1, rounds=1, workers=2, annotator="knn",
                max_length=32, weak_embed_dim=16, weak_hidden=16, report=False, seed=3, change_min_test_precision=0.0)
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    cfg = make_config(overrides=tiny_overrides(tiny_encoder))
    metrics = run_pipeline(config=cfg, out=str(out), progress=Progress(enabled=False))
    return out, metrics


def read_labels(out: Path):
    return pq.read_table(out / "labels.parquet").to_pandas()


def test_every_input_id_exactly_once(tiny_run):
    out, _ = tiny_run
    labels = read_labels(out)
    src = pq.read_table(out / "rounds" / "r0" / "table").to_pandas()
    assert len(labels) == N_ROWS
    assert labels["id"].is_unique
    assert set(labels["id"]) == set(src["id"])
    assert set(labels["partition"]) <= {"R", "P", "H"}
    names = {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert set(labels["final_label"]) <= names and set(labels["given_label"]) <= names
    # P rows carry an annotator label (kNN never fails when R is non-empty).
    p = labels[labels["partition"] == "P"]
    assert p["llm_label"].notna().all()
    assert (labels["changed"] == (labels["final_label"] != labels["given_label"])).all()


def test_metrics_report_rounds_and_detection(tiny_run):
    out, metrics = tiny_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["rows"] == N_ROWS
    final = on_disk["final"]
    assert sum(final["sizes"].values()) == N_ROWS
    assert 0 <= final["detection"]["precision"] <= 1 and 0 <= final["detection"]["recall"] <= 1
    # The label changes scored as a detector agree with what labels.parquet holds.
    labels = read_labels(out)
    changed, wrong = labels["changed"], labels["given_label"] != labels["clean_label"]
    assert changed.any() and wrong.any()
    assert final["correction"]["precision"] == pytest.approx((changed & wrong).sum() / changed.sum())
    assert final["correction"]["recall"] == pytest.approx((changed & wrong).sum() / wrong.sum())
    assert "test_accuracy" in on_disk["rounds"][0]  # warm-up is evaluated on the sample test set
    # batch_size 32 is rows per step over both workers: 800 rows -> 25 steps, as one worker takes.
    assert on_disk["rounds"][0]["train"]["steps"] == N_ROWS // 32
    assert set(on_disk["stage_seconds"]) >= {"train", "score", "annotate"}
    assert (out / "model" / "noiseal_model.json").is_file()
    assert (out / "config.yaml").is_file()
    # Ray Train's checkpoints served the fits only; a finished run does not keep them.
    assert not (out / "checkpoints").exists()


def test_rerun_is_a_noop_and_changed_config_is_refused(tiny_run, tiny_encoder):
    from noiseal_ray.errors import OutputError

    out, metrics = tiny_run
    before = (out / "manifest.json").read_text()
    t0 = time.time()
    again = run_pipeline(config=make_config(overrides=tiny_overrides(tiny_encoder)), out=str(out),
                         progress=Progress(enabled=False))
    assert time.time() - t0 < 30
    assert (out / "manifest.json").read_text() == before
    assert again["final"] == metrics["final"]
    with pytest.raises(OutputError, match="different configuration"):
        run_pipeline(config=make_config(overrides=tiny_overrides(tiny_encoder, rounds=3)), out=str(out),
                     progress=Progress(enabled=False))


def test_sigkill_mid_round_then_rerun_matches_uninterrupted(tiny_run, tiny_encoder, tmp_path):
    """The driver is killed with SIGKILL after round 1 is scored; the rerun resumes and ends
    with the same labels as the uninterrupted run of the same configuration."""
    ref_out, _ = tiny_run
    out = tmp_path / "killed"
    cfg_file = tmp_path / "cfg.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(tiny_overrides(tiny_encoder)))
    cmd = [sys.executable, "-m", "cli", "run", "--config", str(cfg_file), "--out", str(out), "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if manifest.is_file() and "r1/score" in json.loads(manifest.read_text())["stages"]:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("round 1 was never scored")
    finally:
        # SIGKILL the driver and everything it started (its own session), nothing else.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stages = json.loads(manifest.read_text())["stages"]
    assert "labels" not in stages and not (out / "labels.parquet").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    a = read_labels(ref_out).sort_values("id").reset_index(drop=True)
    b = read_labels(out).sort_values("id").reset_index(drop=True)
    assert list(a["id"]) == list(b["id"])
    agree = (a["final_label"] == b["final_label"]).mean()
    part_agree = (a["partition"] == b["partition"]).mean()
    assert agree == 1.0 and part_agree == 1.0, (agree, part_agree)
    np.testing.assert_allclose(a["p_strong"], b["p_strong"], rtol=1e-4, atol=1e-5)


def test_a_run_from_an_adopted_warmup_repeats_the_run_that_trained_it(tiny_run, tiny_encoder, tmp_path):
    """warmup_from: the second run trains no warm-up; from the same warm-up model, data and seed its
    rounds are those of the first run, so every label comes out the same (paired comparisons)."""
    out, _ = tiny_run
    src = out / "rounds" / "r0" / "model"
    cfg = make_config(overrides=tiny_overrides(tiny_encoder, warmup_from=str(src)))
    seen: list[str] = []
    metrics = run_pipeline(config=cfg, out=str(tmp_path / "paired"), progress=Progress(echo=seen.append))
    assert any(line.startswith("  warm-up: adopt") for line in seen)
    assert not any("[round 0/" in line for line in seen), seen  # no warm-up fit
    assert all(r.get("round") != 0 or "train" not in r for r in metrics["rounds"])
    a = read_labels(out).sort_values("id").reset_index(drop=True)
    b = read_labels(tmp_path / "paired").sort_values("id").reset_index(drop=True)
    assert list(a["id"]) == list(b["id"])
    assert (a["partition"] == b["partition"]).all() and (a["final_label"] == b["final_label"]).all()


@pytest.mark.parametrize("scope", ["class", "move", "transition"])
def test_the_change_gate_holds_back_the_changes_its_evidence_does_not_back(tiny_run, tiny_encoder, tmp_path, scope):
    """--change-min-prob and --change-min-test-precision: every fit (the adopted warm-up too) records
    its confusion on the clean test data; no round trains a row outside R on a move its model's test
    precision (over the new label's class, against the given label, or that weighed by how often
    the given label is wrong for the new one: ``scope``) puts below 0.5; of
    the final changes, only those the final strong model predicts at p >= the threshold, on a precise
    move, stand; the others keep the given label and are marked held (and counted in metrics)."""
    from noiseal_ray.finalize import ChangeGate, final_labels, precise_moves
    from noiseal_ray.rundir import partition_key

    out, _ = tiny_run
    a = read_labels(out)
    t = float(a[a["changed"] & (a["pred_label"] == a["final_label"])]["pred_prob"].median())
    cfg = make_config(overrides=tiny_overrides(tiny_encoder, warmup_from=str(out / "rounds" / "r0" / "model"),
                                               change_min_prob=t, change_min_test_precision=0.5,
                                               change_precision_scope=scope))
    run = tmp_path / "gated"
    metrics = run_pipeline(config=cfg, out=str(run), progress=Progress(enabled=False))
    manifest = json.loads((run / "manifest.json").read_text())
    fits = {r: np.array(manifest["rounds"][f"train{r}"]["test_confusion"]) for r in (0, 1)}
    assert all(c.sum() == 200 for c in fits.values())  # the 200 clean test rows
    assert np.trace(fits[1]) / 200 == pytest.approx(manifest["rounds"]["train1"]["test_accuracy"])
    for r in (1, 2):  # round r's table was scored (and its moves gated) by fit r - 1's model
        tab = pq.read_table(run / "rounds" / f"r{r}" / "table").to_pandas()
        given = tab["label"].to_numpy(np.int64)
        given_pred = np.zeros((len(fits[0]),) * 2)  # the table's rows are the scored rows the gate counted
        np.add.at(given_pred, (given, tab["pred"].to_numpy(np.int64)), 1)
        ok = precise_moves(confusion=fits[r - 1], min_precision=0.5, scope=scope, given_pred=given_pred)
        # The transition gate's counts are kept with the round (the final labels' gate reads them back).
        recorded = manifest["rounds"][partition_key(round_no=r)].get("given_pred")
        assert (recorded == given_pred.astype(int).tolist()) if scope == "transition" else recorded is None
        suggested = final_labels(part=tab["part"].to_numpy(np.int64), given=given,
                                 llm=tab["llm_label"].to_numpy(np.int64), pred=tab["pred"].to_numpy(np.int64),
                                 hard_policy="strong")
        moved = suggested != given
        assert not (moved & ~ok[given, suggested]).any(), f"round {r} trains rows on imprecise moves"
    held = ChangeGate(min_prob=t, move_ok=ok).held(suggested=suggested, given=tab["label"].to_numpy(),
                                                    pred=tab["pred"].to_numpy(), pred_prob=tab["pred_prob"].to_numpy())
    b = read_labels(run).set_index("id").loc[tab["id"]]
    assert ((b["final_label"] != b["given_label"]).to_numpy() == (moved & ~held)).all()
    # Held for review: the changes the final gate holds back, and the rows the last round already put
    # back in R on their given label because the gate rejected their move.
    back = tab["held_back"].to_numpy(bool) if "held_back" in tab else np.zeros(len(tab), bool)
    assert not (back & moved).any() and (b.loc[back, "partition"] == "R").all()
    held = held | back
    assert len(b) == N_ROWS and (b["held"].to_numpy() == held).all()
    changed = b[b["changed"]]
    assert (changed["pred_label"] == changed["final_label"]).all() and (changed["pred_prob"] >= t).all()
    assert (b.loc[b["held"], "final_label"] == b.loc[b["held"], "given_label"]).all()
    assert metrics["final"].get("held", {}).get("rows", 0) == held.sum()


def test_a_split_rule_is_applied_recorded_and_resumed(tiny_run, tiny_encoder, tmp_path):
    """--split: from the same warm-up, a round's R/P/H are exactly the rule's codes on its scored
    rows (not today's); the rule and its thresholds are in the manifest and metrics, and a rerun
    changes nothing. (A rule without fallback: the tiny encoder's scores would send every class of
    a fallback rule back to today's split.)"""
    from noiseal_ray.partition import partition
    from noiseal_ray.split import RuleThresholds

    out, _ = tiny_run
    rule = "gmm-strong/weak-mean"
    cfg = make_config(overrides=tiny_overrides(tiny_encoder, warmup_from=str(out / "rounds" / "r0" / "model"),
                                               split=rule, loss_norm="rows"))
    run = tmp_path / "split"
    metrics = run_pipeline(config=cfg, out=str(run), progress=Progress(enabled=False))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["thresholds"]["rule"] == rule
    cur = RuleThresholds.from_dict(manifest["thresholds"]["current"])  # the last (final) partition's
    assert cur.frame == "strong"
    t = pq.read_table(run / "rounds" / "r2" / "table").to_pandas()
    cols = dict(p_strong=t["p_strong"].to_numpy(), p_weak=t["p_weak"].to_numpy(), labels=t["label"].to_numpy())
    np.testing.assert_array_equal(t["part"].to_numpy(), cur.split(**cols, pred=t["pred"].to_numpy()))
    ema = manifest["thresholds"]
    today = partition(**cols, tau_strong=np.array(ema["strong"]), tau_weak=np.array(ema["weak"]))
    assert (t["part"].to_numpy() != today).any()
    r1 = next(e for e in metrics["rounds"] if e["round"] == 1)
    assert r1["split"]["rule"] == rule and len(r1["split"]["noise_rate"]) == len(manifest["label_names"])
    labels = read_labels(run)
    assert len(labels) == N_ROWS and labels["id"].is_unique
    before = (run / "labels.parquet").stat().st_mtime_ns
    run_pipeline(config=cfg, out=str(run), progress=Progress(enabled=False))
    assert (run / "labels.parquet").stat().st_mtime_ns == before


def test_predict_reproduces_reported_test_accuracy(tiny_run, tmp_path):
    from noiseal_ray.predict import predict

    out, metrics = tiny_run
    preds = tmp_path / "preds.csv"
    res = predict(model_dir=str(out / "model"), data=SAMPLE_TEST, out=str(preds), id_col="id", label_col="label")
    assert res["rows"] == 200
    assert res["accuracy"] == pytest.approx(metrics["final"]["test_accuracy_last"], abs=1e-9)
    import pandas as pd

    df = pd.read_csv(preds)
    assert list(df.columns) == ["id", "pred_label", "pred_prob", "probs"]
    assert df["id"].is_unique and len(df) == 200
    probs = df["probs"].map(json.loads)
    assert all(len(p) == 6 and abs(sum(p) - 1) < 1e-3 for p in probs)


def test_predict_to_a_folder_numbers_rows_and_reports_accuracy(tiny_run, tmp_path):
    """The folder form (no extension) gives the same rows as the file form: ids are row numbers
    when there is no --id-col (they were all empty), and --label-col still yields the accuracy."""
    from noiseal_ray.predict import predict

    out, metrics = tiny_run
    folder = tmp_path / "preds"
    res = predict(model_dir=str(out / "model"), data=SAMPLE_TEST, out=str(folder), label_col="label")
    assert res["rows"] == 200 and res["unknown_labels"] == 0
    assert res["accuracy"] == pytest.approx(metrics["final"]["test_accuracy_last"], abs=1e-9)
    t = pq.read_table(folder)
    assert t.column_names == ["id", "pred_label", "pred_prob", "probs"]
    assert t.column("id").to_pylist() == [str(i) for i in range(200)]
    as_file = tmp_path / "preds.parquet"
    predict(model_dir=str(out / "model"), data=SAMPLE_TEST, out=str(as_file))
    f = pq.read_table(as_file)
    assert f.column("id").to_pylist() == t.column("id").to_pylist()
    assert f.column("pred_label").to_pylist() == t.column("pred_label").to_pylist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_written_tables_keep_dataset_order_and_count(ray_cluster, tmp_path):
    """Every stage table is read back in file order by the next stage (Train shards follow it):
    the writer must keep the dataset's row order across blocks, tasks and files, every time.
    Ray's own write_parquet did not (rows reordered within a file in 4 of 15 runs)."""
    import pyarrow as pa
    import pyarrow.dataset as pds
    import ray.data
    from ray.data import ActorPoolStrategy

    from noiseal_ray.data.sink import write_parquet_dir
    from noiseal_ray.ray_session import configure_data_context

    class Jitter:  # defined here: pickled by value, the Ray workers cannot import a test module
        """A random time per batch, so that the actors' tasks finish out of submission order."""

        def __call__(self, batch: dict) -> dict:
            time.sleep(float(np.random.rand()) * 0.03)
            return batch

    configure_data_context()
    n = 3000
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):  # several input files, as the ingest writes them
        lo, hi = i * n // 6, (i + 1) * n // 6
        pq.write_table(pa.table({"id": [f"r{j:05d}" for j in range(lo, hi)], "x": list(range(lo, hi))}),
                       src / f"part-{i:05d}.parquet")
    want = [f"r{j:05d}" for j in range(n)]
    for trial in range(6):
        ds = ray.data.read_parquet(str(src))
        # Odd trials: many blocks over two actors and many write tasks. Even trials: one block of
        # many record batches (how small tables are read), which pyarrow's threaded writer reorders.
        if trial % 2:
            ds = ds.repartition(target_num_rows_per_block=97)
        ds = ds.map_batches(Jitter, batch_size=64, batch_format="numpy", compute=ActorPoolStrategy(size=2))
        out = tmp_path / "out"
        assert write_parquet_dir(ds, out) == n
        got = pds.dataset(str(out), format="parquet").to_table(columns=["id"])["id"].to_pylist()
        assert got == want, f"trial {trial}: rows reordered"
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left behind


@pytest.mark.slow  # two runs (about 2 minutes on 2 cores); the unit tests keep the logic in the fast tier
def test_reviewed_rows_are_trusted_never_changed_and_a_rerun_repeats_it(tiny_run, tiny_encoder, tmp_path):
    """--reviewed: a reviewed label is the row's final label whatever the models say (even a label
    that is neither the given nor the true one), the row is always R and marked reviewed; every
    other row keeps its given label as given; metrics and labels count them; the same file again
    gives the same labels."""
    out, _ = tiny_run
    first = read_labels(out)
    names = sorted(set(first["given_label"]))
    wrong = first[first["final_label"] != first["clean_label"]].head(15)  # the run got these wrong
    rest = first.drop(wrong.index).head(25)
    # Reviewers are trusted even against the evidence: give 10 rows a label nobody suggested.
    odd = {i: next(n for n in names if n not in (g, c, f)) for i, g, c, f in
           zip(rest["id"][:10], rest["given_label"][:10], rest["clean_label"][:10], rest["final_label"][:10])}
    reviewed = {**dict(zip(wrong["id"], wrong["clean_label"])), **dict(zip(rest["id"], rest["clean_label"])), **odd}
    review = tmp_path / "reviewed.csv"
    review.write_text("id,label\n" + "".join(f"{i},{lab}\n" for i, lab in reviewed.items()))
    cfg = make_config(overrides=tiny_overrides(tiny_encoder, warmup_from=str(out / "rounds" / "r0" / "model"),
                                               reviewed=str(review)))
    runs = []
    for name in ("a", "b"):
        metrics = run_pipeline(config=cfg, out=str(tmp_path / name), progress=Progress(enabled=False))
        runs.append(read_labels(tmp_path / name).set_index("id").sort_index())
    a, b = runs
    assert len(a) == N_ROWS and a.index.is_unique
    rev = a.loc[list(reviewed)]
    assert (rev["final_label"] == pd.Series(reviewed)).all()
    assert (rev["partition"] == "R").all() and rev["reviewed"].all()
    assert int(a["reviewed"].sum()) == len(reviewed)
    assert (a["given_label"] == first.set_index("id").sort_index()["given_label"]).all()
    assert metrics["reviewed"]["rows"] == len(reviewed)
    assert metrics["reviewed"]["changed_by_reviewer"] == int((rev["given_label"] != rev["final_label"]).sum())
    assert metrics["final"]["reviewed"]["rows"] == len(reviewed)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow  # three runs (about 3 minutes on 2 cores); tests/unit/test_review_moves.py keeps the logic fast
def test_reviews_of_an_exported_file_refute_a_move_and_the_rerun_holds_it_back(tiny_run, tiny_encoder, tmp_path):
    """An exported file carries the run's suggestions: reviewed rows that it had moved g -> f, all
    found to be g, refute that move, and the rerun applies it to no unreviewed row (they keep g,
    in R); the metrics and the report say so; with verdicts off the same file lets it through.

    The runs relabel P with the strong model's prediction (annotator "none"): with the kNN
    annotator the four reviewed rows, first among every nearby query's demonstrations, already
    turn most of such a move back by themselves, and the test would not tell the two apart."""
    out, _ = tiny_run

    def rerun(name: str, file: Path | None = None, **kw):
        cfg = make_config(file=file, overrides=tiny_overrides(
            tiny_encoder, warmup_from=str(out / "rounds" / "r0" / "model"), annotator="none", **kw))
        metrics = run_pipeline(config=cfg, out=str(tmp_path / name), progress=Progress(enabled=False))
        labels = read_labels(tmp_path / name).set_index("id")
        return metrics, labels, labels[~labels["reviewed"]]

    _, before, _ = rerun("before")  # the run whose suggestions get reviewed
    moved = before[before["given_label"] != before["final_label"]].reset_index()
    (g, f), rows = max(moved.groupby(["given_label", "final_label"]), key=lambda kv: len(kv[1]))
    assert len(rows) >= 12, "the run must move some rows for the test to mean anything"
    judged = rows.head(4)
    review = tmp_path / "review.csv"  # the columns `export --format csv` writes that a rerun reads
    pd.DataFrame({"id": judged["id"], "given_label": g, "suggested_label": f, "review_label": g}).to_csv(review, index=False)

    metrics, again, unreviewed = rerun("rerun", reviewed=str(review), report=True)
    assert not ((unreviewed["given_label"] == g) & (unreviewed["final_label"] == f)).any()
    assert (again.loc[judged["id"], "final_label"] == g).all()
    assert (unreviewed["given_label"] != unreviewed["final_label"]).sum() > 0  # other moves still happen
    assert metrics["reviewed"]["moves"] == [{"given": g, "suggested": f, "reviews": 4, "right": 0, "refuted": True}]
    assert f"{g} → {f} (0 of 4 reviews right)" in (tmp_path / "rerun" / "report.html").read_text()
    # Verdicts off: the same file, and the model's move goes through again on unreviewed rows.
    off = tmp_path / "off.yaml"  # None on the command line means "not given": a file says null
    off.write_text("refute_confidence: null\n")
    _, _, plain = rerun("plain", file=off, reviewed=str(review))
    assert ((plain["given_label"] == g) & (plain["final_label"] == f)).sum() >= 4
