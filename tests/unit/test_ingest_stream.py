"""Ingest reads the corpus piece by piece and says exactly what a whole-file read says.

Every input here is cut into pieces of a few rows (``piece_rows``) or a few hundred bytes
(``piece_bytes``), so a check that forgot the rows of an earlier piece, or counted rows from the
piece's start, gives another message or another table than ``load_corpus`` on the whole file.
No Ray: seconds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noiseal_ray.config import make_config
from noiseal_ray.data.batches import check_utf8_stream, iter_tables
from noiseal_ray.data.check import IdHashes
from noiseal_ray.data.io import _check_utf8, _filesystem, load_corpus
from noiseal_ray.errors import InputError
from noiseal_ray.stages.ingest import ingest
from tests.reliability.test_bad_input import REFUSED, jsonl, write

SMALL = dict(piece_bytes=256, piece_rows=2)


def outcome_of_load(path: str, **kwargs):
    """What load_corpus makes of a file, in the base table's terms (or its error message)."""
    try:
        c = load_corpus(path, **kwargs)
    except InputError as exc:
        return "error", str(exc)
    clean = c.clean if c.clean is not None else np.full(len(c), -1)
    return "ok", (c.label_names, c.ids.to_pylist(), c.texts.to_pylist(), c.labels.tolist(), clean.tolist())


def outcome_of_ingest(path: str, table_dir: Path, piece_bytes: int = SMALL["piece_bytes"], **kwargs):
    config = make_config(overrides=dict(data=path, **kwargs))
    try:
        facts = ingest(config=config, table_dir=table_dir, piece_bytes=piece_bytes, piece_rows=SMALL["piece_rows"])
    except InputError as exc:
        assert not table_dir.exists() and not list(table_dir.parent.glob(".*.tmp")), "bad input left files"
        return "error", str(exc)
    t = pq.read_table(table_dir)
    assert facts["n_rows"] == t.num_rows and t["label"].to_pylist() == t["given"].to_pylist()
    return "ok", (facts["label_names"], t["id"].to_pylist(), t["text"].to_pylist(), t["given"].to_pylist(),
                  t["clean_label"].to_pylist())


@pytest.mark.parametrize("name,content,kwargs", [(n, c, k) for n, c, k, _ in REFUSED if "label_names" not in k],
                         ids=[r[0] for r in REFUSED if "label_names" not in r[2]])
def test_every_refused_input_gets_the_whole_file_message_and_nothing_is_written(tmp_path, name, content, kwargs):
    path = write(tmp_path, name, content)
    expected = outcome_of_load(path, **kwargs)
    assert expected[0] == "error"
    assert outcome_of_ingest(path, tmp_path / "run" / "base", **kwargs) == expected


def test_rows_are_counted_over_the_whole_file_across_pieces(tmp_path):
    rows = [{"id": f"r{i % 37}" if i % 41 else f"u{i}", "text": " " if i % 9 == 4 else f"t{i}", "label": "ab"[i % 2]}
            for i in range(200)]
    path = write(tmp_path, "many.jsonl", jsonl(rows))
    expected = outcome_of_load(path, id_col="id")
    assert expected == ("error", f"{path}: column 'text' is empty or whitespace-only in rows 5, 14, 23, 32, 41 "
                                 "(and 17 more)")
    assert outcome_of_ingest(path, tmp_path / "a" / "base", id_col="id") == expected
    for r in rows:  # texts fixed: now the duplicate ids, whose first and second rows are pieces apart
        r["text"] = r["text"].strip() or "x"
    path = write(tmp_path, "dups.jsonl", jsonl(rows))
    expected = outcome_of_load(path, id_col="id")
    assert expected[0] == "error" and "has duplicate ids ['r1', 'r2', 'r3', 'r4', 'r5'] (rows 2, 3, 4, 5, 6" in expected[1]
    assert outcome_of_ingest(path, tmp_path / "b" / "base", id_col="id") == expected


