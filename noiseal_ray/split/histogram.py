"""Per-class loss histograms on fixed bin edges: the only per-row pass the split rules need."""

from __future__ import annotations

import numpy as np

P_FLOOR = 1e-12
"""p is clipped to this before the log, so the loss lies in [0, -log(1e-12)] = [0, 27.63]."""

LOSS_MAX = float(-np.log(P_FLOOR))


def _default_edges() -> np.ndarray:
    # 0, then 160 geometric edges from 1e-6 to 27.64: bins ~11% wide relative to their loss,
    # so the clean mode (p 0.9 .. 0.999999, loss 1e-6 .. 0.1) is resolved as finely as the noisy
    # one (p 1e-12 .. 0.3, loss 1.2 .. 27.6). Every loss of any corpus falls in a bin.
    return np.concatenate([[0.0], np.geomspace(1e-6, LOSS_MAX + 1e-3, 160)])


LOSS_EDGES: np.ndarray = _default_edges()
"""Default fixed bin edges on the loss, shape (B + 1,) = (161,): [0, 1e-6, ..., 27.63]."""

SPACES = ("loss", "logloss")

def row_loss(p: np.ndarray) -> np.ndarray:
    """Per-row loss -log(max(p, 1e-12)), shape (n,) float64, in [0, 27.63]."""
    return -np.log(np.maximum(np.asarray(p, dtype=np.float64), P_FLOOR))


def loss_histograms(*, p: np.ndarray, labels: np.ndarray, num_classes: int,
                    bins: np.ndarray = LOSS_EDGES) -> np.ndarray:
    """Counts of the loss -log(max(p, 1e-12)) per given class.

    ``p``: (n,) probability of the given label; ``labels``: (n,) int given class in [0, C);
    ``bins``: (B + 1,) increasing edges (default ``LOSS_EDGES``). Returns int64 (C, B). A loss
    outside the edges is counted in the first or last bin, so every row is counted once, and
    histograms of disjoint batches add up to the histogram of their union.
    """
    edges = np.asarray(bins, dtype=np.float64)
    b = len(edges) - 1
    loss = row_loss(p)
    idx = np.clip(np.searchsorted(edges, loss, side="right") - 1, 0, b - 1)
    y = np.asarray(labels, dtype=np.int64)
    return np.bincount(y * b + idx, minlength=num_classes * b).reshape(num_classes, b).astype(np.int64)


def hist_sums(batch: dict, *, num_classes: int, bins: np.ndarray = LOSS_EDGES) -> dict:
    """A ``score.reduce_sum`` aggregator: one row of partial sums per batch.

    ``batch``: columns ``label`` (n,), ``p_strong`` (n,), ``p_weak`` (n,), optionally ``pred``
    (n,) the strong model's argmax. Returns arrays with a leading axis of 1: ``hist_strong``/
    ``hist_weak`` (1, C, B), ``count``/``sum_strong``/``sum_weak`` (1, C) (the class means of
    today's rule come from the same pass), and with ``pred`` ``disagree`` (1, C): rows whose
    argmax is another class.
    """
    y = np.asarray(batch["label"], dtype=np.int64)
    out = {"count": np.bincount(y, minlength=num_classes)[None, :].astype(np.float64)}
    for m in ("strong", "weak"):
        p = np.asarray(batch[f"p_{m}"], dtype=np.float64)
        out[f"hist_{m}"] = loss_histograms(p=p, labels=y, num_classes=num_classes, bins=bins)[None]
        out[f"sum_{m}"] = np.bincount(y, weights=p, minlength=num_classes)[None, :]
    if "pred" in batch:
        other = np.asarray(batch["pred"], dtype=np.int64) != y
        out["disagree"] = np.bincount(y, weights=other.astype(np.float64), minlength=num_classes)[None, :]
    return out


def bin_centres(edges: np.ndarray, *, space: str = "loss") -> np.ndarray:
    """Where a bin's rows sit in the fit space, shape (B,).

    ``loss``: the arithmetic midpoint. ``logloss``: log of the geometric midpoint (the first bin,
    starting at 0, uses half its upper edge).
    """
    e = np.asarray(edges, dtype=np.float64)
    if space == "loss":
        return 0.5 * (e[:-1] + e[1:])
    if space == "logloss":
        lo = np.where(e[:-1] > 0, e[:-1], 0.25 * e[1:])
        return 0.5 * (np.log(lo) + np.log(e[1:]))
    raise ValueError(f"space must be one of {SPACES}, got {space!r}")
