"""What the autoscaled LLM deployment did during one annotate stage, from Serve's own status.

Driver side, around a stage that sends relabeling requests::

    with ReplicaWatch(app_name=spec.serve_app) as watch:   # polls serve.status() in a thread
        ...                                                 # the annotate stage
    summary = summarise_replicas(samples=watch.samples, queries=n_sent)

The summary is a pure function of the samples (unit-tested without Serve); Ray is imported only
inside the polling thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger(__name__)

# ray.serve.llm names the engine deployment "LLMServer:<model id>"; the app's other deployment is
# the OpenAI ingress, which only routes and holds no accelerator.
ENGINE_PREFIX = "LLMServer"


@dataclass(frozen=True)
class ReplicaSample:
    """One look at the app: seconds since the watch began, engine replicas serving, and replicas
    of any deployment of the app still starting."""

    t: float
    running: int
    starting: int


def summarise_replicas(*, samples: Sequence[ReplicaSample], queries: int) -> dict:
    """The per-round serving record of metrics.json from a stage's samples (in time order).

    - ``replicas_at_start``: engine replicas serving when the stage began (0: none was held
      through the training before it);
    - ``peak_replicas``: the most engine replicas serving at once;
    - ``cold_start_s``: from the first sample that saw a replica starting while none served to
      the first that saw one serving (0.0: one was serving from the start; None: none ever did);
    - ``replica_seconds``: engine replicas serving, integrated over the stage (what it paid for);
    - ``queries_per_replica``: requests sent / peak replicas (None without a serving replica).
    """
    if not samples:
        return {"replicas_at_start": None, "peak_replicas": None, "cold_start_s": None,
                "replica_seconds": None, "queries_per_replica": None, "samples": 0}
    peak = max(s.running for s in samples)
    cold: float | None = None
    if samples[0].running > 0:
        cold = 0.0
    else:
        began = next((s.t for s in samples if s.starting > 0 and s.running == 0), None)
        served = next((s.t for s in samples if s.running > 0), None)
        if served is not None:
            cold = served - (began if began is not None and began <= served else samples[0].t)
    paid = sum(a.running * (b.t - a.t) for a, b in zip(samples, samples[1:]))
    return {"replicas_at_start": samples[0].running, "peak_replicas": peak,
            "cold_start_s": None if cold is None else round(cold, 1),
            "replica_seconds": round(paid, 1),
            "queries_per_replica": round(queries / peak, 1) if peak else None,
            "samples": len(samples)}


def replica_counts(app_name: str | None) -> tuple[int, int]:
    """(engine replicas RUNNING, replicas STARTING) of the app from ``serve.status()``, summed over
    every app when ``app_name`` is None; (0, 0) when the app is not there."""
    from ray import serve

    apps = serve.status().applications
    chosen = apps.values() if app_name is None else [apps[app_name]] if app_name in apps else []
    running = starting = 0
    for name, dep in ((n, d) for app in chosen for n, d in app.deployments.items()):
        states = {str(getattr(k, "value", k)): int(v) for k, v in dict(dep.replica_states).items()}
        starting += states.get("STARTING", 0)
        if name.startswith(ENGINE_PREFIX):
            running += states.get("RUNNING", 0)
    return running, starting


class ReplicaWatch:
    """Context manager: samples ``replica_counts(app_name)`` (None: every app) every ``interval_s``
    seconds in a daemon thread, from entry (one sample at once) to exit (one last sample). A
    failed look (Serve not started yet, its controller busy) is logged and skipped: watching never
    fails the stage it watches."""

    def __init__(self, *, app_name: str | None, interval_s: float = 1.0) -> None:
        self.app_name = app_name
        self.interval_s = interval_s
        self.samples: list[ReplicaSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _look(self) -> None:
        try:
            running, starting = replica_counts(self.app_name)
        except Exception as exc:  # the controller busy or restarting: keep the stage going
            log.debug("serve.status() failed: %s", exc)
            return
        self.samples.append(ReplicaSample(t=time.monotonic() - self._t0, running=running, starting=starting))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._look()

    def __enter__(self) -> "ReplicaWatch":
        self._t0 = time.monotonic()
        self._look()
        self._thread = threading.Thread(target=self._loop, name="replica-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._look()
