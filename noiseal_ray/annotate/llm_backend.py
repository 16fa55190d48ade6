"""The LLM annotator's backend for one run: check an endpoint, or deploy SmolLM2 on Ray Serve.

Driver side, once per run::

    with llm_backend(config=cfg, run_dir=run_dir) as spec:   # deploys, or checks llm_endpoint
        ...                                                  # actors: make_annotator(spec)
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from noiseal_ray.annotate.base import AnnotatorSpec
from noiseal_ray.annotate.endpoint import check_endpoint, normalize_base_url
from noiseal_ray.config import RunConfig
from noiseal_ray.errors import AnnotatorError

log = logging.getLogger(__name__)

CACHE_DIRNAME = "llm_cache"


def _annotator_options(
    *, config: RunConfig, run_dir: str, base_url: str, model: str, cache_model: str
) -> dict[str, Any]:
    return {
        "base_url": base_url,
        "model": model,
        "cache_model": cache_model,
        "api_key_env": config.llm_api_key_env,
        "concurrency": config.llm_concurrency,
        "timeout_s": config.llm_timeout_s,
        "cold_start_timeout_s": config.llm_cold_start_timeout_s,
        "retries": config.llm_retries,
        "min_logprob": config.llm_min_logprob,
        "label_descriptions": dict(config.label_descriptions),
        "cache_dir": str(Path(run_dir) / CACHE_DIRNAME),
    }


@contextlib.contextmanager
def llm_backend(*, config: RunConfig, run_dir: str) -> Iterator[AnnotatorSpec]:
    """Make the configured LLM usable for the whole run; yield the annotator spec; tear down.

    With ``config.llm_endpoint``: check it answers (no deployment). Otherwise deploy
    ``config.llm_model`` (None: the packaged SmolLM2, converted once) with ``ray.serve.llm`` on the
    Ray cluster the caller connected to, wait until it runs and warm it up; on exit delete it.
    When the LLM cannot be used at all: with ``config.annotator_fallback`` set, log a warning and
    yield that annotator's spec instead; otherwise raise AnnotatorError.
    """
    deployment = None
    fallback_reason: str | None = None
    options: dict[str, Any] = {}
    try:
        if config.llm_endpoint:
            base_url = normalize_base_url(config.llm_endpoint)
            model = check_endpoint(base_url=base_url, api_key_env=config.llm_api_key_env, model=config.llm_model)
            options = _annotator_options(config=config, run_dir=run_dir, base_url=base_url, model=model, cache_model=model)
        else:
            deployment = _deploy(config)
            options = _annotator_options(
                config=config,
                run_dir=run_dir,
                base_url=deployment.base_url,
                model=deployment.model_id,
                cache_model=deployment.model_source,
            )
    except AnnotatorError as exc:
        if config.annotator_fallback in (None, "llm"):
            raise
        fallback_reason = str(exc)
    if fallback_reason is not None:
        log.warning(
            "LLM annotator unavailable (%s); falling back to the %r annotator",
            fallback_reason,
            config.annotator_fallback,
        )
        yield AnnotatorSpec(kind=str(config.annotator_fallback))
        return
    try:
        yield AnnotatorSpec(kind="llm", options=options,
                            serve_app=deployment.app_name if deployment is not None else None,
                            capacity=None if deployment is None
                            else config.llm_max_replicas * config.llm_target_ongoing_requests)
    finally:
        if deployment is not None:
            from noiseal_ray.annotate.service import teardown_llm_app

            teardown_llm_app(deployment, quiet=True)


def _deploy(config: RunConfig) -> Any:
    """Deploy and warm up; every failure becomes AnnotatorError (so the fallback applies)."""
    try:
        from noiseal_ray.annotate import service
        from noiseal_ray.annotate.llm_model import resolve_llm_model
    except ImportError as exc:  # pragma: no cover - both are in this package
        raise AnnotatorError(str(exc)) from None
    try:
        import ray.serve.llm  # noqa: F401  (fails fast, with a clear message, without vLLM)
    except ImportError as exc:
        raise AnnotatorError(
            f"the LLM annotator needs vLLM (pip install 'noiseal-ray[llm-cpu]'): {exc}"
        ) from None
    try:
        source = resolve_llm_model(config.llm_model)
    except (OSError, RuntimeError, ValueError) as exc:
        raise AnnotatorError(f"cannot prepare the LLM {config.llm_model or 'SmolLM2 (packaged)'}: {exc}") from None
    try:
        deployment = service.deploy_llm_app(
            model_source=source,
            use_gpu=config.llm_use_gpu,
            min_replicas=config.llm_min_replicas,
            max_replicas=config.llm_max_replicas,
            target_ongoing_requests=config.llm_target_ongoing_requests,
            downscale_delay_s=config.llm_downscale_delay_s,
            max_model_len=config.llm_max_model_len,
        )
    except Exception as exc:
        raise AnnotatorError(f"deploying the LLM {source} with Ray Serve failed: {exc}") from None
    try:
        seconds = service.warm_up(
            base_url=deployment.base_url, model_id=deployment.model_id, timeout_s=max(config.llm_timeout_s, 300.0)
        )
        log.info("LLM warm-up request took %.1f s", seconds)
    except Exception as exc:
        # The driver may not reach the proxy (e.g. a Ray Client driver); actors still can.
        log.warning("LLM warm-up request from the driver failed (%s); continuing", exc)
    return deployment
