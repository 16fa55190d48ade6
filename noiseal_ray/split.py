"""Noise-adaptive clean/noisy split rules from small per-class aggregates (numpy only).

The class-mean rule of ``partition.py`` puts each model's threshold at the class mean of
``p = softmax(model(x))[given]``. A mean lies inside the clean mode of a bimodal ``p``, so it
rejects a fixed share of clean rows whatever the noise. The rules here instead fit, per given
class, a two-component 1-D Gaussian mixture to the per-row loss ``-log(max(p, 1e-12))`` (the
DivideMix/SelfMix recipe) and call the low-mean component clean. The fit only needs a per-class
histogram of the loss on FIXED bin edges (``LOSS_EDGES``), so in a distributed pipeline every
batch contributes a (C, B) array of counts, the driver adds them up (``score.reduce_sum`` with
``hist_sums``) and fits C mixtures on C * B numbers; no row ever reaches the driver.

Everything returns per-class thresholds on ``p`` (shape (C,)), which plug into
``partition.accept``, and partition codes like ``partition.partition`` (0 = R, 1 = P, 2 = H).

Pieces:
- ``loss_histograms``: counts (C, B) of the loss per given class; partial histograms add up.
- ``gmm_cutoffs``: per-class loss cutoff, estimated noise rate and the fit (``GmmFit``).
- ``budget_cutoffs``: per-class cutoff that rejects a given share (e.g. the estimated noise
  rate) of the class's highest-loss rows, read off the same histogram (co-teaching's rule).
- ``cutoffs_to_tau``: loss cutoff -> threshold on p (tau = exp(-cutoff)).
- split rules: ``split_class_mean`` (today's rule), ``split_gmm_both``, ``split_gmm_strong``,
  ``split_budget_strong``; ``RULES`` names the variants ``benchmarks/split_rules.py`` compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from noiseal_ray.partition import CODES, accept, class_means, partition

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

# Reasons a class's fit is not used (its rows are all accepted); see ``gmm_cutoffs``.
FIT_OK, FEW_ROWS, NO_NOISE, ONE_MODE, NO_CROSSING = "ok", "few_rows", "no_noise", "one_mode", "no_crossing"


# ---------------------------------------------------------------------------------------------
# aggregates
# ---------------------------------------------------------------------------------------------

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


def _from_space(x: np.ndarray, space: str) -> np.ndarray:
    return np.exp(x) if space == "logloss" else x


# ---------------------------------------------------------------------------------------------
# mixture fit
# ---------------------------------------------------------------------------------------------

@dataclass
class GmmFit:
    """Per-class result of ``gmm_cutoffs``; every array has shape (C,).

    ``cutoff``: loss at and above which a row is rejected (+inf: accept the whole class).
    ``noise_rate``: estimated share of wrong labels = weight of the high-loss component (0.0 where
    the fit is not used, NaN for an empty class). ``mean``/``sd``/``weight``: (C, 2), component 0
    is the clean (low-mean) one, in the fit space. ``reason``: ``"ok"`` or why the class's rows
    are all accepted. ``n``: rows per class.
    """

    cutoff: np.ndarray
    noise_rate: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    weight: np.ndarray
    reason: np.ndarray
    n: np.ndarray
    space: str = "loss"


def _norm_logpdf(x, m, v):
    return -0.5 * (np.log(2 * np.pi * v) + (x - m) ** 2 / v)


def _em(x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray, pi: np.ndarray, *,
        reg: float, iters: int, tol: float):
    """Weighted EM for C independent 2-component 1-D mixtures at once.

    x: (B,) points; w: (C, B) weights; mu/var/pi: (C, 2) initial parameters. Returns the fitted
    (mu, var, pi, mean log-likelihood per unit weight (C,)).
    """
    n = w.sum(1)
    safe_n = np.maximum(n, 1e-12)
    prev = np.full(len(w), -np.inf)
    ll = prev
    for _ in range(iters):
        lp = np.log(np.maximum(pi, 1e-300))[:, :, None] + _norm_logpdf(x[None, None, :], mu[:, :, None], var[:, :, None])
        top = lp.max(1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(lp - top).sum(1))  # (C, B)
        resp = np.exp(lp - lse[:, None, :]) * w[:, None, :]  # (C, 2, B)
        ll = (lse * w).sum(1) / safe_n
        nk = resp.sum(2)  # (C, 2)
        pi = nk / safe_n[:, None]
        safe_k = np.maximum(nk, 1e-12)
        mu = (resp * x).sum(2) / safe_k
        var = (resp * (x - mu[:, :, None]) ** 2).sum(2) / safe_k + reg
        if np.all(np.abs(ll - prev) < tol):
            break
        prev = ll
    return mu, var, pi, ll


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per-row weighted quantile of points x (B,) with weights w (C, B): (C,)."""
    c = np.cumsum(w, axis=1)
    tot = np.maximum(c[:, -1:], 1e-12)
    idx = (c / tot < q).sum(1)
    return x[np.minimum(idx, len(x) - 1)]