def test_a_valid_corpus_is_written_in_order_with_every_row_once(tmp_path):
    rows = [{"ticket": f"T{i:04d}", "body": f"text {i}", "queue": ["b", "a", "c"][i % 3],
             "gold": ["a", "b", "c", None][i % 4]} for i in range(123)]
    path = write(tmp_path, "c.jsonl", jsonl(rows))
    kwargs = dict(text_col="body", label_col="queue", id_col="ticket", clean_label_col="gold")
    got = outcome_of_ingest(path, tmp_path / "run" / "base", **kwargs)
    assert got == outcome_of_load(path, **kwargs) and got[0] == "ok"
    names, ids, texts, given_ids, clean = got[1]
    assert ids == [r["ticket"] for r in rows] and len(set(ids)) == 123
    assert [names[g] for g in given_ids] == [r["queue"] for r in rows]
    assert clean[:4] == [0, 1, 2, -1]
    files = sorted((tmp_path / "run" / "base").glob("part-*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in files] == [16] * 7 + [11]  # 8 files of consecutive rows


def test_reviewed_rows_are_found_while_the_corpus_streams_by(tmp_path):
    rows = [{"id": f"r{i}", "text": f"t{i}", "label": "xyz"[i % 3]} for i in range(40)]
    path = write(tmp_path, "c.jsonl", jsonl(rows))
    reviewed = write(tmp_path, "rev.csv", "id,label\nr3,y\nr0,x\nr37,z\n")
    config = make_config(overrides=dict(data=path, id_col="id", reviewed=reviewed))
    facts = ingest(config=config, table_dir=tmp_path / "base", **SMALL)
    t = pq.read_table(tmp_path / "base").to_pandas()
    assert t.loc[t["trusted"], "id"].tolist() == ["r0", "r3", "r37"]
    assert t.loc[t["trusted"], "label"].tolist() == [0, 1, 2] and t.loc[t["id"] == "r37", "given"].item() == 1
    assert facts["reviewed"] == 3 and facts["reviewed_changed"] == 2  # r3 x->y, r37 y->z; r0 stays x
    bad = write(tmp_path, "bad.csv", "id,label\nr3,y\nnope,x\n")
    with pytest.raises(InputError, match=r"1 id\(s\) not in the corpus: line 3 \('nope'\)"):
        ingest(config=make_config(overrides=dict(data=path, id_col="id", reviewed=bad)),
               table_dir=tmp_path / "b2", **SMALL)
    assert not (tmp_path / "b2").exists()


def test_a_hash_collision_is_not_a_duplicate(tmp_path, monkeypatch):
    """Ids that share a hash are compared as strings before any is called a duplicate."""
    monkeypatch.setattr(IdHashes, "hash", staticmethod(lambda ids: np.zeros(len(ids), np.uint64)))
    path = write(tmp_path, "c.csv", "id,text,label\n1,a,x\n2,b,y\n3,c,x\n")
    assert outcome_of_ingest(path, tmp_path / "base", id_col="id")[0] == "ok"
    path = write(tmp_path, "d.csv", "id,text,label\n1,a,x\n2,b,y\n1,c,x\n")
    assert "duplicate ids ['1'] (rows 1, 3)" in outcome_of_ingest(path, tmp_path / "b2", id_col="id")[1]


def test_id_hashes_spilled_to_disk_find_the_same_duplicates(tmp_path):
    ids = pa.array([f"id{i % 5000}" for i in range(6000)])
    mem, disk = IdHashes(), IdHashes(spill_dir=tmp_path)
    for s in range(0, 6000, 700):
        h = IdHashes.hash(ids.slice(s, 700))
        mem.add(h)
        disk.add(h)
    dup = np.sort(disk.duplicated())
    assert len(dup) == 1000 and np.array_equal(dup, np.sort(mem.duplicated()))
    assert len(list(tmp_path.glob("ids-*.u64"))) > 32


@pytest.mark.parametrize("raw", ["text,label\nok,x\ncaf\xe9,y\n".encode("latin-1"),
                                 "text,label\n\u00e9\u00e9\u00e9\u20ac\u20ac,x\n".encode() * 9 + b"\xff,y\n",
                                 "t\u20ac\u20ac\u20ac\n".encode() * 30 + b"\xe2\x82"])
def test_the_utf8_scan_reports_the_byte_and_line_a_whole_file_decode_reports(tmp_path, raw):
    path = str(tmp_path / "f.csv")
    Path(path).write_bytes(raw)
    with pytest.raises(InputError) as whole:
        _check_utf8(raw, path=path)
    fs, inner = _filesystem(path)
    for chunk in (1, 2, 3, 7, 64):  # multi-byte characters split between chunks are not errors
        with pytest.raises(InputError) as streamed:
            check_utf8_stream(fs=fs, inner=inner, path=path, chunk=chunk)
        assert str(streamed.value) == str(whole.value)
    good = str(tmp_path / "g.csv")
    Path(good).write_bytes("text,label\n\u20ac\u00e9,x\n".encode() * 5)
    check_utf8_stream(fs=fs, inner=_filesystem(good)[1], path=good, chunk=3)


def test_pieces_of_a_parquet_folder_come_in_path_order(tmp_path):
    folder = tmp_path / "corpus.parquet"
    folder.mkdir()
    for k in (1, 0):
        pq.write_table(pa.table({"text": [f"t{k}{i}" for i in range(5)], "label": ["x", "y"] * 2 + ["x"]}),
                       folder / f"part-{k}.parquet")
    pieces = list(iter_tables(str(folder), piece_rows=2))
    assert [p.num_rows for p in pieces] == [2, 2, 1, 2, 2, 1]
    assert pa.concat_tables(pieces)["text"].to_pylist() == [f"t0{i}" for i in range(5)] + [f"t1{i}" for i in range(5)]


def parse_errors_alike(outcome):
    """A parse error's detail is pyarrow's and depends on where its blocks fall, in a whole-file
    read too (1 MiB blocks): compare only that it is one (every other message word for word)."""
    kind, what = outcome
    return (kind, what.split(": cannot parse as")[0] + ": cannot parse as") if "cannot parse as" in str(what) else outcome


CELL = st.sampled_from(["", " ", "x", "y", "z", "1", "01", "7", "a b", "\u00e9", '"q"', "x\ny"])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(header=st.lists(st.sampled_from(["text", "label", "id", "gold", "text"]), min_size=2, max_size=4),
       rows=st.lists(st.lists(CELL, min_size=4, max_size=4), max_size=12), use_id=st.booleans(),
       use_gold=st.booleans())
def test_fuzz_csv_ingest_matches_a_whole_file_read(tmp_path_factory, header, rows, use_id, use_gold):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(r[: len(header)] for r in rows)
    d = tmp_path_factory.mktemp("csv")
    path = write(d, "f.csv", buf.getvalue())
    kwargs = dict(id_col="id" if use_id else None, clean_label_col="gold" if use_gold else None)
    assert outcome_of_ingest(path, d / "run" / "base", piece_bytes=48, **kwargs) == outcome_of_load(path, **kwargs)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({}, optional={
    "text": st.sampled_from([None, "", "a", "b c", 3]), "label": st.sampled_from([None, "x", "y", 1, 2, 2.5, " "]),
    "id": st.sampled_from([None, 1, 2, "1", "k"])}), max_size=10), use_id=st.booleans())
def test_fuzz_jsonl_ingest_matches_a_whole_file_read(tmp_path_factory, rows, use_id):
    d = tmp_path_factory.mktemp("jsonl")
    path = write(d, "f.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    kwargs = dict(id_col="id" if use_id else None)
    assert (parse_errors_alike(outcome_of_ingest(path, d / "run" / "base", piece_bytes=64, **kwargs))
            == parse_errors_alike(outcome_of_load(path, **kwargs)))


def test_a_csv_record_longer_than_a_piece_restarts_ingest_with_larger_pieces(tmp_path):
    long = "word " * 2000  # 10 kB in one quoted, multi-line record
    path = write(tmp_path, "long.csv", f'text,label\na,x\n"{long}\n{long}",y\nc,x\n')
    config = make_config(overrides=dict(data=path))
    facts = ingest(config=config, table_dir=tmp_path / "base", piece_bytes=256, piece_rows=2)
    t = pq.read_table(tmp_path / "base")
    assert facts["n_rows"] == 3 and t["text"].to_pylist()[1] == f"{long}\n{long}"
    assert outcome_of_ingest(path, tmp_path / "b2") == outcome_of_load(path)
