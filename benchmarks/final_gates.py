"""Final-label gates, offline (issue 15, item 6): could a run's own scores tell which of its label
changes to keep?

A gate vetoes some of a finished run's changes (the final label goes back to the given one) from
what the run itself knows: its round tables (both models' scores after each round, the warm-up's
first) and labels.parquet. Each gate is scored on the rows with a known true label: final labels
right, wrong given labels fixed, right ones broken. A gate is worth making the run's rule only if it
helps on every dataset (the product's first rule: do no harm where the run cannot tell).

    .venv/bin/python -m benchmarks.final_gates RUN [RUN ...] [--out benchmarks/results/final_gates.md]

Each RUN is a finished ``noiseal-ray run`` folder with a clean label column and its round tables
(``rounds/r*/table``), e.g. the ``none`` runs of ``benchmarks.review_loop``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLUMNS = ["id", "clean_label", "given", "trusted", "pred", "pred_prob", "p_weak"]

# Gate name -> which of the run's changes it keeps (`vetoes` undoes the rest).
GATES = {
    "none": "every change the run made (its final labels)",
    "stable": "a change only where the strong model's argmax was the new label after every round, the warm-up's too",
    "warm-up sure": "a change only where the warm-up model already predicted the new label with p >= 0.5",
    "final sure": "a change only where the final strong model gives the new label p >= 0.9",
    "weak doubts": "a change only where the weak model gives the given label less than 1/C",
    "H keeps given": "no change in H (`--hard-policy given`); P's relabels stay",
}
# With --test (the run's clean test data scored by its final model): gates calibrated on rows whose
# labels are trusted, as issue 15 item 6 asks. A change to class f is more likely right than the
# given label whenever P(true = f | the model predicts f) > 1/2 (the given label then has less).
TEST_GATES = {
    "test precision": "a change to class f only where the final model's precision for f on the clean test data is >= 0.5",
    "sure + test precision": "both `final sure` and `test precision`",
    "test precision (move)": "a change g -> f only where, of the clean test rows the final model predicts f whose true "
                             "label is f or g, at least half are f (`--change-precision-scope move`)",
    "test precision (transition)": "a change g -> f only where a row labelled g that the final model predicts f is "
                                   "more likely f than g, weighing how often rows labelled g are f (estimated from "
                                   "the model's predictions on the corpus and its test confusion; "
                                   "`--change-precision-scope transition`)",
}


def _round_tables(run: Path) -> list[Path]:
    """The round tables in round order, r1 (scored by the warm-up models) first; r0 (the input) left out."""
    rounds = sorted((p for p in (run / "rounds").glob("r*") if any((p / "table").glob("*.parquet"))),
                    key=lambda p: int(p.name[1:]))
    return [p / "table" for p in rounds if p.name != "r0"]


def evidence(run: Path) -> dict[str, np.ndarray]:
    """Per row (in labels.parquet's order): given, final, clean label ids (-1 unknown), trusted, part,
    the strong argmax after each round (R, n), the last round's pred_prob and p_weak, the number of
    classes. Label names map to the tables' ids through the manifest's ``label_names``."""
    import pandas as pd

    from noiseal_ray.rundir import Manifest

    names = {name: i for i, name in enumerate(Manifest.load(run).label_names)}
    lab = pd.read_parquet(run / "labels.parquet", columns=["id", "final_label", "partition"])
    tables = [pd.read_parquet(t, columns=COLUMNS).set_index("id").loc[lab["id"]] for t in _round_tables(run)]
    if len(tables) < 2:
        raise ValueError(f"{run}: fewer than two round tables under rounds/ (a run with rounds >= 1 keeps them)")
    last = tables[-1]
    return {"given": last["given"].to_numpy(), "clean": last["clean_label"].to_numpy(),
            "final": lab["final_label"].map(names).astype(np.int64).to_numpy(),
            "trusted": last["trusted"].to_numpy(bool), "part": lab["partition"].to_numpy(),
            "preds": np.stack([t["pred"].to_numpy() for t in tables]),
            "warm_prob": tables[0]["pred_prob"].to_numpy(), "pred_prob": last["pred_prob"].to_numpy(),
            "p_weak": last["p_weak"].to_numpy(), "classes": len(names)}


def test_precision(run: Path, *, classes: int) -> np.ndarray:
    """(C,) the run's final strong model's precision per predicted class on the run's clean test data
    (NaN where it predicts a class for no test row), from ``test_confusion``."""
    from noiseal_ray.metrics import class_precision

    return class_precision(test_confusion(run))


def test_confusion(run: Path) -> np.ndarray:
    """(C, C) the run's final strong model on the run's clean test data (rows true, columns
    predicted): the last fit's ``test_confusion`` in the manifest where the run recorded one, else by
    scoring the test data with ``run/model`` (which needs an initialised Ray and the model's weights)."""
    import json

    from noiseal_ray.config import load_saved_config
    from noiseal_ray.rundir import train_key

    cfg = load_saved_config(run / "config.yaml")
    if not cfg.test_data:
        raise ValueError(f"{run}: the run has no test data (--test needs it)")
    fit = json.loads((run / "manifest.json").read_text())["rounds"].get(train_key(round_no=cfg.rounds), {})
    return np.array(fit["test_confusion"]) if "test_confusion" in fit else _score_test(run, cfg=cfg)


def _score_test(run: Path, *, cfg) -> np.ndarray:
    """(C, C) confusion (rows true, columns predicted) of ``run/model`` on the run's test data."""
    from noiseal_ray.predict import test_confusion

    return test_confusion(model_dir=str(run / "model"), data=cfg.test_data, text_col=cfg.text_col,
                          label_col=cfg.test_label_column())


def vetoes(e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Gate name -> (n,) bool: the changes the gate undoes (the ``TEST_GATES`` too when ``e`` holds
    ``test_precision``)."""
    changed = (e["final"] != e["given"]) & ~e["trusted"]
    new = e["final"]
    out = _own_vetoes(e, changed=changed, new=new)
    if "test_precision" in e:
        unsure = ~(np.nan_to_num(e["test_precision"], nan=0.0)[new] >= 0.5)
        out["test precision"] = changed & unsure
        out["sure + test precision"] = out["final sure"] | (changed & unsure)
    if "test_confusion" in e:
        from noiseal_ray.finalize import precise_moves

        ok = precise_moves(confusion=e["test_confusion"], min_precision=0.5, scope="move")
        out["test precision (move)"] = changed & ~ok[e["given"], new]
        out["test precision (transition)"] = changed & ~_transition_ok(e)[e["given"], new]
    return out


def _transition_ok(e: dict[str, np.ndarray]) -> np.ndarray:
    """(C, C) bool, ``finalize.transition_moves`` from the test confusion and the final model's
    predictions on the corpus against the given labels (the rows with a trusted label left out)."""
    from noiseal_ray.finalize import given_pred_counts, transition_moves

    k, keep = e["classes"], ~e["trusted"]
    counts = given_pred_counts({"label": e["given"][keep], "pred": e["preds"][-1][keep]}, num_classes=k)
    return transition_moves(confusion=e["test_confusion"], given_pred=counts["given_pred"].reshape(k, k),
                            min_precision=0.5)


def _own_vetoes(e: dict[str, np.ndarray], *, changed: np.ndarray, new: np.ndarray) -> dict[str, np.ndarray]:
    return {"none": np.zeros_like(changed),
            "stable": changed & ~(e["preds"] == new).all(0),
            "warm-up sure": changed & ~((e["preds"][0] == new) & (e["warm_prob"] >= 0.5)),
            "final sure": changed & ~((e["preds"][-1] == new) & (e["pred_prob"] >= 0.9)),
            "weak doubts": changed & (e["p_weak"] >= 1.0 / e["classes"]),
            "H keeps given": changed & (e["part"] == "H")}


def score(e: dict[str, np.ndarray], undo: np.ndarray) -> dict[str, float]:
    """Final labels right, fixed and broken (percent) over the rows with a known true label."""
    known = e["clean"] >= 0
    final = np.where(undo, e["given"], e["final"])[known]
    clean, given = e["clean"][known], e["given"][known]
    right_g, right_f = given == clean, final == clean
    return {"right": 100 * right_f.mean(), "given": 100 * right_g.mean(),
            "fixed": 100 * (~right_g & right_f).sum() / max(1, (~right_g).sum()),
            "broken": 100 * (right_g & ~right_f).sum() / max(1, right_g.sum())}


def render(runs: list[Path], *, command: str, test: bool = False) -> str:
    """The Markdown table: one row per run, per gate final right (fixed / broken)."""
    from noiseal_ray.metrics import class_precision

    lines = ["# Final-label gates, offline (issue 15, item 6)", "", f"`{command}`", "",
             "Per run: the share of final labels right after each gate undoes some of the run's changes, "
             "then (fixed / broken): wrong given labels made right, right ones made wrong, in percent. "
             "A run named `SETTING-sSEED/none` is the `none` arm of `benchmarks.review_loop` (NoiseAL-kNN at the "
             "defaults): `python -m benchmarks.review_loop --out review-out --settings SETTING --seeds SEED --arms none`, "
             "run from the folder the command above ran in. Gates:", ""]
    gates = {**GATES, **(TEST_GATES if test else {})}
    lines += [f"- `{k}`: {v}" for k, v in gates.items()]
    lines += ["", "| run | given right | " + " | ".join(gates) + " |", "|---|---:|" + "---:|" * len(gates)]
    for run in runs:
        e = evidence(run)
        if test:
            # One read (or one scoring pass, for a run that recorded no matrix) serves both scopes.
            e["test_confusion"] = test_confusion(run)
            e["test_precision"] = class_precision(e["test_confusion"])
        cells = [score(e, undo) for undo in vetoes(e).values()]
        lines.append(f"| {run.parent.name}/{run.name} | {cells[0]['given']:.1f} | " + " | ".join(
            f"{c['right']:.1f} ({c['fixed']:.0f} / {c['broken']:.1f})" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="finished run folders with clean labels and round tables")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    ap.add_argument("--test", action="store_true",
                    help="also the gates calibrated on each run's clean test data (scores it with the run's model)")
    a = ap.parse_args(argv)
    command = "python -m benchmarks.final_gates " + ("--test " if a.test else "") + " ".join(str(r) for r in a.runs)
    if a.test:  # only runs without a recorded test confusion need it (_score_test)
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        text = render(a.runs, command=command, test=a.test)
    finally:
        if a.test:
            ray.shutdown()
    print(text)
    if a.out is not None:
        from noiseal_ray.rundir import atomic_write_text

        atomic_write_text(a.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
