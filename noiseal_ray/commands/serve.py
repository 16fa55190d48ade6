"""``noiseal-ray serve``: run the relabeling LLM as a long-lived OpenAI-compatible service.

Module-level imports stay cheap (``--help`` must be instant): Ray and vLLM load inside ``serve``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def serve(
    llm_model: Annotated[
        Optional[str],
        typer.Option("--llm-model", help="Model folder or hub id; default: the packaged SmolLM2-135M-Instruct."),
    ] = None,
    min_replicas: Annotated[int, typer.Option("--min-replicas", min=0, help="Autoscaling floor (0: idle to zero).")] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas", min=1, help="Autoscaling ceiling.")] = 1,
    target_ongoing_requests: Annotated[
        int, typer.Option("--target-ongoing-requests", min=1, help="Requests per replica before scaling up.")
    ] = 16,
    downscale_delay_s: Annotated[
        float, typer.Option("--downscale-delay-s", min=0, help="Idle seconds before a replica goes.")
    ] = 60.0,
    max_model_len: Annotated[int, typer.Option("--max-model-len", min=256, help="Context length in tokens.")] = 4096,
    use_gpu: Annotated[
        Optional[bool], typer.Option("--gpu/--cpu", help="Engine placement; default: GPU when the cluster has one.")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface the HTTP proxy binds to (loopback unless you widen it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    address: Annotated[
        Optional[str], typer.Option("--address", help="Ray cluster to join (e.g. auto); default: start a local one.")
    ] = None,
    model_id: Annotated[str, typer.Option("--model-id", help='The "model" name clients send.')] = "noiseal-relabel",
) -> None:
    """Deploy the relabeling LLM (vLLM on Ray Serve) and serve it until Ctrl-C.

    Example: start it, then point runs at it (config: llm_endpoint and llm_model).

    noiseal-ray serve --port 8000 --max-replicas 2

    noiseal-ray run --annotator llm  (llm_endpoint: http://127.0.0.1:8000/v1, llm_model: noiseal-relabel)
    """
    import logging
    import os
    import signal
    import threading

    from noiseal_ray.annotate.llm_model import resolve_llm_model
    from noiseal_ray.errors import AnnotatorError, ConfigError

    if min_replicas > max_replicas:
        raise ConfigError(f"--min-replicas ({min_replicas}) exceeds --max-replicas ({max_replicas})")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        source = resolve_llm_model(llm_model)
    except (OSError, RuntimeError, ValueError) as exc:
        raise AnnotatorError(f"cannot prepare the LLM: {exc}") from None

    import ray

    from noiseal_ray.annotate import service

    started_ray = not ray.is_initialized()
    if started_ray:
        # A local cluster needs at least 2 logical CPUs: one bundle for the engine, one spare for
        # Serve's own actors, even on a 1-core machine.
        kwargs = {"address": address} if address else {"address": "local", "num_cpus": max(2, os.cpu_count() or 1)}
        ray.init(include_dashboard=False, **kwargs)
    deployment = None
    try:
        typer.echo(f"deploying {source} (first start takes about a minute on CPU) ...")
        try:
            deployment = service.deploy_llm_app(
                model_source=source,
                model_id=model_id,
                use_gpu=use_gpu,
                min_replicas=min_replicas,
                max_replicas=max_replicas,
                target_ongoing_requests=target_ongoing_requests,
                downscale_delay_s=downscale_delay_s,
                max_model_len=max_model_len,
                host=host,
                port=port,
                app_name="noiseal-relabel",
                route_prefix="/",
            )
        except Exception as exc:
            raise AnnotatorError(f"deploying {source} failed: {exc}") from None
        typer.echo(f"serving model {deployment.model_id!r} at {deployment.base_url} (Ctrl-C to stop)")
        stop = threading.Event()
        # Installed after ray.init so that these handlers, not Ray's or vLLM's, decide: Ctrl-C and
        # SIGTERM both end the wait and fall through to a clean teardown.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        typer.echo("shutting down ...")
    finally:
        if deployment is not None:
            service.teardown_llm_app(deployment, quiet=True)
        if started_ray:
            ray.shutdown()
