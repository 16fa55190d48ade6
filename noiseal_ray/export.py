"""Export a run's labels for human review, and read the reviewed labels back.

    noiseal-ray export runs/demo --subset H --format csv --out review.csv
    python -c "from noiseal_ray.export import read_review; print(read_review('review.csv'))"

Subsets: ``H`` (hard: the models disagree), ``P`` (purified: relabeled), ``changed`` (final label
differs from the given one), ``reviewed`` (rows a reviewer labelled, ``run --reviewed``), ``all``.
A reviewed row is exported with its answer in ``review_label``, so a file of it feeds the next run. Or a budget (``--budget N``): the N rows most worth a review
(``noiseal_ray.review.budget``), most valuable first, with ``review_priority``, ``review_why`` and
``review_rule`` (the rule that picked the row; only a ``random`` pick counts as a fair test of the
run's move when the file comes back, ``noiseal_ray.review.moves``).

Formats (one record per row of ``labels.parquet``, streamed; the file is written atomically):

* ``jsonl`` / ``csv``: ``id, text, given_label, suggested_label, review_label, partition, reason,
  suggestion_score, suggestion_agent, p_strong, p_weak, tau_strong, tau_weak, pred_label, pred_prob,
  llm_label, llm_logprob, llm_error, changed`` (+ ``clean_label`` when known).
  ``suggested_label`` is the run's final label; ``review_label`` is empty, for the reviewer to fill
  in. In CSV, a text (or reason) starting with ``= + - @``, tab or CR gets a leading ``'`` so that
  spreadsheets do not evaluate it as a formula; ids and labels are never altered.
* ``argilla``: JSONL in the shape of Argilla 2.x ``rg.Record.to_dict()`` (loadable with
  ``rg.Record.from_dict(d)`` and ``dataset.records.log(records)``; argilla is not a dependency)::

      {"id": ID,
       "fields": {"text": TEXT, "reason": REASON},
       "suggestions": {"label": {"value": FINAL_LABEL, "score": SCORE, "agent": AGENT}},
       "responses": {},
       "metadata": {"given_label", "partition", "p_strong", "p_weak", "pred_label", "pred_prob",
                    "llm_label", "llm_logprob", "llm_error", "changed", "clean_label"}}   # nulls omitted

  The matching dataset settings: ``rg.Settings(fields=[rg.TextField("text"),
  rg.TextField("reason")], questions=[rg.LabelQuestion("label", labels=LABEL_NAMES)],
  metadata=[rg.TermsMetadataProperty("partition"), rg.TermsMetadataProperty("given_label"),
  rg.FloatMetadataProperty("p_strong"), ...])``.

Suggestion score: the annotator's confidence (exp of its log-probability) when the suggestion is
its answer, else the strong model's probability of the suggested label when known (its
prediction, or p_strong for a kept given label), else null. Agent: ``noiseal-ray/<annotator>``,
``noiseal-ray/strong-model`` or ``noiseal-ray/given-label``.

``read_review(path)`` takes any of the three back to ``DataFrame[id, label, suggested]``: the reviewer's
label where given (``review_label``; for Argilla, the most frequent response to ``label``), else
the suggestion (``reviewed_only=True``: only the answered records, which is what
``noiseal-ray run --reviewed`` trusts). A plain id,label table (csv, jsonl, parquet) reads too.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from noiseal_ray.data.reviews import QUESTION, read_review  # noqa: F401  (read_review: public here too)
from noiseal_ray.errors import ConfigError

SUBSETS = ("H", "P", "changed", "held", "reviewed", "all")
FORMATS = ("jsonl", "csv", "argilla")
COLUMNS = ["id", "text", "given_label", "suggested_label", "review_label", "partition", "reason",
           "suggestion_score", "suggestion_agent", "p_strong", "p_weak", "tau_strong", "tau_weak", "pred_label",
           "pred_prob", "llm_label", "llm_logprob", "llm_error", "changed"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _clean(v):
    """JSON-safe scalar: NaN/None -> None, numpy -> python."""
    if v is None:
        return None
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _fmt(x) -> str:
    return "?" if x is None else f"{x:.3f}"


def reason(r: dict, *, annotator: str, hard_policy: str) -> str:
    """One human-readable sentence on why the row got its suggested label."""
    given, final, part = r["given_label"], r["final_label"], r["partition"]
    ps, pw, ts, tw = r.get("p_strong"), r.get("p_weak"), r.get("tau_strong"), r.get("tau_weak")
    scores = f"strong p={_fmt(ps)} (threshold {_fmt(ts)}), weak p={_fmt(pw)} (threshold {_fmt(tw)})"
    if r.get("reviewed"):
        return (f"Reviewed: a reviewer set '{final}'" + (f" (given '{given}')" if final != given else "")
                + "; trusted and kept whatever the models say.")
    if r.get("held"):
        new = r["llm_label"] if part == "P" and r.get("llm_label") is not None else r.get("pred_label")
        return (f"Held ({part}): the run suggested '{new}' for the given label '{given}', but its change gate "
                f"(change_min_prob, change_min_test_precision) did not pass it: the final strong model predicts "
                f"'{r.get('pred_label')}' with p={_fmt(r.get('pred_prob'))}; the given label stays; please check.")
    if part == "R":
        return f"Clean (R): both models accept the given label '{given}' [{scores}]; kept."
    if part == "P":
        head = f"Purified (P): both models reject the given label '{given}' [{scores}]; "
        if r.get("llm_label") is not None and r["llm_label"] == final:
            conf = r.get("llm_logprob")
            c = f" with confidence {math.exp(conf):.2f}" if conf is not None else ""
            return head + f"the {annotator} annotator relabeled it '{final}'{c}."
        why = f"the annotator failed ({r['llm_error']})" if r.get("llm_error") else (
            "no annotator was used" if annotator == "none" else "the annotator gave no answer")
        return head + f"{why}, so the strong model's prediction '{final}' (p={_fmt(r.get('pred_prob'))}) is suggested."
    if part == "H":
        s_ok = ps is not None and ts is not None and ps >= ts
        w_ok = pw is not None and tw is not None and pw >= tw
        who = ("the strong model accepts it and the weak model rejects it" if s_ok and not w_ok else
               "the weak model accepts it and the strong model rejects it" if w_ok and not s_ok else
               "the models disagree")
        head = f"Hard (H): {who} for the given label '{given}' [{scores}]; "
        if hard_policy == "given" or final == given and r.get("pred_label") != final:
            return head + "kept the given label (hard-sample policy 'given'); please check."
        return head + f"suggested the strong model's prediction '{final}' (p={_fmt(r.get('pred_prob'))}); please check."
    return f"Partition {part}: suggested '{final}'."


def _suggestion(r: dict, *, annotator: str) -> tuple[float | None, str]:
    final = r["final_label"]
    if r.get("reviewed"):
        return None, "reviewer"
    if r["partition"] == "P" and r.get("llm_label") is not None and r["llm_label"] == final:
        lp = r.get("llm_logprob")
        return (None if lp is None else float(math.exp(lp))), f"noiseal-ray/{annotator}"
    if r.get("pred_label") == final and r["partition"] != "R":
        return r.get("pred_prob"), "noiseal-ray/strong-model"
    if final == r["given_label"]:
        return r.get("p_strong"), "noiseal-ray/given-label"
    return None, "noiseal-ray/strong-model"


@contextmanager
def _atomic_writer(path: Path) -> Iterator:
    """A text file written to a temporary name in the same folder and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _csv_safe(s):
    return "'" + s if isinstance(s, str) and s.startswith(FORMULA_START) else s


