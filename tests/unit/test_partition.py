"""Thresholds (EMA, per class) and R/P/H on hand-computed inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noiseal_ray.partition import CODES, ThresholdState, class_means, partition


def test_ema_first_value_is_mean_then_blends():
    s = ThresholdState(beta=0.9, per_class=False)
    s.update(mean_strong=np.array([0.5]), mean_weak=np.array([0.8]))
    assert s.strong.tolist() == [0.5] and s.weak.tolist() == [0.8]
    s.update(mean_strong=np.array([1.0]), mean_weak=np.array([0.0]))
    assert s.strong[0] == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)
    assert s.weak[0] == pytest.approx(0.72)


def test_per_class_means_and_missing_class_keeps_previous():
    p = np.array([0.2, 0.4, 0.9, 0.7])
    y = np.array([0, 0, 1, 1])
    m = class_means(p, y, num_classes=3)
    assert m[:2] == pytest.approx([0.3, 0.8]) and np.isnan(m[2])
    s = ThresholdState(beta=0.5, per_class=True)
    s.update(mean_strong=m, mean_weak=m)
    # An absent class starts from the mean of the present classes.
    assert s.strong == pytest.approx([0.3, 0.8, 0.55])
    s.update(mean_strong=np.array([0.5, np.nan, 0.1]), mean_weak=np.array([0.5, np.nan, 0.1]))
    assert s.strong == pytest.approx([0.4, 0.8, 0.325])


def test_partition_hand_computed_per_class():
    y = np.array([0, 0, 1, 1, 1])
    ps = np.array([0.9, 0.1, 0.6, 0.4, 0.7])
    pw = np.array([0.8, 0.2, 0.1, 0.3, 0.9])
    tau_s = np.array([0.5, 0.5])
    tau_w = np.array([0.5, 0.2])
    got = partition(p_strong=ps, p_weak=pw, labels=y, tau_strong=tau_s, tau_weak=tau_w)
    # row0 both accept -> R; row1 both reject -> P; row2: strong yes, weak 0.1<0.2 no -> H;
    # row3: strong no, weak 0.3>=0.2 yes -> H; row4 both accept -> R.
    assert got.tolist() == [CODES["R"], CODES["P"], CODES["H"], CODES["H"], CODES["R"]]


def test_global_threshold_ignores_class():
    y = np.array([0, 1])
    got = partition(p_strong=np.array([0.6, 0.6]), p_weak=np.array([0.6, 0.4]), labels=y,
                    tau_strong=np.array([0.5]), tau_weak=np.array([0.5]))
    assert got.tolist() == [CODES["R"], CODES["H"]]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_partition_invariants(n, c, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    ps, pw = rng.random(n), rng.random(n)
    ts, tw = rng.random(c), rng.random(c)
    part = partition(p_strong=ps, p_weak=pw, labels=y, tau_strong=ts, tau_weak=tw)
    a_s, a_w = ps >= ts[y], pw >= tw[y]
    r, p, h = part == CODES["R"], part == CODES["P"], part == CODES["H"]
    assert np.all(r.astype(int) + p.astype(int) + h.astype(int) == 1)  # disjoint and covering
    assert np.array_equal(r, a_s & a_w)
    assert np.array_equal(p, ~a_s & ~a_w)
    assert np.array_equal(h, a_s ^ a_w)


def test_state_round_trips():
    s = ThresholdState(beta=0.8)
    s.update(mean_strong=np.array([0.1, 0.2]), mean_weak=np.array([0.3, 0.4]))
    t = ThresholdState.from_dict(s.to_dict())
    assert np.array_equal(t.strong, s.strong) and t.beta == 0.8 and t.history == s.history
