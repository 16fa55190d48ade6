"""Dynamic-enhanced thresholds and the R/P/H split (numpy only).

Per model m, tau_m(t) = beta * tau_m(t-1) + (1 - beta) * mean_m(t), the first value being the
mean itself. The "enhanced" variant keeps one threshold per class, each fed by the mean over
the samples whose *given* label is that class. A sample is accepted by m when p_m >= tau_m.

R = both accept (clean), P = both reject (purified: label likely wrong), H = they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

R, P, H = "R", "P", "H"
CODES = {R: 0, P: 1, H: 2}
NAMES = np.array([R, P, H])


@dataclass
class ThresholdState:
    """EMA thresholds of both models across rounds. Arrays have shape (C,) per-class, else (1,)."""

    beta: float = 0.9
    per_class: bool = True
    strong: np.ndarray | None = None
    weak: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)

    def update(self, *, mean_strong: np.ndarray, mean_weak: np.ndarray) -> None:
        """Fold this round's means into the EMA.

        ``mean_*``: shape (C,) per-class means (NaN for a class with no sample: that class keeps
        its previous threshold, or the global mean the first time) or shape (1,) global mean.
        """
        self.strong = self._ema(self.strong, np.asarray(mean_strong, dtype=np.float64))
        self.weak = self._ema(self.weak, np.asarray(mean_weak, dtype=np.float64))
        self.history.append({"strong": self.strong.tolist(), "weak": self.weak.tolist()})

    def _ema(self, prev: np.ndarray | None, mean: np.ndarray) -> np.ndarray:
        if np.isnan(mean).all():
            raise ValueError("no sample to compute a threshold from")
        fill = np.nanmean(mean) if prev is None else prev
        mean = np.where(np.isnan(mean), fill, mean)
        if prev is None:
            return mean
        return self.beta * prev + (1.0 - self.beta) * mean

    def to_dict(self) -> dict:
        """JSON-ready form (lists, not arrays), read back by ``from_dict``."""
        return {"beta": self.beta, "per_class": self.per_class,
                "strong": None if self.strong is None else self.strong.tolist(),
                "weak": None if self.weak is None else self.weak.tolist(), "history": self.history}

    @classmethod
    def from_dict(cls, d: dict) -> "ThresholdState":
        """Inverse of ``to_dict``."""
        s = cls(beta=d["beta"], per_class=d["per_class"], history=list(d.get("history", [])))
        s.strong = None if d.get("strong") is None else np.asarray(d["strong"], dtype=np.float64)
        s.weak = None if d.get("weak") is None else np.asarray(d["weak"], dtype=np.float64)
        return s


def means_from_sums(*, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``sums / counts`` elementwise (any shape, e.g. (C,)), NaN where ``counts`` is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def class_means(values: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Mean of ``values`` per given class, shape (C,), NaN for an absent class."""
    sums = np.bincount(labels, weights=values, minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return means_from_sums(sums=sums, counts=counts)


def accept(p: np.ndarray, labels: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Boolean (n,): p >= tau of the sample's given class (or the single global tau)."""
    t = tau[labels] if tau.shape[0] > 1 else np.full(p.shape, tau[0])
    return p >= t


def partition(*, p_strong: np.ndarray, p_weak: np.ndarray, labels: np.ndarray,
              tau_strong: np.ndarray, tau_weak: np.ndarray) -> np.ndarray:
    """Partition codes, shape (n,), int8: 0 = R, 1 = P, 2 = H (see ``NAMES``)."""
    a_s = accept(p_strong, labels, tau_strong)
    a_w = accept(p_weak, labels, tau_weak)
    out = np.full(p_strong.shape, CODES[H], dtype=np.int8)
    out[a_s & a_w] = CODES[R]
    out[~a_s & ~a_w] = CODES[P]
    return out
