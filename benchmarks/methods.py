"""The compared methods, all on the same encoder, data and training code path.

- ``clean``: fine-tuning on the true labels (upper bound).
- ``base``: plain fine-tuning on the noisy labels.
- ``cleanlab``: confident learning. K-fold out-of-sample predicted probabilities from the same
  model (each fold model trained ``cleanlab_cv_epochs`` epochs), ``cleanlab.filter.
  find_label_issues``, then fine-tuning on the kept samples only.
- ``noiseal-{none,knn,llm}``: ``noiseal_ray.pipeline.run_pipeline`` with that annotator.

The fine-tuning baselines call ``noiseal_ray.train.fit`` (Ray Train, DDP) with every row in R
(``part`` 0) and no annotator label (``llm_label`` -1), where NoiseAL's loss reduces to plain
cross-entropy. Their schedule mirrors NoiseAL's: one fit of ``warmup_epochs`` epochs, then
``rounds`` fits of one epoch, each continuing from the previous bundle (optimizer state
included) with seed ``seed + r``, and clean test accuracy after each fit -- so "best" and
"last" mean the same for every method and all train the same number of epochs.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.grid import NOISEAL_OPTIONS, RECONSTRUCTED, Cell
from noiseal_ray.pipeline import Progress


class RecordingProgress(Progress):
    """Progress that also records (label, seconds) of every stage."""

    def __init__(self, echo=None):
        super().__init__(enabled=True, echo=echo or (lambda s: print(f"    {s}", flush=True)))
        self.stages: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, label: str, *, rows: int | None = None):
        with super().stage(label, rows=rows) as info:
            yield info
        self.stages.append((label, float(info["seconds"])))


def _threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _spec(cell: Cell, init_dir: Path, epochs: int, seed: int, *, epoch_offset: int = 0,
          total_epochs: int | None = None):
    from noiseal_ray.config import RunConfig
    from noiseal_ray.train import TrainSpec

    d = RunConfig()  # the method defaults NoiseAL runs with
    return TrainSpec(init_dir=str(init_dir.resolve()), epochs=epochs, seed=seed, strong_lr=d.strong_lr,
                     weak_lr=d.weak_lr, batch_size=cell.training.batch_size, rce_a=d.rce_a,
                     embmix_alpha=d.embmix_alpha, sharpen_t=d.sharpen_t, loss_weights=tuple(d.loss_weights),
                     threads=_threads(cell.training.workers), lr_schedule=cell.training.lr_schedule,
                     epoch_offset=epoch_offset, total_epochs=total_epochs)


def _train_dataset(texts, labels):
    import pyarrow as pa
    import ray.data

    n = len(labels)
    t = pa.table({"text": pa.array(list(texts), pa.string()), "label": pa.array(np.asarray(labels, np.int64)),
                  "part": pa.array(np.zeros(n, np.int8)), "llm_label": pa.array(np.full(n, -1, np.int64))})
    step = max(1, -(-n // 8))  # several blocks, like the pipeline's base table
    return ray.data.from_arrow([t.slice(s, step) for s in range(0, n, step)])


def _init_bundle(cell: Cell, names: list[str], out: Path) -> Path:
    from noiseal_ray.config import RunConfig
    from noiseal_ray.models.bundle import new_bundle, save_bundle

    d = RunConfig()
    if not (out / "noiseal_model.json").is_file():
        save_bundle(new_bundle(strong_model=None, label_names=names, max_length=cell.training.max_length,
                               weak_embed_dim=d.weak_embed_dim, weak_hidden=d.weak_hidden, seed=cell.seed), out)
    return out


def _load(meta: dict):
    from noiseal_ray.data.io import load_corpus

    corpus = load_corpus(meta["train"], text_col=meta["text_col"], label_col=meta["label_col"],
                         clean_label_col=meta["clean_label_col"])
    test = load_corpus(meta["test"], text_col=meta["text_col"], label_col=meta["test_label_col"],
                       label_names=corpus.label_names, min_classes=1)
    return corpus, test


def finetune(cell: Cell, *, texts: Sequence[str], labels: np.ndarray, names: list[str], test: Any, work: Path,
             stages: dict[str, float]) -> list[float]:
    """The shared schedule: warm-up fit, then one-epoch fits; clean test accuracy after each."""
    import ray.data

    from noiseal_ray.train import fit

    tr = cell.training
    test_ds = ray.data.from_arrow(test.to_table().select(["text", "label"]))
    ds = _train_dataset(texts, labels)
    init = _init_bundle(cell, names, work / "init")
    schedule = ([tr.warmup_epochs] if tr.warmup_epochs else []) + [1] * tr.rounds
    accs = []
    t0 = time.time()
    for r, epochs in enumerate(schedule):
        out = work / (WARMUP_DIR if r == 0 else f"model{r}")
        # The learning-rate schedule NoiseAL runs with, over the same total number of epochs.
        m = fit(spec=_spec(cell, init, epochs, cell.seed + r, epoch_offset=sum(schedule[:r]),
                           total_epochs=sum(schedule)), dataset=ds, workers=tr.workers, use_gpu=False,
                name=f"{cell.key}-{work.name}-f{r}", storage_path=str((work / "checkpoints").resolve()),
                max_failures=2, out_dir=str(out), test_dataset=test_ds)
        accs.append(float(m["test_accuracy"]))
        print(f"    fit {r}: {epochs} epoch(s), loss {m.get('loss_strong', float('nan')):.3f}, "
              f"test accuracy {accs[-1]:.4f}", flush=True)
        init = out
    stages["train"] = stages.get("train", 0.0) + time.time() - t0
    return accs


def run_finetune(*, cell: Cell, meta: dict, work: Path, which: str) -> dict:
    """Fine-tune on every row, on the given (``base``) or the true (``clean``) labels."""
    import shutil

    for p in work.glob("*"):  # never resume a half-finished schedule (Ray Train would restore its fits)
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    corpus, test = _load(meta)
    stages: dict[str, float] = {}
    labels = corpus.clean if which == "clean" else corpus.labels
    accs = finetune(cell, texts=corpus.texts.to_pylist(), labels=labels, names=corpus.label_names, test=test,
                    work=work, stages=stages)
    return {"test_accuracy_rounds": accs, "stage_seconds": stages, "train_rows_used": len(labels)}


def run_cleanlab(*, cell: Cell, meta: dict, work: Path) -> dict:
    """Confident learning: out-of-fold probabilities, ``find_label_issues``, then fine-tuning on the kept rows."""
    import cleanlab
    from cleanlab.filter import find_label_issues

    from noiseal_ray.metrics import detection
    from noiseal_ray.score import Scorer
    from noiseal_ray.train import fit

    tr = cell.training
    corpus, test = _load(meta)
    texts = np.array(corpus.texts.to_pylist(), dtype=object)
    y = corpus.labels
    n, k = len(y), tr.cleanlab_folds
    cv_epochs = tr.cleanlab_cv_epochs or max(1, tr.warmup_epochs)
    stages: dict[str, float] = {}
    # Stratified seeded folds.
    rng = np.random.default_rng(cell.seed)
    fold = np.zeros(n, np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    probs = np.zeros((n, len(corpus.label_names)), np.float32)
    init = _init_bundle(cell, corpus.label_names, work / "init")
    reused = []
    for f in range(k):
        t0 = time.time()
        out = work / f"cv{f}"
        if (out / "noiseal_model.json").is_file():
            reused.append(f)  # finished fold model of an interrupted run of this same cell spec
        else:
            trn = fold != f
            fit(spec=_spec(cell, init, cv_epochs, cell.seed + 1000 + f, total_epochs=cv_epochs), dataset=_train_dataset(texts[trn], y[trn]),
                workers=tr.workers, use_gpu=False, name=f"{cell.key}-cv{f}",
                storage_path=str((work / "checkpoints").resolve()), max_failures=2, out_dir=str(out))
        stages["cv_train"] = stages.get("cv_train", 0.0) + time.time() - t0
        t0 = time.time()
        held = np.flatnonzero(fold == f)
        scorer = Scorer(model_dir=str(out), batch_size=32, threads=os.cpu_count(), with_embedding=False)
        res = scorer({"text": texts[held], "label": y[held]})
        probs[held] = res["probs"]
        stages["cv_score"] = stages.get("cv_score", 0.0) + time.time() - t0
    t0 = time.time()
    issues = find_label_issues(labels=y, pred_probs=probs)
    stages["find_label_issues"] = time.time() - t0
    keep = ~issues
    print(f"    cleanlab {cleanlab.__version__}: {int(issues.sum())} of {n} flagged; training on {int(keep.sum())}",
          flush=True)
    import shutil

    shutil.rmtree(work / "final", ignore_errors=True)  # never resume a half-finished final schedule
    accs = finetune(cell, texts=texts[keep].tolist(), labels=y[keep], names=corpus.label_names, test=test,
                    work=work / "final", stages=stages)
    rec = {"cv_folds_reused": reused, "test_accuracy_rounds": accs, "stage_seconds": stages, "train_rows_used": int(keep.sum()),
           "flagged": int(issues.sum())}
    if corpus.clean is not None:
        det = detection(flagged=issues, given=y, clean=corpus.clean)
        rec["detection"] = {k2: det[k2] for k2 in ("precision", "recall", "f1")}
        rec["cv_accuracy_vs_truth"] = float((probs.argmax(1) == corpus.clean).mean())
    return rec


WARMUP_DIR = "model0"  # the base schedule's first fit (``finetune``): the warm-up paired cells adopt


def warmup_source(*, cell: Cell, work: Path) -> tuple[Path, Path]:
    """The warm-up a paired cell adopts: the model folder of the same data and seed's ``base`` cell
    (work folder beside ``work``), and that cell's record (its round-0 test accuracy)."""
    from dataclasses import replace

    base = replace(cell, method="base")
    return (work.parent / f"{base.key}-{base.spec_hash()}" / WARMUP_DIR,
            work.parent.parent / "records" / f"{base.key}.json")


