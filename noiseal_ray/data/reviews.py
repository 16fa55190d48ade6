"""Reading reviewed labels back: any file ``noiseal-ray export`` writes (jsonl, csv, Argilla
records) or a plain id,label table (csv, jsonl, parquet), as ``DataFrame[id, label, suggested]``.

``noiseal_ray.export.read_review`` is this module's ``read_review``; ``noiseal_ray.review.trusted``
checks what it reads against a corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from noiseal_ray.errors import InputError

QUESTION = "label"  # the Argilla question a reviewer answers


def _tests_move(rule) -> bool:
    """Whether a reviewed row picked by a budget ``rule`` (``review_rule``; None or "": no budget,
    a whole subset) is a fair test of its run's move. A row picked for its doubt is among its
    move's likeliest mistakes: counted, it would make a good move look bad."""
    return rule in (None, "", "random")


def _detect(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        return "csv"
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    return "argilla" if isinstance(d, dict) and "fields" in d and "suggestions" in d else "jsonl"
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path}: neither CSV (by its .csv name) nor JSON lines nor parquet (.parquet); "
                         "give a file `noiseal-ray export` wrote or an id,label table") from None
    return "jsonl"


def _argilla_answer(d: dict):
    """The reviewer's label (the most frequent response to ``label``) of an Argilla record dict, or None.

    Accepts ``to_dict()`` shape (dict by question), the list shape of ``rg.Record(...)`` arguments,
    and the flat shape of ``records.to_list(flatten=True)`` (``label.responses``).
    """
    from collections import Counter

    responses = d.get("responses") or {}
    # A response with a status counts only once submitted (Argilla keeps drafts and discarded ones too).
    def submitted(a) -> bool:
        return not isinstance(a, dict) or a.get("status") in (None, "submitted")

    if isinstance(responses, dict):
        answers = [a.get("value") if isinstance(a, dict) else a for a in (responses.get(QUESTION) or [])
                   if submitted(a)]
    else:
        answers = [a.get("value") for a in responses if isinstance(a, dict) and a.get("question_name") == QUESTION
                   and submitted(a)]
    if not answers and isinstance(d.get(f"{QUESTION}.responses"), list):
        answers = list(d[f"{QUESTION}.responses"])
    answers = [a for a in answers if a not in (None, "")]
    return Counter(answers).most_common(1)[0][0] if answers else None


def _argilla_label(d: dict):
    """Reviewer's label (``_argilla_answer``) else the suggestion, from an Argilla record dict."""
    answer = _argilla_answer(d)
    return answer if answer is not None else _argilla_suggestion(d)


def _argilla_suggestion(d: dict):
    """The suggested label of an Argilla record dict (suggestions by question, as a list, or flat
    ``label.suggestion``), or None."""
    sugg = d.get("suggestions") or {}
    if isinstance(sugg, dict) and isinstance(sugg.get(QUESTION), dict):
        return sugg[QUESTION].get("value")
    if isinstance(sugg, list):
        for s in sugg:
            if isinstance(s, dict) and s.get("question_name") == QUESTION:
                return s.get("value")
    return d.get(f"{QUESTION}.suggestion")


