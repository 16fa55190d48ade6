"""The change gate (issue 15, item 6: change_min_prob, change_min_test_precision): a final label
differs from the given one only where the last strong model predicts it with enough probability and
predicts its class precisely enough on clean test data; a change held back keeps the given label,
is counted, marked ``held`` in labels.parquet and exported for review with its reason. No Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from noiseal_ray.finalize import (ChangeGate, batch_stats, final_labels, gate_from, imprecise_moves, precise_classes,
                                  precise_moves, summarise)

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_run  # noqa: E402  (the synthetic run directory builder)

R, P, H = 0, 1, 2


def gated_labels(*, gate: ChangeGate, pred_prob, trusted=None, **kw) -> np.ndarray:
    """The final labels as the run writes them (stages.finalize._to_labels): the method's suggested
    labels, then the given label back wherever the gate holds the change."""
    suggested = final_labels(**kw, hard_policy="strong", trusted=trusted)
    held = gate.held(suggested=suggested, given=kw["given"], pred=kw["pred"], pred_prob=pred_prob)
    return np.where(held, kw["given"], suggested)


def test_a_change_stands_only_where_the_strong_model_is_sure_of_it():
    part = np.array([P, P, P, H, H, R, P])
    given = np.array([0, 0, 0, 1, 1, 2, 0])
    llm = np.array([1, 1, 1, -1, -1, -1, 0])
    pred = np.array([1, 1, 2, 2, 2, 0, 0])
    prob = np.array([0.95, 0.80, 0.99, 0.91, 0.50, 0.99, 0.99])
    every = final_labels(part=part, given=given, llm=llm, pred=pred, hard_policy="strong")
    np.testing.assert_array_equal(every, [1, 1, 1, 2, 2, 2, 0])
    # 0 (the default) keeps every change the method suggests, with or without probabilities
    rows = dict(part=part, given=given, llm=llm, pred=pred)
    np.testing.assert_array_equal(gated_labels(**rows, pred_prob=prob, gate=ChangeGate()), every)
    sure = ChangeGate(min_prob=0.9)
    gated = gated_labels(**rows, pred_prob=prob, gate=sure)
    # row 0: the model predicts the annotator's label at 0.95 -> the change stands; row 1: only 0.80;
    # row 2: the model predicts another label; row 3: H at 0.91 stands; row 4: H at 0.50; R and
    # unchanged rows are untouched
    np.testing.assert_array_equal(gated, [1, 0, 0, 2, 1, 2, 0])
    held = sure.held(suggested=every, given=given, pred=pred, pred_prob=prob)
    np.testing.assert_array_equal(held, [False, True, True, False, True, False, False])
    # class 2 is not precise enough on test data: the H change to 2 (row 3) is held too, the P one to 1 stands
    to_2 = np.array([[True, True, False]] * 3)  # move_ok[g, f]: no move into class 2
    both = ChangeGate(min_prob=0.9, move_ok=to_2)
    np.testing.assert_array_equal(both.held(suggested=every, given=given, pred=pred, pred_prob=prob),
                                  [False, True, True, True, True, False, False])
    only_class = ChangeGate(move_ok=to_2)
    np.testing.assert_array_equal(only_class.held(suggested=every, given=given, pred=pred, pred_prob=None),
                                  [False, False, False, True, True, False, False])
    # a reviewed row keeps its label whatever the gate says
    trusted = np.array([True, False, False, False, False, False, False])
    assert gated_labels(**rows, pred_prob=prob, gate=sure, trusted=trusted)[0] == 0
    with pytest.raises(ValueError, match="pred_prob"):
        gated_labels(**rows, pred_prob=None, gate=sure)


def test_test_precision_accepts_the_classes_the_model_predicts_precisely():
    # rows: true class; columns: predicted. Class 0 predicted 10 times, 9 right; class 1: 4 of 10;
    # class 2 never predicted: no evidence for a change to it.
    confusion = np.array([[9, 6, 0], [1, 4, 0], [0, 0, 0]])
    np.testing.assert_array_equal(precise_classes(confusion=confusion, min_precision=0.5), [True, False, False])
    np.testing.assert_array_equal(precise_classes(confusion=confusion, min_precision=0.4), [True, True, False])
    assert precise_classes(confusion=confusion, min_precision=0.0) is None
    g = gate_from(min_prob=0.9, min_test_precision=0.5, fit_entry={"test_confusion": confusion.tolist()})
    assert g.min_prob == 0.9 and g.move_ok.tolist() == [[True, False, False], [True, True, False], [True, False, True]]
    assert not gate_from(min_prob=0.0, min_test_precision=0.0, fit_entry=None).active
    with pytest.raises(ValueError, match="confusion"):
        gate_from(min_prob=0.0, min_test_precision=0.5, fit_entry={"test_accuracy": 0.9})
    # the rounds hold back every move into a rejected class, from any other class
    np.testing.assert_array_equal(imprecise_moves(g.move_ok),
                                  [[False, True, True], [False, False, True], [False, True, False]])
    assert imprecise_moves(np.ones((2, 2), bool)) is None and imprecise_moves(None) is None


def test_move_scope_judges_a_change_against_the_label_it_replaces():
    """The class rule closes a class whose predictions are mostly of a third class; the move rule asks
    only whether the new label beats the given one among the rows the model predicts as the new one."""
    # rows true, columns predicted. Column 1 (predicted 1): 40 true 1, 5 true 0, 55 true 2:
    # precision 0.40, so the class rule shuts every move into 1; but against 0 it is 40 / 45.
    confusion = np.array([[50, 5, 0], [0, 40, 10], [0, 55, 45]])
    cls = precise_moves(confusion=confusion, min_precision=0.5, scope="class")
    move = precise_moves(confusion=confusion, min_precision=0.5, scope="move")
    assert not cls[0, 1] and not cls[2, 1]
    assert move[0, 1]  # 0 -> 1: 40 of the 45 rows predicted 1 that are 0 or 1 are 1
    assert not move[2, 1]  # 2 -> 1: 40 against 55, the given label 2 is more likely
    assert move[1, 2] and move[0, 2]  # column 2: 45 right, 10 true 1, 0 true 0
    assert move[1, 0] and move[2, 0]  # column 0: 50 right and no other
    assert move.diagonal().all() and cls.diagonal().all()
    # a move into a class never predicted on the test data has no evidence for it
    never = np.array([[5, 0], [3, 0]])
    assert not precise_moves(confusion=never, min_precision=0.5, scope="move")[0, 1]
    with pytest.raises(ValueError, match="scope"):
        precise_moves(confusion=confusion, min_precision=0.5, scope="pair")
    g = gate_from(min_prob=0.0, min_test_precision=0.5, fit_entry={"test_confusion": confusion.tolist()}, scope="move")
    np.testing.assert_array_equal(imprecise_moves(g.move_ok), ~move & ~np.eye(3, dtype=bool))


def _one_way_noise(*, n: int, test_n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known noise that flips 40% of class 0 to class 1 and never back, and a model that learned the
    flip (it predicts 1 for a third of the true 0s): the test confusion, the corpus' (given, pred)
    counts and the true share w[g, t] of the rows labelled g that are t."""
    rng = np.random.default_rng(seed)
    flip = np.eye(4)
    flip[0] = [0.6, 0.4, 0, 0]
    says = np.array([[0.62, 0.33, 0.03, 0.02], [0.05, 0.9, 0.03, 0.02], [0.05, 0.05, 0.85, 0.05],
                     [0.02, 0.03, 0.05, 0.9]])  # P(pred | true), rows true

    def draw(rows: np.ndarray, probs: np.ndarray) -> np.ndarray:
        u = rng.random(len(rows))[:, None]
        return (u > np.cumsum(probs[rows], axis=1)).sum(1).clip(0, 3)

    true, test = rng.integers(0, 4, n), rng.integers(0, 4, test_n)
    given, pred = draw(true, flip), draw(true, says)
    confusion, given_pred, joint = np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))
    np.add.at(confusion, (test, draw(test, says)), 1)
    np.add.at(given_pred, (given, pred), 1)
    np.add.at(joint, (given, true), 1)
    return confusion, given_pred, joint / joint.sum(1, keepdims=True)


