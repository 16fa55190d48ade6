"""The run report: one self-contained ``report.html`` (inline CSS, plots as base64 PNG).

    noiseal-ray report runs/demo                 # writes runs/demo/report.html
    python -c "from noiseal_ray.report import write_report; write_report(run_dir='runs/demo')"

Reads only what a finished run leaves behind: ``config.yaml``, ``manifest.json``,
``metrics.json``, ``labels.parquet/`` and ``rounds/r{n}/table/`` (streamed in record batches, so
a corpus of millions of rows costs a few fine-grained histograms and per-class counts, not the
corpus in memory). Every string taken from the run (texts, ids, label names, paths, errors) is
HTML-escaped. Large label sets are capped (heatmap 30 classes, tables 50); the report says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from noiseal_ray.errors import InputError

PART_NAMES = ("R", "P", "H")
PART_COLORS = {"R": "#2e7d32", "P": "#ef6c00", "H": "#5e35b1"}
CLEAN_COLORS = {"truly clean": "#1976d2", "truly noisy": "#c62828"}
HEATMAP_MAX = 30      # classes shown in the transition heatmap / noise plot
TABLE_MAX = 50        # classes listed in the per-class table
TOP_ROWS = 25         # rows in the corrections / doubtful tables
MAX_ROUND_PLOTS = 8   # rounds with confidence histograms
FINE_BINS = 500       # streaming histogram resolution on [0, 1]
TEXT_CHARS = 300


# ---------------------------------------------------------------------------------------------
# reading a run directory
# ---------------------------------------------------------------------------------------------

def open_run(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path after checking it holds a finished run; else InputError."""
    p = Path(run_dir)
    if not p.exists():
        raise InputError(f"run directory {p} does not exist")
    if not p.is_dir():
        raise InputError(f"{p} is not a directory (expected a run directory written by `noiseal-ray run --out`)")
    if not (p / "manifest.json").is_file() or not (p / "config.yaml").is_file():
        raise InputError(f"{p} is not a noiseal-ray run directory (no manifest.json/config.yaml); "
                         "pass the --out directory of `noiseal-ray run`")
    missing = [n for n in ("metrics.json", "labels.parquet") if not (p / n).exists()]
    if missing:
        raise InputError(f"the run in {p} has not finished ({', '.join(missing)} missing); "
                         "rerun the same `noiseal-ray run` command to complete it")
    return p


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def read_config(run: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {run / 'config.yaml'}: {exc}") from None


def iter_batches(path: Path, columns: list[str], batch_size: int = 65536):
    """Record batches of a parquet directory (or file), restricted to ``columns`` present."""
    import pyarrow.dataset as pads

    ds = pads.dataset(str(path), format="parquet")
    cols = [c for c in columns if c in ds.schema.names]
    yield from ds.to_batches(columns=cols, batch_size=batch_size)


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.dataset as pads

    return list(pads.dataset(str(path), format="parquet").schema.names)


def label_codes(values, index: dict[str, int]) -> np.ndarray:
    """Label strings (arrow or list) -> int codes; -1 for null/unknown."""
    import pandas as pd

    s = pd.Series(values.to_pylist() if hasattr(values, "to_pylist") else values, dtype=object)
    return s.map(index).fillna(-1).astype(np.int64).to_numpy()


# ---------------------------------------------------------------------------------------------
# aggregates
# ---------------------------------------------------------------------------------------------

@dataclass
class RoundHist:
    """Fine histograms of p_strong / p_weak on [0, 1] for one round, by partition and truth."""

    round_no: int
    strong: dict[str, np.ndarray] = field(default_factory=dict)
    weak: dict[str, np.ndarray] = field(default_factory=dict)
    tau_strong: np.ndarray | None = None
    tau_weak: np.ndarray | None = None


def round_hist(table: Path, round_no: int, thresholds: dict | None) -> RoundHist:
    edges = np.linspace(0.0, 1.0, FINE_BINS + 1)
    h = RoundHist(round_no)
    groups = list(PART_NAMES) + list(CLEAN_COLORS)
    for key in ("strong", "weak"):
        setattr(h, key, {g: np.zeros(FINE_BINS, np.int64) for g in groups})
    for b in iter_batches(table, ["part", "label", "clean_label", "p_strong", "p_weak"]):
        part = b.column("part").to_numpy(zero_copy_only=False).astype(np.int64)
        label = b.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
        names = b.schema.names
        clean = (b.column("clean_label").to_numpy(zero_copy_only=False).astype(np.int64)
                 if "clean_label" in names else np.full(len(part), -1))
        masks = {n: part == i for i, n in enumerate(PART_NAMES)}
        masks["truly clean"] = (clean >= 0) & (clean == label)
        masks["truly noisy"] = (clean >= 0) & (clean != label)
        for key in ("strong", "weak"):
            col = f"p_{key}"
            if col not in names:
                continue
            v = np.clip(np.nan_to_num(b.column(col).to_numpy(zero_copy_only=False).astype(np.float64)), 0, 1)
            for g, m in masks.items():
                if m.any():
                    getattr(h, key)[g] += np.histogram(v[m], bins=edges)[0]
    if thresholds:
        h.tau_strong = np.asarray(thresholds.get("strong") or [], dtype=np.float64)
        h.tau_weak = np.asarray(thresholds.get("weak") or [], dtype=np.float64)
    return h


@dataclass
class LabelStats:
    """One streaming pass over labels.parquet."""

    c: int
    has_clean: bool
    rows: int = 0
    transition: np.ndarray = None          # (C, C) given x final
    per_class: dict[str, np.ndarray] = None
    corrections: object = None             # pandas DataFrame, top TOP_ROWS
    doubtful: object = None
    n_changed: int = 0
    n_hard: int = 0


def label_stats(path: Path, names: list[str], tau: dict | None) -> LabelStats:
    import pandas as pd

    c = len(names)
    index = {n: i for i, n in enumerate(names)}
    cols_present = parquet_columns(path)
    has_clean = "clean_label" in cols_present
    st = LabelStats(c=c, has_clean=has_clean)
    st.transition = np.zeros((c, c), np.int64)
    st.per_class = {k: np.zeros(c, np.int64) for k in ("n", "R", "P", "H", "changed", "known", "noisy", "final_right")}
    ts = np.asarray((tau or {}).get("strong") or [np.nan], dtype=np.float64)
    tw = np.asarray((tau or {}).get("weak") or [np.nan], dtype=np.float64)
    want = ["id", "text", "given_label", "final_label", "partition", "llm_label", "llm_logprob", "p_strong",
            "p_weak", "pred_label", "pred_prob", "changed", "clean_label"]
    corr, doubt = [], []
    for b in iter_batches(path, want):
        df = b.to_pandas()
        n = len(df)
        st.rows += n
        g = label_codes(df["given_label"], index)
        f = label_codes(df["final_label"], index)
        ok = (g >= 0) & (f >= 0)
        np.add.at(st.transition, (g[ok], f[ok]), 1)
        part = df["partition"].astype(str).to_numpy()
        gi = g[g >= 0]
        st.per_class["n"] += np.bincount(gi, minlength=c)
        for p in PART_NAMES:
            st.per_class[p] += np.bincount(g[(g >= 0) & (part == p)], minlength=c)
        changed = df["changed"].astype(bool).to_numpy() if "changed" in df else (g != f)
        st.per_class["changed"] += np.bincount(g[(g >= 0) & changed], minlength=c)
        st.n_changed += int(changed.sum())
        if has_clean:
            k = label_codes(df["clean_label"], index)
            known = (g >= 0) & (k >= 0)
            st.per_class["known"] += np.bincount(g[known], minlength=c)
            st.per_class["noisy"] += np.bincount(g[known & (k != g)], minlength=c)
            st.per_class["final_right"] += np.bincount(g[known & (k == f)], minlength=c)
        # most confident corrections: annotator confidence for P rows it relabeled, else pred_prob
        ch = df[changed].copy()
        if len(ch):
            from_llm = (ch["partition"] == "P") & ch["llm_label"].notna() & (ch["llm_label"] == ch["final_label"])
            conf = np.where(from_llm, np.exp(ch["llm_logprob"].astype(float)), ch["pred_prob"].astype(float))
            ch["source"] = np.where(from_llm, "annotator", "strong model")
            ch["confidence"] = conf
            corr.append(ch.nlargest(TOP_ROWS, "confidence"))
        hard = df[part == "H"].copy()
        st.n_hard += len(hard)
        if len(hard):
            gh = g[part == "H"]
            gh_ok = np.clip(gh, 0, None)
            tsv = ts[gh_ok] if len(ts) > 1 else np.full(len(hard), ts[0])
            twv = tw[gh_ok] if len(tw) > 1 else np.full(len(hard), tw[0])
            hard["tau_strong"] = tsv
            hard["tau_weak"] = twv
            hard["distance"] = np.maximum(np.abs(hard["p_strong"].astype(float) - tsv),
                                          np.abs(hard["p_weak"].astype(float) - twv))
            doubt.append(hard.nsmallest(TOP_ROWS, "distance"))
        if len(corr) > 8:
            corr = [pd.concat(corr).nlargest(TOP_ROWS, "confidence")]
        if len(doubt) > 8:
            doubt = [pd.concat(doubt).nsmallest(TOP_ROWS, "distance")]
    st.corrections = pd.concat(corr).nlargest(TOP_ROWS, "confidence") if corr else None
    st.doubtful = pd.concat(doubt).nsmallest(TOP_ROWS, "distance") if doubt else None
    return st


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's object API with the Agg canvas: no pyplot, no global state)
# ---------------------------------------------------------------------------------------------

def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    return fig


def _png(fig) -> str:
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


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)


