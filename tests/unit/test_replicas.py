"""The per-round record of the autoscaled LLM (``annotate.replicas``) from known samples of
Serve's status, and how the report's rounds table shows it. No Ray: the samples are given."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from noiseal_ray.annotate.replicas import ReplicaSample, summarise_replicas
from noiseal_ray.report.tables import rounds_table


def samples(*rows: tuple[float, int, int]) -> list[ReplicaSample]:
    return [ReplicaSample(t=t, running=r, starting=s) for t, r, s in rows]


def test_a_stage_that_starts_at_zero_measures_the_cold_start_and_the_peak():
    s = samples((0, 0, 0), (1, 0, 0), (2, 0, 1), (6, 0, 1), (10, 1, 1), (15, 2, 0), (20, 2, 0), (25, 0, 0))
    out = summarise_replicas(samples=s, queries=300)
    assert out["replicas_at_start"] == 0 and out["peak_replicas"] == 2
    assert out["cold_start_s"] == pytest.approx(8.0)  # first replica starting (t=2) -> serving (t=10)
    assert out["replica_seconds"] == pytest.approx(1 * 5 + 2 * 5 + 2 * 5)
    assert out["queries_per_replica"] == pytest.approx(150.0)
    assert out["samples"] == len(s)


def test_a_replica_already_serving_costs_no_cold_start():
    out = summarise_replicas(samples=samples((0, 1, 0), (4, 1, 0)), queries=10)
    assert out["replicas_at_start"] == 1 and out["cold_start_s"] == 0.0 and out["peak_replicas"] == 1
    assert out["replica_seconds"] == pytest.approx(4.0) and out["queries_per_replica"] == 10.0


def test_no_replica_ever_serving_reports_no_cold_start_and_no_rate():
    idle = summarise_replicas(samples=samples((0, 0, 0), (3, 0, 0)), queries=0)
    assert idle["peak_replicas"] == 0 and idle["cold_start_s"] is None and idle["queries_per_replica"] is None
    stuck = summarise_replicas(samples=samples((0, 0, 1), (3, 0, 1)), queries=5)
    assert stuck["cold_start_s"] is None and stuck["replica_seconds"] == 0.0
    # A watch that never got an answer from Serve says so instead of inventing zeros.
    assert summarise_replicas(samples=[], queries=3)["peak_replicas"] is None


def test_a_serving_start_seen_before_any_starting_sample_counts_from_the_first_sample():
    out = summarise_replicas(samples=samples((0, 0, 0), (2, 1, 0)), queries=4)
    assert out["cold_start_s"] == pytest.approx(2.0)


def _rounds(serving: dict | None) -> SimpleNamespace:
    rounds = [{"round": 0, "sizes": {}}, {"round": 1, "sizes": {"R": 5, "P": 3, "H": 2}, "annotator": {}}]
    if serving is not None:
        rounds[1]["llm_serving"] = serving
    return SimpleNamespace(rounds=rounds, last=2, has_clean=False)


def test_the_rounds_table_shows_replicas_only_for_runs_that_deployed_their_llm():
    headers, _ = rounds_table(data=_rounds(None))
    assert "LLM cold start" not in headers
    serving = summarise_replicas(samples=samples((0, 0, 1), (42.5, 1, 0), (50, 2, 0)), queries=8)
    headers, rows = rounds_table(data=_rounds(serving))
    cells = dict(zip(headers[4:], rows[1].cells))
    assert cells["LLM replicas at start → most"] == "0 → 2"
    assert cells["LLM cold start"] == "42.5 s"
    assert dict(zip(headers[4:], rows[0].cells))["LLM cold start"] == "–"