def test_transition_scope_weighs_how_often_the_given_label_is_wrong():
    """Under one-way noise (0 -> 1, never 1 -> 0) a row labelled 1 that the model predicts 0 is
    likely a flipped 0 and may move; a row labelled 0 that it predicts 1 is a 0 the model confuses
    (no 1 is ever labelled 0) and stays. The move scope, blind to the noise, lets that one through."""
    from noiseal_ray.finalize import label_posteriors, transition_moves

    confusion, given_pred, truth = _one_way_noise(n=6000, test_n=800, seed=3)
    w = label_posteriors(confusion=confusion, given_pred=given_pred)
    np.testing.assert_allclose(w.sum(1), 1.0)
    assert abs(w[1, 0] - truth[1, 0]) < 0.05 and w[0, 1] < 0.05  # about 29% of the 1s are 0s; no 0 is a 1
    ok = transition_moves(confusion=confusion, given_pred=given_pred, min_precision=0.5)
    assert ok[1, 0] and not ok[0, 1]
    assert not ok[2, 0] and not ok[3, 1]  # clean classes keep their labels
    assert precise_moves(confusion=confusion, min_precision=0.5, scope="move")[0, 1]
    np.testing.assert_array_equal(
        precise_moves(confusion=confusion, min_precision=0.5, scope="transition", given_pred=given_pred), ok)
    with pytest.raises(ValueError, match="given_pred"):
        precise_moves(confusion=confusion, min_precision=0.5, scope="transition")
    # a class no corpus row is labelled with keeps the label it does not have
    empty = given_pred.copy()
    empty[3] = 0
    np.testing.assert_array_equal(label_posteriors(confusion=confusion, given_pred=empty)[3], [0, 0, 0, 1])


