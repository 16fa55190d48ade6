"""Partition + annotate: assign R/P/H with the round's thresholds, then relabel the P rows not
yet answered, each with its nearest demonstrations from R (Ray Data actor pool).

Ray is imported inside the functions: importing it takes seconds, and the unit tests that
import the stages do not need it.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np

from noiseal_ray.annotate.base import Demo, Query, gate_answer
from noiseal_ray.annotate.demos import PoolHandle, demo_pool
from noiseal_ray.annotate.factory import AnnotatorSpec, annotator_backend, make_annotator
from noiseal_ray.annotate.llm import check_endpoint, longest_annotate_s, normalize_base_url
from noiseal_ray.annotate.replicas import ReplicaWatch, summarise_replicas
from noiseal_ray.config import RunConfig
from noiseal_ray.finalize import (STAT_KEYS, ChangeGate, batch_stats, gate_from, given_pred_counts, imprecise_moves,
                                  summarise)
from noiseal_ray.partition import CODES
from noiseal_ray.rundir import ANNOTATE, partition_key, round_stage, train_key
from noiseal_ray.score import reduce_sum
from noiseal_ray.stages.context import RunContext
from noiseal_ray.stages.tables import fit_actors, read_dir, table_columns, write_dir
from noiseal_ray.split import RuleThresholds
from noiseal_ray.split.table import CLASS_MEAN
from noiseal_ray.stages.thresholds import SplitState, assign_parts

TABLE_DROP = ("probs", "embedding")  # scores only this round needs: the round table leaves them out
COUNT_COLUMNS = ["part", "label", "llm_label", "pred", "pred_prob", "clean_label", "llm_round", "llm_error", "llm_cached",
                 "held_back", "truncated", "given", "trusted"]


class PartitionAnnotate:
    """Callable class: assign R/P/H, then ask the annotator about P rows not yet annotated (every P
    row when ``recast``)."""

    def __init__(self, *, spec, pool, split: RuleThresholds, round_no: int, label_names: list[str], demos: int,
                 class_balanced: bool, candidates_topk: int, min_logprob: float | None,
                 hard_policy: str = "given", refuted: np.ndarray | None = None, recast: bool = False):
        import ray  # deferred: heavy (module docstring)

        self.annotator = make_annotator(spec)
        self.recast = recast  # ask about every P row, answered before or not (config.knn_recast)
        self.pool = ray.get(pool) if isinstance(pool, ray.ObjectRef) else pool
        self.split = split
        self.round_no = round_no
        self.label_names = label_names
        self.k = demos
        self.class_balanced = class_balanced
        self.topk = candidates_topk
        self.min_logprob = min_logprob
        self.hard_policy = hard_policy
        self.refuted = refuted

    def _queries(self, batch: dict, need: np.ndarray) -> list[Query]:
        """One query per row index in ``need``, with its demonstrations (and candidate labels)."""
        idx, sims = self.pool.nearest(batch["embedding"][need], k=self.k, class_balanced=self.class_balanced,
                                      num_classes=len(self.label_names))
        queries = []
        for j, row in enumerate(need):
            cands = None
            if self.topk:
                cands = tuple(int(c) for c in np.argsort(-batch["probs"][row], kind="stable")[: self.topk])
            demos = tuple(Demo(text=str(self.pool.texts[i]), label=int(self.pool.labels[i]), similarity=float(s))
                          for i, s in zip(idx[j], sims[j]))
            queries.append(Query(id=str(batch["id"][row]), text=str(batch["text"][row]),
                                 given=int(batch["label"][row]), demos=demos, candidates=cands))
        return queries

    def __call__(self, batch: dict) -> dict:
        batch = assign_parts(batch=batch, split=self.split)
        need = np.flatnonzero((batch["part"] == CODES["P"]) & ((batch["llm_label"] < 0) | self.recast))
        if self.annotator is not None and len(need):
            answers = self.annotator.annotate(queries=self._queries(batch, need), label_names=self.label_names)
            llm = batch["llm_label"].copy()
            lp = batch["llm_logprob"].copy()
            err = batch["llm_error"].astype(object).copy()
            rnd = batch["llm_round"].copy()
            cached = batch["llm_cached"].copy()
            for row, a in zip(need, answers):
                label, error = gate_answer(a, min_logprob=self.min_logprob)
                llm[row] = -1 if label is None else int(label)
                lp[row] = np.nan if a.logprob is None else a.logprob
                err[row] = error or ""
                rnd[row] = self.round_no
                cached[row] = bool(a.cached)
            batch.update(llm_label=llm, llm_logprob=lp, llm_error=err, llm_round=rnd, llm_cached=cached)
        if self.refuted is not None and self.refuted.any():
            batch = hold_refuted_moves(batch=batch, refuted=self.refuted, hard_policy=self.hard_policy)
        return {k: v for k, v in batch.items() if k not in TABLE_DROP}


def hold_refuted_moves(*, batch: dict, refuted: np.ndarray, hard_policy: str) -> dict:
    """Put back in R (their label kept, trained on as given) the rows whose final label would apply
    a move the reviews refute or the change gate rejects (``refuted`` (C, C) bool, ``held_moves``),
    and mark them ``held_back``: the label stays because the evidence did not back the change, so
    the final labels mark such a row held, for review. Return the batch."""
    from noiseal_ray.finalize import final_labels
    from noiseal_ray.review.moves import hold_refuted

    pred = batch["pred"] if "pred" in batch else np.argmax(batch["probs"], axis=1)
    label = batch["label"].astype(np.int64)
    final = final_labels(part=batch["part"].astype(np.int64), given=label, llm=batch["llm_label"].astype(np.int64),
                         pred=np.asarray(pred, np.int64), hard_policy=hard_policy)
    held = hold_refuted(label=label, final=final, refuted=refuted)
    batch["part"] = np.where(held, CODES["R"], batch["part"]).astype(batch["part"].dtype)
    batch["held_back"] = held
    return batch


def annotate(*, scored_dir: Path, out_dir: Path, spec, pool, split: RuleThresholds, round_no: int,
             label_names: list[str], config: RunConfig, actors: int, refuted: np.ndarray | None = None) -> None:
    """Partition + annotate the scored table into the round table ``out_dir`` (rows in order).

    ``pool``: a ``PoolHandle`` (from ``demo_pool``) or a ``DemoPool``; ``spec``: the annotator;
    ``split``: the round's thresholds (``SplitState.current``); ``refuted``: (C, C) bool, the moves
    the reviews refute (``hold_refuted_moves``), or None.
    """
    import ray  # deferred: heavy (module docstring)
    from ray.data import ActorPoolStrategy

    pool_ref = pool.ref if isinstance(pool, PoolHandle) else ray.put(pool)
    batch_rows = max(config.score_batch_size, 256)
    actors = fit_actors(actors=actors, table_dir=scored_dir, batch_rows=batch_rows)
    spec = spec.for_actors(actors)
    ds = read_dir(path=scored_dir, min_blocks=actors)
    ds = ds.map_batches(
        PartitionAnnotate,
        fn_constructor_kwargs=dict(spec=spec, pool=pool_ref, split=split,
                                   round_no=round_no, label_names=label_names, demos=config.demos,
                                   class_balanced=config.class_balanced_demos,
                                   candidates_topk=config.llm_candidates_topk, min_logprob=config.llm_min_logprob,
                                   hard_policy=config.hard_policy, refuted=refuted,
                                   recast=config.knn_recast and spec.kind == "knn"),
        batch_size=batch_rows, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
        num_cpus=0.5)
    allow_slow_annotator(ds=ds, spec=spec, batch_rows=batch_rows)
    write_dir(ds=ds, final=out_dir)


def allow_slow_annotator(*, ds, spec, batch_rows: int) -> None:
    """Let a batch take as long as the LLM client's own timeouts and retries allow.

    Ray Data fails a dataset that moves no block for 30 minutes; an LLM answering a batch of
    long prompts on a slow CPU can legitimately take longer (each request is bounded by the
    client: ``longest_annotate_s``), so the guard is raised to that bound, never lowered.
    """
    if spec.kind != "llm":
        return
    o = spec.options
    bound = longest_annotate_s(queries=batch_rows, concurrency=o.get("concurrency", 32),
                               timeout_s=o.get("timeout_s", 120.0), retries=o.get("retries", 3),
                               cold_start_timeout_s=o.get("cold_start_timeout_s"))
    current = ds.context.execution_no_progress_timeout_s
    if current is not None and 0 < current < bound:
        ds.context.execution_no_progress_timeout_s = bound


def serving_note(serving: dict) -> str:
    """The progress line's account of the LLM replicas in one annotate stage."""
    cold = serving["cold_start_s"]
    return (f"; LLM replicas {serving['replicas_at_start']} at start, {serving['peak_replicas']} at most"
            + (f", cold start {cold:.0f} s" if cold else ""))


