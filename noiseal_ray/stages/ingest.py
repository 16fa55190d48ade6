"""Ingest: read and validate the corpus piece by piece, write it as the base round table.

The driver never holds the corpus whole: pass 1 checks every piece (``data.check.CorpusCheck``,
the messages of ``io.load_corpus``, rows counted over the whole file) and learns the label set;
pass 2 reads the pieces again, encodes them and writes them into the base table's files. Memory
grows with the piece size and the label set, plus 8 bytes per id on disk for the duplicate check.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from noiseal_ray.config import RunConfig, save_config
from noiseal_ray.data.batches import PIECE_BYTES, PIECE_ROWS, RecordTooLong, iter_tables
from noiseal_ray.data.check import CorpusCheck, Encoded
from noiseal_ray.errors import InputError
from noiseal_ray.rundir import INGEST, fresh_tmp_dir, replace_dir
from noiseal_ray.stages.context import RunContext

BASE_FILES = 8  # files of the base table, so that Ray Data can read it in parallel


def _reviewed_ids(config: RunConfig) -> set[str]:
    """Every id the reviewed files name (their rows are found while the corpus streams by)."""
    from noiseal_ray.data.reviews import read_review

    return {str(i) for path in config.reviewed_files()
            for i in read_review(path, reviewed_only=True)["id"].tolist()}


def _no_trust() -> dict:
    return {"rows": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64), "move_reviews": [], "reviewed_changed": 0,
            "suggested": False}


def _trust(*, check: CorpusCheck, config: RunConfig) -> dict:
    """The reviewed rows, from pass 1's ``check.found``: ``rows`` (m,) and ``labels`` (m,) int64,
    and facts: how many reviewed labels differ from the given (``reviewed_changed``) and the
    moves the reviews judged, refuted or not (``move_reviews``, ``review.moves.judge_moves``)."""
    out = _no_trust()
    if not config.reviewed_files():
        return out
    from noiseal_ray.review import read_reviewed_files
    from noiseal_ray.review.moves import judge_moves

    names = check.names
    index = {v: i for i, v in enumerate(names)}
    rows, reviewed, suggested = read_reviewed_files(paths=config.reviewed_files(), label_names=names,
                                                    corpus_ids={i: r for i, (r, _) in check.found.items()})
    given_at = {r: index[g] for r, g in check.found.values()}
    given = np.array([given_at[r] for r in rows.tolist()], dtype=np.int64)
    out.update(rows=rows, labels=reviewed, reviewed_changed=int((given != reviewed).sum()),
               suggested=bool((suggested >= 0).any()))
    if config.refute_confidence is not None:
        out["move_reviews"] = judge_moves(given=given, suggested=suggested, reviewed=reviewed,
                                          num_classes=len(names), confidence=config.refute_confidence)
    return out


def _piece_table(piece: Encoded, *, offset: int, trust: dict) -> pa.Table:
    """One piece of the base table (rows ``offset`` .. ``offset + n``; ``ingest`` has the columns)."""
    n = len(piece.labels)
    labels, trusted = piece.labels.copy(), np.zeros(n, bool)
    mine = (trust["rows"] >= offset) & (trust["rows"] < offset + n)
    labels[trust["rows"][mine] - offset] = trust["labels"][mine]
    trusted[trust["rows"][mine] - offset] = True
    return pa.table({
        "id": piece.ids, "text": piece.texts, "label": pa.array(labels), "clean_label": pa.array(piece.clean),
        "given": pa.array(piece.labels), "trusted": pa.array(trusted),
        # The columns partition + annotate fill in, as nobody has filled them yet.
        "part": pa.array(np.zeros(n, np.int8)), "llm_label": pa.array(np.full(n, -1, np.int64)),
        "llm_logprob": pa.array(np.full(n, np.nan)), "llm_error": pa.array([""] * n, pa.string()),
        "llm_round": pa.array(np.full(n, -1, np.int64)), "llm_cached": pa.array(np.zeros(n, bool))})


def _append_piece(piece: pa.Table, *, offset: int, step: int, writers: dict[int, pq.ParquetWriter],
                  tmp: Path) -> None:
    """Append ``piece`` (rows ``offset`` ..) to the files of ``step`` rows each under ``tmp``, cut
    where one file ends and the next begins; a file's writer opens with its first rows."""
    s = 0
    while s < piece.num_rows:
        k = (offset + s) // step
        end = min(piece.num_rows, (k + 1) * step - offset)
        if k not in writers:
            writers[k] = pq.ParquetWriter(tmp / f"part-{k:05d}.parquet", piece.schema)
        writers[k].write_table(piece.slice(s, end - s))
        s = end