def test_given_pred_counts_sum_a_table_by_label_and_prediction():
    from noiseal_ray.finalize import given_pred_counts

    out = given_pred_counts({"label": np.array([0, 1, 1, -1, 2]), "pred": np.array([1, 1, 1, 0, 0])}, num_classes=3)
    np.testing.assert_array_equal(out["given_pred"].reshape(3, 3), [[0, 1, 0], [0, 2, 0], [1, 0, 0]])


def _batch(n: int = 600, c: int = 4, seed: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, c, n)
    given = np.where(rng.random(n) < 0.3, rng.integers(0, c, n), clean)
    return {"id": np.array([f"r{i}" for i in range(n)], dtype=object),
            "text": np.array([f"text {i}" for i in range(n)], dtype=object),
            "part": rng.integers(0, 3, n), "label": given, "llm_label": rng.integers(-1, c, n),
            "llm_logprob": np.log(rng.uniform(0.2, 1, n)), "pred": np.where(rng.random(n) < 0.7, clean,
                                                                             rng.integers(0, c, n)),
            "pred_prob": rng.uniform(0.3, 1.0, n), "p_strong": rng.random(n), "p_weak": rng.random(n),
            "clean_label": clean, "llm_round": np.ones(n, np.int64), "llm_error": np.array([""] * n, dtype=object),
            "llm_cached": np.zeros(n, bool), "truncated": np.zeros(n, bool)}


def test_round_counts_score_the_gated_labels_and_count_what_was_held():
    b = _batch()
    kw = dict(part=b["part"], given=b["label"], llm=b["llm_label"], pred=b["pred"], hard_policy="strong")
    every = final_labels(**kw)
    gated = gated_labels(part=b["part"], given=b["label"], llm=b["llm_label"], pred=b["pred"], pred_prob=b["pred_prob"],
                         gate=ChangeGate(min_prob=0.9))
    counts = {k: int(v[0]) for k, v in batch_stats(b, round_no=1, hard_policy="strong",
                                                   gate=ChangeGate(min_prob=0.9)).items()}
    held = (every != b["label"]) & (gated == b["label"])
    assert 0 < held.sum() < (every != b["label"]).sum()
    assert counts["held"] == held.sum()
    assert counts["held_wrong"] == (held & (b["label"] != b["clean_label"])).sum()
    assert counts["changed"] == (gated != b["label"]).sum()
    assert counts["final_right"] == (gated == b["clean_label"]).sum()
    assert summarise(counts)["held"] == {"rows": counts["held"], "wrong": counts["held_wrong"]}
    plain = {k: int(v[0]) for k, v in batch_stats(b, round_no=1, hard_policy="strong").items()}
    assert plain["held"] == 0 and plain["changed"] == (every != b["label"]).sum() and "held" not in summarise(plain)


