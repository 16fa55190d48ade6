"""Evaluation metrics (numpy only): accuracy, noise detection, label recovery."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of ``pred == truth`` over rows where truth >= 0 (unknown truth is -1)."""
    known = truth >= 0
    if not known.any():
        return float("nan")
    return float((pred[known] == truth[known]).mean())


def detection(*, flagged: np.ndarray, given: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Precision/recall/F1 of ``flagged`` (bool, (n,)) as a detector of wrong labels.

    A label is wrong when ``given != clean``; rows with unknown clean label (-1) are ignored.
    """
    known = clean >= 0
    wrong = (given != clean) & known
    f = flagged & known
    tp = float((f & wrong).sum())
    precision = tp / f.sum() if f.sum() else float("nan")
    recall = tp / wrong.sum() if wrong.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
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
