"""Read, validate and write corpora: CSV, JSONL, Parquet, local or any pyarrow filesystem URI.

Every error names the file, the column and the first offending rows. Writes are atomic: a
temporary path in the same directory, then a rename.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from noiseal_ray.errors import ConfigError, InputError, OutputError

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
    from pyarrow import fs as pafs

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
    """Read a whole table. Raises InputError (naming the file) if it is missing or unreadable."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"{path}: unknown format {fmt!r}; use one of {FORMATS}")
    fs, inner = _filesystem(path)
    try:
        info = fs.get_file_info(inner)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for bad URIs
        raise InputError(f"{path}: cannot access ({exc})") from None
    from pyarrow import fs as pafs

    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{path}: file not found")
    if info.type == pafs.FileType.File and info.size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        if fmt == "parquet":
            return pq.read_table(inner, filesystem=fs)
        with fs.open_input_stream(inner) as f:
            raw = f.read()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise InputError(
                f"{path}: not valid UTF-8 at byte {exc.start} (line {line}); re-encode the file as UTF-8"
            ) from None
        buf = pa.BufferReader(raw)
        if fmt == "csv":
            delim = "\t" if path.lower().endswith(".tsv") else ","
            # Every column as string: labels like "01" or ids must not be reinterpreted.
            import csv
            import io

            header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=delim), [])  # pyarrow drops a BOM too
            # Every column as string: labels like "01" or ids must not be reinterpreted.
            names = header
            return pacsv.read_csv(
                buf,
                parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
        return pajson.read_json(buf)
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"{path}: cannot parse as {fmt}: {exc}") from None


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
    cols = table.column_names
    for role, name in (("text", text_col), ("label", label_col), ("id", id_col), ("clean label", clean_label_col)):
        if name is not None and name not in cols:
            raise InputError(f"{path}: {role} column {name!r} not found; columns are {cols}")
        if name is not None and cols.count(name) > 1:
            raise InputError(f"{path}: {role} column {name!r} appears {cols.count(name)} times in the header")

    text = table.column(text_col)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        if pa.types.is_null(text.type):
            raise InputError(f"{path}: column {text_col!r} is empty in every row ({_rows(np.ones(n, bool))})")
        raise InputError(f"{path}: text column {text_col!r} has type {text.type}, expected strings")
    text = text.cast(pa.string())
    null = text.is_null().to_numpy(zero_copy_only=False)
    if null.any():
        raise InputError(f"{path}: column {text_col!r} is null in {_rows(null)}")
    blank = pc.equal(pc.utf8_trim_whitespace(text), "").to_numpy(zero_copy_only=False)
    if blank.any():
        raise InputError(f"{path}: column {text_col!r} is empty or whitespace-only in {_rows(blank)}")

    def labels_of(name: str, *, allow_null: bool) -> tuple[np.ndarray, np.ndarray]:
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

    given, _ = labels_of(label_col, allow_null=False)
    names = list(label_names) if label_names is not None else make_label_names(list(given))
    if len(names) < min_classes:
        raise InputError(f"{path}: column {label_col!r} has {len(names)} distinct label(s) {names}; "
                         f"need at least {min_classes} classes")
    index = {v: i for i, v in enumerate(names)}

    def to_ids(values: np.ndarray, nulls: np.ndarray, name: str) -> np.ndarray:
        out = np.array([index.get(v, -1) for v in values], dtype=np.int64)
        unknown = (out < 0) & ~nulls
        if unknown.any():
            first = values[np.flatnonzero(unknown)[0]]
            raise InputError(f"{path}: column {name!r} has label {first!r} not in the label set {names} "
                             f"({_rows(unknown)})")
        out[nulls] = -1
        return out

    labels = to_ids(given, np.zeros(n, bool), label_col)
    clean = None
    if clean_label_col is not None:
        cvals, cnull = labels_of(clean_label_col, allow_null=True)
        clean = to_ids(cvals, cnull, clean_label_col)

    if id_col is not None:
        idc = table.column(id_col)
        inull = idc.is_null().to_numpy(zero_copy_only=False)
        if inull.any():
            raise InputError(f"{path}: id column {id_col!r} is null in {_rows(inull)}")
        ids = pa.array([str(v) for v in idc.to_pylist()], pa.string())
        counts = pc.value_counts(ids)
        dup_vals = [v.as_py() for v, c in zip(counts.field("values"), counts.field("counts")) if c.as_py() > 1]
        if dup_vals:
            dup = np.isin(np.array(ids.to_pylist(), dtype=object), dup_vals)
            raise InputError(f"{path}: id column {id_col!r} has duplicate ids {dup_vals[:MAX_SHOWN]} ({_rows(dup)})")
    else:
        ids = pa.array([str(i) for i in range(n)], pa.string())
    return Corpus(path=path, ids=ids, texts=text.combine_chunks(), labels=labels, clean=clean, label_names=names)


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------

