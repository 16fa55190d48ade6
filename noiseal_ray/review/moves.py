"""Moves the reviewers refuted: a run's relabeling decisions judged by the reviewed rows.

A run changes labels in moves: every row it relabels from given class g to class f is one
application of the decision "g -> f here is wrong", and the rows of one move tend to be all right
or all wrong together (systematic noise, or a systematic mistake of the run). A reviewed row that
an earlier run had moved g -> f (its ``suggested_label`` in the exported file) is one test of that
move. Where the reviews say the move is more likely wrong than right, with ``confidence``, the
next run does not apply it to rows nobody reviewed: they keep their given label (First, do no
harm). Moves with few or mixed reviews are left to the run.

Pure numpy; ``noiseal_ray.stages.ingest`` computes the verdicts once per run
and ``noiseal_ray.stages.annotate`` applies them each round.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CONFIDENCE = 0.9


def refuted_moves(*, given: np.ndarray, suggested: np.ndarray, reviewed: np.ndarray, num_classes: int,
                  confidence: float = DEFAULT_CONFIDENCE) -> np.ndarray:
    """Which moves g -> f the reviews refute: (C, C) bool, never on the diagonal.

    ``given``, ``suggested``, ``reviewed``: (m,) int64 per reviewed row: its given label, the label
    the run that exported it suggested (-1: unknown, the row tests no move), and the reviewer's
    label. A move's precision has a uniform prior; it is refuted when, after its k right out of n
    reviews, P(precision < 1/2) >= ``confidence`` (0.9: e.g. 3 of 3 or 5 of 6 reviews against it).
    """
    right, tests = move_tallies(given=given, suggested=suggested, reviewed=reviewed, num_classes=num_classes)
    below_half = np.vectorize(_below_half)(right.astype(np.int64), (tests - right).astype(np.int64))
    out = (tests > 0) & (below_half >= confidence)
    np.fill_diagonal(out, False)
    return out


def _below_half(right: int, wrong: int) -> float:
    """P(p < 1/2) for p ~ Beta(1 + right, 1 + wrong): for whole counts, the chance that more than
    ``right`` of ``right + wrong + 1`` fair coin flips come up heads (no scipy in the core install)."""
    from math import comb

    n = right + wrong + 1
    return sum(comb(n, j) for j in range(right + 1, n + 1)) / 2 ** n


def move_tallies(*, given: np.ndarray, suggested: np.ndarray, reviewed: np.ndarray,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per move g -> f, (C, C) float64 each: how many reviews found it right (the reviewer said f)
    and how many reviewed rows it was applied to (given g, suggested f)."""
    g, s, r = (np.asarray(a, np.int64) for a in (given, suggested, reviewed))
    c = num_classes
    ok = (s >= 0) & (s < c) & (g >= 0) & (g < c) & (s != g)
    tests = np.bincount(g[ok] * c + s[ok], minlength=c * c).reshape(c, c).astype(np.float64)
    hit = ok & (r == s)
    right = np.bincount(g[hit] * c + s[hit], minlength=c * c).reshape(c, c).astype(np.float64)
    return right, tests


def judge_moves(*, given: np.ndarray, suggested: np.ndarray, reviewed: np.ndarray, num_classes: int,
                confidence: float = DEFAULT_CONFIDENCE) -> list[dict]:
    """Every move the reviewed rows tested, as ``{"given": g, "suggested": f, "reviews": n,
    "right": k, "refuted": bool}`` (label ids), in (g, f) order; arguments as ``refuted_moves``."""
    kw = dict(given=given, suggested=suggested, reviewed=reviewed, num_classes=num_classes)
    refuted = refuted_moves(**kw, confidence=confidence)
    right, tests = move_tallies(**kw)
    return [{"given": int(g), "suggested": int(f), "reviews": int(tests[g, f]), "right": int(right[g, f]),
             "refuted": bool(refuted[g, f])} for g, f in np.argwhere(tests > 0)]


def hold_refuted(*, label: np.ndarray, final: np.ndarray, refuted: np.ndarray) -> np.ndarray:
    """Rows (n,) bool whose ``final`` label would apply a refuted move to their ``label`` (both (n,)
    int64); ``refuted`` (C, C) bool from ``refuted_moves``."""
    label, final = np.asarray(label, np.int64), np.asarray(final, np.int64)
    moved = (label != final) & (label >= 0) & (final >= 0)
    out = np.zeros(len(label), bool)
    out[moved] = refuted[label[moved], final[moved]]
    return out