def test_labels_rows_mark_held_changes_and_keep_the_given_label():
    from noiseal_ray.stages.finalize import _to_labels

    b = _batch()
    names = ["a", "b", "c", "d"]
    t = _to_labels(b, label_names=names, hard_policy="strong", has_clean=True, gate=ChangeGate(min_prob=0.9)).to_pandas()
    assert len(t) == len(b["id"]) and list(t["id"]) == list(b["id"])
    held, changed = t["held"].to_numpy(), t["changed"].to_numpy()
    assert held.any() and changed.any() and not (held & changed).any()
    assert (t.loc[held, "final_label"] == t.loc[held, "given_label"]).all()
    # every change that stands is one the final strong model predicts at p >= 0.9
    assert (t.loc[changed, "pred_label"] == t.loc[changed, "final_label"]).all()
    assert (t.loc[changed, "pred_prob"] >= 0.9).all()
    plain = _to_labels(b, label_names=names, hard_policy="strong", has_clean=True).to_pandas()
    assert not plain["held"].any() and plain["changed"].sum() == changed.sum() + held.sum()


def test_held_rows_export_for_review_with_their_reason(tmp_path):
    from noiseal_ray.export import export_review
    from noiseal_ray.stages.finalize import _to_labels

    run = make_run(tmp_path / "run", n=200, xss=False)
    names = json.loads((run / "manifest.json").read_text())["label_names"]
    last = pq.read_table(run / "rounds" / "r3" / "table")
    b = {k: last.column(k).to_numpy(zero_copy_only=False) for k in last.column_names}
    labels = _to_labels(b, label_names=names, hard_policy="strong", has_clean=True, gate=ChangeGate(min_prob=0.9))
    pq.write_table(labels, run / "labels.parquet" / "part-0.parquet")
    want = labels.to_pandas()
    want = want[want["held"]]
    assert len(want) > 0
    out = tmp_path / "held.jsonl"
    assert export_review(run_dir=run, out=out, subset="held", fmt="jsonl") == len(want)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == want["id"].tolist()
    for r in recs:
        assert r["suggested_label"] == r["given_label"] and not r["changed"]
        assert r["reason"].startswith(f"Held ({r['partition']})") and "change_min_prob" in r["reason"]


def test_a_run_without_the_column_exports_no_held_rows(tmp_path):
    from noiseal_ray.export import export_review

    run = make_run(tmp_path / "run", n=60, xss=False)
    assert "held" not in pq.read_schema(next((run / "labels.parquet").glob("*.parquet"))).names
    assert export_review(run_dir=run, out=tmp_path / "h.jsonl", subset="held", fmt="jsonl") == 0


@pytest.mark.parametrize("key,bad", [("change_min_prob", -0.1), ("change_min_prob", 1.0), ("change_min_prob", "high"),
                                     ("change_min_test_precision", 1.5)])
def test_a_gate_setting_out_of_range_is_a_config_error(key, bad):
    from noiseal_ray.config import make_config
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        make_config(overrides={key: bad, "test_data": "test.csv"})


def test_a_test_precision_gate_without_test_data_is_a_config_error():
    from noiseal_ray.config import make_config
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="needs test_data"):
        make_config(overrides={"change_min_test_precision": 0.5, "data": "corpus.csv"})
    assert make_config(overrides={"change_min_test_precision": 0.5, "data": "corpus.csv",
                                  "test_data": "t.csv"}).change_min_test_precision == 0.5
    # Without --data the run is on the shipped sample, which brings its own clean test data.
    from noiseal_ray.pipeline import apply_sample_defaults

    assert apply_sample_defaults(make_config(overrides={"change_min_test_precision": 0.5})).test_data



def test_the_test_precision_gate_is_on_by_default_wherever_there_is_test_data():
    """Unset, the gate is 0.5 with clean test data (the sample brings its own) and off without; a value
    given, 0 included, is the value; a report of a run from before the gate existed says it had none."""
    from noiseal_ray.config import effective_test_precision, make_config
    from noiseal_ray.pipeline import apply_sample_defaults

    assert make_config(overrides={"data": "corpus.csv"}).min_test_precision() == 0.0
    assert make_config(overrides={"data": "corpus.csv", "test_data": "t.csv"}).min_test_precision() == 0.5
    assert apply_sample_defaults(make_config(overrides={})).min_test_precision() == 0.5
    off = make_config(overrides={"data": "corpus.csv", "test_data": "t.csv", "change_min_test_precision": 0.0})
    assert off.min_test_precision() == 0.0
    assert make_config(overrides={"change_min_test_precision": 0.7, "test_data": "t.csv"}).min_test_precision() == 0.7
    assert effective_test_precision(value=None, test_data=None) == 0.0
