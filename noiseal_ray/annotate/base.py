"""The annotator interface shared by the pipeline and every annotator (none, knn, llm).

The pipeline retrieves demonstrations for each query (see ``demos.py``) and hands an annotator
plain Python objects; annotators never see Ray. Label ids are indices into ``label_names``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Demo:
    """One demonstration from R: its text, its (trusted, given) label id and cosine similarity."""

    text: str
    label: int
    similarity: float


@dataclass(frozen=True)
class Query:
    """One sample of P to relabel.

    ``demos`` are ordered most similar first. ``candidates`` (label ids, or None for all labels)
    restricts the answer set, e.g. to the strong model's top-k labels.
    """

    id: str
    text: str
    given: int
    demos: tuple[Demo, ...] = ()
    candidates: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Answer:
    """An annotator's answer: a label id with its log-probability, or an error reason.

    Exactly one of ``label`` and ``error`` is set. ``cached`` is True when no new model query
    was made for it (the answer came from the cache).
    """

    label: int | None
    logprob: float | None = None
    error: str | None = None
    cached: bool = False


class Annotator(Protocol):
    """Relabels a batch of queries. Must return one answer per query, in order, and never raise
    for a single bad answer (record it as ``Answer(label=None, error=...)``)."""

    name: str

    def annotate(self, *, queries: Sequence[Query], label_names: Sequence[str]) -> list[Answer]:
        ...


@dataclass
class AnnotatorStats:
    """Counters reported per round in metrics.json."""

    requested: int = 0
    queries: int = 0  # new model queries (cache misses)
    cached: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, answers: Sequence[Answer]) -> None:
        for a in answers:
            self.requested += 1
            if a.cached:
                self.cached += 1
            else:
                self.queries += 1
            if a.label is None:
                self.failed += 1
                key = (a.error or "unknown").split(":", 1)[0]
                self.errors[key] = self.errors.get(key, 0) + 1
