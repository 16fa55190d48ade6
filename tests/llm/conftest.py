"""One real vLLM CPU engine for all of tests/llm: the application of ``deploy/serve.yaml``,
deployed the way a user deploys that file (``serve run --non-blocking FILE`` against a running
Ray), with the two changes a laptop needs: the packaged SmolLM2-135M-Instruct on CPU instead of
the 7B model on a GPU, and a free loopback port instead of 8000. Everything else (the builder
``noiseal_ray.annotate.service:build_app``, the proxy's host, the autoscaling settings) comes
from the file itself. Runs then use it as the file's header says: ``llm_endpoint`` + ``llm_model``.

Starting it costs about a minute on 2 cores, so every test here shares it; tests that need no
engine do not request the fixtures.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from noiseal_ray.annotate.factory import AnnotatorSpec

ROOT = Path(__file__).resolve().parents[2]
SERVE_YAML = ROOT / "deploy" / "serve.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/llm/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.llm)


@dataclass(frozen=True)
class ServedApp:
    """deploy/serve.yaml as deployed here: its parsed config (after the laptop changes) and where
    its OpenAI-compatible API answers."""

    config: dict
    app_name: str
    port: int
    base_url: str
    model_id: str


def _wait_running(app_name: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        status = app.status if app else None
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise RuntimeError(f"{app_name} failed to deploy: {app.message}")
        time.sleep(2)
    raise TimeoutError(f"{app_name} not running after {timeout_s:.0f} s (status {status})")


# Package scope (tests/llm is a package for this): Ray and the engine go down after the last LLM
# test, before later modules start Ray clusters of their own.
@pytest.fixture(scope="package")
def served_app(tmp_path_factory: pytest.TempPathFactory, require) -> Iterator[ServedApp]:
    require(importlib.util.find_spec("vllm") is not None, "vLLM is not installed (scripts/setup.sh installs it)")
    import ray
    from ray import serve

    from noiseal_ray.annotate.llm_model import prepare_default_llm
    from noiseal_ray.annotate.service import free_loopback_port

    config = yaml.safe_load(SERVE_YAML.read_text(encoding="utf-8"))
    (app,) = config["applications"]
    app["args"].update(llm_model=str(prepare_default_llm()), use_gpu=False, max_model_len=2048)
    port = free_loopback_port()
    config["http_options"]["port"] = port
    path = tmp_path_factory.mktemp("serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    # 4 logical CPUs on 2 cores: one bundle for the engine plus room for Serve's proxy/ingress.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    t0 = time.monotonic()
    try:
        cmd = [str(Path(sys.executable).with_name("serve")), "run", "--non-blocking",
               "--address", ray.get_runtime_context().gcs_address, str(path)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        _wait_running(app["name"], timeout_s=900)
        host = config["http_options"]["host"]
        prefix = app["route_prefix"].rstrip("/")
        served = ServedApp(config=config, app_name=app["name"], port=port,
                           base_url=f"http://{host}:{port}{prefix}/v1", model_id=app["args"].get("model_id", "noiseal-relabel"))
        print(f"\ndeploy/serve.yaml running in {time.monotonic() - t0:.0f} s at {served.base_url}")
        yield served
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="package")
def llm_spec(served_app: ServedApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnnotatorSpec]:
    """The AnnotatorSpec a run's ``llm_backend`` yields for the served app (options hold
    base_url, model, cache_dir under a temporary run dir)."""
    from noiseal_ray.annotate.llm import llm_backend
    from noiseal_ray.config import RunConfig

    run_dir = tmp_path_factory.mktemp("llm_run")
    cfg = RunConfig(annotator="llm", llm_endpoint=served_app.base_url, llm_model=served_app.model_id,
                    llm_max_model_len=2048, llm_timeout_s=120.0)
    with llm_backend(config=cfg, run_dir=str(run_dir)) as spec:
        yield spec


@pytest.fixture
def fresh_cache_options(llm_spec: AnnotatorSpec, tmp_path: Path) -> dict:
    """The session spec's options with a per-test cache folder."""
    return {**llm_spec.options, "cache_dir": str(tmp_path / "llm_cache")}
