"""Train: the warm-up (new models, an adopted fit, or a plain copy) and each round's Ray Train
fit of both models on the round table.

Ray and torch (via the model bundle) are imported inside the functions: importing them takes
seconds, and ``--dry-run`` and the unit tests that import the stages do not need them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from noiseal_ray.config import RunConfig
from noiseal_ray.data.io import load_corpus
from noiseal_ray.errors import ConfigError
from noiseal_ray.rundir import INIT, TRAIN, copy_dir, replace_dir, round_stage, train_key
from noiseal_ray.stages.context import RunContext
from noiseal_ray.stages.tables import read_dir
from noiseal_ray.train import TrainSpec, run_epoch_offset

TRAIN_COLUMNS = ["text", "label", "part", "llm_label"]


@dataclass(frozen=True)
class Trainer:
    """How this run fits: ``fit_fn`` (``noiseal_ray.train.fit`` or a test's stand-in), on GPUs or
    not, evaluated on ``test_ds`` (a Ray Dataset of text, label; None: no test set), with Ray
    Train's checkpoints under ``storage``."""

    fit_fn: Callable[..., dict]
    use_gpu: bool
    test_ds: object | None
    storage: str


def load_test_dataset(*, run: RunContext):
    """``config.test_data`` as a Ray Dataset (text, label in the corpus' label order), or None."""
    config = run.config
    if not config.test_data:
        return None
    import ray.data  # deferred: heavy (module docstring)

    tc = load_corpus(config.test_data, text_col=config.text_col,
                     label_col=config.test_label_column(),
                     label_names=run.manifest.label_names, min_classes=1)
    return ray.data.from_arrow(tc.to_table().select(["text", "label"]))


def train_spec(*, config: RunConfig, init_dir: Path, epochs: int, round_no: int) -> TrainSpec:
    """The ``TrainSpec`` of round ``round_no``'s fit: ``epochs`` epochs from ``init_dir``, its
    place in the run's learning-rate schedule, seed config.seed + round_no."""
    total_epochs = config.warmup_epochs + config.rounds * config.epochs_per_round
    offset = run_epoch_offset(round_no=round_no, warmup_epochs=config.warmup_epochs,
                              epochs_per_round=config.epochs_per_round)
    return TrainSpec(init_dir=str(init_dir.resolve()), epochs=epochs, seed=config.seed + round_no,
                     lr_schedule=config.lr_schedule, epoch_offset=offset, total_epochs=total_epochs,
                     strong_lr=config.strong_lr, weak_lr=config.weak_lr, batch_size=config.batch_size,
                     rce_a=config.rce_a, embmix_alpha=config.embmix_alpha, sharpen_t=config.sharpen_t,
                     loss_weights=tuple(config.loss_weights), loss_norm=config.loss_norm,
                     hard_loss=config.hard_loss,
                     threads=max(1, (os.cpu_count() or 1) // config.workers))


def _fit_summary(round_no: int, m: dict) -> dict:
    """The manifest entry of a fit: its losses, steps and epoch, and test accuracy when measured."""
    entry = {"round": round_no, "train": {k: v for k, v in m.items() if k.startswith("loss") or k in ("steps", "epoch")}}
    if "test_accuracy" in m:
        entry["test_accuracy"] = m["test_accuracy"]
    if "test_confusion" in m:  # the change gate's evidence (finalize.precise_moves)
        entry["test_confusion"] = m["test_confusion"]
    return entry


def fit_round(*, run: RunContext, trainer: Trainer, round_no: int, table_dir: Path, init_dir: Path,
              epochs: int) -> None:
    """Fit both models from ``init_dir`` on ``table_dir`` into ``rounds/r{n}/model``; record it."""
    config = run.config
    gpu = " (GPU)" if trainer.use_gpu else ""
    with run.progress.stage(f"[round {round_no}/{config.rounds}] train {epochs} epoch(s) on {config.workers} "
                            f"worker(s){gpu}", rows=run.manifest.n_rows * epochs) as st:
        m = trainer.fit_fn(spec=train_spec(config=config, init_dir=init_dir, epochs=epochs, round_no=round_no),
                           dataset=read_dir(path=table_dir, columns=TRAIN_COLUMNS), workers=config.workers,
                           use_gpu=trainer.use_gpu, name=f"{run.out.name}-r{round_no}", storage_path=trainer.storage,
                           max_failures=config.max_failures, out_dir=str(run.round_dir(round_no) / "model"),
                           test_dataset=trainer.test_ds, placement_strategy=config.train_placement)
        st["note"] = f"loss strong {m.get('loss_strong', float('nan')):.3f}" + (
            f", test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else "")
    run.manifest.add_seconds("train", st["seconds"])
    run.manifest.mark_round(round_stage(round_no=round_no, step=TRAIN), key=train_key(round_no=round_no),
                            entry=_fit_summary(round_no, m))


def adopt_warmup(*, src: Path, label_names: list[str], dest: Path) -> None:
    """Copy the model folder ``src`` (strong + weak model, optimizer state) to ``dest`` as this
    run's warm-up fit. ConfigError when it is not a bundle with both models and the same labels."""
    from noiseal_ray.models.bundle import META  # deferred: the bundle module imports torch

    meta_path = src / META
    if not meta_path.is_file():
        raise ConfigError(f"warmup_from: {src} is not a noiseal-ray model folder (no {META})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if list(meta["label_names"]) != list(label_names):
        raise ConfigError(f"warmup_from: {src} was trained on the labels {meta['label_names']}, "
                          f"not this corpus' {label_names}")
    if not (src / "weak.safetensors").is_file():
        raise ConfigError(f"warmup_from: {src} holds no weak model (a run's model/ keeps only the strong one; "
                          "use its rounds/r0/model)")
    # The copy is made beside dest, never beside src: src may belong to another run. A killed
    # copy is swept as debris (".*.tmp") by the next run.
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp)
    replace_dir(tmp, dest)


def _new_models(*, run: RunContext, init_dir: Path) -> None:
    """Save freshly initialised strong and weak models (seeded) to ``init_dir``."""
    from noiseal_ray.models.bundle import new_bundle, save_bundle  # deferred: imports torch

    config = run.config
    with run.progress.stage("load models"):
        save_bundle(new_bundle(strong_model=config.strong_model, label_names=run.manifest.label_names,
                               max_length=config.max_length, weak_embed_dim=config.weak_embed_dim,
                               weak_hidden=config.weak_hidden, seed=config.seed), init_dir)


def _adopted_entry(*, run: RunContext, model_dir: Path) -> dict:
    """The manifest entry of an adopted warm-up: its test confusion matrix where the change gate
    needs it (the fit that made the model measured it in another run), else nothing."""
    config = run.config
    entry: dict = {"round": 0, "adopted": str(config.warmup_from)}
    if config.min_test_precision() > 0 and config.test_data:
        from noiseal_ray.predict import test_confusion  # deferred: imports Ray Data

        with run.progress.stage("warm-up: measure the adopted model on the test data"):
            c = test_confusion(model_dir=str(model_dir), data=config.test_data, text_col=config.text_col,
                               label_col=config.test_label_column())
        entry["test_confusion"] = c.tolist()  # no test_accuracy: metrics.json's rounds report this run's fits
    return entry


def warm_up_stage(*, run: RunContext, trainer: Trainer) -> None:
    """Round 0: ``rounds/r0/model`` from ``config.warmup_from``, or from new models trained
    ``config.warmup_epochs`` epochs on the base table (copied untrained when that is 0)."""
    config, manifest = run.config, run.manifest
    init_dir, model_dir, r0_train = run.round_dir(0) / "init", run.round_dir(0) / "model", round_stage(round_no=0, step=TRAIN)
    if config.warmup_from and not manifest.done(r0_train):
        with run.progress.stage(f"warm-up: adopt {config.warmup_from}"):
            adopt_warmup(src=Path(config.warmup_from), label_names=manifest.label_names, dest=model_dir)
        manifest.mark(INIT)
        manifest.mark_round(r0_train, key=train_key(round_no=0), entry=_adopted_entry(run=run, model_dir=model_dir))
    if not manifest.done(INIT):
        _new_models(run=run, init_dir=init_dir)
        manifest.mark(INIT)
    if manifest.done(r0_train):
        return
    if config.warmup_epochs > 0:
        fit_round(run=run, trainer=trainer, round_no=0, table_dir=run.base_table, init_dir=init_dir, epochs=config.warmup_epochs)
    else:
        replace_dir(copy_dir(src=init_dir), model_dir)
        manifest.mark(r0_train)


def train_stage(*, run: RunContext, trainer: Trainer, round_no: int) -> None:
    """Fit round ``round_no`` (1..config.rounds) on its table from the previous round's models,
    unless done; then drop its scored table (embeddings), needed only within the round, and the
    previous round's models, which only this fit started from. The warm-up's (rounds/r0/model) stay:
    ``--warmup-from`` adopts them; so do the last round's, which finalize reads."""
    if not run.manifest.done(round_stage(round_no=round_no, step=TRAIN)):
        fit_round(run=run, trainer=trainer, round_no=round_no, table_dir=run.round_dir(round_no) / "table",
                  init_dir=run.round_dir(round_no - 1) / "model", epochs=run.config.epochs_per_round)
        shutil.rmtree(run.round_dir(round_no) / "scored", ignore_errors=True)
    if round_no > 1:
        # Weights and optimizer state (~300 MB a round for MiniLM, GBs for larger encoders) that
        # nothing reads once this round is fitted. Also on a resumed run: a kill may fall between.
        shutil.rmtree(run.round_dir(round_no - 1) / "model", ignore_errors=True)
