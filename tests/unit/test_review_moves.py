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
    # The rows put back are marked, and the final labels count them held (for review), the label kept.
    assert out["held_back"].tolist() == [True, False, False, hard_policy == "strong", False, True]
    from noiseal_ray.finalize import batch_stats

    n = len(out["part"])
    table = {**out, "clean_label": np.array([1, 0, 1, 1, 0, 1]), "llm_round": np.ones(n, np.int64),
             "llm_error": np.array([""] * n, dtype=object), "llm_cached": np.zeros(n, bool),
             "truncated": np.zeros(n, bool)}
    s = batch_stats(table, round_no=1, hard_policy=hard_policy)
    assert s["held"][0] == out["held_back"].sum() and s["held_wrong"][0] == out["held_back"].sum()


def test_move_quotas_make_the_largest_moves_refutable_first():
    from noiseal_ray.review.audit import move_quotas

    sizes = np.array([[500, 119, 59, 2], [81, 400, 0, 1], [0, 0, 300, 7], [5, 0, 0, 90]])
    q = move_quotas(sizes=sizes, budget=10)
    # 3 each to the three largest moves (119, 81, 59), then the 4th largest gets what is left.
    assert q[0, 1] == q[1, 0] == q[0, 2] == 3 and q[2, 3] == 1 and q.sum() == 10
    q = move_quotas(sizes=sizes, budget=40)
    # Then one more each in turn, largest first: small moves give all their rows, the rest level up.
    assert q[0, 3] == 2 and q[1, 3] == 1 and q[3, 0] == 5 and q[2, 3] == 7 and q.sum() == 40
    assert q[0, 1] == 9 and q[1, 0] == q[0, 2] == 8 and np.trace(q) == 0  # the largest move first
    q = move_quotas(sizes=sizes, budget=10_000)  # enough for every moved row, and never a kept one
    assert (q == np.where(np.eye(4, dtype=bool), 0, sizes)).all()
    assert move_quotas(sizes=sizes, budget=0).sum() == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic finished run (tests/unit/test_report.py) whose first 10 rows came reviewed."""
    import sys
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import make_run

    out = make_run(tmp_path_factory.mktemp("run") / "out", n=300, xss=False)
    path = next((out / "labels.parquet").glob("*.parquet"))
    t = pq.read_table(path)
    pq.write_table(t.append_column("reviewed", pa.array(np.arange(t.num_rows) < 10)), path)
    return out


def test_the_moves_rule_audits_each_move_at_random_then_samples_the_rest(run):
    import pyarrow.parquet as pq

    from noiseal_ray.review import select_for_review
    from noiseal_ray.review.audit import move_quotas

    labels = pq.read_table(run / "labels.parquet").to_pandas()
    open_rows = labels.iloc[10:]
    sizes = open_rows.groupby(["given_label", "final_label"]).size()
    moves = sizes[[g != f for g, f in sizes.index]]
    assert len(moves) >= 5 and moves.max() > 6  # several moves, some larger than a quota: the test can fail
    picked = select_for_review(run_dir=run, budget=40, rule="moves").to_pandas()
    assert len(picked) == 40 and picked["id"].is_unique and not set(picked["id"]) & set(labels["id"][:10])
    assert set(picked["review_rule"]) == {"random"}  # every pick a fair test of its move
    is_audit = picked["review_why"].str.startswith("picked at random among the rows the run moved")
    audit = labels.set_index("id").loc[picked.loc[is_audit, "id"]]
    assert (audit["given_label"] != audit["final_label"]).all()  # the audit looks at moves only
    names = sorted(set(labels["given_label"]))
    ix = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(names)), np.int64)
    for (g, f), k in sizes.items():
        m[ix[g], ix[f]] = k
    want = move_quotas(sizes=m, budget=20)
    got = audit.groupby(["given_label", "final_label"]).size()
    assert {(ix[g], ix[f]): k for (g, f), k in got.items()} == {tuple(i): want[tuple(i)] for i in np.argwhere(want)}
    for w, g, f in zip(picked.loc[is_audit, "review_why"], audit["given_label"], audit["final_label"]):
        assert w.startswith(f"picked at random among the rows the run moved '{g}' -> '{f}'")
    # The rest at random over the whole corpus: kept labels too, and the same picks on a second call.
    rest = labels.set_index("id").loc[picked.loc[~is_audit, "id"]]
    assert len(rest) == 40 - want.sum() and (rest["given_label"] == rest["final_label"]).any()
    again = select_for_review(run_dir=run, budget=40, rule="moves").to_pandas()
    assert again["id"].tolist() == picked["id"].tolist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "argilla"])
def test_only_random_picks_of_an_exported_budget_test_a_move(run, tmp_path, fmt):
    """Handed back, a doubt pick's review is trusted but judges no move (it is among its move's
    likeliest mistakes); an audit pick's review does."""
    import json

    import pandas as pd

    from noiseal_ray.export import export_review
    from noiseal_ray.review import read_reviewed
    from noiseal_ray.review.budget import budget_records

    out = tmp_path / f"picks.{'csv' if fmt == 'csv' else 'jsonl'}"
    recs = budget_records(run_dir=run, budget=30, rule="mixed")  # half by doubt, half at random
    assert {r["review_rule"] for r in recs} == {"doubt", "random"}
    export_review(run_dir=run, out=out, fmt=fmt, records=recs)
    if fmt == "csv":  # the reviewer agrees with every suggestion
        df = pd.read_csv(out, dtype=str, keep_default_na=False)
        df["review_label"] = df["suggested_label"]
        df.to_csv(out, index=False)
    else:
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        for d in lines:
            if fmt == "argilla":
                d["responses"] = {"label": [{"value": d["suggestions"]["label"]["value"]}]}
            else:
                d["review_label"] = d["suggested_label"]
        out.write_text("".join(json.dumps(d) + "\n" for d in lines))
    names = json.loads((run / "metrics.json").read_text())["label_names"]
    ids = pd.read_parquet(run / "labels.parquet", columns=["id"])["id"].tolist()
    rows, labels, sugg = read_reviewed(path=out, label_names=names, corpus_ids=ids, with_suggested=True)
    rule = {r["id"]: r["review_rule"] for r in recs}
    assert len(rows) == 30
    for r, lab, s in zip(rows, labels, sugg):
        assert s == (lab if rule[ids[r]] == "random" else -1), (ids[r], rule[ids[r]])
