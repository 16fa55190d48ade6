"""Ray Data scoring: both models score every sample; thresholds from distributed aggregates.

Output columns added to each row: p_strong, p_weak (probability of the given label), pred,
pred_prob (strong model's argmax and its probability), probs (C,), embedding (D,) L2-normalised,
truncated (the text was longer than max_length tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from ray.data import Dataset

SCORE_COLUMNS = ("p_strong", "p_weak", "pred", "pred_prob", "probs", "embedding", "truncated")


class Scorer:
    """Callable class for ``Dataset.map_batches``: loads a model bundle once per actor."""

    def __init__(self, *, model_dir: str, batch_size: int = 64, threads: int | None = None,
                 with_embedding: bool = True):
        import torch
        import transformers

        from noiseal_ray.models.bundle import load_bundle, set_threads

        transformers.logging.set_verbosity_error()
        set_threads(threads)
        self.bundle = load_bundle(model_dir)
        self.bundle.strong.eval()
        if self.bundle.weak is not None:
            self.bundle.weak.eval()
        self.batch_size = batch_size
        self.with_embedding = with_embedding
        self.torch = torch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch`` (columns text, optionally label) with ``SCORE_COLUMNS`` added (replaced if present)."""
        torch = self.torch
        from noiseal_ray.models.bundle import encode

        texts = [str(t) for t in batch["text"]]
        n = len(texts)
        labels = np.asarray(batch["label"], dtype=np.int64) if "label" in batch else np.zeros(n, np.int64)
        c = self.bundle.num_classes
        probs_s = np.zeros((n, c), np.float32)
        probs_w = np.zeros((n, c), np.float32)
        emb = np.zeros((n, self.bundle.strong.emb_dim), np.float32)
        trunc = np.zeros(n, bool)
        # Length bucketing: sorted texts pad to similar lengths, the largest CPU saving there is.
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                idx = order[s:s + self.batch_size]
                ids, mask, tr = encode(self.bundle.tokenizer, [texts[i] for i in idx],
                                       max_length=self.bundle.max_length)
                logits, e = self.bundle.strong(ids, mask)
                probs_s[idx] = torch.softmax(logits.float(), -1).numpy()
                e = torch.nn.functional.normalize(e.float(), dim=-1)
                emb[idx] = e.numpy()
                trunc[idx] = tr.numpy()
                if self.bundle.weak is not None:
                    lw, _ = self.bundle.weak(ids, mask)
                    probs_w[idx] = torch.softmax(lw.float(), -1).numpy()
        rows = np.arange(n)
        safe = np.clip(labels, 0, c - 1)
        out = {k: v for k, v in batch.items() if k not in SCORE_COLUMNS}
        out.update(
            p_strong=probs_s[rows, safe],
            p_weak=probs_w[rows, safe],
            pred=probs_s.argmax(1).astype(np.int64),
            pred_prob=probs_s.max(1),
            probs=probs_s,
            truncated=trunc,
        )
        if self.with_embedding:
            out["embedding"] = emb
        return out


def reduce_sum(ds: Dataset, fn: Callable[..., dict[str, np.ndarray]], **fn_kwargs: Any) -> dict[str, np.ndarray]:
    """Distributed aggregate: ``fn`` maps each batch to one row of partial sums (arrays of fixed
    shape); the driver adds up those rows, one per batch, never the data itself."""
    total: dict[str, np.ndarray] = {}
    parts = ds.map_batches(fn, fn_kwargs=fn_kwargs, batch_format="numpy", batch_size=8192)
    for batch in parts.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            s = np.asarray(v).sum(axis=0)
            total[k] = total[k] + s if k in total else s
    return total
