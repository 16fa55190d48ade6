"""Faults that need no Ray cluster: an unwritable output location, an LLM endpoint unreachable
from the start, an LLM server that dies (or restarts) with requests in flight.

The Ray-level faults (a Train worker SIGKILLed, the LLM server dying during a real run, a
killed write's leftovers) are in test_faults_ray.py; the driver SIGKILLed mid-round is
tests/ray/test_pipeline.py::test_sigkill_mid_round_then_rerun_matches_uninterrupted.
"""

from __future__ import annotations

import time

import pytest
from fakellm import FakeLLM, closed_port_url

from noiseal_ray.annotate.base import Demo, Query
from noiseal_ray.annotate.llm import LLMAnnotator
from noiseal_ray.config import RunConfig
from noiseal_ray.errors import AnnotatorError

LABELS = ["World", "Sports", "Business"]


def queries(n: int) -> list[Query]:
    return [Query(id=str(i), text=f"text {i}", given=0, demos=(Demo("d", 1, 0.5),)) for i in range(n)]


@pytest.fixture
def csv_corpus(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("text,label\n" + "".join(f"sample {i},{'xy'[i % 2]}\n" for i in range(10)))
    return str(p)


# --------------------------------------------------------------------------------------------
# output location not writable
# --------------------------------------------------------------------------------------------


def test_unwritable_out_fails_before_any_work(tmp_path, run_cli, csv_corpus):
    """A path under a regular file cannot be created, even by root (chmod would not stop root)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = blocker / "sub"
    t0 = time.perf_counter()
    r = run_cli("run", "--data", csv_corpus, "--out", str(out), "--quiet", "--no-report")
    assert r.code == 3, (r.out, r.err)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error: output directory ")
    assert str(out) in r.err and "not writable" in r.err and "Traceback" not in r.err
    assert time.perf_counter() - t0 < 20  # before Ray starts
    assert blocker.read_text() == "not a directory"


def test_unwritable_out_at_the_library_level(tmp_path):
    from noiseal_ray.errors import OutputError
    from noiseal_ray.pipeline import Progress, run_pipeline

    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        run_pipeline(config=RunConfig(data="unused.csv"), out=tmp_path / "f" / "out", progress=Progress(enabled=False))


# --------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------


def test_ctrl_c_says_what_was_kept_and_that_the_same_command_resumes(tmp_path, run_cli, csv_corpus, monkeypatch):
    """A KeyboardInterrupt (Ctrl-C) mid-run: exit 130 and one line naming the completed stages kept
    in --out and saying that the same command resumes; the folder is not left locked."""
    import noiseal_ray.pipeline as pipeline
    import noiseal_ray.stages.ingest as ingest_mod

    def ctrl_c(**kw):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    args = ("run", "--data", csv_corpus, "--out", str(out), "--quiet", "--no-report")
    with monkeypatch.context() as m:
        m.setattr(ingest_mod, "ingest", ctrl_c)  # before the first stage completes
        r = run_cli(*args)
    assert r.code == 130, (r.out, r.err)
    assert r.err_lines == [f"interrupted: no stage had completed, so {out} keeps nothing to resume; "
                           "the same command starts again"]
    monkeypatch.setattr(pipeline, "ray_session", ctrl_c)  # once the corpus is ingested
    r = run_cli(*args)
    assert r.code == 130, (r.out, r.err)
    assert r.err_lines == [f"interrupted: {out} keeps 1 completed stage(s), the last ingest; "
                           "the same command resumes from there"]
    assert "Traceback" not in r.err


# --------------------------------------------------------------------------------------------
# LLM endpoint unreachable from the start
# --------------------------------------------------------------------------------------------


def test_cli_unreachable_llm_endpoint_exit_4_fast(tmp_path, run_cli, csv_corpus):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = run_cli("run", "--data", csv_corpus, "--out", str(out), "--annotator", "llm",
                "--llm-endpoint", closed_port_url(), "--quiet", "--no-report")
    assert r.code == 4, (r.out, r.err)
    assert len(r.err_lines) == 1 and "LLM endpoint" in r.err and "unreachable" in r.err
    assert "Traceback" not in r.err
    assert time.perf_counter() - t0 < 20  # checked before Ray, ingest or training
    assert not (out / "labels.parquet").exists() and not (out / "manifest.json").exists()


def test_fallback_skips_the_early_endpoint_check():
    """With annotator_fallback set, the early check does not fail the run: ``llm_backend`` falls
    back to that annotator (tests/unit/test_llm_client.py::test_backend_unreachable_raises_or_falls_back)."""
    from noiseal_ray.stages.annotate import preflight_annotator

    cfg = RunConfig(annotator="llm", llm_endpoint=closed_port_url())
    with pytest.raises(AnnotatorError, match="unreachable"):
        preflight_annotator(config=cfg, needed=True)
    preflight_annotator(config=cfg, needed=False)  # a resumed run past its last annotate stage
    cfg.annotator_fallback = "knn"
    preflight_annotator(config=cfg, needed=True)


# --------------------------------------------------------------------------------------------
# LLM server killed with requests in flight
# --------------------------------------------------------------------------------------------


def test_server_dies_mid_batch_answers_recorded_as_failed():
    srv = FakeLLM(die_after=3)
    try:
        ann = LLMAnnotator(base_url=srv.url, model="fake-model", concurrency=4, retries=2, backoff_s=0.05,
                           timeout_s=5)
        t0 = time.perf_counter()
        answers = ann.annotate(queries=queries(12), label_names=LABELS)
        assert time.perf_counter() - t0 < 30
    finally:
        srv.close()
    assert len(answers) == 12  # one answer per query, nothing raised
    ok = [a for a in answers if a.label is not None]
    failed = [a for a in answers if a.label is None]
    assert len(ok) == srv.answered == 3
    assert len(failed) == 9 and all(a.error.startswith("connection:") for a in failed)
    assert all(a.label == 0 for a in ok)


def test_server_restarts_mid_batch_requests_are_retried():
    """A replica killed and restarted (Serve): the cut requests are retried and answered."""
    srv = FakeLLM(die_after=3, restart=True, cut=3)
    try:
        ann = LLMAnnotator(base_url=srv.url, model="fake-model", concurrency=4, retries=3, backoff_s=0.05,
                           timeout_s=5)
        answers = ann.annotate(queries=queries(12), label_names=LABELS)
    finally:
        srv.close()
    assert srv.dropped == 3 and srv.answered == 12
    assert [a.label for a in answers] == [0] * 12 and all(a.error is None for a in answers)
    assert ann.http_requests == 15
