"""Finalize: labels.parquet from the last round table, the strong model, metrics.json, report.

Ray and torch (via the model bundle) are imported inside the functions: importing them takes
seconds, and the unit tests that build metrics do not need them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from noiseal_ray.config import RunConfig
from noiseal_ray.finalize import ChangeGate, gate_from, gated_final, given_and_trusted
from noiseal_ray.rundir import LABELS, MODEL, Manifest, atomic_write_json, partition_key, train_key
from noiseal_ray.stages.context import RunContext
from noiseal_ray.stages.tables import read_dir, write_dir

# labels.parquet, one row per input row. A fixed schema: a part where every llm_error is null
# must not be typed null. clean_label (string) follows when the corpus has clean labels.
LABELS_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("given_label", pa.string()), ("final_label", pa.string()),
    ("partition", pa.string()), ("llm_label", pa.string()), ("llm_logprob", pa.float64()),
    ("llm_error", pa.string()), ("llm_round", pa.int64()), ("p_strong", pa.float64()),
    ("p_weak", pa.float64()), ("pred_label", pa.string()), ("pred_prob", pa.float64()),
    ("changed", pa.bool_()), ("held", pa.bool_()), ("truncated", pa.bool_()), ("reviewed", pa.bool_())])
PART_NAMES = np.array(["R", "P", "H"], dtype=object)


def _labels_schema(has_clean: bool) -> pa.Schema:
    return LABELS_SCHEMA.append(pa.field("clean_label", pa.string())) if has_clean else LABELS_SCHEMA


def _to_labels(b: dict, *, label_names: list[str], hard_policy: str, has_clean: bool,
               gate: ChangeGate | None = None) -> pa.Table:
    """A round-table batch as labels.parquet rows: label indices become names, final labels chosen;
    ``held``: a change the method suggested that the ``gate`` held back (the label stays)."""
    names = np.array(label_names, dtype=object)
    given, trusted = given_and_trusted(b)
    llm = b["llm_label"].astype(np.int64)
    final, held = gated_final(b, hard_policy=hard_policy, gate=gate)
    cols = {
        "id": b["id"], "text": b["text"], "given_label": names[given], "final_label": names[final],
        "partition": PART_NAMES[b["part"].astype(np.int64)],
        # An answer from an earlier round stays for reporting; llm_round says when it came.
        "llm_label": [names[v] if v >= 0 else None for v in llm],
        "llm_logprob": b["llm_logprob"].astype(np.float64),
        "llm_error": [e or None for e in b["llm_error"]],
        "llm_round": [int(r) if r >= 0 else None for r in b["llm_round"]],
        "p_strong": b["p_strong"].astype(np.float64), "p_weak": b["p_weak"].astype(np.float64),
        "pred_label": names[b["pred"].astype(np.int64)], "pred_prob": b["pred_prob"].astype(np.float64),
        "changed": final != given, "held": held, "truncated": b["truncated"].astype(bool), "reviewed": trusted,
    }
    if has_clean:
        cols["clean_label"] = [names[v] if v >= 0 else None for v in b["clean_label"].astype(np.int64)]
    schema = _labels_schema(has_clean)
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}, schema=schema)


def write_labels(*, table_dir: Path, out: Path, label_names: list[str], hard_policy: str, has_clean: bool,
                 gate: ChangeGate | None = None) -> None:
    """labels.parquet/: every input row once: id, text, given_label, final_label, partition, ...
    (``LABELS_SCHEMA``), in input order."""
    ds = read_dir(path=table_dir).map_batches(_to_labels, batch_format="numpy", fn_kwargs={
        "label_names": label_names, "hard_policy": hard_policy, "has_clean": has_clean,
        "gate": gate})
    write_dir(ds=ds, final=out / "labels.parquet")


def final_gate(*, run: RunContext) -> ChangeGate:
    """The change gate of labels.parquet: the last round table is scored by the last fit's model.
    ConfigError when a test precision is asked for and that fit measured no test data."""
    from noiseal_ray.errors import ConfigError
    from noiseal_ray.stages.annotate import corpus_given_pred  # deferred: the annotate stage imports the annotators

    c = run.config
    try:
        return gate_from(min_prob=c.change_min_prob, min_test_precision=c.min_test_precision(),
                         scope=c.change_precision_scope, fit_entry=run.manifest.round_entry(train_key(round_no=c.rounds)),
                         given_pred=corpus_given_pred(run=run, round_no=run.last_round))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def finalize_stage(*, run: RunContext) -> None:
    """labels.parquet and model/ (the strong model of the last trained round), unless done; then
    Ray Train's checkpoints go, unless they live where the user asked (config.storage_path)."""
    config, manifest, last = run.config, run.manifest, run.last_round
    if not manifest.done(LABELS):
        with run.progress.stage("write labels.parquet", rows=manifest.n_rows):
            write_labels(table_dir=run.round_dir(last) / "table", out=run.out, label_names=manifest.label_names,
                         hard_policy=config.hard_policy, has_clean=manifest.data["has_clean"],
                         gate=final_gate(run=run))
        manifest.mark(LABELS)
        shutil.rmtree(run.round_dir(last) / "scored", ignore_errors=True)
    if not manifest.done(MODEL):
        from noiseal_ray.models.bundle import load_bundle, save_bundle  # deferred: imports torch

        save_bundle(load_bundle(run.round_dir(config.rounds) / "model"), run.out / "model", include_weak=False)
        manifest.mark(MODEL)
    if config.storage_path is None:
        # Ray Train's checkpoints (weights + optimizer state, ~300 MB a fit for MiniLM) only serve a
        # resume mid-fit; a finished run never reads them. A storage path the user chose is theirs.
        shutil.rmtree(run.out / "checkpoints", ignore_errors=True)


