"""Autoscaling of the relabeling LLM inside one run, watched through Serve's own status.

One run with the defaults' ``llm_min_replicas: 0`` and the packaged SmolLM2 (the engine a laptop
run deploys), ``llm_max_replicas: 2``, four requests in flight per replica, and a 2 s idle delay:

- Serve reports no engine replica when round 1's relabeling begins (the deploy's replica went
  idle during scoring), one starts for the first query (the cold start, which the client waits
  through), a second one under the burst, and none again while round 1 trains;
- the final partition's relabeling starts from zero again; metrics.json and the report record
  the replicas and the cold start per round; every P row is answered or its failure recorded.

Why 30 demonstrations: a second replica takes 40-80 s to start on 2 cores while the first serves,
and round 1 relabels about 200 of the sample's 800 rows; the long prompts make that burst last
several minutes, so the second replica serves well before it ends (with 10 demonstrations it came
up just as the burst ended). About ten minutes on 2 cores. On a CPU without AVX-512 BF16 the engine
runs in float32 (``cpu_engine_dtype``) and every prompt costs several times more: there the
default 10 demonstrations already make a burst of about five minutes against a second replica's
two-minute start, and 30 made the test take 33 minutes (one run, a 2-core AVX2 EPYC).

Why the test waits after scoring: Serve lets the deploy's replica go only once its averaged load
(a 10 s look-back) has been zero for the 2 s downscale delay, about 15 s after the warm-up
request. Scoring 800 rows can take less than that, and then round 1 began with the replica still
up (CI, once). A slower machine's scoring is stood in for by waiting, after round 1's scoring,
until Serve reports no engine replica serving; nothing else in the run is changed.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest

from noiseal_ray.annotate.replicas import ReplicaSample, ReplicaWatch, replica_counts


@pytest.fixture(scope="module")
def ray_cluster(require) -> Iterator[None]:
    require(importlib.util.find_spec("vllm") is not None, "vLLM is not installed (scripts/setup.sh installs it)")
    import ray

    assert not ray.is_initialized(), "this module starts its own Ray: another module's cluster is still up"
    # 4 logical CPUs on 2 cores: two engine bundles (one CPU each) plus room for training and Ray Data.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def transitions(samples: list[ReplicaSample]) -> list[tuple[float, int, int]]:
    """(seconds, running, starting) where the counts changed (what a failure message should show)."""
    out: list[tuple[float, int, int]] = []
    for s in samples:
        if not out or out[-1][1:] != (s.running, s.starting):
            out.append((round(s.t, 1), s.running, s.starting))
    return out


def scored_then_idle(score_stage, *, timeout_s: float = 120.0):
    """``score_stage``, then a wait until Serve reports no engine replica serving (at most
    ``timeout_s``; a failed look, its controller busy, counts as not yet)."""
    def serving() -> int:
        try:
            return replica_counts(None)[0]
        except Exception:  # noqa: BLE001 - as ReplicaWatch: a busy controller is asked again
            return 1

    def wrapped(**kwargs):
        score_stage(**kwargs)
        deadline = time.monotonic() + timeout_s
        while serving() > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
    return wrapped


def test_one_run_scales_from_zero_to_two_and_back_and_records_it(ray_cluster, tiny_encoder, tmp_path: Path,
                                                                 monkeypatch):
    import noiseal_ray.pipeline as pipeline
    from noiseal_ray.annotate.service import cpu_engine_dtype
    from noiseal_ray.config import make_config
    from noiseal_ray.pipeline import Progress, run_pipeline, sample_data_path

    demos = 10 if cpu_engine_dtype() == "float32" else 30  # see the module's docstring
    overrides = dict(data=sample_data_path(), label_col="noisy_label", clean_label_col="label", id_col="id",
                     strong_model=tiny_encoder, warmup_epochs=1, rounds=1, workers=1, annotator="llm", demos=demos,
                     llm_max_replicas=2, llm_target_ongoing_requests=4, llm_downscale_delay_s=2.0,
                     max_length=32, weak_embed_dim=16, weak_hidden=16, report=True)
    config = make_config(overrides=overrides)
    assert config.llm_min_replicas == 0  # the default under test
    out = tmp_path / "run"
    monkeypatch.setattr(pipeline, "score_stage", scored_then_idle(pipeline.score_stage))
    # Every app (the run names its own); before the deploy Serve answers nothing and no sample is kept.
    with ReplicaWatch(app_name=None, interval_s=0.5) as watch:
        metrics = run_pipeline(config=config, out=str(out), progress=Progress(enabled=False))
    seen = transitions(watch.samples)

    serving = {e["round"]: e["llm_serving"] for e in metrics["rounds"] if "llm_serving" in e}
    queries = {e["round"]: e["annotator"]["queries"] for e in metrics["rounds"] if "llm_serving" in e}
    assert set(serving) == {1, 2}, metrics["rounds"]  # round 1 and the final partition relabel P
    r1, final = serving[1], serving[2]
    # Round 1, as Serve reported it: zero replicas at the first query, a cold start, two under the burst.
    assert r1["replicas_at_start"] == 0 and r1["cold_start_s"] > 0, (r1, seen)
    assert r1["peak_replicas"] == 2, (r1, seen)
    assert r1["queries_per_replica"] == pytest.approx(queries[1] / 2, abs=0.1)
    # Zero again while round 1 trained: the final partition began without a replica.
    assert final["replicas_at_start"] == 0, (final, seen)
    assert (final["peak_replicas"] >= 1) == (queries[2] > 0), (final, queries, seen)
    # The whole run from outside: 0 -> 2 -> 0, then a replica again for the final partition (if it asked).
    two = next(i for i, s in enumerate(seen) if s[1] == 2)
    zero = next(i for i, s in enumerate(seen) if i > two and s[1] == 0)
    assert any(s[1] == 0 for s in seen[:two]) and zero > two
    if queries[2]:
        assert any(s[1] >= 1 for s in seen[zero:]), seen

    # Nothing lost: every row once; every P row with an LLM label or its recorded failure.
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert len(labels) == 800 and labels["id"].is_unique
    p = labels[labels["partition"] == "P"]
    assert len(p) > 0 and (p["llm_label"].notna() | p["llm_error"].notna()).all()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "LLM replicas at start → most" in html and "LLM cold start" in html
