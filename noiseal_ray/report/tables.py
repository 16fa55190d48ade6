"""The report's tables as rows of formatted text: rounds, per-class counts, and the two review lists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noiseal_ray.report.data import RunData
from noiseal_ray.report.fmt import DASH, count, duration, is_missing, num, pct, short_text, text
from noiseal_ray.report.limits import PART_NAMES, TABLE_MAX


@dataclass(frozen=True)
class Table:
    """``headers`` and ``rows`` of plain-text cells (each row as long as ``headers``)."""

    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class RoundRow:
    """One metrics round: its name, R/P/H sizes (None where the round has no partition), the rest."""

    name: str
    sizes: list[str | None]
    cells: list[str]


@dataclass(frozen=True)
class Truth:
    """A clean label next to the label it checks; ``right`` when they agree."""

    label: str
    right: bool


@dataclass(frozen=True)
class ReviewRow:
    """A sample in a review table. ``scores``: the formatted numbers after ``part``/``source``
    (corrections) or after ``final`` (doubtful samples, with their thresholds in ``taus``);
    ``truth`` None when the clean label is unknown for this sample."""

    id: str
    text: str
    given: str
    final: str
    part: str = ""
    source: str = ""
    scores: tuple[str, ...] = ()
    taus: tuple[str, ...] = ()
    truth: Truth | None = None


def rounds_table(*, data: RunData) -> tuple[list[str], list[RoundRow]]:
    """(headers, rows): per metrics round, sizes, annotations, changes, losses, accuracy, detection,
    and the LLM replicas when the run deployed its own autoscaled LLM."""
    rows = []
    served = any(e.get("llm_serving") for e in data.rounds)
    for e in data.rounds:
        s, a, tr = e.get("sizes") or {}, e.get("annotator") or {}, e.get("train") or {}
        d, rc = e.get("detection") or {}, e.get("recovery") or {}
        name = "warm-up" if e["round"] == 0 else ("final" if e["round"] == data.last else str(e["round"]))
        cells = [count(a["new_answers"]) if "new_answers" in a else DASH,
                 count(a["failed"]) if "failed" in a else DASH,
                 count(e["changed"]) if "changed" in e else DASH,
                 num(tr.get("loss_strong")), num(tr.get("loss_weak")), pct(e.get("test_accuracy"))]
        if data.has_clean:
            cells += [pct(d.get("precision")), pct(d.get("recall")), pct(d.get("f1")), pct(rc.get("final_accuracy"))]
        if served:
            cells += _serving_cells(e.get("llm_serving"))
        rows.append(RoundRow(name, [count(s[p]) if p in s else None for p in PART_NAMES], cells))
    headers = ["round", "R", "P", "H", "new annotations", "failed", "changed", "loss strong", "loss weak",
               "test acc."] + (["det. precision", "det. recall", "det. F1", "label acc."] if data.has_clean else [])
    if served:
        headers += ["LLM replicas at start → most", "LLM cold start"]
    return headers, rows


def _serving_cells(serving: dict | None) -> list[str]:
    """Replicas when the round's annotate stage began and at most during it; the wait for the first."""
    if not serving or serving.get("peak_replicas") is None:
        return [DASH, DASH]
    cold = serving.get("cold_start_s")
    return [f"{serving['replicas_at_start']} → {serving['peak_replicas']}",
            DASH if cold is None else duration(cold)]


def classes_table(*, data: RunData) -> Table:
    """The TABLE_MAX largest given classes: size, R/P/H shares, changes, and true noise when known."""
    pc = data.labels.per_class
    rows = []
    for i in np.argsort(-pc["n"], kind="stable")[:TABLE_MAX]:
        nn = max(int(pc["n"][i]), 1)
        row = [data.names[i], count(pc["n"][i]), pct(pc["R"][i] / nn), pct(pc["P"][i] / nn),
               pct(pc["H"][i] / nn), pct((pc["P"][i] + pc["H"][i]) / nn), count(pc["changed"][i])]
        if data.has_clean:
            kn = int(pc["known"][i])
            row += [pct(pc["noisy"][i] / kn if kn else None), pct(pc["final_right"][i] / kn if kn else None)]
        rows.append(row)
    headers = ["given label", "samples", "R", "P", "H", "est. noise (not R)", "changed"] + (
        ["true noise", "final label acc."] if data.has_clean else [])
    return Table(headers, rows)


def _truth(checked: object, clean: object) -> Truth | None:
    return None if is_missing(clean) else Truth(str(clean), checked == clean)


def corrections_table(*, data: RunData) -> tuple[list[str], list[ReviewRow]]:
    """(headers, rows) of the most confident label changes."""
    rows = []
    if data.labels.corrections is not None:
        for _, r in data.labels.corrections.iterrows():
            rows.append(ReviewRow(
                id=text(r["id"]), text=short_text(r["text"]), given=text(r["given_label"]),
                final=text(r["final_label"]),
                part=text(r["partition"]), source=text(r["source"]),
                scores=(num(r["confidence"]), num(r["p_strong"]), num(r["p_weak"])),
                truth=_truth(r["final_label"], r.get("clean_label")) if data.has_clean else None))
    headers = ["id", "text", "given", "suggested", "part", "source", "confidence", "p_strong", "p_weak"] + (
        ["clean label"] if data.has_clean else [])
    return headers, rows


def doubtful_table(*, data: RunData) -> tuple[list[str], list[ReviewRow]]:
    """(headers, rows) of the hard samples closest to their thresholds."""
    rows = []
    if data.labels.doubtful is not None:
        for _, r in data.labels.doubtful.iterrows():
            rows.append(ReviewRow(
                id=text(r["id"]), text=short_text(r["text"]), given=text(r["given_label"]),
                final=text(r["final_label"]),
                scores=(num(r["p_strong"]), num(r["p_weak"]), num(r["distance"])),
                taus=(num(r["tau_strong"]), num(r["tau_weak"])),
                truth=_truth(r["given_label"], r.get("clean_label")) if data.has_clean else None))
    headers = ["id", "text", "given", "final", "p_strong / τ", "p_weak / τ", "distance"] + (
        ["clean label (vs given)"] if data.has_clean else [])
    return headers, rows


def reviewed_table(*, data: RunData) -> tuple[list[str], list[ReviewRow]]:
    """(headers, rows) of reviewed (trusted) rows whose label the reviewer changed, with what the
    final strong model predicts for them."""
    rows = []
    if data.labels.reviewed_changed is not None:
        for _, r in data.labels.reviewed_changed.iterrows():
            rows.append(ReviewRow(
                id=text(r["id"]), text=short_text(r["text"]), given=text(r["given_label"]),
                final=text(r["final_label"]), source=text(r["pred_label"]), scores=(num(r["pred_prob"]),)))
    return ["id", "text", "given", "reviewed", "strong model predicts", "its p"], rows
