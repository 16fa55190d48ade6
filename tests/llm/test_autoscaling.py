"""Autoscaling of the relabeling LLM, watched through Serve's own status (``serve.status()``).

The mechanics need no real language model: a randomly initialised two-layer Llama with
SmolLM2's tokenizer starts in the same vLLM CPU engine as SmolLM2, and its answers are still
constrained to the label names. Two tests, one Ray cluster (this module's):

- scaling itself: zero replicas before the first query, two serving under sustained load, zero
  again after the idle delay; every query answered or recorded as failed;
- a run with the defaults' ``llm_min_replicas: 0``: no replica held through training, the first
  annotate batch after it waits through the cold start (nothing lost), and metrics.json records
  the replicas and the cold start per round.

Each engine start costs about a minute on 2 cores; the module starts about five.
"""

from __future__ import annotations

import importlib.util
import itertools
import time
from pathlib import Path
from typing import Iterator

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from noiseal_ray.annotate.base import Query
from noiseal_ray.annotate.replicas import ReplicaSample, ReplicaWatch, replica_counts, summarise_replicas

NAMES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, require) -> str:
    """A seeded, randomly initialised 2-layer Llama (hidden 64) with SmolLM2's tokenizer."""
    require(importlib.util.find_spec("vllm") is not None, "vLLM is not installed (scripts/setup.sh installs it)")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from noiseal_ray.annotate.llm_model import prepare_default_llm

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(prepare_default_llm())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    # 4 logical CPUs on 2 cores: two engine bundles (one CPU each) plus room for Ray Data.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _wait_for(app: str, want, timeout_s: float) -> tuple[int, int]:
    """Poll ``replica_counts(app)`` until ``want(running, starting)``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    counts = replica_counts(app)
    while not want(*counts):
        assert time.monotonic() < deadline, f"replicas of {app} stuck at (running, starting) = {counts}"
        time.sleep(0.5)
        counts = replica_counts(app)
    return counts


def _first(samples: list[ReplicaSample], after: float, pred) -> ReplicaSample | None:
    return next((s for s in samples if s.t >= after and pred(s)), None)


def test_replicas_go_from_zero_to_two_under_load_and_back_to_zero(ray_cluster, tiny_llama):
    from noiseal_ray.annotate import service
    from noiseal_ray.annotate.llm import LLMAnnotator

    idle_s = 5.0
    dep = service.deploy_llm_app(model_source=tiny_llama, use_gpu=False, min_replicas=0, max_replicas=2,
                                 target_ongoing_requests=2, downscale_delay_s=idle_s, upscale_delay_s=1.0,
                                 max_model_len=1024)
    try:
        with ReplicaWatch(app_name=dep.app_name, interval_s=0.5) as watch:
            # The deploy starts one replica (a model that cannot load fails the deploy); idle, it goes.
            _wait_for(dep.app_name, lambda running, starting: running == 0 and starting == 0, timeout_s=120)
            t_first_query = time.monotonic() - watch._t0
            annotator = LLMAnnotator(base_url=dep.base_url, model=dep.model_id, api_key_env=None, concurrency=16,
                                     timeout_s=120, cold_start_timeout_s=600, retries=1, cache_dir=None)
            sent, answers, serial = 0, [], itertools.count()
            deadline = time.monotonic() + 600
            # Sustained load: batches of fresh queries until two replicas have served at once.
            while max(s.running for s in watch.samples) < 2:
                assert time.monotonic() < deadline, f"never two replicas serving: {watch.samples[-5:]}"
                batch = [Query(id=str(i), text=f"question {i}: which city is the capital of country {i}?",
                               given=0, demos=()) for i in itertools.islice(serial, 128)]
                answers += annotator.annotate(queries=batch, label_names=NAMES)
                sent += len(batch)
            t_load_end = time.monotonic() - watch._t0
            _wait_for(dep.app_name, lambda running, starting: running == 0, timeout_s=idle_s + 180)
    finally:
        service.teardown_llm_app(dep)

    # Every query came back answered, or with its failure recorded; none was lost.
    assert len(answers) == sent
    assert all((a.label is not None and 0 <= a.label < len(NAMES)) or a.error for a in answers)
    assert sum(a.label is not None for a in answers) >= 0.95 * sent
    # 0 -> >= 2 -> 0, as Serve reported it.
    s = watch.samples
    assert _first(s, 0.0, lambda x: x.running == 0 and x.t <= t_first_query) is not None
    peak = _first(s, t_first_query, lambda x: x.running >= 2)
    assert peak is not None and peak.t <= t_load_end
    assert _first(s, peak.t, lambda x: x.running == 0) is not None
    # The summary of the load window measures the cold start the first query waited for.
    window = [x for x in s if t_first_query <= x.t <= t_load_end]
    summary = summarise_replicas(samples=window, queries=sent)
    assert summary["replicas_at_start"] == 0 and summary["peak_replicas"] >= 2
    assert summary["cold_start_s"] > 0 and summary["queries_per_replica"] <= sent / 2


def test_a_run_holds_no_replica_through_training_and_records_the_cold_start(ray_cluster, tiny_llama, tiny_encoder,
                                                                           tmp_path: Path):
    from noiseal_ray.config import make_config
    from noiseal_ray.pipeline import Progress, run_pipeline, sample_data_path

    data = tmp_path / "trec150.csv"
    pacsv.write_csv(pacsv.read_csv(sample_data_path()).slice(0, 150), data)
    # The defaults' llm_min_replicas (0), with a short idle delay: training takes longer than it.
    overrides = dict(data=str(data), label_col="noisy_label", clean_label_col="label", id_col="id",
                     strong_model=tiny_encoder, warmup_epochs=1, rounds=1, workers=1, annotator="llm",
                     llm_model=tiny_llama, llm_max_model_len=1024, llm_downscale_delay_s=2.0,
                     max_length=32, weak_embed_dim=16, weak_hidden=16, report=True, demos=2)
    config = make_config(overrides=overrides)
    assert config.llm_min_replicas == 0
    out = tmp_path / "run"
    metrics = run_pipeline(config=config, out=str(out), progress=Progress(enabled=False))

    rounds = {e["round"]: e for e in metrics["rounds"] if "llm_serving" in e}
    assert set(rounds) == {1, 2}  # round 1 and the final partition both relabel P
    # The final partition comes after round 1's training, which held no replica.
    assert rounds[2]["llm_serving"]["replicas_at_start"] == 0
    sent = {r: e["annotator"]["queries"] for r, e in rounds.items()}
    assert sent[1] > 0
    for r, e in rounds.items():
        serving = e["llm_serving"]
        assert (serving["peak_replicas"] >= 1) == (sent[r] > 0), (r, serving, sent[r])
        if sent[r] and serving["replicas_at_start"] == 0:  # the first batch waited for a replica
            assert serving["cold_start_s"] > 0 and serving["replica_seconds"] > 0
    assert any(sent[r] and rounds[r]["llm_serving"]["cold_start_s"] for r in rounds)
    # Nothing lost: every P row has an LLM label or its recorded failure.
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert len(labels) == 150
    p = labels[labels["partition"] == "P"]
    assert len(p) > 0 and (p["llm_label"].notna() | p["llm_error"].notna()).all()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "LLM cold start" in html


class _AllApps:
    """Samples every Serve app's engine replicas (a run names its app itself) every 0.5 s."""

    def __init__(self) -> None:
        import threading

        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from ray import serve

        t0 = time.monotonic()
        while not self._stop.wait(0.5):
            try:
                apps = list(serve.status().applications)
            except Exception:  # Serve not started yet: nothing deployed
                apps = []
            running = starting = 0
            for app in apps:
                r, st = replica_counts(app)
                running, starting = running + r, starting + st
            self.samples.append((time.monotonic() - t0, running, starting))

    def __enter__(self) -> "_AllApps":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_one_run_scales_the_packaged_llm_from_zero_to_two_and_back(ray_cluster, tiny_encoder, tmp_path: Path):
    from noiseal_ray.config import make_config
    from noiseal_ray.pipeline import Progress, run_pipeline, sample_data_path

    overrides = dict(data=sample_data_path(), label_col="noisy_label", clean_label_col="label", id_col="id",
                     strong_model=tiny_encoder, warmup_epochs=1, rounds=1, workers=1, annotator="llm",
                     llm_max_replicas=2, llm_target_ongoing_requests=4, llm_downscale_delay_s=2.0,
                     max_length=32, weak_embed_dim=16, weak_hidden=16, report=True)
    config = make_config(overrides=overrides)
    out = tmp_path / "run"
    with _AllApps() as watch:
        metrics = run_pipeline(config=config, out=str(out), progress=Progress(enabled=False))
    print(watch.samples)
    print([(e["round"], e.get("llm_serving"), e.get("annotator", {}).get("queries")) for e in metrics["rounds"]])
