"""The report's figures, as base64 PNG: R/P/H sizes, quality, confidence histograms, label transitions.

matplotlib's object API with the Agg canvas: no pyplot, no global state. Each ``plot_*`` returns
the PNG's base64 text (ASCII letters, digits, ``+/=`` only), which the template embeds as a data URI.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING

import numpy as np

from noiseal_ray.report.limits import CLEAN_COLORS, FINE_BINS, HEATMAP_MAX, PART_COLORS, PART_LABELS, PART_NAMES
from noiseal_ray.report.stats import LabelStats, RoundHist

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(w: float, h: float) -> Figure:
    """A blank figure of w x h inches at the report's resolution."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _png(fig: Figure) -> str:
    """``fig`` rendered as PNG, base64-encoded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _mpl_text(s: str, n: int = 24) -> str:
    """A label name safe for matplotlib: no mathtext, bounded length."""
    s = str(s)
    s = s if len(s) <= n else s[: n - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def _style(ax: Axes) -> None:
    """The report's axes look: no top/right spines, a light horizontal grid behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)


def _round_tick(r: int, last: int) -> str:
    """A round's axis label: its number, or "final" for the partition after the last round (``last``)."""
    return "final" if r == last else str(r)


def plot_sizes(*, rounds: list[dict], last: int) -> str:
    """Stacked R/P/H bars for every metrics round with ``sizes``; ``last`` is the final partition's round."""
    rs = [e for e in rounds if "sizes" in e]
    fig = _figure(8.5, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(rs))
    bottom = np.zeros(len(rs))
    total = np.array([sum(e["sizes"].values()) for e in rs], dtype=float)
    for p in PART_NAMES:
        v = np.array([e["sizes"].get(p, 0) for e in rs], dtype=float)
        ax.bar(x, v, bottom=bottom, color=PART_COLORS[p], label=PART_LABELS[p], width=0.6)
        for xi, b, val, t in zip(x, bottom, v, total):
            if t and val / t > 0.06:
                ax.text(xi, b + val / 2, f"{int(val):,}", ha="center", va="center", color="white", fontsize=9)
        bottom += v
    ax.set_xticks(x, [_round_tick(e["round"], last) for e in rs])
    ax.set_xlabel("round (partition before that round's training; 'final' = after the last one)")
    ax.set_ylabel("samples")
    ax.set_title("R / P / H sizes per round")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _style(ax)
    return _png(fig)


def plot_quality(*, rounds: list[dict], last: int) -> str | None:
    """Test accuracy and detection/recovery metrics per round; None when the run has neither."""
    test = [(e["round"], e["test_accuracy"]) for e in rounds if e.get("test_accuracy") is not None]
    det = [e for e in rounds if e.get("detection")]
    if not test and not det:
        return None
    panels = int(bool(test)) + int(bool(det))
    fig = _figure(5.2 * panels + 1.5, 3.4)
    i = 1
    if test:
        ax = fig.add_subplot(1, panels, i)
        i += 1
        xs = [r for r, _ in test]
        ax.plot(xs, [a for _, a in test], marker="o", color="#1565c0", label="test accuracy")
        ax.set_xticks(xs, ["warm-up" if r == 0 else str(r) for r in xs])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training round (model after it)")
        ax.set_ylabel("accuracy")
        ax.set_title("Strong model on the test set")
        ax.legend(frameon=False, loc="lower right")
        _style(ax)
    if det:
        ax = fig.add_subplot(1, panels, i)
        xs = np.arange(len(det))
        series = [("detection precision", lambda e: e["detection"].get("precision"), "#ef6c00", "o"),
                  ("detection recall", lambda e: e["detection"].get("recall"), "#5e35b1", "s"),
                  ("detection F1", lambda e: e["detection"].get("f1"), "#2e7d32", "^"),
                  ("label accuracy (final)", lambda e: (e.get("recovery") or {}).get("final_accuracy"), "#1565c0", "D"),
                  ("label accuracy (given)", lambda e: (e.get("recovery") or {}).get("given_accuracy"), "#9e9e9e", None)]
        for name, get, color, marker in series:
            ys = [get(e) for e in det]
            ys = [np.nan if y is None else y for y in ys]
            ax.plot(xs, ys, marker=marker, color=color, label=name, linestyle="--" if marker is None else "-")
        ax.set_xticks(xs, [_round_tick(e["round"], last) for e in det])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("round")
        ax.set_ylabel("fraction")
        ax.set_title("Noise detection and label recovery (vs clean labels)")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _style(ax)
    return _png(fig)


