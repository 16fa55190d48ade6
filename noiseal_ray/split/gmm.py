"""Per-class loss cutoffs from binned losses: a 2-component Gaussian mixture (EM) or a noise budget."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noiseal_ray.split.histogram import LOSS_EDGES, bin_centres

# Reasons a class's fit is not used (its rows are all accepted); see ``gmm_cutoffs``.
FIT_OK, FEW_ROWS, NO_NOISE, ONE_MODE, NO_CROSSING = "ok", "few_rows", "no_noise", "one_mode", "no_crossing"


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


def _from_space(x: np.ndarray, space: str) -> np.ndarray:
    return np.exp(x) if space == "logloss" else x


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
