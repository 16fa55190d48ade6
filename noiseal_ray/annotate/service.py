"""Deploy the relabeling LLM as a Ray Serve app (``ray.serve.llm``), OpenAI-compatible over HTTP.

Used by the pipeline for the length of a run (``noiseal_ray.annotate.llm.llm_backend``) and by
``noiseal-ray serve`` for a long-lived service. Requires a connected Ray (``ray.init``) and vLLM
(``ray.serve.llm`` cannot even be imported without it), both imported lazily.

On CPU the engine runs in one ``{"CPU": 1}`` bundle with vLLM's multiprocessing executor and
eager mode (no graph capture); on GPU in a ``{"GPU": 1}`` bundle with vLLM's defaults. Prefix
caching is on either way: every relabeling prompt starts with the same system text.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noiseal_ray.ray_session import cluster_has_gpus

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "noiseal-relabel"

# What the vLLM CPU engine needs in its own processes; set per deployment (runtime_env), never
# globally at import. A KV cache of 1 GiB is plenty for relabeling prompts and keeps 2-core,
# 24 GiB machines usable (the default would take a large share of RAM).
CPU_ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def cpu_engine_dtype(cpuinfo: str | None = None) -> str | None:
    """"float32" where the CPU lacks AVX-512 BF16 (read from ``cpuinfo``, default /proc/cpuinfo),
    else None (the model's own dtype). Without it vLLM's CPU kernels emulate bf16: on a 2-core AVX2
    EPYC, 16 prompts of 336 tokens took 133 s in bf16 and 22.5 s in float32 through the packaged
    SmolLM2 (offline ``vllm.LLM``); with it, bf16 is the fast path. Decided where the app is built
    (the driver): a CPU cluster's nodes are taken to be alike."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: keep the model's dtype
            return None
    return None if "avx512_bf16" in cpuinfo else "float32"

# Serve's own defaults (600 s down, 30 s up) suit a web service; a run's relabeling comes in bursts
# between training rounds: give an idle replica (a GPU) back within a minute, and add replicas
# within seconds of a burst. The autoscaler decides from the requests in flight (queued ones too).
DEFAULT_DOWNSCALE_DELAY_S = 60.0
DEFAULT_UPSCALE_DELAY_S = 5.0
# The autoscaler's view of the load: reported every 2 s, averaged over 10 s (Serve: 10 s, 30 s), so
# that a burst is seen, and its end too, within seconds rather than half a minute.
METRICS_INTERVAL_S = 2.0
LOOK_BACK_PERIOD_S = 10.0


@dataclass(frozen=True)
class LLMDeployment:
    """A running relabeling app: where to send requests and what to tear down."""

    app_name: str
    base_url: str  # OpenAI-compatible base, ends with /v1
    model_id: str  # the "model" field of requests
    model_source: str  # folder or hub id the engine loaded
    started_serve: bool  # True: we started Serve and shut it down on teardown


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_llm_app(
    *,
    model_source: str,
    model_id: str = DEFAULT_MODEL_ID,
    use_gpu: bool,
    min_replicas: int = 1,
    max_replicas: int = 1,
    target_ongoing_requests: int = 16,
    downscale_delay_s: float = DEFAULT_DOWNSCALE_DELAY_S,
    upscale_delay_s: float = DEFAULT_UPSCALE_DELAY_S,
    max_model_len: int = 4096,
) -> Any:
    """The Serve application (OpenAI ingress + autoscaled vLLM replicas) for ``model_source``.

    Not deployed here. One replica starts with the app (so a model that cannot load fails the
    deploy, not a later round). ``min_replicas=0`` lets it go after ``downscale_delay_s`` idle
    seconds (training rounds hold no replica, no GPU); the first request after that waits for a
    replica to start (the cold start). More replicas start when the requests in flight exceed
    ``target_ongoing_requests`` per replica for ``upscale_delay_s``.
    """
    from ray.serve.llm import LLMConfig, build_openai_app

    engine_kwargs: dict[str, Any] = {"max_model_len": max_model_len, "enable_prefix_caching": True}
    env_vars: dict[str, str] = {}
    if os.path.isdir(model_source):
        # Local weights: never let the engine reach for a hub. A hub id keeps hub access (GPU
        # clusters usually download their model).
        env_vars["HF_HUB_OFFLINE"] = "1"
    if use_gpu:
        placement = {"bundles": [{"GPU": 1}]}
    else:
        placement = {"bundles": [{"CPU": 1}]}
        # Ray's executor would ask for a GPU-shaped worker group; the mp executor keeps the engine
        # inside the replica's bundle. Graph capture only costs start-up time on CPU.
        engine_kwargs.update(distributed_executor_backend="mp", enforce_eager=True)
        if (dtype := cpu_engine_dtype()) is not None:
            engine_kwargs["dtype"] = dtype
        env_vars.update(CPU_ENGINE_ENV)
    runtime_env = {"env_vars": env_vars} if env_vars else None
    deployment_config: dict[str, Any] = {
        "autoscaling_config": {
            "min_replicas": min_replicas,
            "initial_replicas": max(1, min_replicas),
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
            "upscale_delay_s": upscale_delay_s,
            "downscale_delay_s": downscale_delay_s,
            "downscale_to_zero_delay_s": downscale_delay_s,
            "metrics_interval_s": METRICS_INTERVAL_S,
            "look_back_period_s": LOOK_BACK_PERIOD_S,
        }
    }
    if not use_gpu:
        # ray.serve.llm adds the replica actor's CPU (default 1) to the engine bundle, so a CPU
        # replica would reserve 2 logical CPUs. The replica only relays HTTP to the engine process,
        # which owns the bundle's CPU; reserving 1 leaves the other for Ray Data on 2-core nodes.
        deployment_config["ray_actor_options"] = {"num_cpus": 0}
    config = LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_source},
        deployment_config=deployment_config,
        placement_group_config=placement,
        engine_kwargs=engine_kwargs,
        runtime_env=runtime_env,
        # Prometheus engine metrics are not needed and cost a port per replica.
        log_engine_metrics=False,
    )
    return build_openai_app(
        {
            "llm_configs": [config],
            # The OpenAI ingress only routes requests; by default it would hold a whole logical
            # CPU, which a 2-CPU local cluster cannot spare next to the engine and Ray Data.
            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}},
        }
    )


