"""Noise-adaptive split rules (the noiseal_ray/split package) on generated scores with KNOWN noise."""

import numpy as np
import pytest

from noiseal_ray.partition import CODES, accept, partition
from noiseal_ray.split import (
    FEW_ROWS,
    FIT_OK,
    LOSS_EDGES,
    RULES,
    RuleInputs,
    assign_codes,
    budget_cutoffs,
    cutoffs_to_tau,
    gmm_cutoffs,
    hist_sums,
    loss_histograms,
    mean_tau,
    row_loss,
    rule_thresholds,
    split_class_mean,
    split_gmm_strong,
    split_strong,
)

RATES = (0.0, 0.10, 0.40)


def corpus(rates=RATES, n=2000, seed=0):
    """Per class c, n rows: clean p ~ Beta(20, 1) (near 1), wrong p ~ Beta(1, 20) (near 0)."""
    rng = np.random.default_rng(seed)
    p, y, wrong = [], [], []
    for c, r in enumerate(rates):
        k = int(round(r * n))
        p.append(np.concatenate([rng.beta(20, 1, n - k), rng.beta(1, 20, k)]))
        y.append(np.full(n, c))
        wrong.append(np.r_[np.zeros(n - k, bool), np.ones(k, bool)])
    p, y, wrong = np.concatenate(p), np.concatenate(y), np.concatenate(wrong)
    perm = rng.permutation(len(y))
    return p[perm], y[perm], wrong[perm]


@pytest.mark.parametrize("space", ["loss", "logloss"])
def test_gmm_recovers_per_class_noise_and_separates_the_modes(space):
    p, y, wrong = corpus()
    fit = gmm_cutoffs(hist=loss_histograms(p=p, labels=y, num_classes=3), space=space)
    # The zero-noise class has no second mode: it keeps all its rows, estimate 0.
    assert fit.noise_rate[0] == 0.0 and np.isinf(fit.cutoff[0]) and fit.reason[0] != FIT_OK
    assert fit.reason[1] == FIT_OK and fit.reason[2] == FIT_OK
    assert fit.noise_rate[1:] == pytest.approx([0.10, 0.40], abs=0.03)
    loss = row_loss(p)
    for c in (1, 2):
        m = y == c
        # The cutoff lies between the modes: above the clean rows' median, below the wrong rows'.
        assert np.median(loss[m & ~wrong]) < fit.cutoff[c] < np.median(loss[m & wrong])
    a = accept(p, y, cutoffs_to_tau(fit.cutoff))
    assert a[~wrong].mean() > 0.97  # (almost) every clean row kept, in every class
    assert a[(y == 0)].mean() > 0.99
    assert (~a[wrong]).mean() > 0.97  # (almost) every wrong row rejected


def test_class_mean_rule_rejects_clean_rows_gmm_does_not():
    """The motivating failure: a class mean sits inside the clean mode."""
    p, y, wrong = corpus()
    tau_mean = mean_tau(p=p, labels=y, num_classes=3)
    tau_gmm = cutoffs_to_tau(gmm_cutoffs(hist=loss_histograms(p=p, labels=y, num_classes=3)).cutoff)
    assert accept(p, y, tau_mean)[~wrong].mean() < 0.85
    assert accept(p, y, tau_gmm)[~wrong].mean() > 0.97


def test_histograms_of_batches_add_up_and_count_every_row():
    p, y, _ = corpus()
    p = p.copy()
    p[:5] = [0.0, 1.0, 1e-30, 1.0 - 1e-17, 0.5]  # the extremes land in the first/last bin
    whole = loss_histograms(p=p, labels=y, num_classes=4)
    parts = sum(loss_histograms(p=p[s:s + 777], labels=y[s:s + 777], num_classes=4) for s in range(0, len(p), 777))
    assert whole.shape == (4, len(LOSS_EDGES) - 1) and whole.dtype == np.int64
    assert np.array_equal(whole, parts)
    assert whole.sum() == len(p) and np.array_equal(whole.sum(1), np.bincount(y, minlength=4))
    assert whole[3].sum() == 0
    # hist_sums is a score.reduce_sum aggregator: leading axis 1, sums over batches.
    rows = [hist_sums({"label": y[s:s + 1000], "p_strong": p[s:s + 1000], "p_weak": p[s:s + 1000]}, num_classes=4)
            for s in range(0, len(p), 1000)]
    assert rows[0]["hist_strong"].shape == (1, 4, len(LOSS_EDGES) - 1)
    assert np.array_equal(sum(r["hist_weak"] for r in rows)[0], whole)
    batched = RuleInputs.from_rows(p_strong=p, p_weak=p, labels=y, num_classes=4, batch_rows=333)
    assert np.array_equal(batched.hist_strong, whole)
    assert batched.mean_strong[:3] == pytest.approx([p[y == c].mean() for c in range(3)])


