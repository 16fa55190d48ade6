"""Moves the reviewers refute (``noiseal_ray.review.moves``) and how a round holds them back
(``noiseal_ray.stages.annotate.hold_refuted_moves``): numpy only, no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from noiseal_ray.partition import CODES


def verdicts(rows, **kw):
    from noiseal_ray.review.moves import refuted_moves

    g, s, r = (np.array(x, np.int64) for x in zip(*rows))
    return refuted_moves(given=g, suggested=s, reviewed=r, num_classes=3, **kw)


def test_a_move_is_refuted_only_on_enough_reviews_against_it():
    # 0 -> 1 moved three reviewed rows; all three were 0 after all: refuted (P(p < 1/2) = 1 - 2^-4).
    assert verdicts([(0, 1, 0)] * 3)[0, 1]
    # Two against is not enough at 0.9 (1 - 2^-3 = 0.875), nor 3 against 3 for.
    assert not verdicts([(0, 1, 0)] * 2).any()
    assert not verdicts([(0, 1, 0)] * 3 + [(0, 1, 1)] * 3).any()
    # A third label counts against the move too: the move did not give the right label.
    assert verdicts([(0, 1, 2)] * 3)[0, 1]
    # 5 against and 1 for: refuted; the reverse move and other pairs are untouched.
    got = verdicts([(0, 1, 0)] * 5 + [(0, 1, 1)])
    assert got[0, 1] and got.sum() == 1
    # Rows whose suggestion was their given label, or unknown (-1), test no move.
    assert not verdicts([(0, 0, 1)] * 9 + [(0, -1, 2)] * 9).any()
    # Confirmed moves stay: 4 of 4 right.
    assert not verdicts([(2, 0, 0)] * 4).any()
    assert not verdicts([(0, 1, 0)] * 3, confidence=0.95)[0, 1]  # 0.9375 < 0.95


def test_move_tallies_count_reviews_per_move():
    from noiseal_ray.review.moves import move_tallies

    right, tests = move_tallies(given=np.array([0, 0, 0, 1, 2]), suggested=np.array([1, 1, 0, 2, -1]),
                                reviewed=np.array([1, 0, 0, 2, 2]), num_classes=3)
    assert tests[0, 1] == 2 and right[0, 1] == 1 and tests[1, 2] == 1 and right[1, 2] == 1
    assert tests.sum() == 3 and np.trace(tests) == 0


@pytest.mark.parametrize("hard_policy", ["given", "strong"])
def test_a_round_holds_back_only_the_refuted_moves(hard_policy):
    from noiseal_ray.stages.annotate import hold_refuted_moves

    refuted = np.zeros((3, 3), bool)
    refuted[0, 1] = True
    R, P, H = CODES["R"], CODES["P"], CODES["H"]
    batch = {"part": np.array([P, P, P, H, R, P], np.int8), "label": np.array([0, 0, 1, 0, 0, 0]),
             "llm_label": np.array([1, 2, 0, -1, -1, -1]), "pred": np.array([1, 1, 1, 1, 1, 1])}
    out = hold_refuted_moves(batch=dict(batch), refuted=refuted, hard_policy=hard_policy)
    # Row 0 (annotator 0 -> 1) and row 5 (no answer: the model's 0 -> 1) are held in R; row 1 (0 -> 2)
    # and row 2 (1 -> 0) move as before; the H row 3 moves 0 -> 1 only under the "strong" policy.
    held_h = R if hard_policy == "strong" else H
    assert out["part"].tolist() == [R, P, P, held_h, R, R]
    assert out["part"].dtype == np.int8
