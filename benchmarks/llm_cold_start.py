"""Benchmark what scale-to-zero costs: a relabeling request's latency from zero replicas vs warm.

    .venv/bin/python benchmarks/llm_cold_start.py                  # packaged SmolLM2, 2 cold starts
    .venv/bin/python benchmarks/llm_cold_start.py --repeats 3 --llm-model /path/to/model

On the deployment a run starts (``deploy_llm_app`` with ``min_replicas=0``, a short idle delay):
1. warm: ``--warm`` single requests while the deploy's replica serves (median latency);
2. cold, ``--repeats`` times: wait until Serve reports no engine replica, then time one request
   (it waits for a replica to start, the annotator's cold-start path) and read the replica's
   start from ``serve.status()``; then a second request, warm again.

The ratio cold / warm is the figure to compare across machines (both measured in this run). What
the cold start buys: a deployment at ``min_replicas=1`` holds a replica (on a cluster, a GPU)
through every training round; at 0 it holds one for the idle delay after each relabeling burst.
Figures are printed and written (with the command) to ``benchmarks/results/llm_cold_start.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options; ``argv`` defaults to the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llm-model", default=None, help="model folder or hub id (default: the packaged SmolLM2)")
    p.add_argument("--repeats", type=int, default=2, help="cold starts measured")
    p.add_argument("--warm", type=int, default=5, help="warm single requests measured")
    p.add_argument("--idle-s", type=float, default=5.0, help="downscale delay of the deployment")
    p.add_argument("--out", default="benchmarks/results/llm_cold_start.md", help="relative to the repo root")
    return p.parse_args(argv)


def _query(i: int) -> Any:
    from noiseal_ray.annotate.base import Query

    return Query(id=str(i), text=f"What is the capital city of country number {i}?", given=0, demos=())


def _one(annotator: Any, i: int, names: list[str]) -> float:
    """Seconds for one relabeling request (fails loudly: a benchmark of failures measures nothing)."""
    t0 = time.monotonic()
    (answer,) = annotator.annotate(queries=[_query(i)], label_names=names)
    if answer.error:
        raise RuntimeError(f"request {i} failed: {answer.error}")
    return time.monotonic() - t0


def _wait_for_zero(app: str, timeout_s: float) -> float:
    """Seconds until Serve reports no engine replica running or starting."""
    from noiseal_ray.annotate.replicas import replica_counts

    t0 = time.monotonic()
    while replica_counts(app) != (0, 0):
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{app} still has replicas after {timeout_s:.0f} s: {replica_counts(app)}")
        time.sleep(0.5)
    return time.monotonic() - t0


def measure(*, args: argparse.Namespace, source: str) -> dict[str, Any]:
    """Deploy, then the warm and cold latencies (seconds) and the replica start seen by Serve."""
    from noiseal_ray.annotate import service
    from noiseal_ray.annotate.llm import LLMAnnotator
    from noiseal_ray.annotate.replicas import ReplicaWatch, summarise_replicas

    names = ["city", "country", "number", "person"]
    t0 = time.monotonic()
    dep = service.deploy_llm_app(model_source=source, use_gpu=None, min_replicas=0, max_replicas=1,
                                 downscale_delay_s=args.idle_s, max_model_len=2048)
    deploy_s = time.monotonic() - t0
    print(f"deployed {source} in {deploy_s:.0f} s", flush=True)
    try:
        # What a run does after deploying: one request compiles the engine's choice grammar (and,
        # if the deploy's replica already went idle, waits for one). Not counted as warm.
        first_s = service.warm_up(base_url=dep.base_url, model_id=dep.model_id, timeout_s=900)
        print(f"first request after the deploy {first_s:.1f} s", flush=True)
        make = lambda: LLMAnnotator(base_url=dep.base_url, model=dep.model_id, api_key_env=None,  # noqa: E731
                                    timeout_s=120, cold_start_timeout_s=900, retries=0, cache_dir=None)
        serial = iter(range(10**6))
        warm_ann = make()
        warm = [_one(warm_ann, next(serial), names) for _ in range(args.warm)]
        print(f"warm: median {statistics.median(warm):.2f} s over {len(warm)}", flush=True)
        cold, replica_start, to_zero = [], [], []
        for k in range(args.repeats):
            to_zero.append(_wait_for_zero(dep.app_name, timeout_s=args.idle_s + 300))
            with ReplicaWatch(app_name=dep.app_name, interval_s=0.5) as watch:
                cold.append(_one(make(), next(serial), names))  # a new annotator: the cold-start path
            replica_start.append(summarise_replicas(samples=watch.samples, queries=1)["cold_start_s"])
            warm.append(_one(warm_ann, next(serial), names))
            print(f"cold start {k + 1}: request {cold[-1]:.1f} s (replica start seen by Serve "
                  f"{replica_start[-1]} s), zero replicas {to_zero[-1]:.0f} s after the last request", flush=True)
    finally:
        service.teardown_llm_app(dep, quiet=True)
    return {"deploy_s": deploy_s, "first_s": first_s, "warm": warm, "cold": cold, "replica_start": replica_start, "to_zero": to_zero}


def main(argv: Sequence[str] | None = None) -> None:
    """Measure on a local Ray cluster and write the report."""
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the figures
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from noiseal_ray.annotate.llm_model import resolve_llm_model

    source = resolve_llm_model(args.llm_model)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)  # our own, never a stray one
    try:
        m = measure(args=args, source=source)
    finally:
        ray.shutdown()
    write_report(args=args, command=command, source=source, m=m, load_avg=os.getloadavg()[2])


def write_report(*, args: argparse.Namespace, command: str, source: str, m: dict[str, Any], load_avg: float) -> None:
    """Write the Markdown report to ``args.out`` (atomically) and print it."""
    warm, cold = statistics.median(m["warm"]), statistics.median(m["cold"])
    starts = [s for s in m["replica_start"] if s is not None]
    lines = [
        "# LLM cold start: a relabeling request at zero replicas vs warm",
        "",
        "Produced by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"Model: `{Path(source).name}` on Ray Serve + vLLM CPU, `min_replicas=0`, `max_replicas=1`, idle "
        f"delay {args.idle_s:g} s; first deploy (one replica, with the app's ingress) {m['deploy_s']:.0f} s, then "
        f"the run's warm-up request {m['first_s']:.0f} s (grammar compilation; after a short idle delay, a "
        f"cold start too), not counted below. "
        f"15-minute load average at the end: {load_avg:.1f} (2 cores; above 2, other jobs shared the CPUs).",
        "",
        "| request | n | median s | each (s) |",
        "| --- | --- | --- | --- |",
        f"| warm (a replica serving) | {len(m['warm'])} | {warm:.2f} | {', '.join(f'{x:.2f}' for x in m['warm'])} |",
        f"| cold (zero replicas) | {len(m['cold'])} | {cold:.1f} | {', '.join(f'{x:.1f}' for x in m['cold'])} |",
        "",
        f"Cold / warm: **{cold / warm:.0f}x**. Replica start as Serve reported it: "
        f"{', '.join(f'{s:.0f} s' for s in starts) or 'not seen'}; the replica went "
        f"{', '.join(f'{s:.0f} s' for s in m['to_zero'])} after the last request (idle delay {args.idle_s:g} s "
        "plus the autoscaler's look-back).",
        "",
        "A run pays one cold start per relabeling burst that finds no replica (at most one per round)",
        "and in exchange holds no replica while the models train; with the default idle delay of 60 s a",
        "replica outlives each burst by about a minute.",
        "",
    ]
    text = "\n".join(lines)
    from noiseal_ray.rundir import atomic_write_text

    out = REPO / args.out
    atomic_write_text(out, text)  # creates the folder
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run as a script: the repository's noiseal_ray, not an installed one
    main()