def test_degenerate_classes_keep_all_rows():
    rng = np.random.default_rng(1)
    # class 0: 5 rows; class 1: no row; class 2: all clean, one mode; class 3: every p identical.
    p = np.concatenate([rng.beta(1, 20, 5), rng.beta(20, 1, 500), np.full(300, 0.9)])
    y = np.concatenate([np.zeros(5, int), np.full(500, 2), np.full(300, 3)])
    fit = gmm_cutoffs(hist=loss_histograms(p=p, labels=y, num_classes=4))
    assert np.isinf(fit.cutoff).all()
    assert fit.reason[0] == FEW_ROWS and fit.reason[1] == FEW_ROWS
    assert np.isnan(fit.noise_rate[1]) and fit.noise_rate[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    assert accept(p, y, cutoffs_to_tau(fit.cutoff)).all()


def test_noise_dominated_class_is_rejected_wholesale_not_crashing():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.beta(20, 1, 300), rng.beta(1, 20, 700)])
    fit = gmm_cutoffs(hist=loss_histograms(p=p, labels=np.zeros(1000, int), num_classes=1))
    # The mixture still calls the low-loss component clean (a minority here): ~70% noise.
    assert fit.noise_rate[0] == pytest.approx(0.7, abs=0.03)
    assert 0.25 < accept(p, np.zeros(1000, int), cutoffs_to_tau(fit.cutoff)).mean() < 0.35


def test_budget_cutoff_rejects_the_requested_share():
    p, y, _ = corpus()
    h = loss_histograms(p=p, labels=y, num_classes=3)
    cut = budget_cutoffs(hist=h, reject=np.array([0.0, 0.1, 0.4]))
    a = accept(p, y, cutoffs_to_tau(cut))
    assert np.isinf(cut[0]) and a[y == 0].all()
    assert (~a[y == 1]).mean() == pytest.approx(0.1, abs=0.01)
    assert (~a[y == 2]).mean() == pytest.approx(0.4, abs=0.01)


def test_split_frames_hand_computed():
    y = np.array([0, 0, 0, 0])
    ps = np.array([0.9, 0.9, 0.1, 0.1])
    pw = np.array([0.9, 0.1, 0.9, 0.1])
    t = np.array([0.5])
    got = split_gmm_strong(p_strong=ps, p_weak=pw, labels=y, tau_strong=np.array([0.5, 0.5]), tau_weak=np.array([0.5, 0.5]))
    # strong accepts -> R whatever the weak says; strong rejects: weak rejects -> P, else H.
    assert got.tolist() == [CODES["R"], CODES["R"], CODES["H"], CODES["P"]]
    both = split_class_mean(p_strong=ps, p_weak=pw, labels=y, tau_strong=t, tau_weak=t)
    assert both.tolist() == partition(p_strong=ps, p_weak=pw, labels=y, tau_strong=t, tau_weak=t).tolist()
    assert both.tolist() == [CODES["R"], CODES["H"], CODES["H"], CODES["P"]]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_from_aggregates_gives_valid_codes(rule):
    p, y, wrong = corpus()
    rng = np.random.default_rng(3)
    pw = p ** rng.uniform(0.5, 2.0, len(p))  # a second, noisier opinion with the same modes
    pred = np.where(wrong, (y + 1) % 3, y)  # an argmax that names the true class of the wrong rows
    inputs = RuleInputs.from_rows(p_strong=p, p_weak=pw, labels=y, num_classes=3, pred=pred, batch_rows=1000)
    assert inputs.disagree == pytest.approx(RATES, abs=1e-9)
    th = rule_thresholds(rule, inputs)
    assert th.tau_strong.shape == (3,) and th.tau_weak.shape == (3,)
    codes = th.split(p_strong=p, p_weak=pw, labels=y, pred=pred)
    assert codes.dtype == np.int8 and set(np.unique(codes)) <= {0, 1, 2}
    # What a pipeline applies batch by batch from the stored thresholds gives the same codes.
    again = assign_codes(rule=rule, tau_strong=th.tau_strong, tau_weak=th.tau_weak, p_strong=p, p_weak=pw, labels=y,
                         pred=pred, today=th.today if th.today is not None else np.zeros(3, bool))
    assert np.array_equal(again, codes)
    if "mean" not in rule.split("/")[0]:  # the noise-adaptive rules keep the clean rows in R
        assert (codes[~wrong] == CODES["R"]).mean() > 0.95


