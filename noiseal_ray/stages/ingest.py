"""Ingest: read and validate the corpus on the driver, write it as the base round table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from noiseal_ray.config import RunConfig, save_config
from noiseal_ray.data.io import load_corpus
from noiseal_ray.rundir import INGEST, fresh_tmp_dir, replace_dir
from noiseal_ray.stages.context import RunContext

BASE_FILES = 8  # files of the base table, so that Ray Data can read it in parallel


def _trust(corpus, *, config: RunConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """The labels the run trains on (n,) (reviewed where ``config.reviewed`` has them, else the
    given ones), the trusted mask (n,) bool, and facts: how many reviewed labels differ from the
    given (``reviewed_changed``) and the moves the reviews judged, refuted or not
    (``move_reviews``, ``noiseal_ray.review.moves.judge_moves``)."""
    labels = corpus.labels.astype(np.int64).copy()
    trusted = np.zeros(len(labels), bool)
    facts: dict = {"move_reviews": []}
    if config.reviewed_files():
        from noiseal_ray.review import read_reviewed_files
        from noiseal_ray.review.moves import judge_moves

        rows, reviewed, suggested = read_reviewed_files(paths=config.reviewed_files(), label_names=corpus.label_names,
                                                        corpus_ids=corpus.ids.to_pylist())
        trusted[rows] = True
        labels[rows] = reviewed
        if config.refute_confidence is not None:
            facts["move_reviews"] = judge_moves(given=corpus.labels[rows].astype(np.int64), suggested=suggested,
                                                reviewed=reviewed, num_classes=len(corpus.label_names),
                                                confidence=config.refute_confidence)
    facts["reviewed_changed"] = int((labels != corpus.labels).sum())
    return labels, trusted, facts


def _annotation_columns(n: int) -> dict[str, pa.Array]:
    """The columns partition + annotate fill in, as nobody has filled them yet (n rows)."""
    return {"part": pa.array(np.zeros(n, np.int8)), "llm_label": pa.array(np.full(n, -1, np.int64)),
            "llm_logprob": pa.array(np.full(n, np.nan)), "llm_error": pa.array([""] * n, pa.string()),
            "llm_round": pa.array(np.full(n, -1, np.int64)), "llm_cached": pa.array(np.zeros(n, bool))}


def ingest(*, config: RunConfig, table_dir: Path) -> dict:
    """Read and validate ``config.data``, write the base table to ``table_dir``; return its facts.

    Table columns: id, text, label (the label the run trains on: the reviewed one for a trusted
    row), clean_label (-1 unknown), given (the given label), trusted (bool: reviewed) and the
    annotation columns (part 0, llm_label -1, llm_logprob NaN, llm_error "", llm_round -1,
    llm_cached False). Facts: label_names, n_rows, has_clean, class_counts (C,) of the given
    labels, reviewed (trusted rows), reviewed_changed (of which the reviewer changed the label),
    and move_reviews (the moves of an earlier run the reviews judged, ``_trust``).
    """
    corpus = load_corpus(config.data, text_col=config.text_col, label_col=config.label_col,
                         id_col=config.id_col, clean_label_col=config.clean_label_col)
    labels, trusted, trust_facts = _trust(corpus, config=config)
    t = corpus.to_table()
    n = t.num_rows
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels))
    t = t.append_column("given", pa.array(corpus.labels.astype(np.int64)))
    t = t.append_column("trusted", pa.array(trusted))
    for name, column in _annotation_columns(n).items():
        t = t.append_column(name, column)
    tmp = fresh_tmp_dir(final=table_dir)
    step = max(1, -(-n // BASE_FILES))
    for i, s in enumerate(range(0, n, step)):
        pq.write_table(t.slice(s, step), tmp / f"part-{i:05d}.parquet")
    replace_dir(tmp, table_dir)
    classes = np.bincount(corpus.labels, minlength=len(corpus.label_names))
    return {"label_names": corpus.label_names, "n_rows": n, "has_clean": corpus.clean is not None,
            "class_counts": classes.tolist(), "reviewed": int(trusted.sum()), **trust_facts,
            "reviewed_sha256": _files_hash(config.reviewed_files())}


def _files_hash(paths: list[str]) -> str | None:
    """sha256 over local files' bytes, in order (None for no file)."""
    if not paths:
        return None
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):  # hashlib.file_digest is Python 3.11+
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def check_reviewed_unchanged(*, run: RunContext) -> None:
    """OutputError when a resumed run's reviewed file is not the one it began with: its trusted
    rows are in the base table, so a changed file would silently not count."""
    from noiseal_ray.errors import InputError, OutputError

    saved = run.manifest.data.get("reviewed_sha256")
    files = run.config.reviewed_files()
    if not (files and saved):
        return
    try:
        now = _files_hash(files)
    except OSError as exc:
        raise InputError(f"reviewed file {exc.filename}: {exc.strerror or exc}") from None
    if now != saved:
        raise OutputError(f"{run.out} began with another version of the reviewed file(s) {', '.join(files)}; "
                          "use another --out to run with the new reviews")


def ingest_stage(*, run: RunContext) -> None:
    """Ingest unless the manifest has it; write ``config.yaml`` either way (a resumed run may have
    changed options that do not change results)."""
    facts = None
    check_reviewed_unchanged(run=run)
    if not run.manifest.done(INGEST):
        with run.progress.stage("ingest: read and validate the corpus") as st:
            facts = ingest(config=run.config, table_dir=run.base_table)
            st["rows"] = facts["n_rows"]
    save_config(run.config, run.out / "config.yaml")
    if facts is not None:
        run.manifest.mark(INGEST, **facts, metrics={"rounds": [], "stage_seconds": {}})
