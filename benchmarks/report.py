"""Render benchmark records into RESULTS.md, results/quality.csv and results/results.json.

Every number in the tables is computed here from the records (``<out>/records/*.json`` and
``<out>/speed/*.json``); nothing is typed by hand. Aggregation over seeds: mean and sample
standard deviation (ddof=1) when there are two or more seeds; with one seed only the value.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

# (column title, record path, scale, decimals)
QUALITY_COLUMNS: tuple[tuple[str, str, float, int], ...] = (
    ("test acc best (%)", "acc_best", 100.0, 1),
    ("test acc last (%)", "acc_last", 100.0, 1),
    ("detect P", "detection.precision", 1.0, 3),
    ("detect R", "detection.recall", 1.0, 3),
    ("detect F1", "detection.f1", 1.0, 3),
    ("changed P", "correction.precision", 1.0, 3),
    ("changed R", "correction.recall", 1.0, 3),
    ("changed F1", "correction.f1", 1.0, 3),
    ("fixed", "recovery.fixed", 1.0, 3),
    ("broken", "recovery.broken", 1.0, 3),
    ("LLM queries", "llm_queries", 1.0, 0),
    ("wall (s)", "wall_seconds", 1.0, 0),
)
NOTES = """\
- The `full` grid (`noiseal-ray bench --grid full`, written to `benchmarks/RESULTS-full.md`) is defined in
  `benchmarks/grid.py` -- every dataset and noise setting of the issue, three seeds, every method, the
  method's default schedule -- but has not been run: on a 2-core CPU machine it needs days. It is meant for a
  GPU cluster or a long unattended run (the bench runner starts its own local Ray; joining a cluster is not wired in yet); it
  resumes from its records after an interruption.
- The `trec` grid (`noiseal-ray bench --grid trec`, written to `benchmarks/RESULTS.md`) holds the issue's
  TREC claims: the full training split at 40% asymmetric and 40% symmetric noise (base, confident learning,
  NoiseAL-kNN) and at 20% symmetric, asymmetric and instance-dependent noise (base and NoiseAL-kNN against
  the clean upper bound, which is trained once per seed on the true labels: noise setting "none"), seeds 0
  and 1, plus NoiseAL-kNN's final labels refit with base's schedule; about 9 hours on 2 cores ({trec_cells} cells of
  10-20 minutes, one at a time). The `smoke` grid (`benchmarks/RESULTS-smoke.md`) checks the plumbing in minutes.
  The `real` grid (`benchmarks/RESULTS-real.md`) runs the same methods and budget on Hausa news headlines
  whose noisy labels came from keyword rules (real, not injected, noise; gold labels known). The `breadth`
  grid (`benchmarks/RESULTS-breadth.md`) does the same on NoisyAG-News (real human noise) and SST-2 (40%
  asymmetric noise), on seeded subsamples with one seed: a first look beyond TREC, not a verdict.
- The `smoke` grid is a plumbing check plus a first look, not a verdict: one seed, a 1,000-row subsample, and
  few optimisation steps, so absolute accuracies are far below the full-data numbers in the design notes.
- Wall times were measured on a shared machine while other jobs ran (see the load averages above); they are
  comparable within a run only roughly, and across machines not at all. The speed measurements run one after
  another, so when the machine's load changes between them their ratios (the DDP speed-up, growth with corpus
  size) measure the load, not the code: rerun them on an idle machine before quoting them.
- A cell or speed measurement that failed (for example a worker killed by Ray's memory monitor while other
  jobs filled the machine) is listed as such; rerunning the command runs it again, reusing finished pieces.
- Records are reused when their cell specification is unchanged; `--fresh` reruns everything. Cells can run
  in parallel processes sharing `--out` (`python -m benchmarks.run --cells KEY[,KEY]`).
"""
METHOD_ORDER = ("clean", "base", "cleanlab", "noiseal-none", "noiseal-knn", "noiseal-knn-refit", "noiseal-llm")


def read_record(path: Path) -> dict:
    """A record file's content; an unreadable one (a write cut short, e.g. by a full disk, before
    records were written atomically) reads as missing, so its cell or measurement runs again."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        print(f"{path}: unreadable record, treated as missing", flush=True)
        return {}
    return rec if isinstance(rec, dict) else {}


def load_records(out: Path) -> list[dict]:
    recs = []
    for sub in ("records", "speed"):
        for p in sorted((Path(out) / sub).glob("*.json")):
            if rec := read_record(p):
                recs.append(rec)
    # Finished sizes of a speed benchmark whose other sizes did not finish (no full record yet).
    for p in sorted((Path(out) / "speed" / "parts").glob("*.json")):
        if rec := read_record(p):
            recs.append({"kind": "speed_part", "name": p.name.split("-", 1)[0], "file": p.name, **rec})
    return recs


def get(rec: dict, path: str) -> float | None:
    """A numeric field by dotted path; derived fields acc_best / acc_last from the per-round list."""
    if path in ("acc_best", "acc_last"):
        accs = rec.get("test_accuracy_rounds") or []
        if not accs:
            return None
        return float(max(accs) if path == "acc_best" else accs[-1])
    v: Any = rec
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None, len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return m, sd, len(vals)