def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


# pathlib folds "s3://bucket/key" into "s3:/bucket/key": a --out handed in as a Path would otherwise
# pass as a relative local folder "s3:".
_FOLDED_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:/(?!/)")


def check_run_dir_path(out: str | Path) -> None:
    """Raise ConfigError unless ``out`` can be a run directory: a local or mounted POSIX path.

    Ray Data tasks on every node write the round tables into it and the driver writes the manifest
    and metrics with plain file I/O, so an object-store URI cannot work; it has to be one path that
    every node sees (NFS, EFS, Filestore, a ReadWriteMany volume). The deployment files' tests apply
    this same rule to every documented ``noiseal-ray run --out``.
    """
    text = str(out)
    folded = _FOLDED_URI.match(text) and not text.startswith("file:")
    if is_uri(text) or folded:
        raise ConfigError(f"--out {out}: the run directory must be a local or mounted path (e.g. NFS); "
                          "give object-store URIs to --storage-path (Ray Train checkpoints) instead")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_table(table: pa.Table, path: str | Path, *, fmt: str | None = None) -> None:
    """Write ``table`` atomically as parquet, csv or jsonl (by extension unless ``fmt``)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

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
        import json

        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table.to_pylist()).encode("utf-8")
    atomic_write_bytes(path, data)


def parquet_rows(folder: str | Path) -> int:
    """Rows in the parquet files of ``folder``, from their footers (no data read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(folder).glob("*.parquet"))


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Move a fully written directory ``tmp`` into place at ``final`` (replacing any old one)."""
    final = Path(final)
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


# What our own writers leave behind when killed mid-write: atomic_write_bytes' ".<name>.<rand>.tmp",
# the stage writers' ".<name>.tmp", save_bundle's ".<name>.tmp-<rand>", replace_dir's
# ".<name>.old-<hex8>" and check_writable's probe. Only dot-names of exactly these shapes match.
_DEBRIS = re.compile(r"^\.(?:.+\.tmp|.+\.tmp-[A-Za-z0-9_]+|.+\.old-[0-9a-f]{8}|write-probe-[0-9a-f]{8})$")


def sweep_debris(root: str | Path, *, skip: Sequence[str] = ()) -> list[Path]:
    """Delete the leftovers of killed writes under ``root`` (see ``_DEBRIS``); return what went.

    Never descends into the top-level folders named in ``skip`` (e.g. Ray Train's storage).
    Call it only while no other writer works in ``root``.
    """
    root = Path(root)
    gone: list[Path] = []
    if not root.is_dir():
        return gone
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in list(dirnames):
            if _DEBRIS.match(name):
                shutil.rmtree(here / name, ignore_errors=True)
                dirnames.remove(name)
                gone.append(here / name)
        for name in filenames:
            if _DEBRIS.match(name):
                (here / name).unlink(missing_ok=True)
                gone.append(here / name)
    return gone


RUN_LOCK = ".noiseal.lock"  # held (OS file lock) by the process running in a folder
RUN_LOCK_OWNER = ".noiseal.lock.owner"  # who holds it, for the message a second process gets


@contextmanager
def hold_run_dir(path: str | Path) -> Iterator[None]:
    """Hold ``path`` (an existing directory) for this process while the block runs.

    Raises OutputError at once, naming the holder's pid, host and start time, when another process
    holds it: two runs in one folder would sweep each other's temp files (``sweep_debris``) and
    interleave their manifest writes. The lock is the kernel's (``filelock``: flock), so it goes
    with its process, even one killed by SIGKILL: a killed run never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    p = Path(path)
    lock = FileLock(str(p / RUN_LOCK), timeout=0, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = (p / RUN_LOCK_OWNER).read_text().strip()
        except OSError:
            holder = "unknown"
        raise OutputError(f"{p} is in use by another noiseal-ray process ({holder}); wait for it to finish, "
                          "or use another output folder") from None
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        atomic_write_text(p / RUN_LOCK_OWNER, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        yield
    finally:
        lock.release()


def check_writable(path: str | Path) -> None:
    """Raise OutputError unless a file can be created in directory ``path`` (created if absent)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output directory {p} is not writable: {exc.strerror or exc}") from None