def round_counts(*, table_dir: Path, round_no: int, hard_policy: str, gate: ChangeGate | None = None) -> dict[str, int]:
    """The counts of ``finalize.STAT_KEYS`` (sizes, annotator answers, corrections) over a round table,
    its final labels chosen as ``finalize.final_labels`` does with ``hard_policy`` and ``gate``."""
    present = set(table_columns(table_dir))  # a table from before reviewed rows existed has no given/trusted
    cols = [c for c in COUNT_COLUMNS if c in present]
    sums = reduce_sum(read_dir(path=table_dir, columns=cols), batch_stats, round_no=round_no, hard_policy=hard_policy,
                      gate=gate)
    return {k: int(sums[k]) for k in STAT_KEYS}


def held_moves(*, run: RunContext, gate: ChangeGate, num_classes: int) -> np.ndarray | None:
    """(C, C) bool, the moves a round holds back (its rows train as R on their given label): those
    the reviews refute, and those into a class the round's change ``gate`` (``round_gate``) rejects
    for its test precision (``change_min_test_precision``); None when none."""
    reviewed = refuted_matrix(moves=run.manifest.data.get("move_reviews"), num_classes=num_classes)
    imprecise = imprecise_moves(gate.move_ok)
    if reviewed is None or imprecise is None:
        return imprecise if reviewed is None else reviewed
    return reviewed | imprecise


