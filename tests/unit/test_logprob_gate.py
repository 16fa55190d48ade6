"""``llm_min_logprob``: an annotator label passes the gate when its log-probability is at least the
bound. A certain answer (log 1 = 0.0, e.g. a unanimous kNN vote) passes; an answer without a
log-probability is refused with a reason instead of crashing the annotate actor."""

from __future__ import annotations

import numpy as np
import pytest

from noiseal_ray.annotate.base import Answer
from noiseal_ray.annotate.demos import DemoPool
from noiseal_ray.annotate.factory import AnnotatorSpec
from noiseal_ray.split import RuleThresholds
from noiseal_ray.stages.annotate import PartitionAnnotate


@pytest.mark.parametrize(
    ("answer", "bound", "label", "error"),
    [
        (Answer(label=2, logprob=0.0), -0.1, 2, None),  # certain: was refused as -inf
        (Answer(label=2, logprob=-0.05), -0.1, 2, None),
        (Answer(label=2, logprob=-0.1), -0.1, 2, None),  # at the bound
        (Answer(label=2, logprob=-0.5), -0.1, None, "low_logprob: -0.500 < -0.1"),
        (Answer(label=2, logprob=None), -0.1, None, "no_logprob"),  # raised a TypeError
        (Answer(label=2, logprob=None), None, 2, None),  # no gate: as given
        (Answer(label=None, error="timeout: x"), -0.1, None, "timeout: x"),
    ],
)
def test_gate(answer, bound, label, error):
    from noiseal_ray.annotate.base import gate_answer

    got_label, got_error = gate_answer(answer, min_logprob=bound)
    assert got_label == label
    assert (got_error is None) if error is None else got_error.startswith(error)


def test_unanimous_knn_vote_passes_the_gate_in_the_annotate_stage():
    """The real annotate stage (partition + kNN) on one batch: every neighbour of the P row has
    label 1, so the vote's log-probability is exactly 0.0, which any bound <= 0 accepts."""
    c, d = 3, 4
    emb = np.eye(d, dtype=np.float32)[[0, 0, 1, 2]]
    pool = DemoPool(texts=np.array(["a", "b", "c"], object), labels=np.array([1, 1, 1]),
                    embeddings=np.eye(d, dtype=np.float32)[[0, 0, 0]])
    stage = PartitionAnnotate(spec=AnnotatorSpec(kind="knn"), pool=pool,
                              split=RuleThresholds.class_mean(tau_strong=np.full(c, 0.5), tau_weak=np.full(c, 0.5)),
                              round_no=1, label_names=["x", "y", "z"], demos=3, class_balanced=False,
                              candidates_topk=0, min_logprob=-0.01)
    n = 4
    batch = {
        "id": np.array(["0", "1", "2", "3"], object), "text": np.array(["q", "r", "s", "t"], object),
        "label": np.array([0, 1, 2, 0]), "p_strong": np.array([0.1, 0.9, 0.9, 0.9]),
        "p_weak": np.array([0.1, 0.9, 0.9, 0.9]),  # row 0: both reject -> P
        "probs": np.full((n, c), 1 / c, np.float32), "embedding": emb,
        "llm_label": np.full(n, -1), "llm_logprob": np.full(n, np.nan), "llm_error": np.array([""] * n, object),
        "llm_round": np.full(n, -1), "llm_cached": np.zeros(n, bool),
    }
    out = stage(batch)
    assert list(out["part"]) == [1, 0, 0, 0]
    assert out["llm_label"][0] == 1 and out["llm_logprob"][0] == 0.0 and out["llm_error"][0] == ""
    assert "embedding" not in out and "probs" not in out
