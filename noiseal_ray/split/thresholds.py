"""A rule's per-class thresholds from per-class aggregates only (no row reaches the driver)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from noiseal_ray.partition import class_means, means_from_sums
from noiseal_ray.split.assign import split_class_mean, split_strong
from noiseal_ray.split.gmm import budget_cutoffs, cutoffs_to_tau, gmm_cutoffs
from noiseal_ray.split.histogram import LOSS_EDGES, hist_sums
from noiseal_ray.split.table import STRONG_PH, SPECS, RULES, RuleSpec


def mean_tau(*, p: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Today's per-class threshold on a single scoring: the class mean of p, shape (C,).

    (The pipeline's EMA starts at this value.) An absent class gets the mean of the others.
    """
    m = class_means(np.asarray(p, dtype=np.float64), np.asarray(labels, dtype=np.int64), num_classes=num_classes)
    return np.where(np.isnan(m), np.nanmean(m), m)


@dataclass
class RuleInputs:
    """Everything the rules need for one corpus, from one aggregation pass (``hist_sums``).

    ``hist_strong``/``hist_weak``: (C, B) loss histograms; ``mean_strong``/``mean_weak``: (C,)
    class means of p; ``disagree``: (C,) share of the class's rows whose strong argmax is another
    class (NaN when no argmax was given); ``count``: (C,) rows; ``edges``: (B + 1,).
    """

    hist_strong: np.ndarray
    hist_weak: np.ndarray
    mean_strong: np.ndarray
    mean_weak: np.ndarray
    disagree: np.ndarray
    count: np.ndarray
    edges: np.ndarray = field(default_factory=lambda: LOSS_EDGES.copy())

    @classmethod
    def from_sums(cls, tot: dict, *, edges: np.ndarray = LOSS_EDGES) -> "RuleInputs":
        """From the summed ``hist_sums`` rows (leading axis summed away, as ``score.reduce_sum``
        returns them)."""
        cnt = np.asarray(tot["count"], dtype=np.float64)
        ms = means_from_sums(sums=tot["sum_strong"], counts=cnt)
        mw = means_from_sums(sums=tot["sum_weak"], counts=cnt)
        dis = means_from_sums(sums=tot["disagree"], counts=cnt) if "disagree" in tot else np.full(cnt.shape, np.nan)
        ms = np.where(np.isnan(ms), np.nanmean(ms), ms)
        mw = np.where(np.isnan(mw), np.nanmean(mw), mw)
        return cls(hist_strong=tot["hist_strong"], hist_weak=tot["hist_weak"], mean_strong=ms, mean_weak=mw,
                   disagree=dis, count=cnt.astype(np.int64), edges=edges)

    @classmethod
    def from_rows(cls, *, p_strong: np.ndarray, p_weak: np.ndarray, labels: np.ndarray, num_classes: int,
                  pred: np.ndarray | None = None, edges: np.ndarray = LOSS_EDGES,
                  batch_rows: int | None = None) -> "RuleInputs":
        """Build from rows (n,), in batches of ``batch_rows`` when given: what a pipeline does
        with ``hist_sums`` + ``reduce_sum``, done here in one process. ``pred``: (n,) strong argmax."""
        y = np.asarray(labels, dtype=np.int64)
        n = len(y)
        step = batch_rows or max(n, 1)
        tot: dict[str, np.ndarray] = {}
        for s in range(0, n, step):
            b = {"label": y[s:s + step], "p_strong": p_strong[s:s + step], "p_weak": p_weak[s:s + step]}
            if pred is not None:
                b["pred"] = pred[s:s + step]
            for k, v in hist_sums(b, num_classes=num_classes, bins=edges).items():
                tot[k] = tot[k] + v[0] if k in tot else v[0].copy()
        return cls.from_sums(tot, edges=edges)


def _to_list(a: np.ndarray | None) -> list | None:
    """(C,) floats as a JSON list, NaN as None."""
    return None if a is None else [None if np.isnan(v) else float(v) for v in np.asarray(a, np.float64)]


def _from_list(a: list | None) -> np.ndarray | None:
    """Inverse of ``_to_list``."""
    return None if a is None else np.array([np.nan if v is None else v for v in a], dtype=np.float64)


