"""Read and validate corpora (CSV, JSONL, Parquet; local or any pyarrow filesystem URI).

Every error names the file, the column and the first offending rows (the checks are
``noiseal_ray.data.check``; ``noiseal_ray.data.batches`` reads a file piece by piece). The run folder (atomic
writes, lock, leftovers) is ``noiseal_ray.rundir``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from noiseal_ray.data.check import CorpusCheck, check_columns, make_label_names  # noqa: F401 (re-exported)
from noiseal_ray.errors import InputError
from noiseal_ray.rundir import atomic_write_bytes

FORMATS = ("csv", "jsonl", "parquet")


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


def open_checked(path: str, *, fmt: str | None) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, format) of an existing, non-empty file; InputError naming
    ``path`` otherwise."""
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
    return fs, inner, fmt


def read_table(path: str, *, fmt: str | None = None) -> pa.Table:
    """Read a whole table. Raises InputError (naming the file) if it is missing or unreadable.

    CSV columns are all strings (labels like "01" and ids keep their spelling); JSONL and Parquet
    keep their own types.
    """
    fs, inner, fmt = open_checked(path, fmt=fmt)
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
    check = CorpusCheck(path=path, text_col=text_col, label_col=label_col, id_col=id_col,
                        clean_label_col=clean_label_col, label_names=label_names, min_classes=min_classes)
    check.feed(table)
    names = check.label_names()
    piece = check.encode(table)
    check.finish()
    return Corpus(path=path, ids=piece.ids, texts=piece.texts, labels=piece.labels,
                  clean=piece.clean if clean_label_col is not None else None, label_names=names)


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
