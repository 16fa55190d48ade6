"""What a finished run knows of each row, as numbers a review rule ranks by (pure numpy / arrow)."""

from __future__ import annotations

import numpy as np


def final_prob(*, given: np.ndarray, final: np.ndarray, pred: np.ndarray, p_given: np.ndarray,
               pred_prob: np.ndarray) -> np.ndarray:
    """The strong model's probability of each row's final label, (n,) float64.

    Labels (n,) int; ``p_given`` (n,) its probability of the given label, ``pred_prob`` (n,) of its
    argmax ``pred``. For a final label that is neither (an annotator's), the bound
    min(pred_prob, 1 - pred_prob - p_given) (the argmax is the most probable label, and the three
    probabilities sum to at most 1). NaN scores count as 0.5.
    """
    pg = np.nan_to_num(np.asarray(p_given, np.float64), nan=0.5)
    pp = np.nan_to_num(np.asarray(pred_prob, np.float64), nan=0.5)
    other = np.clip(np.minimum(pp, 1.0 - pp - np.where(given != pred, pg, 0.0)), 0.0, 1.0)
    return np.where(final == given, pg, np.where(final == pred, pp, other))


def rank_rows(*, rule: str, doubt: np.ndarray, given: np.ndarray, pred: np.ndarray, llm: np.ndarray,
              weak_rejects: np.ndarray, u: np.ndarray | None) -> np.ndarray:
    """How much a review of each row is worth under a scoring ``rule`` (doubt, disagree, random, sample;
    ``noiseal_ray.review.budget.review_priority``), from each row's doubt (n,) (1 - ``final_prob``)."""
    if rule == "doubt":
        return doubt
    if rule == "disagree":
        opinions = 1 + (pred != given) + ((llm >= 0) & (llm != given) & (llm != pred))
        return opinions + np.asarray(weak_rejects, dtype=np.float64) + doubt / 2
    if rule in ("random", "sample") and u is None:
        raise ValueError(f"review rule {rule!r} needs a seeded uniform u per row")
    if rule == "random":
        return np.asarray(u, np.float64)
    if rule == "sample":
        return np.log(np.asarray(u, np.float64)) / np.maximum(doubt, 1e-6)
    raise ValueError(f"unknown review rule {rule!r}; one of doubt, disagree, random, sample")


def id_uniform(ids, *, seed: int) -> np.ndarray:
    """A seeded uniform in (0, 1) per id, (n,) float64: the same in every process and batch order."""
    import hashlib

    h = [int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode("utf-8"), digest_size=8).digest(), "little")
         for i in ids]
    return (np.asarray(h, dtype=np.float64) + 0.5) / 2.0 ** 64


def label_codes(b, column: str, names: list[str]) -> np.ndarray:
    """The label names of ``column`` of the record batch ``b`` as indices into ``names``, (n,) int64;
    -1 where null or unknown."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(pc.index_in(b.column(column), value_set=pa.array(names)), -1).to_numpy().astype(np.int64)


def unreviewed(b) -> np.ndarray:
    """Rows (n,) bool of the labels.parquet record batch ``b`` that no reviewer labelled (all of
    them when the run had no ``reviewed`` column): the ones a review can still be spent on."""
    import pyarrow.compute as pc

    if "reviewed" not in b.schema.names:
        return np.ones(b.num_rows, bool)
    return ~pc.fill_null(b.column("reviewed"), False).to_numpy(zero_copy_only=False).astype(bool)


def batch_doubt(b, *, names: list[str]) -> np.ndarray:
    """1 - the strong model's probability of the final label (``final_prob``) of each row of a
    labels.parquet record batch ``b`` (columns given_label, final_label, pred_label, p_strong,
    pred_prob), (n,) float64."""
    def floats(c: str) -> np.ndarray:
        return b.column(c).to_numpy(zero_copy_only=False).astype(np.float64)

    return 1.0 - final_prob(given=label_codes(b, "given_label", names), final=label_codes(b, "final_label", names),
                            pred=label_codes(b, "pred_label", names), p_given=floats("p_strong"),
                            pred_prob=floats("pred_prob"))