def iter_records(*, run_dir: str | Path, subset: str = "H", ids: list[str] | None = None) -> Iterator[dict]:
    """Review records (dicts with COLUMNS, + clean_label when known) of ``subset``, streamed;
    ``ids``: only these rows (filtered before any record is built)."""
    from noiseal_ray.report import iter_batches, open_run, read_config, read_json

    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    run = open_run(run_dir)
    config = read_config(run)
    metrics = read_json(run / "metrics.json")
    manifest = read_json(run / "manifest.json")
    annotator = str(config.get("annotator") or metrics.get("annotator") or "none")
    hard_policy = str(config.get("hard_policy") or "strong")
    names = [str(n) for n in (metrics.get("label_names") or manifest.get("label_names") or [])]
    index = {n: i for i, n in enumerate(names)}
    thr = (metrics.get("final") or {}).get("thresholds") or manifest.get("thresholds") or {}
    ts = np.asarray(thr.get("strong") or [np.nan], dtype=np.float64)
    tw = np.asarray(thr.get("weak") or [np.nan], dtype=np.float64)

    def tau(arr: np.ndarray, label: str):
        if len(arr) == 1:
            return _clean(arr[0])
        i = index.get(label)
        return None if i is None else _clean(arr[i])

    cols = ["id", "text", "given_label", "final_label", "partition", "llm_label", "llm_logprob", "llm_error",
            "p_strong", "p_weak", "pred_label", "pred_prob", "changed", "held", "clean_label", "reviewed"]
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = None if ids is None else pa.array(ids, type=pa.string())
    for b in iter_batches(run / "labels.parquet", cols):
        if wanted is not None:
            b = b.filter(pc.is_in(b.column("id").cast("string"), value_set=wanted))
        if subset in ("H", "P"):
            b = b.filter(pc.equal(b.column("partition"), subset))
        elif subset == "changed":
            b = b.filter(pc.fill_null(b.column("changed"), False))
        elif subset in ("reviewed", "held"):
            if subset not in b.schema.names:  # a run from before the column existed has none
                continue
            b = b.filter(pc.fill_null(b.column(subset), False))
        has_clean = "clean_label" in b.schema.names
        for row in b.to_pylist():
            r = {k: _clean(v) for k, v in row.items()}
            r["id"] = str(r["id"])
            r["tau_strong"] = tau(ts, r["given_label"])
            r["tau_weak"] = tau(tw, r["given_label"])
            score, agent = _suggestion(r, annotator=annotator)
            rec = {"id": r["id"], "text": r["text"], "given_label": r["given_label"],
                   # A reviewed row carries its answer: exported again, it stays reviewed.
                   "suggested_label": r["final_label"], "review_label": r["final_label"] if r.get("reviewed") else "",
                   "partition": r["partition"],
                   "reason": reason(r, annotator=annotator, hard_policy=hard_policy),
                   "suggestion_score": _clean(score), "suggestion_agent": agent,
                   "p_strong": r["p_strong"], "p_weak": r["p_weak"], "tau_strong": r["tau_strong"],
                   "tau_weak": r["tau_weak"], "pred_label": r["pred_label"], "pred_prob": r["pred_prob"],
                   "llm_label": r["llm_label"], "llm_logprob": r["llm_logprob"], "llm_error": r["llm_error"],
                   "changed": bool(r["changed"])}
            if has_clean:
                rec["clean_label"] = r.get("clean_label")
            yield rec


