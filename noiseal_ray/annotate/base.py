"""The annotator interface shared by the pipeline and every annotator (none, knn, llm).

The pipeline retrieves demonstrations for each query (see ``demos.py``) and hands an annotator
plain Python objects; annotators never see Ray. Label ids are indices into ``label_names``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Sequence


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


def gate_answer(answer: Answer, *, min_logprob: float | None) -> tuple[int | None, str | None]:
    """The (label, error) a run takes from ``answer`` under the ``llm_min_logprob`` gate.

    Without a gate the answer passes as it is. With one, a label passes when its log-probability
    is at least ``min_logprob`` (0.0, a certain answer, always passes); a label that comes without
    a log-probability cannot show its confidence and is refused, so the given label stays.
    """
    if answer.label is None or min_logprob is None:
        return answer.label, answer.error
    if answer.logprob is None:
        return None, f"no_logprob: the annotator gave no log-probability to check against {min_logprob}"
    if answer.logprob < min_logprob:
        return None, f"low_logprob: {answer.logprob:.3f} < {min_logprob}"
    return answer.label, answer.error


@dataclass(frozen=True)
class AnnotatorSpec:
    """What an actor needs to build an annotator: its kind and plain, picklable options."""

    kind: str  # "none" | "knn" | "llm"
    options: dict[str, Any] = field(default_factory=dict)
    # The Ray Serve app answering the requests when this run deployed it (the driver watches its
    # replicas); None for an external endpoint or an annotator without a service.
    serve_app: str | None = None
    # Requests that app holds at full scale (max replicas x target in flight per replica); None:
    # unknown (an external endpoint). The annotate stage splits it over its actors.
    capacity: int | None = None

    def for_actors(self, actors: int) -> "AnnotatorSpec":
        """This spec with each of ``actors`` annotators sending at most its share of ``capacity``.

        More requests than the deployment is sized for only queue at its replicas; once the
        queue outlasts the client's timeout, every request times out and is resent behind the
        others, and nothing completes (seen on a slow 2-core machine with long prompts).
        """
        if self.capacity is None or "concurrency" not in self.options:
            return self
        share = max(1, -(-self.capacity // max(actors, 1)))
        if share >= self.options["concurrency"]:
            return self
        return replace(self, options={**self.options, "concurrency": share})


class Annotator(Protocol):
    """Relabels a batch of queries. Must return one answer per query, in order, and never raise
    for a single bad answer (record it as ``Answer(label=None, error=...)``)."""

    name: str

    def annotate(self, *, queries: Sequence[Query], label_names: Sequence[str]) -> list[Answer]:
        """One ``Answer`` per query, in the order of ``queries``."""


@dataclass
class AnnotatorStats:
    """Counters reported per round in metrics.json."""

    requested: int = 0
    queries: int = 0  # new model queries (cache misses)
    cached: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, answers: Sequence[Answer]) -> None:
        """Count ``answers``; errors are counted by their kind (the text before the first ':')."""
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