def _crossing(m, v, pi, *, prob: float) -> float:
    """Smallest x >= m[0] where the clean posterior pi0 N0 / (pi0 N0 + pi1 N1) falls below prob.

    Solves pi0 N0 (1 - prob) = pi1 N1 prob, a quadratic in x; +inf if there is no such x.
    """
    m0, m1 = m
    v0, v1 = v
    k = np.log(pi[0] * (1 - prob)) - 0.5 * np.log(v0) - np.log(pi[1] * prob) + 0.5 * np.log(v1)
    # k - (x - m0)^2 / (2 v0) + (x - m1)^2 / (2 v1) = 0  <=>  a x^2 + b x + c = 0
    a = 0.5 / v1 - 0.5 / v0
    b = m0 / v0 - m1 / v1
    c = k - m0 * m0 / (2 * v0) + m1 * m1 / (2 * v1)
    if abs(a) < 1e-12 * max(1 / v0, 1 / v1):
        roots = [] if b == 0 else [-c / b]
    else:
        disc = b * b - 4 * a * c
        if disc < 0:
            roots = []
        else:
            s = np.sqrt(disc)
            roots = [(-b - s) / (2 * a), (-b + s) / (2 * a)]

    def g(x):  # > 0 while the clean posterior is above prob
        return k - (x - m0) ** 2 / (2 * v0) + (x - m1) ** 2 / (2 * v1)

    if g(m0) <= 0:  # already below prob at the clean mean: the class is the noisy component's
        return float(m0)
    cand = sorted(r for r in roots if r >= m0)
    return float(cand[0]) if cand else float("inf")


def _bimodal(m, v, pi, lo: float, hi: float, grid: int = 2048) -> bool:
    """True if the fitted mixture density has two local maxima on [lo, hi] (a uniform grid,
    refined within 5 sd of each mean so a narrow mode is never stepped over)."""
    sd = np.sqrt(v)
    x = np.concatenate([np.linspace(lo, hi, grid)] + [m[i] + sd[i] * np.linspace(-5, 5, 401) for i in (0, 1)])
    x = np.unique(x[(x >= lo) & (x <= hi)])
    f = pi[0] * np.exp(_norm_logpdf(x, m[0], v[0])) + pi[1] * np.exp(_norm_logpdf(x, m[1], v[1]))
    d = np.sign(np.diff(f))
    d = d[d != 0]
    peaks = int(((d[:-1] > 0) & (d[1:] < 0)).sum()) + int(len(d) > 0 and d[0] < 0) + int(len(d) > 0 and d[-1] > 0)
    return peaks >= 2


