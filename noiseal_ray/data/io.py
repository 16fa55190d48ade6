"""Read and validate corpora (CSV, JSONL, Parquet; local or any pyarrow filesystem URI).

Every error names the file, the column and the first offending rows. The run folder (atomic
writes, lock, leftovers) is ``noiseal_ray.rundir``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from noiseal_ray.errors import InputError
from noiseal_ray.rundir import atomic_write_bytes

FORMATS = ("csv", "jsonl", "parquet")
MAX_SHOWN = 5  # offending rows named in an error message


def detect_format(path: str) -> str:
    """File format from the extension (.csv, .tsv, .jsonl/.json/.ndjson, .parquet/.pq)."""
    name = path.lower().rstrip("/")
    for suffix, fmt in ((".csv", "csv"), (".tsv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                        (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise InputError(f"{path}: cannot tell the format from the extension; use .csv, .jsonl or .parquet")


def _filesystem(path: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI like s3://bucket/key."""
    if "://" in path and not path.startswith("file://"):
        return pafs.FileSystem.from_uri(path)
    local = path[len("file://"):] if path.startswith("file://") else path
    return pafs.LocalFileSystem(), os.path.abspath(local)


def _rows(mask: np.ndarray) -> str:
    """'rows 3, 17, 20 (and 4 more)' using 1-based data row numbers (header excluded)."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1) for i in idx[:MAX_SHOWN])
    more = f" (and {len(idx) - MAX_SHOWN} more)" if len(idx) > MAX_SHOWN else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def read_table(path: str, *, fmt: str | None = None) -> pa.Table:
    """Read a whole table. Raises InputError (naming the file) if it is missing or unreadable.

    CSV columns are all strings (labels like "01" and ids keep their spelling); JSONL and Parquet
    keep their own types.
    """
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"{path}: unknown format {fmt!r}; use one of {FORMATS}")
    fs, inner = _filesystem(path)
    try:
        info = fs.get_file_info(inner)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for bad URIs
        raise InputError(f"{path}: cannot access ({exc})") from None
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{path}: file not found")
    if info.type == pafs.FileType.File and info.size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        if fmt == "parquet":
            return pq.read_table(inner, filesystem=fs)
        with fs.open_input_stream(inner) as f:
            raw = f.read()
        _check_utf8(raw, path=path)
        if fmt == "csv":
            return _parse_csv(raw, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        return pajson.read_json(pa.BufferReader(raw))
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"{path}: cannot parse as {fmt}: {exc}") from None


def _check_utf8(raw: bytes, *, path: str) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not valid UTF-8 at byte {exc.start} (line {line}); re-encode the file as UTF-8"
        ) from None


def _parse_csv(raw: bytes, *, delimiter: str) -> pa.Table:
    """Every column as string: labels like "01" or ids must not be reinterpreted."""
    # The header read by Python's csv module names the columns to type; pyarrow drops a BOM too.
    header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=delimiter), [])
    return pacsv.read_csv(
        pa.BufferReader(raw),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )


def check_columns(*, table: pa.Table, path: str, roles: Iterable[tuple[str, str | None]],
                  unique: bool = True) -> None:
    """InputError for the first (role, column) of ``roles`` that ``table`` lacks (None: not asked
    for) or, with ``unique``, whose name the header repeats."""
    cols = table.column_names
    for role, name in roles:
        if name is not None and name not in cols:
            raise InputError(f"{path}: {role} column {name!r} not found; columns are {cols}")
        if unique and name is not None and cols.count(name) > 1:
            raise InputError(f"{path}: {role} column {name!r} appears {cols.count(name)} times in the header")


@dataclass(frozen=True)
class Corpus:
    """A validated corpus held as Arrow columns.

    ``labels`` and ``clean`` are int64 arrays of shape (n,) indexing ``label_names``; ``clean``
    is None when no clean-label column was given. ``ids`` are strings, unique.
    """

    path: str
    ids: pa.Array
    texts: pa.Array
    labels: np.ndarray
    clean: np.ndarray | None
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def to_table(self) -> pa.Table:
        """Columns id, text, label (int64) and clean_label (int64, -1 when unknown)."""
        clean = self.clean if self.clean is not None else np.full(len(self), -1, np.int64)
        return pa.table({"id": self.ids, "text": self.texts, "label": pa.array(self.labels),
                         "clean_label": pa.array(clean)})


def _label_strings(col: pa.ChunkedArray, *, path: str, name: str) -> np.ndarray:
    """Labels as strings; ints and strings mixed in one column are refused."""
    t = col.type
    if pa.types.is_floating(t):
        vals = col.to_numpy(zero_copy_only=False)
        bad = ~np.isnan(vals) & ~(np.isfinite(vals) & (vals == np.round(vals)))
        if bad.any():
            raise InputError(f"{path}: column {name!r} holds non-integer numbers ({_rows(bad)})")
        # NaN (and null) is "no label": the caller has already marked those rows.
        return np.array(["" if np.isnan(v) else str(int(v)) for v in vals], dtype=object)
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.array([str(v) for v in col.to_pylist()], dtype=object)
    raise InputError(f"{path}: column {name!r} has type {t}; labels must be strings or integers")


def make_label_names(values: Sequence[str]) -> list[str]:
    """Stable order: numeric order when every label is an integer, else lexicographic."""
    uniq = set(values)
    # ASCII integers only: "--1" or "\u00b2" pass str.isdigit() but not int().
    if all(re.fullmatch(r"-?[0-9]+", v) for v in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def _text_column(table: pa.Table, name: str, *, path: str) -> pa.ChunkedArray:
    """The text column as strings; InputError for another type, a null or a blank text."""
    n = table.num_rows
    text = table.column(name)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        if pa.types.is_null(text.type):
            raise InputError(f"{path}: column {name!r} is empty in every row ({_rows(np.ones(n, bool))})")
        raise InputError(f"{path}: text column {name!r} has type {text.type}, expected strings")
    text = text.cast(pa.string())
    null = text.is_null().to_numpy(zero_copy_only=False)
    if null.any():
        raise InputError(f"{path}: column {name!r} is null in {_rows(null)}")
    blank = pc.equal(pc.utf8_trim_whitespace(text), "").to_numpy(zero_copy_only=False)
    if blank.any():
        raise InputError(f"{path}: column {name!r} is empty or whitespace-only in {_rows(blank)}")
    return text


def _label_values(table: pa.Table, name: str, *, path: str, allow_null: bool) -> tuple[np.ndarray, np.ndarray]:
    """(labels as strings (n,), missing mask (n,)) of column ``name``: null, blank or NaN is missing,
    an InputError unless ``allow_null``."""
    n = table.num_rows
    col = table.column(name)
    nulls = col.is_null().to_numpy(zero_copy_only=False) if not pa.types.is_null(col.type) else np.ones(n, bool)
    if pa.types.is_string(col.type):
        nulls = nulls | pc.equal(pc.utf8_trim_whitespace(col.fill_null("")), "").to_numpy(zero_copy_only=False)
    if pa.types.is_floating(col.type):  # NaN in a float column (Parquet, pandas) is a missing label
        nulls = nulls | np.isnan(col.to_numpy(zero_copy_only=False))
    if nulls.any() and not allow_null:
        raise InputError(f"{path}: column {name!r} has no label in {_rows(nulls)}")
    if pa.types.is_null(col.type):
        return np.array([""] * n, dtype=object), nulls
    if pa.types.is_string(col.type):
        col = pc.utf8_trim_whitespace(col)
    return _label_strings(col, path=path, name=name), nulls


def _label_ids(values: np.ndarray, nulls: np.ndarray, *, names: list[str], path: str, name: str) -> np.ndarray:
    """Indices into ``names`` (int64 (n,), -1 where ``nulls``); InputError for an unknown label."""
    index = {v: i for i, v in enumerate(names)}
    out = np.array([index.get(v, -1) for v in values], dtype=np.int64)
    unknown = (out < 0) & ~nulls
    if unknown.any():
        first = values[np.flatnonzero(unknown)[0]]
        raise InputError(f"{path}: column {name!r} has label {first!r} not in the label set {names} "
                         f"({_rows(unknown)})")
    out[nulls] = -1
    return out


def _id_column(table: pa.Table, name: str, *, path: str) -> pa.Array:
    """Column ``name`` as unique strings; InputError for a null or a duplicate id."""
    idc = table.column(name)
    inull = idc.is_null().to_numpy(zero_copy_only=False)
    if inull.any():
        raise InputError(f"{path}: id column {name!r} is null in {_rows(inull)}")
    ids = pa.array([str(v) for v in idc.to_pylist()], pa.string())
    counts = pc.value_counts(ids)
    dup_vals = [v.as_py() for v, c in zip(counts.field("values"), counts.field("counts")) if c.as_py() > 1]
    if dup_vals:
        dup = np.isin(np.array(ids.to_pylist(), dtype=object), dup_vals)
        raise InputError(f"{path}: id column {name!r} has duplicate ids {dup_vals[:MAX_SHOWN]} ({_rows(dup)})")
    return ids


def load_corpus(
    path: str,
    *,
    text_col: str = "text",
    label_col: str = "label",
    id_col: str | None = None,
    clean_label_col: str | None = None,
    label_names: Sequence[str] | None = None,
    fmt: str | None = None,
    min_classes: int = 2,
) -> Corpus:
    """Read and validate a labelled corpus.

    Raises InputError for: a missing column; null, empty or whitespace-only text; a null label;
    duplicate or null ids; fewer than ``min_classes`` classes; a label not in ``label_names``
    (when given, e.g. for test data). Ids default to the 0-based row number, as strings.
    """
    table = read_table(path, fmt=fmt)
    n = table.num_rows
    if n == 0:
        raise InputError(f"{path}: no data rows")
    check_columns(table=table, path=path, roles=(("text", text_col), ("label", label_col), ("id", id_col),
                                           ("clean label", clean_label_col)))
    text = _text_column(table, text_col, path=path)
    given, _ = _label_values(table, label_col, path=path, allow_null=False)
    names = list(label_names) if label_names is not None else make_label_names(list(given))
    if len(names) < min_classes:
        raise InputError(f"{path}: column {label_col!r} has {len(names)} distinct label(s) {names}; "
                         f"need at least {min_classes} classes")
    labels = _label_ids(given, np.zeros(n, bool), names=names, path=path, name=label_col)
    clean = None
    if clean_label_col is not None:
        cvals, cnull = _label_values(table, clean_label_col, path=path, allow_null=True)
        clean = _label_ids(cvals, cnull, names=names, path=path, name=clean_label_col)
    if id_col is not None:
        ids = _id_column(table, id_col, path=path)
    else:
        ids = pa.array([str(i) for i in range(n)], pa.string())
    return Corpus(path=path, ids=ids, texts=text.combine_chunks(), labels=labels, clean=clean, label_names=names)


def write_table(table: pa.Table, path: str | Path, *, fmt: str | None = None) -> None:
    """Write ``table`` atomically as parquet, csv or jsonl (by extension unless ``fmt``)."""
    path = str(path)
    fmt = fmt or detect_format(path)
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
    elif fmt == "csv":
        pacsv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table.to_pylist()).encode("utf-8")
    atomic_write_bytes(path, data)