def fmt(mean: float | None, sd: float | None, *, scale: float = 1.0, decimals: int = 3) -> str:
    if mean is None:
        return "-"
    s = f"{mean * scale:.{decimals}f}"
    if sd is not None:
        s += f" ± {sd * scale:.{decimals}f}"
    return s


def _method_rank(m: str) -> int:
    return METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER)


def aggregate(records: Iterable[dict]) -> list[dict]:
    """One row per (dataset, setting, method) over seeds of successful quality records."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("kind") != "quality" or r.get("status") != "ok":
            continue
        groups.setdefault((r["dataset"], r["setting"], r["method"]), []).append(r)
    rows = []
    for (dataset, setting, method), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _method_rank(kv[0][2]))):
        row = {"dataset": dataset, "setting": setting, "method": method,
               "seeds": sorted(r["seed"] for r in recs), "n": len(recs)}
        for _, path, _, _ in QUALITY_COLUMNS:
            m, sd, n = mean_sd([get(r, path) for r in recs])
            row[path] = {"mean": m, "sd": sd, "n": n}
        # Per-round test accuracy (mean over seeds), for the learning-curve table.
        rounds = [r.get("test_accuracy_rounds") or [] for r in recs]
        width = max((len(x) for x in rounds), default=0)
        row["acc_rounds"] = [mean_sd([x[i] for x in rounds if len(x) > i])[0] for i in range(width)]
        row["realised_noise"] = mean_sd([r.get("realised_noise") for r in recs])[0]
        row["train_rows"] = mean_sd([r.get("train_rows") for r in recs])[0]
        row["train_rows_used"] = mean_sd([r.get("train_rows_used") for r in recs])[0]
        row["load_avg_after"] = mean_sd([r.get("load_avg_after") for r in recs])[0]
        stages: dict[str, list[float]] = {}
        for r in recs:
            for k, v in (r.get("stage_seconds") or {}).items():
                stages.setdefault(k, []).append(float(v))
        row["stage_seconds"] = {k: sum(v) / len(v) for k, v in sorted(stages.items())}
        rows.append(row)
    return rows


BASELINES = ("clean", "base", "cleanlab")
CLEAN_GAP_POINTS = 3.0  # the bar: NoiseAL within 3 points of the clean upper bound at 20% noise


def margins(records: Iterable[dict]) -> list[dict]:
    """NoiseAL's advantage over each baseline, paired by seed: for every (dataset, setting), every
    ``noiseal-*`` method and every baseline in ``BASELINES`` with successful records for the same
    seeds, the per-seed differences NoiseAL - baseline of last and best test accuracy (fractions),
    their mean and sample s.d., how many seeds NoiseAL is ahead in (last), and both detection F1
    means. Rows whose methods share no seed are omitted."""
    by: dict[tuple, dict[int, dict]] = {}
    for r in records:
        if r.get("kind") == "quality" and r.get("status") == "ok":
            by.setdefault((r["dataset"], r["setting"], r["method"]), {})[r["seed"]] = r
    out = []
    for (dataset, setting, method), ours in sorted(by.items()):
        if not method.startswith("noiseal"):
            continue
        for versus in BASELINES:
            theirs = by.get((dataset, setting, versus), {})
            if versus == "clean" and not theirs:
                # The clean upper bound ignores the injected noise, so a grid trains it once per dataset
                # and seed ("none") -- on the same rows and with the same budget, which _same_run checks.
                theirs = {s: r for s, r in by.get((dataset, "none", "clean"), {}).items()
                          if s in ours and _same_run(ours[s], r)}
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            def diffs(path: str) -> dict[int, float]:
                pairs = {s: (get(ours[s], path), get(theirs[s], path)) for s in seeds}
                return {s: a - b for s, (a, b) in pairs.items() if a is not None and b is not None}

            by_seed = diffs("acc_last")
            d_last, d_best = list(by_seed.values()), list(diffs("acc_best").values())
            out.append({"dataset": dataset, "setting": setting, "method": method, "versus": versus,
                        "seeds": seeds, "d_last": mean_sd(d_last)[:2], "d_best": mean_sd(d_best)[:2],
                        "ahead_last": sum(d > 0 for d in d_last), "paired_last": len(d_last),
                        "d_last_by_seed": by_seed,
                        "f1": mean_sd([get(ours[s], "detection.f1") for s in seeds])[0],
                        "f1_changed": mean_sd([get(ours[s], "correction.f1") for s in seeds])[0],
                        "f1_versus": mean_sd([get(theirs[s], "detection.f1") for s in seeds])[0]})
    return out


def _same_run(a: dict, b: dict) -> bool:
    """Whether two records trained on the same rows with the same budget (noise and method aside)."""
    def base(r: dict) -> dict:
        spec = dict(r.get("spec") or {})
        for k in ("noise", "rate", "method"):
            spec.pop(k, None)
        return spec
    return base(a) == base(b) and a.get("train_rows") == b.get("train_rows")


def _rate_percent(setting: str) -> int | None:
    digits = "".join(ch for ch in setting if ch.isdigit())
    return int(digits) if digits else None


def _signed(x: float) -> str:
    return f"{x:+.1f}"


def clear_margin(m: dict) -> bool:
    """Whether a margins row (see ``margins``) shows NoiseAL ahead by a clear margin at the last round:
    ahead in every paired seed, at least two seeds, and the mean difference more than one seed s.d.
    above zero. One seed has no spread, so it cannot show a clear margin."""
    mean, sd = m["d_last"]
    return (m["paired_last"] >= 2 and m["ahead_last"] == m["paired_last"] and mean is not None
            and sd is not None and mean - sd > 0)


def against_baselines(rows: Sequence[dict]) -> list[str]:
    """The issue's 40% claim, checked wherever a setting has NoiseAL, base and confident learning on
    shared seeds: does NoiseAL beat both by a clear margin (``clear_margin``), and does its detection F1
    beat confident learning's? Where the clean upper bound ran on the same seeds, also how far clean is
    above confident learning: no method can beat cleanlab by more than that. One Markdown bullet per
    (dataset, setting, NoiseAL method); facts computed from ``margins`` rows only."""
    by = {(m["dataset"], m["setting"], m["method"], m["versus"]): m for m in rows}
    out = []
    for (dataset, setting, method, versus), cl in sorted(by.items()):
        base = by.get((dataset, setting, method, "base"))
        if versus != "cleanlab" or base is None or cl["d_last"][0] is None or base["d_last"][0] is None:
            continue
        parts = []
        for name, m in (("base", base), ("cleanlab", cl)):
            per_seed = "; ".join(f"seed {s}: {_signed(100.0 * d)}" for s, d in sorted(m["d_last_by_seed"].items()))
            verdict = "**clear margin**" if clear_margin(m) else "**no clear margin**"
            parts.append(f"vs {name} {fmt(*m['d_last'], scale=100.0, decimals=1)} points ({per_seed}), ahead in "
                         f"{m['ahead_last']} of {m['paired_last']} seeds: {verdict}")
        line = f"- {dataset} {setting}, {method}: " + "; ".join(parts) + "."
        if cl["f1_versus"] is not None and (cl["f1"] is not None or cl["f1_changed"] is not None):
            beats = [name for name, f in (("flagged (P+H)", cl["f1"]), ("changed", cl["f1_changed"]))
                     if f is not None and f > cl["f1_versus"]]
            line += (f" Detection F1: NoiseAL flagged {fmt(cl['f1'], None)}, changed {fmt(cl['f1_changed'], None)}; "
                     f"cleanlab {fmt(cl['f1_versus'], None)}: "
                     + (f"NoiseAL's {' and '.join(beats)} F1 {'beat' if len(beats) > 1 else 'beats'} it." if beats
                        else "NoiseAL's does not beat it."))
        clean = by.get((dataset, setting, method, "clean"))
        if clean is not None:
            # (NoiseAL - cleanlab) - (NoiseAL - clean) = clean - cleanlab, on each seed both pairs share.
            room = {s: cl["d_last_by_seed"][s] - clean["d_last_by_seed"][s]
                    for s in cl["d_last_by_seed"] if s in clean["d_last_by_seed"]}
            if room:
                mean, sd, _ = mean_sd(list(room.values()))
                per_seed = "; ".join(f"seed {s}: {100.0 * d:.1f}" for s, d in sorted(room.items()))
                line += (f" Headroom: the clean upper bound is {fmt(mean, sd, scale=100.0, decimals=1)} points above "
                         f"cleanlab here ({per_seed}): all the room a denoiser has over cleanlab at this budget.")
        out.append(line)
    return out


def training_facts(records: Iterable[dict], *, dataset: str, setting: str, method: str) -> str | None:
    """What the epochs after the warm-up fit did to test accuracy, for ``method`` at ``setting`` and
    for base (same setting) and clean (its "none" runs) on the same seeds: the mean change, in points,
    from the first fit (after the warm-up epochs) to the last round. None without two fits to compare."""
    ok = [r for r in records if r.get("kind") == "quality" and r.get("status") == "ok" and r.get("dataset") == dataset
          and len(r.get("test_accuracy_rounds") or []) >= 2]
    ours = {r["seed"]: r for r in ok if r["setting"] == setting and r["method"] == method}
    if not ours:
        return None

    def gain(rs: list[dict]) -> str:
        mean, sd, n = mean_sd([r["test_accuracy_rounds"][-1] - r["test_accuracy_rounds"][0] for r in rs])
        return f"{_signed(100.0 * mean)}" + (f" ± {100.0 * sd:.1f}" if sd is not None else "")

    parts = [f"{method} {gain(list(ours.values()))}"]
    for name, at in (("base", setting), ("clean", "none")):
        theirs = [r for r in ok if r["setting"] == at and r["method"] == name and r["seed"] in ours]
        if theirs:
            fewer = len(theirs) < len(ours)
            parts.append(f"{name} {gain(theirs)}"
                         + (f" (seed {','.join(str(r['seed']) for r in sorted(theirs, key=lambda r: r['seed']))} only)" if fewer else ""))
    seeds = sorted(ours)
    line = (f"What training did (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}): test accuracy from the "
            f"warm-up fit to the last round, in points: {', '.join(parts)}.")
    label_acc = mean_sd([r.get("refit_label_accuracy") for r in ours.values()])[0]
    given_acc = mean_sd([1.0 - r["realised_noise"] for r in ours.values() if r.get("realised_noise") is not None])[0]
    if label_acc is not None:
        line += (f" It trained on labels {100.0 * label_acc:.1f}% right"
                 + (f" (the given labels, which base trains on: {100.0 * given_acc:.1f}%)." if given_acc is not None else "."))
    return line


def test_point_note(records: Iterable[dict]) -> str:
    """What one test-accuracy point is in test rows, per dataset, from the records' test sizes."""
    sizes: dict[str, set[int]] = {}
    for r in records:
        if r.get("kind") == "quality" and r.get("status") == "ok" and r.get("test_rows"):
            sizes.setdefault(r["dataset"], set()).add(int(r["test_rows"]))
    parts = [f"{n / 100:g} of {n} test rows ({d})" for d, ns in sorted(sizes.items()) for n in sorted(ns)]
    return f"one test-accuracy point is {', '.join(parts)}" if parts else ""


