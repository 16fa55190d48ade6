"""People in the loop without Ray: reading reviewed labels (every export format and a plain
id,label table; the errors a user sees), the review budget's ranking and class spread, trusted rows
in the split, the final labels and the demonstrations, and the report's reviewed section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from noiseal_ray.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_run  # noqa: E402  (the synthetic run directory builder)

NAMES = ["a", "b", "c"]
IDS = [f"r{i}" for i in range(10)]


def read(path, **kw):
    from noiseal_ray.review import read_reviewed

    return read_reviewed(path=path, label_names=NAMES, corpus_ids=IDS, **kw)


def test_plain_id_label_tables_in_three_formats(tmp_path):
    (tmp_path / "r.csv").write_text("id,label\nr3,b\nr1,c\nr3,b\n")  # a repeated row with the same label is fine
    (tmp_path / "r.jsonl").write_text('{"id": "r3", "label": "b"}\n\n{"id": "r1", "label": "c"}\n')
    pq.write_table(pa.table({"id": ["r3", "r1"], "label": ["b", "c"]}), tmp_path / "r.parquet")
    for name in ("r.csv", "r.jsonl", "r.parquet"):
        rows, labels = read(tmp_path / name)
        assert rows.tolist() == [1, 3] and labels.tolist() == [2, 1], name


def test_only_answered_records_of_an_export_are_trusted(tmp_path):
    """An exported file holds every suggestion; only what a reviewer filled in is a reviewed label."""
    (tmp_path / "e.csv").write_text("id,suggested_label,review_label\nr0,a,\nr2,a,c\nr5,b,\n")
    assert [x.tolist() for x in read(tmp_path / "e.csv")] == [[2], [2]]
    (tmp_path / "e.jsonl").write_text(json.dumps({"id": "r0", "suggested_label": "a", "review_label": ""}) + "\n"
                                      + json.dumps({"id": "r4", "suggested_label": "a", "review_label": "b"}) + "\n")
    assert [x.tolist() for x in read(tmp_path / "e.jsonl")] == [[4], [1]]
    arg = [{"id": "r6", "fields": {"text": "t"}, "suggestions": {"label": {"value": "a"}}, "responses": {}},
           {"id": "r7", "fields": {"text": "t"}, "suggestions": {"label": {"value": "a"}},
            "responses": {"label": [{"value": "c"}, {"value": "c"}, {"value": "b"}]}}]
    (tmp_path / "e.argilla.jsonl").write_text("".join(json.dumps(d) + "\n" for d in arg))
    assert [x.tolist() for x in read(tmp_path / "e.argilla.jsonl")] == [[7], [2]]


@pytest.mark.parametrize("body, message", [
    ("id,label\nr1,a\nnope,b\nr2,zzz\n", "label(s) not in the corpus' label set (a, b, c): line 4 ('zzz')"),
    ("id,label\nr1,a\nnope,b\n", "1 id(s) not in the corpus: line 3 ('nope')"),
    ("id,label\nr1,a\nr1,b\n", "id(s) given different labels: 'r1'"),
    ("text,label\nx,a\n", "missing column(s) id"),
])
def test_bad_reviewed_files_name_the_file_and_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(InputError) as exc:
        read(path)
    assert str(path) in str(exc.value) and message in str(exc.value), str(exc.value)
    assert exc.value.exit_code == 2


def test_a_missing_reviewed_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read(tmp_path / "missing.csv")


def test_trusted_rows_are_always_clean_and_keep_their_label():
    from noiseal_ray.finalize import final_labels
    from noiseal_ray.split import RuleThresholds
    from noiseal_ray.stages.thresholds import assign_parts

    split = RuleThresholds.class_mean(tau_strong=np.full(3, 0.5), tau_weak=np.full(3, 0.5))
    batch = {"p_strong": np.array([0.1, 0.1, 0.9]), "p_weak": np.array([0.1, 0.1, 0.9]),
             "label": np.array([0, 1, 2]), "pred": np.array([1, 2, 2]), "trusted": np.array([True, False, False])}
    part = assign_parts(batch=batch, split=split)["part"]
    assert part.tolist() == [0, 1, 0]  # the trusted row is R although both models reject its label
    final = final_labels(part=np.array([1, 1, 2]), given=np.array([0, 1, 2]), llm=np.array([2, 0, -1]),
                         pred=np.array([1, 2, 0]), hard_policy="strong", trusted=np.array([True, False, True]))
    assert final.tolist() == [0, 0, 2]


def test_trusted_demonstrations_come_first():
    from noiseal_ray.annotate.demos import DemoPool

    emb = np.eye(4, dtype=np.float32)
    q = np.array([[0.9, 0.3, 0.2, 0.1]], dtype=np.float32)
    plain = DemoPool(texts=np.array(list("wxyz"), object), labels=np.arange(4), embeddings=emb)
    assert plain.nearest(q, k=3)[0].tolist() == [[0, 1, 2]]
    trusted = DemoPool(texts=np.array(list("wxyz"), object), labels=np.arange(4), embeddings=emb,
                       trusted=np.array([False, False, True, False]))
    idx, sims = trusted.nearest(q, k=3)
    assert idx.tolist() == [[2, 0, 1]] and sims[0, 0] == pytest.approx(0.2)


def test_final_prob_and_priorities():
    from noiseal_ray.review import review_priority
    from noiseal_ray.review.budget import final_prob

    given, final = np.array([0, 0, 0, 0]), np.array([0, 1, 2, 0])
    pred, llm = np.array([0, 1, 1, 1]), np.array([-1, 1, 2, -1])
    p_given, pred_prob = np.array([0.9, 0.3, 0.2, 0.4]), np.array([0.9, 0.6, 0.5, 0.5])
    q = final_prob(given=given, final=final, pred=pred, p_given=p_given, pred_prob=pred_prob)
    # kept given: p_given; the model's argmax: pred_prob; an annotator's third label: at most 1 - 0.5 - 0.2
    np.testing.assert_allclose(q, [0.9, 0.6, 0.3, 0.4])
    doubt = review_priority(rule="doubt", given=given, final=final, pred=pred, llm=llm, p_given=p_given,
                            pred_prob=pred_prob, weak_rejects=np.array([False, True, False, False]))
    np.testing.assert_allclose(doubt, 1 - q)
    dis = review_priority(rule="disagree", given=given, final=final, pred=pred, llm=llm, p_given=p_given,
                          pred_prob=pred_prob, weak_rejects=np.array([False, True, False, False]))
    assert np.argmax(dis) == 2 and np.argmin(dis) == 0  # three opinions first, full agreement last
    with pytest.raises(ValueError, match="unknown review rule"):
        review_priority(rule="?", given=given, final=final, pred=pred, llm=llm, p_given=p_given, pred_prob=pred_prob,
                        weak_rejects=np.zeros(4, bool))


def test_spread_pick_caps_each_class_then_fills():
    from noiseal_ray.review.budget import spread_pick

    prio = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    classes = np.array([0, 0, 0, 0, 1, 2])
    assert spread_pick(priority=prio, classes=classes, budget=3, num_classes=3).tolist() == [0, 4, 5]
    # Classes 1 and 2 run out: the rest of the budget goes to the best rows left, in priority order.
    assert spread_pick(priority=prio, classes=classes, budget=5, num_classes=3).tolist() == [0, 1, 2, 4, 5]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic finished run whose first 20 rows came reviewed."""
    out = make_run(tmp_path_factory.mktemp("run") / "out", n=300, xss=False)
    path = next((out / "labels.parquet").glob("*.parquet"))
    t = pq.read_table(path)
    reviewed = np.zeros(t.num_rows, bool)
    reviewed[:20] = True
    final = t.column("final_label").to_pylist()
    final[:5] = [t.column("clean_label")[i].as_py() for i in range(5)]
    t = t.set_column(t.schema.get_field_index("final_label"), "final_label", pa.array(final))
    pq.write_table(t.append_column("reviewed", pa.array(reviewed)), path)
    return out