@dataclass
class RuleThresholds:
    """A rule's decision: per-class taus (C,) and how to apply them.

    ``frame``: ``"both"`` (``split_class_mean``: R both accept, P both reject) or ``"strong"``
    (``split_strong`` with ``argmax`` and ``ph``). ``noise_rate``: the rule's estimated noise
    rate per class (C,), NaN if it makes none.
    """

    tau_strong: np.ndarray
    tau_weak: np.ndarray | None
    frame: str
    noise_rate: np.ndarray
    argmax: bool = False
    ph: str = "weak"
    today: np.ndarray | None = None
    """(C,) bool: classes split by today's rule with ``today_tau`` (strong, weak) instead."""
    today_tau: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def class_mean(cls, *, tau_strong: np.ndarray, tau_weak: np.ndarray) -> "RuleThresholds":
        """Today's rule with these (EMA) taus, (C,) or (1,): R both accept, P both reject."""
        tau_s = np.asarray(tau_strong, dtype=np.float64)
        return cls(tau_s, np.asarray(tau_weak, dtype=np.float64), "both", np.full(tau_s.shape, np.nan))

    def to_dict(self) -> dict:
        """JSON-ready form (lists; NaN as None), read back by ``from_dict``."""
        arr = _to_list
        return {"tau_strong": arr(self.tau_strong), "tau_weak": arr(self.tau_weak), "frame": self.frame,
                "noise_rate": arr(self.noise_rate), "argmax": self.argmax, "ph": self.ph,
                "today": None if self.today is None else [bool(v) for v in self.today],
                "today_tau": None if self.today_tau is None else [arr(t) for t in self.today_tau]}

    @classmethod
    def from_dict(cls, d: dict) -> "RuleThresholds":
        """Inverse of ``to_dict``."""
        arr = _from_list
        return cls(arr(d["tau_strong"]), arr(d["tau_weak"]), d["frame"], arr(d["noise_rate"]),
                   argmax=bool(d.get("argmax", False)), ph=d.get("ph", "weak"),
                   today=None if d.get("today") is None else np.asarray(d["today"], dtype=bool),
                   today_tau=None if d.get("today_tau") is None else (arr(d["today_tau"][0]), arr(d["today_tau"][1])))

    def split(self, *, p_strong: np.ndarray, p_weak: np.ndarray, labels: np.ndarray,
              pred: np.ndarray | None = None) -> np.ndarray:
        """Partition codes (n,) int8 for rows (n,); ``pred`` (n,) = strong argmax when needed."""
        if self.frame == "both":
            return split_class_mean(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=self.tau_strong,
                                    tau_weak=self.tau_weak)
        out = split_strong(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=self.tau_strong,
                           tau_weak=self.tau_weak, pred=pred, argmax=self.argmax, ph=self.ph)
        if self.today is not None and self.today.any():
            rows = self.today[np.asarray(labels, dtype=np.int64)]
            old = split_class_mean(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=self.today_tau[0],
                                   tau_weak=self.today_tau[1])
            out = np.where(rows, old, out).astype(np.int8)
        return out


def rule_thresholds(rule: str | RuleSpec, inputs: RuleInputs, *, prob: float = 0.5) -> RuleThresholds:
    """Per-class thresholds of a rule (a ``RULES`` name or a ``RuleSpec``) from aggregates only."""
    if isinstance(rule, str):
        if rule not in SPECS:
            raise ValueError(f"unknown rule {rule!r}; one of {sorted(RULES)}")
        rule = SPECS[rule]
    c = len(inputs.mean_strong)

    def fit(hist, space):
        return gmm_cutoffs(hist=hist, edges=inputs.edges, prob=prob, space=space)

    space = "loss" if rule.strong == "gmm" or rule.noise == "gmm" else "logloss"
    fs = fit(inputs.hist_strong, space) if rule.strong in ("gmm", "gmmlog", "budget") else None
    if rule.strong == "budget" and rule.noise in ("disagree", "max"):
        fs = fit(inputs.hist_strong, "logloss")
        noise = np.nan_to_num(inputs.disagree) if rule.noise == "disagree" else \
            np.maximum(fs.noise_rate, np.nan_to_num(inputs.disagree))
    else:
        noise = np.full(c, np.nan) if fs is None else fs.noise_rate
    if rule.strong == "mean":
        tau_s = inputs.mean_strong
    elif rule.strong == "none":
        tau_s = np.zeros(c)
    elif rule.strong == "budget":
        tau_s = cutoffs_to_tau(budget_cutoffs(hist=inputs.hist_strong, edges=inputs.edges, reject=noise))
    else:
        tau_s = cutoffs_to_tau(fs.cutoff)
        if rule.fallback:
            missed = np.nan_to_num(fs.noise_rate) < rule.fallback_ratio * np.nan_to_num(inputs.disagree)
            tau_s = np.where(missed, inputs.mean_strong, tau_s)
            noise = np.where(missed, np.nan_to_num(inputs.disagree), noise)
            if rule.fallback == "class-mean":
                tau_w = cutoffs_to_tau(fit(inputs.hist_weak, space).cutoff) if rule.ph == "weak-gmm" \
                    else inputs.mean_weak
                ph = STRONG_PH[rule.ph]
                return RuleThresholds(tau_s, tau_w, "strong", noise, argmax=rule.argmax, ph=ph, today=missed,
                                      today_tau=(inputs.mean_strong, inputs.mean_weak))
    if rule.ph == "both":
        tau_w = inputs.mean_weak if rule.strong == "mean" else cutoffs_to_tau(fit(inputs.hist_weak, space).cutoff)
        return RuleThresholds(tau_s, tau_w, "both", noise)
    tau_w = cutoffs_to_tau(fit(inputs.hist_weak, space).cutoff) if rule.ph == "weak-gmm" else inputs.mean_weak
    ph = STRONG_PH[rule.ph]
    return RuleThresholds(tau_s, tau_w, "strong", noise, argmax=rule.argmax, ph=ph)
