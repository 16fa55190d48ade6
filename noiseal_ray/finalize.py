"""Final labels and per-round statistics from a round table (numpy only, batch-wise)."""

from __future__ import annotations

import numpy as np

from noiseal_ray.metrics import detector_scores
from noiseal_ray.partition import CODES


def final_labels(*, part: np.ndarray, given: np.ndarray, llm: np.ndarray, pred: np.ndarray,
                 hard_policy: str, trusted: np.ndarray | None = None, pred_prob: np.ndarray | None = None,
                 change_min_prob: float = 0.0) -> np.ndarray:
    """Final label ids, shape (n,).

    ``given``: the labels the run trained on (a reviewed row's reviewed label). R keeps it. P
    takes the annotator's label, or the strong model's prediction when the annotator gave none
    (annotator "none", or a recorded failure). H keeps it (policy "given") or takes the strong
    model's prediction (policy "strong"). With ``change_min_prob`` > 0 a change stands only where
    the strong model (``pred``, ``pred_prob`` (n,)) predicts the new label with at least that
    probability (``held_changes``); elsewhere the label stays. A ``trusted`` (n,) row keeps it
    whatever its part.
    """
    out = given.copy()
    p = part == CODES["P"]
    out[p] = np.where(llm[p] >= 0, llm[p], pred[p])
    if hard_policy == "strong":
        h = part == CODES["H"]
        out[h] = pred[h]
    if change_min_prob > 0:
        if pred_prob is None:
            raise ValueError("change_min_prob > 0 needs pred_prob")
        held = held_changes(suggested=out, given=given, pred=pred, pred_prob=pred_prob,
                            change_min_prob=change_min_prob)
        out[held] = given[held]
    if trusted is not None:
        out[trusted] = given[trusted]
    return out


def held_changes(*, suggested: np.ndarray, given: np.ndarray, pred: np.ndarray, pred_prob: np.ndarray,
                 change_min_prob: float) -> np.ndarray:
    """(n,) bool: the suggested changes (``suggested`` != ``given``) the strong model is not sure of:
    its prediction ``pred`` is another label, or it gives the suggested one p < ``change_min_prob``.
    All false when ``change_min_prob`` is 0 (every change stands).

    Why the strong model after the last round: it has seen every round's relabels, and where it
    ends unsure of a change the evidence for that change is no stronger than for the given label
    (issue 15, item 6; ``benchmarks/final_gates.py`` measures this rule against others offline).
    """
    if change_min_prob <= 0:
        return np.zeros(len(given), bool)
    return (suggested != given) & ~((pred == suggested) & (pred_prob >= change_min_prob))


