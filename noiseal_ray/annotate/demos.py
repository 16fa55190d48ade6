"""Demonstrations: a bounded, seeded sample of R (the pool) and cosine retrieval over it.

``DemoPool`` and its retrieval are numpy only. ``demo_pool`` samples the pool from a scored
round table with Ray, imported inside the functions: importing it takes seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noiseal_ray.partition import CODES
from noiseal_ray.ray_session import configure_data_context
from noiseal_ray.split import RuleThresholds
from noiseal_ray.stages.tables import read_dir, table_columns
from noiseal_ray.stages.thresholds import assign_parts


@dataclass(frozen=True)
class DemoPool:
    """R samples available as demonstrations.

    texts: (n,) object; labels: (n,) int64; embeddings: (n, D) float32, rows L2-normalised;
    trusted: (n,) bool, reviewed rows (None: none).
    """

    texts: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray
    trusted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def nearest(self, queries: np.ndarray, *, k: int, class_balanced: bool = False,
                num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (m, k') and cosine similarities (m, k') of the most similar pool rows, most
        similar first, except that trusted (reviewed) rows among them come before the others;
        k' = min(k, len(pool)). ``queries``: (m, D), L2-normalised.

        class_balanced: take about k / C per class (at least one), then order by similarity.
        """
        m = queries.shape[0]
        if len(self) == 0 or k == 0:
            return np.zeros((m, 0), np.int64), np.zeros((m, 0), np.float32)
        sims = queries.astype(np.float32) @ self.embeddings.T  # (m, n)
        k = min(k, len(self))
        if not class_balanced:
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            c = num_classes or int(self.labels.max()) + 1
            per = max(1, k // c)
            parts = []
            for cls in range(c):
                cols = np.flatnonzero(self.labels == cls)
                if not len(cols):
                    continue
                kk = min(per, len(cols))
                top = np.argpartition(-sims[:, cols], kk - 1, axis=1)[:, :kk]
                parts.append(cols[top])
            idx = np.concatenate(parts, axis=1)
        s = np.take_along_axis(sims, idx, axis=1)
        order = np.argsort(-s, axis=1, kind="stable")
        idx, s = np.take_along_axis(idx, order, axis=1), np.take_along_axis(s, order, axis=1)
        if self.trusted is not None and self.trusted.any():
            first = np.argsort(~self.trusted[idx], axis=1, kind="stable")  # trusted first, each part by similarity
            idx, s = np.take_along_axis(idx, first, axis=1), np.take_along_axis(s, first, axis=1)
        return idx, s


# ---------------------------------------------------------------------------------------------
# sampling the pool from a scored round table
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolHandle:
    """A demonstration pool (``DemoPool``) in Ray's object store; the driver holds only this."""

    ref: object  # ObjectRef[DemoPool]
    size: int

    def __len__(self) -> int:
        return self.size


def demo_pool(*, scored_dir: Path, split: RuleThresholds, num_classes: int, per_class: int,
              seed: int) -> PoolHandle:
    """A seeded uniform sample of R, at most ``per_class`` rows per class, for retrieval.

    Built by one Ray task (see ``build_demo_pool``) straight into the object store, where the
    annotate actors fetch it: the driver's memory does not depend on the corpus or on the pool.
    """
    import ray  # deferred: heavy (module docstring)

    build = ray.remote(num_cpus=0, num_returns=2)(_build_demo_pool_task)
    ref, size = build.remote(scored_dir=scored_dir, split=split, num_classes=num_classes,
                             per_class=per_class, seed=seed)
    return PoolHandle(ref=ref, size=int(ray.get(size)))


def _build_demo_pool_task(**kw):
    configure_data_context()  # a fresh worker: no progress bars, ordered execution
    pool = build_demo_pool(**kw)
    return pool, len(pool)


def hash_text(text: str) -> int:
    """A stable 64-bit hash of ``text`` (blake2b), the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _bottom_k(batch: dict, *, split: RuleThresholds, seed: int, per_class: int) -> dict:
    """Per class, the ``per_class`` R rows of ``batch`` with the smallest seeded hash ``u``; a
    trusted (reviewed) row gets u = 0, so it is always sampled, and u = 0 marks it in the pool."""
    batch = assign_parts(batch=batch, split=split)
    u = np.array([hash_text(f"{seed}:{t}") or 1 for t in batch["text"]], dtype=np.uint64)
    if "trusted" in batch:
        u[batch["trusted"].astype(bool)] = 0
    y = batch["label"].astype(np.int64)
    keep = []
    for c in np.unique(y[batch["part"] == CODES["R"]]):
        rows = np.flatnonzero((batch["part"] == CODES["R"]) & (y == c))
        keep.append(rows[np.argsort(u[rows], kind="stable")[:per_class]])
    k = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return {"text": batch["text"][k], "label": y[k], "embedding": batch["embedding"][k], "u": u[k]}


def _bottom_k_merge(texts, labels, embs, us, per_class):
    """Concatenate partial samples and keep the ``per_class`` smallest hashes of each class."""
    t, y, e, u = (np.concatenate(x) if x else np.zeros(0) for x in (texts, labels, embs, us))
    if not len(y):
        return [t], [y.astype(np.int64)], [e], [u]
    order = np.lexsort((u, y))
    y_sorted = y[order]
    first = np.searchsorted(y_sorted, y_sorted, side="left")
    rank = np.arange(len(order)) - first
    k = order[rank < per_class]
    return [t[k]], [y[k].astype(np.int64)], [e[k]], [u[k]]


def build_demo_pool(*, scored_dir: Path, split: RuleThresholds, num_classes: int, per_class: int,
                    seed: int) -> DemoPool:
    """The ``DemoPool`` of ``demo_pool``, built in the calling process.

    One pass: each batch keeps, per class, its ``per_class`` R rows with the smallest seeded
    hash; the caller merges those bounded partial samples into the global bottom-k (the same
    rows whatever the batching, so the sample is deterministic). Memory: at most about
    5 * per_class * num_classes rows at a time, whatever the corpus size.
    """
    cols = ["text", "label", "p_strong", "p_weak", "pred", "embedding"]
    cols += ["trusted"] if "trusted" in table_columns(scored_dir) else []
    parts = read_dir(path=scored_dir, columns=cols).map_batches(
        _bottom_k, fn_kwargs={"split": split, "seed": seed, "per_class": per_class},
        batch_format="numpy", batch_size=4096)
    texts, labels, embs, us = [], [], [], []
    for b in parts.iter_batches(batch_size=None, batch_format="numpy"):
        texts.append(b["text"])
        labels.append(b["label"])
        embs.append(b["embedding"])
        us.append(b["u"])
        if sum(len(x) for x in labels) > 4 * per_class * num_classes:
            texts, labels, embs, us = _bottom_k_merge(texts, labels, embs, us, per_class)
    texts, labels, embs, us = _bottom_k_merge(texts, labels, embs, us, per_class)
    if not len(labels[0]):
        return DemoPool(texts=np.zeros(0, object), labels=np.zeros(0, np.int64), embeddings=np.zeros((0, 1), np.float32))
    return DemoPool(texts=texts[0].astype(object), labels=labels[0], embeddings=embs[0].astype(np.float32),
                    trusted=us[0] == 0)
