"""Reviewed labels (``noiseal-ray run --reviewed FILE``): read, checked against the corpus.

A reviewed row is trusted: its label is the one the run trains on and writes, it is always in R
(clean), and it is always in the demonstration pool, first among a query's demonstrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from noiseal_ray.errors import InputError

SHOWN = 5  # offending values named in an error message


def _listing(values: Sequence[str]) -> str:
    head = ", ".join(repr(v) for v in values[:SHOWN])
    return head + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else "")


def read_reviewed(*, path: str | Path, label_names: Sequence[str], corpus_ids: Sequence[str] | Mapping[str, int],
                  with_suggested: bool = False) -> tuple[np.ndarray, ...]:
    """The rows of ``path`` a reviewer answered, as positions into the corpus and label ids.

    ``path``: any file ``noiseal-ray export`` writes (only records with a reviewer's answer count)
    or a plain ``id,label`` table (csv, jsonl, parquet). Returns ``(rows, labels)``, both (m,)
    int64, rows ascending and unique; ``with_suggested``: also the exporting run's suggested label
    id per row (m,) int64, -1 where the file has none (a plain table) or names no known label.
    ``corpus_ids``: the corpus' ids in row order, or a mapping id -> row that may hold only the
    ids the file names (ingest finds those rows while it streams the corpus).
    InputError (exit 2), naming the file and its lines, for an
    id that is not in the corpus, a label outside ``label_names``, or one id given two labels.
    """
    from noiseal_ray.data.reviews import read_review

    p = Path(path)
    df = read_review(p, with_lines=True, reviewed_only=True)
    df["label"] = df["label"].str.strip()  # as the corpus reader trims its labels
    index = {str(n): i for i, n in enumerate(label_names)}
    bad_label = df[~df["label"].isin(list(index))]
    if len(bad_label):
        where = ", ".join(f"line {ln} ({lab!r})" for ln, lab in zip(bad_label["line"][:SHOWN], bad_label["label"][:SHOWN]))
        raise InputError(f"reviewed file {p}: {len(bad_label)} label(s) not in the corpus' label set "
                         f"({', '.join(map(str, label_names))}): {where}")
    position = (dict(corpus_ids) if isinstance(corpus_ids, Mapping)
                else {str(i): k for k, i in enumerate(corpus_ids)})
    unknown = df[~df["id"].isin(list(position))]
    if len(unknown):
        where = ", ".join(f"line {ln} ({i!r})" for ln, i in zip(unknown["line"][:SHOWN], unknown["id"][:SHOWN]))
        raise InputError(f"reviewed file {p}: {len(unknown)} id(s) not in the corpus: {where}"
                         + (" and more" if len(unknown) > SHOWN else ""))
    labels_per_id = df.groupby("id")["label"].nunique()
    clash = labels_per_id[labels_per_id > 1].index.tolist()
    if clash:
        raise InputError(f"reviewed file {p}: id(s) given different labels: {_listing(clash)}")
    df = df.drop_duplicates("id")
    rows = np.array([position[i] for i in df["id"]], dtype=np.int64)
    labels = np.array([index[v] for v in df["label"]], dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    if not with_suggested:
        return rows[order], labels[order]
    sugg = np.array([index.get(str(v).strip(), -1) for v in df.get("suggested", [""] * len(df))], dtype=np.int64)
    return rows[order], labels[order], sugg[order]


def read_reviewed_files(*, paths: Sequence[str | Path], label_names: Sequence[str],
                        corpus_ids: Sequence[str] | Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``read_reviewed`` over several files (e.g. each review round's), merged: ``(rows, labels,
    suggested)`` (m,) int64, rows ascending and unique, ``suggested`` the first file's suggestion
    that names a label (-1: none). InputError when two files give one id different labels,
    or when the files hold no answer at all (a reviewer who edited ``suggested_label`` instead of
    ``review_label`` would otherwise be silently ignored)."""
    seen: dict[int, tuple[int, str]] = {}
    suggested: dict[int, int] = {}
    for path in paths:
        rows, labels, sugg = read_reviewed(path=path, label_names=label_names, corpus_ids=corpus_ids,
                                           with_suggested=True)
        for r, lab, sg in zip(rows.tolist(), labels.tolist(), sugg.tolist()):
            if r in seen and seen[r][0] != lab:
                ident = (next(k for k, v in corpus_ids.items() if v == r) if isinstance(corpus_ids, Mapping)
                         else str(corpus_ids[r]))
                raise InputError(f"reviewed files {seen[r][1]} and {path} give id {ident!r} different "
                                 f"labels ({label_names[seen[r][0]]!r}, {label_names[lab]!r})")
            seen.setdefault(r, (lab, str(path)))
            if sg >= 0:
                suggested.setdefault(r, sg)
    if not seen:
        raise InputError(f"no reviewed row in {', '.join(map(str, paths))}: fill in review_label (or give an "
                         "id,label table)")
    rows = np.array(sorted(seen), dtype=np.int64)
    return (rows, np.array([seen[r][0] for r in rows.tolist()], dtype=np.int64),
            np.array([suggested.get(r, -1) for r in rows.tolist()], dtype=np.int64))
