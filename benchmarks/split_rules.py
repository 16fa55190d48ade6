"""Compare R/P/H split rules offline on saved per-row scores.

    python -m benchmarks.split_rules RUN_DIR [RUN_DIR ...] [--rules a,b] [--summary] [--prob 0.5]

Each RUN_DIR holds a ``labels.parquet`` folder (``noiseal-ray run`` output) with the columns
``given_label, clean_label, p_strong, p_weak, pred_label``: a warm-up-only run (``--rounds 0``) gives the
warm-up's scores, the ones the first round's split is made from. Every rule of
``noiseal_ray.split.RULES`` is computed from per-class aggregates only (loss histograms and class
means, as a distributed pipeline would), then scored against ``clean_label``. Prints one markdown
table, one row per (run, rule), all numbers in percent:

| column | meaning |
| --- | --- |
| noise | wrong share of the corpus (given != clean) |
| est_noise | the rule's estimated noise rate (GMM weight of the high-loss component, class-weighted) |
| clean_in_R | share of the clean rows that are in R |
| R_wrong | wrong share of R |
| R, P, H | share of the corpus in each subset |
| P_prec | wrong share of P (precision of "relabel") |
| wrong_to_P | share of the wrong rows that land in P |
| wrong_in_R | share of the wrong rows left in R |
| H_clean | clean share of H |

``--summary`` adds a table of means over seeds (runs whose names differ only in ``-sN``).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from noiseal_ray.split import RULES, RuleInputs, rule_thresholds

COLUMNS = ["noise", "est_noise", "clean_in_R", "R_wrong", "R", "P", "H", "P_prec", "wrong_to_P", "wrong_in_R",
           "H_clean"]


def load_scores(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Per-row arrays (n,) from RUN_DIR/labels.parquet: y (given class index), wrong (bool),
    p_strong, p_weak, pred (the strong model's argmax, class index); plus ``classes`` (C,), the
    sorted names of the given and predicted labels."""
    import pyarrow.dataset as pds

    path = Path(run_dir) / "labels.parquet"
    t = pds.dataset(str(path), format="parquet").to_table(
        columns=["given_label", "clean_label", "p_strong", "p_weak", "pred_label"]).to_pandas()
    given = t["given_label"].astype(str).to_numpy()
    clean = t["clean_label"].astype(str).to_numpy()
    pred = t["pred_label"].astype(str).to_numpy()
    classes = np.unique(np.concatenate([given, pred]))
    return {"y": np.searchsorted(classes, given), "wrong": given != clean, "pred": np.searchsorted(classes, pred),
            "p_strong": t["p_strong"].to_numpy(np.float64), "p_weak": t["p_weak"].to_numpy(np.float64),
            "classes": classes}


def split_metrics(codes: np.ndarray, wrong: np.ndarray) -> dict[str, float]:
    """The table's columns (percent) for partition codes (n,) and the wrong-label mask (n,)."""
    n = len(codes)
    r, p, h = codes == 0, codes == 1, codes == 2
    clean = ~wrong

    def pct(a, b):
        return 100.0 * a / b if b else float("nan")

    return {"noise": pct(wrong.sum(), n), "clean_in_R": pct((r & clean).sum(), clean.sum()),
            "R_wrong": pct((r & wrong).sum(), r.sum()), "R": pct(r.sum(), n), "P": pct(p.sum(), n),
            "H": pct(h.sum(), n), "P_prec": pct((p & wrong).sum(), p.sum()),
            "wrong_to_P": pct((p & wrong).sum(), wrong.sum()), "wrong_in_R": pct((r & wrong).sum(), wrong.sum()),
            "H_clean": pct((h & clean).sum(), h.sum())}


