"""The review loop, simulated: run, pick N rows for review, "review" them with the true labels,
rerun with them as trusted rows (``--reviewed``); the same with N random rows.

    .venv/bin/python -m benchmarks.review_loop --out /tmp/review-out            # every setting, seeds 0-2
    .venv/bin/python -m benchmarks.review_loop --out /tmp/review-out --settings trec-asym40 --seeds 0

Per setting and seed, three NoiseAL-kNN runs at the defaults (the paired grid's budget: 1 warm-up
epoch + 3 rounds, max_length 32, 2 workers):

* ``none``: the run without review; it trains the warm-up the other two adopt (``warmup_from``),
  so the three differ only by the reviewed rows.
* ``budget``: rerun with the N rows ``noiseal_ray.review.select_for_review`` picks from ``none``'s
  labels.parquet, each labelled with its true label.
* ``random``: rerun with N rows drawn uniformly (seeded), each labelled with its true label.
* ``budget-given``: as ``budget``, with the picks spread over the given classes instead of the
  suggested ones (``--spread given``).
* ``budget-mixed`` / ``budget-sample`` / ``budget-cover``: the ``mixed`` rule (half by doubt, half
  at random), the ``sample`` rule (at random, weighted by doubt) and the ``cover`` rule (one row per
  cluster of the final model's embeddings).
* ``budget-audit`` / ``budget-decision``: the picks spread over the run's decisions (each (given,
  suggested) pair: a kept class or a move between two classes), at random (an audit of each
  decision) or by doubt within each.
* ``<arm>-v``: the same picks handed back as an exported review file (with ``none``'s suggested
  labels) instead of an id,label table, so the rerun also judges ``none``'s moves by them
  (``noiseal_ray.review.moves``: a move the reviews refute is not applied to unreviewed rows).

Reports final-label accuracy (the corpus the user gets, reviewed rows included) and last-round
test accuracy per arm, and how many of the picked rows ``none`` had wrong. Writes
``benchmarks/results/review_loop.md`` and ``.json``. Each run resumes (``run_pipeline``), so an
interrupted benchmark reruns only what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "review_loop.md"
ARMS = ("none", "budget", "random", "budget-given", "budget-mixed", "budget-sample", "budget-cover",
        "budget-audit", "budget-decision", "budget-moves", "random-v", "budget-v", "budget-audit-v",
        "budget-decision-v", "budget-moves-v")
# A budget arm -> (rule, spread) of noiseal_ray.review.select_for_review.
BUDGET_ARMS = {"budget": ("doubt", "suggested"), "budget-given": ("doubt", "given"),
               "budget-mixed": ("mixed", "suggested"), "budget-sample": ("sample", "suggested"),
               "budget-cover": ("cover", "suggested"), "budget-audit": ("random", "decision"),
               "budget-decision": ("doubt", "decision"), "budget-moves": ("moves", "suggested")}


# Paired comparisons the report shows: each budget arm against random picks handed back the same
# way, and each "-v" arm against the same picks as a plain id,label table.
PAIRS = ([(b, "random") for b in BUDGET_ARMS] + [(f"{b}-v", "random-v") for b in BUDGET_ARMS]
         + [(f"{a}-v", a) for a in ("random", *BUDGET_ARMS)])


def settings() -> dict:
    """Setting name -> the benchmark Cell whose data it uses (grid.prepare_data)."""
    from benchmarks.grid import PAIRED_TRAINING as tr, Cell

    # NoisyAG-News texts are 3-4 times longer than TREC's: fewer rows keep a run near TREC's cost.
    return {"trec-asym40": lambda seed: Cell("trec", "asym", 0.4, seed, "noiseal-knn", 2000, None, tr),
            "trec-sym20": lambda seed: Cell("trec", "sym", 0.2, seed, "noiseal-knn", 2000, None, tr),
            "noisyagnews-real": lambda seed: Cell("noisyagnews", "real", 0.0, seed, "noiseal-knn", 1000, 500, tr),
            # Hausa headlines: real rule-based noise (about half the labels wrong), the full train split.
            "hausa-real": lambda seed: Cell("hausa", "real", 0.0, seed, "noiseal-knn", None, None, tr)}


def _config(*, cell, meta: dict, reviewed: Path | None, warmup_from: Path | None, refute: float | None = None):
    from benchmarks.grid import RECONSTRUCTED
    from noiseal_ray.config import make_config

    tr = cell.training
    # NoiseAL-kNN as reconstructed (its committed figures were made so), whatever the defaults become.
    extra = {**RECONSTRUCTED, **({} if refute is None else {"refute_confidence": refute})}
    return make_config(overrides=dict(**extra,
        data=meta["train"], text_col=meta["text_col"], label_col=meta["label_col"],
        clean_label_col=meta["clean_label_col"], test_data=meta["test"], test_label_col=meta["test_label_col"],
        max_length=tr.max_length, workers=tr.workers, batch_size=tr.batch_size, seed=cell.seed,
        warmup_epochs=tr.warmup_epochs, rounds=tr.rounds, max_failures=2, lr_schedule=tr.lr_schedule,
        annotator="knn", reviewed=str(reviewed) if reviewed else None,
        warmup_from=str(warmup_from) if warmup_from else None))


def _run(*, cfg, out: Path) -> dict:
    from noiseal_ray.pipeline import Progress, run_pipeline

    t0 = time.time()
    m = run_pipeline(config=cfg, out=out, progress=Progress(echo=lambda s: print(f"    {s}", flush=True)))
    fin = m["final"]
    return {"final_accuracy": fin["recovery"]["final_accuracy"], "given_accuracy": fin["recovery"]["given_accuracy"],
            "fixed": fin["recovery"]["fixed"], "broken": fin["recovery"]["broken"],
            "test_accuracy_last": fin["test_accuracy_last"], "seconds": round(time.time() - t0, 1)}


def _write_reviewed(*, labels: Path, ids: list[str], out: Path, suggested: bool = False,
                    rules: list[str] | None = None) -> dict:
    """The simulated review: ``ids`` with their true labels (an id,label CSV, or with ``suggested``
    the columns of an exported CSV: id, given_label, suggested_label, review_label); how many of
    them the run had wrong (final label != true label) and how many given labels were wrong.
    ``rules``: each pick's ``review_rule``, written as a column (only random picks test a move)."""
    import pyarrow.parquet as pq

    from noiseal_ray.rundir import atomic_write_text

    t = pq.read_table(labels, columns=["id", "given_label", "final_label", "clean_label"]).to_pydict()
    at = {i: k for k, i in enumerate(t["id"])}
    rows = [at[i] for i in ids]
    if suggested:  # labels and ids of the benchmark's corpora hold no comma or quote
        extra = [f",{r}" for r in rules] if rules else [""] * len(rows)
        lines = ["id,given_label,suggested_label,review_label" + (",review_rule" if rules else "")] + [
            f"{t['id'][k]},{t['given_label'][k]},{t['final_label'][k]},{t['clean_label'][k]}{e}"
            for k, e in zip(rows, extra)]
    else:
        lines = ["id,label"] + [f"{t['id'][k]},{t['clean_label'][k]}" for k in rows]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return {"picked": len(rows), "final_wrong": sum(t["final_label"][k] != t["clean_label"][k] for k in rows),
            "given_wrong": sum(t["given_label"][k] != t["clean_label"][k] for k in rows)}


