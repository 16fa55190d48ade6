"""The HTML report on synthetic run directories (no Ray): key numbers, embedded PNGs, escaping,
edge cases (no clean labels, no test data, annotator none, one round, 1000 classes), CLI."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from noiseal_ray.config import RunConfig, save_config
from noiseal_ray.finalize import batch_stats, final_labels, summarise
from noiseal_ray.partition import ThresholdState, partition
from noiseal_ray.pipeline import Manifest, build_metrics

XSS = "<script>alert(1)</script>"


def make_run(out: Path, *, n: int = 240, classes: int = 6, rounds: int = 2, clean: bool = True, test: bool = True,
             annotator: str = "knn", hard_policy: str = "strong", seed: int = 0, xss: bool = True) -> Path:
    """A run directory as `noiseal-ray run` leaves it: config.yaml, manifest.json, metrics.json,
    labels.parquet/ and rounds/r{n}/table/, built with the pipeline's own partition and metrics code."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"class_{i}" for i in range(classes)]
    if xss:
        names[-1] = "<b>bold</b>&co"
    truth = rng.integers(0, classes, n)
    noisy = rng.random(n) < 0.3
    given = np.where(noisy, (truth + rng.integers(1, max(classes, 2), n)) % classes, truth)
    texts = [f"sample {i} about {names[truth[i]]}" for i in range(n)]
    if xss:
        texts[0] = f"evil {XSS} & <img src=x onerror=alert(2)>"
        given[0] = (truth[0] + 1) % classes  # a corrected row: shows up in the review tables
        noisy[0] = True
    ids = [f"id-{i:05d}" for i in range(n)]
    cfg = RunConfig(data="/data/corpus.csv", label_col="noisy_label", clean_label_col="label" if clean else None,
                    test_data="/data/test.csv" if test else None, rounds=rounds, annotator=annotator,
                    hard_policy=hard_policy, strong_model="tiny-encoder", report=False)
    save_config(cfg, out / "config.yaml")
    state = ThresholdState(beta=0.9, per_class=True)
    manifest = Manifest(out / "manifest.json", {"stages": [], "rounds": {}, "label_names": names, "n_rows": n,
                                                 "has_clean": clean, "class_counts":
                                                     np.bincount(given, minlength=classes).tolist(),
                                                 "metrics": {"rounds": [], "stage_seconds": {}}})
    llm = np.full(n, -1)
    logprob = np.full(n, np.nan)
    llm_round = np.full(n, -1)
    for r in range(0, rounds + 1):
        manifest.data["rounds"][f"train{r}"] = {"round": r, "train": {"loss_strong": 1.5 / (r + 1), "loss_weak": 1.7 / (r + 1)},
                                                **({"test_accuracy": 0.5 + 0.1 * r} if test else {})}
    for r in range(1, rounds + 2):
        sharp = 0.15 * r
        p_strong = np.clip(np.where(noisy, rng.beta(2, 5, n), rng.beta(5, 2, n)) * (1 - sharp) + sharp * ~noisy, 0, 1)
        p_weak = np.clip(np.where(noisy, rng.beta(2, 4, n), rng.beta(4, 2, n)), 0, 1)
        state.update(mean_strong=np.array([p_strong[given == c].mean() if (given == c).any() else np.nan
                                           for c in range(classes)]),
                     mean_weak=np.array([p_weak[given == c].mean() if (given == c).any() else np.nan
                                         for c in range(classes)]))
        part = partition(p_strong=p_strong, p_weak=p_weak, labels=given, tau_strong=state.strong, tau_weak=state.weak)
        if xss:
            part[0] = 1
        pred = np.where(rng.random(n) < 0.8, truth, rng.integers(0, classes, n))
        pred_prob = rng.uniform(0.3, 1.0, n)
        if annotator != "none":
            need = (part == 1) & (llm < 0)
            llm[need] = np.where(rng.random(need.sum()) < 0.85, truth[need], rng.integers(0, classes, need.sum()))
            logprob[need] = np.log(rng.uniform(0.2, 1.0, need.sum()))
            llm_round[need] = r
            if xss:
                llm[0], logprob[0] = truth[0], 0.0
        err = [""] * n
        table = pa.table({
            "id": ids, "text": texts, "label": given.astype(np.int64),
            "clean_label": (truth if clean else np.full(n, -1)).astype(np.int64), "part": part.astype(np.int8),
            "llm_label": llm.astype(np.int64), "llm_logprob": logprob.copy(), "llm_error": err,
            "llm_round": llm_round.astype(np.int64), "llm_cached": np.zeros(n, bool),
            "p_strong": p_strong.astype(np.float32), "p_weak": p_weak.astype(np.float32),
            "pred": pred.astype(np.int64), "pred_prob": pred_prob.astype(np.float32), "truncated": np.zeros(n, bool)})
        tdir = out / "rounds" / f"r{r}" / "table"
        tdir.mkdir(parents=True, exist_ok=True)
        half = n // 2
        pq.write_table(table.slice(0, half), tdir / "part-0.parquet")
        pq.write_table(table.slice(half), tdir / "part-1.parquet")
        arrays = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
        counts = {k: int(v[0]) for k, v in batch_stats(arrays, round_no=r, hard_policy=hard_policy).items()}
        summary = summarise(counts)
        summary["thresholds"] = {"strong": state.strong.tolist(), "weak": state.weak.tolist()}
        manifest.data["rounds"][f"part{r}"] = summary
    manifest.data["thresholds"] = state.to_dict()
    manifest.data["metrics"]["stage_seconds"] = {"train": 61.5, "score": 12.25, "partition": 3.0, "annotate": 8.0}
    manifest.save()
    # labels.parquet, as write_labels does it, from the final round table
    final = final_labels(part=part.astype(np.int64), given=given, llm=llm, pred=pred, hard_policy=hard_policy)
    nm = np.array(names, dtype=object)
    cols = {"id": ids, "text": texts, "given_label": nm[given].tolist(), "final_label": nm[final].tolist(),
            "partition": np.array(["R", "P", "H"], dtype=object)[part.astype(np.int64)].tolist(),
            "llm_label": [nm[v] if v >= 0 else None for v in llm], "llm_logprob": logprob,
            "llm_error": pa.array([None] * n, pa.string()), "p_strong": p_strong, "p_weak": p_weak,
            "pred_label": nm[pred].tolist(), "pred_prob": pred_prob, "changed": final != given,
            "truncated": np.zeros(n, bool)}
    if clean:
        cols["clean_label"] = nm[truth].tolist()
    ldir = out / "labels.parquet"
    ldir.mkdir(exist_ok=True)
    pq.write_table(pa.table(cols), ldir / "part-0.parquet")
    metrics = build_metrics(manifest=manifest, config=cfg, wall=93.0)
    (out / "metrics.json").write_text(json.dumps(metrics, default=float))
    return out