def round_tick(r: int, last: int) -> str:
    return "final" if r == last else str(r)


def plot_sizes(rounds: list[dict], last: int) -> str:
    rs = [e for e in rounds if "sizes" in e]
    fig = _figure(8.5, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(rs))
    bottom = np.zeros(len(rs))
    total = np.array([sum(e["sizes"].values()) for e in rs], dtype=float)
    for p in PART_NAMES:
        v = np.array([e["sizes"].get(p, 0) for e in rs], dtype=float)
        bars = ax.bar(x, v, bottom=bottom, color=PART_COLORS[p], label={"R": "R (clean)", "P": "P (purified)",
                                                                         "H": "H (hard)"}[p], width=0.6)
        for xi, b, val, t in zip(x, bottom, v, total):
            if t and val / t > 0.06:
                ax.text(xi, b + val / 2, f"{int(val):,}", ha="center", va="center", color="white", fontsize=9)
        bottom += v
        del bars
    ax.set_xticks(x, [round_tick(e["round"], last) for e in rs])
    ax.set_xlabel("round (partition before that round's training; 'final' = after the last one)")
    ax.set_ylabel("samples")
    ax.set_title("R / P / H sizes per round")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _style(ax)
    return _png(fig)


def plot_quality(rounds: list[dict], last: int) -> str | None:
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
        ax.set_xticks(xs, [round_tick(e["round"], last) for e in det])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("round")
        ax.set_ylabel("fraction")
        ax.set_title("Noise detection and label recovery (vs clean labels)")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _style(ax)
    return _png(fig)


