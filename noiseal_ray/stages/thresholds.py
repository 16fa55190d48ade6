"""Thresholds: the round's scores decide the split rule's per-class thresholds; applying them gives R/P/H.

``class-mean`` (the reconstructed rule) folds each round's class means of p into the EMA
thresholds. Every other rule (``--split``, a ``split.RULES`` name) is refit each round from the
per-class loss histograms of the round's scores (one distributed pass, ``split.hist_sums``);
the class-mean EMA is kept beside it, since rules with a fallback split some classes by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noiseal_ray.partition import CODES, ThresholdState, means_from_sums
from noiseal_ray.rundir import THRESHOLDS, round_stage
from noiseal_ray.score import reduce_sum
from noiseal_ray.split import RuleInputs, RuleThresholds, hist_sums, rule_thresholds
from noiseal_ray.split.table import CLASS_MEAN
from noiseal_ray.stages.context import RunContext
from noiseal_ray.stages.tables import read_dir

@dataclass
class SplitState:
    """The split a round applies, and what the next round's update starts from.

    ``ema``: the class-mean EMA thresholds (today's rule, and the fallback of the ``|class-mean``
    rules); ``rule``: a ``split.RULES`` name; ``current``: the thresholds the last update gave
    (None before the first round).
    """

    ema: ThresholdState
    rule: str = CLASS_MEAN
    current: RuleThresholds | None = None

    def to_dict(self) -> dict:
        """JSON-ready form: the EMA's keys (older runs' manifests hold only those), the rule and
        the current thresholds."""
        return {**self.ema.to_dict(), "rule": self.rule,
                "current": None if self.current is None else self.current.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "SplitState":
        """Inverse of ``to_dict``; a manifest from before split rules reads as ``class-mean``."""
        ema = ThresholdState.from_dict(d)
        rule = d.get("rule", CLASS_MEAN)
        if d.get("current") is not None:
            current = RuleThresholds.from_dict(d["current"])
        elif ema.strong is not None:
            current = RuleThresholds.class_mean(tau_strong=ema.strong, tau_weak=ema.weak)
        else:
            current = None
        return cls(ema=ema, rule=rule, current=current)


def update_split(*, state: SplitState, sums: dict) -> SplitState:
    """Fold one round's aggregates into ``state`` (in place, and return it).

    ``sums``: the summed ``split.hist_sums`` rows of the round's scored table (per-class counts,
    sums of p and loss histograms, (C,) and (C, B)). The EMA always moves; a rule other than
    class-mean then fits its thresholds on the histograms, its fallback classes using the EMA.
    The history records the thresholds the round applies.
    """
    cnt = np.asarray(sums["count"], dtype=np.float64)
    if state.ema.per_class:  # NaN for an absent class: the EMA keeps its previous threshold
        ms = means_from_sums(sums=sums["sum_strong"], counts=cnt)
        mw = means_from_sums(sums=sums["sum_weak"], counts=cnt)
    else:
        n = np.array([cnt.sum()])
        ms = means_from_sums(sums=np.array([np.sum(sums["sum_strong"])]), counts=n)
        mw = means_from_sums(sums=np.array([np.sum(sums["sum_weak"])]), counts=n)
    state.ema.update(mean_strong=ms, mean_weak=mw)
    if state.rule == CLASS_MEAN:
        state.current = RuleThresholds.class_mean(tau_strong=state.ema.strong, tau_weak=state.ema.weak)
        return state
    cur = rule_thresholds(state.rule, RuleInputs.from_sums(sums))
    if cur.today is not None:
        # The fallback is today's rule exactly: the EMA thresholds, not this round's raw means.
        cur.today_tau = (state.ema.strong, state.ema.weak)
    state.current = cur
    state.ema.history[-1] = {"strong": cur.tau_strong.tolist(),
                             "weak": None if cur.tau_weak is None else cur.tau_weak.tolist(), "rule": state.rule}
    return state


def thresholds(*, scored_dir: Path, state: SplitState, num_classes: int) -> SplitState:
    """Update ``state`` (in place, and return it) from the scored table (one distributed pass)."""
    ds = read_dir(path=scored_dir, columns=["label", "p_strong", "p_weak", "pred"])
    return update_split(state=state, sums=reduce_sum(ds, hist_sums, num_classes=num_classes))


def assign_parts(*, batch: dict, split: RuleThresholds) -> dict:
    """Set ``batch["part"]`` (R/P/H codes, (n,)) from p_strong, p_weak, label (and pred, the
    strong argmax, which some rules read) under ``split``; a trusted (reviewed) row is always R.
    Return the batch."""
    part = split.split(p_strong=batch["p_strong"], p_weak=batch["p_weak"], labels=batch["label"].astype(np.int64),
                       pred=batch.get("pred"))
    if "trusted" in batch:
        part = np.where(batch["trusted"].astype(bool), CODES["R"], part).astype(np.int8)
    batch["part"] = part
    return batch


def initial_state(*, run: RunContext) -> SplitState:
    """The split state the manifest holds, or a fresh one from the configuration."""
    if "thresholds" in run.manifest.data:
        return SplitState.from_dict(run.manifest.data["thresholds"])
    return SplitState(ema=ThresholdState(beta=run.config.ema_beta, per_class=run.config.per_class_threshold),
                      rule=run.config.split)


def thresholds_stage(*, run: RunContext, round_no: int, state: SplitState) -> SplitState:
    """Update the thresholds from round ``round_no``'s scores, unless done; return them."""
    stage = round_stage(round_no=round_no, step=THRESHOLDS)
    if run.manifest.done(stage):
        return state
    with run.progress.stage(f"{run.tag(round_no)} thresholds ({state.rule})") as st:
        state = thresholds(scored_dir=run.round_dir(round_no) / "scored", state=state,
                           num_classes=len(run.manifest.label_names))
    run.manifest.add_seconds("partition", st["seconds"])
    run.manifest.mark(stage, thresholds=state.to_dict())
    return state