def test_split_strong_argmax_options():
    y = np.array([0, 0, 0, 0, 0])
    ps = np.array([0.9, 0.9, 0.1, 0.1, 0.1])
    pw = np.array([0.9, 0.9, 0.9, 0.1, 0.1])
    pred = np.array([0, 1, 1, 1, 0])
    tau = np.array([0.5])
    kw = dict(p_strong=ps, p_weak=pw, labels=y, tau_strong=tau, tau_weak=tau, pred=pred)
    R_, P_, H_ = CODES["R"], CODES["P"], CODES["H"]
    # argmax: row 1 is accepted by p but its argmax is another class -> rejected; weak accepts it -> H.
    assert split_strong(**kw, argmax=True, ph="weak").tolist() == [R_, H_, H_, P_, P_]
    assert split_strong(**kw, argmax=True, ph="argmax").tolist() == [R_, P_, P_, P_, H_]
    assert split_strong(**kw, argmax=True, ph="weak+argmax").tolist() == [R_, H_, H_, P_, H_]
    assert split_strong(**kw, ph="argmax").tolist() == [R_, R_, P_, P_, H_]
    with pytest.raises(ValueError):
        split_strong(**{**kw, "pred": None}, argmax=True)


def test_fallback_to_class_mean_where_the_mixture_misses_the_noise():
    """Class 1 is 40% wrong but the model has half learned the flip: one shifted mode, which the
    mixture calls clean; the argmax still names another class for ~40% of it. The fallback
    rules hand that class to the class mean (or to today's rule); class 0 keeps the mixture."""
    rng = np.random.default_rng(4)
    p0, y0, w0 = corpus(rates=(0.2,), n=1500, seed=5)
    n1 = 1500
    w1 = np.r_[np.zeros(900, bool), np.ones(600, bool)]
    p1 = np.where(w1, rng.beta(5, 5, n1), rng.beta(7, 3, n1))  # overlapping, one mode
    p = np.r_[p0, p1]
    y = np.r_[y0, np.ones(n1, int)]
    wrong = np.r_[w0, w1]
    pred = np.where(wrong, 1 - y, y)
    pw = p ** rng.uniform(0.5, 2.0, len(p))
    inputs = RuleInputs.from_rows(p_strong=p, p_weak=pw, labels=y, num_classes=2, pred=pred)
    plain = rule_thresholds("gmm-strong/weak-mean", inputs)
    assert plain.noise_rate[1] < 0.2  # the mixture misses class 1's noise
    fb = rule_thresholds("gmm|mean-strong/weak-mean", inputs)
    assert fb.tau_strong[0] == plain.tau_strong[0]
    assert fb.tau_strong[1] == pytest.approx(inputs.mean_strong[1])
    today = rule_thresholds("class-mean", inputs)
    fbt = rule_thresholds("gmm|class-mean-strong/weak-mean", inputs)
    kw = dict(p_strong=p, p_weak=pw, labels=y, pred=pred)
    got, old, new = fbt.split(**kw), today.split(**kw), plain.split(**kw)
    assert np.array_equal(got[y == 1], old[y == 1]) and np.array_equal(got[y == 0], new[y == 0])
    assert fbt.today.tolist() == [False, True]
    args = dict(rule="gmm|class-mean-strong/weak-mean", tau_strong=fbt.tau_strong, tau_weak=fbt.tau_weak, **kw)
    assert np.array_equal(assign_codes(**args, today=fbt.today), got)
    with pytest.raises(ValueError, match="today"):
        assign_codes(**args)


def test_every_named_rule_has_a_spec():
    from noiseal_ray.split.table import SPECS

    assert set(RULES) == set(SPECS)