def images(doc: str) -> list[bytes]:
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", doc)
    assert len(srcs) == len(re.findall(r"<img\b", doc))
    out = []
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), s[:60]
        raw = base64.b64decode(s.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(raw)
    return out


def no_external_refs(doc: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", doc)
    assert "<link" not in doc and "@import" not in doc and "url(" not in doc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from noiseal_ray.report import write_report

    run = make_run(tmp_path_factory.mktemp("run") / "out")
    path = write_report(run_dir=run)
    return run, path.read_text()


def test_report_has_key_numbers(full_run):
    run, doc = full_run
    assert (run / "report.html").is_file()
    m = json.loads((run / "metrics.json").read_text())
    for e in m["rounds"]:
        for p in ("R", "P", "H"):
            if "sizes" in e:
                assert f"{e['sizes'][p]:,}" in doc
    acc = m["final"]["test_accuracy_last"]
    assert f"{100 * acc:.1f}%" in doc
    assert f"{100 * m['final']['detection']['f1']:.1f}%" in doc
    corr = m["final"]["correction"]
    assert f"{100 * corr['precision']:.1f}% / {100 * corr['recall']:.1f}% / {100 * corr['f1']:.1f}%" in doc
    assert "Most confident corrections" in doc and "Most doubtful samples" in doc
    assert "per-class" in doc  # thresholds are per class: the report says how they are shown


def test_report_images_are_embedded_pngs(full_run):
    _, doc = full_run
    pngs = images(doc)
    # sizes, quality, 3 rounds x confidence, transition, noise
    assert len(pngs) == 7
    no_external_refs(doc)


def test_report_escapes_untrusted_text(full_run):
    _, doc = full_run
    assert XSS not in doc and "<img src=x" not in doc and "<b>bold</b>" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "&lt;b&gt;bold&lt;/b&gt;&amp;co" in doc
    # the only script is the report's own image check
    assert doc.count("<script>") == 1


def test_report_without_clean_labels_test_data_or_annotator(tmp_path):
    from noiseal_ray.report import build_report

    run = make_run(tmp_path / "r", clean=False, test=False, annotator="none", rounds=1, hard_policy="given")
    doc = build_report(run_dir=run)
    images(doc)
    assert "true noise" not in doc.lower().replace("true noise is unknown", "")
    assert "no test accuracy" in doc
    assert "det. F1" not in doc
    m = json.loads((run / "metrics.json").read_text())
    assert f"{m['final']['sizes']['P']:,}" in doc


def test_report_single_round_and_no_rounds_dir(tmp_path):
    import shutil

    from noiseal_ray.report import build_report

    run = make_run(tmp_path / "r", rounds=0, xss=False)
    doc = build_report(run_dir=run)
    assert len(images(doc)) == 5  # sizes, quality, one confidence figure, transition, noise
    shutil.rmtree(run / "rounds")
    doc = build_report(run_dir=run)
    assert "No round table" in doc
    images(doc)


def test_report_caps_1000_classes(tmp_path):
    from noiseal_ray.report import HEATMAP_MAX, TABLE_MAX, build_report

    run = make_run(tmp_path / "r", n=3000, classes=1000, rounds=1, xss=False)
    doc = build_report(run_dir=run)
    images(doc)
    assert f"the {TABLE_MAX} largest of 1,000 classes" in doc
    assert f"show the {HEATMAP_MAX} largest of 1,000" in doc
    table = doc.split('<table class="classes">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == TABLE_MAX + 1
    assert len(doc) < 3_000_000


def test_report_errors(tmp_path):
    from noiseal_ray.errors import InputError
    from noiseal_ray.report import write_report

    with pytest.raises(InputError, match="does not exist"):
        write_report(run_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a noiseal-ray run directory"):
        write_report(run_dir=tmp_path / "empty")
    run = make_run(tmp_path / "r", n=60, rounds=0, xss=False)
    (run / "metrics.json").unlink()
    with pytest.raises(InputError, match="has not finished"):
        write_report(run_dir=run)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from noiseal_ray.errors import InputError

    run = make_run(tmp_path / "r", n=60, rounds=0, xss=False)
    out = tmp_path / "x" / "rep.html"
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and str(out) in res.output
    assert not (run / "report.html").exists()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and isinstance(bad.exception, InputError) and bad.exception.exit_code == 2
    assert "does not exist" in str(bad.exception)


def test_command_module_imports_are_cheap():
    import subprocess
    import sys

    code = ("import sys, noiseal_ray.commands.report, noiseal_ray.commands.export; "
            "bad = [m for m in ('ray', 'torch', 'matplotlib', 'pandas', 'pyarrow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_changes_are_scored_as_a_detector_of_wrong_labels():
    from noiseal_ray.metrics import detection

    rng = np.random.default_rng(3)
    n, c = 500, 4
    clean = rng.integers(0, c, n)
    clean[:20] = -1  # unknown truth: left out
    given = np.where(rng.random(n) < 0.3, rng.integers(0, c, n), np.maximum(clean, 0))
    batch = {"part": rng.integers(0, 3, n), "label": given, "llm_label": rng.integers(-1, c, n),
             "pred": rng.integers(0, c, n), "clean_label": clean, "llm_round": np.ones(n, np.int64),
             "llm_error": [""] * n, "llm_cached": np.zeros(n, bool), "truncated": np.zeros(n, bool)}
    counts = {k: int(v[0]) for k, v in batch_stats(batch, round_no=1, hard_policy="strong").items()}
    final = final_labels(part=batch["part"], given=given, llm=batch["llm_label"], pred=batch["pred"],
                         hard_policy="strong")
    want = detection(flagged=final != given, given=given, clean=clean)
    got = summarise(counts)["correction"]
    assert got["precision"] == pytest.approx(want["precision"]) and got["recall"] == pytest.approx(want["recall"])
    assert got["f1"] == pytest.approx(want["f1"]) and 0 < got["f1"] < 1
    # a summary stored by a version without these counts still renders, without the block
    old = {k: v for k, v in counts.items() if k not in ("changed_known", "changed_wrong")}
    assert "correction" not in summarise(old) and "detection" in summarise(old)
