"""Thresholds: per-class means of the scores update the EMA thresholds; applying them gives R/P/H."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noiseal_ray.partition import ThresholdState, partition
from noiseal_ray.rundir import THRESHOLDS, round_stage
from noiseal_ray.score import class_means
from noiseal_ray.stages.context import RunContext
from noiseal_ray.stages.tables import read_dir


def thresholds(*, scored_dir: Path, state: ThresholdState, num_classes: int) -> ThresholdState:
    """Update ``state`` (in place, and return it) with the class means of the scored table."""
    ms, mw, _ = class_means(read_dir(path=scored_dir, columns=["label", "p_strong", "p_weak"]), num_classes=num_classes,
                            per_class=state.per_class)
    state.update(mean_strong=ms, mean_weak=mw)
    return state


def assign_parts(*, batch: dict, tau_s: np.ndarray, tau_w: np.ndarray) -> dict:
    """Set ``batch["part"]`` (R/P/H codes, (n,)) from p_strong, p_weak and label against the
    thresholds (C,); return the batch."""
    batch["part"] = partition(p_strong=batch["p_strong"], p_weak=batch["p_weak"],
                              labels=batch["label"].astype(np.int64), tau_strong=tau_s, tau_weak=tau_w)
    return batch


def initial_state(*, run: RunContext) -> ThresholdState:
    """The thresholds the manifest holds, or fresh ones from the configuration."""
    if "thresholds" in run.manifest.data:
        return ThresholdState.from_dict(run.manifest.data["thresholds"])
    return ThresholdState(beta=run.config.ema_beta, per_class=run.config.per_class_threshold)


def thresholds_stage(*, run: RunContext, round_no: int, state: ThresholdState) -> ThresholdState:
    """Update the thresholds from round ``round_no``'s scores, unless done; return them."""
    stage = round_stage(round_no=round_no, step=THRESHOLDS)
    if run.manifest.done(stage):
        return state
    with run.progress.stage(f"{run.tag(round_no)} thresholds") as st:
        state = thresholds(scored_dir=run.round_dir(round_no) / "scored", state=state,
                           num_classes=len(run.manifest.label_names))
    run.manifest.add_seconds("partition", st["seconds"])
    run.manifest.mark(stage, thresholds=state.to_dict())
    return state