def build_metrics(*, manifest: Manifest, config: RunConfig, wall: float) -> dict:
    """metrics.json: per round sizes, thresholds, losses, annotator counts, test accuracy, timing."""
    d = manifest.data
    rounds = []
    for r in range(0, config.rounds + 2):
        entry = {"round": r}
        entry.update(manifest.round_entry(partition_key(round_no=r)))
        tr = manifest.round_entry(train_key(round_no=r))
        if "train" in tr:  # an adopted warm-up's entry (stages.train) records no fit
            entry["train"] = tr["train"]
            if "test_accuracy" in tr:
                entry["test_accuracy"] = tr["test_accuracy"]
        if len(entry) > 1:
            rounds.append(entry)
    final = dict(manifest.round_entry(partition_key(round_no=config.rounds + 1)))
    accs = [e["test_accuracy"] for e in rounds if "test_accuracy" in e]
    if accs:
        final["test_accuracy_last"] = accs[-1]
        final["test_accuracy_best"] = max(accs)
    total_llm = sum(e.get("annotator", {}).get("queries", 0) for e in rounds)
    names = d["label_names"]
    reviewed = ({"files": config.reviewed_files(), "rows": d.get("reviewed", 0),
                 "changed_by_reviewer": d.get("reviewed_changed", 0),
                 # An earlier run's moves (given -> suggested) the reviewed rows judged, and which they refuted.
                 "moves": [{**m, "given": names[m["given"]], "suggested": names[m["suggested"]]}
                           for m in d.get("move_reviews", [])]} if config.reviewed_files() else None)
    return {"version": 1, "data": config.data, "rows": d["n_rows"], "label_names": d["label_names"],
            "class_counts": d.get("class_counts"), "annotator": config.annotator, "reviewed": reviewed,
            "annotator_queries": total_llm if config.annotator == "llm" else 0,
            "workers": config.workers, "rounds": rounds, "final": final,
            "stage_seconds": d["metrics"]["stage_seconds"], "wall_seconds_this_invocation": wall}


def write_metrics(*, run: RunContext, wall: float) -> dict:
    """Build metrics.json (``build_metrics``), write it atomically and return it."""
    metrics = build_metrics(manifest=run.manifest, config=run.config, wall=wall)
    atomic_write_json(run.out / "metrics.json", metrics)
    return metrics


def report_stage(*, run: RunContext) -> None:
    """report.html, when asked for and the report module is importable (it needs Jinja2 and plotting)."""
    if not run.config.report:
        return
    try:
        from noiseal_ray.report import write_report  # deferred: optional, heavy dependencies
    except ImportError:
        return
    with run.progress.stage("write report.html"):
        write_report(run_dir=run.out)
