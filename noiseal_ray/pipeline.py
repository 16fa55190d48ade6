"""The NoiseAL round loop on Ray: ingest, warm-up, then per round score -> thresholds ->
partition + annotate -> train, and finalize. Each stage is a module of ``noiseal_ray.stages``.

Resumable: every stage writes its output atomically and then records itself in
``manifest.json`` (``noiseal_ray.rundir``); a rerun on the same ``--out`` skips completed stages.

Run directory::

    config.yaml  manifest.json  metrics.json  labels.parquet/  model/  report.html
    rounds/r0/{table,init,model}/      base table, initial and warmed-up bundles
    rounds/r{n}/{scored,table,model}/  scores, partition + annotator labels, trained bundle
                                       (scored/ goes when round n is fitted, model/ when round
                                       n+1 is: only r0's and the last round's bundles stay)
    checkpoints/                       Ray Train storage (deleted when the run completes, unless
                                       config.storage_path names another place)
    llm_cache/                         LLM answers (annotator "llm")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from noiseal_ray import train
from noiseal_ray.annotate.demos import demo_pool
from noiseal_ray.config import RunConfig, load_saved_config
from noiseal_ray.errors import OutputError
from noiseal_ray.progress import Progress
from noiseal_ray.ray_session import configure_data_context, ray_session
from noiseal_ray.rundir import Manifest, check_run_dir_path, check_writable, hold_run_dir, sweep_debris
from noiseal_ray.stages.annotate import (annotate, annotating_left, annotator_for, partition_annotate_stage,
                                         preflight_annotator, round_counts)
from noiseal_ray.stages.context import Cluster, RunContext
from noiseal_ray.stages.finalize import build_metrics, finalize_stage, report_stage, write_metrics
from noiseal_ray.stages.ingest import ingest, ingest_stage
from noiseal_ray.stages.score import score, score_stage
from noiseal_ray.stages.thresholds import initial_state, thresholds, thresholds_stage
from noiseal_ray.stages.train import Trainer, load_test_dataset, train_stage, warm_up_stage

# Imported by other code from here: the library entry points, and the single stages that the
# scale and speed benchmarks time one by one.
__all__ = ["Manifest", "Progress", "annotate", "apply_sample_defaults", "build_metrics", "configure_data_context",
           "demo_pool", "ingest", "interruption_message", "ray_session", "round_counts", "run_pipeline",
           "sample_data_path", "score", "thresholds"]

# Options that do not change results: a rerun may change them and still resume.
RESUME_FREE = {"address", "report", "score_actors", "score_batch_size", "llm_concurrency", "llm_timeout_s",
               "llm_retries", "llm_endpoint", "llm_api_key_env", "llm_min_replicas", "llm_max_replicas",
               "llm_target_ongoing_requests", "llm_downscale_delay_s", "llm_cold_start_timeout_s", "max_failures",
               "storage_path", "annotator_fallback", "train_placement"}


def sample_data_path() -> str:
    """The corpus shipped with the package (800 TREC questions, 30% symmetric noise)."""
    return str(Path(__file__).parent / "sample_data" / "trec_800_sym30.csv")


def apply_sample_defaults(config: RunConfig) -> RunConfig:
    """With no --data, run on the shipped sample and evaluate against its clean labels."""
    if config.data is None:
        # Test data first: each assignment is validated, and a change gate on test precision needs it.
        if config.test_data is None:
            config.test_data = str(Path(__file__).parent / "sample_data" / "trec_test_200.csv")
        config.data = sample_data_path()
        config.label_col = "noisy_label"
        config.clean_label_col = config.clean_label_col or "label"
        config.text_col = "text"
        config.id_col = config.id_col or "id"
    return config


def check_resume(*, out: Path, config: RunConfig) -> None:
    """OutputError when ``out`` holds a run that ``config`` cannot resume: one without
    config.yaml, or one whose saved options differ outside ``RESUME_FREE``."""
    saved = out / "config.yaml"
    if not saved.is_file():
        if (out / "manifest.json").exists() or (out / "labels.parquet").exists():
            raise OutputError(f"{out} holds a run without config.yaml; use an empty --out")
        return
    old = load_saved_config(saved).to_dict()
    new = config.to_dict()
    diff = sorted(k for k in new if k not in RESUME_FREE and old.get(k) != new.get(k))
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        raise OutputError(f"{out} holds a run with a different configuration ({detail}); "
                          "use another --out, or the same options to resume it")


def run_pipeline(*, config: RunConfig, out: str | Path, progress: Progress | None = None,
                 fit_fn: Callable | None = None) -> dict:
    """Run (or resume) NoiseAL on ``config.data``, writing everything under ``out``.

    Returns the metrics dict also written to ``out/metrics.json``. ``fit_fn`` replaces
    ``noiseal_ray.train.fit`` (tests hand in a cheaper one). A Ctrl-C (KeyboardInterrupt) keeps
    every completed stage: the same call resumes (``interruption_message`` says what was kept).
    """
    progress = progress or Progress()
    check_run_dir_path(out)
    out = Path(out)
    check_writable(out)  # before any work: an unwritable --out fails in milliseconds
    # Two runs in one folder would sweep each other's temp files and interleave manifest writes.
    with hold_run_dir(out):
        return _run_locked(config=config, out=out, progress=progress, fit_fn=fit_fn or train.fit)


def _run_locked(*, config: RunConfig, out: Path, progress: Progress, fit_fn: Callable) -> dict:
    """``run_pipeline`` once this process holds ``out`` (``hold_run_dir``)."""
    check_resume(out=out, config=config)
    # A killed earlier run may have left temp files/dirs; none is ever read, so they just go.
    swept = sweep_debris(out, skip=("checkpoints",))
    if swept:
        progress.note(f"removed {len(swept)} leftover temp file(s) of an interrupted earlier run")
    run = RunContext(config=config, out=out, manifest=Manifest.load(out), progress=progress)
    t_start = time.time()
    # Before Ray starts and before config.yaml is written: bad input or an unreachable LLM
    # endpoint fails in seconds, and leaves no run that a corrected rerun would be refused by.
    preflight_annotator(config=config, needed=annotating_left(run=run))
    ingest_stage(run=run)
    with ray_session(address=config.address, workers=config.workers):
        configure_data_context()
        cluster = Cluster.detect(config)
        trainer = Trainer(fit_fn=fit_fn, use_gpu=cluster.use_gpu, test_ds=load_test_dataset(run=run),
                          storage=config.storage_path or str((out / "checkpoints").resolve()))
        warm_up_stage(run=run, trainer=trainer)
        state = initial_state(run=run)
        with annotator_for(run=run) as spec:
            for r in range(1, run.last_round + 1):
                score_stage(run=run, round_no=r, actors=cluster.actors)
                state = thresholds_stage(run=run, round_no=r, state=state)
                partition_annotate_stage(run=run, round_no=r, state=state, spec=spec, actors=cluster.actors)
                if r <= config.rounds:
                    train_stage(run=run, trainer=trainer, round_no=r)
        finalize_stage(run=run)
    metrics = write_metrics(run=run, wall=time.time() - t_start)
    report_stage(run=run)
    return metrics


def interruption_message(*, out: str | Path) -> str:
    """One line for a run in ``out`` stopped by Ctrl-C: what it kept, and that the same command
    resumes it."""
    stages = Manifest.load(Path(out)).data["stages"]
    if not stages:
        return f"interrupted: no stage had completed, so {out} keeps nothing to resume; the same command starts again"
    return (f"interrupted: {out} keeps {len(stages)} completed stage(s), the last {stages[-1]}; "
            "the same command resumes from there")
