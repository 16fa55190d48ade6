"""The report's summary: the headline cards and the key/value tables about the run and its quality.

Values are plain text; the template escapes them. A value that needs markup (a path in
``<code>``, a grey aside) is a list of ``Piece``s and the template picks the tag from ``style``.
"""

from __future__ import annotations

from dataclasses import dataclass

from noiseal_ray.config import effective_test_precision
from noiseal_ray.finalize import gate_rules
from noiseal_ray.report.data import RunData
from noiseal_ray.report.fmt import count, duration, pct, text
from noiseal_ray.split.table import CLASS_MEAN, SPECS

PART_FULL = (("R", "clean (R)"), ("P", "purified (P)"), ("H", "hard (H)"))


@dataclass(frozen=True)
class Piece:
    """A run of text in a cell; ``style`` "" (plain), "code" or "note" (a grey aside)."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Card:
    """A headline number: ``value`` over its ``key``; ``part`` (R/P/H or "") colours it."""

    key: str
    value: str
    part: str = ""


KeyValue = tuple[str, "str | list[Piece]"]


def summary_cards(*, data: RunData) -> list[Card]:
    """Samples, classes, final R/P/H sizes, changed labels, and test/detection/recovery when known."""
    n, final = data.n, data.final
    sizes = final.get("sizes") or {}
    cards = [Card("samples", count(n)), Card("classes", count(data.c))]
    for p, full in PART_FULL:
        v = int(sizes.get(p, 0))
        cards.append(Card(f"{full} · {pct(v / n if n else None)}", count(v), p))
    cards.append(Card("labels changed", count(data.labels.n_changed)))
    if final.get("test_accuracy_last") is not None:
        cards.append(Card(f"test accuracy (best {pct(final.get('test_accuracy_best'))})",
                          pct(final["test_accuracy_last"])))
    if det := final.get("detection"):
        cards.append(Card("noise detection F1", pct(det.get("f1"))))
    if rec := final.get("recovery"):
        cards.append(Card("label accuracy given → final",
                          f"{pct(rec.get('given_accuracy'))} → {pct(rec.get('final_accuracy'))}"))
    return cards


def summary_rows(*, data: RunData) -> list[KeyValue]:
    """The run's inputs, models, schedule, annotator and timings, one (key, value) per row."""
    config, metrics = data.config, data.metrics
    stage = metrics.get("stage_seconds") or {}
    total_s = sum(float(v) for v in stage.values()) if stage else None
    ann_final = data.final.get("annotator") or {}
    rows: list[KeyValue] = [
        ("data", [Piece(text(metrics.get("data") or config.get("data")), "code")]),
        ("test data", [Piece(text(config.get("test_data")), "code")] if config.get("test_data")
         else "none (no test accuracy)"),
        ("rows / classes", f"{count(data.n)} / {count(data.c)}"),
        ("clean labels", "known: detection and recovery are measured" if data.has_clean else "not given"),
        ("strong model", [Piece(text(config.get("strong_model") or "packaged MiniLM"), "code")]),
        ("weak model", f"BiLSTM (embedding {text(config.get('weak_embed_dim'))}, "
                       f"hidden {text(config.get('weak_hidden'))})"),
        ("schedule", f"{text(config.get('warmup_epochs'))} warm-up epoch(s), {data.n_rounds} round(s) × "
                     f"{text(config.get('epochs_per_round'))} epoch(s), {text(config.get('workers'))} worker(s), "
                     f"batch {text(config.get('batch_size'))}, max {text(config.get('max_length'))} tokens"),
        ("thresholds", _thresholds(config=config)),
        ("annotator", _annotator(config=config, metrics=metrics)),
        ("annotated (final)", f"{count(ann_final.get('annotated_total', 0))} samples, "
                              f"{count(ann_final.get('failed', 0))} failed in the last round"),
        ("LLM queries", _llm_queries(data=data)),
        ("hard samples", "strong model's prediction" if config.get("hard_policy", "strong") == "strong"
         else "keep the given label"),
        ("label changes", _changes(config=config, final=data.final)),
        ("wall time (all stages)", duration(total_s) + (" — " + ", ".join(
            f"{k} {duration(v)}" for k, v in stage.items()) if stage else "")),
        ("seed", text(config.get("seed"))),
    ]
    if metrics.get("wall_seconds_this_invocation") is not None:
        rows.append(("wall time (last invocation)", duration(metrics["wall_seconds_this_invocation"])))
    return rows


