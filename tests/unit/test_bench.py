"""Benchmark table code: aggregation over seeds, and every number in the Markdown from records."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.grid import DATASETS, GRIDS, HEADLINE, METHODS, breadth, full, get_grid, real, smoke, trec  # noqa: E402


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
    m, sd, n = report.mean_sd([0.9, 0.8, 0.7])
    assert m == pytest.approx(0.8) and sd == pytest.approx(0.1) and n == 3
    assert report.mean_sd([0.5]) == (0.5, None, 1)
    assert report.mean_sd([None, float("nan")]) == (None, None, 0)
    assert report.mean_sd([None, 2.0, 4.0])[0] == pytest.approx(3.0)


def test_fmt():
    assert report.fmt(0.91234, 0.0123, scale=100, decimals=1) == "91.2 ± 1.2"
    assert report.fmt(0.5, None) == "0.500"
    assert report.fmt(None, None) == "-"


def test_aggregate_groups_over_seeds_and_skips_failures():
    rows = report.aggregate(_records())
    assert len(rows) == 9
    for row in rows:
        assert row["seeds"] == [0, 1, 2] and row["n"] == 3
    order = [r["method"] for r in rows if (r["dataset"], r["setting"]) == ("trec", "asym40")]
    assert order == ["base", "cleanlab", "noiseal-knn"]
    base = next(r for r in rows if r["method"] == "base")
    assert base["detection.precision"]["mean"] is None  # plain fine-tuning detects nothing


def _expected_cells(recs: list[dict]) -> dict[tuple, list[str]]:
    """The table cells recomputed independently with numpy from the raw records."""
    out = {}
    ok = [r for r in recs if r["status"] == "ok"]
    for key in {(r["dataset"], r["setting"], r["method"]) for r in ok}:
        group = [r for r in ok if (r["dataset"], r["setting"], r["method"]) == key]
        cells = []
        for _, path, scale, dec in report.QUALITY_COLUMNS:
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
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| dataset")
            and not ln.startswith("| ---")]
    assert len(rows) == len(expected)
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        key = (cells[0], cells[1], cells[2])
        assert cells[4:] == expected[key], key
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
    assert f"`{cell.key}`: its record was made for an earlier specification" in text
    assert cell.spec_hash() in text


def test_margins_pair_seeds_and_check_the_clean_bar():
    def rec(setting, seed, method, last, best=None, f1=None):
        r = {"kind": "quality", "status": "ok", "dataset": "trec", "setting": setting, "seed": seed,
             "method": method, "test_accuracy_rounds": [best if best is not None else last, last]}
        if f1 is not None:
            r["detection"] = {"f1": f1}
        return r

    recs = [rec("asym40", 0, "noiseal-knn", 0.90, f1=0.8), rec("asym40", 1, "noiseal-knn", 0.86, f1=0.7),
            rec("asym40", 0, "base", 0.84), rec("asym40", 1, "base", 0.88),
            rec("asym40", 0, "cleanlab", 0.70, f1=0.6),  # one seed only: paired on seed 0 alone
            rec("asym40", 2, "base", 0.10),  # no NoiseAL seed 2: must not enter the pairing
            rec("sym20", 0, "noiseal-knn", 0.90), rec("sym20", 0, "clean", 0.95),
            rec("asym20", 0, "noiseal-knn", 0.93), rec("asym20", 0, "clean", 0.95)]
    rows = {(m["setting"], m["versus"]): m for m in report.margins(recs)}
    base = rows[("asym40", "base")]
    assert base["seeds"] == [0, 1] and base["ahead_last"] == 1 and base["paired_last"] == 2
    assert base["d_last"][0] == pytest.approx(0.02) and base["d_last"][1] == pytest.approx(np.std([0.06, -0.02], ddof=1))
    cl = rows[("asym40", "cleanlab")]
    assert cl["seeds"] == [0] and cl["d_last"] == (pytest.approx(0.2), None) and cl["f1_versus"] == pytest.approx(0.6)
    md = report.margins_markdown(recs)
    assert "| trec | asym40 | noiseal-knn | base | 0,1 | 2.0 ± 5.7 |" in md
    assert "sym20, noiseal-knn: 5.0 points below clean at the last round (seed 0: 5.0), **NOT within** 3 points." in md
    assert "asym20, noiseal-knn: 2.0 points below clean at the last round (seed 0: 2.0), **within** 3 points." in md
    # Within on the mean but not in every seed: said so, with each seed's gap.
    mixed = recs + [rec("asym20", 1, "noiseal-knn", 0.904), rec("asym20", 1, "clean", 0.94)]
    assert ("asym20, noiseal-knn: 2.8 ± 1.1 points below clean at the last round (seed 0: 2.0; seed 1: 3.6), "
            "**within** 3 points on the mean, **not in every seed** (1 of 2).") in report.margins_markdown(mixed)
    assert "not measured" in report.margins_markdown(recs[:5])
    # With base on the same seed, the bullet says how far plain fine-tuning is from clean too.
    with_base = recs + [rec("sym20", 0, "base", 0.93)]
    assert ("sym20, noiseal-knn: 5.0 points below clean at the last round (seed 0: 5.0), **NOT within** 3 points. "
            "Base, plain fine-tuning on the same noisy labels, is 2.0 points below clean (seed 0: 2.0).") in report.margins_markdown(with_base)


def test_margins_compare_every_noisy_setting_with_the_clean_run_of_its_seed():
    def rec(setting, seed, method, last, *, rows=5452, epochs=1):
        noise, rate = ("none", 0.0) if setting == "none" else (setting[:-2], int(setting[-2:]) / 100)
        return {"kind": "quality", "status": "ok", "dataset": "trec", "setting": setting, "seed": seed,
                "method": method, "test_accuracy_rounds": [last], "train_rows": rows,
                "spec": {"dataset": "trec", "noise": noise, "rate": rate, "seed": seed, "method": method,
                         "train_rows": None, "training": {"warmup_epochs": epochs}}}

    recs = [rec("none", 0, "clean", 0.96), rec("none", 1, "clean", 0.94),
            rec("sym20", 0, "noiseal-knn", 0.95), rec("sym20", 1, "noiseal-knn", 0.93),
            rec("idn20", 0, "noiseal-knn", 0.90),
            rec("asym20", 0, "noiseal-knn", 0.95, epochs=2)]  # another budget: not comparable with the clean run
    rows = {(m["setting"], m["versus"]): m for m in report.margins(recs)}
    sym = rows[("sym20", "clean")]
    assert sym["seeds"] == [0, 1] and sym["d_last"][0] == pytest.approx(-0.01)
    assert rows[("idn20", "clean")]["seeds"] == [0] and rows[("idn20", "clean")]["d_last"][0] == pytest.approx(-0.06)
    assert ("asym20", "clean") not in rows
    md = report.margins_markdown(recs)
    assert "sym20, noiseal-knn: 1.0 ± 0.0 points below clean at the last round (seed 0: 1.0; seed 1: 1.0), **within** 3 points." in md
    assert "idn20, noiseal-knn: 6.0 points below clean at the last round (seed 0: 6.0), **NOT within** 3 points." in md
    assert "What the labels say" not in md  # no anatomy in these records: nothing is made up

    # With each run's anatomy, the setting that falls short is set against the ones that meet the bar.
    def anat(in_r, p_right, keeps, fixes):
        return {"wrong": 100, "wrong_in": {"R": in_r, "P": 1 - in_r, "H": 0.0}, "r_wrong": 0.01, "p_right": p_right,
                "annotator_fixes": fixes, "annotator_keeps": keeps, "annotator_model_agree": 0.9}

    recs[2]["anatomy"], recs[3]["anatomy"] = anat(0.02, 0.10, 0.05, 0.96), anat(0.04, 0.20, 0.15, 0.94)
    recs[4]["anatomy"] = anat(0.30, 0.40, 0.10, 0.80)
    recs[2]["recovery"], recs[3]["recovery"] = {"final_accuracy": 0.97, "given_accuracy": 0.8}, {"final_accuracy": 0.95, "given_accuracy": 0.8}
    recs[4]["recovery"] = {"final_accuracy": 0.86, "given_accuracy": 0.8}
    md = report.margins_markdown(recs)
    why = [line for line in md.splitlines() if "What the labels say" in line]
    assert len(why) == 1 and md.splitlines().index(why[0]) == md.splitlines().index(
        next(line for line in md.splitlines() if "idn20, noiseal-knn" in line)) + 1
    assert ("30% of the wrong labels end in R, kept as clean and used as demonstrations (against 3% at sym20); "
            "40% of P was right to begin with (against 15% at sym20), and the annotator kept 10% of those "
            "(against 10% at sym20); it fixed 80% of P's wrong labels (against 95% at sym20). "
            "The final labels are 86% right (against 96% at sym20) (given labels: 80%).") in why[0]


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

    from benchmarks.methods import correction_detection, labels_anatomy
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
    src, record = warmup_source(paired, work_dir(tmp_path, key=paired.key, spec_hash=paired.spec_hash()))
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
    assert report.load_records(tmp_path) == [good]
    assert report.read_record(tmp_path / "records" / "b.json") == {}
    from benchmarks.run import backfill_from_labels

    assert backfill_from_labels(tmp_path) == 0  # runs before the report: must not stop at the torn record


def test_wrong_label_anatomy_counts_where_wrong_labels_end_and_what_the_annotator_did():
    from benchmarks.methods import wrong_label_anatomy

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


def test_the_report_shows_the_anatomy_of_every_noiseal_run():
    recs = _records()
    recs[6]["anatomy"] = {"wrong": 400, "wrong_in": {"R": 0.125, "P": 0.75, "H": 0.125}, "r_wrong": 0.07,
                          "p_right": 0.25, "annotator_fixes": 0.875, "annotator_keeps": 0.0, "annotator_model_agree": 0.5}
    md = report.anatomy_markdown(recs)
    row = [line for line in md.splitlines() if line.startswith(f"| {recs[6]['key']} |")]
    assert row == [f"| {recs[6]['key']} | 400 | 0.125 | 0.750 | 0.125 | 0.070 | 0.250 | 0.875 | 0.000 | 0.500 |"]
    assert len(md.splitlines()) == 3  # header, rule, the one run with an anatomy


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
    md = report.speed_markdown(old, spec=smoke().speed)
    assert "(3) Wall time of one NoiseAL round as the corpus grows**: not in this grid" in md
    assert "(4) One training epoch, 1 worker vs 2 DDP workers**: not in this grid" in md
    assert "failed" not in md
    assert "not in this grid" not in report.speed_markdown(old, spec=trec().speed)


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


def test_against_baselines_states_the_clear_margin_verdict_detection_and_headroom():
    def rec(setting, seed, method, last, f1=None, changed=None):
        r = {"kind": "quality", "status": "ok", "dataset": "d", "setting": setting, "seed": seed,
             "method": method, "test_accuracy_rounds": [last], "test_rows": 200}
        if f1 is not None:
            r["detection"] = {"f1": f1}
        if changed is not None:
            r["correction"] = {"f1": changed}
        return r

    recs = [rec("sym40", 0, "noiseal-knn", 0.90, f1=0.80, changed=0.93), rec("sym40", 1, "noiseal-knn", 0.92, f1=0.82, changed=0.95),
            rec("sym40", 0, "base", 0.85), rec("sym40", 1, "base", 0.86),
            rec("sym40", 0, "cleanlab", 0.91, f1=0.90), rec("sym40", 1, "cleanlab", 0.90, f1=0.92),
            rec("sym40", 0, "clean", 0.95), rec("sym40", 1, "clean", 0.93)]
    lines = report.against_baselines(report.margins(recs))
    assert len(lines) == 1
    line = lines[0]
    # base: +5 and +6 points, ahead in both seeds, mean far above its spread: clear.
    assert "vs base 5.5 ± 0.7 points (seed 0: +5.0; seed 1: +6.0), ahead in 2 of 2 seeds: **clear margin**" in line
    # cleanlab: -1 and +2 points, behind in one seed: not clear.
    assert "vs cleanlab 0.5 ± 2.1 points (seed 0: -1.0; seed 1: +2.0), ahead in 1 of 2 seeds: **no clear margin**" in line
    assert "cleanlab 0.910: NoiseAL's changed F1 beats it." in line
    # clean - cleanlab per seed: 4 and 3 points.
    assert "clean upper bound is 3.5 ± 0.7 points above cleanlab here (seed 0: 4.0; seed 1: 3.0)" in line
    md = report.margins_markdown(recs)
    assert line in md and "one test-accuracy point is 2 of 200 test rows (d)" not in md  # the note is the page's
    # Ahead in every seed but by less than the seeds' spread: not clear; one seed alone never is.
    assert not report.clear_margin({"d_last": (0.01, 0.02), "ahead_last": 2, "paired_last": 2})
    assert report.clear_margin({"d_last": (0.03, 0.02), "ahead_last": 2, "paired_last": 2})
    assert not report.clear_margin({"d_last": (0.30, None), "ahead_last": 1, "paired_last": 1})
    # Without confident learning there is no verdict to give.
    assert report.against_baselines(report.margins([r for r in recs if r["method"] != "cleanlab"])) == []
    assert report.test_point_note(recs) == "one test-accuracy point is 2 of 200 test rows (d)"


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


def test_training_facts_compare_what_the_epochs_after_warm_up_did():
    def rec(setting, seed, method, accs):
        return {"kind": "quality", "status": "ok", "dataset": "d", "setting": setting, "seed": seed,
                "method": method, "test_accuracy_rounds": accs}

    recs = [rec("asym20", 0, "noiseal-knn", [0.95, 0.94, 0.945]), rec("asym20", 1, "noiseal-knn", [0.92, 0.91, 0.918]),
            rec("asym20", 1, "base", [0.93, 0.95, 0.952]),
            rec("none", 0, "clean", [0.956, 0.962]), rec("none", 1, "clean", [0.96, 0.972]),
            rec("none", 2, "clean", [0.5, 0.9])]  # a seed NoiseAL did not run: left out
    line = report.training_facts(recs, dataset="d", setting="asym20", method="noiseal-knn")
    assert line == ("What training did (seeds 0,1): test accuracy from the warm-up fit to the last round, in points: "
                    "noiseal-knn -0.4 ± 0.2, base +2.2 (seed 1 only), clean +0.9 ± 0.4.")
    assert report.training_facts(recs, dataset="d", setting="sym40", method="noiseal-knn") is None
    # A refit says how right the labels it trained on were, against the given ones base trains on.
    refit = rec("asym20", 1, "noiseal-knn-refit", [0.944, 0.934])
    refit.update(refit_label_accuracy=0.93, realised_noise=0.2)
    assert report.training_facts(recs + [refit], dataset="d", setting="asym20", method="noiseal-knn-refit") == (
        "What training did (seed 1): test accuracy from the warm-up fit to the last round, in points: "
        "noiseal-knn-refit -1.0, base +2.2, clean +1.2. It trained on labels 93.0% right (the given labels, "
        "which base trains on: 80.0%).")


def test_broken_vs_fixed_compares_the_right_labels_changed_with_the_wrong_ones_fixed(tmp_path):
    from benchmarks.methods import broken_vs_fixed

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
    md = report.separability_markdown([{"kind": "quality", "status": "ok", "key": "k", "setting": "s", "separability": got}])
    assert "| k | 2 | 0.200 / 0.300 | 0.90 | 2 | 0.030 / 0.200 | 1.00 |" in md


def test_refit_retrains_on_the_final_labels_of_its_noiseal_cell_row_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.methods import refit_labels, refit_source, run_method

    cell = next(c for c in trec().cells if c.key == "trec-asym20-s1-noiseal-knn-refit")
    src = next(c for c in trec().cells if c.key == "trec-asym20-s1-noiseal-knn")
    # The runner's layout: work/<key>-<spec hash>; the refit reads its NoiseAL sibling's labels.
    work = tmp_path / "work" / f"{cell.key}-{cell.spec_hash()}"
    assert refit_source(cell, work) == tmp_path / "work" / f"{src.key}-{src.spec_hash()}" / "run" / "labels.parquet"
    with pytest.raises(FileNotFoundError, match="run the cell trec-asym20-s1-noiseal-knn first"):
        run_method(cell, {}, work)
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
