"""Rendering the report: the run's numbers and figures into templates/report.html.j2, autoescaped.

    noiseal-ray report runs/demo                 # writes runs/demo/report.html
    python -c "from noiseal_ray.report import write_report; write_report(run_dir='runs/demo')"
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from noiseal_ray.report import figures, summary, tables
from noiseal_ray.report.data import RunData, load_run
from noiseal_ray.report.limits import PART_NAMES

if TYPE_CHECKING:
    import jinja2


@dataclass(frozen=True)
class Figure:
    """A plot: ``png`` is base64 PNG data (ASCII, nothing to escape), ``alt`` its description."""

    png: str
    alt: str


def report_figures(*, data: RunData) -> dict[str, object]:
    """The report's plots by name: sizes, quality, transition, noise (a Figure or None each) and
    confidence (a list of Figures, one per round shown)."""
    rounds, last, c = data.rounds, data.last, data.c
    # One x range per model for every round, so the rounds' histograms can be compared by eye.
    ranges = {k: figures.display_range(hists=data.hists, key=k) for k in ("strong", "weak")} if data.hists else {}
    quality = figures.plot_quality(rounds=rounds, last=last)
    confidence = [Figure(figures.plot_confidence(h=h, ranges=ranges, has_clean=data.has_clean, last=last,
                                                 num_classes=c), f"confidence histograms, round {h.round_no}")
                  for h in data.hists]
    return {
        "sizes": (Figure(figures.plot_sizes(rounds=rounds, last=last), "R/P/H sizes per round")
                  if data.part_rounds else None),
        "quality": Figure(quality, "test accuracy and detection metrics per round") if quality else None,
        "confidence": confidence,
        "transition": (Figure(figures.plot_transition(st=data.labels, names=data.names),
                              "given to final label transition matrix") if c else None),
        "noise": (Figure(figures.plot_noise(st=data.labels, names=data.names), "estimated noise per class")
                  if c else None),
    }


def report_context(*, data: RunData) -> dict[str, object]:
    """Everything the template reads, as plain text, typed rows and figures (no markup)."""
    per_class_thr = any(h.tau_strong is not None and len(h.tau_strong) > 1 for h in data.hists)
    return {
        "title": f"noiseal-ray report — {data.run.resolve().name}",
        "run_path": str(data.run.resolve()),
        "part_names": PART_NAMES,
        "has_clean": data.has_clean,
        "cards": summary.summary_cards(data=data),
        "summary_rows": summary.summary_rows(data=data),
        "quality_rows": summary.quality_rows(data=data),
        "accuracy_rows": summary.accuracy_rows(data=data),
        "rounds": tables.rounds_table(data=data),
        "classes": tables.classes_table(data=data),
        "corrections": tables.corrections_table(data=data),
        "doubtful": tables.doubtful_table(data=data),
        "reviewed": tables.reviewed_table(data=data),
        "n_reviewed": data.labels.n_reviewed,
        "n_reviewed_changed": data.labels.n_reviewed_changed,
        "n_reviewed_changed_learnt": data.labels.n_reviewed_changed_learnt,
        "moves": ((data.metrics or {}).get("reviewed") or {}).get("moves") or [],
        "reviewed_file": ", ".join([r] if isinstance(r := data.config.get("reviewed") or [], str) else map(str, r)),
        "n_changed": f"{data.labels.n_changed:,}",
        "n_hard": f"{data.labels.n_hard:,}",
        "per_class_thresholds": per_class_thr,
        "missing_tables": ", ".join(map(str, data.missing_tables)),
        "notes": data.notes,
        "figures": report_figures(data=data),
    }


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja environment of templates/ (package data, so it loads from an installed wheel too).

    Autoescape is on for every template: run data (texts, ids, label names, paths) is untrusted.
    StrictUndefined makes a misspelt field an error rather than an empty cell.
    """
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("noiseal_ray", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def build_report(*, run_dir: str | Path) -> str:
    """The report's HTML: one self-contained page (inline CSS, plots as base64 PNG).

    Reads only what a finished run leaves behind (config.yaml, manifest.json, metrics.json,
    labels.parquet/, rounds/r{n}/table/); raises InputError for a missing or unfinished run.
    """
    t0 = time.time()
    data = load_run(run_dir=run_dir)
    context = report_context(data=data)
    context["generated"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    context["seconds"] = f"{time.time() - t0:.1f}"
    return environment().get_template("report.html.j2").render(context)


def write_report(*, run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default RUN_DIR/report.html), atomically."""
    from noiseal_ray.rundir import atomic_write_text

    text = build_report(run_dir=run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, text)
    return path
