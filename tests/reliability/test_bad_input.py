"""Bad input, hand-picked and fuzzed: ``load_corpus`` either returns a valid corpus or raises
InputError naming the file (and column and rows where there are any); the CLI turns every such
error into exit code 2 with one line on stderr, before any work (no Ray, no config.yaml).

No Ray here: everything runs in a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noiseal_ray.data.io import load_corpus
from noiseal_ray.errors import InputError

# --------------------------------------------------------------------------------------------
# hand-picked inputs -> the exact outcome
# --------------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(p)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# (file name, content, load_corpus kwargs, substrings the InputError must contain besides the path)
REFUSED = [
    ("empty.csv", "", {}, ["file is empty"]),
    ("empty.jsonl", "", {}, ["file is empty"]),
    ("header_only.csv", "text,label\n", {}, ["no data rows"]),
    ("blank_lines.jsonl", "\n\n", {}, []),
    ("no_text_col.csv", "body,label\na,x\nb,y\n", {}, ["text column 'text' not found", "'body'"]),
    ("renamed_label.csv", "text,queue\na,x\nb,y\n", {}, ["label column 'label' not found", "'queue'"]),
    ("missing_id.csv", "text,label\na,x\nb,y\n", {"id_col": "ticket"}, ["id column 'ticket' not found"]),
    ("null_text.jsonl", jsonl([{"text": "a", "label": "x"}, {"text": None, "label": "y"}]), {},
     ["column 'text' is null in row 2"]),
    ("empty_text.csv", "text,label\na,x\n\"\",y\nc,x\n", {}, ["column 'text'", "row 2"]),
    ("ws_text.jsonl", jsonl([{"text": "a", "label": "x"}, {"text": " \t\n ", "label": "y"},
                             {"text": "\u3000", "label": "x"}]), {},
     ["column 'text' is empty or whitespace-only in rows 2, 3"]),
    ("all_null_text.jsonl", jsonl([{"text": None, "label": "x"}, {"text": None, "label": "y"}]), {},
     ["column 'text'", "rows 1, 2"]),
    ("num_text.jsonl", jsonl([{"text": 1, "label": "x"}, {"text": 2, "label": "y"}]), {},
     ["text column 'text' has type int64"]),
    ("null_label.jsonl", jsonl([{"text": "a", "label": "x"}, {"text": "b", "label": None},
                                {"text": "c", "label": "y"}]), {}, ["column 'label' has no label in row 2"]),
    ("ws_label.csv", "text,label\na,x\nb,  \nc,y\n", {}, ["column 'label' has no label in row 2"]),
    ("mixed_labels.jsonl", jsonl([{"text": "a", "label": 1}, {"text": "b", "label": "a"}]), {},
     ["cannot parse as jsonl", "Column(/label) changed from number to string"]),
    ("float_labels.jsonl", jsonl([{"text": "a", "label": 1.5}, {"text": "b", "label": 2.0}]), {},
     ["column 'label' holds non-integer numbers (row 1)"]),
    ("list_labels.jsonl", jsonl([{"text": "a", "label": [1]}, {"text": "b", "label": [2]}]), {},
     ["column 'label' has type list"]),
    ("dup_ids.jsonl", jsonl([{"id": 7, "text": "a", "label": "x"}, {"id": 8, "text": "b", "label": "y"},
                             {"id": 7, "text": "c", "label": "x"}]), {"id_col": "id"},
     ["id column 'id' has duplicate ids ['7'] (rows 1, 3)"]),
    ("null_id.jsonl", jsonl([{"id": 1, "text": "a", "label": "x"}, {"id": None, "text": "b", "label": "y"}]),
     {"id_col": "id"}, ["id column 'id' is null in row 2"]),
    ("one_row.csv", "text,label\nhello,x\n", {}, ["1 distinct label(s) ['x']", "need at least 2 classes"]),
    ("one_class.jsonl", jsonl([{"text": f"t{i}", "label": "x"} for i in range(5)]), {}, ["need at least 2 classes"]),
    ("ragged.csv", "text,label\na,x\nb,y,extra\n", {}, ["cannot parse as csv"]),
    ("not_json.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\nnot json at all\n", {}, ["cannot parse as jsonl"]),
    ("array.jsonl", "[1, 2, 3]\n", {}, []),
    ("notes.txt", "text,label\na,x\n", {}, ["cannot tell the format"]),
]


@pytest.mark.parametrize("name,content,kwargs,expected", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_a_message_naming_file_column_rows(tmp_path, name, content, kwargs, expected):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as err:
        load_corpus(path, **kwargs)
    msg = str(err.value)
    assert msg.startswith(path), msg
    assert "\n" not in msg.strip(), msg
    for part in expected:
        assert part in msg, msg


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_corpus(str(tmp_path / "absent.csv"))
    for name in ("latin.csv", "latin.jsonl"):
        raw = ("text,label\nok,x\ncaf\xe9,y\n" if name.endswith(".csv")
               else jsonl([{"text": "ok", "label": "x"}]) + '{"text": "caf\xe9", "label": "y"}\n')
        p = tmp_path / name
        p.write_bytes(raw.encode("latin-1"))
        with pytest.raises(InputError, match=r"not valid UTF-8 at byte \d+ \(line [23]\)"):
            load_corpus(str(p))


def test_label_seen_once_is_a_class(tmp_path):
    """Documented: a label with a single example is a class like any other."""
    c = load_corpus(write(tmp_path, "c.csv", "text,label\na,x\nb,x\nc,rare\n"))
    assert c.label_names == ["rare", "x"] and c.labels.tolist() == [1, 1, 0]


def test_a_thousand_classes_load_quickly(tmp_path):
    rows = [{"id": f"r{i}", "text": f"text number {i}", "label": f"class_{i % 1000:04d}"} for i in range(3000)]
    path = write(tmp_path, "big.jsonl", jsonl(rows))
    t0 = time.perf_counter()
    c = load_corpus(path, id_col="id")
    assert time.perf_counter() - t0 < 5.0
    assert len(c.label_names) == 1000 and len(c) == 3000
    assert np.bincount(c.labels).tolist() == [3] * 1000


def test_long_texts_are_loaded_whole(tmp_path):
    """Truncation happens at tokenization (max_length), never at load: the corpus keeps the text;
    labels.parquet flags it in ``truncated`` (checked in test_faults_ray.py)."""
    long = "word " * 200_000  # 1 MB of text
    c = load_corpus(write(tmp_path, "long.jsonl", jsonl([{"text": long, "label": "x"}, {"text": "b", "label": "y"}])))
    assert c.texts[0].as_py() == long


def test_integer_labels_keep_their_spelling_in_csv(tmp_path):
    c = load_corpus(write(tmp_path, "c.csv", "text,label\na,01\nb,1\nc,01\n"))
    assert c.label_names == ["01", "1"] or sorted(c.label_names) == ["01", "1"]
    assert len(c.label_names) == 2  # "01" and "1" are different labels, not both the integer 1


def test_parquet_nan_label_is_refused(tmp_path):
    p = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [1.0, float("nan"), 2.0]}), p)
    with pytest.raises(InputError, match=r"column 'label' has no label in row 2"):
        load_corpus(str(p))


def test_odd_label_spellings_never_crash(tmp_path):
    # Strings that look almost numeric must not reach int(): they sort as strings.
    for labels in (["--1", "2"], ["\u00b2", "3"], ["-", "1"], ["٣", "1"]):
        path = write(tmp_path, "odd.jsonl", jsonl([{"text": f"t{i}", "label": v} for i, v in enumerate(labels)]))
        c = load_corpus(path)
        assert sorted(c.label_names) == sorted(labels)


# --------------------------------------------------------------------------------------------
# hypothesis: random CSV / JSONL either loads (valid) or raises InputError, never anything else
# --------------------------------------------------------------------------------------------

CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\t", "x", "y", "1", "01", "-1", "\u00b2", "a,b", '"q"', "\n", "NaN", "null", "\ufeff"]),
)
JSON_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8), st.sampled_from(["x", "y", "z", " ", ""]),
    st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.sampled_from(["a"]), st.integers(), max_size=1),
)
COLUMNS = st.lists(st.sampled_from(["text", "label", "id", "body", "", "label "]), min_size=1, max_size=4)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_loaded(corpus, n_rows: int | None) -> None:
    n = len(corpus)
    assert n >= 1 and len(corpus.texts) == n and len(corpus.labels) == n
    if n_rows is not None:
        assert n == n_rows
    ids = corpus.ids.to_pylist()
    assert len(set(ids)) == n
    assert len(corpus.label_names) >= 2 and len(set(corpus.label_names)) == len(corpus.label_names)
    assert corpus.labels.min() >= 0 and corpus.labels.max() < len(corpus.label_names)
    assert np.bincount(corpus.labels, minlength=len(corpus.label_names)).sum() == n
    assert all(t is not None and t.strip() for t in corpus.texts.to_pylist())


def try_load(path: str, n_rows: int | None, id_col: str | None) -> None:
    try:
        corpus = load_corpus(path, id_col=id_col)
    except InputError as exc:
        assert str(exc).startswith(path)
        return
    check_loaded(corpus, n_rows)


@FUZZ
@given(header=COLUMNS, rows=st.lists(st.lists(CELL, min_size=1, max_size=4), max_size=6), use_id=st.booleans())
def test_fuzz_csv_table(tmp_path_factory, header, rows, use_id):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path = write(tmp_path_factory.mktemp("csv"), "f.csv", buf.getvalue())
    # Row count is only known when every row has the header's width (else: a parse error).
    n_rows = len(rows) if all(len(r) == len(header) for r in rows) else None
    try_load(path, n_rows, "id" if use_id else None)


@FUZZ
@given(raw=st.binary(max_size=80) | st.text(max_size=80).map(str.encode), ext=st.sampled_from(["csv", "jsonl"]))
def test_fuzz_raw_bytes(tmp_path_factory, raw, ext):
    path = write(tmp_path_factory.mktemp("raw"), f"f.{ext}", b"text,label\n" + raw if ext == "csv" else raw)
    try_load(path, None, None)


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "label", "id", "other"]), JSON_VALUE, max_size=4),
                     max_size=6),
       use_id=st.booleans())
def test_fuzz_jsonl_records(tmp_path_factory, rows, use_id):
    path = write(tmp_path_factory.mktemp("jsonl"), "f.jsonl", jsonl(rows))
    try_load(path, len(rows), "id" if use_id else None)


# --------------------------------------------------------------------------------------------
# the CLI: exit code 2, one line, no traceback, nothing started or written
# --------------------------------------------------------------------------------------------

CLI_CASES = [
    ("empty.csv", "", [], "file is empty"),
    ("renamed.csv", "body,label\na,x\nb,y\n", [], "text column 'text' not found"),
    ("ws.csv", "text,label\na,x\n   ,y\n", [], "whitespace-only in row 2"),
    ("mixed.jsonl", jsonl([{"text": "a", "label": 1}, {"text": "b", "label": "a"}]), [], "Column(/label) changed"),
    ("dups.csv", "id,text,label\n1,a,x\n1,b,y\n", ["--id-col", "id"], "duplicate ids"),
    ("one.csv", "text,label\na,x\n", [], "need at least 2 classes"),
    ("latin.csv", "text,label\ncaf\xe9,x\nb,y\n".encode("latin-1"), [], "not valid UTF-8"),
    ("absent.csv", None, [], "file not found"),
]


@pytest.mark.parametrize("name,content,flags,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exit_2_one_line(tmp_path, run_cli, name, content, flags, expected):
    data = str(tmp_path / name) if content is None else write(tmp_path, name, content)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = run_cli("run", "--data", data, "--out", str(out), "--quiet", "--no-report", *flags)
    assert r.code == 2, (r.out, r.err)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error: "), r.err
    assert data in r.err and expected in r.err and "Traceback" not in r.err + r.out
    assert time.perf_counter() - t0 < 20  # refused before Ray starts
    # Nothing that a corrected rerun could be refused by: no config.yaml, no manifest.
    assert not (out / "config.yaml").exists() and not (out / "manifest.json").exists()


def test_cli_dry_run_reports_bad_input_too(tmp_path, run_cli):
    data = write(tmp_path, "one.csv", "text,label\na,x\n")
    r = run_cli("run", "--data", data, "--out", str(tmp_path / "o"), "--dry-run")
    assert r.code == 2 and len(r.err_lines) == 1 and "need at least 2 classes" in r.err


def test_csv_with_a_byte_order_mark_keeps_every_column_a_string(tmp_path):
    """Excel writes UTF-8 with a BOM: the header must still match, so texts and labels such as
    "5" or "01" stay strings (they were read as integers before)."""
    c = load_corpus(write(tmp_path, "bom.csv", "\ufefftext,label\n5,01\n6,1\n".encode("utf-8")))
    assert c.texts.to_pylist() == ["5", "6"] and sorted(c.label_names) == ["01", "1"]