def test_select_for_review_picks_doubtful_rows_spread_over_classes_and_skips_reviewed(run):
    from noiseal_ray.review import select_for_review
    from noiseal_ray.review.budget import final_prob

    labels = pq.read_table(run / "labels.parquet").to_pandas()
    picked = select_for_review(run_dir=run, budget=30, rule="doubt").to_pandas()
    assert len(picked) == 30 and picked["id"].is_unique
    assert not set(picked["id"]) & set(labels["id"][:20])  # never a reviewed row
    assert picked["review_priority"].is_monotonic_decreasing
    assert all(w.startswith("the strong model gives the suggested label") for w in picked["review_why"])
    chosen = labels.set_index("id").loc[picked["id"]]
    assert chosen["final_label"].value_counts().max() <= 5  # ceil(30 / 6 classes)
    names = sorted(set(labels["given_label"]))
    ix = {n: i for i, n in enumerate(names)}
    code = lambda c: labels[c].map(ix).to_numpy()  # noqa: E731
    doubt = 1 - final_prob(given=code("given_label"), final=code("final_label"), pred=code("pred_label"),
                           p_given=labels["p_strong"].to_numpy(), pred_prob=labels["pred_prob"].to_numpy())
    # The picks are far more doubtful than the corpus as a whole.
    assert chosen.shape[0] and picked["review_priority"].mean() > np.median(doubt) + 0.2
    by_given = select_for_review(run_dir=run, budget=30, rule="doubt", spread="given").to_pandas()
    assert labels.set_index("id").loc[by_given["id"], "given_label"].value_counts().max() <= 5
    top = select_for_review(run_dir=run, budget=30, rule="doubt", spread="none").to_pandas()
    assert top["review_priority"].min() >= picked["review_priority"].min()  # no cap: the 30 highest overall


