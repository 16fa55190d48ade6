"""Shared fixtures: paths to the shared datasets, a tiny seeded encoder, small corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The datasets live beside the checkout (../shared/data); NOISEAL_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("NOISEAL_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every module starts and stops its own Ray (tests/llm shares one per package). A thread a failed
# test left running (Ray Data's executor after a timeout, a status poller) must not silently start
# a fresh local cluster after that shutdown: every later module's ray.init would then error.
# Read when ray is imported, which no test does before this file runs.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")


def _require(available: bool, reason: str) -> None:
    """Skip a test whose dependency is missing, visibly; under CI (``CI=true``) fail instead, so
    that a missing browser, vLLM or dataset can never turn a red check into a quiet skip."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require():
    """``require(available, reason)``: see ``_require``."""
    return _require


@pytest.fixture(scope="session")
def shared_data() -> Path:
    _require(SHARED_DATA.is_dir(), f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A constant-seeded 2-layer BERT with the MiniLM tokenizer: model code without downloads."""
    from noiseal_ray.models.strong import make_tiny_encoder_dir

    return make_tiny_encoder_dir(tmp_path_factory.mktemp("tiny-encoder"))


# The fast tier (`pytest -m "not slow"`, under 5 minutes on 2 cores) keeps every module's logic:
# the unit tests, the deploy-file checks, the bad-input and fault tests, and one end-to-end run on
# Ray. These modules start vLLM, a browser, a second Ray node or kill workers, and are "slow", as
# are the single tests below; a test may also carry @pytest.mark.slow itself. CI runs everything.
SLOW_MODULES = (
    "tests/llm/",
    "tests/cluster/",
    "tests/report/",
    "tests/ray/test_serve_listen.py",
    "tests/ray/test_train_local.py",
    "tests/ray/test_terminal_output.py",
    "tests/reliability/test_faults_ray.py",
)

# Single tests of fast modules that take minutes: a second and third run of the pipeline.
SLOW_TESTS = (
    "tests/ray/test_pipeline.py::test_sigkill_mid_round_then_rerun_matches_uninterrupted",
    "tests/ray/test_pipeline.py::test_a_run_from_an_adopted_warmup_repeats_the_run_that_trained_it",
    "tests/ray/test_pipeline.py::test_a_split_rule_is_applied_recorded_and_resumed",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        if path.startswith(SLOW_MODULES) or f"{path}::{item.name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
