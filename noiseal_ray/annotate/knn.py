"""kNN annotator: similarity-weighted vote of the nearest R samples (the demonstrations)."""

from __future__ import annotations

import math
from typing import Sequence

from noiseal_ray.annotate.base import Answer, Query


class KnnAnnotator:
    """Label = argmax over classes of the summed (clipped) cosine similarity of the demos.

    The log-probability is the log of the winning class's share of the vote. A query with no
    demonstrations (empty R) gets an error answer, never a guess.
    """

    name = "knn"

    def annotate(self, *, queries: Sequence[Query], label_names: Sequence[str]) -> list[Answer]:
        """One answer per query, in order, from its demonstrations alone (``label_names`` unused)."""
        answers: list[Answer] = []
        for q in queries:
            votes: dict[int, float] = {}
            for d in q.demos:
                if q.candidates is not None and d.label not in q.candidates:
                    continue
                votes[d.label] = votes.get(d.label, 0.0) + max(d.similarity, 0.0) + 1e-6
            if not votes:
                answers.append(Answer(label=None, error="no_demos: no demonstration in R"))
                continue
            total = sum(votes.values())
            # Ties break towards the smaller label id, deterministically.
            label = min(votes, key=lambda k: (-votes[k], k))
            answers.append(Answer(label=label, logprob=math.log(votes[label] / total)))
        return answers
