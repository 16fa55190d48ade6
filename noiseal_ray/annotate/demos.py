"""Demonstrations: a bounded pool of R samples and cosine retrieval over it (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DemoPool:
    """R samples available as demonstrations.

    texts: (n,) object; labels: (n,) int64; embeddings: (n, D) float32, rows L2-normalised.
    """

    texts: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def nearest(self, queries: np.ndarray, *, k: int, class_balanced: bool = False,
                num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (m, k') and cosine similarities (m, k') of the most similar pool rows, most
        similar first; k' = min(k, len(pool)). ``queries``: (m, D), L2-normalised.

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
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(s, order, axis=1)
