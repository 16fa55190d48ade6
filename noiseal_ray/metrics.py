"""Evaluation metrics (numpy only): accuracy, noise detection, label recovery."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of ``pred == truth`` over rows where truth >= 0 (unknown truth is -1)."""
    known = truth >= 0
    if not known.any():
        return float("nan")
    return float((pred[known] == truth[known]).mean())


def confusion_matrix(*, truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows true label, columns predicted; rows whose ``truth`` is outside
    [0, C) (unknown, -1) count nowhere. ``truth``, ``pred``: (n,) label ids."""
    truth, pred = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
    out = np.zeros((num_classes, num_classes), np.int64)
    known = (truth >= 0) & (truth < num_classes)
    np.add.at(out, (truth[known], pred[known]), 1)
    return out


def class_precision(confusion: np.ndarray) -> np.ndarray:
    """(C,) float: per predicted class, the share of its predictions that are right, from a (C, C)
    ``confusion_matrix``; NaN for a class never predicted."""
    c = np.asarray(confusion, np.float64)
    predicted = c.sum(axis=0)
    return np.divide(np.diag(c), predicted, out=np.full(len(c), np.nan), where=predicted > 0)


def f1_score(*, precision: float | None, recall: float | None) -> float:
    """Harmonic mean of ``precision`` and ``recall``; 0.0 when either is unknown (None or NaN) or
    both are 0."""
    if precision is None or recall is None:
        return 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def detector_scores(*, hits: float, flagged: float | None,
                    wrong: float | None) -> tuple[float | None, float | None, float]:
    """(precision, recall, F1) of a detector of wrong labels from counts.

    ``hits``: flagged rows whose label is wrong; ``flagged``: rows flagged; ``wrong``: rows whose
    label is wrong. Precision hits / flagged and recall hits / wrong are None when their count is
    0 (or None); F1 is ``f1_score`` of the two. One function for ``detection`` (per row) and the
    per-round summaries (summed counts), so both report the same numbers.
    """
    precision = hits / flagged if flagged else None
    recall = hits / wrong if wrong else None
    return precision, recall, f1_score(precision=precision, recall=recall)


def detection(*, flagged: np.ndarray, given: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Precision/recall/F1 of ``flagged`` (bool, (n,)) as a detector of wrong labels.

    A label is wrong when ``given != clean``; rows with unknown clean label (-1) are ignored.
    """
    known = clean >= 0
    wrong = (given != clean) & known
    f = flagged & known
    precision, recall, f1 = detector_scores(hits=float((f & wrong).sum()), flagged=f.sum(), wrong=wrong.sum())
    return {"precision": float("nan") if precision is None else precision,
            "recall": float("nan") if recall is None else recall, "f1": f1,
            "flagged": int(f.sum()), "wrong": int(wrong.sum()), "known": int(known.sum())}


def recovery(*, given: np.ndarray, final: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """How the final labels compare with the given ones against the truth.

    fixed: fraction of wrong given labels whose final label is right.
    broken: fraction of right given labels that the final label changed to a wrong one.
    given_acc / final_acc: accuracy of the given and final labels.
    """
    known = clean >= 0
    g, f, c = given[known], final[known], clean[known]
    wrong = g != c
    return {
        "given_accuracy": float((g == c).mean()) if len(c) else float("nan"),
        "final_accuracy": float((f == c).mean()) if len(c) else float("nan"),
        "fixed": float((f[wrong] == c[wrong]).mean()) if wrong.any() else float("nan"),
        "broken": float((f[~wrong] != c[~wrong]).mean()) if (~wrong).any() else float("nan"),
        "changed": int((f != g).sum()),
    }
