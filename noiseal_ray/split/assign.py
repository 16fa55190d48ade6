"""Split frames: partition codes (n,) int8 (0 = R, 1 = P, 2 = H) from per-class thresholds."""

from __future__ import annotations

import numpy as np

from noiseal_ray.partition import CODES, accept, partition
from noiseal_ray.split.table import STRONG_PH, SPECS


def split_class_mean(*, p_strong: np.ndarray, p_weak: np.ndarray, labels: np.ndarray,
                     tau_strong: np.ndarray, tau_weak: np.ndarray) -> np.ndarray:
    """Today's frame (``partition.partition``): R = both accept, P = both reject, H = disagree.

    Arrays (n,); taus (C,). With class-mean taus this is today's rule; with GMM taus for both
    models it is "gmm-both".
    """
    return partition(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=tau_strong, tau_weak=tau_weak)


split_gmm_both = split_class_mean


def split_gmm_strong(*, p_strong: np.ndarray, p_weak: np.ndarray, labels: np.ndarray,
                     tau_strong: np.ndarray, tau_weak: np.ndarray) -> np.ndarray:
    """The strong model alone decides clean vs not; the weak model only splits the rejected rows.

    R = strong accepts (p_strong >= tau_strong[y]); among the rest, P = the weak model rejects
    too (p_weak < tau_weak[y]), else H. Arrays (n,); taus (C,). Used with a GMM (or budget)
    tau_strong and a GMM or class-mean tau_weak.
    """
    a_s = accept(np.asarray(p_strong), np.asarray(labels), np.asarray(tau_strong))
    a_w = accept(np.asarray(p_weak), np.asarray(labels), np.asarray(tau_weak))
    out = np.full(a_s.shape, CODES["H"], dtype=np.int8)
    out[a_s] = CODES["R"]
    out[~a_s & ~a_w] = CODES["P"]
    return out


split_budget_strong = split_gmm_strong


def split_strong(*, p_strong: np.ndarray, p_weak: np.ndarray, labels: np.ndarray, tau_strong: np.ndarray,
                 tau_weak: np.ndarray | None = None, pred: np.ndarray | None = None, argmax: bool = False,
                 ph: str = "weak") -> np.ndarray:
    """The strong-model frame with options; partition codes (n,) int8.

    Accept = p_strong >= tau_strong[y], and, with ``argmax``, the strong model's argmax ``pred``
    (n,) equals the given label y. R = accepted. The rejected rows are P or H by ``ph``:
    ``"weak"``: P if p_weak < tau_weak[y] (``split_gmm_strong``); ``"argmax"``: P if pred != y (the
    strong model names another class, the row an annotator would change); ``"weak+argmax"``: both.
    Arrays (n,), taus (C,).
    """
    y = np.asarray(labels, dtype=np.int64)
    a_s = accept(np.asarray(p_strong), y, np.asarray(tau_strong))
    other = None if pred is None else np.asarray(pred, dtype=np.int64) != y
    if argmax:
        if other is None:
            raise ValueError("argmax needs pred")
        a_s &= ~other
    if ph == "weak":
        to_p = ~accept(np.asarray(p_weak), y, np.asarray(tau_weak))
    elif ph == "argmax":
        to_p = other
    elif ph == "weak+argmax":
        to_p = ~accept(np.asarray(p_weak), y, np.asarray(tau_weak)) & other
    else:
        raise ValueError(f"ph must be weak, argmax or weak+argmax, got {ph!r}")
    if to_p is None:
        raise ValueError(f"ph={ph!r} needs pred")
    out = np.full(a_s.shape, CODES["H"], dtype=np.int8)
    out[a_s] = CODES["R"]
    out[~a_s & to_p] = CODES["P"]
    return out


def assign_codes(*, rule: str, tau_strong: np.ndarray, tau_weak: np.ndarray, p_strong: np.ndarray,
                 p_weak: np.ndarray, labels: np.ndarray, pred: np.ndarray,
                 today: np.ndarray | None = None) -> np.ndarray:
    """Partition codes (n,) int8 of rows (n,) under ``rule`` (a ``RULES`` name) with the per-class
    thresholds (C,) that ``rule_thresholds`` (or, for "class-mean", the EMA) gave: what a pipeline
    applies batch by batch once the thresholds are known. ``pred``: (n,) the strong model's argmax.
    ``today``: (C,) bool, required by the "|class-mean" rules: classes split by today's frame with
    the same taus (which ``rule_thresholds`` set to the class means there)."""
    if rule == "class-mean":
        return partition(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=tau_strong, tau_weak=tau_weak)
    spec = SPECS[rule]
    if spec.ph == "both":
        return split_class_mean(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=tau_strong,
                                tau_weak=tau_weak)
    ph = STRONG_PH[spec.ph]
    out = split_strong(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=tau_strong, tau_weak=tau_weak,
                       pred=pred, argmax=spec.argmax, ph=ph)
    if spec.fallback == "class-mean":
        if today is None:
            raise ValueError(f"rule {rule!r} needs today: the classes split by today's rule")
        rows = np.asarray(today, dtype=bool)[np.asarray(labels, dtype=np.int64)]
        old = split_class_mean(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=tau_strong,
                               tau_weak=tau_weak)
        out = np.where(rows, old, out).astype(np.int8)
    return out