def margins_markdown(records: Iterable[dict]) -> str:
    records = list(records)
    rows = margins(records)
    if not rows:
        return "No NoiseAL cell shares a seed with a baseline cell yet."
    out = ["| dataset | noise | NoiseAL | vs | seeds | Δ test acc last (points) | Δ test acc best (points) | "
           "NoiseAL ahead at last (seeds) | detect F1: NoiseAL flagged / NoiseAL changed / vs |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in rows:
        f1 = (f"{fmt(m['f1'], None)} / {fmt(m['f1_changed'], None)} / {fmt(m['f1_versus'], None)}"
              if m["f1_versus"] is not None else "-")
        out.append("| " + " | ".join([
            m["dataset"], m["setting"], m["method"], m["versus"], ",".join(map(str, m["seeds"])),
            fmt(*m["d_last"], scale=100.0, decimals=1), fmt(*m["d_best"], scale=100.0, decimals=1),
            f"{m['ahead_last']} of {m['paired_last']}", f1]) + " |")
    verdicts = against_baselines(rows)
    if verdicts:
        out += ["", "Against base and confident learning at the last round (a **clear margin** = ahead in every "
                "seed, at least two seeds, and the mean Δ more than one seed s.d. above zero):", ""] + verdicts
    at20 = [m for m in rows if m["versus"] == "clean" and _rate_percent(m["setting"]) == 20 and m["d_last"][0] is not None]
    out.append("")
    if not at20:
        out.append(f"Within {CLEAN_GAP_POINTS:g} points of the clean upper bound at 20% noise: **not measured** "
                   "(these records hold no 20% setting with both a clean and a NoiseAL cell).")
    else:
        def seed_ok(m) -> list[bool]:
            return [-d * 100.0 <= CLEAN_GAP_POINTS for d in m["d_last_by_seed"].values()]

        within = {(m["dataset"], m["setting"], m["method"]): all(seed_ok(m)) for m in at20}
        by_pair = {(m["dataset"], m["setting"], m["method"], m["versus"]): m for m in rows}
        for m in at20:
            gap = -m["d_last"][0] * 100.0
            ok = seed_ok(m)
            if gap > CLEAN_GAP_POINTS:
                verdict = f"**NOT within** {CLEAN_GAP_POINTS:g} points"
            elif all(ok):
                verdict = f"**within** {CLEAN_GAP_POINTS:g} points"
            else:
                verdict = (f"**within** {CLEAN_GAP_POINTS:g} points on the mean, **not in every seed** "
                           f"({sum(ok)} of {len(ok)})")
            spread = f" ± {m['d_last'][1] * 100.0:.1f}" if m["d_last"][1] is not None else ""
            per_seed = "; ".join(f"seed {s}: {-d * 100.0:.1f}" for s, d in sorted(m["d_last_by_seed"].items()))
            line = (f"- {m['dataset']} {m['setting']}, {m['method']}: {gap:.1f}{spread} points below clean at the "
                    f"last round ({per_seed}), {verdict}.")
            vs_base = by_pair.get((m["dataset"], m["setting"], m["method"], "base"))
            if vs_base is not None:
                # (NoiseAL - base) - (NoiseAL - clean) = clean - base: base's gap, on each seed both pairs share.
                base_gap = {s: vs_base["d_last_by_seed"][s] - d for s, d in m["d_last_by_seed"].items()
                            if s in vs_base["d_last_by_seed"]}
                if base_gap:
                    bm, bsd, _ = mean_sd([g * 100.0 for g in base_gap.values()])
                    line += (f" Base, plain fine-tuning on the same noisy labels, is {fmt(bm, bsd, decimals=1)} points below "
                             "clean (" + "; ".join(f"seed {s}: {g * 100.0:.1f}" for s, g in sorted(base_gap.items())) + ").")
            out.append(line)
            if gap > CLEAN_GAP_POINTS:
                facts = label_facts(records, dataset=m["dataset"], setting=m["setting"], method=m["method"],
                                    compare=[k[1] for k, ok in within.items() if ok and k[0] == m["dataset"] and k[2] == m["method"]])
                if facts:
                    out.append(f"  {facts}")
                trained = training_facts(records, dataset=m["dataset"], setting=m["setting"], method=m["method"])
                if trained:
                    out.append(f"  {trained}")
    return "\n".join(out)


def _anatomy_means(records: Iterable[dict], *, dataset: str, settings: Sequence[str], method: str) -> dict | None:
    """Mean over runs of the anatomy shares of NoiseAL records of these settings (None: no record)."""
    runs = [r for r in records if r.get("kind") == "quality" and r.get("status") == "ok" and r.get("anatomy")
            and r.get("dataset") == dataset and r.get("setting") in settings and r.get("method") == method]
    if not runs:
        return None
    an = [r["anatomy"] for r in runs]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    return {"in_r": mean([a["wrong_in"].get("R") for a in an]), "p_right": mean([a.get("p_right") for a in an]),
            "keeps": mean([a.get("annotator_keeps") for a in an]), "fixes": mean([a.get("annotator_fixes") for a in an]),
            "final": mean([get(r, "recovery.final_accuracy") for r in runs]),
            "given": mean([get(r, "recovery.given_accuracy") for r in runs]), "n": len(an)}


def label_facts(records: Iterable[dict], *, dataset: str, setting: str, method: str,
                     compare: Sequence[str]) -> str | None:
    """What the runs' labels say about a setting that falls short of the clean bar (anatomy, see
    ``anatomy_markdown``, and the final labels' accuracy), set against the settings of the same
    dataset that meet the bar. Facts only: when the labels are as good as where the bar is met,
    the shortfall lies in training, which the reader can then see."""
    records = list(records)
    a = _anatomy_means(records, dataset=dataset, settings=[setting], method=method)
    if a is None or a["in_r"] is None:
        return None
    b = _anatomy_means(records, dataset=dataset, settings=compare, method=method) if compare else None

    def pct(x):
        return "-" if x is None else f"{100.0 * x:.0f}%"

    def vs(key):
        return f" (against {pct(b[key])} at {', '.join(sorted(compare))})" if b and b[key] is not None else ""

    return (f"What the labels say (mean of {a['n']} run(s); table \"Where the wrong labels end\"): "
            f"{pct(a['in_r'])} of the wrong labels end in R, kept as clean and used as demonstrations{vs('in_r')}; "
            f"{pct(a['p_right'])} of P was right to begin with{vs('p_right')}, and the annotator kept "
            f"{pct(a['keeps'])} of those{vs('keeps')}; it fixed {pct(a['fixes'])} of P's wrong labels{vs('fixes')}. "
            f"The final labels are {pct(a['final'])} right{vs('final')} (given labels: {pct(a['given'])}).")


def quality_markdown(rows: Sequence[dict]) -> str:
    head = ["dataset", "noise", "method", "seeds"] + [c[0] for c in QUALITY_COLUMNS]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        cells = [row["dataset"], row["setting"], row["method"], ",".join(str(s) for s in row["seeds"])]
        for _, path, scale, dec in QUALITY_COLUMNS:
            a = row[path]
            cells.append(fmt(a["mean"], a["sd"], scale=scale, decimals=dec))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def rounds_markdown(rows: Sequence[dict]) -> str:
    width = max((len(r["acc_rounds"]) for r in rows), default=0)
    head = ["dataset", "noise", "method"] + [("after warm-up" if i == 0 else f"round {i}") for i in range(width)]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        accs = [fmt(a, None, scale=100.0, decimals=1) for a in row["acc_rounds"]]
        accs += ["-"] * (width - len(accs))
        out.append("| " + " | ".join([row["dataset"], row["setting"], row["method"], *accs]) + " |")
    return "\n".join(out)


def noiseal_rounds_markdown(records: Sequence[dict]) -> str:
    """Per-round partition and detection of every NoiseAL record (single runs, not averaged)."""
    out = ["| run | round | R | P | H | detect P | detect R | P precision | fixed | broken | annotator acc | test acc (%) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        if r.get("kind") != "quality" or r.get("status") != "ok" or not r.get("per_round"):
            continue
        for e in r["per_round"]:
            sizes = e.get("sizes") or {}
            det = e.get("detection") or {}
            rec = e.get("recovery") or {}
            vals = [sizes.get("R"), sizes.get("P"), sizes.get("H")]
            out.append("| " + " | ".join([
                r["key"], str(e["round"]), *("-" if v is None else str(int(v)) for v in vals),
                fmt(det.get("precision"), None), fmt(det.get("recall"), None), fmt(det.get("p_precision"), None),
                fmt(rec.get("fixed"), None), fmt(rec.get("broken"), None), fmt(rec.get("annotator_accuracy"), None),
                fmt(e.get("test_accuracy"), None, scale=100.0, decimals=1)]) + " |")
    return "\n".join(out)


def _runs_with(records: Sequence[dict], key: str) -> list[tuple[dict, dict]]:
    """(record, record[key]) of the successful quality records that hold ``key``, by setting then key."""
    return [(r, r[key]) for r in sorted(records, key=lambda r: (r.get("setting", ""), r.get("key", "")))
            if r.get("kind") == "quality" and r.get("status") == "ok" and r.get(key)]


def anatomy_markdown(records: Sequence[dict]) -> str:
    """Where each NoiseAL run's wrong labels end (final partition) and what its annotator did in P
    (record ``anatomy``, from ``benchmarks.methods.wrong_label_anatomy``; single runs)."""
    out = ["| run | wrong labels | in R | in P | in H | R wrong (demo pool) | P right | annotator fixes P's wrong "
           "| annotator keeps P's right | annotator = strong model |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r, a in _runs_with(records, "anatomy"):
        w = a.get("wrong_in") or {}
        out.append("| " + " | ".join([r["key"], str(a.get("wrong")), *(fmt(w.get(s), None) for s in ("R", "P", "H")),
                                      *(fmt(a.get(k), None) for k in ("r_wrong", "p_right", "annotator_fixes",
                                                                       "annotator_keeps", "annotator_model_agree"))]) + " |")
    return "\n".join(out)


def separability_markdown(records: Sequence[dict]) -> str:
    """Per NoiseAL run (record ``separability``, from ``benchmarks.methods.broken_vs_fixed``): in P, the
    right labels the annotator changed against the wrong ones it fixed, by the numbers a run has to
    tell them apart -- the strong and the weak model's probability of the given label and the
    annotator's vote share (medians)."""
    out = ["| run | right labels changed (n) | p(given): strong / weak model | vote share | wrong labels fixed (n) "
           "| p(given): strong / weak model | vote share |",
           "| --- | --- | --- | --- | --- | --- | --- |"]

    def both(g: dict) -> str:
        return f"{fmt(g.get('p_given'), None)} / {fmt(g.get('p_given_weak'), None)}"

    for r, sep in _runs_with(records, "separability"):
        b, f = sep.get("broken", {}), sep.get("fixed", {})
        out.append("| " + " | ".join([r["key"], str(b.get("n", "-")), both(b), fmt(b.get("vote_share"), None, decimals=2),
                                      str(f.get("n", "-")), both(f), fmt(f.get("vote_share"), None, decimals=2)]) + " |")
    return "\n".join(out)


def stages_markdown(rows: Sequence[dict]) -> str:
    names = sorted({k for r in rows for k in r["stage_seconds"]})
    head = ["dataset", "noise", "method", "train rows used"] + [f"{n} (s)" for n in names] + ["wall (s)", "1-min load avg at end"]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        cells = [row["dataset"], row["setting"], row["method"], fmt(row["train_rows_used"], None, decimals=0)]
        cells += [fmt(row["stage_seconds"].get(n), None, decimals=0) for n in names]
        cells.append(fmt(row["wall_seconds"]["mean"], None, decimals=0))
        cells.append(fmt(row["load_avg_after"], None, decimals=0))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def quality_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = [c[1] for c in QUALITY_COLUMNS]
    w.writerow(["dataset", "setting", "method", "seeds", "n"] + [f"{c}_{s}" for c in cols for s in ("mean", "sd")])
    for row in rows:
        vals = []
        for c in cols:
            vals += ["" if row[c]["mean"] is None else row[c]["mean"], "" if row[c]["sd"] is None else row[c]["sd"]]
        w.writerow([row["dataset"], row["setting"], row["method"], " ".join(map(str, row["seeds"])), row["n"], *vals])
    return buf.getvalue()


def speed_markdown(records: Sequence[dict], *, spec=None) -> str:
    """The speed section from the speed records; ``spec`` (the grid's SpeedSpec) says which
    measurements the grid leaves out (``benchmarks.speed.included``)."""
    from benchmarks.speed import included

    def left_out(name: str) -> bool:
        return spec is not None and not included(spec, name)

    by = {r["name"]: r for r in records if r.get("kind") == "speed" and not left_out(r["name"])}
    parts = []
    s = by.get("scoring")
    if s and s.get("status") == "ok":
        parts.append(
            "**(1) Scoring throughput**, " + s["what"] + "\n\n"
            "| path | rows | wall (s) | rows/s |\n| --- | --- | --- | --- |\n"
            + "".join(f"| {m['label']} | {m['rows']} | {m['seconds']:.1f} | {m['rows'] / m['seconds']:.1f} |\n"
                      for m in s["measurements"])
            + f"\nRay Data stage / plain loop throughput ratio: **{s['ratio']:.2f}** (the Ray Data figure "
              f"includes actor start-up, model loading and parquet I/O; the plain loop's excludes its "
              f"{s['plain_load_seconds']:.1f} s model load).\n")
    parts.append("**(2) Relabeling throughput, batched vs sequential**: measured separately by "
                 "`benchmarks/llm_relabel.py`; see [results/llm_relabel.md](results/llm_relabel.md) (not rerun here).\n")
    g = by.get("round_scaling")
    if left_out("round_scaling"):
        parts.append("**(3) Wall time of one NoiseAL round as the corpus grows**: not in this grid (see the `trec` "
                     "grid's RESULTS.md).\n")
    elif not (g and g.get("status") == "ok"):
        parts_rs = sorted((r for r in records if r.get("kind") == "speed_part" and r["name"] == "round_scaling"),
                          key=lambda r: r["rows"])
        if parts_rs:
            g = {"status": "ok", "measurements": parts_rs,
                 "what": ("PARTIAL: only the sizes below finished (the run of the larger sizes was stopped or "
                          "failed). Tiny randomly initialised encoder (2 layers, hidden 128, MiniLM tokenizer) + "
                          "BiLSTM, 2 workers, kNN annotator; round 1 of a 1-round run, 0 warm-up epochs.")}
    if g and g.get("status") == "ok":
        parts.append(
            "**(3) Wall time of one NoiseAL round as the corpus grows**, " + g["what"] + "\n\n"
            "| rows | score (s) | thresholds (s) | partition + annotate (s) | train (s) | round total (s) | rows/s |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n"
            + "".join(f"| {m['rows']} | {m['score']:.1f} | {m['thresholds']:.1f} | {m['annotate']:.1f} | "
                      f"{m['train']:.1f} | {m['total']:.1f} | {m['rows'] / m['total']:.0f} |\n" for m in g["measurements"])
            + "".join(f"\nNot measured: {f['rows']} rows (`{f['error'][:160]}`).\n" for f in g.get("failed_sizes", [])))
    d = by.get("ddp")
    if left_out("ddp"):
        parts.append("**(4) One training epoch, 1 worker vs 2 DDP workers**: not in this grid (see the `trec` "
                     "grid's RESULTS.md).\n")
    elif not (d and d.get("status") == "ok"):
        parts_d = sorted((r for r in records if r.get("kind") == "speed_part" and r["name"] == "ddp"),
                         key=lambda r: r["workers"])
        if parts_d:
            d = {"status": "ok", "measurements": parts_d, "what": "PARTIAL: only the settings below finished.",
                 "speedup": (parts_d[0]["epoch_seconds"] / parts_d[1]["epoch_seconds"]) if len(parts_d) == 2 else float("nan")}
    if d and d.get("status") == "ok":
        parts.append(
            "**(4) One training epoch, 1 worker vs 2 DDP workers**, " + d["what"] + "\n\n"
            "| workers | threads per worker | fit wall incl. start-up (s) | epoch (s, rank 0) | rows/s (epoch) |\n"
            "| --- | --- | --- | --- | --- |\n"
            + "".join(f"| {m['workers']} | {m['threads']} | {m['fit_seconds']:.1f} | {m['epoch_seconds']:.1f} | "
                      f"{m['rows'] / m['epoch_seconds']:.1f} |\n" for m in d["measurements"])
            + f"\nSpeed-up of 2 workers over 1 (epoch time): **{d['speedup']:.2f}x**.\n")
    failed = [r for r in records if r.get("kind") == "speed" and r.get("status") != "ok" and r["name"] in by
              and not any(p.get("kind") == "speed_part" and p["name"] == r["name"] for p in records)]
    for r in failed:
        parts.append(f"Speed benchmark `{r['name']}` failed: `{r.get('error')}`.\n")
    return "\n".join(parts)


def write_all(*, records: list[dict], grid, results: Path, csv_json_dir: Path, command, run_info: dict,
              out_rel: str) -> None:
    if isinstance(command, str):
        command = {"regenerate": command, "rendered_by": command}
    # A record made for another specification of its cell (the grid's training budget or schedule
    # changed since) is not this grid's result: listed, never tabled.
    current = {c.key: c.spec_hash() for c in grid.cells}
    stale = [r for r in records if r.get("kind") == "quality" and r.get("key") in current
             and "spec_hash" in r and current[r["key"]] != r["spec_hash"]]
    records = [r for r in records if not any(r is x for x in stale)]
    rows = aggregate(records)
    quality = [r for r in records if r.get("kind") == "quality"]
    failed = [r for r in quality if r.get("status") != "ok"]
    expected = {c.key for c in grid.cells}
    have = {r["key"] for r in quality if r.get("status") == "ok"}
    missing = sorted(expected - have)
    env = run_info.get("env", {})
    lines = [f"# noiseal-ray benchmarks: `{grid.name}` grid", "",
             "Generated by the command below from the records in "
             f"`{out_rel}/records/` and `{out_rel}/speed/`; every number is computed by `benchmarks/report.py` "
             "from those records. Regenerate (reuses records whose specification is unchanged; add `--fresh` "
             "to rerun everything):", "", f"    {command['regenerate']}", "",
             f"(`.venv/bin/python -m benchmarks.run` takes the same options.) This file was rendered by `{command['rendered_by']}`.", "",
             f"Grid: {grid.description}.", ""]
    if env:
        lines += ["## Machine and versions", "",
                  "| item | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in env.items()]
        for part, inf in sorted(run_info.get("parts", {}).items()):
            la0 = ", ".join(f"{x:.1f}" for x in inf.get("load_avg_start", []))
            la1 = ", ".join(f"{x:.1f}" for x in inf.get("load_avg_end", []))
            lines.append(f"| last `{part}` invocation: wall, load average (1/5/15 min) at start / end | {inf['seconds'] / 60:.1f} min; "
                         f"{la0} / {la1} |")
        lines.append("")
    lines += ["## Denoising quality", "",
              "Test accuracy of the strong model on the dataset's clean test split after each fit; "
              "\"best\" = best of the warm-up fit and every round, \"last\" = after the last round. Every method "
              "trains the same number of epochs on the same encoder (cleanlab additionally trains its K fold "
              "models; noiseal-knn-refit is base's schedule, from a fresh encoder, on the final labels of the same "
              "seed's noiseal-knn run, so it costs that run and a base run). Detection: a sample counts as flagged when it is in P or H (NoiseAL) or when "
              "cleanlab marks it as a label issue; \"changed\" P/R/F1 scores NoiseAL's label changes (final label != "
              "given label) as the detector instead: P+H also counts the hard samples H, which NoiseAL does not call "
              "wrong, while a change is what the user gets (cleanlab changes no label: it drops its flagged set); \"fixed\" = fraction of wrong given labels whose final "
              "label is right, \"broken\" = fraction of right labels changed to a wrong one (NoiseAL only). "
              "Mean ± sample s.d. over seeds where more than one seed ran.", "",
              quality_markdown(rows), "",
              "### NoiseAL against each baseline, paired by seed", "",
              "Δ = NoiseAL minus the baseline on the same seed (same noisy labels, same encoder, same epochs), "
              "in test-accuracy points, mean ± sample s.d. over the seeds both ran"
              + (f"; {test_point_note(records)}." if test_point_note(records) else "."), "",
              margins_markdown(records), "",
              "### Test accuracy per fit (mean over seeds)", "", rounds_markdown(rows), "",
              "### NoiseAL per round (each run)", "", noiseal_rounds_markdown(quality), "",
              "### Where the wrong labels end (NoiseAL, final partition, each run)", "",
              "Shares computed from each run's labels.parquet: of the wrong given labels, how many end in R "
              "(kept as clean, and used as demonstrations), P (relabelled by the annotator) or H (final label by "
              "the hard-sample policy); how much of R is wrong; how much of P was right to begin with; and what "
              "the annotator answered in P: the true label for a wrong one, the given label for a right one, and "
              "how often its answer is the strong model's own prediction (the kNN annotator votes in the strong "
              "model's embedding space, so it is not an independent opinion).", "",
              anatomy_markdown(quality), "",
              "### The right labels NoiseAL changes look like the wrong ones it fixes (P, each run)", "",
              "Of P's rows, the right given labels the annotator changed (each one a label broken) and the wrong "
              "ones it set right, by the numbers the run has to tell them apart: the strong and the weak model's "
              "probability of the given label (`p_strong`, `p_weak`: what the partition uses) and the annotator's "
              "confidence (the kNN vote share of its answer; exp of `llm_logprob`). Medians; from each run's "
              "labels.parquet. Where both groups sit at the same values, no threshold on them can keep the right "
              "labels without giving up the fixes.", "",
              separability_markdown(quality), "",
              "### Wall time per stage (mean over seeds)", "", stages_markdown(rows), ""]
    reused = [r for r in quality if r.get("status") == "ok" and r.get("cv_folds_reused")]
    if reused:
        lines += ["Resumed cells: " + "; ".join(
            f"`{r['key']}` reused fold models {r['cv_folds_reused']} of an interrupted run of the same cell, so its "
            "wall time and `cv_train` exclude their training" for r in reused) + ".", ""]
    if missing or failed or stale:
        lines += ["### Not in the table", ""]
        lines += [f"- `{r['key']}` failed: `{r.get('error')}`" for r in failed]
        lines += [f"- `{r['key']}`: its record was made for an earlier specification of the cell (spec hash "
                  f"`{r['spec_hash']}`, now `{current[r['key']]}`); rerun the command "
                  "to replace it" for r in stale]
        lines += [f"- `{k}` has no record yet" for k in missing if k not in {r['key'] for r in failed + stale}]
        lines.append("")
    lines += ["## Speed", "", speed_markdown(records, spec=grid.speed) if grid.speed is not None else
              "This grid has no speed part: speed measures the machine and the code, not the data (see the `trec` "
              "grid's RESULTS.md).", ""]
    from benchmarks.grid import trec

    lines += ["## Notes", "", NOTES.format(grid=grid.name, trec_cells=len(trec().cells)), ""]
    extra = run_info.get("notes")
    if extra:
        lines += [extra, ""]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(lines))
    csv_json_dir.mkdir(parents=True, exist_ok=True)
    (csv_json_dir / f"quality-{grid.name}.csv").write_text(quality_csv(rows))
    (csv_json_dir / f"results-{grid.name}.json").write_text(json.dumps(
        {"grid": grid.name, "command": command, "rows": rows, "records": records, "run_info": run_info},
        indent=2, default=float))