def argilla_record(rec: dict) -> dict:
    """One review record in the shape of Argilla's ``rg.Record.to_dict()``."""
    meta_keys = ("given_label", "partition", "p_strong", "p_weak", "pred_label", "pred_prob", "llm_label",
                 "llm_logprob", "llm_error", "changed", "clean_label", "review_priority", "review_why",
                 "review_rule")
    return {"id": rec["id"],
            "fields": {"text": rec["text"], "reason": rec["reason"]},
            "suggestions": {QUESTION: {"value": rec["suggested_label"], "score": rec["suggestion_score"],
                                       "agent": rec["suggestion_agent"]}},
            "responses": {},
            "metadata": {k: rec[k] for k in meta_keys if rec.get(k) is not None}}


def export_review(*, run_dir: str | Path, out: str | Path, subset: str = "H", fmt: str = "jsonl",
                  records: Iterable[dict] | None = None) -> int:
    """Write the ``subset`` of the run's labels to ``out`` in ``fmt``; return the number of records.
    ``records``: write these instead (e.g. ``noiseal_ray.review.budget.budget_records``: the rows
    most worth a review, with ``review_priority``, ``review_why`` and ``review_rule``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = iter_records(run_dir=run_dir, subset=subset) if records is None else iter(records)
    first = next(records, None)  # validates the run before the output file is created
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name")
    n = 0
    try:
        with _atomic_writer(out) as f:
            if fmt == "csv":
                import csv

                cols = COLUMNS + [k for k in ("review_priority", "review_why", "review_rule", "clean_label")
                                  if first is not None and k in first]
                w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
                w.writeheader()
            for rec in _chain([] if first is None else [first], records):
                if fmt == "csv":
                    row = {k: ("" if rec.get(k) is None else rec.get(k)) for k in cols}
                    for k in ("text", "reason", "llm_error") + (("review_why",) if "review_why" in row else ()):
                        row[k] = _csv_safe(row[k])
                    w.writerow(row)
                else:
                    obj = argilla_record(rec) if fmt == "argilla" else rec
                    f.write(json.dumps(obj, ensure_ascii=False) + "\n")
                n += 1
    except OSError as exc:
        from noiseal_ray.errors import OutputError

        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return n


def _chain(head: list, tail: Iterator) -> Iterator:
    yield from head
    yield from tail
