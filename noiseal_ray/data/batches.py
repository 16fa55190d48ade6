"""Read a table file piece by piece (CSV, JSONL, Parquet; local or any pyarrow filesystem URI).

``iter_tables`` yields consecutive pieces of a file in order, typed as ``io.read_table`` types the
whole file (CSV columns all strings; JSONL and Parquet their own types), and raises the same
InputError messages for a missing, empty, non-UTF-8 or unparsable file. Memory is bounded by the
piece size, not by the file: ingest reads a corpus of any length this way.
"""

from __future__ import annotations

import csv
import io
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from noiseal_ray.data.io import open_checked
from noiseal_ray.errors import InputError

# Text read per piece. Larger pieces cost memory, not time: at 4 MiB a 5M-row CSV's ingest grew the
# driver by 268 MiB, at 1 MiB by 26 MiB, in the same 12-13 s (pyarrow's reader reads ahead several
# blocks, and Python holds a piece's labels and ids as objects).
PIECE_BYTES = 1 << 20
PIECE_ROWS = 16_384  # Parquet rows per piece


class RecordTooLong(InputError):
    """A CSV record longer than the piece size (the caller may retry with larger pieces)."""


def check_utf8_stream(*, fs: pafs.FileSystem, inner: str, path: str, chunk: int = PIECE_BYTES) -> None:
    """InputError at the first byte that is not UTF-8, with its offset and line in the whole file
    (the message of ``io._check_utf8``), reading ``chunk`` bytes at a time."""
    consumed = lines = 0
    carry = b""
    with fs.open_input_stream(inner) as f:
        while True:
            block = f.read(chunk)
            buf = carry + block
            if not buf:
                return
            try:
                buf.decode("utf-8")
                good, carry = len(buf), b""
            except UnicodeDecodeError as exc:
                cut_short = block and exc.end == len(buf) and exc.reason == "unexpected end of data"
                if not cut_short:  # a real error, not a character split between two chunks
                    line = lines + buf[: exc.start].count(b"\n") + 1
                    raise InputError(f"{path}: not valid UTF-8 at byte {consumed + exc.start} (line {line}); "
                                     "re-encode the file as UTF-8") from None
                good, carry = exc.start, buf[exc.start:]
            lines += buf[:good].count(b"\n")
            consumed += good
            if not block:
                return


def _csv_header(*, fs: pafs.FileSystem, inner: str, delimiter: str) -> list[str]:
    """The header record, as Python's csv module reads it (a BOM dropped)."""
    with fs.open_input_stream(inner) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
        return next(csv.reader(text, delimiter=delimiter), [])


def _readers(*, fs: pafs.FileSystem, inner: str, path: str, fmt: str, piece_bytes: int, piece_rows: int):
    """(stream to close or None, iterator of RecordBatches) for one format."""
    if fmt == "parquet":
        return None, _parquet_pieces(fs=fs, inner=inner, piece_rows=piece_rows)
    if fmt == "csv":
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        header = _csv_header(fs=fs, inner=inner, delimiter=delimiter)
        f = fs.open_input_stream(inner)
        reader = pacsv.open_csv(
            f, read_options=pacsv.ReadOptions(block_size=piece_bytes),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        return f, reader
    return None, _jsonl_pieces(fs=fs, inner=inner, piece_bytes=piece_bytes)


def _parquet_pieces(*, fs: pafs.FileSystem, inner: str, piece_rows: int) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows, or a folder's files' rows in path order (as ``pq.read_table`` reads a
    folder: names starting with "." or "_" skipped), one row group in memory at a time (without
    pre-buffering: the driver grew by 104 MiB reading a 5M-row file with it, 74 MiB at 1M rows;
    through ``pyarrow.dataset``, 238 and 69)."""
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        files = sorted(f.path for f in found if f.type == pafs.FileType.File
                       and not f.base_name.startswith((".", "_")))
    else:
        files = [inner]
    for name in files:
        with fs.open_input_file(name) as f:
            yield from pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20).iter_batches(batch_size=piece_rows)


def _line_chunks(*, fs: pafs.FileSystem, inner: str, piece_bytes: int) -> Iterator[bytes]:
    """The file in chunks of whole lines, about ``piece_bytes`` each (a longer line is one chunk)."""
    carry = b""
    with fs.open_input_stream(inner) as f:
        while True:
            block = f.read(piece_bytes)
            if not block:
                if carry:
                    yield carry
                return
            buf = carry + block
            cut = buf.rfind(b"\n") + 1
            if cut:
                yield buf[:cut]
            carry = buf[cut:]


def _jsonl_pieces(*, fs: pafs.FileSystem, inner: str, piece_bytes: int) -> Iterator[pa.RecordBatch]:
    """JSONL pieces typed as one ``read_json`` of the whole file types them: every chunk's own
    types are read first and unified (a field only some chunks have, null promoted, int to
    double), then each chunk is read with that schema."""
    schemas = [pajson.read_json(pa.BufferReader(c)).schema
               for c in _line_chunks(fs=fs, inner=inner, piece_bytes=piece_bytes)]
    if not schemas:
        return
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    options = pajson.ParseOptions(explicit_schema=schema)
    for c in _line_chunks(fs=fs, inner=inner, piece_bytes=piece_bytes):
        yield from pajson.read_json(pa.BufferReader(c), parse_options=options).to_batches()


def iter_tables(path: str, *, fmt: str | None = None, piece_bytes: int = PIECE_BYTES,
                piece_rows: int = PIECE_ROWS) -> Iterator[pa.Table]:
    """The file's rows as consecutive tables, in file order (possibly none for a file without rows).

    Raises InputError naming ``path``: missing or empty file, bytes that are not UTF-8 (CSV,
    JSONL: the file is scanned for that first, as ``read_table`` does), a parse error. Pieces of
    one file share one schema (CSV: the header's; JSONL: every record's, unified as ``read_json``
    unifies a whole file's; Parquet: the file's).
    """
    fs, inner, fmt = open_checked(path, fmt=fmt)
    if fmt != "parquet":
        check_utf8_stream(fs=fs, inner=inner, path=path, chunk=piece_bytes)
    stream = None
    try:
        stream, batches = _readers(fs=fs, inner=inner, path=path, fmt=fmt, piece_bytes=piece_bytes,
                                   piece_rows=piece_rows)
        for batch in batches:
            yield pa.Table.from_batches([batch])
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        if "straddl" in str(exc):  # pyarrow's words for a record longer than a block
            raise RecordTooLong(f"{path}: a record is longer than {piece_bytes:,} bytes, the most ingest reads "
                                "at a time; split it, or check the file's quoting") from None
        raise InputError(f"{path}: cannot parse as {fmt}: {exc}") from None
    finally:
        if stream is not None:
            stream.close()
