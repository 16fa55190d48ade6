"""Final labels and per-round statistics from a round table (numpy only, batch-wise)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noiseal_ray.metrics import class_precision, detector_scores
from noiseal_ray.partition import CODES


@dataclass(frozen=True)
class ChangeGate:
    """Which of the label changes a run suggests stand (issue 15, item 6): where the evidence does
    not back a change, the given label stays and the row is ``held`` for review.

    ``min_prob``: a change stands only where the strong model predicts the new label with at least
    this probability (0: no such condition). ``move_ok`` (C, C) bool or None: ``move_ok[g, f]``, a
    label g may change to f (``precise_moves``); None: any. The default gate holds nothing back.
    """
    min_prob: float = 0.0
    move_ok: np.ndarray | None = None

    @property
    def active(self) -> bool:
        return self.min_prob > 0 or self.move_ok is not None

    def held(self, *, suggested: np.ndarray, given: np.ndarray, pred: np.ndarray,
             pred_prob: np.ndarray | None) -> np.ndarray:
        """(n,) bool: the suggested changes (``suggested`` != ``given``) this gate holds back.

        Why the strong model of the round: it has seen every earlier round's relabels, and where it
        ends unsure of a change, the evidence for that change is no stronger than for the label it
        would replace (``benchmarks/final_gates.py`` measures the rules offline).
        """
        if not self.active:
            return np.zeros(len(given), bool)
        changed = suggested != given
        ok = np.ones(len(given), bool)
        if self.min_prob > 0:
            if pred_prob is None:
                raise ValueError("a ChangeGate with min_prob > 0 needs pred_prob")
            ok &= (pred == suggested) & (pred_prob >= self.min_prob)
        if self.move_ok is not None:
            ok &= self.move_ok[given, suggested]
        return changed & ~ok


def precise_classes(*, confusion: np.ndarray | None, min_precision: float) -> np.ndarray | None:
    """(C,) bool from a (C, C) test confusion matrix (rows true, columns predicted): the classes the
    model predicts on clean test rows with precision >= ``min_precision``; a class it never predicts
    there fails. None when ``min_precision`` is 0 or there is no matrix. At 0.5 a change to an
    accepted class is more likely right than the label it replaces: that label has at most the rest."""
    if min_precision <= 0 or confusion is None:
        return None
    return np.nan_to_num(class_precision(confusion), nan=0.0) >= min_precision


def precise_moves(*, confusion: np.ndarray | None, min_precision: float, scope: str = "class",
                  given_pred: np.ndarray | None = None) -> np.ndarray | None:
    """(C, C) bool ``ok[g, f]``: a label g may change to f, judged on a (C, C) test confusion matrix
    (rows true, columns predicted). None when ``min_precision`` is 0 or there is no matrix.

    ``scope`` "class": f's precision, over every clean test row the model predicts f, is at least
    ``min_precision`` (``precise_classes``), whatever g. "move": f's precision against g alone,
    C[f, f] / (C[f, f] + C[g, f]) >= ``min_precision``: among the test rows the model predicts f
    whose true label is f or g, the share that is f. At 0.5 that is the claim a change makes: f is
    more likely right than the g it replaces (rows of other classes speak to neither). A pair the
    model never predicts as f fails. "transition": the same question for a row labelled g, weighing
    how often rows labelled g are f (``transition_moves``; needs ``given_pred``, (C, C) the model's
    predictions on the corpus against the given labels). The diagonal (no change) is always allowed.
    """
    if min_precision <= 0 or confusion is None:
        return None
    c = np.asarray(confusion, dtype=np.float64)
    k = len(c)
    if scope == "class":
        ok = np.repeat(precise_classes(confusion=c, min_precision=min_precision)[None, :], k, axis=0)
    elif scope == "move":
        right = np.diag(c)[None, :]  # C[f, f] per column f
        with np.errstate(invalid="ignore", divide="ignore"):
            share = right / (right + c)  # [g, f]: C[f, f] / (C[f, f] + C[g, f])
        ok = np.nan_to_num(share, nan=0.0) >= min_precision
    elif scope == "transition":
        if given_pred is None:
            raise ValueError("the transition scope needs the model's predictions on the corpus (given_pred)")
        ok = transition_moves(confusion=c, given_pred=given_pred, min_precision=min_precision)
    else:
        raise ValueError(f"unknown precision scope {scope!r}: class, move or transition")
    np.fill_diagonal(ok, True)
    return ok


def _pred_given_true(confusion: np.ndarray) -> np.ndarray:
    """(C, C) P(pred = p | true = t), rows t, from a test confusion matrix (rows true), add-one/C
    smoothed so that a class with few test rows is not certain of anything."""
    c = np.asarray(confusion, dtype=np.float64)
    return (c + 1.0 / len(c)) / (c.sum(1, keepdims=True) + 1.0)


def label_posteriors(*, confusion: np.ndarray, given_pred: np.ndarray, iters: int = 200) -> np.ndarray:
    """(C, C) ``w[g, t]``: the estimated share of the rows labelled g whose true label is t.

    ``confusion`` (C, C): the model on clean test rows (rows true, columns predicted), read as
    P(pred | true) (add-one/C smoothed, so a class with few test rows is not certain of anything).
    ``given_pred`` (C, C): the same model on the corpus (rows given label, columns predicted). The
    rows labelled g are a mixture of the true classes, each predicted as the test rows of that class
    are; EM fits the mixture's weights to their prediction counts (the prior shift estimate of
    Saerens et al. 2002, per given class). A model that memorised its training labels predicts them
    more often than the test rows say, so the estimate leans to "the label is right": that errs
    towards keeping labels. A class with no rows gets w[g, g] = 1.
    """
    m = _pred_given_true(confusion)
    k = len(m)
    q = np.asarray(given_pred, dtype=np.float64)
    w = np.full((k, k), 1.0 / k)
    for _ in range(iters):
        mix = w @ m  # [g, p]: P(pred = p | given = g) under w
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(mix > 0, q / mix, 0.0)
        w = w * (ratio @ m.T)  # E and M step at once: expected true-class counts per given class
        w /= np.maximum(w.sum(1, keepdims=True), 1e-300)
    empty = q.sum(1) == 0
    w[empty] = np.eye(k)[empty]
    return w


def transition_moves(*, confusion: np.ndarray, given_pred: np.ndarray, min_precision: float) -> np.ndarray:
    """(C, C) bool ``ok[g, f]``: a row labelled g that the model predicts f is f with probability at
    least ``min_precision`` against g, P(f) / (P(f) + P(g)), with P(t) = w[g, t] * P(pred = f | true = t)
    (``label_posteriors``: how often a row labelled g is t, and how often the model says f of a t).
    Unlike the "move" scope this weighs the noise itself: where g is never a wrong label for f (the
    noise flips g to f and not back), a row labelled g stays g whatever the model predicts."""
    m = _pred_given_true(confusion)
    w = label_posteriors(confusion=confusion, given_pred=given_pred)
    p_f = w * np.diag(m)[None, :]  # [g, f]: w[g, f] * P(pred f | true f)
    p_g = np.diag(w)[:, None] * m  # [g, f]: w[g, g] * P(pred f | true g)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = p_f / (p_f + p_g)
    ok = np.nan_to_num(share, nan=0.0) >= min_precision
    np.fill_diagonal(ok, True)
    return ok


def imprecise_moves(move_ok: np.ndarray | None) -> np.ndarray | None:
    """(C, C) bool: the moves (given -> new label, off the diagonal) ``move_ok`` (C, C) rejects;
    None when there is none. The rounds hold these back as reviews' refuted moves are
    (``stages.annotate.hold_refuted_moves``): the row trains as R on its given label."""
    if move_ok is None:
        return None
    out = ~np.asarray(move_ok, bool)
    np.fill_diagonal(out, False)
    return out if out.any() else None


SCOPE_WORDS = {"move": " against the given label",
               "transition": " against the given label, weighing how often that label is wrong for it"}


def given_pred_counts(batch: dict[str, np.ndarray], *, num_classes: int) -> dict[str, np.ndarray]:
    """One row of partial sums (``score.reduce_sum``): ``given_pred`` (1, C * C), the batch's rows
    counted by (label, pred), rows without a label left out."""
    label, pred = np.asarray(batch["label"], np.int64), np.asarray(batch["pred"], np.int64)
    keep = label >= 0
    out = np.zeros((1, num_classes * num_classes), np.int64)
    np.add.at(out[0], label[keep] * num_classes + pred[keep], 1)
    return {"given_pred": out}


def gate_rules(*, min_prob: float, min_test_precision: float, scope: str = "class") -> list[str]:
    """The conditions a change must meet under these gate settings, in words (the plan and the
    report say them alike); [] when every suggested change stands."""
    return ([f"the final strong model gives the new label p >= {min_prob:g}"] if min_prob > 0 else []) + (
        [f"the new label's class has precision >= {min_test_precision:g} on the test data"
         + SCOPE_WORDS.get(scope, "")] if min_test_precision > 0 else [])


def gate_from(*, min_prob: float, min_test_precision: float, fit_entry: dict | None,
              scope: str = "class", given_pred: np.ndarray | None = None) -> ChangeGate:
    """The change gate of a round table from the run's settings and the manifest entry of the fit
    whose model scored it (``test_confusion`` when that fit measured the test data). A test
    precision asked for without a matrix is an error: the gate would silently let every change by."""
    confusion = (fit_entry or {}).get("test_confusion")
    if min_test_precision > 0 and confusion is None:
        raise ValueError("change_min_test_precision needs the test data's confusion matrix of the fit that scored "
                         "the table (test_data, and a fit made by this version)")
    return ChangeGate(min_prob=min_prob,
                      move_ok=precise_moves(confusion=confusion, min_precision=min_test_precision, scope=scope,
                                            given_pred=given_pred))


def final_labels(*, part: np.ndarray, given: np.ndarray, llm: np.ndarray, pred: np.ndarray,
                 hard_policy: str, trusted: np.ndarray | None = None) -> np.ndarray:
    """Final label ids, shape (n,).

    ``given``: the labels the run trained on (a reviewed row's reviewed label). R keeps it. P
    takes the annotator's label, or the strong model's prediction when the annotator gave none
    (annotator "none", or a recorded failure). H keeps it (policy "given") or takes the strong
    model's prediction (policy "strong"). A ``trusted`` (n,) row keeps it whatever its part. These
    are the changes the method suggests; a ``ChangeGate`` may hold some back (``ChangeGate.held``).
    """
    out = given.copy()
    p = part == CODES["P"]
    out[p] = np.where(llm[p] >= 0, llm[p], pred[p])
    if hard_policy == "strong":
        h = part == CODES["H"]
        out[h] = pred[h]
    if trusted is not None:
        out[trusted] = given[trusted]
    return out


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


def held_back(batch: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) bool: the rows the round put back in R on their given label because a gate rejected or the
    reviews refuted their move (``stages.annotate.hold_refuted_moves``); none in a table without the
    column (no move held, or made by a version that did not mark them)."""
    n = len(batch["part"])
    return np.asarray(batch["held_back"], bool) if "held_back" in batch else np.zeros(n, bool)


def gated_final(batch: dict[str, np.ndarray], *, hard_policy: str,
                gate: ChangeGate | None) -> tuple[np.ndarray, np.ndarray]:
    """(final, held), both (n,), of a round-table batch: the labels the method suggests
    (``final_labels``) where the ``gate`` lets them stand, the row's label where it holds them back;
    ``held`` also marks the rows the round already put back on their label (``held_back``). A
    ``gate`` with ``min_prob`` needs the batch's ``pred_prob``."""
    label, pred = batch["label"].astype(np.int64), batch["pred"].astype(np.int64)
    _, trusted = given_and_trusted(batch)
    suggested = final_labels(part=batch["part"].astype(np.int64), given=label,
                             llm=batch["llm_label"].astype(np.int64), pred=pred, hard_policy=hard_policy,
                             trusted=trusted)
    prob = batch.get("pred_prob")
    held = (gate or ChangeGate()).held(suggested=suggested, given=label, pred=pred,
                                       pred_prob=None if prob is None else np.asarray(prob, np.float64))
    return np.where(held, label, suggested), held | held_back(batch)


def batch_stats(batch: dict[str, np.ndarray], *, round_no: int, hard_policy: str,
                gate: ChangeGate | None = None) -> dict[str, np.ndarray]:
    """One row of counts for a batch of a round table; summed over the dataset by the caller.
    A ``gate`` with ``min_prob`` needs the batch's ``pred_prob`` (``gated_final``)."""
    part = batch["part"].astype(np.int64)
    label = batch["label"].astype(np.int64)  # trained on: a reviewed row's reviewed label
    given, trusted = given_and_trusted(batch)
    llm = batch["llm_label"].astype(np.int64)
    final, held = gated_final(batch, hard_policy=hard_policy, gate=gate)
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
        # Changes the method suggested and the gate held back: the label stays, the row is for review.
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
        # Suggested changes the change gate held back (the given label stays), and how many of those
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
