"""`noiseal-ray export` and `read_review` on synthetic run directories (no Ray): subsets, the
three formats round-trip, reviewer labels win, Argilla record shape, CLI errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_run  # noqa: E402  (the synthetic run directory builder)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "out", n=200)


@pytest.fixture(scope="module")
def labels(run):
    return pq.read_table(run / "labels.parquet").to_pandas()


def expected(labels, subset):
    if subset in ("H", "P"):
        return labels[labels["partition"] == subset]
    if subset == "changed":
        return labels[labels["changed"]]
    return labels


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "argilla"])
@pytest.mark.parametrize("subset", ["H", "P", "changed", "all"])
def test_round_trip(run, labels, tmp_path, subset, fmt):
    from noiseal_ray.export import export_review, read_review

    out = tmp_path / f"review.{'csv' if fmt == 'csv' else 'jsonl'}"
    n = export_review(run_dir=run, out=out, subset=subset, fmt=fmt)
    want = expected(labels, subset)
    assert n == len(want) > 0
    back = read_review(out)
    assert list(back.columns) == ["id", "label", "suggested"]
    assert back["id"].tolist() == want["id"].tolist()
    assert back["label"].tolist() == want["final_label"].tolist()
    assert back["suggested"].tolist() == want["final_label"].tolist()  # the run's decision, in every format


def test_records_carry_scores_and_reason(run, labels, tmp_path):
    from noiseal_ray.export import export_review

    out = tmp_path / "p.jsonl"
    export_review(run_dir=run, out=out, subset="P", fmt="jsonl")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    for r in recs:
        assert {"id", "text", "given_label", "suggested_label", "p_strong", "p_weak", "pred_prob", "llm_logprob",
                "partition", "reason", "clean_label", "tau_strong"} <= set(r)
        assert r["partition"] == "P" and r["reason"].startswith("Purified (P)")
        assert r["given_label"] in r["reason"]
        if r["llm_label"] == r["suggested_label"]:
            assert r["suggestion_agent"] == "noiseal-ray/knn" and 0 < r["suggestion_score"] <= 1
    # the untrusted text survives verbatim (escaping is the HTML report's job)
    assert any("<script>alert(1)</script>" in r["text"] for r in recs)


def test_argilla_shape_and_responses_win(run, tmp_path):
    from noiseal_ray.export import export_review, read_review

    out = tmp_path / "a.jsonl"
    export_review(run_dir=run, out=out, subset="H", fmt="argilla")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    r = recs[0]
    assert set(r) >= {"id", "fields", "suggestions", "metadata", "responses"}
    assert set(r["fields"]) == {"text", "reason"}
    s = r["suggestions"]["label"]
    assert set(s) == {"value", "score", "agent"}
    assert r["metadata"]["partition"] == "H" and all(v is not None for v in r["metadata"].values())
    # a reviewer answered the first record in Argilla (to_dict() shape: responses by question)
    r["responses"] = {"label": [{"value": "class_1", "user_id": "u1"}, {"value": "class_1", "user_id": "u2"},
                                {"value": "class_2", "user_id": "u3"}]}
    recs[0] = r
    out.write_text("".join(json.dumps(x) + "\n" for x in recs))
    back = read_review(out)
    assert back["label"].iloc[0] == "class_1"
    assert back["label"].iloc[1:].tolist() == [x["suggestions"]["label"]["value"] for x in recs[1:]]


def test_csv_review_label_and_formula_guard(run, tmp_path):
    from noiseal_ray.export import export_review, read_review

    out = tmp_path / "c.csv"
    export_review(run_dir=run, out=out, subset="all", fmt="csv")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    rows[3]["review_label"] = "class_4"
    rows[5]["text"] = "=HYPERLINK(\"x\")"
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    back = read_review(out)
    assert back["label"].iloc[3] == "class_4"
    assert back["label"].iloc[4] == rows[4]["suggested_label"]
    # formula-looking texts are neutralised on export
    from noiseal_ray.export import _csv_safe

    assert _csv_safe("=1+1") == "'=1+1" and _csv_safe("plain") == "plain"


def test_export_writes_atomically_and_bad_input(run, tmp_path):
    from noiseal_ray.errors import ConfigError, InputError
    from noiseal_ray.export import export_review, read_review

    out = tmp_path / "x.jsonl"
    with pytest.raises(ConfigError, match="unknown subset"):
        export_review(run_dir=run, out=out, subset="Q")
    with pytest.raises(ConfigError, match="unknown format"):
        export_review(run_dir=run, out=out, fmt="xml")
    with pytest.raises(InputError, match="does not exist"):
        export_review(run_dir=tmp_path / "none", out=out)
    assert not out.exists() and not list(tmp_path.glob(".x.jsonl*"))
    with pytest.raises(InputError, match="does not exist"):
        read_review(tmp_path / "none.csv")


def test_cli_export(run, labels, tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from noiseal_ray.errors import ConfigError, InputError

    out = tmp_path / "h.csv"
    res = CliRunner().invoke(app, ["export", str(run), "--subset", "H", "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {len(expected(labels, 'H')):,} H record(s)" in res.output
    bad = CliRunner().invoke(app, ["export", str(run), "--subset", "X", "--out", str(out)])
    assert isinstance(bad.exception, ConfigError) and "H, P, changed, held, reviewed, all" in str(bad.exception)
    bad = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(out)])
    assert isinstance(bad.exception, InputError) and "not a noiseal-ray run directory" in str(bad.exception)
    bad = CliRunner().invoke(app, ["export", str(run)])
    assert bad.exit_code == 2 and "--out" in bad.output  # click usage error


def test_console_script_exit_codes(tmp_path):
    """The installed entry point maps user errors to exit code 2 with a one-line message."""
    res = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "export", str(tmp_path / "none"),
                          "--out", str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert res.returncode == 2
    assert "error: run directory" in res.stderr and "does not exist" in res.stderr
    res = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "report", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a noiseal-ray run directory" in res.stderr