def read_review(path: str | Path, *, with_lines: bool = False, reviewed_only: bool = False):
    """Reviewed labels as ``pandas.DataFrame[id, label, suggested]`` (strings) from an exported file, or from
    a plain table of ``id`` and ``label`` (csv, jsonl or parquet).

    The format is detected from the extension and the first record. The label is
    ``review_label`` when the reviewer filled it in, else ``suggested_label`` (else ``label``).
    ``suggested`` is the exporting run's suggested label ("" for a plain table): what a reviewed
    row tells of that run's decision (``noiseal_ray.review.moves``); "" too where the file's
    ``review_rule`` says a score picked the row (a biased test of the move; only ``random``
    picks count).
    ``with_lines``: add ``line``, each record's 1-based line in the file (the row for parquet), for
    error messages. ``reviewed_only``: from an exported file, only the records a reviewer answered
    (a ``review_label``, an Argilla response); a plain id,label table is all answers.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(f"review file {p} does not exist")
    if p.suffix.lower() == ".parquet":
        out = _read_plain_parquet(p, with_lines=with_lines)
        return out[out["label"].str.strip() != ""].reset_index(drop=True) if reviewed_only else out
    fmt = _detect(p)
    if fmt == "csv":
        return _read_csv(p, with_lines=with_lines, reviewed_only=reviewed_only)
    ids, labels, suggested, lines = [], [], [], []
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{p}: line {i} is not JSON ({exc})") from None
            if not isinstance(d, dict):
                raise InputError(f"{p}: line {i} is not a JSON object")
            if fmt == "argilla":
                answer = _argilla_answer(d)
                label = answer if answer is not None else _argilla_label(d)
                sugg = _argilla_suggestion(d) if _tests_move((d.get("metadata") or {}).get("review_rule")) else None
            else:
                sugg = d.get("suggested_label") if _tests_move(d.get("review_rule")) else None
                answer = d.get("review_label") if d.get("review_label") not in (None, "") else None
                exported = "suggested_label" in d
                if not exported and d.get("label") not in (None, ""):
                    answer = d["label"]  # a plain id,label record: the label is the answer
                label = answer if answer is not None else d.get("suggested_label")
            if reviewed_only and answer is None:
                continue
            if d.get("id") is None or label is None:
                raise InputError(f"{p}: line {i} has no id or no label")
            ids.append(str(d["id"]))
            labels.append(str(label))
            suggested.append("" if sugg is None else str(sugg))
            lines.append(i)
    out = pd.DataFrame({"id": pd.Series(ids, dtype=object), "label": pd.Series(labels, dtype=object),
                        "suggested": pd.Series(suggested, dtype=object)})
    if with_lines:
        out["line"] = lines
    return out


def _read_csv(p: Path, *, with_lines: bool, reviewed_only: bool):
    """``read_review`` of a CSV file: an export (``suggested_label``, ``review_label``) or an id,label table."""
    import pandas as pd

    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    lab_col = "suggested_label" if "suggested_label" in df else "label"
    missing = {"id", lab_col} - set(df.columns)
    if missing:
        raise InputError(f"{p}: not an exported review file nor an id,label table (missing column(s) "
                         f"{', '.join(sorted(missing))})")
    review = df["review_label"] if "review_label" in df else pd.Series([""] * len(df), dtype=str)
    answered = review.str.strip() != ""
    lab = review.where(answered, df[lab_col])
    sugg = df[lab_col].astype(str) if lab_col == "suggested_label" else pd.Series([""] * len(df), dtype=str)
    if "review_rule" in df:
        sugg = sugg.where(df["review_rule"].map(_tests_move), "")
    out = pd.DataFrame({"id": df["id"].astype(str), "label": lab.astype(str), "suggested": sugg})
    if with_lines:
        out["line"] = range(2, len(df) + 2)  # line 1 is the header
    if reviewed_only:  # an export: the answered rows; a plain table: the rows with a label
        keep = answered if lab_col == "suggested_label" else out["label"].str.strip() != ""
        out = out[keep.to_numpy()].reset_index(drop=True)
    return out


def _read_plain_parquet(p: Path, *, with_lines: bool):
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises several types for a bad file
        raise InputError(f"{p}: cannot read parquet ({exc})") from None
    missing = {"id", "label"} - set(t.column_names)
    if missing:
        raise InputError(f"{p}: an id,label table needs column(s) {', '.join(sorted(missing))}")
    import pyarrow as pa

    def as_text(col):  # integer-valued floats (ints with nulls) read as "3", not "3.0"
        if pa.types.is_floating(col.type):
            vals = col.to_pylist()
            return [None if v is None or v != v else (str(int(v)) if float(v).is_integer() else str(v)) for v in vals]
        return [None if v is None else str(v) for v in col.to_pylist()]

    import pandas as pd

    out = pd.DataFrame({"id": as_text(t.column("id")), "label": as_text(t.column("label")),
                        "suggested": as_text(t.column("suggested_label")) if "suggested_label" in t.column_names
                        else ""})
    out["suggested"] = out["suggested"].fillna("")
    if out["id"].isna().any():
        raise InputError(f"{p}: row {int(out['id'].isna().to_numpy().argmax()) + 1} has no id")
    out["label"] = out["label"].fillna("")
    if with_lines:
        out["line"] = range(1, len(out) + 1)
    return out
