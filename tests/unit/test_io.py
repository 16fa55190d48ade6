"""Corpus reading and validation: every bad input names file, column and rows."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from noiseal_ray.data.io import load_corpus, write_table
from noiseal_ray.errors import InputError


def write_csv(tmp_path, text, name="c.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_reads_csv_jsonl_parquet_identically(tmp_path):
    rows = [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"}, {"text": "d", "label": "x"}]
    c = write_csv(tmp_path, "text,label\na b,x\nc,y\nd,x\n")
    j = tmp_path / "c.jsonl"
    j.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    out = [load_corpus(str(x)) for x in (c, j, p)]
    for corpus in out:
        assert corpus.label_names == ["x", "y"]
        assert corpus.labels.tolist() == [0, 1, 0]
        assert corpus.ids.to_pylist() == ["0", "1", "2"]
        assert corpus.texts.to_pylist() == ["a b", "c", "d"]


def test_int_labels_sorted_numerically_and_ids_kept(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"id": 100 + i, "t": f"s{i}", "y": y}) + "\n" for i, y in enumerate([10, 2, 2, 10, 1])))
    c = load_corpus(str(p), text_col="t", label_col="y", id_col="id")
    assert c.label_names == ["1", "2", "10"]
    assert c.labels.tolist() == [2, 1, 1, 2, 0]
    assert c.ids.to_pylist() == ["100", "101", "102", "103", "104"]


@pytest.mark.parametrize(
    "content,kwargs,expected",
    [
        ("text,label\na,x\nb,y\n", {"label_col": "lab"}, "label column 'lab' not found"),
        ("text,label\na,x\n,y\nc,x\n", {}, "column 'text' is empty or whitespace-only in row 2"),
        ("text,label\na,x\n   ,y\nc,x\n", {}, "whitespace-only in row 2"),
        ("text,label\na,x\nb,\nc,y\n", {}, "column 'label' has no label in row 2"),
        ("text,label\na,x\nb,x\n", {}, "need at least 2 classes"),
        ("id,text,label\n1,a,x\n2,b,y\n1,c,x\n", {"id_col": "id"}, "duplicate ids ['1'] (rows 1, 3)"),
    ],
)
def test_bad_csv_messages(tmp_path, content, kwargs, expected):
    path = write_csv(tmp_path, content)
    with pytest.raises(InputError) as err:
        load_corpus(path, **kwargs)
    assert path in str(err.value)
    assert expected in str(err.value)


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_corpus(str(tmp_path / "nope.csv"))
    with pytest.raises(InputError, match="file is empty"):
        load_corpus(write_csv(tmp_path, "", "e.csv"))
    bad = tmp_path / "latin.csv"
    bad.write_bytes("text,label\ncaf\xe9,x\nb,y\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not valid UTF-8 .*line 2"):
        load_corpus(str(bad))
    with pytest.raises(InputError, match="cannot tell the format"):
        load_corpus(write_csv(tmp_path, "x", "data.txt"))


def test_unknown_label_against_given_label_set(tmp_path):
    p = write_csv(tmp_path, "text,label\na,x\nb,z\n")
    with pytest.raises(InputError, match="label 'z' not in the label set"):
        load_corpus(p, label_names=["x", "y"], min_classes=1)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    t = pa.table({"a": [1, 2]})
    write_table(t, tmp_path / "o.parquet")
    write_table(t, tmp_path / "o.csv")
    write_table(t, tmp_path / "o.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "o.jsonl", "o.parquet"]
    assert pq.read_table(tmp_path / "o.parquet").equals(t)
    assert np.array_equal(load_ok(tmp_path), [1, 2])


def load_ok(tmp_path):
    return [json.loads(line)["a"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]


def test_sweep_debris_removes_only_what_killed_writes_leave(tmp_path):
    from noiseal_ray.rundir import sweep_debris

    keep = ["labels.parquet/part-0.parquet", "metrics.json", ".hidden-user-file", "notes.tmp",
            "checkpoints/.model.tmp-abc/state.json", "rounds/r1/.old-notes", "x.old-12345678"]
    debris = [".metrics.json.k3j_x9.tmp", ".labels.parquet.tmp/part-0.parquet",
              ".model.tmp-ab12cd/strong.safetensors", ".labels.parquet.old-0a1b2c3d/part-0.parquet",
              ".write-probe-0123abcd", "rounds/r1/.table.tmp/bogus.parquet"]
    for rel in keep + debris:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    gone = sweep_debris(tmp_path, skip=("checkpoints",))
    for rel in keep:
        assert (tmp_path / rel).exists(), rel
    for rel in debris:
        parts = rel.split("/")
        top = next(i for i, part in enumerate(parts) if part.startswith("."))
        assert not (tmp_path.joinpath(*parts[:top + 1])).exists(), rel  # the whole temp dir went
    assert len(gone) == 6
    assert sweep_debris(tmp_path / "missing") == []


def _holder(folder):
    """Another process holding ``folder`` as its run directory, until killed."""
    import subprocess
    import sys

    code = ("import sys, time; from noiseal_ray.rundir import hold_run_dir\n"
            "with hold_run_dir(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_a_held_run_dir_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from noiseal_ray.rundir import hold_run_dir
    from noiseal_ray.errors import OutputError

    proc = _holder(tmp_path)
    try:
        with pytest.raises(OutputError, match=rf"{tmp_path} is in use by another noiseal-ray process \(pid {proc.pid} on "):
            with hold_run_dir(tmp_path):
                pass
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the holder
        proc.wait()
    with hold_run_dir(tmp_path):  # the kernel released the lock with its process
        with pytest.raises(OutputError, match=rf"\(pid {__import__('os').getpid()} on "):
            with hold_run_dir(tmp_path):  # one run per folder, even within one process
                pass


def test_run_refuses_an_out_folder_another_run_is_using_before_any_work(tmp_path):
    from typer.testing import CliRunner

    import cli
    from noiseal_ray.errors import OutputError

    out = tmp_path / "run"
    out.mkdir()
    proc = _holder(out)
    try:
        with pytest.raises(OutputError, match="is in use by another noiseal-ray process"):
            CliRunner().invoke(cli.app, ["run", "--out", str(out), "--rounds", "1"], catch_exceptions=False)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in out.iterdir()) == [".noiseal.lock", ".noiseal.lock.owner"]  # nothing of a run


def test_adopted_warmup_must_be_a_full_bundle_with_the_same_labels(tiny_encoder, tmp_path):
    from noiseal_ray.errors import ConfigError
    from noiseal_ray.models.bundle import new_bundle, save_bundle
    from noiseal_ray.stages.train import adopt_warmup

    src = tmp_path / "r0model"
    save_bundle(new_bundle(strong_model=tiny_encoder, label_names=["a", "b"], max_length=16, weak_embed_dim=8,
                           weak_hidden=8, seed=0), src)
    with pytest.raises(ConfigError, match=r"trained on the labels \['a', 'b'\], not this corpus' \['a', 'c'\]"):
        adopt_warmup(src=src, label_names=["a", "c"], dest=tmp_path / "run" / "model")
    with pytest.raises(ConfigError, match="is not a noiseal-ray model folder"):
        adopt_warmup(src=tmp_path, label_names=["a", "b"], dest=tmp_path / "run" / "model")
    strong_only = tmp_path / "model"
    save_bundle(new_bundle(strong_model=tiny_encoder, label_names=["a", "b"], max_length=16, weak_embed_dim=8,
                           weak_hidden=8, seed=0), strong_only, include_weak=False)
    with pytest.raises(ConfigError, match="holds no weak model"):
        adopt_warmup(src=strong_only, label_names=["a", "b"], dest=tmp_path / "run" / "model")
    assert not (tmp_path / "run" / "model").exists()
    adopt_warmup(src=src, label_names=["a", "b"], dest=tmp_path / "run" / "model")
    assert sorted(p.name for p in (tmp_path / "run" / "model").iterdir()) == sorted(p.name for p in src.iterdir())
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model"]  # no temp copy left


def test_a_rounds_models_go_once_the_next_round_is_fitted_on_a_resumed_run_too(tmp_path, monkeypatch):
    """rounds/r{n}/model (weights and optimizer state, ~300 MB for MiniLM) only starts round n+1's
    fit: once that fit is recorded it goes. The warm-up's (``--warmup-from`` adopts it) and the last
    trained round's (finalize reads it) stay. (The fit itself is stood in for: this is the run folder's
    bookkeeping; tests/ray/test_pipeline.py runs real fits.)"""
    from noiseal_ray.config import RunConfig
    from noiseal_ray.progress import Progress
    from noiseal_ray.rundir import TRAIN, Manifest, round_stage
    from noiseal_ray.stages import train as train_stages
    from noiseal_ray.stages.context import RunContext

    out = tmp_path / "run"
    out.mkdir()
    run = RunContext(config=RunConfig(rounds=3), out=out, manifest=Manifest(out / "manifest.json", {"stages": [], "rounds": {}}),
                     progress=Progress(enabled=False))
    fits = []

    def fit_round(*, run, trainer, round_no, table_dir, init_dir, epochs):
        assert (init_dir / "strong.safetensors").is_file(), f"round {round_no} has no models to start from"
        fits.append(round_no)
        model(round_no)
        run.manifest.mark(round_stage(round_no=round_no, step=TRAIN))

    def model(round_no: int) -> None:
        d = run.round_dir(round_no) / "model"
        d.mkdir(parents=True)
        (d / "strong.safetensors").write_bytes(b"w")

    def kept() -> list[str]:
        return sorted(p.parent.name for p in (out / "rounds").glob("r*/model"))

    monkeypatch.setattr(train_stages, "fit_round", fit_round)
    model(0)
    train_stages.train_stage(run=run, trainer=None, round_no=1)
    assert kept() == ["r0", "r1"]
    train_stages.train_stage(run=run, trainer=None, round_no=2)
    assert kept() == ["r0", "r2"]
    train_stages.train_stage(run=run, trainer=None, round_no=3)
    assert kept() == ["r0", "r3"]
    # Killed between round 3's recorded fit and the cleanup: the rerun fits nothing and still cleans up.
    model(2)
    train_stages.train_stage(run=run, trainer=None, round_no=3)
    assert fits == [1, 2, 3] and kept() == ["r0", "r3"]
