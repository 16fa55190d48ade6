"""Benchmark table code: aggregation over seeds, and every number in the Markdown from records."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import records, report, speed_report  # noqa: E402
from benchmarks import tables as T  # noqa: E402
from noiseal_ray.split import RULES  # noqa: E402
from benchmarks.grid import DATASETS, GRIDS, HEADLINE, METHODS, NOISEAL_OPTIONS, breadth, full, get_grid, real, smoke, trec  # noqa: E402


def _records(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs = []
    for dataset, setting in (("trec", "asym40"), ("trec", "sym40"), ("hausa", "real")):
        for method in ("base", "cleanlab", "noiseal-knn"):
            for s in (0, 1, 2):
                accs = rng.uniform(0.5, 1.0, 3).round(6).tolist()
                r = {"kind": "quality", "status": "ok", "key": f"{dataset}-{setting}-s{s}-{method}", "dataset": dataset,
                     "setting": setting, "seed": s, "method": method, "test_accuracy_rounds": accs,
                     "wall_seconds": float(rng.uniform(50, 500)), "stage_seconds": {"train": float(rng.uniform(10, 90))},
                     "train_rows": 1000, "train_rows_used": 1000, "realised_noise": 0.4}
                if method != "base":
                    p, rc = rng.uniform(0.3, 1.0, 2)
                    r["detection"] = {"precision": float(p), "recall": float(rc), "f1": float(2 * p * rc / (p + rc))}
                if method.startswith("noiseal"):
                    r["recovery"] = {"fixed": float(rng.uniform()), "broken": float(rng.uniform(0, 0.1))}
                    r["llm_queries"] = 0
                recs.append(r)
    recs.append({"kind": "quality", "status": "failed", "key": "trec-asym40-s9-base", "dataset": "trec",
                 "setting": "asym40", "seed": 9, "method": "base", "error": "boom", "wall_seconds": 1e6})
    return recs


def test_mean_sd():
    m, sd, n = T.mean_sd([0.9, 0.8, 0.7])
    assert m == pytest.approx(0.8) and sd == pytest.approx(0.1) and n == 3
    assert T.mean_sd([0.5]) == (0.5, None, 1)
    assert T.mean_sd([None, float("nan")]) == (None, None, 0)
    assert T.mean_sd([None, 2.0, 4.0])[0] == pytest.approx(3.0)


def test_fmt():
    assert report.fmt(0.91234, 0.0123, scale=100, decimals=1) == "91.2 ± 1.2"
    assert report.fmt(0.5, None) == "0.500"
    assert report.fmt(None, None) == "-"




def _expected_cells(recs: list[dict]) -> dict[tuple, list[str]]:
    """The table cells recomputed independently with numpy from the raw records."""
    out = {}
    ok = [r for r in recs if r["status"] == "ok"]
    for key in {(r["dataset"], r["setting"], r["method"]) for r in ok}:
        group = [r for r in ok if (r["dataset"], r["setting"], r["method"]) == key]
        cells = []
        for _, path, scale, dec in T.QUALITY_COLUMNS:
            vals = []
            for r in group:
                if path == "acc_best":
                    vals.append(max(r["test_accuracy_rounds"]))
                elif path == "acc_last":
                    vals.append(r["test_accuracy_rounds"][-1])
                else:
                    v = r
                    for part in path.split("."):
                        v = v.get(part) if isinstance(v, dict) else None
                    if v is not None:
                        vals.append(v)
            if not vals:
                cells.append("-")
            else:
                a = np.array(vals, float) * scale
                cells.append(f"{a.mean():.{dec}f} ± {a.std(ddof=1):.{dec}f}" if len(a) > 1 else f"{a.mean():.{dec}f}")
        out[key] = cells
    return out


def test_every_number_in_the_markdown_comes_from_records(tmp_path):
    recs = _records(1)
    grid = smoke()
    results = tmp_path / "RESULTS.md"
    report.write_all(records=recs, grid=grid, results=results, csv_json_dir=tmp_path / "results",
                     command="python -m benchmarks.run --grid smoke", run_info={}, out_rel="benchmarks/out/smoke")
    text = results.read_text()
    expected = _expected_cells(recs)
    section = text.split("## Denoising quality", 1)[1].split("###", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| dataset")]
    assert len(rows) == len(expected)
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        key = (cells[0], cells[1], cells[2])
        assert cells[3:5] == ["0 1 2", "3"] and cells[5:] == expected[key], key
    # The failed cell is named, not averaged in (its absurd wall time appears nowhere).
    assert "trec-asym40-s9-base" in text and "boom" in text
    assert "1000000" not in text
    # The CSV carries the same means.
    csv_text = (tmp_path / "results" / "quality-smoke.csv").read_text()
    assert csv_text.count("\n") == len(expected) + 1
    data = json.loads((tmp_path / "results" / "results-smoke.json").read_text())
    assert len(data["rows"]) == len(expected)


def test_no_number_in_the_tables_without_a_record(tmp_path):
    """With no records the quality tables hold no numbers at all."""
    results = tmp_path / "R.md"
    report.write_all(records=[], grid=smoke(), results=results, csv_json_dir=tmp_path / "r", command="x",
                     run_info={}, out_rel="o")
    section = results.read_text().split("## Denoising quality", 1)[1].split("## Speed", 1)[0]
    table_lines = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert all(not re.search(r"\d", ln) for ln in table_lines if not ln.startswith("| dataset")
               and not ln.startswith("| run"))


def test_grids_are_well_formed():
    assert HEADLINE in GRIDS
    for g in (smoke(), trec(), real(), breadth(), full()):
        keys = [c.key for c in g.cells]
        assert len(keys) == len(set(keys))
        for c in g.cells:
            assert c.dataset in DATASETS and c.method in METHODS
            assert not Path(DATASETS[c.dataset].train).is_absolute()
    assert {c.method for c in full().cells} == set(METHODS)
    for g in (trec(), real(), breadth(), full()):
        # The clean upper bound trains on the true labels: once per dataset and seed, never per noise setting.
        assert {c.setting for c in g.cells if c.method == "clean"} == {"none"}
        assert {c.method for c in g.cells if c.setting == "none"} == {"clean"}
        for c in g.cells:
            if c.setting != "none":  # every noisy setting has its clean counterpart
                assert any(o.method == "clean" and o.dataset == c.dataset and o.seed == c.seed for o in g.cells)
    t = {c.key for c in trec().cells}
    assert {"trec-none-s0-clean", "trec-sym20-s1-noiseal-knn", "trec-idn20-s0-noiseal-knn",
            "trec-asym40-s1-cleanlab"} <= t
    # Real noise: the dataset's own noisy labels, nothing injected, the gold labels as the clean bound.
    assert {(c.dataset, c.setting) for c in real().cells} == {("hausa", "real"), ("hausa", "none")}
    assert all(DATASETS[c.dataset].clean_label_col for c in real().cells)
    # The issue's other datasets: real human noise and SST-2's asymmetric 40%, every method on the same rows.
    b = breadth()
    assert {(c.dataset, c.setting) for c in b.cells} == {("noisyagnews", "real"), ("noisyagnews", "none"),
                                                         ("sst2", "asym40"), ("sst2", "none")}
    for d in ("noisyagnews", "sst2"):
        assert len({(c.train_rows, c.test_rows, c.training) for c in b.cells if c.dataset == d}) == 1
    assert get_grid("smoke").name == "smoke"
    with pytest.raises(ValueError):
        get_grid("nope")


@pytest.mark.parametrize("name", ["paired", "paired-real"])
def test_paired_grid_runs_every_variant_from_its_seeds_base_warm_up(name):
    g = get_grid(name)
    assert g.cells and all(c.training.paired for c in g.cells)
    order = [c.key for c in g.cells]
    variants = {c.method for c in g.cells} - {"base"}
    # The reconstructed method and the candidate (issue 15's ablation: each change alone on TREC too).
    assert {"noiseal-knn", "noiseal-knn-split-rows"} <= variants
    if name == "paired":
        assert {"noiseal-knn-split", "noiseal-knn-rows"} <= variants
    for c in g.cells:
        if c.method != "base":
            base = replace(c, method="base")
            assert base.key in order and order.index(base.key) < order.index(c.key)
            assert base.data_key == c.data_key
    assert len({c.seed for c in g.cells}) >= 3
    assert NOISEAL_OPTIONS["noiseal-knn-split"]["split"] in RULES


def test_bench_command_is_cheap_to_import():
    code = ("import sys, noiseal_ray.commands.bench; "
            "bad = [m for m in ('torch', 'ray', 'transformers', 'cleanlab') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_bench_command_registered():
    from typer.testing import CliRunner

    import cli

    res = CliRunner().invoke(cli.app, ["bench", "--help"])
    assert res.exit_code == 0 and "--grid" in res.output
    res = CliRunner().invoke(cli.app, ["bench", "--grid", "trec40"])  # the grid's old name
    assert res.exit_code == 2 and f"--grid must be one of {', '.join(sorted(GRIDS))}" in res.output


def test_bench_without_its_extra_says_which_command_installs_it(monkeypatch, tmp_path):
    """Without cleanlab (the 'bench' extra) a grid with confident-learning cells stops before any
    cell, in one line naming the command, instead of a traceback per cell."""
    import importlib.util

    from typer.testing import CliRunner

    import cli
    from noiseal_ray.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cleanlab" else real(name, *a))
    res = CliRunner().invoke(cli.app, ["bench", "--grid", "smoke", "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, ConfigError), res.output
    assert str(res.exception) == ("noiseal-ray bench needs cleanlab (the 'bench' extra): run scripts/setup.sh, "
                                  "or pip install 'noiseal-ray[bench]'")
    assert not (tmp_path / "o").exists()


def test_a_record_of_an_earlier_cell_specification_is_listed_not_tabled(tmp_path):
    grid = smoke()
    cell = grid.cells[0]
    old = {"kind": "quality", "status": "ok", "key": cell.key, "dataset": cell.dataset, "setting": cell.setting,
           "seed": cell.seed, "method": cell.method, "test_accuracy_rounds": [0.1234, 0.4321],
           "wall_seconds": 1.0, "stage_seconds": {}, "train_rows": 10, "train_rows_used": 10,
           "realised_noise": 0.4, "spec_hash": "0" * 16}
    results = tmp_path / "R.md"
    report.write_all(records=[old], grid=grid, results=results, csv_json_dir=tmp_path / "results", command="x",
                     run_info={}, out_rel="o")
    text = results.read_text()
    assert "43.2" not in text and "12.3" not in text  # its accuracies are in no table
    assert f"`{cell.key}`: made for an earlier specification" in text
    assert cell.spec_hash() in text






def test_prepare_data_without_noise_trains_on_the_true_labels(tmp_path):
    from benchmarks.grid import Cell, prepare_data
    from noiseal_ray.data.io import load_corpus

    root = tmp_path / "data"
    (root / "d").mkdir(parents=True)
    rows = [{"text": f"text number {i}", "label": "ab"[i % 2]} for i in range(20)]
    for name in ("train", "test"):
        (root / "d" / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    DATASETS["tiny-test"] = type(DATASETS["trec"])("tiny-test", "d/train.jsonl", "d/test.jsonl")
    try:
        meta = prepare_data(Cell("tiny-test", "none", 0.0, 0, "clean", 10, None), data_root=root, work=tmp_path / "w")
    finally:
        del DATASETS["tiny-test"]
    assert meta["realised_noise"] == 0.0 and meta["train_rows"] == 10 and meta["test_rows"] == 20
    c = load_corpus(meta["train"], text_col=meta["text_col"], label_col=meta["label_col"],
                    clean_label_col=meta["clean_label_col"])
    assert (c.labels == c.clean).all() and len(c.labels) == 10
    expected = {r["text"]: r["label"] for r in rows}
    assert all(expected[t] == c.label_names[y] for t, y in zip(c.texts.to_pylist(), c.labels))
    # The work folder moved (a grid renamed, --out copied elsewhere): its prepared data is still found.
    (tmp_path / "w").rename(tmp_path / "moved")
    DATASETS["tiny-test"] = type(DATASETS["trec"])("tiny-test", "d/train.jsonl", "d/test.jsonl")
    try:
        again = prepare_data(Cell("tiny-test", "none", 0.0, 0, "clean", 10, None), data_root=root,
                             work=tmp_path / "moved")
    finally:
        del DATASETS["tiny-test"]
    assert Path(again["train"]).is_file() and Path(again["test"]).is_file()
    assert str(tmp_path / "moved") in again["train"] and {**again, "train": 0, "test": 0} == {**meta, "train": 0, "test": 0}


def test_correction_detection_scores_label_changes_and_backfills_old_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.anatomy import correction_detection, labels_anatomy
    from benchmarks.run import backfill_from_labels

    # 6 rows: 3 wrong given labels (rows 0-2), 2 of them changed; 1 right label changed (row 3);
    # row 5 has no clean label and must not count.
    run = tmp_path / "work" / "trec-asym40-s0-noiseal-knn-abc" / "run"
    (run / "labels.parquet").mkdir(parents=True)  # a folder of parts, as the pipeline writes it
    pq.write_table(pa.table({"given_label": ["a", "a", "b", "b", "c", "c"],
                             "final_label": ["b", "c", "b", "c", "c", "a"],
                             "clean_label": ["b", "b", "a", "b", "c", None],
                             "partition": ["P", "P", "R", "P", "R", "H"],
                             "llm_label": ["b", "c", None, "c", None, None],
                             "pred_label": ["b", "b", "b", "c", "c", "c"],
                             "p_strong": [0.01, 0.02, 0.9, 0.03, 0.8, 0.5],
                             "p_weak": [0.1, 0.2, 0.9, 0.3, 0.8, 0.5],
                             "llm_logprob": [0.0, -0.1, None, -0.2, None, None]}), run / "labels.parquet" / "part-0.parquet")
    d = correction_detection(run / "labels.parquet")
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3)
    (tmp_path / "records").mkdir()
    rec = {"kind": "quality", "status": "ok", "key": "trec-asym40-s0-noiseal-knn", "spec_hash": "abc",
           "method": "noiseal-knn"}
    other = {**rec, "key": "trec-asym40-s0-base", "method": "base"}
    (tmp_path / "records" / "a.json").write_text(json.dumps(rec))
    (tmp_path / "records" / "b.json").write_text(json.dumps(other))
    assert backfill_from_labels(tmp_path) == 1
    filled = json.loads((tmp_path / "records" / "a.json").read_text())
    assert filled["correction"] == pytest.approx(d)
    assert filled["anatomy"] == labels_anatomy(run / "labels.parquet")
    # Row 3 is the right label changed; row 0 the wrong one fixed (row 1's answer is wrong too).
    assert filled["separability"]["broken"] == {"n": 1, "p_given": 0.03, "p_given_weak": 0.3,
                                                "vote_share": pytest.approx(np.exp(-0.2))}
    assert filled["separability"]["fixed"] == {"n": 1, "p_given": 0.01, "p_given_weak": 0.1, "vote_share": 1.0}
    assert "correction" not in json.loads((tmp_path / "records" / "b.json").read_text())
    assert backfill_from_labels(tmp_path) == 0  # already there: nothing recomputed


def test_prune_work_deletes_weights_and_checkpoints_and_keeps_results(tmp_path):
    from benchmarks.run import prune_work

    work = tmp_path / "trec-sym20-s0-noiseal-knn-abc"
    keep = [work / "run" / "labels.parquet" / "part-0.parquet", work / "run" / "metrics.json",
            work / "run" / "manifest.json", work / "run" / "model" / "noiseal_model.json"]
    drop = [work / "run" / "model" / "strong.safetensors", work / "model0" / "weak.safetensors",
            work / "run" / "checkpoints" / "r0" / "checkpoint_1" / "train_state.json",
            work / "checkpoints" / "f0" / "checkpoint_0" / "optim_strong.safetensors"]
    for i, p in enumerate(keep + drop):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (10 + i))
    freed = prune_work(work)
    assert freed == sum(10 + len(keep) + i for i in range(len(drop)))
    assert all(p.is_file() for p in keep)
    assert not any(p.exists() for p in drop)
    assert not list(work.rglob("checkpoints"))


def test_pairing_keeps_old_specs_and_finds_the_base_warmup(tmp_path):
    """Unpaired cells keep the spec hash they had before pairing existed (their records stay
    valid); a paired NoiseAL cell adopts the model0 of the same data and seed's base cell, which
    pruning keeps."""
    from dataclasses import replace

    from benchmarks.grid import Training
    from benchmarks.methods import WARMUP_DIR, warmup_source
    from benchmarks.run import prune_work, work_dir

    cell = next(c for c in smoke().cells if c.method == "noiseal-knn")
    assert "paired" not in cell.spec()["training"]
    paired = replace(cell, training=replace(cell.training, paired=True))
    assert paired.spec()["training"]["paired"] is True and paired.spec_hash() != cell.spec_hash()
    assert Training().paired is False

    base = replace(paired, method="base")
    base_work = work_dir(tmp_path, key=base.key, spec_hash=base.spec_hash())
    src, record = warmup_source(cell=paired, work=work_dir(tmp_path, key=paired.key, spec_hash=paired.spec_hash()))
    assert src == base_work / WARMUP_DIR and record == tmp_path / "records" / f"{base.key}.json"
    for rel in (f"{WARMUP_DIR}/strong.safetensors", "model1/strong.safetensors"):
        (base_work / rel).parent.mkdir(parents=True, exist_ok=True)
        (base_work / rel).write_bytes(b"x")
    prune_work(base_work, keep=(WARMUP_DIR,))
    assert (src / "strong.safetensors").is_file() and not (base_work / "model1" / "strong.safetensors").exists()


def test_a_torn_record_reads_as_missing_and_the_report_still_renders(tmp_path):
    good = _records()[0]
    (tmp_path / "records").mkdir()
    (tmp_path / "speed").mkdir()
    (tmp_path / "records" / "a.json").write_text(json.dumps(good))
    (tmp_path / "records" / "b.json").write_text("")  # what a write cut short by a full disk left
    (tmp_path / "speed" / "ddp.json").write_text('{"kind": "speed", "na')
    assert records.load_records(tmp_path) == [good]
    assert records.read_record(tmp_path / "records" / "b.json") == {}
    from benchmarks.run import backfill_from_labels

    assert backfill_from_labels(tmp_path) == 0  # runs before the report: must not stop at the torn record


def test_wrong_label_anatomy_counts_where_wrong_labels_end_and_what_the_annotator_did():
    from benchmarks.anatomy import wrong_label_anatomy

    # 8 rows with a clean label + 1 without (ignored). Wrong given labels: rows 0 (R), 1, 2 (P), 3 (H).
    # P = rows 1, 2, 4, 5: two wrong (annotator fixes row 1, not row 2), two right (row 4 confirmed,
    # row 5 unanswered). The annotator equals the strong model's prediction on rows 1 and 4 of the
    # three answered.
    part = np.array(["R", "P", "P", "H", "P", "P", "R", "R", "P"], dtype=object)
    given = np.array([0, 0, 0, 1, 2, 2, 1, 1, 0])
    clean = np.array([1, 1, 1, 0, 2, 2, 1, 1, -1])
    ann = np.array([-1, 1, 2, -1, 2, -1, -1, -1, 1])
    pred = np.array([1, 1, 1, 0, 2, 2, 1, 1, 1])
    a = wrong_label_anatomy(partition=part, given=given, clean=clean, annotator=ann, pred=pred)
    assert a["wrong"] == 4
    assert a["wrong_in"] == pytest.approx({"R": 0.25, "P": 0.5, "H": 0.25})
    assert a["r_wrong"] == pytest.approx(1 / 3) and a["p_right"] == pytest.approx(0.5)
    assert a["annotator_fixes"] == pytest.approx(0.5) and a["annotator_keeps"] == pytest.approx(1.0)
    assert a["annotator_model_agree"] == pytest.approx(2 / 3)
    # An empty subset gives None, never a division by zero.
    none = wrong_label_anatomy(partition=part[:1], given=given[:1], clean=clean[:1], annotator=ann[:1], pred=pred[:1])
    assert none["p_right"] is None and none["annotator_fixes"] is None and none["wrong_in"]["R"] == 1.0




def test_a_grid_without_a_speed_part_says_so_and_runs_none(tmp_path):
    from benchmarks.run import run_speed

    assert real().speed is None
    assert run_speed(real(), out=tmp_path, data_root=tmp_path, fresh=False) == []
    assert not (tmp_path / "speed").exists()
    results = tmp_path / "RESULTS-real.md"
    report.write_all(records=[], grid=real(), results=results, csv_json_dir=tmp_path, command="noiseal-ray bench --grid real",
                     run_info={}, out_rel="benchmarks/out/real")
    assert "This grid has no speed part" in results.read_text()


def test_the_smoke_grid_leaves_round_scaling_and_ddp_to_the_trec_grid(tmp_path):
    from benchmarks.speed import run_all

    assert smoke().speed.round_rows == () and smoke().speed.ddp_rows == 0
    assert trec().speed.round_rows and trec().speed.ddp_rows
    # Nothing runs for them (no Ray needed), and the report says where the figures are instead.
    assert run_all(smoke().speed, out=tmp_path, data_root=tmp_path, fresh=False, names={"round_scaling", "ddp"}) == []
    old = [{"kind": "speed", "name": n, "status": "failed", "error": "from an earlier spec"} for n in ("round_scaling", "ddp")]
    md = speed_report.speed_markdown(old, spec=smoke().speed)
    assert "(3) Wall time of one NoiseAL round as the corpus grows**: not in this grid" in md
    assert "(4) One training epoch, 1 worker vs 2 DDP workers**: not in this grid" in md
    assert "failed" not in md
    assert "not in this grid" not in speed_report.speed_markdown(old, spec=trec().speed)


def test_a_cell_reruns_from_nothing_when_fresh_or_after_its_weights_were_pruned(tmp_path):
    """A finished cell's work folder keeps its manifests but not its weights: rerunning the cell
    there resumed a 'finished' NoiseAL run in 0 s and sent cleanlab looking for pruned fold models."""
    from benchmarks.run import PRUNED, start_work

    work = tmp_path / "trec-asym40-s0-cleanlab-abc"
    piece = work / "cv0" / "noiseal_model.json"
    piece.parent.mkdir(parents=True)
    piece.write_text("{}")
    assert start_work(work, fresh=False) == work and piece.exists()  # an interrupted run: resumed
    assert start_work(work, fresh=True) == work and not work.exists()  # --fresh: from nothing
    piece.parent.mkdir(parents=True)
    piece.write_text("{}")
    (work / PRUNED).touch()
    start_work(work, fresh=False)
    assert not work.exists()  # finished and pruned: its pieces lack weights, so from nothing




def test_a_cell_another_process_is_running_is_skipped_not_run_twice(tmp_path, capsys):
    import subprocess

    from benchmarks.grid import Grid
    from benchmarks.run import run_quality

    cell = smoke().cells[0]
    held = tmp_path / "locks" / cell.key
    held.mkdir(parents=True)
    code = ("import sys, time; from noiseal_ray.rundir import hold_run_dir\n"
            "with hold_run_dir(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        got = run_quality(Grid("g", (cell,), None, ""), out=tmp_path, data_root=tmp_path / "no-data", fresh=False)
    finally:
        proc.kill()
        proc.wait()
    assert got == []
    said = capsys.readouterr().out
    assert f"{cell.key}: skipped, " in said and "in use by another noiseal-ray process" in said
    assert not (tmp_path / "records" / f"{cell.key}.json").exists() and not (tmp_path / "work").exists()




def test_broken_vs_fixed_compares_the_right_labels_changed_with_the_wrong_ones_fixed(tmp_path):
    from benchmarks.anatomy import broken_vs_fixed

    nan = float("nan")
    part = np.array(["P", "P", "P", "P", "P", "R", "P"], dtype=object)
    given = np.array([0, 1, 1, 2, 0, 0, 1])
    clean = np.array([0, 1, 0, 0, 0, 1, -1])  # last row: no clean label, ignored
    ann = np.array([1, 2, 0, 0, -1, 1, 0])  # row 4: no answer, ignored; row 5 in R, ignored
    p_given = np.array([0.1, 0.3, 0.02, 0.04, 0.9, 0.5, 0.5])
    weak = np.array([0.2, 0.4, 0.1, 0.3, 0.9, 0.5, 0.5])
    share = np.array([0.8, 1.0, 1.0, nan, nan, 1.0, 1.0])
    got = broken_vs_fixed(partition=part, given=given, clean=clean, annotator=ann, p_given=p_given, p_given_weak=weak,
                          vote_share=share)
    # Rows 0 and 1: right labels changed. Rows 2 and 3: wrong labels set to the truth.
    assert got["broken"] == {"n": 2, "p_given": pytest.approx(0.2), "p_given_weak": pytest.approx(0.3),
                             "vote_share": pytest.approx(0.9)}
    assert got["fixed"] == {"n": 2, "p_given": pytest.approx(0.03), "p_given_weak": pytest.approx(0.2),
                            "vote_share": pytest.approx(1.0)}
    none = broken_vs_fixed(partition=part[:0], given=given[:0], clean=clean[:0], annotator=ann[:0],
                           p_given=p_given[:0], p_given_weak=weak[:0], vote_share=share[:0])
    assert none["broken"] == {"n": 0, "p_given": None, "p_given_weak": None, "vote_share": None}
    sep = T.separability([{"kind": "quality", "status": "ok", "key": "k", "setting": "s", "separability": got}])
    assert sep.to_dict("records") == [{"run": "k", "group": "broken", **got["broken"]}, {"run": "k", "group": "fixed", **got["fixed"]}]


def test_refit_retrains_on_the_final_labels_of_its_noiseal_cell_row_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.methods import refit_labels, refit_source, run_method

    cell = next(c for c in trec().cells if c.key == "trec-asym20-s1-noiseal-knn-refit")
    src = next(c for c in trec().cells if c.key == "trec-asym20-s1-noiseal-knn")
    # The runner's layout: work/<key>-<spec hash>; the refit reads its NoiseAL sibling's labels.
    work = tmp_path / "work" / f"{cell.key}-{cell.spec_hash()}"
    assert refit_source(cell=cell, work=work) == tmp_path / "work" / f"{src.key}-{src.spec_hash()}" / "run" / "labels.parquet"
    with pytest.raises(FileNotFoundError, match="run the cell trec-asym20-s1-noiseal-knn first"):
        run_method(cell=cell, meta={}, work=work)
    # Rows come back in the training data's order, whatever the order in labels.parquet.
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"id": ["c", "a", "b"], "final_label": ["NUM", "HUM", "NUM"], "given_label": ["x"] * 3}), labels)
    assert refit_labels(labels, ids=["a", "b", "c"], names=["HUM", "NUM"]).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="holds 3 rows, the training data 2"):
        refit_labels(labels, ids=["a", "b"], names=["HUM", "NUM"])
    with pytest.raises(ValueError, match=r"final labels \['NUM'\] are not in the training label set"):
        refit_labels(labels, ids=["a", "b", "c"], names=["HUM"])
    # Every refit cell of a grid comes after the cell it retrains on.
    for g in (trec(), full()):
        keys = [c.key for c in g.cells]
        for c in g.cells:
            if c.method.endswith("-refit"):
                assert keys.index(c.key[: -len("-refit")]) < keys.index(c.key)


def _rec(setting, seed, method, accs, *, dataset="d", f1=None, changed=None, **extra):
    r = {"kind": "quality", "status": "ok", "key": f"{dataset}-{setting}-s{seed}-{method}", "dataset": dataset,
         "setting": setting, "seed": seed, "method": method, "test_accuracy_rounds": list(accs), **extra}
    if f1 is not None:
        r["detection"] = {"f1": f1}
    if changed is not None:
        r["correction"] = {"f1": changed}
    return r


def test_cells_and_summary_group_over_seeds_and_skip_failures():
    cells = T.cells(_records())
    assert len(cells) == 27 and "trec-asym40-s9-base" not in set(cells["key"])
    summary = T.summary(cells)
    assert len(summary) == 9 and set(summary["n"]) == {3} and set(summary["seeds"]) == {"0 1 2"}
    assert list(summary[summary["setting"] == "asym40"]["method"]) == ["base", "cleanlab", "noiseal-knn"]
    base = summary[summary["method"] == "base"].iloc[0]
    assert math.isnan(base["detection.precision_mean"])  # plain fine-tuning detects nothing


def test_paired_differences_and_the_verdicts_are_numbers_and_booleans():
    recs = [_rec("sym40", 0, "noiseal-knn", [0.90], f1=0.80, changed=0.93, test_rows=200),
            _rec("sym40", 1, "noiseal-knn", [0.92], f1=0.82, changed=0.95),
            _rec("sym40", 0, "base", [0.85]), _rec("sym40", 1, "base", [0.86]),
            _rec("sym40", 0, "cleanlab", [0.91], f1=0.90), _rec("sym40", 1, "cleanlab", [0.90], f1=0.92),
            _rec("sym40", 0, "clean", [0.95]), _rec("sym40", 1, "clean", [0.93]),
            _rec("sym40", 2, "base", [0.10])]  # no NoiseAL seed 2: not paired
    paired = T.paired(recs)
    by = {(r.method, r.versus, r.seed): r.d_last for r in paired.itertuples()}
    assert by[("noiseal-knn", "base", 0)] == pytest.approx(0.05) and by[("noiseal-knn", "base", 1)] == pytest.approx(0.06)
    assert by[("noiseal-knn", "cleanlab", 0)] == pytest.approx(-0.01) and by[("noiseal-knn", "cleanlab", 1)] == pytest.approx(0.02)
    assert by[("cleanlab", "clean", 0)] == pytest.approx(-0.04)  # the headroom: clean above cleanlab
    assert ("base", "clean", 2) not in by
    m = {(r["method"], r["versus"]): r for r in T.margins(paired).to_dict("records")}
    vb, vc = m[("noiseal-knn", "base")], m[("noiseal-knn", "cleanlab")]
    assert vb["d_last_mean"] == pytest.approx(0.055) and vb["d_last_sd"] == pytest.approx(np.std([0.05, 0.06], ddof=1))
    assert (vb["ahead"], vb["paired"], vb["clear_margin"]) == (2, 2, True)
    assert (vc["ahead"], vc["clear_margin"], vc["flagged_beats"], vc["changed_beats"]) == (1, False, False, True)
    assert vc["f1_versus"] == pytest.approx(0.91)
    assert vb["within_bar"] is None  # the clean bar is about 20% noise only
    assert T.test_point_note(recs) == "one test-accuracy point is 2 of 200 test rows (d)"


def test_the_clean_bar_at_20_percent_on_the_mean_and_in_every_seed():
    def spec(setting, seed, method, epochs=1):
        noise, rate = ("none", 0.0) if setting == "none" else (setting[:-2], int(setting[-2:]) / 100)
        return {"train_rows": 5452, "spec": {"noise": noise, "rate": rate, "seed": seed, "method": method,
                                             "training": {"warmup_epochs": epochs}}}

    recs = [_rec("none", 0, "clean", [0.95], **spec("none", 0, "clean")),
            _rec("none", 1, "clean", [0.94], **spec("none", 1, "clean")),
            _rec("asym20", 0, "noiseal-knn", [0.93], **spec("asym20", 0, "noiseal-knn")),
            _rec("asym20", 1, "noiseal-knn", [0.904], **spec("asym20", 1, "noiseal-knn")),
            _rec("sym20", 0, "noiseal-knn", [0.90], **spec("sym20", 0, "noiseal-knn")),
            _rec("idn20", 0, "noiseal-knn", [0.95], **spec("idn20", 0, "noiseal-knn", epochs=2))]  # other budget
    m = {r["setting"]: r for r in T.margins(T.paired(recs)).to_dict("records")}
    assert m["asym20"]["d_last_mean"] == pytest.approx(-0.028)
    assert (m["asym20"]["within_bar"], m["asym20"]["within_bar_every_seed"]) == (True, False)
    assert (m["sym20"]["within_bar"], m["sym20"]["within_bar_every_seed"]) == (False, False)
    assert "idn20" not in m


def test_what_the_epochs_after_warm_up_did_is_a_column():
    recs = [_rec("asym20", 0, "noiseal-knn", [0.95, 0.94, 0.945]), _rec("asym20", 1, "noiseal-knn", [0.92, 0.91, 0.918]),
            _rec("asym20", 1, "noiseal-knn-refit", [0.944, 0.934], refit_label_accuracy=0.93, realised_noise=0.2),
            _rec("none", 0, "clean", [0.96])]
    cells = T.cells(recs).set_index("key")
    assert cells.loc["d-asym20-s0-noiseal-knn", "gain"] == pytest.approx(-0.005)
    assert cells.loc["d-asym20-s1-noiseal-knn-refit", "refit_label_accuracy"] == pytest.approx(0.93)
    assert cells.loc["d-asym20-s1-noiseal-knn-refit", "given_accuracy"] == pytest.approx(0.8)
    assert math.isnan(cells.loc["d-none-s0-clean", "gain"])  # one fit: nothing to compare
    summary = T.summary(T.cells(recs)).set_index("method")
    assert summary.loc["noiseal-knn", "gain_mean"] == pytest.approx(-0.0035)


def test_the_anatomy_table_holds_every_noiseal_run_with_an_anatomy():
    recs = _records()
    recs[6]["anatomy"] = {"wrong": 400, "wrong_in": {"R": 0.125, "P": 0.75, "H": 0.125}, "r_wrong": 0.07,
                          "p_right": 0.25, "annotator_fixes": 0.875, "annotator_keeps": 0.0, "annotator_model_agree": 0.5}
    rows = T.anatomy(recs).to_dict("records")
    assert len(rows) == 1 and rows[0]["run"] == recs[6]["key"] and rows[0]["wrong labels"] == 400
    assert (rows[0]["in R"], rows[0]["in P"], rows[0]["p_right"], rows[0]["annotator_fixes"]) == (0.125, 0.75, 0.25, 0.875)


COMMITTED = [g for g in ("trec", "smoke", "real", "breadth", "paired") if (ROOT / "benchmarks" / "results" / f"results-{g}.json").is_file()]


@pytest.mark.parametrize("grid", COMMITTED)
def test_every_committed_report_re_renders_from_its_records(grid, tmp_path):
    """`--only report` without a work folder renders from results-<grid>.json: the same records, the
    same quality CSV, and the summary numbers recomputed from the records."""
    from benchmarks.run import bench

    committed = ROOT / "benchmarks" / "results"
    shutil.copy(committed / f"results-{grid}.json", tmp_path / f"results-{grid}.json")
    # Nothing beside --results: the records come from the committed results-<grid>.json.
    assert bench(grid=grid, out=str(tmp_path / "gone"), results=str(tmp_path / "R.md"), only="report") == 0
    before = json.loads((tmp_path / f"results-{grid}.json").read_text())
    after = json.loads((tmp_path / "results" / f"results-{grid}.json").read_text())
    assert after["records"] == before["records"] and after["run_info"] == before["run_info"]
    assert (tmp_path / "results" / f"quality-{grid}.csv").read_text() == (committed / f"quality-{grid}.csv").read_text()
    text = (tmp_path / "R.md").read_text()
    for r in T.ok_quality(after["records"]):
        assert r["key"] in text or r.get("method") in text
    for row in after["rows"]:
        m, sd, _ = T.mean_sd([T.get(r, "acc_last") for r in T.ok_quality(after["records"])
                              if (r["dataset"], r["setting"], r["method"]) == (row["dataset"], row["setting"], row["method"])])
        assert row["acc_last_mean"] == pytest.approx(m) and report.fmt(m, sd, scale=100.0, decimals=1) in text
    assert not (tmp_path / "gone").exists()
    # The committed Markdown is what its records render to (only the command and folder lines differ).
    md = ROOT / "benchmarks" / ("RESULTS.md" if grid == HEADLINE else f"RESULTS-{grid}.md")

    def body(t: str) -> list[str]:
        return [x for x in t.splitlines() if not re.search(r"rendered by|Rendered by|noiseal-ray bench --grid", x)]

    assert body(text) == body(md.read_text())


def test_ablation_refuses_a_gmm_threshold_it_does_not_implement(capsys):
    from benchmarks.ablation import parse_args

    assert parse_args([]).thr == "mean"
    with pytest.raises(SystemExit):
        parse_args(["--thr", "gmm"])  # used to run plain cross-entropy under the name "gmm"
    assert "invalid choice: 'gmm'" in capsys.readouterr().err


def test_final_gates_undo_only_the_changes_their_evidence_does_not_back(tmp_path):
    """benchmarks.final_gates on a hand-made run folder: four rows, two classes, two rounds of tables."""
    import pandas as pd

    from benchmarks.final_gates import evidence, score, vetoes

    run = tmp_path / "run"
    # a: kept, right. b: a right change the strong model backed from the warm-up on. c: a wrong change
    # the warm-up never predicted, in H. d: a reviewed row whose label the reviewer changed.
    base = {"id": ["a", "b", "c", "d"], "clean_label": [0, 1, 0, 1], "given": [0, 0, 0, 0],
            "trusted": [False, False, False, True]}
    for r, (pred, prob) in {1: ([0, 1, 0, 1], [0.9, 0.8, 0.6, 0.9]), 2: ([0, 1, 1, 1], [0.9, 0.95, 0.95, 0.9])}.items():
        (run / "rounds" / f"r{r}" / "table").mkdir(parents=True)
        pd.DataFrame({**base, "pred": pred, "pred_prob": prob, "p_weak": [0.9, 0.1, 0.6, 0.5]}).to_parquet(
            run / "rounds" / f"r{r}" / "table" / "part-0.parquet")
    (run / "rounds" / "r0" / "table").mkdir(parents=True)  # the input table: not a scored round, never read
    (run / "manifest.json").write_text(json.dumps({"label_names": ["x", "y"]}))
    pd.DataFrame({"id": ["a", "b", "c", "d"], "final_label": ["x", "y", "y", "y"],
                  "partition": ["R", "P", "H", "R"]}).to_parquet(run / "labels.parquet")
    e = evidence(run)
    assert e["final"].tolist() == [0, 1, 1, 1] and e["preds"].shape == (2, 4)
    v = vetoes(e)
    assert v["none"].tolist() == [False] * 4
    assert v["stable"].tolist() == v["warm-up sure"].tolist() == [False, False, True, False]
    assert v["final sure"].tolist() == [False, False, False, False]  # c's last round backs it at 0.95
    assert v["weak doubts"].tolist() == [False, False, True, False]  # the weak model gives c's given label 0.6
    assert v["H keeps given"].tolist() == [False, False, True, False]
    assert not any(x[3] for x in v.values())  # a reviewed row is the reviewer's, no gate undoes it
    # Given right: a, c (2 of 4). The run: a, b, d right; c broken. Undoing c: all four right.
    assert score(e, v["none"]) == {"right": 75.0, "given": 50.0, "fixed": 100.0, "broken": 50.0}
    assert score(e, v["stable"]) == {"right": 100.0, "given": 50.0, "fixed": 100.0, "broken": 0.0}
    # Calibrated on clean test data: the model's predictions of y are right 40% of the time there, so
    # no change to y is more likely right than the label it replaces; x's precision is unknown (NaN).
    e["test_precision"] = np.array([np.nan, 0.4])
    v = vetoes(e)
    assert v["test precision"].tolist() == [False, True, True, False]
    assert v["sure + test precision"].tolist() == [False, True, True, False]
    e["test_precision"] = np.array([np.nan, 0.6])
    assert vetoes(e)["test precision"].tolist() == [False] * 4
    # Against the given label x alone: of the test rows predicted y, 6 are y and 4 are x, so x -> y stands;
    # with 3 y against 4 x it does not (b and c are undone, the reviewed d never is).
    e["test_confusion"] = np.array([[10, 4], [0, 6]])
    assert vetoes(e)["test precision (move)"].tolist() == [False] * 4
    e["test_confusion"] = np.array([[10, 4], [0, 3]])
    assert vetoes(e)["test precision (move)"].tolist() == [False, True, True, False]


def test_final_gates_read_the_test_precision_a_run_recorded(tmp_path):
    """--test needs no model where the run's last fit recorded its test confusion matrix."""
    from benchmarks.final_gates import test_precision
    from noiseal_ray.config import RunConfig, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(RunConfig(data="train.csv", test_data="test.csv", rounds=2), run / "config.yaml")
    confusion = [[8, 3, 0], [2, 1, 0], [0, 0, 0]]  # rows true, columns predicted; class 2 never predicted
    (run / "manifest.json").write_text(json.dumps({"label_names": ["a", "b", "c"],
                                                   "rounds": {"train2": {"test_confusion": confusion}}}))
    got = test_precision(run, classes=3)
    assert got[:2].tolist() == [0.8, 0.25] and np.isnan(got[2])
    save_config(RunConfig(data="train.csv", rounds=2), run / "config.yaml")
    with pytest.raises(ValueError, match="no test data"):
        test_precision(run, classes=3)