def given_and_trusted(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A round-table batch's input labels (n,) int64 and reviewed mask (n,) bool. ``label`` is what
    the run trains on (a reviewed row's reviewed label); a table from before reviewed rows existed
    has no ``given``/``trusted`` columns: its labels are the given ones and nothing is reviewed."""
    label = batch["label"].astype(np.int64)
    given = batch["given"].astype(np.int64) if "given" in batch else label
    trusted = batch["trusted"].astype(bool) if "trusted" in batch else np.zeros(len(label), bool)
    return given, trusted


STAT_KEYS = ("n", "R", "P", "H", "annotated", "annotated_now", "cached_now", "failed_now", "truncated",
             "known", "wrong", "flagged", "flagged_wrong", "p_wrong", "p_flagged", "final_right",
             "given_right", "fixed", "broken", "llm_right", "llm_known", "changed", "changed_known",
             "changed_wrong", "reviewed", "reviewed_changed", "wrong_unreviewed", "held", "held_wrong")


def batch_stats(batch: dict[str, np.ndarray], *, round_no: int, hard_policy: str,
                change_min_prob: float = 0.0) -> dict[str, np.ndarray]:
    """One row of counts for a batch of a round table; summed over the dataset by the caller.
    ``change_min_prob`` > 0 needs the batch's ``pred_prob`` (``final_labels``)."""
    part = batch["part"].astype(np.int64)
    label = batch["label"].astype(np.int64)  # trained on: a reviewed row's reviewed label
    given, trusted = given_and_trusted(batch)
    llm = batch["llm_label"].astype(np.int64)
    pred = batch["pred"].astype(np.int64)
    suggested = final_labels(part=part, given=label, llm=llm, pred=pred, hard_policy=hard_policy, trusted=trusted)
    held = held_changes(suggested=suggested, given=label, pred=pred, change_min_prob=change_min_prob,
                        pred_prob=batch["pred_prob"] if change_min_prob > 0 else None)
    final = np.where(held, label, suggested)
    clean = batch["clean_label"].astype(np.int64)
    known = clean >= 0
    wrong = known & (given != clean)
    # Detection and correction score the run's own calls: a reviewed row is the reviewer's.
    own = known & ~trusted
    flagged = part != CODES["R"]
    now = batch["llm_round"].astype(np.int64) == round_no
    err = np.array([bool(e) for e in batch["llm_error"]]) if len(part) else np.zeros(0, bool)
    s = {
        "n": len(part), "R": (part == 0).sum(), "P": (part == 1).sum(), "H": (part == 2).sum(),
        "annotated": (llm >= 0).sum(), "annotated_now": now.sum(),
        "cached_now": (now & batch["llm_cached"].astype(bool)).sum(), "failed_now": (now & err).sum(),
        "truncated": batch["truncated"].astype(bool).sum(),
        "known": known.sum(), "wrong": wrong.sum(), "flagged": (flagged & own).sum(),
        "flagged_wrong": (flagged & wrong & own).sum(), "p_wrong": ((part == 1) & wrong & own).sum(),
        "p_flagged": ((part == 1) & own).sum(), "wrong_unreviewed": (wrong & own).sum(),
        "final_right": (known & (final == clean)).sum(), "given_right": (known & (given == clean)).sum(),
        "fixed": (wrong & (final == clean)).sum(), "broken": (known & ~wrong & (final != clean)).sum(),
        "llm_right": (known & (llm >= 0) & (llm == clean)).sum(), "llm_known": (known & (llm >= 0)).sum(),
        "changed": (final != given).sum(), "changed_known": (own & (final != given)).sum(),
        "changed_wrong": (wrong & own & (final != given)).sum(),
        "reviewed": trusted.sum(), "reviewed_changed": (trusted & (label != given)).sum(),
        # Changes the method suggested and change_min_prob held back: the label stays, the row is for review.
        "held": held.sum(), "held_wrong": (held & wrong & own).sum(),
    }
    return {k: np.array([int(v)], dtype=np.int64) for k, v in s.items()}


def summarise(counts: dict[str, int]) -> dict:
    """Turn summed counts into the per-round metrics block of metrics.json."""
    def ratio(a: str, b: str) -> float | None:
        return counts[a] / counts[b] if counts.get(b) else None

    out = {"sizes": {k: counts[k] for k in ("R", "P", "H")}, "rows": counts["n"],
           "annotator": {"annotated_total": counts["annotated"], "new_answers": counts["annotated_now"],
                         "cache_hits": counts["cached_now"], "failed": counts["failed_now"],
                         "queries": counts["annotated_now"] - counts["cached_now"]},
           "truncated": counts["truncated"], "changed": counts["changed"]}
    if counts.get("held"):
        # Suggested changes change_min_prob held back (the given label stays), and how many of those
        # given labels were in fact wrong (known only where clean labels are).
        out["held"] = {"rows": counts["held"], "wrong": counts.get("held_wrong", 0)}
    if counts.get("reviewed"):
        out["reviewed"] = {"rows": counts["reviewed"], "changed_by_reviewer": counts["reviewed_changed"]}
    if counts.get("known"):
        p, r, f1 = detector_scores(hits=counts.get("flagged_wrong"), flagged=counts.get("flagged"),
                                   wrong=counts.get("wrong_unreviewed", counts.get("wrong")))
        out["detection"] = {"precision": p, "recall": r, "f1": f1, "p_precision": ratio("p_wrong", "p_flagged")}
        out["recovery"] = {"given_accuracy": ratio("given_right", "known"),
                           "final_accuracy": ratio("final_right", "known"),
                           "fixed": ratio("fixed", "wrong"),
                           "broken": counts["broken"] / max(counts["known"] - counts["wrong"], 1),
                           "annotator_accuracy": ratio("llm_right", "llm_known")}
        if "changed_known" in counts:  # absent from summaries a version without it stored
            # The label changes themselves as a detector of wrong labels: what the user acts on, unlike
            # P and H, which also hold samples whose given label the run keeps.
            cp, cr, cf1 = detector_scores(hits=counts.get("changed_wrong"), flagged=counts.get("changed_known"),
                                          wrong=counts.get("wrong_unreviewed", counts.get("wrong")))
            out["correction"] = {"precision": cp, "recall": cr, "f1": cf1}
    return out