def corpus_given_pred(*, run: RunContext, round_no: int) -> np.ndarray | None:
    """(C, C) round ``round_no``'s scored rows counted by (given label, the model's prediction), which
    the transition scope of the change gate weighs; None where the gate does not need them. Counted
    once, when the round is partitioned; the round's manifest entry keeps them (``given_pred``), so the
    final labels' gate, on the last round, reads them back instead of a second pass over the rows."""
    c = run.config
    if c.change_precision_scope != "transition" or c.min_test_precision() <= 0:
        return None
    recorded = run.manifest.round_entry(partition_key(round_no=round_no)).get("given_pred")
    if recorded is not None:
        return np.asarray(recorded, np.float64)
    k = len(run.manifest.label_names)
    sums = reduce_sum(read_dir(path=run.round_dir(round_no) / "scored", columns=["label", "pred"]),
                      given_pred_counts, num_classes=k)
    return np.asarray(sums.get("given_pred", np.zeros(k * k)), np.float64).reshape(k, k)


def round_gate(*, run: RunContext, round_no: int, given_pred: np.ndarray | None) -> ChangeGate:
    """The change gate of round ``round_no``'s table, scored by the model of fit ``round_no`` - 1
    (``given_pred``: that table's ``corpus_given_pred``)."""
    c = run.config
    try:
        return gate_from(min_prob=c.change_min_prob, min_test_precision=c.min_test_precision(),
                         scope=c.change_precision_scope, fit_entry=run.manifest.round_entry(train_key(round_no=round_no - 1)),
                         given_pred=given_pred)
    except ValueError:
        # No matrix for the model that scored this round: a warm-up that was never fit (warmup_epochs 0)
        # or one fit by a version that did not record it. Round 1 goes ungated by test precision; the
        # final labels never do (stages.finalize.final_gate raises instead).
        return ChangeGate(min_prob=c.change_min_prob)