def evaluate(run_dirs: list[str], *, rules: list[str], prob: float = 0.5, batch_rows: int = 4096) -> pd.DataFrame:
    """One row per (run, rule) with ``COLUMNS``."""
    out = []
    for d in run_dirs:
        s = load_scores(d)
        c = len(s["classes"])
        counts = np.bincount(s["y"], minlength=c)
        inputs = RuleInputs.from_rows(p_strong=s["p_strong"], p_weak=s["p_weak"], labels=s["y"], num_classes=c,
                                      pred=s["pred"], batch_rows=batch_rows)
        for rule in rules:
            th = rule_thresholds(rule, inputs, prob=prob)
            codes = th.split(p_strong=s["p_strong"], p_weak=s["p_weak"], labels=s["y"], pred=s["pred"])
            row = {"run": Path(d).name, "rule": rule, **split_metrics(codes, s["wrong"])}
            est = th.noise_rate
            row["est_noise"] = float("nan") if np.isnan(est).all() else \
                100.0 * float(np.nansum(np.nan_to_num(est) * counts) / counts.sum())
            out.append(row)
    return pd.DataFrame(out, columns=["run", "rule", *COLUMNS])


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds: runs named ``<setting>-s<N>`` grouped by setting and rule."""
    d = df.copy()
    d.insert(0, "setting", [re.sub(r"-s\d+$", "", r) for r in d["run"]])
    g = d.groupby(["setting", "rule"], sort=False)
    m = g[COLUMNS].mean()
    m.insert(0, "seeds", g.size())
    return m.reset_index()


def to_markdown(df: pd.DataFrame, *, digits: int = 1) -> str:
    """A pipe table; pandas' ``to_markdown`` when tabulate is installed, else the same by hand."""
    d = df.copy()
    for col in d.columns:
        if pd.api.types.is_float_dtype(d[col]):
            d[col] = d[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        elif pd.api.types.is_string_dtype(d[col]) or d[col].dtype == object:  # rule names hold "|", which would end a table cell
            d[col] = d[col].map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    try:
        return d.to_markdown(index=False)
    except ImportError:
        cells = [list(map(str, d.columns))] + [[str(v) for v in row] for row in d.itertuples(index=False)]
        width = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
        num = [i > 0 and all(re.fullmatch(r"-?[\d.]*|nan", r[i]) for r in cells[1:]) for i in range(len(width))]

        def line(r):
            return "| " + " | ".join(v.rjust(w) if num[i] else v.ljust(w) for i, (v, w) in enumerate(zip(r, width))) + " |"

        sep = "|" + "|".join(("-" * (w + 1) + ":") if num[i] else ("-" * (w + 2)) for i, w in enumerate(width)) + "|"
        return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def main(argv: list[str] | None = None) -> int:
    """Print the rule comparison (and with ``--summary`` the means over seeds) for the given runs."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.split_rules", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--rules", default=",".join(RULES), help=f"comma-separated, from: {', '.join(RULES)}")
    ap.add_argument("--prob", type=float, default=0.5, help="GMM: reject where P(clean | loss) < this")
    ap.add_argument("--summary", action="store_true", help="also print means over seeds")
    args = ap.parse_args(argv)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULES]
    if bad:
        ap.error(f"unknown rule(s) {bad}; choose from {list(RULES)}")
    runs = [d for d in args.run_dirs if (Path(d) / "labels.parquet").is_dir()]
    missing = [d for d in args.run_dirs if d not in runs]
    if not runs:
        ap.error("no RUN_DIR has a labels.parquet folder")
    df = evaluate(runs, rules=rules, prob=args.prob)
    argv_shown = sys.argv[1:] if argv is None else argv
    print(f"Made by: python -m benchmarks.split_rules {shlex.join(argv_shown)}\n")
    if missing:
        print("Skipped (no labels.parquet): " + ", ".join(missing) + "\n")
    print("Rules:\n" + "\n".join(f"- `{k}`: {RULES[k]}" for k in rules) + "\n")
    print("Per run (percent):\n")
    print(to_markdown(df))
    if args.summary:
        print("\nMean over seeds (percent):\n")
        print(to_markdown(summarise(df)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