def _display_range(hists: list[RoundHist], key: str) -> tuple[int, int]:
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


def plot_confidence(h: RoundHist, ranges: dict[str, tuple[int, int]], *, has_clean: bool, last: int,
                    num_classes: int) -> str:
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
                label = {"R": "R (clean)", "P": "P (purified)", "H": "H (hard)"}.get(g, g)
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
    order = np.argsort(-counts, kind="stable")
    return np.sort(order[:cap]) if len(counts) > cap else np.arange(len(counts))


def plot_transition(st: LabelStats, names: list[str]) -> str:
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


def plot_noise(st: LabelStats, names: list[str]) -> str:
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


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def pct(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.{digits}f}%"


def num(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return esc(x)
    if math.isnan(f):
        return "–"
    if f.is_integer() and abs(f) >= 1 and isinstance(x, (int, np.integer)):
        return f"{int(f):,}"
    return f"{f:.{digits}f}"


def duration(s: float | None) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def img(b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{b64}">'


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``headers`` are escaped here; ``rows`` cells must already be escaped HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(items: list[tuple[str, str]]) -> str:
    return '<table class="kv"><tbody>' + "".join(
        f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items) + "</tbody></table>"


def short_text(t) -> str:
    t = "" if t is None else str(t)
    t = t if len(t) <= TEXT_CHARS else t[: TEXT_CHARS - 1] + "…"
    return f'<span class="text">{esc(t)}</span>'


CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --accent:#1565c0; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#102a43; color:#fff; padding:22px 36px 18px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:650; }
header .sub { color:#bcccdc; font-size:13px; word-break:break-all; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 36px; position:sticky; top:0; z-index:2; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:13px; }
main { max-width:1180px; margin:0 auto; padding:18px 28px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin:18px 0; }
h2 { margin:0 0 10px; font-size:18px; color:#102a43; }
h3 { margin:16px 0 8px; font-size:15px; color:#243b53; }
p.note, .note { color:var(--muted); font-size:12.5px; margin:6px 0; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:4px 0 4px; }
.card { flex:1 1 150px; border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfcfd; }
.card .v { font-size:22px; font-weight:650; }
.card .k { color:var(--muted); font-size:12px; }
.card.R .v { color:#2e7d32; } .card.P .v { color:#ef6c00; } .card.H .v { color:#5e35b1; }
table { border-collapse:collapse; width:100%; margin:8px 0; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:5px 8px; text-align:left; vertical-align:top; }
thead th { background:#f0f4f8; font-weight:600; position:sticky; top:37px; }
td.n, th.n { text-align:right; font-variant-numeric: tabular-nums; }
table.kv th { width:220px; color:var(--muted); font-weight:500; background:none; }
.cols { display:flex; gap:22px; flex-wrap:wrap; } .cols > div { flex:1 1 420px; min-width:0; }
img.plot { max-width:100%; height:auto; display:block; margin:8px auto; }
.text { white-space:pre-wrap; word-break:break-word; }
.narrow { max-width:720px; margin:0 auto; }
table.review td:first-child, table.review td:nth-child(n+5) { white-space:nowrap; }
.tag { display:inline-block; padding:0 7px; border-radius:10px; font-size:12px; color:#fff; }
.tag.R { background:#2e7d32; } .tag.P { background:#ef6c00; } .tag.H { background:#5e35b1; }
.ok { color:#2e7d32; font-weight:600; } .bad { color:#c62828; font-weight:600; }
code { background:#f0f4f8; padding:1px 4px; border-radius:3px; font-size:12.5px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px; }
"""

# Sets data-images="loaded/total" and data-images-ok on <body> once every plot has decoded:
# lets a headless browser (and a curious reader) check the report rendered completely.
SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-images-ok', ok === imgs.length ? 'true' : 'false');
});
</script>
"""


def _tag(p) -> str:
    p = str(p)
    return f'<span class="tag {esc(p)}">{esc(p)}</span>' if p in PART_NAMES else esc(p)


def _truth(final, clean) -> str:
    if clean is None or (isinstance(clean, float) and math.isnan(clean)):
        return "–"
    mark = '<span class="ok">✓</span>' if final == clean else '<span class="bad">✗</span>'
    return f"{esc(clean)} {mark}"


def build_report(*, run_dir: str | Path) -> str:
    """The report's HTML (see module docstring); raises InputError for a missing/unfinished run."""
    run = open_run(run_dir)
    t0 = time.time()
    config = read_config(run)
    manifest = read_json(run / "manifest.json")
    metrics = read_json(run / "metrics.json")
    names = [str(n) for n in (metrics.get("label_names") or manifest.get("label_names") or [])]
    c = len(names)
    rounds = metrics.get("rounds", [])
    final = metrics.get("final", {})
    n_rounds = int(config.get("rounds") or 0)
    last = n_rounds + 1
    notes_caps: list[str] = []

    # --- per-row statistics -----------------------------------------------------------------
    thr_final = final.get("thresholds") or {k: manifest.get("thresholds", {}).get(k) for k in ("strong", "weak")}
    st = label_stats(run / "labels.parquet", names, thr_final)
    has_clean = st.has_clean and bool(manifest.get("has_clean", True))

    # --- per-round histograms ---------------------------------------------------------------
    history = (manifest.get("thresholds") or {}).get("history") or []
    part_rounds = [e["round"] for e in rounds if "sizes" in e]
    missing_tables = [r for r in part_rounds if not (run / "rounds" / f"r{r}" / "table").is_dir()]
    available = [r for r in part_rounds if r not in missing_tables]
    if len(available) > MAX_ROUND_PLOTS:
        pick = np.unique(np.linspace(0, len(available) - 1, MAX_ROUND_PLOTS).round().astype(int))
        shown = [available[i] for i in pick]
        notes_caps.append(f"confidence histograms are shown for {len(shown)} of {len(available)} rounds "
                          f"({', '.join(map(str, shown))})")
    else:
        shown = available
    by_round = {e["round"]: e for e in rounds}
    hists = []
    for r in shown:
        thr = history[r - 1] if 0 < r <= len(history) else by_round.get(r, {}).get("thresholds")
        hists.append(round_hist(run / "rounds" / f"r{r}" / "table", r, thr))

    # --- header numbers ---------------------------------------------------------------------
    sizes = final.get("sizes") or {}
    n = int(metrics.get("rows") or st.rows or 0)
    stage = metrics.get("stage_seconds") or {}
    total_s = sum(float(v) for v in stage.values()) if stage else None
    test_last, test_best = final.get("test_accuracy_last"), final.get("test_accuracy_best")
    det = final.get("detection")
    corr = final.get("correction")
    rec = final.get("recovery")
    annot = config.get("annotator") or metrics.get("annotator") or "none"
    ann_final = final.get("annotator") or {}

    cards = []

    def card(k, v, cls=""):
        cards.append(f'<div class="card {cls}"><div class="v">{v}</div><div class="k">{esc(k)}</div></div>')

    card("samples", f"{n:,}")
    card("classes", f"{c:,}")
    for p, full in (("R", "clean (R)"), ("P", "purified (P)"), ("H", "hard (H)")):
        v = int(sizes.get(p, 0))
        card(f"{full} · {pct(v / n if n else None)}", f"{v:,}", p)
    card("labels changed", f"{st.n_changed:,}")
    if test_last is not None:
        card(f"test accuracy (best {pct(test_best)})", pct(test_last))
    if det:
        card("noise detection F1", pct(det.get("f1")))
    if rec:
        card("label accuracy given → final", f"{pct(rec.get('given_accuracy'))} → {pct(rec.get('final_accuracy'))}")

    # --- summary ----------------------------------------------------------------------------
    llm_queries = metrics.get("annotator_queries", 0)
    ann_queries = sum(int((e.get("annotator") or {}).get("queries", 0)) for e in rounds)
    ann_desc = esc(annot)
    if annot == "llm":
        ann_desc += f" (<code>{esc(config.get('llm_model') or config.get('llm_endpoint') or 'packaged SmolLM2')}</code>)"
    elif annot == "none":
        ann_desc += " (P takes the strong model's prediction)"
    summary = [
        ("data", f"<code>{esc(metrics.get('data') or config.get('data'))}</code>"),
        ("test data", f"<code>{esc(config.get('test_data'))}</code>" if config.get("test_data")
         else "none (no test accuracy)"),
        ("rows / classes", f"{n:,} / {c:,}"),
        ("clean labels", "known: detection and recovery are measured" if has_clean else "not given"),
        ("strong model", f"<code>{esc(config.get('strong_model') or 'packaged MiniLM')}</code>"),
        ("weak model", f"BiLSTM (embedding {esc(config.get('weak_embed_dim'))}, hidden {esc(config.get('weak_hidden'))})"),
        ("schedule", f"{esc(config.get('warmup_epochs'))} warm-up epoch(s), {esc(n_rounds)} round(s) × "
                     f"{esc(config.get('epochs_per_round'))} epoch(s), {esc(config.get('workers'))} worker(s), "
                     f"batch {esc(config.get('batch_size'))}, max {esc(config.get('max_length'))} tokens"),
        ("thresholds", f"{'per-class' if config.get('per_class_threshold', True) else 'global'} EMA, "
                       f"beta {esc(config.get('ema_beta'))}"),
        ("annotator", ann_desc),
        ("annotated (final)", f"{int(ann_final.get('annotated_total', 0)):,} samples, "
                              f"{int(ann_final.get('failed', 0)):,} failed in the last round"),
        ("LLM queries", f"{int(llm_queries or 0):,}" if annot == "llm" else
         f"none (the {esc(annot)} annotator answered {int(ann_queries):,} queries without an LLM)"),
        ("hard samples", "strong model's prediction" if config.get("hard_policy", "strong") == "strong"
         else "keep the given label"),
        ("wall time (all stages)", duration(total_s) + (" — " + ", ".join(
            f"{esc(k)} {duration(v)}" for k, v in stage.items()) if stage else "")),
        ("seed", esc(config.get("seed"))),
    ]
    if metrics.get("wall_seconds_this_invocation") is not None:
        summary.append(("wall time (last invocation)", duration(metrics["wall_seconds_this_invocation"])))

    # --- rounds table -----------------------------------------------------------------------
    rrows = []
    for e in rounds:
        s = e.get("sizes") or {}
        a = e.get("annotator") or {}
        d = e.get("detection") or {}
        rc = e.get("recovery") or {}
        tr = e.get("train") or {}
        rrows.append([
            "warm-up" if e["round"] == 0 else ("final" if e["round"] == last else esc(e["round"])),
            *(f'<span class="n">{int(s[p]):,}</span>' if p in s else "–" for p in PART_NAMES),
            f"{int(a['new_answers']):,}" if "new_answers" in a else "–",
            f"{int(a['failed']):,}" if "failed" in a else "–",
            f"{int(e['changed']):,}" if "changed" in e else "–",
            num(tr.get("loss_strong")), num(tr.get("loss_weak")),
            pct(e.get("test_accuracy")),
            *((pct(d.get("precision")), pct(d.get("recall")), pct(d.get("f1")), pct(rc.get("final_accuracy")))
              if has_clean else ()),
        ])
    rheaders = ["round", "R", "P", "H", "new annotations", "failed", "changed", "loss strong", "loss weak",
                "test acc."] + (["det. precision", "det. recall", "det. F1", "label acc."] if has_clean else [])

    # --- per-class table --------------------------------------------------------------------
    pc = st.per_class
    order = np.argsort(-pc["n"], kind="stable")[:TABLE_MAX]
    crow = []
    for i in order:
        nn = max(int(pc["n"][i]), 1)
        row = [esc(names[i]), f"{int(pc['n'][i]):,}", pct(pc["R"][i] / nn), pct(pc["P"][i] / nn),
               pct(pc["H"][i] / nn), pct((pc["P"][i] + pc["H"][i]) / nn), f"{int(pc['changed'][i]):,}"]
        if has_clean:
            kn = int(pc["known"][i])
            row += [pct(pc["noisy"][i] / kn if kn else None), pct(pc["final_right"][i] / kn if kn else None)]
        crow.append(row)
    cheaders = ["given label", "samples", "R", "P", "H", "est. noise (not R)", "changed"] + (
        ["true noise", "final label acc."] if has_clean else [])
    if c > TABLE_MAX:
        notes_caps.append(f"the per-class table lists the {TABLE_MAX} largest of {c:,} classes")
    if c > HEATMAP_MAX:
        notes_caps.append(f"the transition heatmap and the noise plot show the {HEATMAP_MAX} largest of {c:,} "
                          f"classes; the rest are merged into “other”")

    # --- review tables ----------------------------------------------------------------------
    corr_rows = []
    if st.corrections is not None:
        for _, r in st.corrections.iterrows():
            corr_rows.append([esc(r["id"]), short_text(r["text"]), esc(r["given_label"]),
                              f"<b>{esc(r['final_label'])}</b>", _tag(r["partition"]), esc(r["source"]),
                              num(r["confidence"]), num(r["p_strong"]), num(r["p_weak"])]
                             + ([_truth(r["final_label"], r.get("clean_label"))] if has_clean else []))
    corr_headers = ["id", "text", "given", "suggested", "part", "source", "confidence", "p_strong", "p_weak"] + (
        ["clean label"] if has_clean else [])
    doubt_rows = []
    if st.doubtful is not None:
        for _, r in st.doubtful.iterrows():
            doubt_rows.append([esc(r["id"]), short_text(r["text"]), esc(r["given_label"]), esc(r["final_label"]),
                               f"{num(r['p_strong'])} <span class='note'>/ τ {num(r['tau_strong'])}</span>",
                               f"{num(r['p_weak'])} <span class='note'>/ τ {num(r['tau_weak'])}</span>",
                               num(r["distance"])]
                              + ([_truth(r["given_label"], r.get("clean_label"))] if has_clean else []))
    doubt_headers = ["id", "text", "given", "final", "p_strong / τ", "p_weak / τ", "distance"] + (
        ["clean label (vs given)"] if has_clean else [])

    # --- plots ------------------------------------------------------------------------------
    sizes_png = plot_sizes(rounds, last) if part_rounds else None
    quality_png = plot_quality(rounds, last)
    ranges = {k: _display_range(hists, k) for k in ("strong", "weak")} if hists else {}
    conf_pngs = [(h.round_no, plot_confidence(h, ranges, has_clean=has_clean, last=last, num_classes=c))
                 for h in hists]
    trans_png = plot_transition(st, names) if c else None
    noise_png = plot_noise(st, names) if c else None

    # --- assemble ---------------------------------------------------------------------------
    per_class_thr = any(h.tau_strong is not None and len(h.tau_strong) > 1 for h in hists)
    parts: list[str] = []
    parts.append(f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>'
                 f'{kv_table(summary)}</section>')
    s_html = '<section id="rounds"><h2>Rounds</h2>'
    if sizes_png:
        s_html += img(sizes_png, "R/P/H sizes per round")
    s_html += ('<p class="note">R: both models accept the given label (kept). P: both reject it (relabeled by the '
               'annotator). H: they disagree (trained with EmbMix; final label per the hard-sample policy). '
               '“final” is the partition after the last training round, which gives the final labels.</p>')
    s_html += table(rheaders, rrows, "rounds")
    if quality_png:
        s_html += "<h3>Quality</h3>" + img(quality_png, "test accuracy and detection metrics per round")
    else:
        s_html += '<p class="note">No test data and no clean labels: accuracy and detection metrics are not available.</p>'
    if has_clean and det:
        s_html += kv_table([
            ("detection precision / recall / F1", f"{pct(det.get('precision'))} / {pct(det.get('recall'))} / "
                                                  f"{pct(det.get('f1'))} <span class='note'>(flagged = P ∪ H vs truly noisy)</span>"),
            *([("changed labels as a detector: precision / recall / F1",
                f"{pct(corr.get('precision'))} / {pct(corr.get('recall'))} / {pct(corr.get('f1'))} "
                "<span class='note'>(changed = final label ≠ given label vs truly noisy)</span>")] if corr else []),
            ("P precision", pct(det.get("p_precision"))),
            ("label accuracy given → final", f"{pct((rec or {}).get('given_accuracy'))} → "
                                             f"{pct((rec or {}).get('final_accuracy'))}"),
            ("noisy labels fixed / clean labels broken", f"{pct((rec or {}).get('fixed'))} / "
                                                         f"{pct((rec or {}).get('broken'))}"),
            ("annotator accuracy", pct((rec or {}).get("annotator_accuracy"))),
        ])
    if test_last is not None:
        s_html += kv_table([("test accuracy (last / best)", f"{pct(test_last)} / {pct(test_best)}")])
    parts.append(s_html + "</section>")

    c_html = '<section id="confidence"><h2>Confidence distributions</h2>'
    c_html += ('<p class="note">Each model\'s probability of the <i>given</i> label, as scored at the start of the '
               'round (by the model trained in the previous round). A sample is accepted by a model when its '
               'probability reaches the threshold of its given class. ')
    if per_class_thr:
        c_html += ('Thresholds are per class: the dashed line is their mean and the grey band spans their range '
                   'across classes.')
    c_html += "</p>"
    if missing_tables:
        c_html += f'<p class="note">No round table for round(s) {esc(", ".join(map(str, missing_tables)))}.</p>'
    for r, png in conf_pngs:
        c_html += img(png, f"confidence histograms, round {r}")
    if not conf_pngs:
        c_html += '<p class="note">No round tables found under rounds/.</p>'
    parts.append(c_html + "</section>")

    l_html = '<section id="labels"><h2>Labels</h2>'
    if trans_png:
        l_html += ("<h3>Given → final</h3>"
                   f"<div class='narrow'>{img(trans_png, 'given to final label transition matrix')}</div>")
    if noise_png:
        l_html += f"<h3>Noise per class</h3>{img(noise_png, 'estimated noise per class')}"
    l_html += ('<p class="note">Estimated noise = share of a given class not in R. '
               + ("True noise = share whose given label differs from the clean label." if has_clean
                  else "Clean labels were not given, so true noise is unknown.") + "</p>")
    l_html += table(cheaders, crow, "classes")
    parts.append(l_html + "</section>")

    v_html = '<section id="review"><h2>Review</h2>'
    v_html += (f"<h3>Most confident corrections</h3><p class='note'>{st.n_changed:,} labels changed. Confidence is "
               "the annotator's (exp of its log-probability) for P samples it relabeled, else the strong model's "
               "probability of its prediction. Export them with <code>noiseal-ray export RUN_DIR --subset "
               "changed</code>.</p>")
    v_html += table(corr_headers, corr_rows, "review") if corr_rows else "<p class='note'>No label changed.</p>"
    v_html += (f"<h3>Most doubtful samples</h3><p class='note'>{st.n_hard:,} hard (H) samples. Listed: the H samples "
               "closest to the thresholds, by distance = max(|p_strong − τ_strong|, |p_weak − τ_weak|) with the "
               "thresholds of their given class: both models sit on their decision boundary.</p>")
    v_html += table(doubt_headers, doubt_rows, "review") if doubt_rows else "<p class='note'>No hard samples.</p>"
    parts.append(v_html + "</section>")

    if notes_caps:
        parts.append('<section id="notes"><h2>Notes</h2><ul>' + "".join(
            f"<li>{esc(x)}</li>" for x in notes_caps) + "</ul></section>")

    title = f"noiseal-ray report — {run.resolve().name}"
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("summary", "Summary"), ("rounds", "Rounds"), ("confidence", "Confidence"), ("labels", "Labels"),
        ("review", "Review")))
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
            f'<header><h1>{esc(title)}</h1><div class="sub">{esc(run.resolve())} · generated {esc(generated)} '
            f"in {time.time() - t0:.1f} s</div></header><nav>{nav}</nav><main>{''.join(parts)}</main>"
            f"<footer>noiseal-ray · NoiseAL (strong + weak co-training, R/P/H partition, annotator relabeling)"
            f"</footer>{SCRIPT}</body></html>\n")


def write_report(*, run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default RUN_DIR/report.html), atomically."""
    from noiseal_ray.data.io import atomic_write_text

    text = build_report(run_dir=run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, text)
    return path
