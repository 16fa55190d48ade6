"""The rows of a run's labels.parquet that a review budget could still pick, batch by batch.

``select_for_review`` and the move audit (``noiseal_ray.review.audit``) stream a run's labels and
keep, per batch, only the rows that can still be among the picks, so memory holds about the
budget's worth of rows whatever the corpus size.
"""

from __future__ import annotations

import numpy as np

from noiseal_ray.review.scores import final_prob, id_uniform, label_codes, rank_rows, unreviewed


def batch_candidates(b, *, names: list[str], tau_w: np.ndarray, rule: str, spread: str, budget: int,
                     cap: int, seed: int = 0, exclude: frozenset = frozenset()) -> list[dict]:
    """The rows of a labels.parquet record batch ``b`` that can still be among the picks (never a
    reviewed one, nor an id in ``exclude``), as dicts with their priority, doubt and class
    (``_candidate_rows``)."""
    import pyarrow as pa

    def floats(c: str) -> np.ndarray:
        return b.column(c).to_numpy(zero_copy_only=False).astype(np.float64)

    given, final, pred, llm = (label_codes(b, c, names) for c in ("given_label", "final_label", "pred_label",
                                                                    "llm_label"))
    tw = tau_w[np.clip(given, 0, None)] if len(tau_w) == len(names) else np.full(len(given), tau_w[0])
    rejects = np.nan_to_num(floats("p_weak"), nan=1.0) < tw
    ids = b.column("id").to_pylist()
    u = id_uniform(ids, seed=seed) if rule in ("random", "sample") else None
    doubt = 1.0 - final_prob(given=given, final=final, pred=pred, p_given=floats("p_strong"),
                             pred_prob=floats("pred_prob"))
    prio = rank_rows(rule=rule, doubt=doubt, given=given, pred=pred, llm=llm, weak_rejects=rejects, u=u)
    ok = unreviewed(b)
    if exclude:
        ok &= np.array([str(i) not in exclude for i in ids], dtype=bool)
    by = {"given": given, "decision": np.clip(given, 0, None) * len(names) + np.clip(final, 0, None)}.get(spread, final)
    rows = np.flatnonzero(ok)[_candidate_rows(prio[ok], by[ok], budget=budget, cap=cap)]
    sub = b.take(pa.array(rows, pa.int64())).to_pylist()
    return [{**r, "priority": float(prio[i]), "doubt": float(doubt[i]), "cls": int(by[i]),
             "weak_rejects": bool(rejects[i])} for r, i in zip(sub, rows)]


def merge_candidates(cands: list[dict], *, budget: int, cap: int) -> list[dict]:
    """Of ``cands``, the ones that can still be among the picks (``_candidate_rows``)."""
    if not cands:
        return cands
    keep = _candidate_rows(np.array([k["priority"] for k in cands]), np.array([k["cls"] for k in cands], np.int64),
                           budget=budget, cap=cap)
    return [cands[i] for i in keep]


def _candidate_rows(priority: np.ndarray, classes: np.ndarray, *, budget: int, cap: int) -> np.ndarray:
    """Indices that ``spread_pick`` could choose from rows (n,): each class's ``cap`` highest
    priorities and the ``budget`` highest overall (what fills the budget once classes run out)."""
    top = np.argsort(-priority, kind="stable")[:budget]
    return np.union1d(top, _top_per_class(priority, classes, cap))


def _top_per_class(priority: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest priorities of each class (any order)."""
    out = []
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        out.append(rows[np.argsort(-priority[rows], kind="stable")[:k]])
    return np.concatenate(out) if out else np.zeros(0, np.int64)