def test_decision_spread_audits_every_decision_of_the_run(run):
    """Spread over (given, suggested) pairs: each kept class and each move between two classes
    gets a review while the budget allows, however few rows it holds."""
    from noiseal_ray.review import select_for_review

    labels = pq.read_table(run / "labels.parquet").to_pandas().iloc[20:]  # the unreviewed rows
    pairs = labels.groupby(["given_label", "final_label"]).size()
    assert 6 < len(pairs) < 36 and pairs.min() < pairs.max() / 5  # some decisions are rare: the test can fail
    for rule in ("random", "doubt"):
        picked = select_for_review(run_dir=run, budget=36, rule=rule, spread="decision").to_pandas()
        chosen = labels.set_index("id").loc[picked["id"]]
        got = chosen.groupby(["given_label", "final_label"]).size()
        assert len(picked) == 36 and set(got.index) == set(pairs.index), rule
    # Each audit pick says which decision it checks.
    for w, g, f in zip(picked["review_why"], chosen["given_label"], chosen["final_label"]):
        decision = f"kept '{g}'" if g == f else f"moved '{g}' -> '{f}'"
        assert f"among the rows the run {decision}" in w
    # Against the suggested-class spread, the rare moves are looked at.
    by_class = labels.set_index("id").loc[select_for_review(run_dir=run, budget=36, rule="random")["id"].to_pylist()]
    assert len(by_class.groupby(["given_label", "final_label"]).size()) < len(pairs)