def display_range(*, hists: list[RoundHist], key: str) -> tuple[int, int]:
    """Fine-bin index range [lo, hi) that holds every sample and threshold of ``key``, padded."""
    occupied = np.zeros(FINE_BINS, bool)
    taus = []
    for h in hists:
        for v in getattr(h, key).values():
            occupied |= v > 0
        t = h.tau_strong if key == "strong" else h.tau_weak
        if t is not None and len(t):
            taus += [float(np.nanmin(t)), float(np.nanmax(t))]
    idx = np.flatnonzero(occupied)
    lo = idx[0] / FINE_BINS if len(idx) else 0.0
    hi = (idx[-1] + 1) / FINE_BINS if len(idx) else 1.0
    if taus:
        lo, hi = min(lo, min(taus)), max(hi, max(taus))
    pad = max(0.02, 0.05 * (hi - lo))
    lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    return int(math.floor(lo * FINE_BINS)), int(math.ceil(hi * FINE_BINS))


def _rebin(v: np.ndarray, lo: int, hi: int, target: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Fine bins [lo, hi) of ``v`` merged into about ``target`` bins: (counts, edges on [0, 1])."""
    k = max(1, int(math.ceil((hi - lo) / target)))
    hi = lo + k * int(math.ceil((hi - lo) / k))
    if hi > FINE_BINS:
        lo = max(0, lo - (hi - FINE_BINS))
        hi = FINE_BINS
    seg = v[lo:hi]
    seg = np.pad(seg, (0, (-len(seg)) % k))
    counts = seg.reshape(-1, k).sum(axis=1)
    edges = (lo + np.arange(len(counts) + 1) * k) / FINE_BINS
    return counts, edges


def plot_confidence(*, h: RoundHist, ranges: dict[str, tuple[int, int]], has_clean: bool, last: int,
                    num_classes: int) -> str:
    """The confidence histograms of one round: strong/weak model by partition (and by truth when
    ``has_clean``), over the fine-bin ``ranges`` shared by all rounds, with the thresholds marked."""
    rows = 2 if has_clean else 1
    fig = _figure(11, 3.0 * rows + 0.4)
    axes = fig.subplots(rows, 2, squeeze=False)
    title = "final partition" if h.round_no == last else f"round {h.round_no}"
    fig.suptitle(f"Confidence in the given label, {title}", fontsize=12, fontweight="bold")
    splits = [("partition", list(PART_NAMES), PART_COLORS)]
    if has_clean:
        splits.append(("truth", list(CLEAN_COLORS), CLEAN_COLORS))
    for row, (split, groups, colors) in enumerate(splits):
        for col, key in enumerate(("strong", "weak")):
            ax = axes[row][col]
            lo, hi = ranges[key]
            for g in groups:
                v = getattr(h, key)[g]
                if not v.sum():
                    continue
                counts, edges = _rebin(v, lo, hi)
                label = PART_LABELS.get(g, g)
                ax.stairs(counts, edges, fill=True, alpha=0.30, color=colors[g])
                ax.stairs(counts, edges, color=colors[g], linewidth=1.4, label=f"{label} ({int(v.sum()):,})")
            tau = h.tau_strong if key == "strong" else h.tau_weak
            if tau is not None and len(tau):
                mean = float(np.nanmean(tau))
                if len(tau) > 1 and num_classes > 1:
                    ax.axvspan(float(np.nanmin(tau)), float(np.nanmax(tau)), color="#9e9e9e", alpha=0.18,
                               label="per-class thresholds (range)")
                    ax.axvline(mean, color="black", linestyle="--", linewidth=1.2,
                               label=f"mean threshold {mean:.3f}")
                else:
                    ax.axvline(mean, color="black", linestyle="--", linewidth=1.2, label=f"threshold {mean:.3f}")
            model = "strong (transformer)" if key == "strong" else "weak (BiLSTM)"
            ax.set_xlim(lo / FINE_BINS, hi / FINE_BINS)
            ax.set_xlabel(f"p_{key}: {model} probability of the given label")
            ax.set_ylabel("samples")
            ax.set_title(f"{model}, by {'partition' if split == 'partition' else 'true label (clean vs noisy)'}",
                         fontsize=10)
            ax.legend(frameon=False, fontsize=8)
            _style(ax)
    return _png(fig)


def _top_classes(counts: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the ``cap`` largest classes by ``counts``, in class order."""
    order = np.argsort(-counts, kind="stable")
    return np.sort(order[:cap]) if len(counts) > cap else np.arange(len(counts))


def plot_transition(*, st: LabelStats, names: list[str]) -> str:
    """Given x final label heatmap of the HEATMAP_MAX largest classes (the rest merged into "other")."""
    keep = _top_classes(st.per_class["n"], HEATMAP_MAX)
    m = st.transition
    labels = [_mpl_text(names[i], 18) for i in keep]
    if len(keep) < st.c:
        rest = np.setdiff1d(np.arange(st.c), keep)
        sub = np.zeros((len(keep) + 1, len(keep) + 1), np.int64)
        sub[:-1, :-1] = m[np.ix_(keep, keep)]
        sub[:-1, -1] = m[np.ix_(keep, rest)].sum(1)
        sub[-1, :-1] = m[np.ix_(rest, keep)].sum(0)
        sub[-1, -1] = m[np.ix_(rest, rest)].sum()
        m = sub
        labels.append(f"(other {len(rest)})")
    k = len(labels)
    frac = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = min(11.0, max(4.6, 0.38 * k + 2.5))
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="equal")
    fs = 9 if k <= 10 else (7 if k <= 20 else 5)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, f"{m[i, j]:,}", ha="center", va="center", fontsize=fs,
                            color="white" if frac[i, j] > 0.55 else "#263238")
    ax.set_xticks(range(k), labels, rotation=60 if k > 6 else 0, ha="right" if k > 6 else "center", fontsize=fs + 1)
    ax.set_yticks(range(k), labels, fontsize=fs + 1)
    ax.set_xlabel("final label")
    ax.set_ylabel("given label")
    ax.set_title("Given → final label (colour: fraction of the given class; numbers: samples)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.75, label="fraction of given class")
    return _png(fig)


def plot_noise(*, st: LabelStats, names: list[str]) -> str:
    """Estimated (and, with clean labels, true) noise per given class, HEATMAP_MAX largest classes."""
    keep = _top_classes(st.per_class["n"], HEATMAP_MAX)
    n = np.maximum(st.per_class["n"][keep], 1)
    est = (st.per_class["P"][keep] + st.per_class["H"][keep]) / n
    p_only = st.per_class["P"][keep] / n
    fig = _figure(min(12, max(6.5, 0.45 * len(keep) + 3)), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(keep))
    w = 0.38 if st.has_clean else 0.6
    off = -w / 2 if st.has_clean else 0
    ax.bar(x + off, est, width=w, color="#ffb74d", label="estimated noise: not in R (P + H)")
    ax.bar(x + off, p_only, width=w, color="#ef6c00", label="of which P (both models reject)")
    if st.has_clean:
        known = np.maximum(st.per_class["known"][keep], 1)
        ax.bar(x + w / 2, st.per_class["noisy"][keep] / known, width=w, color="#c62828",
               label="true noise (given ≠ clean)")
    ax.set_xticks(x, [_mpl_text(names[i], 16) for i in keep], rotation=45 if len(keep) > 6 else 0,
                  ha="right" if len(keep) > 6 else "center", fontsize=8 if len(keep) > 12 else 9)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("given label")
    ax.set_ylabel("fraction of the class")
    ax.set_title("Estimated noise per given class (final partition)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _style(ax)
    return _png(fig)