def run_noiseal(*, cell: Cell, meta: dict, work: Path, options: dict) -> dict:
    """``run_pipeline`` with the variant's ``options`` (``grid.NOISEAL_OPTIONS``: annotator, split,
    ...); a paired cell adopts the same seed's base warm-up."""
    import json

    from noiseal_ray.config import make_config
    from noiseal_ray.pipeline import run_pipeline

    tr = cell.training
    warm_acc: list[float] = []
    adopt = None
    if tr.paired:
        adopt, base_record = warmup_source(cell=cell, work=work)
        if not adopt.is_dir() or not base_record.is_file():
            raise FileNotFoundError(f"{cell.key} adopts the warm-up of the base cell in {adopt.parent}, which has "
                                    "not run: run it first (it comes before this one in the grid)")
        base_rec = json.loads(base_record.read_text())
        if base_rec.get("status") != "ok":
            raise RuntimeError(f"{cell.key} adopts the warm-up of {base_rec.get('key')}, whose last run failed "
                               f"({str(base_rec.get('error', 'no record of why')).splitlines()[0]}): rerun it first")
        warm_acc = base_rec["test_accuracy_rounds"][:1]
    cfg = make_config(overrides=dict(
        data=meta["train"], text_col=meta["text_col"], label_col=meta["label_col"],
        clean_label_col=meta["clean_label_col"], test_data=meta["test"], test_label_col=meta["test_label_col"],
        max_length=tr.max_length, workers=tr.workers, batch_size=tr.batch_size, seed=cell.seed,
        warmup_epochs=tr.warmup_epochs, rounds=tr.rounds, report=False, max_failures=2,
        lr_schedule=tr.lr_schedule, warmup_from=str(adopt) if adopt else None, **options))
    progress = RecordingProgress()
    m = run_pipeline(config=cfg, out=work / "run", progress=progress)
    rounds = m["rounds"]
    # A paired run trains no warm-up: its round-0 accuracy is the adopted fit's, measured by base.
    accs = warm_acc + [float(e["test_accuracy"]) for e in rounds if "test_accuracy" in e]
    final = m.get("final", {})
    rec = {"test_accuracy_rounds": accs, "stage_seconds": dict(m.get("stage_seconds", {})),
           "train_rows_used": m["rows"], "llm_queries": int(m.get("annotator_queries", 0)),
           "per_round": [{"round": e["round"], "sizes": e.get("sizes"), "detection": e.get("detection"),
                          "recovery": e.get("recovery"), "test_accuracy": e.get("test_accuracy"),
                          "thresholds": e.get("thresholds")} for e in rounds],
           "stages": progress.stages}
    if adopt is not None:
        rec["warmup_from"] = adopt.parent.name
    if "detection" in final:
        rec["detection"] = {k: final["detection"][k] for k in ("precision", "recall", "f1")}
        rec["p_precision"] = final["detection"].get("p_precision")
    if "recovery" in final:
        rec["recovery"] = {k: final["recovery"][k] for k in ("fixed", "broken", "final_accuracy",
                                                             "given_accuracy", "annotator_accuracy")}
    from benchmarks.anatomy import FROM_LABELS

    rec.update({k: f(work / "run" / "labels.parquet") for k, f in FROM_LABELS.items()})
    return rec