def test_random_sample_and_mixed_rules_are_seeded_and_disjoint(run):
    from noiseal_ray.review import select_for_review

    labels = pq.read_table(run / "labels.parquet").to_pandas()
    reviewed = set(labels["id"][:20])
    doubt = select_for_review(run_dir=run, budget=30, rule="doubt").to_pandas()
    rand = select_for_review(run_dir=run, budget=30, rule="random").to_pandas()
    # An audit sample: the same run gives the same picks, never a reviewed row, and they are not the doubt picks.
    assert rand["id"].tolist() == select_for_review(run_dir=run, budget=30, rule="random").to_pandas()["id"].tolist()
    assert len(rand) == 30 and rand["id"].is_unique and not set(rand["id"]) & reviewed
    assert len(set(rand["id"]) & set(doubt["id"])) < 15
    assert all(w.startswith("picked at random") for w in rand["review_why"])
    # Spread over the 281 unreviewed rows at random: the picks' mean position is near the middle.
    pos = labels.reset_index().set_index("id").loc[rand["id"], "index"]
    assert 90 < pos.mean() < 210
    sample = select_for_review(run_dir=run, budget=30, rule="sample", spread="none").to_pandas()
    full = select_for_review(run_dir=run, budget=280, rule="doubt", spread="none").to_pandas()
    d = dict(zip(full["id"], full["review_priority"]))
    # Weighted by doubt: more doubtful than random picks on the mean, but not only the top 30.
    assert np.mean([d[i] for i in sample["id"]]) > np.mean([d.get(i, 0.0) for i in rand["id"]])
    assert set(sample["id"]) != set(select_for_review(run_dir=run, budget=30, rule="doubt", spread="none")
                                    .to_pandas()["id"])
    mixed = select_for_review(run_dir=run, budget=30, rule="mixed").to_pandas()
    assert len(mixed) == 30 and mixed["id"].is_unique and not set(mixed["id"]) & reviewed
    half = select_for_review(run_dir=run, budget=15, rule="doubt").to_pandas()
    assert mixed["id"][:15].tolist() == half["id"].tolist()  # the doubt half first, then the random half
    assert sum(w.startswith("picked at random") for w in mixed["review_why"]) == 15


def test_export_budget_writes_the_picks_in_order_with_why(run, tmp_path):
    from noiseal_ray.export import export_review, read_review
    from noiseal_ray.review import select_for_review
    from noiseal_ray.review.budget import budget_records

    out = tmp_path / "budget.csv"
    assert export_review(run_dir=run, out=out, fmt="csv", records=budget_records(run_dir=run, budget=12, rule="doubt")) == 12
    import pandas as pd

    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df["id"]) == select_for_review(run_dir=run, budget=12, rule="doubt").column("id").to_pylist()
    assert {"review_priority", "review_why", "reason"} <= set(df.columns)
    assert read_review(out, reviewed_only=True).empty  # nothing answered yet


def test_report_shows_the_reviewed_rows(run):
    from noiseal_ray.report import build_report

    doc = build_report(run_dir=run)
    assert "Reviewed rows (trusted)" in doc and "20 rows came reviewed" in doc


