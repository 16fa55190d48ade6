"""Shared fixtures for the deployment-file checks: the repository root and pyproject's pins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]


def load_pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pinned_versions(pyproject: dict) -> dict[str, set[str]]:
    """Canonical name -> versions pinned with ``==`` anywhere in pyproject (deps and extras)."""
    project = pyproject["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    pins: dict[str, set[str]] = {}
    for spec in specs:
        req = Requirement(spec)
        for s in req.specifier:
            if s.operator == "==":
                pins.setdefault(canonicalize_name(req.name), set()).add(s.version)
    return pins


@pytest.fixture(scope="session")
def pyproject() -> dict:
    return load_pyproject()


@pytest.fixture(scope="session")
def pins(pyproject) -> dict[str, set[str]]:
    return pinned_versions(pyproject)


@pytest.fixture(scope="session")
def ray_version(pins) -> str:
    (version,) = pins["ray"]  # one Ray version for every extra; test_pyproject_pins checks it
    return version
