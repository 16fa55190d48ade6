"""The real vLLM replica is killed while requests are in flight (issue: reliability).

A real fault, not a mock: the Ray Serve replica actor holding the vLLM engine is killed with
``ray.kill`` (no graceful shutdown) while the annotator has requests outstanding. Expected:
``annotate`` returns one answer per query, each a label from the label set or a recorded
failure, never an exception; Serve replaces the replica (still one engine at a time); a second
pass over the same queries, as a rerun would make, asks only what failed and ends with every
query answered, the first pass's answers unchanged (from the cache).

This module sorts last in tests/llm on purpose: the replacement engine then serves no other test.
By then the file's autoscaling may have added a replica under an earlier test's load (deploy/serve.yaml
allows several, and Serve waits minutes before scaling down), so the test kills one of however
many are live rather than assuming a single one.
"""

from __future__ import annotations

import threading
import time

from noiseal_ray.annotate.base import Demo, Query
from noiseal_ray.annotate.llm import LLMAnnotator

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TOPICS = ["the election results", "the cup final", "quarterly profits", "a new chip", "the border talks",
          "the marathon", "oil prices", "a software update", "the peace summit", "the transfer window"]
DEMOS = (
    Demo("The team won the championship game in overtime.", 1, 0.8),
    Demo("Oil prices rose as markets reacted to supply cuts.", 2, 0.6),
    Demo("A new smartphone with a faster processor was released.", 3, 0.5),
    Demo("Leaders met at the summit to discuss the border dispute.", 0, 0.4),
)


def _queries(n: int) -> list[Query]:
    # Distinct texts: no two share a cache entry.
    return [Query(id=f"k{i}", text=f"Report {i}: news about {TOPICS[i % len(TOPICS)]} (item {i}).",
                  given=0, demos=DEMOS) for i in range(n)]


def _llm_replicas(app_name: str) -> list[str]:
    """Names of the live Serve replica actors of the LLM deployment (not the OpenAI ingress).

    Serve names replicas "SERVE_REPLICA::<app>#<deployment>#<id>" in the "serve" namespace; a
    named actor is listed only while alive (no dashboard or state API needed).
    """
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == "serve"]
    return sorted(n for n in names if n.startswith(f"SERVE_REPLICA::{app_name}#") and "ingress" not in n.lower())


def test_replica_killed_mid_batch_every_query_answered_or_recorded(fresh_cache_options: dict, served_app) -> None:
    import ray

    replicas = _llm_replicas(served_app.app_name)
    (app_config,) = served_app.config["applications"]
    max_replicas = app_config["args"]["max_replicas"]
    assert 1 <= len(replicas) <= max_replicas, replicas
    victim = replicas[0]
    queries = _queries(48)
    # Retries long enough to outlast part of a replica restart, short enough to keep CI quick;
    # whatever does not make it is a recorded failure that the second pass asks again.
    ann = LLMAnnotator(**{**fresh_cache_options, "concurrency": 8, "retries": 4, "backoff_s": 2.0,
                          "timeout_s": 60.0})

    result: dict = {}

    def work() -> None:
        try:
            result["answers"] = ann.annotate(queries=queries, label_names=LABELS)
        except BaseException as exc:  # the assertion below names it
            result["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    # Kill once requests are surely in flight: wait for the first few HTTP attempts.
    deadline = time.monotonic() + 120
    while ann.http_requests < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ann.http_requests >= 12, "the annotator never got going"
    # no_restart: Ray must not revive the actor in place; Serve's controller has to notice the
    # dead replica and start a replacement, as after a crash.
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    killed_at = time.monotonic()
    t.join(timeout=900)
    assert not t.is_alive(), "annotate() hung after the replica was killed"
    assert "error" not in result, f"annotate() raised: {result.get('error')!r}"
    first = result["answers"]
    assert len(first) == len(queries)
    for a in first:
        assert (a.error is None and a.label in range(len(LABELS))) or (a.label is None and a.error), a
    failed = [i for i, a in enumerate(first) if a.error]
    print(f"\nfirst pass: {len(queries) - len(failed)} answered, {len(failed)} recorded as failed; "
          f"{ann.http_requests} HTTP attempts; {time.monotonic() - killed_at:.0f} s after the kill")

    # Serve replaced the replica: the victim is gone, another serves, and no more engines than allowed.
    def replaced(now: list[str]) -> bool:
        return victim not in now and 1 <= len(now) <= max_replicas

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not replaced(_llm_replicas(served_app.app_name)):
        time.sleep(2)
    now = _llm_replicas(served_app.app_name)
    assert replaced(now), (victim, now)
    from ray import serve

    app = victim.split("::", 1)[1].split("#", 1)[0]
    while time.monotonic() < deadline and serve.status().applications[app].status != "RUNNING":
        time.sleep(2)
    assert serve.status().applications[app].status == "RUNNING"
    print(f"replacement replica running {time.monotonic() - killed_at:.0f} s after the kill")

    # The rerun's view: a new annotator over the same cache asks only the failed queries.
    again = LLMAnnotator(**{**fresh_cache_options, "retries": 6, "backoff_s": 2.0, "timeout_s": 120.0})
    second = again.annotate(queries=queries, label_names=LABELS)
    assert all(a.error is None and a.label in range(len(LABELS)) for a in second), [a.error for a in second if a.error]
    assert again.http_requests >= len(failed)
    for i, (a, b) in enumerate(zip(first, second)):
        if a.error is None:
            assert b.cached and b.label == a.label  # nothing answered before the kill is asked twice
        else:
            assert not b.cached
