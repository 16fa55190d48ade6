"""Validate a labelled corpus piece by piece, with the messages of a whole-file check.

A ``CorpusCheck`` sees a file's rows in two passes over the same pieces, in file order:

    check = CorpusCheck(path=..., text_col=..., label_col=..., ...)
    for t in pieces: check.feed(t)           # pass 1: every check that needs no label set
    names = check.label_names()              # raises the first failure so far; the label set
    for t in pieces: check.encode(t)         # pass 2: label ids, clean labels, duplicate ids
    check.finish()                           # raises the first failure of pass 2

Failures are kept, never raised mid-pass, and the first in the whole-file order wins: a missing
column, then the text column (type, null, blank), the label column (missing, non-integer,
type), the number of classes, unknown labels, the clean-label column, then ids (null,
duplicate). Each names the file, the column and the first rows (1-based data rows, header
excluded), counted over the whole file. Memory: the label set, a few rows per failure, and 8
bytes per id in ``IdHashes`` (on disk when given a folder).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from noiseal_ray.errors import InputError

MAX_SHOWN = 5  # offending rows named in an error message
BUCKETS = 64  # id hash buckets: the duplicate check holds one bucket in memory at a time


@dataclass
class Offenders:
    """The rows failing one check, over the whole file: how many, and the first MAX_SHOWN
    (0-based), plus the value of the first (for messages that quote it)."""

    count: int = 0
    first: list[int] = field(default_factory=list)
    value: object = None

    def add(self, mask: np.ndarray, *, offset: int, values: np.ndarray | None = None) -> None:
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        if not self.count and values is not None:
            self.value = values[idx[0]]
        self.count += len(idx)
        room = MAX_SHOWN - len(self.first)
        if room > 0:
            self.first.extend((idx[:room] + offset).tolist())

    def rows(self) -> str:
        """'rows 3, 17, 20 (and 4 more)' (1-based)."""
        shown = ", ".join(str(i + 1) for i in self.first)
        more = f" (and {self.count - MAX_SHOWN} more)" if self.count > MAX_SHOWN else ""
        return f"row{'s' if self.count > 1 else ''} {shown}{more}"


def make_label_names(values: Sequence[str]) -> list[str]:
    """Stable order: numeric order when every label is an integer, else lexicographic."""
    uniq = set(values)
    # ASCII integers only: "--1" or "\u00b2" pass str.isdigit() but not int().
    if all(re.fullmatch(r"-?[0-9]+", v) for v in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def check_columns(*, table: pa.Table, path: str, roles: Sequence[tuple[str, str | None]],
                  unique: bool = True) -> None:
    """InputError for the first (role, column) of ``roles`` that ``table`` lacks (None: not asked
    for) or, with ``unique``, whose name the header repeats."""
    cols = table.column_names
    for role, name in roles:
        if name is not None and name not in cols:
            raise InputError(f"{path}: {role} column {name!r} not found; columns are {cols}")
        if unique and name is not None and cols.count(name) > 1:
            raise InputError(f"{path}: {role} column {name!r} appears {cols.count(name)} times in the header")


def _mask(arr) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def label_strings(col, *, nulls: np.ndarray, bad: Offenders, offset: int) -> tuple[np.ndarray | None, str | None]:
    """(labels as strings (n,) or None, a type error or None) of a label column piece; rows
    holding non-integer numbers go to ``bad``. ``nulls`` (n,): missing labels ("" in the output)."""
    t = col.type
    if pa.types.is_null(t):
        return np.array([""] * len(col), dtype=object), None
    if pa.types.is_floating(t):
        vals = col.to_numpy(zero_copy_only=False)
        bad.add(~np.isnan(vals) & ~(np.isfinite(vals) & (vals == np.round(vals))), offset=offset)
        return np.array(["" if np.isnan(v) else str(int(v)) for v in vals], dtype=object), None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        col = pc.utf8_trim_whitespace(col)
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.array([str(v) for v in col.to_pylist()], dtype=object), None
    return None, f"has type {t}; labels must be strings or integers"


def missing_labels(col) -> np.ndarray:
    """(n,) bool: null, blank or NaN."""
    n = len(col)
    if pa.types.is_null(col.type):
        return np.ones(n, bool)
    nulls = _mask(col.is_null())
    if pa.types.is_string(col.type):
        nulls = nulls | _mask(pc.equal(pc.utf8_trim_whitespace(col.fill_null("")), ""))
    if pa.types.is_floating(col.type):  # NaN in a float column (Parquet, pandas) is a missing label
        nulls = nulls | np.isnan(col.to_numpy(zero_copy_only=False))
    return nulls


class IdHashes:
    """64-bit hashes of every id, bucketed by their top bits, in memory or in files under
    ``spill_dir``: ``duplicated()`` returns the hashes seen more than once (every duplicate id's,
    and rarely a collision, which the caller resolves by comparing the ids themselves)."""

    def __init__(self, *, spill_dir: str | Path | None = None) -> None:
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self._mem: list[list[np.ndarray]] = [[] for _ in range(BUCKETS)]

    @staticmethod
    def hash(ids: pa.Array) -> np.ndarray:
        from pandas.util import hash_array

        return hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object))

    def add(self, hashes: np.ndarray) -> None:
        bucket = (hashes >> np.uint64(58)).astype(np.int64)
        for b in np.unique(bucket).tolist():
            part = hashes[bucket == b]
            if self.spill_dir is None:
                self._mem[b].append(part)
            else:
                with open(self.spill_dir / f"ids-{b:02d}.u64", "ab") as f:
                    part.tofile(f)

    def duplicated(self) -> np.ndarray:
        found = []
        for b in range(BUCKETS):
            if self.spill_dir is None:
                h = np.concatenate(self._mem[b]) if self._mem[b] else np.zeros(0, np.uint64)
            else:
                p = self.spill_dir / f"ids-{b:02d}.u64"
                h = np.fromfile(p, dtype=np.uint64) if os.path.exists(p) else np.zeros(0, np.uint64)
            h.sort()
            found.append(np.unique(h[1:][h[1:] == h[:-1]]))
        return np.concatenate(found)


# The order in which a whole-file check reports failures (the first one found wins).
TEXT_ALL_NULL, TEXT_TYPE, TEXT_NULL, TEXT_BLANK = 10, 11, 12, 13
LABEL_MISSING, LABEL_NONINT, LABEL_TYPE, CLASSES, LABEL_UNKNOWN = 20, 21, 22, 30, 40
CLEAN_NONINT, CLEAN_TYPE, CLEAN_UNKNOWN, ID_NULL, ID_DUP = 50, 51, 52, 60, 61


@dataclass(frozen=True)
class Encoded:
    """One piece, checked: texts (n,) string, labels (n,) int64 into the label set, clean (n,)
    int64 (-1: unknown or no clean-label column), ids (n,) string."""

    texts: pa.Array
    labels: np.ndarray
    clean: np.ndarray
    ids: pa.Array


class CorpusCheck:
    """The checks of ``io.load_corpus``, fed piece by piece (module docstring). ``label_names``
    fixes the label set (test data); otherwise it is the given labels' distinct values.
    ``lookup``: ids whose row and given label (a string) pass 1 records in ``found``."""

    def __init__(self, *, path: str, text_col: str, label_col: str, id_col: str | None = None,
                 clean_label_col: str | None = None, label_names: Sequence[str] | None = None,
                 min_classes: int = 2, spill_dir: str | Path | None = None,
                 lookup: set[str] | None = None) -> None:
        self.path, self.text_col, self.label_col = path, text_col, label_col
        self.id_col, self.clean_col, self.min_classes = id_col, clean_label_col, min_classes
        self.fixed = None if label_names is None else list(label_names)
        self.n = self._encoded = 0
        self.values: set[str] = set()
        self.names: list[str] | None = None
        self.hashes = IdHashes(spill_dir=spill_dir)
        self._fail: dict[int, Offenders] = {}
        self._said: dict[int, str] = {}  # failures of a whole column (a type), by order
        self._dup_hashes = np.zeros(0, np.uint64)
        self._dup_rows: list[tuple[int, str]] = []
        self.lookup = pa.array(sorted(lookup or ()), pa.string())
        self.found: dict[str, tuple[int, str]] = {}

    def _rows(self, order: int) -> Offenders:
        return self._fail.setdefault(order, Offenders())

    def feed(self, table: pa.Table) -> None:
        """Pass 1 over one piece (the next rows of the file)."""
        n = table.num_rows
        if n == 0:
            return
        if self.n == 0:
            check_columns(table=table, path=self.path, roles=(
                ("text", self.text_col), ("label", self.label_col), ("id", self.id_col),
                ("clean label", self.clean_col)))
        off, self.n = self.n, self.n + n
        self._feed_text(table.column(self.text_col), off)
        col = table.column(self.label_col)
        missing = missing_labels(col)
        self._rows(LABEL_MISSING).add(missing, offset=off)
        given, wrong = label_strings(col, nulls=missing, bad=self._rows(LABEL_NONINT), offset=off)
        if wrong:
            self._said.setdefault(LABEL_TYPE, f"column {self.label_col!r} {wrong}")
        elif not missing.all():
            self.values.update(given[~missing].tolist())
        if self.clean_col is not None:
            col = table.column(self.clean_col)
            _, wrong = label_strings(col, nulls=missing_labels(col), bad=self._rows(CLEAN_NONINT), offset=off)
            if wrong:
                self._said.setdefault(CLEAN_TYPE, f"column {self.clean_col!r} {wrong}")
        ids = None
        if self.id_col is not None:
            col = table.column(self.id_col)
            null = _mask(col.is_null())
            self._rows(ID_NULL).add(null, offset=off)
            if not null.any():
                ids = self._id_strings(col)
                self.hashes.add(IdHashes.hash(ids))
        elif len(self.lookup):
            ids = pa.array([str(i) for i in range(off, off + n)], pa.string())
        if ids is not None and given is not None and len(self.lookup):
            for i in np.flatnonzero(_mask(pc.is_in(ids, value_set=self.lookup))).tolist():
                self.found.setdefault(ids[i].as_py(), (off + i, given[i]))

    def _feed_text(self, text, off: int) -> None:
        if pa.types.is_null(text.type):
            self._rows(TEXT_ALL_NULL).add(np.ones(len(text), bool), offset=off)
        elif not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            self._said.setdefault(TEXT_TYPE, f"text column {self.text_col!r} has type {text.type}, expected strings")
        else:
            self._rows(TEXT_NULL).add(_mask(text.is_null()), offset=off)
            blank = pc.equal(pc.utf8_trim_whitespace(text.cast(pa.string())), "").fill_null(False)
            self._rows(TEXT_BLANK).add(_mask(blank), offset=off)

    @staticmethod
    def _id_strings(ids) -> pa.Array:
        return pa.array([str(v) for v in ids.to_pylist()], pa.string())

    def _raise_first(self, *, below: int) -> None:
        """Raise the first failure (in the whole-file order) of an order below ``below``."""
        failed = sorted([o for o, f in self._fail.items() if f.count and o < below]
                        + [o for o in self._said if o < below])
        if failed:
            raise InputError(f"{self.path}: {self._message(failed[0])}")

    def _message(self, order: int) -> str:
        if order in self._said:
            return self._said[order]
        f = self._fail[order]
        rows, text, label, clean = f.rows(), self.text_col, self.label_col, self.clean_col
        return {
            TEXT_ALL_NULL: f"column {text!r} is empty in every row ({rows})",
            TEXT_NULL: f"column {text!r} is null in {rows}",
            TEXT_BLANK: f"column {text!r} is empty or whitespace-only in {rows}",
            LABEL_MISSING: f"column {label!r} has no label in {rows}",
            LABEL_NONINT: f"column {label!r} holds non-integer numbers ({rows})",
            LABEL_UNKNOWN: f"column {label!r} has label {f.value!r} not in the label set {self.names} ({rows})",
            CLEAN_NONINT: f"column {clean!r} holds non-integer numbers ({rows})",
            CLEAN_UNKNOWN: f"column {clean!r} has label {f.value!r} not in the label set {self.names} ({rows})",
            ID_NULL: f"id column {self.id_col!r} is null in {rows}",
            ID_DUP: f"id column {self.id_col!r} has duplicate ids {f.value} ({rows})",
        }[order]

    def label_names(self) -> list[str]:
        """After pass 1: the label set; InputError for no rows or the first failure so far that
        precedes the label set in the whole-file order."""
        if self.n == 0:
            raise InputError(f"{self.path}: no data rows")
        self._raise_first(below=CLASSES)
        names = self.fixed if self.fixed is not None else make_label_names(list(self.values))
        if len(names) < self.min_classes:
            raise InputError(f"{self.path}: column {self.label_col!r} has {len(names)} distinct label(s) {names}; "
                             f"need at least {self.min_classes} classes")
        self.names = names
        if self.id_col is not None:
            self._dup_hashes = self.hashes.duplicated()
        return names

    def _ids_of(self, col, nulls: np.ndarray, off: int, order: int) -> np.ndarray:
        """Label ids (n,) int64 of a label column piece, -1 where ``nulls``; unknown labels go to ``order``."""
        values, _ = label_strings(col, nulls=nulls, bad=Offenders(), offset=off)
        index = {v: i for i, v in enumerate(self.names)}
        out = np.array([index.get(v, -1) for v in values], dtype=np.int64)
        self._rows(order).add((out < 0) & ~nulls, offset=off, values=values)
        out[nulls] = -1
        return out

    def encode(self, table: pa.Table) -> Encoded:
        """Pass 2 over one piece (the pieces of pass 1, again in order): the piece's columns."""
        assert self.names is not None, "label_names() first"
        n, off = table.num_rows, self._encoded
        self._encoded += n
        texts = table.column(self.text_col).cast(pa.string()).combine_chunks() if n else pa.array([], pa.string())
        col = table.column(self.label_col)
        labels = self._ids_of(col, np.zeros(n, bool), off, LABEL_UNKNOWN)
        clean = np.full(n, -1, np.int64)
        if self.clean_col is not None and CLEAN_TYPE not in self._said:
            col = table.column(self.clean_col)
            clean = self._ids_of(col, missing_labels(col), off, CLEAN_UNKNOWN)
        if self.id_col is None:
            return Encoded(texts=texts, labels=labels, clean=clean,
                           ids=pa.array([str(i) for i in range(off, off + n)], pa.string()))
        ids = table.column(self.id_col)
        if self._fail.get(ID_NULL, Offenders()).count:
            return Encoded(texts=texts, labels=labels, clean=clean, ids=pa.array([""] * n, pa.string()))
        ids = self._id_strings(ids)
        if len(self._dup_hashes):
            hit = np.flatnonzero(np.isin(IdHashes.hash(ids), self._dup_hashes))
            self._dup_rows.extend((off + int(i), ids[int(i)].as_py()) for i in hit)
        return Encoded(texts=texts, labels=labels, clean=clean, ids=ids)

    def finish(self) -> None:
        """After pass 2: InputError for the first failure left (unknown labels, the clean-label
        column, null or duplicate ids)."""
        if self._dup_rows:
            count: dict[str, int] = {}
            for _, i in self._dup_rows:
                count[i] = count.get(i, 0) + 1
            dup_vals = [i for i, c in count.items() if c > 1]  # in order of first appearance
            if dup_vals:
                dup = set(dup_vals)
                rows = np.array([r for r, i in self._dup_rows if i in dup], dtype=np.int64)
                self._fail[ID_DUP] = Offenders(count=len(rows), first=rows[:MAX_SHOWN].tolist(),
                                               value=dup_vals[:MAX_SHOWN])
        self._raise_first(below=ID_DUP + 1)
