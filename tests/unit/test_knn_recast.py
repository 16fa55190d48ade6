"""``knn_recast``: the annotate stage re-casts the kNN vote of a P row that an earlier round
already answered (living labels), and keeps that earlier answer without it (the method's caching).
Rows outside P keep whatever answer they carry, for the report."""

from __future__ import annotations

import numpy as np
import pytest

from noiseal_ray.annotate.demos import DemoPool
from noiseal_ray.annotate.factory import AnnotatorSpec
from noiseal_ray.config import make_config
from noiseal_ray.split import RuleThresholds
from noiseal_ray.stages.annotate import PartitionAnnotate


def _stage(*, recast: bool) -> PartitionAnnotate:
    c, d = 3, 4
    # Every demonstration now says label 1 (today's R and embeddings).
    pool = DemoPool(texts=np.array(["a", "b", "c"], object), labels=np.array([1, 1, 1]),
                    embeddings=np.eye(d, dtype=np.float32)[[0, 0, 0]])
    return PartitionAnnotate(spec=AnnotatorSpec(kind="knn"), pool=pool,
                             split=RuleThresholds.class_mean(tau_strong=np.full(c, 0.5), tau_weak=np.full(c, 0.5)),
                             round_no=3, label_names=["x", "y", "z"], demos=3, class_balanced=False,
                             candidates_topk=0, min_logprob=None, recast=recast)


def _batch() -> dict:
    n, c = 4, 3
    return {
        "id": np.array(["0", "1", "2", "3"], object), "text": np.array(["q", "r", "s", "t"], object),
        "label": np.array([0, 0, 2, 0]),
        # rows 0, 1: both models reject -> P; rows 2, 3: both accept -> R
        "p_strong": np.array([0.1, 0.1, 0.9, 0.9]), "p_weak": np.array([0.1, 0.1, 0.9, 0.9]),
        "probs": np.full((n, c), 1 / c, np.float32), "embedding": np.eye(4, dtype=np.float32)[[0, 0, 1, 2]],
        # Row 0 was answered 2 in round 1 (older embeddings); row 3 (now R) was answered 2 as well.
        "llm_label": np.array([2, -1, -1, 2]), "llm_logprob": np.array([-0.1, np.nan, np.nan, -0.2]),
        "llm_error": np.array([""] * n, object), "llm_round": np.array([1, -1, -1, 1]),
        "llm_cached": np.zeros(n, bool),
    }


@pytest.mark.parametrize(("recast", "row0_label", "row0_round"), [(False, 2, 1), (True, 1, 3)])
def test_an_answered_p_row_is_re_cast_only_when_asked(recast, row0_label, row0_round):
    out = _stage(recast=recast)(_batch())
    assert list(out["part"]) == [1, 1, 0, 0]
    assert out["llm_label"][0] == row0_label and out["llm_round"][0] == row0_round
    assert out["llm_label"][1] == 1 and out["llm_round"][1] == 3  # a new P row is asked either way
    assert out["llm_label"][3] == 2 and out["llm_round"][3] == 1  # R keeps its old answer, re-cast or not


def test_config_knn_recast_defaults_off_and_is_strict():
    assert make_config().knn_recast is False
    assert make_config(overrides={"knn_recast": True}).knn_recast is True
    from noiseal_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="knn_recast"):
        make_config(overrides={"knn_recast": "yes"})