REFIT = "-refit"  # method suffix: plain fine-tuning on the final labels of the NoiseAL cell named before it


def refit_source(*, cell: Cell, work: Path) -> Path:
    """labels.parquet of the NoiseAL cell a ``*-refit`` cell retrains on: same data, seed and budget,
    method without the suffix, in the work folder beside ``work`` (the runner names work folders
    ``<key>-<spec hash>``)."""
    from dataclasses import replace

    src = replace(cell, method=cell.method[: -len(REFIT)])
    return work.parent / f"{src.key}-{src.spec_hash()}" / "run" / "labels.parquet"


def refit_labels(source: Path, *, ids: list[str], names: list[str]) -> np.ndarray:
    """The final labels of ``source`` (a run's labels.parquet) as ids into ``names``, in the order of
    ``ids`` (the training rows): (n,) int64. Raises ValueError unless it holds exactly these rows."""
    import pyarrow.parquet as pq

    t = pq.read_table(source, columns=["id", "final_label"]).to_pydict()
    final = dict(zip(t["id"], t["final_label"]))
    if len(t["id"]) != len(ids) or set(final) != set(ids):
        raise ValueError(f"{source} holds {len(t['id'])} rows, the training data {len(ids)}: not the same rows")
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({v for v in final.values() if v not in index})
    if unknown:
        raise ValueError(f"{source}: final labels {unknown[:5]} are not in the training label set")
    return np.array([index[final[i]] for i in ids], dtype=np.int64)


