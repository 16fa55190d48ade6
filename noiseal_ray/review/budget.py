"""A review budget: the N rows of a finished run whose review is worth the most.

A reviewed label replaces the run's final label, so a review is worth most where the final label
is most likely wrong. ``review_priority`` scores each row from what the run knows (pure numpy);
``select_for_review`` streams a run's ``labels.parquet`` and keeps the best N, spread over the
classes of the suggested label, each with the reason it was picked.

Rules (``RULES``; ``benchmarks/review_loop.py`` and ``benchmarks/results/review_loop.md`` compare
them with random picks):

* ``doubt``: 1 - the strong model's probability of the final label (for an annotator's label that
  is neither the given one nor the model's argmax, an upper bound of that probability is used).
* ``disagree``: the number of distinct opinions among the given label, the strong model's argmax
  and the annotator's answer, plus one where the weak model rejects the given label; ties by doubt.
* ``random``: a seeded hash of the id: an audit sample. A wrong label the run is sure of (a
  confident error, common under systematic noise) looks right to every score; only a random pick
  finds it, and its review teaches the rerun what the run could not see.
* ``sample``: drawn at random with chance proportional to doubt (weighted sampling without
  replacement by the key log(u) / doubt): mostly doubtful rows, sometimes a confident one.
* ``mixed``: half the budget by ``doubt``, the other half by ``random`` among the rest.
* ``moves``: an audit of the run's relabeling moves (``noiseal_ray.review.audit``: random rows
  of each move g -> f, as many per move, largest moves first, on at most half the budget), then
  ``random`` for the rest. Handed back as an exported file, the audit's reviews judge each move as
  a whole (a refuted one is applied to no unreviewed row, ``noiseal_ray.review.moves``), and the
  random half keeps the reviewed rows a fair sample of the corpus, which a rerun trusts.
* ``cover``: one row per cluster of the final model's embeddings, the most doubtful of its typical
  half (``noiseal_ray.review.cover``); it embeds the corpus once, so it costs a scoring pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noiseal_ray.review.candidates import batch_candidates, merge_candidates
from noiseal_ray.review.scores import final_prob, rank_rows

RULES = ("doubt", "disagree", "random", "sample", "mixed", "moves", "cover")
# The default: on systematic noise (TREC asym40) only an audit of the moves finds the run's confident
# mistakes, and on real human noise (NoisyAG-News) it ties random rows, where doubt picks lost on
# one and skewed the reviewed set on the other (benchmarks/results/review_loop.md).
DEFAULT_RULE = "moves"
# Which class a pick counts against when the budget is spread: the suggested (final) label, the
# given label (each given class's own noise gets looked at), the run's decision (the pair given ->
# suggested: each kept class and each move between two classes is one decision, applied to many
# rows at once, whose few reviews say whether it holds), or none (the top N overall).
SPREADS = ("suggested", "given", "decision", "none")
DEFAULT_SPREAD = "suggested"


def review_priority(*, rule: str, given: np.ndarray, final: np.ndarray, pred: np.ndarray, llm: np.ndarray,
                    p_given: np.ndarray, pred_prob: np.ndarray, weak_rejects: np.ndarray,
                    u: np.ndarray | None = None) -> np.ndarray:
    """How much a review of each row is worth under ``rule`` (``RULES``): (n,) float64, higher first.

    Labels (n,) int64 (``llm`` -1 where the annotator gave none); ``weak_rejects`` (n,) bool: the
    weak model's probability of the given label is under its threshold; ``u`` (n,) a seeded uniform
    per row (``id_uniform``), needed by ``random`` and ``sample`` (``mixed`` is scored per half by
    ``select_for_review``).
    """
    doubt = 1.0 - final_prob(given=given, final=final, pred=pred, p_given=p_given, pred_prob=pred_prob)
    return rank_rows(rule=rule, doubt=doubt, given=given, pred=pred, llm=llm, weak_rejects=weak_rejects, u=u)


def spread_pick(*, priority: np.ndarray, classes: np.ndarray, budget: int, num_classes: int) -> np.ndarray:
    """Indices of ``budget`` rows, highest ``priority`` (n,) first, at most ceil(budget / C) per class
    of ``classes`` (n,) while other classes still have rows; the rest of the budget goes to the
    highest priorities left. Returned in priority order."""
    order = np.argsort(-priority, kind="stable")
    cap = -(-budget // max(num_classes, 1))
    rank = np.zeros(len(order), np.int64)
    seen = np.zeros(max(num_classes, int(classes.max(initial=-1)) + 1), np.int64)
    for j, i in enumerate(order):  # rank of each row within its class, in priority order
        rank[j] = seen[classes[i]]
        seen[classes[i]] += 1
    first = order[rank < cap]
    rest = order[rank >= cap]
    chosen = np.concatenate([first, rest])[:budget] if len(first) < budget else first
    return chosen[np.argsort(-priority[chosen], kind="stable")][:budget]


def why(r: dict, *, doubt: float, annotator: str) -> str:
    """One sentence: why this row is worth a review."""
    # For an annotator's label that is neither the given one nor the model's, only a bound is known.
    bound = "≤" if r["final_label"] not in (r["given_label"], r["pred_label"]) else "="
    bits = [f"the strong model gives the suggested label '{r['final_label']}' p{bound}{1 - doubt:.2f}"]
    if r["pred_label"] != r["given_label"]:
        bits.append(f"it predicts '{r['pred_label']}' against the given '{r['given_label']}'")
    if r.get("llm_label") not in (None, r["pred_label"]):
        bits.append(f"the {annotator} annotator said '{r['llm_label']}'")
    if r.get("weak_rejects"):
        bits.append("the weak model rejects the given label")
    lead = {"random": "picked at random, an audit of what every score may miss: ",
            "sample": "drawn with chance proportional to its doubt: ",
            "cover": f"the most doubtful typical row of a region of about {r.get('cluster_size')} similar rows: ",
            }.get(r.get("rule", ""), "")
    if r.get("spread") == "decision":  # its review is also a test of the run's decision for rows like it
        move = (f"kept '{r['given_label']}'" if r["final_label"] == r["given_label"]
                else f"moved '{r['given_label']}' -> '{r['final_label']}'")
        lead = (f"picked at random among the rows the run {move}, a check of that decision: "
                if r.get("rule") == "random" else lead + f"among the rows the run {move}: ")
    return lead + "; ".join(bits) + f" ({r['partition']})."


def select_for_review(*, run_dir: str | Path, budget: int, rule: str = DEFAULT_RULE, spread: str = DEFAULT_SPREAD):
    """The ``budget`` rows of a finished run most worth a review: a ``pyarrow.Table`` with ``id``,
    ``review_priority``, ``review_why`` and ``review_rule`` (the rule that picked the row),
    highest priority first (``mixed``: its doubt half, then its random half; ``moves``: its audit,
    then its random picks; ``cover``: its cluster picks, then any filled by doubt); ``spread``
    (``SPREADS``, not used by ``moves`` and ``cover``, which spread by their own units): at most ceil(budget / C) per suggested or given class
    while other classes have rows (``spread_pick``); ``decision``: at most ceil(budget / C^2) per
    (given, suggested) pair, so every decision of the run gets a few reviews. ``random`` and ``sample`` draw with the
    run's seed: the same run gives the same picks.

    Rows already reviewed (``labels.parquet`` column ``reviewed``) are never picked. Streams
    ``labels.parquet``; memory holds only rows that can still be picked (``review.candidates``: at
    most about budget + C * ceil(budget / C)).
    """
    import pyarrow as pa

    from noiseal_ray.errors import ConfigError
    from noiseal_ray.report import open_run, read_config, read_json

    if budget < 1:
        raise ConfigError(f"--budget must be at least 1, got {budget}")
    if rule not in RULES:
        raise ConfigError(f"unknown review rule {rule!r}; choose one of {', '.join(RULES)}")
    if spread not in SPREADS:
        raise ConfigError(f"unknown spread {spread!r}; choose one of {', '.join(SPREADS)}")
    run = open_run(run_dir)
    config, metrics = read_config(run), read_json(run / "metrics.json")
    ctx = {"run": run, "names": [str(n) for n in metrics.get("label_names") or []], "spread": spread,
           "seed": int(config.get("seed") or 0),
           "tau_w": np.asarray(((metrics.get("final") or {}).get("thresholds") or {}).get("weak") or [0.0], np.float64)}
    if rule == "mixed":
        chosen = _pick(**ctx, rule="doubt", budget=-(-budget // 2), exclude=frozenset())
        chosen += _pick(**ctx, rule="random", budget=budget - len(chosen),
                        exclude=frozenset(str(k["id"]) for k in chosen))
    elif rule == "moves":
        from noiseal_ray.review.audit import AUDIT_SHARE, audit_picks

        chosen = audit_picks(run=run, names=ctx["names"], tau_w=ctx["tau_w"], seed=ctx["seed"],
                             budget=int(budget * AUDIT_SHARE))
        # Spread over nothing: the rest is a plain random sample, so classes keep their shares.
        chosen += _pick(**{**ctx, "spread": "none"}, rule="random", budget=budget - len(chosen),
                        exclude=frozenset(str(k["id"]) for k in chosen))
    elif rule == "cover":
        from noiseal_ray.review.cover import select_cover

        if not (run / "model" / "noiseal_model.json").is_file():
            raise ConfigError(f"--rule cover embeds the rows with the run's final model, and {run / 'model'} "
                              "holds none (a run that has not finished?); choose another --rule")
        chosen = select_cover(run=run, names=ctx["names"], budget=budget, seed=ctx["seed"], exclude=frozenset())
        # Clusters whose rows were all reviewed give none: the rest of the budget goes by doubt.
        chosen += _pick(**ctx, rule="doubt", budget=budget - len(chosen),
                        exclude=frozenset(str(k["id"]) for k in chosen))
    else:
        chosen = _pick(**ctx, rule=rule, budget=budget, exclude=frozenset())
    annotator = str(config.get("annotator") or "none")
    return pa.table({"id": pa.array([str(k["id"]) for k in chosen], pa.string()),
                     "review_priority": pa.array([k["priority"] for k in chosen], pa.float64()),
                     "review_why": pa.array([why(k, doubt=k["doubt"], annotator=annotator) for k in chosen],
                                            pa.string()),
                     # Which rule picked the row: only a random pick is a fair test of its move.
                     "review_rule": pa.array([str(k["rule"]) for k in chosen], pa.string())})


def _pick(*, run: Path, names: list[str], tau_w: np.ndarray, spread: str, seed: int, rule: str, budget: int,
          exclude: frozenset) -> list[dict]:
    """``select_for_review``'s picks under one rule as candidate dicts (``batch_candidates``),
    never an id in ``exclude``; fewer than ``budget`` only where the run has fewer rows left."""
    from noiseal_ray.report import iter_batches

    if budget < 1:
        return []
    cols = ["id", "given_label", "final_label", "pred_label", "llm_label", "p_strong", "pred_prob", "p_weak",
            "partition", "reviewed"]
    groups = _groups(spread, len(names))
    cap = -(-budget // groups)
    keep: list[dict] = []
    for b in iter_batches(run / "labels.parquet", cols):
        cands = batch_candidates(b, names=names, tau_w=tau_w, rule=rule, spread=spread, budget=budget, cap=cap,
                                 seed=seed, exclude=exclude)
        keep = merge_candidates(keep + cands, budget=budget, cap=cap)
    if not keep:
        return []
    pick = spread_pick(priority=np.array([k["priority"] for k in keep]), classes=np.array([k["cls"] for k in keep]),
                       budget=budget, num_classes=groups)
    return [{**keep[i], "rule": rule, "spread": spread} for i in pick]


def _groups(spread: str, num_classes: int) -> int:
    """How many groups ``spread`` divides the rows into (``spread_pick``'s ``num_classes``)."""
    c = max(num_classes, 1)
    return {"none": 1, "decision": c * c}.get(spread, c)


def budget_records(*, run_dir: str | Path, budget: int, rule: str, spread: str = DEFAULT_SPREAD) -> list[dict]:
    """The review records of the ``budget`` rows most worth a review (``noiseal_ray.review.
    select_for_review``), most valuable first, each with ``review_priority``, ``review_why`` and
    ``review_rule``."""
    from noiseal_ray.export import iter_records

    picked = select_for_review(run_dir=run_dir, budget=budget, rule=rule, spread=spread).to_pydict()
    rank = {i: k for k, i in enumerate(picked["id"])}
    recs = list(iter_records(run_dir=run_dir, subset="all", ids=list(rank)))
    for r in recs:
        k = rank[r["id"]]
        r["review_priority"], r["review_why"] = picked["review_priority"][k], picked["review_why"][k]
        r["review_rule"] = picked["review_rule"][k]
    return sorted(recs, key=lambda r: rank[r["id"]])