def _write_pieces(*, check: CorpusCheck, pieces, tmp: Path | None, trust: dict) -> np.ndarray:
    """Pass 2: encode every piece into ``BASE_FILES`` parquet files of consecutive rows under
    ``tmp`` (None: encode and check only); return the given labels' class counts (C,)."""
    n, counts = check.n, np.zeros(len(check.names), np.int64)
    step = max(1, -(-n // BASE_FILES))
    writers: dict[int, pq.ParquetWriter] = {}
    offset = 0
    try:
        for t in pieces:
            encoded = check.encode(t)
            counts += np.bincount(encoded.labels, minlength=len(counts))
            if tmp is not None:
                _append_piece(_piece_table(encoded, offset=offset, trust=trust), offset=offset, step=step,
                              writers=writers, tmp=tmp)
            offset += len(encoded.labels)
    finally:
        for w in writers.values():
            w.close()
    return counts


def ingest(*, config: RunConfig, table_dir: Path | None, piece_bytes: int = PIECE_BYTES, piece_rows: int = PIECE_ROWS) -> dict:
    """Read and validate ``config.data`` piece by piece, write the base table to ``table_dir``;
    return its facts (``table_dir`` None: check and count only, as ``run --dry-run`` does).
    InputError (nothing written) for bad input, with ``io.load_corpus``'s
    message, and for a bad reviewed file (after the corpus' own errors, as before). A CSV record
    longer than ``piece_bytes`` restarts ingest with pieces 16 times larger (up to 1 GiB).

    Table columns: id, text, label (the label the run trains on: the reviewed one for a trusted
    row), clean_label (-1 unknown), given (the given label), trusted (bool: reviewed) and the
    annotation columns (part 0, llm_label -1, llm_logprob NaN, llm_error "", llm_round -1,
    llm_cached False); rows in file order over ``BASE_FILES`` files. Facts: label_names,
    n_rows, has_clean, class_counts (C,) of the given labels, reviewed (trusted rows),
    reviewed_changed (of which the reviewer changed the label), reviewed_suggested (whether the
    reviewed files carry an earlier run's suggestions) and move_reviews (the moves of an earlier
    run the reviews judged).
    """
    while True:
        try:
            return _ingest(config=config, table_dir=table_dir, piece_bytes=piece_bytes, piece_rows=piece_rows)
        except RecordTooLong:
            if piece_bytes >= 1 << 30:
                raise
            piece_bytes *= 16


def _ingest(*, config: RunConfig, table_dir: Path | None, piece_bytes: int, piece_rows: int) -> dict:
    """``ingest`` with one piece size (``table_dir`` None: check only, write nothing)."""
    def pieces():
        return iter_tables(config.data, piece_bytes=piece_bytes, piece_rows=piece_rows)

    with tempfile.TemporaryDirectory(prefix="noiseal-ingest-") as spill:
        try:
            lookup = _reviewed_ids(config) if config.reviewed_files() else set()
        except InputError:  # a bad reviewed file: _trust raises it again, once the corpus has passed
            lookup = set()
        check = CorpusCheck(path=config.data, text_col=config.text_col, label_col=config.label_col,
                            id_col=config.id_col, clean_label_col=config.clean_label_col, spill_dir=spill,
                            lookup=lookup)
        for t in pieces():
            check.feed(t)
        check.label_names()
        trust_error = None
        try:
            trust = _trust(check=check, config=config)
        except InputError as exc:  # raised once the corpus itself has passed every check
            trust, trust_error = _no_trust(), exc
        tmp = None if table_dir is None else fresh_tmp_dir(final=table_dir)
        try:
            counts = _write_pieces(check=check, pieces=pieces(), tmp=tmp, trust=trust)
            check.finish()
            if trust_error is not None:
                raise trust_error
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    if tmp is not None:
        replace_dir(tmp, table_dir)
    return {"label_names": check.names, "n_rows": check.n, "has_clean": config.clean_label_col is not None,
            "class_counts": counts.tolist(), "reviewed": len(trust["rows"]), "move_reviews": trust["move_reviews"],
            "reviewed_changed": trust["reviewed_changed"], "reviewed_suggested": trust["suggested"],
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