def rule_study(*, run_dir: Path, budget: int) -> dict:
    """How well each budget rule finds the rows a run got wrong, offline from its labels.parquet:
    per rule (and with / without the class spread), the share of the ``budget`` picks whose final
    label is wrong, against the share over the whole corpus (what random picks get on average)."""
    import pyarrow.parquet as pq

    from noiseal_ray.review import RULES, select_for_review
    from noiseal_ray.review.budget import SPREADS

    t = pq.read_table(run_dir / "labels.parquet", columns=["id", "final_label", "clean_label"]).to_pydict()
    wrong = {i: f != c for i, f, c in zip(t["id"], t["final_label"], t["clean_label"])}
    out = {"corpus": sum(wrong.values()) / len(wrong)}
    for rule in RULES:
        for spread in SPREADS if rule != "cover" else ("suggested",):  # cover spreads by its clusters
            ids = select_for_review(run_dir=run_dir, budget=budget, rule=rule, spread=spread).column("id").to_pylist()
            out[f"{rule}, by {spread}"] = sum(wrong[i] for i in ids) / len(ids)
    return out


def run_seed(*, name: str, seed: int, budget: int, out: Path, data_root: Path, arms: tuple[str, ...]) -> dict:
    """The three arms of one setting and seed; a dict arm -> figures."""
    import numpy as np
    import pyarrow.parquet as pq

    from benchmarks.grid import prepare_data

    cell = settings()[name](seed)
    meta = prepare_data(cell, data_root=data_root, work=out)
    base = out / "runs" / f"{name}-s{seed}"
    res: dict = {}
    print(f"[{name} seed {seed}] none", flush=True)
    res["none"] = _run(cfg=_config(cell=cell, meta=meta, reviewed=None, warmup_from=None), out=base / "none")
    labels = base / "none" / "labels.parquet"
    warm = base / "none" / "rounds" / "r0" / "model"
    res["none"]["rules"] = rule_study(run_dir=base / "none", budget=budget)
    for arm in arms:
        if arm == "none":
            continue
        # "ARM@C": ARM with refute_confidence C (the verdicts' bar), e.g. random-v@0.75.
        kind, _, conf = arm.partition("@")
        base_arm = kind.removesuffix("-v")
        if base_arm.startswith("budget"):
            from noiseal_ray.review import select_for_review

            rule, spread = BUDGET_ARMS[base_arm]
            picks = select_for_review(run_dir=base / "none", budget=budget, rule=rule, spread=spread)
            ids, rules = picks.column("id").to_pylist(), picks.column("review_rule").to_pylist()
        else:
            all_ids = pq.read_table(labels, columns=["id"]).column("id").to_pylist()
            rng = np.random.default_rng(10_000 + seed)
            ids = [all_ids[i] for i in np.sort(rng.choice(len(all_ids), size=budget, replace=False))]
            rules = None
        picked = _write_reviewed(labels=labels, ids=ids, out=base / f"reviewed-{arm}.csv", suggested=kind.endswith("-v"),
                                 rules=rules)
        print(f"[{name} seed {seed}] {arm}: {picked}", flush=True)
        cfg = _config(cell=cell, meta=meta, reviewed=base / f"reviewed-{arm}.csv", warmup_from=warm,
                      refute=float(conf) if conf else None)
        res[arm] = {**_run(cfg=cfg,
                           out=base / arm), **picked}
    return res


