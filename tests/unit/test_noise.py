"""Synthetic noise: realised rates, symmetry, asymmetry, determinism (TREC labels, real data)."""

import json
from pathlib import Path

import numpy as np
import pytest

from noiseal_ray.data.noise import idn_probs, inject_noise

TREC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "trec" / "train.jsonl"


@pytest.fixture(scope="module")
def trec():
    rows = [json.loads(line) for line in TREC.read_text(encoding="utf-8").splitlines()]
    names = sorted({r["label"] for r in rows})
    y = np.array([names.index(r["label"]) for r in rows])
    return [r["text"] for r in rows], y, len(names)


@pytest.mark.parametrize("kind", ["sym", "asym", "idn"])
def test_realised_rate_near_target(trec, kind):
    texts, y, c = trec
    probs = idn_probs(texts, y, num_classes=c, seed=0) if kind == "idn" else None
    noisy = inject_noise(y, num_classes=c, kind=kind, rate=0.4, seed=0, probs=probs)
    rate = (noisy != y).mean()
    assert 0.37 <= rate <= 0.43, rate
    assert noisy.min() >= 0 and noisy.max() < c


def test_symmetric_flips_reach_every_other_class_equally(trec):
    _, y, c = trec
    noisy = inject_noise(y, num_classes=c, kind="sym", rate=0.4, seed=1)
    flipped = noisy != y
    shift = (noisy[flipped] - y[flipped]) % c
    shares = np.bincount(shift, minlength=c)[1:] / flipped.sum()
    # Uniform over the C-1 other classes: every share near 1/(C-1); never "next class" only.
    assert np.all(np.abs(shares - 1 / (c - 1)) < 0.03), shares
    for k in range(c):
        targets = set(noisy[flipped & (y == k)])
        assert targets == set(range(c)) - {k}


def test_asymmetric_flips_only_to_next_class(trec):
    _, y, c = trec
    noisy = inject_noise(y, num_classes=c, kind="asym", rate=0.4, seed=0)
    flipped = noisy != y
    assert np.all(noisy[flipped] == (y[flipped] + 1) % c)


def test_idn_flips_to_classifier_alternative(trec):
    texts, y, c = trec
    probs = idn_probs(texts, y, num_classes=c, seed=0)
    noisy = inject_noise(y, num_classes=c, kind="idn", rate=0.2, seed=0, probs=probs)
    flipped = np.flatnonzero(noisy != y)
    other = probs.copy()
    other[np.arange(len(y)), y] = -1
    assert np.all(noisy[flipped] == other[flipped].argmax(1))
    # Instance-dependent: the flipped samples are the most confusable ones.
    conf = other.max(1)
    assert conf[flipped].mean() > conf.mean()


def test_same_seed_same_output_and_input_untouched(trec):
    _, y, c = trec
    before = y.copy()
    a = inject_noise(y, num_classes=c, kind="sym", rate=0.3, seed=7)
    b = inject_noise(y, num_classes=c, kind="sym", rate=0.3, seed=7)
    d = inject_noise(y, num_classes=c, kind="sym", rate=0.3, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, d)
    assert np.array_equal(y, before)


@pytest.mark.parametrize("bad", [dict(rate=1.5), dict(kind="pair"), dict(num_classes=1)])
def test_invalid_arguments_raise(bad):
    kw = dict(num_classes=3, kind="sym", rate=0.2, seed=0) | bad
    with pytest.raises(ValueError):
        inject_noise(np.array([0, 1, 2]), **kw)