def gmm_cutoffs(*, hist: np.ndarray, edges: np.ndarray = LOSS_EDGES, prob: float = 0.5, space: str = "loss",
                min_rows: int = 20, min_noise: float = 0.005, require_two_modes: bool = True,
                reg: float | None = None, iters: int = 300, tol: float = 1e-7) -> GmmFit:
    """Per-class loss cutoff from a 2-component Gaussian mixture fit by EM on binned losses.

    ``hist``: (C, B) counts on ``edges`` (B + 1,), as from ``loss_histograms`` (summed over
    batches). Each class's bins are weighted points at their centres (``bin_centres``) in the
    fit ``space``: ``"loss"`` (DivideMix's choice) or ``"logloss"`` (log of the loss, where the
    clean mode near 0 is spread out). Component 0 = the low-mean one = clean.

    ``cutoff[c]`` = the smallest loss above the clean mean where the clean posterior falls below
    ``prob`` (rows with loss >= cutoff are rejected); ``noise_rate[c]`` = the high-loss component's
    weight. EM starts from three initialisations (means at the weighted 10/90%, 25/75% and
    50/95% quantiles) and keeps the best likelihood. Rule for degenerate classes: the class keeps
    ALL its rows (cutoff +inf, noise_rate 0.0) when it has fewer than ``min_rows`` rows
    (``few_rows``), when the high-loss component weighs less than ``min_noise`` (``no_noise``),
    when ``require_two_modes`` and the fitted density has a single mode, i.e. the high-loss rows
    are a tail of the clean mode, not a population of their own (``one_mode``), or when the
    clean posterior never falls below ``prob`` (``no_crossing``). An empty class gets cutoff
    +inf and noise_rate NaN. ``reg``: variance floor added each step (default 1e-4 in loss
    space, 1e-2 in log-loss space).
    """
    h = np.asarray(hist, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != len(edges) - 1:
        raise ValueError(f"hist must be (C, {len(edges) - 1}), got {h.shape}")
    x = bin_centres(edges, space=space)
    if reg is None:
        reg = 1e-4 if space == "loss" else 1e-2
    c = h.shape[0]
    n = h.sum(1)
    best = None
    for qlo, qhi in ((0.10, 0.90), (0.25, 0.75), (0.50, 0.95)):
        mu0 = np.stack([_weighted_quantile(x, h, qlo), _weighted_quantile(x, h, qhi)], 1)
        mu0[:, 1] = np.maximum(mu0[:, 1], mu0[:, 0] + 1e-3)
        tot = np.maximum(n, 1e-12)
        mean = (h * x).sum(1) / tot
        v = (h * (x - mean[:, None]) ** 2).sum(1) / tot + reg
        var0 = np.stack([v, v], 1)
        fit = _em(x, h, mu0, var0, np.full((c, 2), 0.5), reg=reg, iters=iters, tol=tol)
        if best is None:
            best = fit
        else:
            better = fit[3] > best[3] + 1e-9
            best = tuple(np.where(better[:, None], f, b) if f.ndim == 2 else np.where(better, f, b)
                         for f, b in zip(fit, best))
    mu, var, pi, _ = best
    order = np.argsort(mu, axis=1)
    mu = np.take_along_axis(mu, order, 1)
    var = np.take_along_axis(var, order, 1)
    pi = np.take_along_axis(pi, order, 1)

    cutoff = np.full(c, np.inf)
    noise = np.zeros(c)
    reason = np.full(c, FIT_OK, dtype=object)
    for k in range(c):
        if n[k] == 0:
            noise[k] = np.nan
            reason[k] = FEW_ROWS
            continue
        if n[k] < min_rows:
            reason[k] = FEW_ROWS
            continue
        if pi[k, 1] < min_noise:
            reason[k] = NO_NOISE
            continue
        if require_two_modes and not _bimodal(mu[k], var[k], pi[k], float(x[0]), float(x[-1])):
            reason[k] = ONE_MODE
            continue
        cut = _crossing(mu[k], var[k], pi[k], prob=prob)
        if not np.isfinite(cut):
            reason[k] = NO_CROSSING
            continue
        cutoff[k] = float(_from_space(np.asarray(cut), space))
        noise[k] = pi[k, 1]
    return GmmFit(cutoff=cutoff, noise_rate=noise, mean=mu, sd=np.sqrt(var), weight=pi, reason=reason,
                  n=n.astype(np.int64), space=space)


def budget_cutoffs(*, hist: np.ndarray, edges: np.ndarray = LOSS_EDGES, reject: np.ndarray) -> np.ndarray:
    """Per-class loss cutoff that rejects the ``reject[c]`` share of the class's highest losses.

    ``hist``: (C, B) counts; ``reject``: (C,) shares in [0, 1] (e.g. ``GmmFit.noise_rate``, NaN
    read as 0). Linear interpolation inside the bin where the budget ends. Returns (C,) cutoffs;
    +inf where nothing is to be rejected.
    """
    h = np.asarray(hist, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    r = np.clip(np.nan_to_num(np.asarray(reject, dtype=np.float64), nan=0.0), 0.0, 1.0)
    out = np.full(h.shape[0], np.inf)
    for k in range(h.shape[0]):
        n = h[k].sum()
        want = r[k] * n
        if n == 0 or want <= 0:
            continue
        above = np.cumsum(h[k][::-1])[::-1]  # rows in bin j or above
        j = int(np.flatnonzero(above >= want)[-1])  # the highest bin from which on >= want rows lie
        beyond = above[j] - h[k, j]  # rows strictly above bin j
        frac = (want - beyond) / h[k, j]  # share of bin j to reject, from its top
        out[k] = e[j + 1] - frac * (e[j + 1] - e[j])
    return out


def cutoffs_to_tau(cutoff: np.ndarray) -> np.ndarray:
    """Loss cutoffs (C,) -> thresholds on p (C,): tau = exp(-cutoff), so ``p >= tau`` iff
    ``loss <= cutoff``; cutoff +inf -> tau 0 (accept all). Plugs into ``partition.accept``."""
    return np.exp(-np.asarray(cutoff, dtype=np.float64))


def mean_tau(*, p: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Today's per-class threshold on a single scoring: the class mean of p, shape (C,).

    (The pipeline's EMA starts at this value.) An absent class gets the mean of the others.
    """
    m = class_means(np.asarray(p, dtype=np.float64), np.asarray(labels, dtype=np.int64), num_classes=num_classes)
    return np.where(np.isnan(m), np.nanmean(m), m)


# ---------------------------------------------------------------------------------------------
# split rules: partition codes (n,) int8, 0 = R, 1 = P, 2 = H
# ---------------------------------------------------------------------------------------------

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
        with np.errstate(invalid="ignore", divide="ignore"):
            ms = np.where(cnt > 0, tot["sum_strong"] / np.maximum(cnt, 1), np.nan)
            mw = np.where(cnt > 0, tot["sum_weak"] / np.maximum(cnt, 1), np.nan)
            dis = np.where(cnt > 0, tot["disagree"] / np.maximum(cnt, 1), np.nan) if "disagree" in tot \
                else np.full(cnt.shape, np.nan)
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


@dataclass(frozen=True)
class RuleSpec:
    """How a rule decides. ``strong``: the strong model's accept test: ``mean`` (class mean of p),
    ``gmm``/``gmmlog`` (mixture on loss / log-loss, ``gmm_cutoffs``), ``budget`` (reject the
    ``noise`` share of the class's highest losses, ``budget_cutoffs``), ``none`` (accept all).
    ``noise``: the share a budget uses: ``gmm``/``gmmlog`` (the mixture's weight), ``disagree``
    (share of rows whose strong argmax is another class), ``max`` (max of gmmlog and disagree).
    ``fallback``: for a class where the mixture's noise estimate is below ``fallback_ratio`` (1.0)
    times its argmax-disagreement share (the mixture missed rows the strong model itself assigns
    to another class, as when the model has half learned a systematic flip): ``"mean"``
    = the strong model's class mean replaces the mixture's threshold; ``"class-mean"`` = today's
    rule (both models at their class means, both-accept/both-reject frame) decides that class's
    rows; ``""`` = no fallback. ``argmax``: R also needs the strong argmax to be the given label. ``ph``: P vs H among
    the rejected rows: ``both`` (today's frame, the weak model judged by the same kind of test),
    ``weak-mean``/``weak-gmm`` (P if the weak model rejects at its class mean / its own mixture),
    ``argmax`` (P if the strong argmax is another class), ``weak-mean+argmax`` (both)."""

    strong: str
    ph: str
    noise: str = "gmmlog"
    fallback: str = ""
    argmax: bool = False
    fallback_ratio: float = 1.0


_SPECS: dict[str, RuleSpec] = {
    "class-mean": RuleSpec("mean", "both"),
    "gmm-both": RuleSpec("gmm", "both", "gmm"),
    "gmmlog-both": RuleSpec("gmmlog", "both"),
    "gmm-strong/weak-gmm": RuleSpec("gmm", "weak-gmm", "gmm"),
    "gmmlog-strong/weak-gmm": RuleSpec("gmmlog", "weak-gmm"),
    "gmm-strong/weak-mean": RuleSpec("gmm", "weak-mean", "gmm"),
    "gmmlog-strong/weak-mean": RuleSpec("gmmlog", "weak-mean"),
    "mean-strong/weak-mean": RuleSpec("mean", "weak-mean"),
    "budget-strong/weak-mean": RuleSpec("budget", "weak-mean", "gmm"),
    "budgetlog-strong/weak-mean": RuleSpec("budget", "weak-mean", "gmmlog"),
    "budgetdis-strong/weak-mean": RuleSpec("budget", "weak-mean", "disagree"),
    "budgetmax-strong/weak-mean": RuleSpec("budget", "weak-mean", "max"),
    "gmm|mean-strong/weak-mean": RuleSpec("gmm", "weak-mean", "gmm", fallback="mean"),
    "gmm|class-mean-strong/weak-mean": RuleSpec("gmm", "weak-mean", "gmm", fallback="class-mean"),
    "gmm|class-mean-strong/argmax": RuleSpec("gmm", "argmax", "gmm", fallback="class-mean"),
    "gmmlog|mean-strong/weak-mean": RuleSpec("gmmlog", "weak-mean", fallback="mean"),
    "argmax/weak-mean": RuleSpec("none", "weak-mean", argmax=True),
    "argmax/argmax": RuleSpec("none", "argmax", argmax=True),
    "gmmlog+argmax/weak-mean": RuleSpec("gmmlog", "weak-mean", argmax=True),
    "gmmlog+argmax/argmax": RuleSpec("gmmlog", "argmax", argmax=True),
    "gmmlog+argmax/weak-mean+argmax": RuleSpec("gmmlog", "weak-mean+argmax", argmax=True),
}

RULES: dict[str, str] = {
    "class-mean": "today: class-mean tau for both models; R both accept, P both reject, H otherwise",
    "gmm-both": "GMM (fit on the loss) tau for both models in today's both-accept/both-reject frame",
    "gmmlog-both": "as gmm-both, the mixtures fit on log(loss)",
    "gmm-strong/weak-gmm": "R = strong's GMM accepts; of the rest P if the weak's GMM rejects too, else H",
    "gmmlog-strong/weak-gmm": "as gmm-strong/weak-gmm, the mixtures fit on log(loss)",
    "gmm-strong/weak-mean": "R = strong's GMM accepts; of the rest P if the weak rejects at its class mean, else H",
    "gmmlog-strong/weak-mean": "as gmm-strong/weak-mean, the mixture fit on log(loss)",
    "mean-strong/weak-mean": "R = strong accepts at its class mean; of the rest P if the weak rejects at its mean",
    "budget-strong/weak-mean": "R = all but the strong's est. noise share (loss-GMM weight) of highest-loss rows per"
                               " class; of the rest P if the weak rejects at its class mean",
    "budgetlog-strong/weak-mean": "as budget-strong/weak-mean, the noise share from the log(loss) GMM",
    "budgetdis-strong/weak-mean": "as budget-strong/weak-mean, the noise share = share of the class whose strong"
                                  " argmax is another class",
    "budgetmax-strong/weak-mean": "as budget-strong/weak-mean, the noise share = max(log(loss) GMM weight,"
                                  " argmax-disagreement share)",
    "gmm|mean-strong/weak-mean": "as gmm-strong/weak-mean, but a class whose GMM noise estimate is under half"
                                 " its argmax-disagreement share uses the strong's class mean",
    "gmm|class-mean-strong/weak-mean": "as gmm|mean-strong/weak-mean, but such a class is split by today's rule"
                                       " (class-mean)",
    "gmm|class-mean-strong/argmax": "as gmm|class-mean-strong/weak-mean, but P/H by the strong argmax: P if it names"
                                    " another class, else H",
    "gmmlog|mean-strong/weak-mean": "as gmm|mean-strong/weak-mean, the mixture fit on log(loss)",
    "argmax/weak-mean": "R = strong's argmax is the given label; of the rest P if the weak rejects at its class mean",
    "argmax/argmax": "R = strong's argmax is the given label; all the rest P",
    "gmmlog+argmax/weak-mean": "R = strong's log(loss) GMM accepts AND its argmax is the given label; of the rest P"
                               " if the weak rejects at its class mean, else H",
    "gmmlog+argmax/argmax": "R = as gmmlog+argmax; of the rest P if the strong's argmax is another class, else H",
    "gmmlog+argmax/weak-mean+argmax": "R = as gmmlog+argmax; of the rest P if the weak rejects at its class mean AND"
                                      " the strong's argmax is another class, else H",
}
"""Split rules by name (``benchmarks/split_rules.py`` compares them); see ``RuleSpec``."""
assert set(RULES) == set(_SPECS)


# RuleSpec.ph -> the ``ph`` of ``split_strong`` (the weak model's test is already in its tau).
_PH = {"weak-gmm": "weak", "weak-mean": "weak", "argmax": "argmax", "weak-mean+argmax": "weak+argmax"}


def rule_thresholds(rule: str | RuleSpec, inputs: RuleInputs, *, prob: float = 0.5) -> RuleThresholds:
    """Per-class thresholds of a rule (a ``RULES`` name or a ``RuleSpec``) from aggregates only."""
    if isinstance(rule, str):
        if rule not in _SPECS:
            raise ValueError(f"unknown rule {rule!r}; one of {sorted(RULES)}")
        rule = _SPECS[rule]
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
                ph = _PH[rule.ph]
                return RuleThresholds(tau_s, tau_w, "strong", noise, argmax=rule.argmax, ph=ph, today=missed,
                                      today_tau=(inputs.mean_strong, inputs.mean_weak))
    if rule.ph == "both":
        tau_w = inputs.mean_weak if rule.strong == "mean" else cutoffs_to_tau(fit(inputs.hist_weak, space).cutoff)
        return RuleThresholds(tau_s, tau_w, "both", noise)
    tau_w = cutoffs_to_tau(fit(inputs.hist_weak, space).cutoff) if rule.ph == "weak-gmm" else inputs.mean_weak
    ph = _PH[rule.ph]
    return RuleThresholds(tau_s, tau_w, "strong", noise, argmax=rule.argmax, ph=ph)




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
    spec = _SPECS[rule]
    if spec.ph == "both":
        return split_class_mean(p_strong=p_strong, p_weak=p_weak, labels=labels, tau_strong=tau_strong,
                                tau_weak=tau_weak)
    ph = _PH[spec.ph]
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
