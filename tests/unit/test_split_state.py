"""The split state the pipeline carries between rounds (stages/thresholds.py), on scores with KNOWN noise.

The thresholds stage sums ``split.hist_sums`` over the scored table's batches; here the same sums
come from numpy, in several batches, so the state under test is the one a run would hold.
"""

import json

import numpy as np
import pytest

from noiseal_ray.partition import CODES, ThresholdState, partition
from noiseal_ray.split import hist_sums
from noiseal_ray.stages.thresholds import SplitState, assign_parts, update_split

CANDIDATE = "gmm|class-mean-strong/weak-mean"


def scored(n=1500, rates=(0.05, 0.2, 0.35), seed=0):
    """Per class, n rows; clean rows score high with both models, wrong ones low (the strong model
    sharper); pred: the strong argmax (another class for most wrong rows)."""
    rng = np.random.default_rng(seed)
    c = len(rates)
    cols = {"label": [], "p_strong": [], "p_weak": [], "pred": [], "wrong": []}
    for k, r in enumerate(rates):
        w = rng.random(n) < r
        cols["label"].append(np.full(n, k))
        cols["p_strong"].append(np.where(w, rng.beta(1, 12, n), rng.beta(12, 1, n)))
        cols["p_weak"].append(np.where(w, rng.beta(2, 5, n), rng.beta(5, 2, n)))
        cols["pred"].append(np.where(w, (k + 1) % c, k))
        cols["wrong"].append(w)
    out = {key: np.concatenate(v) for key, v in cols.items()}
    perm = rng.permutation(len(out["label"]))
    return {key: v[perm] for key, v in out.items()}


def sums_of(rows, *, num_classes, batch=700):
    """``reduce_sum(ds, hist_sums)`` done in one process, in batches."""
    tot = {}
    for s in range(0, len(rows["label"]), batch):
        b = {k: rows[k][s:s + batch] for k in ("label", "p_strong", "p_weak", "pred")}
        for k, v in hist_sums(b, num_classes=num_classes).items():
            tot[k] = tot[k] + v.sum(0) if k in tot else v.sum(0)
    return tot


def fresh(rule):
    return SplitState(ema=ThresholdState(beta=0.9, per_class=True), rule=rule)


def codes(state, rows):
    return assign_parts(batch={k: rows[k] for k in ("label", "p_strong", "p_weak", "pred")},
                        split=state.current)["part"]


def test_class_mean_is_the_reconstructed_ema_rule():
    rows = scored()
    state = fresh("class-mean")
    old = ThresholdState(beta=0.9, per_class=True)
    for seed in (0, 1):  # two rounds: the second folds into the EMA
        rows = scored(seed=seed)
        update_split(state=state, sums=sums_of(rows, num_classes=3))
        ms = np.array([rows["p_strong"][rows["label"] == k].mean() for k in range(3)])
        mw = np.array([rows["p_weak"][rows["label"] == k].mean() for k in range(3)])
        old.update(mean_strong=ms, mean_weak=mw)
        np.testing.assert_allclose(state.current.tau_strong, old.strong)
        want = partition(p_strong=rows["p_strong"], p_weak=rows["p_weak"], labels=rows["label"],
                         tau_strong=old.strong, tau_weak=old.weak)
        np.testing.assert_array_equal(codes(state, rows), want)
    assert len(state.ema.history) == 2


def test_the_candidate_keeps_more_clean_rows_in_r_at_the_same_purity():
    rows = scored()
    y_wrong = rows["wrong"]
    parts = {}
    for rule in ("class-mean", CANDIDATE):
        state = update_split(state=fresh(rule), sums=sums_of(rows, num_classes=3))
        parts[rule] = codes(state, rows)
    r_old, r_new = (parts[k] == CODES["R"] for k in ("class-mean", CANDIDATE))
    # The class mean sits inside the clean mode: it rejects a fixed share of clean rows; the mixture does not.
    assert r_new[~y_wrong].mean() > 0.95 > r_old[~y_wrong].mean() + 0.1
    assert y_wrong[r_new].mean() < 0.02  # R stays pure
    assert (parts[CANDIDATE][y_wrong] != CODES["R"]).mean() > 0.95  # the wrong rows are found
    # Its noise estimate per class follows the wrong share (the loss mixture errs on the high side).
    noise = update_split(state=fresh(CANDIDATE), sums=sums_of(rows, num_classes=3)).current.noise_rate
    actual = [y_wrong[rows["label"] == k].mean() for k in range(3)]
    assert noise == pytest.approx(actual, abs=0.06)
    assert np.all(np.diff(noise) > 0.1)


def test_a_missed_class_falls_back_to_the_ema_thresholds():
    rows = scored()
    # Class 2's wrong rows look clean to the strong model (a learned flip): only its argmax disagrees.
    m = (rows["label"] == 2) & rows["wrong"]
    rows["p_strong"][m] = 0.97
    state = update_split(state=fresh(CANDIDATE), sums=sums_of(rows, num_classes=3))
    assert state.current.today.tolist() == [False, False, True]
    np.testing.assert_allclose(state.current.today_tau[0], state.ema.strong)
    c2 = rows["label"] == 2
    old = partition(p_strong=rows["p_strong"][c2], p_weak=rows["p_weak"][c2], labels=rows["label"][c2],
                    tau_strong=state.ema.strong, tau_weak=state.ema.weak)
    np.testing.assert_array_equal(codes(state, rows)[c2], old)


def test_the_state_survives_the_manifest_and_an_old_manifest_reads_as_class_mean():
    rows = scored()
    for rule in ("class-mean", CANDIDATE):
        state = update_split(state=fresh(rule), sums=sums_of(rows, num_classes=3))
        back = SplitState.from_dict(json.loads(json.dumps(state.to_dict())))
        assert back.rule == rule
        np.testing.assert_array_equal(codes(back, rows), codes(state, rows))
        update_split(state=back, sums=sums_of(scored(seed=1), num_classes=3))  # and it goes on updating
    old_run = ThresholdState(beta=0.9, per_class=True)
    old_run.update(mean_strong=np.array([0.8, 0.7, 0.6]), mean_weak=np.array([0.5, 0.5, 0.5]))
    back = SplitState.from_dict(json.loads(json.dumps(old_run.to_dict())))
    assert back.rule == "class-mean"
    np.testing.assert_array_equal(codes(back, rows), partition(
        p_strong=rows["p_strong"], p_weak=rows["p_weak"], labels=rows["label"], tau_strong=old_run.strong,
        tau_weak=old_run.weak))
