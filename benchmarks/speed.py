"""Speed benchmarks (records in ``<out>/speed/<name>.json``, rendered by report.py).

1. scoring: the pipeline's Ray Data scoring stage (``noiseal_ray.pipeline.score``) vs a plain
   in-process PyTorch loop (``noiseal_ray.score.Scorer`` called on chunks of the same size)
   over the same model (fresh all-MiniLM-L6-v2 bundle) and texts.
2. relabeling batched vs sequential: not here, see ``benchmarks/llm_relabel.py``.
3. round_scaling: wall time of one NoiseAL round (score, thresholds, partition + kNN annotate,
   one training epoch) at growing corpus sizes, with a *tiny randomly initialised* BERT-style
   encoder (2 layers, hidden 128, MiniLM's tokenizer) so that 16k rows stay feasible on CPU.
   Corpora are TREC training questions drawn with replacement, 30% symmetric noise.
4. ddp: one training epoch of the real MiniLM strong model (+ BiLSTM) with 1 worker (all
   threads) vs 2 DDP workers (half the threads each) through ``noiseal_ray.train.fit``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.grid import DATASETS, SEMANTICS, SpeedSpec
from benchmarks.records import read_record
from noiseal_ray.rundir import atomic_write_text


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _training_spec(spec: SpeedSpec) -> dict:
    """What a bench that trains depends on: its settings and what they mean (grid.SEMANTICS)."""
    return {**asdict(spec), "semantics": SEMANTICS}


TRAINS = {"round_scaling", "ddp"}  # the benches whose figures depend on the training semantics


def _trec_rows(data_root: Path, n: int, seed: int, *, replace: bool):
    from noiseal_ray.data.io import read_table

    t = read_table(str(data_root / DATASETS["trec"].train))
    rng = np.random.default_rng(seed)
    idx = rng.choice(t.num_rows, size=n, replace=replace or n > t.num_rows)
    texts = t.column("text").to_pylist()
    labels = t.column("label").to_pylist()
    return [texts[i] for i in idx], [str(labels[i]) for i in idx]


def _bundle(out: Path, *, strong_model: str | None, names, max_length: int) -> Path:
    from noiseal_ray.models.bundle import new_bundle, save_bundle

    if not (out / "noiseal_model.json").is_file():
        save_bundle(new_bundle(strong_model=strong_model, label_names=names, max_length=max_length,
                               weak_embed_dim=128, weak_hidden=128, seed=0), out)
    return out


def _write_parts(table, d: Path, parts: int = 8) -> Path:
    import pyarrow.parquet as pq

    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    n = table.num_rows
    step = max(1, -(-n // parts))
    for i, s in enumerate(range(0, n, step)):
        pq.write_table(table.slice(s, step), d / f"part-{i:05d}.parquet")
    return d


def bench_scoring(*, spec: SpeedSpec, work: Path, data_root: Path) -> dict:
    """Scoring throughput: the Ray Data scoring stage against a plain loop over the same rows."""
    import pyarrow as pa

    from noiseal_ray.config import RunConfig
    from noiseal_ray.data.io import make_label_names
    from noiseal_ray.pipeline import score
    from noiseal_ray.score import Scorer

    texts, labels = _trec_rows(data_root, spec.score_rows, 0, replace=False)
    names = make_label_names(labels)
    y = np.array([names.index(v) for v in labels], np.int64)
    model = _bundle(work / "minilm", strong_model=None, names=names, max_length=spec.max_length)
    table = _write_parts(pa.table({"text": texts, "label": y}), work / "table")
    cfg = RunConfig()
    actors = 2
    t0 = time.time()
    score(table_dir=table, model_dir=model, out_dir=work / "scored", config=cfg, actors=actors)
    ray_s = time.time() - t0
    t0 = time.time()
    scorer = Scorer(model_dir=str(model), batch_size=32, threads=os.cpu_count())
    load_s = time.time() - t0
    t0 = time.time()
    for s in range(0, len(texts), cfg.score_batch_size):
        scorer({"text": np.array(texts[s:s + cfg.score_batch_size], dtype=object), "label": y[s:s + cfg.score_batch_size]})
    plain_s = time.time() - t0
    n = len(texts)
    return {"what": (f"fresh all-MiniLM-L6-v2 bundle (+ BiLSTM), {n} TREC questions, max_length {spec.max_length}, "
                     f"batches of {cfg.score_batch_size} rows, length-sorted sub-batches of 32 in both paths. "
                     f"Ray Data: `noiseal_ray.pipeline.score` with {actors} actors ({max(1, (os.cpu_count() or 1) // actors)} "
                     f"thread(s) each), read parquet -> map_batches(Scorer) -> write parquet, wall time including actor "
                     f"start-up and model loading. Plain: `Scorer` called in a loop in one process with "
                     f"{os.cpu_count()} threads, model already loaded (loading took {load_s:.1f} s), no I/O."),
            "measurements": [{"label": "Ray Data stage", "rows": n, "seconds": ray_s},
                             {"label": "plain PyTorch loop", "rows": n, "seconds": plain_s}],
            "ratio": (n / ray_s) / (n / plain_s), "plain_load_seconds": load_s}


def _tiny_encoder(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from noiseal_ray.models.strong import default_encoder_path

    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=512)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def bench_round_scaling(*, spec: SpeedSpec, work: Path, data_root: Path) -> dict:
    """Wall time of one NoiseAL round (tiny encoder) at each of ``spec.round_rows`` rows."""
    enc = _tiny_encoder(work / "tiny-encoder")
    meas = []
    failed = []
    done_dir = work.parent.parent / "speed" / "parts"  # finished sizes survive a failure of a later one
    done_dir.mkdir(parents=True, exist_ok=True)
    for n in spec.round_rows:
        part = done_dir / f"round_scaling-{_hash(_training_spec(spec))}-{n}.json"
        if part.is_file() and (done := read_record(part)):
            meas.append(done)
            print(f"    round at {n} rows: reused {part.name}", flush=True)
            continue
        try:
            meas.append(_one_round(n, enc=enc, spec=spec, work=work, data_root=data_root))
        except Exception as exc:  # e.g. a worker killed by Ray's memory monitor on a crowded machine
            traceback.print_exc()
            failed.append({"rows": n, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        atomic_write_text(part, json.dumps(meas[-1]))
        print(f"    round at {n} rows: {meas[-1]}", flush=True)
    if not meas:
        raise RuntimeError(f"every size failed: {failed}")
    return {"what": ("tiny randomly initialised encoder (2 layers, hidden 128, MiniLM tokenizer) + BiLSTM, "
                     f"max_length {spec.max_length}, 2 workers / 2 scoring actors, kNN annotator, 0 warm-up epochs; "
                     "round 1 of a 1-round run: score both models, EMA thresholds, partition + kNN relabeling of P, "
                     "one training epoch; TREC questions drawn with replacement, 30% symmetric noise. Each stage's "
                     "wall time includes Ray's fixed per-stage overhead."),
            "measurements": meas, "failed_sizes": failed}


def _one_round(n: int, *, enc, spec: SpeedSpec, work: Path, data_root: Path) -> dict:
    import pyarrow as pa

    from benchmarks.methods import RecordingProgress
    from noiseal_ray.config import make_config
    from noiseal_ray.corrupt import corrupt_file
    from noiseal_ray.pipeline import run_pipeline

    texts, labels = _trec_rows(data_root, n, n, replace=True)
    d = work / f"rows{n}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    from noiseal_ray.data.io import write_table

    write_table(pa.table({"text": texts, "label": labels}), d / "clean.parquet")
    corrupt_file(data=str(d / "clean.parquet"), out=str(d / "train.parquet"), kind="sym", rate=0.3, seed=0)
    cfg = make_config(overrides=dict(data=str(d / "train.parquet"), label_col="noisy_label",
                                     clean_label_col="label", strong_model=str(enc), max_length=spec.max_length,
                                     workers=2, warmup_epochs=0, rounds=1, annotator="knn", report=False,
                                     max_failures=2))
    progress = RecordingProgress()
    run_pipeline(config=cfg, out=d / "run", progress=progress)
    st = {"score": 0.0, "thresholds": 0.0, "annotate": 0.0, "train": 0.0}
    for label, sec in progress.stages:
        if not label.startswith("[round 1/1]"):
            continue
        key = ("score" if " score " in label else "thresholds" if "thresholds" in label
               else "annotate" if "annotate" in label else "train" if " train " in label else None)
        if key:
            st[key] += sec
    return {"rows": n, **st, "total": sum(st.values())}


def bench_ddp(*, spec: SpeedSpec, work: Path, data_root: Path) -> dict:
    """One training epoch with 1 and with 2 DDP workers."""
    from benchmarks.methods import _train_dataset
    from noiseal_ray.config import RunConfig
    from noiseal_ray.data.io import make_label_names
    from noiseal_ray.train import TrainSpec, fit

    texts, labels = _trec_rows(data_root, spec.ddp_rows, 1, replace=False)
    names = make_label_names(labels)
    y = np.array([names.index(v) for v in labels], np.int64)
    init = _bundle(work / "minilm", strong_model=None, names=names, max_length=spec.max_length)
    d = RunConfig()
    meas = []
    done_dir = work.parent.parent / "speed" / "parts"
    done_dir.mkdir(parents=True, exist_ok=True)
    for workers in (1, 2):
        part = done_dir / f"ddp-{_hash(_training_spec(spec))}-w{workers}.json"
        if part.is_file() and (done := read_record(part)):
            meas.append(done)
            continue
        threads = max(1, (os.cpu_count() or 1) // workers)
        ts = TrainSpec(init_dir=str(init.resolve()), epochs=1, seed=0, strong_lr=d.strong_lr, weak_lr=d.weak_lr,
                       batch_size=d.batch_size, rce_a=d.rce_a, embmix_alpha=d.embmix_alpha, sharpen_t=d.sharpen_t,
                       loss_weights=tuple(d.loss_weights), threads=threads)
        t0 = time.time()
        m = fit(spec=ts, dataset=_train_dataset(texts, y), workers=workers, use_gpu=False, name=f"ddp-w{workers}",
                storage_path=str((work / "checkpoints").resolve()), max_failures=2, out_dir=str(work / f"model-w{workers}"))
        meas.append({"workers": workers, "threads": threads, "rows": len(y), "fit_seconds": time.time() - t0,
                     "epoch_seconds": float(m["seconds"]), "steps_rank0": int(m["steps"])})
        atomic_write_text(part, json.dumps(meas[-1]))
        print(f"    ddp {meas[-1]}", flush=True)
    return {"what": (f"all-MiniLM-L6-v2 + BiLSTM, {len(y)} TREC questions, max_length {spec.max_length}, batch "
                     f"{d.batch_size} rows per step over all workers (so each of 2 workers takes half), "
                     "`noiseal_ray.train.fit` (Ray Train, gloo); epoch time as measured by rank 0 inside the loop."),
            "measurements": meas,
            "speedup": meas[0]["epoch_seconds"] / meas[1]["epoch_seconds"]}


BENCHES = {"scoring": bench_scoring, "round_scaling": bench_round_scaling, "ddp": bench_ddp}


def included(*, spec: SpeedSpec, name: str) -> bool:
    """Whether the grid measures ``name``: an empty ``round_rows`` or a zero ``ddp_rows`` leaves it out."""
    return {"round_scaling": bool(spec.round_rows), "ddp": spec.ddp_rows > 0}.get(name, True)


def run_all(spec: SpeedSpec, *, out: Path, data_root: Path, fresh: bool, names: set[str] | None = None) -> list[dict]:
    """Run the measurements ``spec`` includes (or those in ``names``), reusing records of the same
    specification; one failed measurement is recorded and does not stop the others."""
    rec_dir = out / "speed"
    rec_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name, fn in BENCHES.items():
        if names and name not in names:
            continue
        if not included(spec=spec, name=name):
            print(f"speed {name}: not in this grid", flush=True)
            continue
        path = rec_dir / f"{name}.json"
        h = _hash({"name": name, "spec": asdict(spec), **({"semantics": SEMANTICS} if name in TRAINS else {})})
        if path.is_file() and not fresh:
            rec = read_record(path)
            if rec.get("spec_hash") == h and rec.get("status") == "ok" and not rec.get("failed_sizes"):
                print(f"speed {name}: cached record", flush=True)
                records.append(rec)
                continue
        print(f"speed {name} ...", flush=True)
        work = out / "work" / f"speed-{name}-{os.getpid()}"  # parallel processes never share one
        t0 = time.time()
        rec = {"kind": "speed", "name": name, "spec": asdict(spec), "spec_hash": h}
        try:
            rec.update(fn(spec=spec, work=work, data_root=data_root))
            rec["status"] = "ok"
        except Exception as exc:
            traceback.print_exc()
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        rec["wall_seconds"] = time.time() - t0
        rec["load_avg_after"] = os.getloadavg()[0]
        atomic_write_text(path, json.dumps(rec, indent=2, default=float))
        print(f"speed {name}: {rec['status']} in {rec['wall_seconds']:.0f}s", flush=True)
        records.append(rec)
    return records
