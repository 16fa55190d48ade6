"""Tidy tables from benchmark records: one row per cell (or per cell and round, seed pair, stage).

Every table the report prints is a pivot of one of these frames; every verdict is a boolean
column computed here. Aggregation over seeds: mean and sample standard deviation (ddof=1) with two
or more seeds; with one seed the value alone (``mean_sd``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    import pandas as pd

# (column title, record path, scale, decimals) of the quality table.
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
METHOD_ORDER = ("clean", "base", "cleanlab", "noiseal-none", "noiseal-knn", "noiseal-knn-split", "noiseal-knn-rows",
                "noiseal-knn-split-rows", "noiseal-knn-refit", "noiseal-llm", "noiseal-knn-tp",
                "noiseal-knn-split-rows-tp", "noiseal-knn-tpm")
ABLATED = "noiseal-knn"  # the variants of issue 15's ablation are also paired with the reconstructed method
BASELINES = ("clean", "base", "cleanlab")
CLEAN_GAP_POINTS = 3.0  # the bar: NoiseAL within 3 points of the clean upper bound at 20% noise
KEYS = ["dataset", "setting", "method"]


def ok_quality(records: Iterable[dict]) -> list[dict]:
    """The successful quality records: the only ones any table is made of."""
    return [r for r in records if r.get("kind") == "quality" and r.get("status") == "ok"]


def get(rec: dict, path: str) -> float | None:
    """A numeric field by dotted path; acc_best / acc_last / acc_first from the per-round list."""
    if path in ("acc_best", "acc_last", "acc_first"):
        accs = rec.get("test_accuracy_rounds") or []
        if not accs:
            return None
        return float({"acc_best": max(accs), "acc_last": accs[-1], "acc_first": accs[0]}[path])
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


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample s.d. (None below two values) and count of the values that are numbers."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None, len(vals)
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)), len(vals)


def _rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _sorted(df: pd.DataFrame, *extra: str) -> pd.DataFrame:
    order = df["method"].map(_rank)
    return df.assign(_r=order).sort_values(["dataset", "setting", "_r", *extra], kind="stable").drop(columns="_r")


def cells(records: Iterable[dict]) -> pd.DataFrame:
    """One row per successful cell: its keys, every quality metric and what the epochs did."""
    import pandas as pd

    rows = []
    for r in ok_quality(records):
        row = {k: r[k] for k in KEYS} | {"seed": r["seed"], "key": r["key"]}
        row |= {path: get(r, path) for path in [c[1] for c in QUALITY_COLUMNS] + ["acc_first"]}
        row |= {k: get(r, k) for k in ("realised_noise", "train_rows", "train_rows_used", "load_avg_after",
                                        "refit_label_accuracy", "test_rows", "recovery.final_accuracy",
                                        "recovery.given_accuracy")}
        n_fits = len(r.get("test_accuracy_rounds") or [])
        row["gain"] = row["acc_last"] - row["acc_first"] if n_fits >= 2 else None
        row["given_accuracy"] = None if row["realised_noise"] is None else 1.0 - row["realised_noise"]
        rows.append(row)
    return _sorted(pd.DataFrame(rows, columns=[*KEYS, "seed", "key"] if not rows else None), "seed")


def summary(cells_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, setting, method): seeds, n, and ``<metric>_mean`` / ``<metric>_sd``."""
    import pandas as pd

    rows = []
    for (dataset, setting, method), g in cells_df.groupby(KEYS, sort=False):
        row = {"dataset": dataset, "setting": setting, "method": method,
               "seeds": " ".join(str(s) for s in sorted(g["seed"])), "n": len(g)}
        for path in [c[1] for c in QUALITY_COLUMNS] + ["gain", "train_rows_used", "load_avg_after"]:
            m, sd, _ = mean_sd(list(g[path]))
            row[f"{path}_mean"], row[f"{path}_sd"] = m, sd
        rows.append(row)
    return pd.DataFrame(rows)


