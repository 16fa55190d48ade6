"""Synthetic label noise (numpy only, seeded): symmetric, asymmetric, instance-dependent.

For noise rate r on clean label y (C classes):
- sym:  with probability r, y is replaced by a class drawn uniformly from the other C-1.
- asym: with probability r, y is replaced by (y + 1) mod C.
- idn:  an r fraction of samples (those a classifier finds most confusable) get that
        classifier's most probable *other* class.
"""

from __future__ import annotations

import numpy as np

KINDS = ("sym", "asym", "idn")


def inject_noise(
    labels: np.ndarray,
    *,
    num_classes: int,
    kind: str,
    rate: float,
    seed: int,
    probs: np.ndarray | None = None,
) -> np.ndarray:
    """Return corrupted labels, shape (n,), int64; ``labels`` is not modified.

    ``probs`` (n, C) is required for ``idn``: class probabilities of a classifier trained on
    clean data (see ``idn_probs``). The flipped samples are the ``round(rate * n)`` with the
    highest probability on a wrong class, so the realised rate equals ``rate`` up to rounding.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1:
        raise ValueError("labels must be 1-d")
    if num_classes < 2:
        raise ValueError("need at least 2 classes")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError("labels must be in [0, num_classes)")
    rng = np.random.default_rng(seed)
    n = y.size
    out = y.copy()
    if kind == "sym":
        flip = rng.random(n) < rate
        # Uniform over the C-1 other classes: shift by 1..C-1.
        shift = rng.integers(1, num_classes, size=n)
        out[flip] = (y[flip] + shift[flip]) % num_classes
    elif kind == "asym":
        flip = rng.random(n) < rate
        out[flip] = (y[flip] + 1) % num_classes
    elif kind == "idn":
        if probs is None:
            raise ValueError("idn noise needs probs of shape (n, C)")
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (n, num_classes):
            raise ValueError(f"probs must have shape {(n, num_classes)}, got {p.shape}")
        other = p.copy()
        other[np.arange(n), y] = -np.inf
        alt = other.argmax(axis=1)
        # Tiny seeded jitter breaks ties without favouring row order.
        score = other.max(axis=1) + rng.random(n) * 1e-9
        k = int(round(rate * n))
        chosen = np.argsort(-score, kind="stable")[:k]
        out[chosen] = alt[chosen]
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return out


def idn_probs(texts: list[str], labels: np.ndarray, *, num_classes: int, seed: int,
              clean_fraction: float = 0.5) -> np.ndarray:
    """Out-of-sample class probabilities of a small bag-of-words classifier (numpy only).

    A multinomial naive Bayes over hashed word counts is trained on a random ``clean_fraction``
    subset and predicts the rest, and vice versa, so no sample is scored by a model that saw
    it. Returns (n, C) float64 rows summing to 1.
    """
    n = len(texts)
    dim = 1 << 15
    rows, cols = [], []
    for i, t in enumerate(texts):
        for w in t.lower().split():
            rows.append(i)
            cols.append(hash_token(w) % dim)
    rows_a = np.array(rows, dtype=np.int64)
    cols_a = np.array(cols, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fold = rng.random(n) < clean_fraction
    y = np.asarray(labels, dtype=np.int64)
    out = np.zeros((n, num_classes))
    for train_mask in (fold, ~fold):
        test_mask = ~train_mask
        if not test_mask.any():
            continue
        # Sparse multinomial naive Bayes: token counts per class from the training fold.
        tr = train_mask[rows_a]
        counts = np.ones((num_classes, dim))
        np.add.at(counts, (y[rows_a[tr]], cols_a[tr]), 1.0)
        prior = np.bincount(y[train_mask], minlength=num_classes) + 1.0
        logp = np.log(counts / counts.sum(axis=1, keepdims=True))
        te = test_mask[rows_a]
        logits = np.zeros((n, num_classes))
        np.add.at(logits, rows_a[te], logp[:, cols_a[te]].T)
        logits = logits[test_mask] + np.log(prior / prior.sum())
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out[test_mask] = e / e.sum(axis=1, keepdims=True)
    return out


def hash_token(token: str) -> int:
    """A stable (process-independent) 32-bit FNV-1a hash; Python's hash() is salted."""
    h = 2166136261
    for b in token.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h