def run_refit(*, cell: Cell, meta: dict, work: Path) -> dict:
    """Fine-tune a fresh model, on the base schedule, on the final labels of the NoiseAL cell this one
    names (``refit_source``): whether NoiseAL's labels make a better classifier than the one NoiseAL
    trains through its per-subset losses. Costs the base schedule on top of the NoiseAL run."""
    import shutil

    source = refit_source(cell=cell, work=work)
    if not source.exists():
        raise FileNotFoundError(f"{cell.key} retrains on {source}, which does not exist: run the cell "
                                f"{cell.key[: -len(REFIT)]} first (it comes before this one in the grid)")
    for p in work.glob("*"):  # never resume a half-finished schedule, as run_finetune
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    corpus, test = _load(meta)
    labels = refit_labels(source, ids=corpus.ids.to_pylist(), names=corpus.label_names)
    stages: dict[str, float] = {}
    accs = finetune(cell, texts=corpus.texts.to_pylist(), labels=labels, names=corpus.label_names, test=test,
                    work=work, stages=stages)
    rec = {"test_accuracy_rounds": accs, "stage_seconds": stages, "train_rows_used": len(labels),
           "refit_from": source.parent.parent.name}
    if corpus.clean is not None:
        rec["refit_label_accuracy"] = float((labels == corpus.clean).mean())
    return rec


def run_method(*, cell: Cell, meta: dict, work: Path) -> dict:
    """Run ``cell``'s method on its prepared data (``meta``) in ``work``; the fields of its record."""
    work.mkdir(parents=True, exist_ok=True)
    if cell.method in ("base", "clean"):
        return run_finetune(cell=cell, meta=meta, work=work, which=cell.method)
    if cell.method.endswith(REFIT):
        return run_refit(cell=cell, meta=meta, work=work)
    if cell.method == "cleanlab":
        return run_cleanlab(cell=cell, meta=meta, work=work)
    if cell.method in NOISEAL_OPTIONS:
        options = {**RECONSTRUCTED, **NOISEAL_OPTIONS[cell.method]}
        return run_noiseal(cell=cell, meta=meta, work=work, options=options)
    raise ValueError(f"unknown method {cell.method!r}")
