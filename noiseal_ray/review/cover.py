"""The ``cover`` review rule: one reviewed row per region of the corpus.

Under systematic noise most wrong labels are ones the run is sure of: they look right to every
score, so ranking rows by doubt never reaches them, and a reviewed row teaches the rerun mostly
through its neighbours (the kNN annotator's demonstrations, the training batches). ``cover``
clusters the final model's embeddings into N clusters (k-means) and takes one row from each: the
most doubtful among the cluster's typical half (rows no farther from the centre than the
cluster's median). Every region of the corpus gets an anchor that speaks for it, and within it the
row most likely wrong.

Memory: the k-means fit holds at most ``FIT_ROWS`` embeddings (a seeded hash sample of the rows);
beyond that a second streaming pass assigns every row and keeps one candidate per cluster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIT_ROWS = 50_000  # rows the k-means fit sees at most: (FIT_ROWS, D) float32 in memory


def cover_pick(*, assign: np.ndarray, dist: np.ndarray, doubt: np.ndarray, median: np.ndarray) -> dict[int, int]:
    """Per cluster, the index of the most doubtful row among those no farther from the centre than
    ``median`` (k,) of its cluster. ``assign`` (n,) int cluster ids, ``dist`` (n,) distances to
    the cluster centre, ``doubt`` (n,) float. Returns {cluster: row index}; clusters with no row
    are absent. Ties go to the row nearer the centre."""
    best: dict[int, int] = {}
    typical = dist <= median[assign] + 1e-9
    order = np.lexsort((dist, -doubt))  # doubt descending, then nearer first
    for i in order:
        c = int(assign[i])
        if typical[i] and c not in best:
            best[c] = int(i)
    return best


def select_cover(*, run: Path, names: list[str], budget: int, seed: int, exclude: frozenset,
                 batch_rows: int = 4096) -> list[dict]:
    """``budget`` rows of the run ``run`` by the ``cover`` rule, as dicts of their labels.parquet
    columns with ``priority`` (the row's doubt), ``doubt``, ``cluster_size`` and ``rule``; never a
    reviewed row nor an id in ``exclude``. Embeds the rows with the run's final model (``model/``,
    the scoring path of ``noiseal_ray.score.Scorer``, in this process)."""
    import pyarrow.dataset as pads

    from noiseal_ray.review.scores import batch_doubt, id_uniform, unreviewed
    from noiseal_ray.score import Scorer

    scorer = Scorer(model_dir=str(run / "model"), with_embedding=True)
    n = pads.dataset(str(run / "labels.parquet"), format="parquet").count_rows()
    fit_share = min(1.0, FIT_ROWS / max(n, 1))  # the share of rows the k-means fit sees
    cols = ["id", "text", "given_label", "final_label", "pred_label", "llm_label", "p_strong", "pred_prob", "partition",
            "reviewed"]

    def batches(fit_only: bool):
        from noiseal_ray.report import iter_batches

        for b in iter_batches(run / "labels.parquet", cols, batch_size=batch_rows):
            ids = [str(i) for i in b.column("id").to_pylist()]
            ok = np.array([i not in exclude for i in ids], bool) & unreviewed(b)
            if fit_only:
                ok &= id_uniform(ids, seed=seed) <= fit_share
            rows = np.flatnonzero(ok)
            if len(rows):
                emb = scorer({"text": np.asarray(b.column("text").to_pylist(), object)[rows]})["embedding"]
                yield b, rows, emb

    parts = list(batches(fit_only=fit_share < 1.0))
    if not parts:
        return []
    emb = np.concatenate([e for _, _, e in parts])
    k = min(budget, len(emb))
    km = _kmeans(emb, k=k, seed=seed)
    d_fit = np.linalg.norm(emb - km.cluster_centers_[km.labels_], axis=1)
    median = np.array([np.median(d_fit[km.labels_ == c]) if np.any(km.labels_ == c) else np.inf for c in range(k)])
    size = np.bincount(km.labels_, minlength=k) / fit_share
    best: dict[int, tuple[float, float, dict]] = {}
    # Where the fit saw a sample, a second streaming pass assigns every row.
    for b, rows, e in (parts if fit_share >= 1.0 else batches(fit_only=False)):
        assign = km.predict(e)
        dist = np.linalg.norm(e - km.cluster_centers_[assign], axis=1)
        doubt = batch_doubt(b, names=names)[rows]
        for c, i in cover_pick(assign=assign, dist=dist, doubt=doubt, median=median).items():
            if c not in best or (doubt[i], -dist[i]) > best[c][:2]:
                best[c] = (float(doubt[i]), float(-dist[i]), b.slice(int(rows[i]), 1).to_pylist()[0])
    picks = [{**r, "priority": dt, "doubt": dt, "cluster_size": int(round(size[c])), "rule": "cover"}
             for c, (dt, _, r) in best.items()]
    return sorted(picks, key=lambda r: -r["priority"])[:budget]


def _kmeans(emb: np.ndarray, *, k: int, seed: int):
    """A k-means fit of ``emb`` (n, D) into ``k`` clusters (scikit-learn; MiniBatch beyond 10k rows)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(emb) > 10_000:
        return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(emb)
    return KMeans(n_clusters=k, random_state=seed, n_init=1).fit(emb)

