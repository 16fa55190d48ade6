"""Streaming aggregates of a run's tables: per-round confidence histograms and per-class label counts.

Both read their parquet input in record batches, so a corpus of millions of rows costs a few
fine-grained histograms, per-class counts and the top rows of the review tables, not the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from noiseal_ray.report.limits import CLEAN_COLORS, FINE_BINS, PART_NAMES, TOP_ROWS
from noiseal_ray.report.read import iter_batches, label_codes, parquet_columns

if TYPE_CHECKING:
    import pandas as pd

LABEL_COLUMNS = ["id", "text", "given_label", "final_label", "partition", "llm_label", "llm_logprob", "p_strong",
                 "p_weak", "pred_label", "pred_prob", "changed", "clean_label", "reviewed"]
PER_CLASS_KEYS = ("n", "R", "P", "H", "changed", "known", "noisy", "final_right")
# Partial top-k frames kept before they are merged: bounds memory without a merge per batch.
MERGE_EVERY = 8


@dataclass
class RoundHist:
    """Fine histograms (FINE_BINS counts on [0, 1]) of p_strong / p_weak for one round.

    ``strong``/``weak`` map a group (R, P, H, "truly clean", "truly noisy") to its counts;
    ``tau_*`` are that round's thresholds, one per class (or one global), or None if unknown.
    """

    round_no: int
    strong: dict[str, np.ndarray] = field(default_factory=dict)
    weak: dict[str, np.ndarray] = field(default_factory=dict)
    tau_strong: np.ndarray | None = None
    tau_weak: np.ndarray | None = None


def round_hist(*, table: Path, round_no: int, thresholds: dict | None) -> RoundHist:
    """Histograms of round ``round_no``'s table (rounds/r{n}/table/) with its ``thresholds``
    ({"strong": [...], "weak": [...]} or None)."""
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
    """What one streaming pass over labels.parquet found, for C classes.

    ``transition``: (C, C) counts of given x final label; ``per_class``: PER_CLASS_KEYS -> (C,)
    counts by given label (``known``/``noisy``/``final_right`` only with clean labels);
    ``corrections``/``doubtful``: pandas DataFrames of the TOP_ROWS most confident changed rows
    and the TOP_ROWS H rows closest to their thresholds, or None when there are none.
    """

    c: int
    has_clean: bool
    transition: np.ndarray
    per_class: dict[str, np.ndarray]
    rows: int = 0
    corrections: pd.DataFrame | None = None
    doubtful: pd.DataFrame | None = None
    n_changed: int = 0
    n_hard: int = 0
    # Reviewed (trusted) rows: how many, how many the reviewer relabeled, on how many of those the
    # final strong model predicts the reviewed label, and the first TOP_ROWS relabeled ones.
    n_reviewed: int = 0
    n_reviewed_changed: int = 0
    n_reviewed_changed_learnt: int = 0
    reviewed_changed: pd.DataFrame | None = None


def label_stats(*, path: Path, names: list[str], tau: dict | None) -> LabelStats:
    """Aggregate labels.parquet at ``path``; ``names`` are the C label names (their order gives
    the codes), ``tau`` the final thresholds ({"strong": [...], "weak": [...]} or None)."""
    import pandas as pd

    c = len(names)
    index = {n: i for i, n in enumerate(names)}
    st = LabelStats(c=c, has_clean="clean_label" in parquet_columns(path), transition=np.zeros((c, c), np.int64),
                    per_class={k: np.zeros(c, np.int64) for k in PER_CLASS_KEYS})
    ts = np.asarray((tau or {}).get("strong") or [np.nan], dtype=np.float64)
    tw = np.asarray((tau or {}).get("weak") or [np.nan], dtype=np.float64)
    corr, doubt = [], []
    for b in iter_batches(path, LABEL_COLUMNS):
        df = b.to_pandas()
        g, changed = _count_batch(st, df, index)
        # A reviewer's relabel is not the run's correction: those rows have their own table.
        reviewed = df["reviewed"].fillna(False).astype(bool).to_numpy() if "reviewed" in df else np.zeros(len(df), bool)
        ours = changed & ~reviewed
        if ours.any():
            corr.append(_top_corrections(df[ours].copy()))
        if "reviewed" in df and df["reviewed"].any():
            _count_reviewed(st, df[df["reviewed"].astype(bool)])
        hard = df["partition"].astype(str).to_numpy() == "H"
        st.n_hard += int(hard.sum())
        if hard.any():
            doubt.append(_most_doubtful(df[hard].copy(), g[hard], ts, tw))
        if len(corr) > MERGE_EVERY:
            corr = [pd.concat(corr).nlargest(TOP_ROWS, "confidence")]
        if len(doubt) > MERGE_EVERY:
            doubt = [pd.concat(doubt).nsmallest(TOP_ROWS, "distance")]
    st.corrections = pd.concat(corr).nlargest(TOP_ROWS, "confidence") if corr else None
    st.doubtful = pd.concat(doubt).nsmallest(TOP_ROWS, "distance") if doubt else None
    return st


def _count_reviewed(st: LabelStats, rev: pd.DataFrame) -> None:
    """Add a batch's reviewed rows ``rev`` to ``st``: counts, and relabeled rows up to TOP_ROWS."""
    import pandas as pd

    changed = rev[rev["given_label"] != rev["final_label"]]
    st.n_reviewed += len(rev)
    st.n_reviewed_changed += len(changed)
    st.n_reviewed_changed_learnt += int((changed["pred_label"] == changed["final_label"]).sum())
    have = 0 if st.reviewed_changed is None else len(st.reviewed_changed)
    if have < TOP_ROWS and len(changed):
        st.reviewed_changed = pd.concat([x for x in (st.reviewed_changed, changed.head(TOP_ROWS - have))
                                         if x is not None])


