"""The report in a real browser: headless Chromium loads report.html, every plot decodes
(the report's inline script marks <body data-images-ok>), the key numbers are on the page,
and a full-page screenshot is kept under tests/artifacts/ for a human to look at.

The run directory is synthetic (tests/unit/test_report.py::make_run: config.yaml,
manifest.json, metrics.json, labels.parquet/, rounds/r*/table/ built with the pipeline's own
partition and metrics code), so this takes seconds. NOISEAL_REPORT_RUN=/path/to/run renders a
copy of a real run directory instead. Skipped when Chromium is absent (scripts/setup.sh --test
installs Debian's `chromium` where apt-get is available).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
sys.path.insert(0, str(ROOT / "tests" / "unit"))


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,4000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # A system package, not a pip one: setup installs it where apt-get can reach Debian's mirror,
    # which CI machines do not always do, so its absence skips even under CI (unlike `require`).
    if chromium() is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; scripts/setup.sh --test tries)")
    real = os.environ.get("NOISEAL_REPORT_RUN")
    dst = tmp_path_factory.mktemp("browser") / "run"
    if real:
        shutil.copytree(real, dst, ignore=shutil.ignore_patterns("checkpoints", "model", "llm_cache", "scored"))
        return dst
    from test_report import make_run

    return make_run(dst, n=400, rounds=2)


def test_report_renders_in_chromium(run_dir, tmp_path):
    from noiseal_ray.report import write_report

    page = write_report(run_dir=run_dir)
    exe = chromium()
    url = page.resolve().as_uri()
    dom = browser(exe, tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    n_img = len(re.findall(r"<img\b", html))
    assert n_img >= 5
    m = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', html)
    assert m, "the report's load script did not run"
    assert m.group(1) == m.group(2) == str(n_img), f"only {m.group(1)} of {m.group(2)} images decoded"
    assert 'data-images-ok="true"' in html

    metrics = json.loads((run_dir / "metrics.json").read_text())
    text = re.sub(r"<[^>]+>", " ", html)
    for p in ("R", "P", "H"):
        assert f"{metrics['final']['sizes'][p]:,}" in text
    if metrics["final"].get("test_accuracy_last") is not None:
        assert f"{100 * metrics['final']['test_accuracy_last']:.1f}%" in text
    assert "<script>alert(1)</script>" not in html  # escaped text stays text in the live DOM

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = browser(exe, tmp_path / "profile-shot", "--hide-scrollbars", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(page, ARTIFACTS / "report.html")
