"""One real vLLM CPU engine for all of tests/llm, deployed the way a run deploys it.

The engine serves the packaged SmolLM2-135M-Instruct (converted once into the user cache) through
``llm_backend``: Ray Serve + ``ray.serve.llm`` + prefix caching, CPU placement. Starting it costs
about a minute on 2 cores, so every test here shares it; tests that need no engine do not
request the fixture.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from noiseal_ray.annotate.factory import AnnotatorSpec


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/llm/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.llm)


# Package scope (tests/llm is a package for this): Ray and the engine go down after the last LLM
# test, before later modules start Ray clusters of their own.
@pytest.fixture(scope="package")
def llm_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnnotatorSpec]:
    """The AnnotatorSpec yielded by ``llm_backend`` for a deployed SmolLM2 (options hold base_url,
    model, cache_dir under a temporary run dir)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install 'noiseal-ray[llm-cpu]')")
    import ray

    from noiseal_ray.annotate.llm import llm_backend
    from noiseal_ray.config import RunConfig

    saved = {k: os.environ.get(k) for k in ("VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE")}
    os.environ.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    # 4 logical CPUs on 2 cores: one bundle for the engine plus room for Serve's proxy/ingress.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    run_dir = tmp_path_factory.mktemp("llm_run")
    cfg = RunConfig(annotator="llm", llm_max_model_len=2048, llm_timeout_s=120.0)
    t0 = time.monotonic()
    try:
        with llm_backend(config=cfg, run_dir=str(run_dir)) as spec:
            print(f"\nLLM backend ready in {time.monotonic() - t0:.0f} s at {spec.options['base_url']}")
            yield spec
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def fresh_cache_options(llm_spec: AnnotatorSpec, tmp_path: Path) -> dict:
    """The session spec's options with a per-test cache folder."""
    return {**llm_spec.options, "cache_dir": str(tmp_path / "llm_cache")}
