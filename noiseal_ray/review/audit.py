"""A move audit: a few random reviews of each of a run's relabeling moves, so that reviews can judge them.

A run relabels in moves (given class g -> suggested class f, ``noiseal_ray.review.moves``), and a
move is usually right or wrong as a whole. Only an unbiased sample of a move's rows tells which:
rows picked for their doubt are the move's likeliest mistakes and would make a good move look
bad. ``move_quotas`` shares an audit budget over the moves, largest first: first enough reviews
for each to be refutable (``FIRST``: 3 of 3 against refutes at the default confidence), then one
more each in turn (a move that is only mostly wrong needs a dozen reviews to be refuted; a small
move gets all its rows). ``audit_picks`` draws them at random (the run's seed) from a run's
``labels.parquet``, streamed.

``select_for_review(rule="moves")`` spends ``AUDIT_SHARE`` of a budget here and the rest on a
random sample of the other rows. Not on the most doubtful rows: measured
(``benchmarks/results/review_loop.md``), doubt picks make the reviewed set a skewed sample of the
corpus (on NoisyAG-News: mostly rows given one class that belong to others), and a rerun that
trusts them and refutes the moves into that class drained it (72.5% right labels against 87.5% for
random picks). An exported file marks each pick's ``review_rule``; only ``random`` picks count as
tests of a move when the file comes back (``noiseal_ray.data.reviews.read_review``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIRST = 3
AUDIT_SHARE = 0.5


def move_quotas(*, sizes: np.ndarray, budget: int, first: int = FIRST) -> np.ndarray:
    """How many random reviews each move gets, (C, C) int64, summing to at most ``budget``.

    ``sizes`` (C, C): rows per (given, suggested) pair; the diagonal (kept labels) gets none. Each
    move, largest first, is raised to min(``first``, its size), then all of them one review at a
    time, largest first, up to their size, while the budget lasts (equal reviews per move: each
    verdict about as sure).
    """
    sizes = np.asarray(sizes, np.int64)
    q = np.zeros_like(sizes)
    moves = [(int(g), int(f)) for g, f in np.argwhere(sizes > 0) if g != f]
    moves.sort(key=lambda m: -sizes[m])
    left = max(int(budget), 0)
    top = max((int(sizes[m]) for m in moves), default=0)
    for target in range(first, max(top, first) + 1):
        if left == 0 or not moves:
            break
        for m in moves:
            add = min(min(target, sizes[m]) - q[m], left)
            if add > 0:
                q[m] += add
                left -= add
        moves = [m for m in moves if q[m] < sizes[m]]  # a full move needs no more turns
    return q


def move_sizes(*, run: Path, names: list[str]) -> np.ndarray:
    """Rows per (given, final) label pair of a run, (C, C) int64, unreviewed rows only (the
    ones a review can still be spent on)."""
    from noiseal_ray.report import iter_batches
    from noiseal_ray.review.scores import label_codes, unreviewed

    c = len(names)
    sizes = np.zeros(c * c, np.int64)
    for b in iter_batches(run / "labels.parquet", ["given_label", "final_label", "reviewed"]):
        g, f = label_codes(b, "given_label", names), label_codes(b, "final_label", names)
        ok = (g >= 0) & (f >= 0) & unreviewed(b)
        sizes += np.bincount(g[ok] * c + f[ok], minlength=c * c)
    return sizes.reshape(c, c)


def audit_picks(*, run: Path, names: list[str], tau_w: np.ndarray, seed: int, budget: int) -> list[dict]:
    """Up to ``budget`` random rows of a run's moves, as ``select_for_review``'s candidate dicts
    (rule ``random``, spread ``decision``), each move's quota (``move_quotas``) in id-hash order."""
    from noiseal_ray.report import iter_batches
    from noiseal_ray.review.candidates import batch_candidates

    quota = move_quotas(sizes=move_sizes(run=run, names=names), budget=budget).ravel()
    if quota.sum() == 0:
        return []
    cols = ["id", "given_label", "final_label", "pred_label", "llm_label", "p_strong", "pred_prob", "p_weak",
            "partition", "reviewed"]
    keep: list[dict] = []
    for b in iter_batches(run / "labels.parquet", cols):
        cands = batch_candidates(b, names=names, tau_w=tau_w, rule="random", spread="decision", budget=0,
                                 cap=int(quota.max()), seed=seed)
        keep = _within_quota(keep + [k for k in cands if quota[k["cls"]] > 0], quota)
    return [{**k, "rule": "random", "spread": "decision"} for k in keep]


def _within_quota(cands: list[dict], quota: np.ndarray) -> list[dict]:
    """Of ``cands``, each move's ``quota[cls]`` highest priorities, highest first overall."""
    cands = sorted(cands, key=lambda k: -k["priority"])
    taken = np.zeros_like(quota)
    out = []
    for k in cands:
        if taken[k["cls"]] < quota[k["cls"]]:
            taken[k["cls"]] += 1
            out.append(k)
    return out