def test_export_budget_from_the_command_line(run, tmp_path):
    from typer.testing import CliRunner

    import cli

    out = tmp_path / "picks.jsonl"
    res = CliRunner().invoke(cli.app, ["export", str(run), "--budget", "7", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "wrote 7 most-worth-reviewing (budget 7, rule moves) record(s)" in res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 7 and all(r["review_why"] and r["review_priority"] is not None for r in recs)
    res = CliRunner().invoke(cli.app, ["export", str(run), "--budget", "7", "--rule", "vibes", "--out", str(out)])
    # cli.main maps it to exit 2 (tests/unit/test_export.py runs the console script for the codes)
    assert res.exception.exit_code == 2 and "unknown review rule 'vibes'" in str(res.exception)


def test_a_resumed_run_refuses_a_changed_reviewed_file(tmp_path):
    from types import SimpleNamespace

    from noiseal_ray.errors import OutputError
    from noiseal_ray.stages.ingest import _files_hash, check_reviewed_unchanged

    f = tmp_path / "reviewed.csv"
    f.write_text("id,label\nr1,a\n")
    run = SimpleNamespace(out=tmp_path / "run", config=SimpleNamespace(reviewed_files=lambda: [str(f)]),
                          manifest=SimpleNamespace(data={"reviewed_sha256": _files_hash([str(f)])}))
    check_reviewed_unchanged(run=run)  # the same file: resumes
    f.write_text("id,label\nr1,b\n")
    with pytest.raises(OutputError, match="began with another version of the reviewed file"):
        check_reviewed_unchanged(run=run)
    f.unlink()
    with pytest.raises(InputError, match="No such file"):
        check_reviewed_unchanged(run=run)


def test_unreadable_or_empty_review_files_are_input_errors(tmp_path):
    from noiseal_ray.review import read_reviewed_files

    cases = {"empty.csv": "", "notes.txt": "id label\nr1 a\n", "list.jsonl": "[1, 2]\n"}
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(InputError) as exc:
            read(tmp_path / name)
        assert str(tmp_path / name) in str(exc.value), name
    # An export nobody answered: no trusted row, which is said rather than silently ignored.
    (tmp_path / "unanswered.csv").write_text("id,suggested_label,review_label\nr0,a,\n")
    with pytest.raises(InputError, match="no reviewed row"):
        read_reviewed_files(paths=[tmp_path / "unanswered.csv"], label_names=NAMES, corpus_ids=IDS)


def test_several_files_merge_and_a_conflict_names_both(tmp_path):
    from noiseal_ray.review import read_reviewed_files

    (tmp_path / "one.csv").write_text("id,label\nr1,a\nr2, b \n")  # labels are trimmed
    (tmp_path / "two.csv").write_text("id,label\nr2,b\nr4,c\nr5,\n")  # a blank label is no answer
    rows, labels, sugg = read_reviewed_files(paths=[tmp_path / "one.csv", tmp_path / "two.csv"], label_names=NAMES,
                                             corpus_ids=IDS)
    assert rows.tolist() == [1, 2, 4] and labels.tolist() == [0, 1, 2] and sugg.tolist() == [-1, -1, -1]
    (tmp_path / "three.csv").write_text("id,label\nr1,c\n")
    with pytest.raises(InputError, match=r"one.csv and .*three.csv give id 'r1' different labels \('a', 'c'\)"):
        read_reviewed_files(paths=[tmp_path / "one.csv", tmp_path / "three.csv"], label_names=NAMES, corpus_ids=IDS)


def test_parquet_integer_labels_with_nulls_and_argilla_drafts():
    import tempfile

    from noiseal_ray.review import read_reviewed

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.parquet"
        pq.write_table(pa.table({"id": ["1", "3", "4"], "label": [2.0, None, 0.0]}), path)
        rows, labels = read_reviewed(path=path, label_names=["0", "1", "2"], corpus_ids=["0", "1", "2", "3", "4"])
        assert rows.tolist() == [1, 4] and labels.tolist() == [2, 0]
        arg = Path(d) / "a.jsonl"
        arg.write_text(json.dumps({"id": "r1", "fields": {}, "suggestions": {"label": {"value": "a"}},
                                   "responses": {"label": [{"value": "b", "status": "draft"},
                                                           {"value": "c", "status": "submitted"}]}}) + "\n")
        assert [x.tolist() for x in read(arg)] == [[1], [2]]


def test_labels_and_counts_of_a_round_table_with_reviewed_rows():
    """What finalize writes and counts: given_label from ``given``, the reviewed label final, the
    reviewer's fixes in the label accuracy but not in the run's own detection and correction."""
    from noiseal_ray.finalize import batch_stats, summarise
    from noiseal_ray.stages.finalize import _to_labels

    b = {"id": np.array(["a", "b", "c", "d"], object), "text": np.array(["t"] * 4, object),
         "label": np.array([2, 1, 0, 1]), "given": np.array([0, 1, 0, 1]), "trusted": np.array([True, False, False, False]),
         "clean_label": np.array([2, 1, 1, 1]), "part": np.array([0, 1, 0, 2], np.int8),
         "llm_label": np.array([-1, 0, -1, -1]), "llm_logprob": np.full(4, np.nan), "llm_error": np.array([""] * 4, object),
         "llm_round": np.array([-1, 1, -1, -1]), "llm_cached": np.zeros(4, bool), "p_strong": np.full(4, 0.5),
         "p_weak": np.full(4, 0.5), "pred": np.array([0, 0, 0, 1]), "pred_prob": np.full(4, 0.6),
         "truncated": np.zeros(4, bool)}
    t = _to_labels(b, label_names=NAMES, hard_policy="strong", has_clean=True).to_pydict()
    assert t["given_label"] == ["a", "b", "a", "b"] and t["final_label"] == ["c", "a", "a", "b"]
    assert t["reviewed"] == [True, False, False, False] and t["changed"] == [True, True, False, False]
    s = summarise({k: int(v[0]) for k, v in batch_stats(b, round_no=1, hard_policy="strong").items()})
    assert s["reviewed"] == {"rows": 1, "changed_by_reviewer": 1}
    assert s["recovery"]["final_accuracy"] == 0.5  # the reviewed row counts: it is right now
    assert s["recovery"]["fixed"] == 0.5  # the reviewer fixed one of the two wrong given labels
    # The run's own calls: one wrong label outside the reviewed row (c, kept in R), one right label changed (b).
    assert s["detection"]["recall"] == 0.0 and s["correction"]["precision"] == 0.0


def test_cover_pick_takes_the_most_doubtful_typical_row_of_each_cluster():
    from noiseal_ray.review.cover import cover_pick

    assign = np.array([0, 0, 0, 0, 1, 1, 2])
    dist = np.array([0.1, 0.2, 0.9, 0.3, 0.5, 0.5, 0.0])
    doubt = np.array([0.2, 0.5, 0.99, 0.5, 0.1, 0.3, 0.0])
    # Cluster 0's most doubtful row (2) is an outlier beyond the median: of the typical rows, the
    # most doubtful ties (1 and 3) go to the nearer one.
    got = cover_pick(assign=assign, dist=dist, doubt=doubt, median=np.array([0.25, 0.5, 0.0]))
    assert got == {0: 1, 1: 5, 2: 6}


def test_cover_rule_gives_one_row_per_region_of_the_corpus(run, tiny_encoder, tmp_path):
    """The cover rule embeds the rows with the run's model (the tiny encoder here: its embeddings
    are untrained but deterministic) and picks one row per k-means cluster."""
    import shutil

    from noiseal_ray.models.bundle import new_bundle, save_bundle
    from noiseal_ray.review import select_for_review

    own = tmp_path / "run"
    shutil.copytree(run, own)
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="--rule cover embeds the rows with the run's final model"):
        select_for_review(run_dir=own, budget=25, rule="cover")
    names = json.loads((own / "metrics.json").read_text())["label_names"]
    save_bundle(new_bundle(strong_model=tiny_encoder, label_names=names, max_length=16, weak_embed_dim=8,
                           weak_hidden=8, seed=0), own / "model", include_weak=False)
    labels = pq.read_table(own / "labels.parquet").to_pandas()
    picked = select_for_review(run_dir=own, budget=25, rule="cover").to_pandas()
    assert len(picked) == 25 and picked["id"].is_unique and not set(picked["id"]) & set(labels["id"][:20])
    assert picked["review_priority"].is_monotonic_decreasing
    assert all(w.startswith("the most doubtful typical row of a region of about") for w in picked["review_why"])
    again = select_for_review(run_dir=own, budget=25, rule="cover").to_pandas()
    assert again["id"].tolist() == picked["id"].tolist()  # seeded: the same run gives the same picks
    # Regions, not doubt: the cover picks are not simply the 25 most doubtful rows.
    top = select_for_review(run_dir=own, budget=25, rule="doubt", spread="none").to_pandas()
    assert set(picked["id"]) != set(top["id"])