def _count_batch(st: LabelStats, df: pd.DataFrame, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Add one batch to ``st``'s counts; returns its given-label codes and changed mask, both (n,)."""
    c = st.c
    st.rows += len(df)
    g = label_codes(df["given_label"], index=index)
    f = label_codes(df["final_label"], index=index)
    ok = (g >= 0) & (f >= 0)
    np.add.at(st.transition, (g[ok], f[ok]), 1)
    part = df["partition"].astype(str).to_numpy()
    st.per_class["n"] += np.bincount(g[g >= 0], minlength=c)
    for p in PART_NAMES:
        st.per_class[p] += np.bincount(g[(g >= 0) & (part == p)], minlength=c)
    changed = df["changed"].astype(bool).to_numpy() if "changed" in df else (g != f)
    st.per_class["changed"] += np.bincount(g[(g >= 0) & changed], minlength=c)
    st.n_changed += int(changed.sum())
    if st.has_clean:
        k = label_codes(df["clean_label"], index=index)
        known = (g >= 0) & (k >= 0)
        st.per_class["known"] += np.bincount(g[known], minlength=c)
        st.per_class["noisy"] += np.bincount(g[known & (k != g)], minlength=c)
        st.per_class["final_right"] += np.bincount(g[known & (k == f)], minlength=c)
    return g, changed


def _top_corrections(ch: pd.DataFrame) -> pd.DataFrame:
    """The TOP_ROWS most confident of the changed rows ``ch``, with ``source`` and ``confidence``.

    Confidence is the annotator's (exp of its log-probability) for P rows it relabeled, else the
    strong model's probability of its prediction.
    """
    from_llm = (ch["partition"] == "P") & ch["llm_label"].notna() & (ch["llm_label"] == ch["final_label"])
    ch["source"] = np.where(from_llm, "annotator", "strong model")
    ch["confidence"] = np.where(from_llm, np.exp(ch["llm_logprob"].astype(float)), ch["pred_prob"].astype(float))
    return ch.nlargest(TOP_ROWS, "confidence")


def _most_doubtful(hard: pd.DataFrame, given: np.ndarray, ts: np.ndarray, tw: np.ndarray) -> pd.DataFrame:
    """The TOP_ROWS H rows ``hard`` closest to the thresholds of their given class (codes ``given``):
    distance = max(|p_strong - tau_strong|, |p_weak - tau_weak|); one threshold applies to all when
    ``ts``/``tw`` hold a single (global) value."""
    codes = np.clip(given, 0, None)
    tsv = ts[codes] if len(ts) > 1 else np.full(len(hard), ts[0])
    twv = tw[codes] if len(tw) > 1 else np.full(len(hard), tw[0])
    hard["tau_strong"] = tsv
    hard["tau_weak"] = twv
    hard["distance"] = np.maximum(np.abs(hard["p_strong"].astype(float) - tsv),
                                  np.abs(hard["p_weak"].astype(float) - twv))
    return hard.nsmallest(TOP_ROWS, "distance")