def render(results: dict, *, budget: int, command: str) -> str:
    """The Markdown report: per setting and seed, each arm's figures, then means of the differences."""
    import numpy as np

    lines = ["# The review loop, simulated", "",
             f"`{command}`", "",
             f"N = {budget} reviewed rows per rerun, labelled with the true labels (the reviewer is always right). "
             "Every arm of a seed starts from the same warm-up fit (the `none` run's), so the differences are "
             "the reviewed rows' doing. Final-label accuracy is over the whole corpus, reviewed rows included: "
             "the labels the user ends with. Wrong among picked: how many of the N rows the run without review "
             "had wrong (final label), and how many of their given labels were wrong. An arm ending in `-v` hands "
             "the same kind of picks back as an exported file (with `none`'s suggested labels), so the rerun also "
             "holds back the moves of `none` that the reviews refute (`noiseal_ray.review.moves`); `budget-audit` "
             "picks at random within each (given, suggested) pair of `none` (`--rule random --spread decision`); "
             "`budget-moves` is `--rule moves` (half the budget on random rows of each move of `none`, as many per "
             "move, the rest a plain random sample).", "",
             "| setting | seed | arm | final-label acc | test acc (last) | wrong among picked (final / given) | "
             "right labels broken | wrong labels fixed | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    deltas: dict = {}
    seen = {a for seeds in results.values() for arms in seeds.values() for a in arms}
    extra = sorted(a for a in seen if "@" in a)  # arms with another refute_confidence
    order = (*ARMS, *extra)
    pairs = PAIRS + [(a, f"random-v@{a.partition('@')[2]}") for a in extra if not a.startswith("random-v@")]
    for name, seeds in results.items():
        for seed, arms in sorted(seeds.items()):
            for arm in order:
                r = arms.get(arm)
                if r is None:
                    continue
                picked = f"{r['final_wrong']} / {r['given_wrong']}" if "picked" in r else "-"
                lines.append(f"| {name} | {seed} | {arm} | {100 * r['final_accuracy']:.1f} | "
                             f"{100 * r['test_accuracy_last']:.1f} | {picked} | {r['broken']:.3f} | "
                             f"{r['fixed']:.3f} | {r['seconds']:.0f} |")
                if arm != "none" and "none" in arms:
                    for k in ("final_accuracy", "test_accuracy_last"):
                        deltas.setdefault((name, arm, k), []).append(100 * (r[k] - arms["none"][k]))
            for b, rand in pairs:
                if b in arms and rand in arms:
                    for k in ("final_accuracy", "test_accuracy_last"):
                        deltas.setdefault((name, f"{b} - {rand}", k), []).append(100 * (arms[b][k] - arms[rand][k]))
    studies = [(name, seed, arms["none"]["rules"]) for name, seeds in results.items()
               for seed, arms in sorted(seeds.items()) if "rules" in arms.get("none", {})]
    if studies:
        keys = list(dict.fromkeys(k for _, _, st in studies for k in st))  # older results name fewer rules
        lines += ["", f"Which rows a budget picks: the share of the {budget} picks whose final label the run "
                  "without review had wrong, per rule (`noiseal_ray.review.RULES`; the class spread caps each "
                  "suggested class at ceil(N / C) picks while others have rows); `corpus` is the share over "
                  "all rows, what random picks get on average.", "",
                  "| setting | seed | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        lines += [f"| {name} | {seed} | " + " | ".join(f"{100 * st[k]:.1f}%" if k in st else "-" for k in keys) + " |"
                  for name, seed, st in studies]
    lines += ["", "Differences in points, mean ± standard deviation over seeds (each seed's own pair):", "",
              "| setting | comparison | final-label acc | test acc (last) | seeds ahead (final / test) |",
              "|---|---|---|---|---|"]
    for name in results:
        for comp in (*(a for a in order if a != "none"), *(f"{b} - {r}" for b, r in pairs)):
            f, t = deltas.get((name, comp, "final_accuracy")), deltas.get((name, comp, "test_accuracy_last"))
            if not f:
                continue
            label = comp if " - " in comp else f"{comp} - none"
            lines.append(f"| {name} | {label} | {np.mean(f):+.1f} ± {np.std(f):.1f} | {np.mean(t):+.1f} ± "
                         f"{np.std(t):.1f} | {sum(x > 0 for x in f)}/{len(f)} / {sum(x > 0 for x in t)}/{len(t)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.grid import DEFAULT_DATA_ROOT
    from noiseal_ray.rundir import atomic_write_json, atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (data, runs); reruns resume")
    ap.add_argument("--settings", default=",".join(settings()), help="comma-separated: " + ", ".join(settings()))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ", ".join(ARMS)
                    + "; ARM@C runs ARM with refute_confidence C (e.g. random-v@0.75)")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    arms = tuple(x for x in a.arms.split(",") if x)
    names = [s for s in a.settings.split(",") if s]
    unknown = [s for s in names if s not in settings()]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; choose from {', '.join(settings())}")
    command = "python -m benchmarks.review_loop " + " ".join(argv if argv is not None else sys.argv[1:])
    store = a.out / "results.json"
    results: dict = json.loads(store.read_text()) if store.is_file() else {}
    from benchmarks.run import own_ray

    with own_ray(workers=2):
        for name in names:
            for seed in a.seeds:
                got = run_seed(name=name, seed=seed, budget=a.budget, out=a.out, data_root=a.data_root, arms=arms)
                results.setdefault(name, {})[str(seed)] = {**results.get(name, {}).get(str(seed), {}), **got}
                atomic_write_json(store, results)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.results, render(results, budget=a.budget, command=command))
    atomic_write_json(a.results.with_suffix(".json"), results)
    print(a.results.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