def _changes(*, config: dict, final: dict) -> str:
    """Which suggested changes the final labels keep (the change gate), and how many it held back."""
    rules = gate_rules(min_prob=float(config.get("change_min_prob") or 0.0),
                       min_test_precision=effective_test_precision(value=config.get("change_min_test_precision", 0.0),
                                                                    test_data=config.get("test_data")),
                       scope=config.get("change_precision_scope", "class"))
    if not rules:
        return "every change the method suggests"
    held = (final.get("held") or {}).get("rows", 0)
    return (f"only where {' and '.join(rules)}; {count(held)} suggested change(s) held back "
            "(given label kept; export --subset held)")


def _thresholds(*, config: dict) -> str:
    rule = config.get("split", CLASS_MEAN)
    if rule != CLASS_MEAN:
        spec = SPECS.get(rule)
        fallback = f"; class-mean EMA fallback, beta {text(config.get('ema_beta'))}" if spec and spec.fallback else ""
        return f"split rule {rule}, refit every round{fallback}"
    return (f"{'per-class' if config.get('per_class_threshold', True) else 'global'} EMA, "
            f"beta {text(config.get('ema_beta'))}")


def _annotator_name(*, config: dict, metrics: dict) -> str:
    return config.get("annotator") or metrics.get("annotator") or "none"


def _annotator(*, config: dict, metrics: dict) -> list[Piece]:
    name = _annotator_name(config=config, metrics=metrics)
    if name == "llm":
        model = config.get("llm_model") or config.get("llm_endpoint") or "packaged SmolLM2"
        return [Piece(f"{name} ("), Piece(text(model), "code"), Piece(")")]
    if name == "none":
        return [Piece(f"{name} (P takes the strong model's prediction)")]
    return [Piece(text(name))]


def _llm_queries(*, data: RunData) -> str:
    name = _annotator_name(config=data.config, metrics=data.metrics)
    if name == "llm":
        return count(data.metrics.get("annotator_queries", 0) or 0)
    answered = sum(int((e.get("annotator") or {}).get("queries", 0)) for e in data.rounds)
    return f"none (the {name} annotator answered {count(answered)} queries without an LLM)"


def quality_rows(*, data: RunData) -> list[KeyValue]:
    """Detection, correction and recovery against the clean labels; [] without clean labels."""
    det, corr = data.final.get("detection"), data.final.get("correction")
    rec = data.final.get("recovery") or {}
    if not (data.has_clean and det):
        return []
    rows: list[KeyValue] = [("detection precision / recall / F1", [
        Piece(f"{pct(det.get('precision'))} / {pct(det.get('recall'))} / {pct(det.get('f1'))} "),
        Piece("(flagged = P ∪ H vs truly noisy)", "note")])]
    if corr:
        rows.append(("changed labels as a detector: precision / recall / F1", [
            Piece(f"{pct(corr.get('precision'))} / {pct(corr.get('recall'))} / {pct(corr.get('f1'))} "),
            Piece("(changed = final label ≠ given label vs truly noisy)", "note")]))
    rows += [
        ("P precision", pct(det.get("p_precision"))),
        ("label accuracy given → final", f"{pct(rec.get('given_accuracy'))} → {pct(rec.get('final_accuracy'))}"),
        ("noisy labels fixed / clean labels broken", f"{pct(rec.get('fixed'))} / {pct(rec.get('broken'))}"),
        ("annotator accuracy", pct(rec.get("annotator_accuracy"))),
    ]
    return rows


def accuracy_rows(*, data: RunData) -> list[KeyValue]:
    """Last and best test accuracy; [] without test data."""
    last = data.final.get("test_accuracy_last")
    if last is None:
        return []
    return [("test accuracy (last / best)", f"{pct(last)} / {pct(data.final.get('test_accuracy_best'))}")]