def rounds(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (cell, fit): test accuracy after the warm-up fit (fit 0) and after each round."""
    import pandas as pd

    rows = [{k: r[k] for k in KEYS} | {"seed": r["seed"], "fit": i, "acc": float(a)}
            for r in ok_quality(records) for i, a in enumerate(r.get("test_accuracy_rounds") or [])]
    return _sorted(pd.DataFrame(rows, columns=[*KEYS, "seed", "fit", "acc"]), "seed", "fit")


def stages(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (cell, stage): the stage's wall time in seconds."""
    import pandas as pd

    rows = [{k: r[k] for k in KEYS} | {"seed": r["seed"], "stage": s, "seconds": float(v)}
            for r in ok_quality(records) for s, v in (r.get("stage_seconds") or {}).items()]
    return _sorted(pd.DataFrame(rows, columns=[*KEYS, "seed", "stage", "seconds"]), "seed")


def noiseal_rounds(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (NoiseAL run, round): partition sizes, detection, recovery and test accuracy."""
    import pandas as pd

    rows = []
    for r in ok_quality(records):
        for e in r.get("per_round") or []:
            sizes, det, rec = e.get("sizes") or {}, e.get("detection") or {}, e.get("recovery") or {}
            rows.append({"run": r["key"], "round": e["round"], **{s: sizes.get(s) for s in ("R", "P", "H")},
                         "detect P": det.get("precision"), "detect R": det.get("recall"),
                         "P precision": det.get("p_precision"), "fixed": rec.get("fixed"), "broken": rec.get("broken"),
                         "annotator acc": rec.get("annotator_accuracy"), "test acc": e.get("test_accuracy")})
    return pd.DataFrame(rows)


def _by_setting(records: Iterable[dict], key: str) -> list[dict]:
    return sorted((r for r in ok_quality(records) if r.get(key)), key=lambda r: (r.get("setting", ""), r["key"]))


def anatomy(records: Iterable[dict]) -> pd.DataFrame:
    """One row per NoiseAL run with ``anatomy`` (``benchmarks.anatomy.wrong_label_anatomy``)."""
    import pandas as pd

    rows = []
    for r in _by_setting(records, "anatomy"):
        a = r["anatomy"]
        rows.append({k: r[k] for k in KEYS} | {"run": r["key"], "wrong labels": a.get("wrong")}
                    | {f"in {s}": (a.get("wrong_in") or {}).get(s) for s in ("R", "P", "H")}
                    | {k: a.get(k) for k in ("r_wrong", "p_right", "annotator_fixes", "annotator_keeps",
                                             "annotator_model_agree")}
                    | {"final labels right": get(r, "recovery.final_accuracy"),
                       "given labels right": get(r, "recovery.given_accuracy")})
    return pd.DataFrame(rows)


def separability(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (NoiseAL run, group of P): the right labels changed ("broken") and the wrong ones
    fixed, with the medians a run has to tell them apart (``benchmarks.anatomy.broken_vs_fixed``)."""
    import pandas as pd

    rows = [{"run": r["key"], "group": group, **{k: (r["separability"].get(group) or {}).get(k)
                                                  for k in ("n", "p_given", "p_given_weak", "vote_share")}}
            for r in _by_setting(records, "separability") for group in ("broken", "fixed")]
    return pd.DataFrame(rows)


def _same_run(a: dict, b: dict) -> bool:
    """Whether two records trained on the same rows with the same budget (noise and method aside)."""
    def base(r: dict) -> dict:
        return {k: v for k, v in (r.get("spec") or {}).items() if k not in ("noise", "rate", "method")}
    return base(a) == base(b) and a.get("train_rows") == b.get("train_rows")


def _pairs(method: str) -> tuple[str, ...]:
    """The baselines a method is compared with: NoiseAL with all of them (and a variant of NoiseAL-kNN
    with NoiseAL-kNN too), base and cleanlab with clean."""
    if method.startswith(ABLATED + "-") and not method.endswith("-refit"):
        return BASELINES + (ABLATED,)
    if method.startswith("noiseal"):
        return BASELINES
    return ("clean",) if method in ("base", "cleanlab") else ()


def paired(records: Iterable[dict]) -> pd.DataFrame:
    """One row per (dataset, setting, method, versus, seed): the method minus the baseline on the same
    seed, of last and best test accuracy (fractions), and both detection F1s. The clean upper bound,
    trained once per dataset and seed (setting "none"), pairs with every noisy setting of the same rows
    and budget."""
    import pandas as pd

    by: dict[tuple, dict[int, dict]] = {}
    for r in ok_quality(records):
        by.setdefault((r["dataset"], r["setting"], r["method"]), {})[r["seed"]] = r
    rows = []
    for (dataset, setting, method), ours in by.items():
        for versus in _pairs(method):
            theirs = by.get((dataset, setting, versus), {})
            if versus == "clean" and not theirs:
                theirs = {s: r for s, r in by.get((dataset, "none", "clean"), {}).items()
                          if s in ours and _same_run(ours[s], r)}
            for seed in sorted(set(ours) & set(theirs)):
                a, b = ours[seed], theirs[seed]
                rows.append({"dataset": dataset, "setting": setting, "method": method, "versus": versus, "seed": seed,
                             **{f"d_{k}": _diff(get(a, f"acc_{k}"), get(b, f"acc_{k}")) for k in ("last", "best")},
                             "f1": get(a, "detection.f1"), "f1_changed": get(a, "correction.f1"),
                             "f1_versus": get(b, "detection.f1")})
    df = pd.DataFrame(rows, columns=[*KEYS, "versus", "seed", "d_last", "d_best", "f1", "f1_changed", "f1_versus"])
    return _sorted(df.assign(_v=df["versus"].map(_rank)), "_v", "seed").drop(columns="_v")


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _rate_percent(setting: str) -> int | None:
    digits = "".join(ch for ch in setting if ch.isdigit())
    return int(digits) if digits else None


def margins(paired_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, setting, method, versus) over the paired seeds, with the verdicts:

    - ``clear_margin``: ahead at the last round in every paired seed, at least two seeds, and the
      mean difference more than one seed s.d. above zero (one seed has no spread, so never);
    - ``flagged_beats`` / ``changed_beats``: NoiseAL's detection F1 (flagged P+H, or label changes)
      above the baseline's, where the baseline detects (cleanlab);
    - ``within_bar`` / ``within_bar_every_seed``: against clean at 20% noise, at most
      ``CLEAN_GAP_POINTS`` below it on the mean, and on every seed (None elsewhere).
    """
    import pandas as pd

    rows = []
    for (dataset, setting, method, versus), g in paired_df.groupby([*KEYS, "versus"], sort=False):
        last = [d for d in g["d_last"] if d is not None and not math.isnan(d)]
        m_last, sd_last, n = mean_sd(last)
        m_best, sd_best, _ = mean_sd(list(g["d_best"]))
        f1, f1_changed, f1_versus = (mean_sd(list(g[c]))[0] for c in ("f1", "f1_changed", "f1_versus"))
        bar = versus == "clean" and method.startswith("noiseal") and _rate_percent(setting) == 20 and n > 0
        gaps = [-100.0 * d for d in last]
        rows.append({"dataset": dataset, "setting": setting, "method": method, "versus": versus,
                     "seeds": ",".join(str(s) for s in g["seed"]), "d_last_mean": m_last, "d_last_sd": sd_last,
                     "d_best_mean": m_best, "d_best_sd": sd_best, "ahead": sum(d > 0 for d in last), "paired": n,
                     "clear_margin": bool(n >= 2 and all(d > 0 for d in last) and sd_last is not None
                                          and m_last - sd_last > 0),
                     "f1": f1, "f1_changed": f1_changed, "f1_versus": f1_versus,
                     "flagged_beats": None if f1_versus is None or f1 is None else f1 > f1_versus,
                     "changed_beats": None if f1_versus is None or f1_changed is None else f1_changed > f1_versus,
                     "within_bar": -100.0 * m_last <= CLEAN_GAP_POINTS if bar else None,
                     "within_bar_every_seed": all(x <= CLEAN_GAP_POINTS for x in gaps) if bar else None})
    return pd.DataFrame(rows)


def test_point_note(records: Iterable[dict]) -> str:
    """What one test-accuracy point is in test rows, per dataset, from the records' test sizes."""
    sizes = sorted({(r["dataset"], int(r["test_rows"])) for r in ok_quality(records) if r.get("test_rows")})
    parts = [f"{n / 100:g} of {n} test rows ({d})" for d, n in sizes]
    return f"one test-accuracy point is {', '.join(parts)}" if parts else ""