def preflight_annotator(*, config: RunConfig, needed: bool) -> None:
    """An explicit LLM endpoint that does not answer is an AnnotatorError before any work
    (unless a fallback annotator is configured: then ``llm_backend`` falls back later)."""
    if not needed or config.annotator != "llm" or not config.llm_endpoint:
        return
    if config.annotator_fallback not in (None, "llm"):
        return
    check_endpoint(base_url=normalize_base_url(config.llm_endpoint), api_key_env=config.llm_api_key_env,
                   model=config.llm_model)


def refuted_matrix(*, moves: list | None, num_classes: int) -> np.ndarray | None:
    """The refuted ones of the manifest's judged moves (``judge_moves`` records) as a (C, C) bool
    matrix; None when none is refuted."""
    refuted = [m for m in moves or [] if m["refuted"]]
    if not refuted:
        return None
    out = np.zeros((num_classes, num_classes), bool)
    for m in refuted:
        out[int(m["given"]), int(m["suggested"])] = True
    return out


def annotating_left(*, run: RunContext) -> bool:
    """True while the last round's partition + annotate has not completed."""
    return not run.manifest.done(round_stage(round_no=run.last_round, step=ANNOTATE))


@contextmanager
def annotator_for(*, run: RunContext) -> Iterator[AnnotatorSpec]:
    """The annotator spec for the rounds; its backend (e.g. an LLM service) is started only when an
    annotate stage is still to run."""
    if not annotating_left(run=run):
        yield AnnotatorSpec(kind="none")
        return
    with annotator_backend(config=run.config, run_dir=str(run.out)) as spec:
        yield spec


def partition_annotate_stage(*, run: RunContext, round_no: int, state: SplitState, spec: AnnotatorSpec,
                             actors: int) -> None:
    """Sample the demonstration pool, partition + annotate round ``round_no`` and record its
    summary (sizes, annotator counts, thresholds, pool size), unless done."""
    stage = round_stage(round_no=round_no, step=ANNOTATE)
    if run.manifest.done(stage):
        return
    config, names = run.config, run.manifest.label_names
    scored, c = run.round_dir(round_no) / "scored", len(names)
    given_pred = corpus_given_pred(run=run, round_no=round_no)
    gate = round_gate(run=run, round_no=round_no, given_pred=given_pred)
    with run.progress.stage(f"{run.tag(round_no)} partition + annotate ({config.annotator})") as st:
        pool = demo_pool(scored_dir=scored, split=state.current, num_classes=c,
                         per_class=config.demo_pool_per_class_for(c), seed=config.seed + round_no)
        watch = ReplicaWatch(app_name=spec.serve_app) if spec.serve_app else nullcontext()
        with watch:
            annotate(scored_dir=scored, out_dir=run.round_dir(round_no) / "table", spec=spec, pool=pool,
                     split=state.current, round_no=round_no, label_names=names, config=config, actors=actors,
                     refuted=held_moves(run=run, gate=gate, num_classes=c))
        counts = round_counts(table_dir=run.round_dir(round_no) / "table", round_no=round_no,
                              hard_policy=config.hard_policy, gate=gate)
        summary = summarise(counts)
        s = summary["sizes"]
        st["rows"] = counts["n"]
        st["note"] = (f"R {s['R']} P {s['P']} H {s['H']}, {summary['annotator']['new_answers']} new "
                      f"labels, {summary['annotator']['failed']} failed")
        if isinstance(watch, ReplicaWatch):
            serving = summary["llm_serving"] = summarise_replicas(samples=watch.samples,
                                                                   queries=summary["annotator"]["queries"])
            st["note"] += serving_note(serving)
    run.manifest.add_seconds("annotate", st["seconds"])
    cur = state.current
    saved = cur.to_dict()
    summary["thresholds"] = {"strong": saved["tau_strong"], "weak": saved["tau_weak"]}
    if state.rule != CLASS_MEAN:
        summary["split"] = {"rule": state.rule, "noise_rate": saved["noise_rate"],
                            "fallback_classes": [] if cur.today is None else np.flatnonzero(cur.today).tolist()}
    summary["demo_pool"] = len(pool)
    if given_pred is not None:  # the transition gate's evidence, read again by the final labels' gate
        summary["given_pred"] = given_pred.astype(np.int64).tolist()
    run.manifest.mark_round(stage, key=partition_key(round_no=round_no), entry=summary)
