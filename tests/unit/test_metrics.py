"""Metrics recover injected noise exactly when the detector is perfect, and count mistakes."""

import numpy as np
import pytest

from noiseal_ray.data.noise import inject_noise
from noiseal_ray.metrics import accuracy, detection, recovery


def test_perfect_detector_and_fixer():
    clean = np.random.default_rng(0).integers(0, 4, 1000)
    given = inject_noise(clean, num_classes=4, kind="sym", rate=0.3, seed=0)
    d = detection(flagged=given != clean, given=given, clean=clean)
    assert d["precision"] == 1.0 and d["recall"] == 1.0 and d["f1"] == 1.0
    r = recovery(given=given, final=clean, clean=clean)
    assert r["fixed"] == 1.0 and r["broken"] == 0.0 and r["final_accuracy"] == 1.0
    assert r["given_accuracy"] == pytest.approx(1 - (given != clean).mean())


def test_half_detector_and_breaking():
    clean = np.array([0, 0, 0, 0, 1, 1])
    given = np.array([1, 1, 0, 0, 1, 1])  # rows 0,1 wrong
    flagged = np.array([True, False, True, False, False, False])
    d = detection(flagged=flagged, given=given, clean=clean)
    assert d["precision"] == 0.5 and d["recall"] == 0.5
    final = np.array([0, 1, 1, 0, 1, 1])  # fixes row 0, breaks row 2
    r = recovery(given=given, final=final, clean=clean)
    assert r["fixed"] == 0.5 and r["broken"] == 0.25 and r["changed"] == 2


def test_unknown_truth_is_ignored():
    assert accuracy(np.array([1, 2, 3]), np.array([1, -1, 0])) == 0.5


def test_confusion_matrix_and_class_precision():
    from noiseal_ray.metrics import class_precision, confusion_matrix

    truth = np.array([0, 0, 1, 1, 1, -1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 0])
    c = confusion_matrix(truth=truth, pred=pred, num_classes=3)
    # the unknown row (-1) counts nowhere; rows true, columns predicted
    np.testing.assert_array_equal(c, [[1, 1, 0], [1, 2, 0], [1, 0, 0]])
    p = class_precision(c)
    assert p[0] == pytest.approx(1 / 3) and p[1] == pytest.approx(2 / 3) and np.isnan(p[2])  # 2 never predicted