class ServeAppArgs(BaseModel):
    """The ``args`` of the relabeling application in a Serve config (``deploy/serve.yaml``, the
    RayService's ``serveConfigV2``): the flags of ``noiseal-ray serve``, checked by type."""

    model_config = ConfigDict(extra="forbid", strict=True)

    llm_model: str | None = None  # folder or hub id; None: the packaged SmolLM2 (converted once)
    model_id: str = DEFAULT_MODEL_ID  # the "model" field clients send
    use_gpu: bool | None = None  # None: GPU when the cluster has one when the app is built
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: int = Field(16, ge=1)
    max_model_len: int = Field(4096, ge=256)

    @model_validator(mode="after")
    def _replicas(self) -> "ServeAppArgs":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


def build_app(args: dict[str, Any]) -> Any:
    """Serve's application builder for config files (``import_path:
    noiseal_ray.annotate.service:build_app``): ``args`` as in ``ServeAppArgs``; returns the same
    application ``noiseal-ray serve`` deploys. Raises pydantic's ValidationError, which Serve
    reports as the deploy failure, for an unknown key or a wrongly typed value.
    """
    from noiseal_ray.annotate.llm_model import resolve_llm_model

    a = ServeAppArgs.model_validate(dict(args or {}))
    return build_llm_app(
        model_source=resolve_llm_model(a.llm_model),
        model_id=a.model_id,
        use_gpu=cluster_has_gpus() if a.use_gpu is None else a.use_gpu,
        min_replicas=a.min_replicas,
        max_replicas=a.max_replicas,
        target_ongoing_requests=a.target_ongoing_requests,
        max_model_len=a.max_model_len,
    )


def _running_serve_http_port() -> int | None:
    """HTTP port of the Serve instance already running on the cluster, or None when none runs."""
    # Serve has no public getter for this: serve.status() reports an empty status rather than
    # "not running", and nothing public exposes the proxy port.
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else int(client.http_config.port)


