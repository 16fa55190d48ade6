"""What a NoiseAL run did to the labels, from its ``labels.parquet``: label changes as a detector,
where the wrong labels end (R, P, H) and whether a run can tell the right labels it changes from
the wrong ones it fixes. Each record of a NoiseAL cell holds these (``FROM_LABELS``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _label_ids(labels: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Label-name columns of a run's ``labels.parquet`` as int arrays over one shared name->id map
    (ids are only compared with each other); -1 where the value is missing (no clean label, no
    annotator answer)."""
    import pyarrow.parquet as pq

    t = pq.read_table(labels, columns=columns).to_pydict()
    names = {n: i for i, n in enumerate(sorted({x for c in columns for x in t[c] if x is not None}))}
    return {c: np.array([-1 if x is None else names[x] for x in t[c]], dtype=np.int64) for c in columns}


def correction_detection(labels: Path) -> dict:
    """NoiseAL's label changes as a detector of wrong labels (flagged = final label != given label),
    from a run's ``labels.parquet`` (given_label, final_label, clean_label; rows without a clean
    label are ignored). Precision/recall/F1, like ``detection`` for P+H: P+H counts the hard
    samples, which NoiseAL does not call wrong; this counts what the user gets changed."""
    from noiseal_ray.metrics import detection

    ids = _label_ids(labels, ["given_label", "final_label", "clean_label"])
    d = detection(flagged=ids["final_label"] != ids["given_label"], given=ids["given_label"], clean=ids["clean_label"])
    return {k: d[k] for k in ("precision", "recall", "f1")}


def wrong_label_anatomy(*, partition: np.ndarray, given: np.ndarray, clean: np.ndarray, annotator: np.ndarray,
                        pred: np.ndarray) -> dict:
    """Where the wrong given labels end and what the annotator does with P: the "why" behind a
    NoiseAL run's accuracy. All arrays (n,); labels int (-1 = none: no clean label, or no
    annotator answer); ``partition`` holds "R"/"P"/"H". Rows without a clean label are ignored.

    Returns fractions (None when the denominator is empty): ``wrong_in`` {R, P, H} = share of the
    wrong labels in each subset (sums to 1); ``r_wrong`` = share of R that is wrong (the
    demonstration pool's contamination); ``p_right`` = share of P whose given label is right;
    ``annotator_fixes`` = share of P's wrong labels whose annotator label is the true one;
    ``annotator_keeps`` = share of P's right labels the annotator confirms; ``annotator_model_agree``
    = share of annotated P rows where the annotator agrees with the strong model's prediction.
    """
    known = clean >= 0
    part, given, clean, ann, pred = (np.asarray(a)[known] for a in (partition, given, clean, annotator, pred))
    wrong = given != clean

    def frac(num: np.ndarray, den: np.ndarray) -> float | None:
        return float((num & den).sum() / den.sum()) if den.sum() else None

    in_p = part == "P"
    answered = in_p & (ann >= 0)
    return {"wrong": int(wrong.sum()),
            "wrong_in": {s: frac(part == s, wrong) for s in ("R", "P", "H")},
            "r_wrong": frac(wrong, part == "R"), "p_right": frac(~wrong, in_p),
            "annotator_fixes": frac(ann == clean, answered & wrong),
            "annotator_keeps": frac(ann == given, answered & ~wrong),
            "annotator_model_agree": frac(ann == pred, answered)}


def labels_anatomy(labels: Path) -> dict:
    """``wrong_label_anatomy`` of a run's ``labels.parquet`` (its final partition and labels)."""
    import pyarrow.parquet as pq

    ids = _label_ids(labels, ["given_label", "clean_label", "llm_label", "pred_label"])
    partition = np.array(pq.read_table(labels, columns=["partition"]).column("partition").to_pylist(), dtype=object)
    return wrong_label_anatomy(partition=partition, given=ids["given_label"], clean=ids["clean_label"],
                               annotator=ids["llm_label"], pred=ids["pred_label"])


def broken_vs_fixed(*, partition: np.ndarray, given: np.ndarray, clean: np.ndarray, annotator: np.ndarray,
                    p_given: np.ndarray, p_given_weak: np.ndarray, vote_share: np.ndarray) -> dict:
    """Whether anything a run knows tells the right labels its annotator breaks from the wrong ones it
    fixes. Over P rows with a clean label and an annotator answer: ``broken`` = right given label,
    answer differs; ``fixed`` = wrong given label, answer is the true one. For each group: ``n`` and
    the medians of ``p_given`` and ``p_given_weak`` (the strong and the weak model's probability of
    the given label) and ``vote_share`` (the annotator's confidence: exp of its log-probability). Arrays (n,); labels int,
    -1 = none; ``partition`` holds "R"/"P"/"H". Medians are None for an empty group."""
    part, given, clean, ann, pg, pw, vs = (np.asarray(a) for a in (partition, given, clean, annotator, p_given,
                                                                     p_given_weak, vote_share))
    asked = (part == "P") & (clean >= 0) & (ann >= 0)
    groups = {"broken": asked & (given == clean) & (ann != given), "fixed": asked & (given != clean) & (ann == clean)}

    def median(x: np.ndarray) -> float | None:
        x = x[np.isfinite(x)]
        return float(np.median(x)) if len(x) else None

    return {g: {"n": int(m.sum()), "p_given": median(pg[m].astype(float)), "p_given_weak": median(pw[m].astype(float)),
                "vote_share": median(vs[m].astype(float))} for g, m in groups.items()}


def labels_separability(labels: Path) -> dict:
    """``broken_vs_fixed`` of a run's ``labels.parquet``."""
    import pyarrow.parquet as pq

    ids = _label_ids(labels, ["given_label", "clean_label", "llm_label"])
    t = pq.read_table(labels, columns=["partition", "p_strong", "p_weak", "llm_logprob"]).to_pydict()

    def floats(col: str) -> np.ndarray:
        return np.array([np.nan if x is None else x for x in t[col]], dtype=float)

    return broken_vs_fixed(partition=np.array(t["partition"], dtype=object), given=ids["given_label"],
                           clean=ids["clean_label"], annotator=ids["llm_label"], p_given=floats("p_strong"),
                           p_given_weak=floats("p_weak"), vote_share=np.exp(floats("llm_logprob")))


# What a NoiseAL record holds that is computed from its run's labels.parquet (record key -> function);
# backfill_from_labels adds the same to records made before a key existed.
FROM_LABELS = {"correction": correction_detection, "anatomy": labels_anatomy, "separability": labels_separability}