def start_serve_proxy(*, host: str, port: int | None) -> tuple[int, bool]:
    """Start Ray Serve with its HTTP proxy bound to ``host``:``port`` (``None``: a free port), or
    reuse the Serve instance already running on the cluster (its proxy and port). Returns the
    port and whether this call started Serve (and so must shut it down)."""
    from ray import serve

    running_port = _running_serve_http_port()
    if running_port is not None:
        log.info("reusing the running Ray Serve instance (HTTP port %d)", running_port)
        return running_port, False
    port = port if port is not None else free_loopback_port()
    # Every node gets a proxy on the same port, so an actor anywhere can use its local one.
    serve.start(proxy_location="EveryNode", http_options={"host": host, "port": port})
    return port, True


def deploy_llm_app(
    *,
    model_source: str,
    model_id: str = DEFAULT_MODEL_ID,
    use_gpu: bool | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    target_ongoing_requests: int = 16,
    downscale_delay_s: float = DEFAULT_DOWNSCALE_DELAY_S,
    upscale_delay_s: float = DEFAULT_UPSCALE_DELAY_S,
    max_model_len: int = 4096,
    host: str = "127.0.0.1",
    port: int | None = None,
    app_name: str | None = None,
    route_prefix: str | None = None,
) -> LLMDeployment:
    """Deploy the relabeling app on the connected Ray cluster and wait until it is running.

    Starts Serve (proxy on every node, bound to ``host``:``port``; ``port=None`` picks a free one)
    unless Serve already runs there, in which case its proxy and port are reused. ``app_name`` and
    ``route_prefix`` default to unique values so that several runs can share one cluster.
    ``use_gpu=None`` uses a GPU when the cluster has one. Raises RuntimeError (from Serve) when
    the deployment fails.
    """
    from ray import serve

    if use_gpu is None:
        use_gpu = cluster_has_gpus()
    suffix = uuid.uuid4().hex[:8]
    app_name = app_name or f"noiseal-llm-{suffix}"
    route_prefix = route_prefix if route_prefix is not None else f"/noiseal-llm-{suffix}"
    port, started = start_serve_proxy(host=host, port=port)
    app = build_llm_app(
        model_source=model_source,
        model_id=model_id,
        use_gpu=use_gpu,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing_requests,
        downscale_delay_s=downscale_delay_s,
        upscale_delay_s=upscale_delay_s,
        max_model_len=max_model_len,
    )
    t0 = time.monotonic()
    try:
        serve.run(app, name=app_name, route_prefix=route_prefix, blocking=False)
    except BaseException:
        teardown_llm_app(
            LLMDeployment(app_name, "", model_id, model_source, started), quiet=True
        )
        raise
    log.info("LLM app %s running after %.0f s", app_name, time.monotonic() - t0)
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    prefix = route_prefix.rstrip("/")
    return LLMDeployment(
        app_name=app_name,
        base_url=f"http://{client_host}:{port}{prefix}/v1",
        model_id=model_id,
        model_source=model_source,
        started_serve=started,
    )


def teardown_llm_app(deployment: LLMDeployment, *, quiet: bool = False) -> None:
    """Delete the app; shut Serve down too when ``deploy_llm_app`` started it. Never ``ray stop``."""
    from ray import serve

    try:
        if deployment.started_serve:
            serve.shutdown()
        else:
            serve.delete(deployment.app_name)
    except Exception:
        if not quiet:
            raise
        log.warning("tearing down LLM app %s failed", deployment.app_name, exc_info=True)


def warm_up(*, base_url: str, model_id: str, timeout_s: float, headers: dict[str, str] | None = None) -> float:
    """Send one constrained request so the engine compiles its choice grammar path before the
    first real batch (about 20 s on CPU the first time). Returns the seconds it took; raises
    httpx errors on failure."""
    import httpx

    from noiseal_ray.annotate.prompt import build_request

    body = build_request(
        model=model_id,
        messages=[{"role": "user", "content": "Say yes or no."}],
        choices=["yes", "no"],
    )
    t0 = time.monotonic()
    r = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers or {}, timeout=timeout_s)
    r.raise_for_status()
    return time.monotonic() - t0
