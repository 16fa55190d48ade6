"""The NoiseAL round loop on Ray: ingest, warm-up, then per round score -> partition ->
annotate -> train, and finalize. Resumable: every stage writes its output atomically and then
records itself in ``manifest.json``; a rerun on the same ``--out`` skips completed stages.

Run directory::

    config.yaml  manifest.json  metrics.json  labels.parquet/  model/  report.html
    rounds/r0/{table,init,model}/      base table, initial and warmed-up bundles
    rounds/r{n}/{scored,table,model}/  scores, partition + annotator labels, trained bundle
    checkpoints/                       Ray Train storage (deleted when the run completes, unless
                                       config.storage_path names another place)
    llm_cache/                         LLM answers (annotator "llm")
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from noiseal_ray.config import RunConfig, save_config
from noiseal_ray.data.io import (atomic_write_text, check_run_dir_path, check_writable, hold_run_dir, parquet_rows, replace_dir,
                                 sweep_debris)
from noiseal_ray.errors import OutputError
from noiseal_ray.partition import CODES, ThresholdState

log = logging.getLogger("noiseal_ray")

# Options that do not change results: a rerun may change them and still resume.
RESUME_FREE = {"address", "report", "score_actors", "score_batch_size", "llm_concurrency", "llm_timeout_s",
               "llm_retries", "llm_endpoint", "llm_api_key_env", "llm_min_replicas", "llm_max_replicas",
               "llm_target_ongoing_requests", "max_failures", "storage_path", "annotator_fallback",
               "train_placement"}

TABLE_DROP = ("probs", "embedding")


def sample_data_path() -> str:
    """The corpus shipped with the package (800 TREC questions, 30% symmetric noise)."""
    return str(Path(__file__).parent / "sample_data" / "trec_800_sym30.csv")


def apply_sample_defaults(config: RunConfig) -> RunConfig:
    """With no --data, run on the shipped sample and evaluate against its clean labels."""
    if config.data is None:
        config.data = sample_data_path()
        config.label_col = "noisy_label"
        config.clean_label_col = config.clean_label_col or "label"
        config.text_col = "text"
        config.id_col = config.id_col or "id"
        if config.test_data is None:
            config.test_data = str(Path(__file__).parent / "sample_data" / "trec_test_200.csv")
    return config


# ---------------------------------------------------------------------------------------------
# progress and manifest
# ---------------------------------------------------------------------------------------------

class Progress:
    """One clear line per stage with counts, rate and time; quiet otherwise."""

    def __init__(self, enabled: bool = True, echo: Callable[[str], None] | None = None):
        self.enabled = enabled
        self.echo = echo or (lambda s: print(s, flush=True))

    @contextmanager
    def stage(self, label: str, *, rows: int | None = None) -> Iterator[dict]:
        info: dict = {}
        t0 = time.time()
        if self.enabled:
            self.echo(f"  {label} ...")
        yield info
        dt = time.time() - t0
        info["seconds"] = dt
        if self.enabled:
            n = info.get("rows", rows)
            rate = f", {n / dt:,.0f} rows/s" if n and dt > 0 else ""
            extra = f" ({info['note']})" if info.get("note") else ""
            self.echo(f"  {label} done in {dt:.1f}s{rate}{extra}")

    def note(self, text: str) -> None:
        if self.enabled:
            self.echo(f"  {text}")


@dataclass
class Manifest:
    path: Path
    data: dict = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> "Manifest":
        p = out / "manifest.json"
        data = json.loads(p.read_text()) if p.is_file() else {"stages": [], "rounds": {}}
        return cls(p, data)

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def mark(self, stage: str, **updates) -> None:
        self.data.update(updates)
        if stage not in self.data["stages"]:
            self.data["stages"].append(stage)
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# ---------------------------------------------------------------------------------------------
# Ray helpers
# ---------------------------------------------------------------------------------------------

@contextmanager
def ray_session(*, address: str | None, workers: int) -> Iterator[None]:
    """Join ``address`` or start a local Ray sized to this machine; shut down only what we started."""
    import ray

    if ray.is_initialized():
        yield
        return
    verbose = bool(os.environ.get("NOISEAL_VERBOSE"))
    # Quiet by default: worker logs (per-step Train reports) stay in Ray's log files; failures
    # still reach the driver as exceptions. NOISEAL_VERBOSE=1 streams them.
    kwargs: dict = {"include_dashboard": False, "log_to_driver": verbose,
                    "logging_level": logging.INFO if verbose else logging.WARNING}
    for name in ("ray", "ray.data", "ray.train", "httpx"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Logical CPUs above the core count: train workers take one each and Ray Data's read
        # tasks must still get a slot, or the pipeline waits forever on 2 cores.
        # address="local": always a new cluster of our own, never a stray one on this host.
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers) + 2, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def configure_data_context() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # deterministic shards: resumed == uninterrupted
    ctx.print_on_execution_start = False


def _write(ds, final: Path) -> None:
    # Not ds.write_parquet: it can reorder the rows within a file (see data/sink.py).
    from noiseal_ray.data.sink import write_parquet_dir

    write_parquet_dir(ds, final)


def _fit_actors(actors: int, table_dir: Path, *, batch_rows: int) -> int:
    """No more actors than batches to process: an idle actor still costs a process and a model load."""
    return max(1, min(actors, -(-parquet_rows(table_dir) // max(batch_rows, 1))))


# Upper bound on rows per block when a table is split for an actor pool: enough blocks to keep
# every actor busy and to stream a large table through bounded memory.
MAX_BLOCK_ROWS = 8192


def _read(path: Path, columns: list[str] | None = None, *, min_blocks: int | None = None):
    """Read a table folder. ``min_blocks``: cut it into at least that many blocks (streaming
    repartition, order kept), so that an actor pool of that size has work from the start: Ray
    Data reads a small table of several files as one block, which leaves all actors but one idle."""
    import ray.data

    ds = ray.data.read_parquet(str(path))
    if columns:
        ds = ds.select_columns(columns)
    if min_blocks:
        per_block = max(1, min(MAX_BLOCK_ROWS, -(-parquet_rows(path) // (2 * min_blocks))))
        ds = ds.repartition(target_num_rows_per_block=per_block)
    return ds


def _cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


# ---------------------------------------------------------------------------------------------
# stages (each a function of its inputs; the loop below wires them)
# ---------------------------------------------------------------------------------------------

def ingest(*, config: RunConfig, table_dir: Path) -> dict:
    """Read and validate the corpus on the driver, write the base round table; return its facts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from noiseal_ray.data.io import load_corpus

    corpus = load_corpus(config.data, text_col=config.text_col, label_col=config.label_col,
                         id_col=config.id_col, clean_label_col=config.clean_label_col)
    t = corpus.to_table()
    n = t.num_rows
    t = t.append_column("part", pa.array(np.zeros(n, np.int8)))
    t = t.append_column("llm_label", pa.array(np.full(n, -1, np.int64)))
    t = t.append_column("llm_logprob", pa.array(np.full(n, np.nan)))
    t = t.append_column("llm_error", pa.array([""] * n, pa.string()))
    t = t.append_column("llm_round", pa.array(np.full(n, -1, np.int64)))
    t = t.append_column("llm_cached", pa.array(np.zeros(n, bool)))
    tmp = table_dir.parent / f".{table_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Several files so Ray Data can read the base table in parallel.
    step = max(1, -(-n // 8))
    for i, s in enumerate(range(0, n, step)):
        pq.write_table(t.slice(s, step), tmp / f"part-{i:05d}.parquet")
    replace_dir(tmp, table_dir)
    classes = np.bincount(corpus.labels, minlength=len(corpus.label_names))
    return {"label_names": corpus.label_names, "n_rows": n, "has_clean": corpus.clean is not None,
            "class_counts": classes.tolist()}


def score(*, table_dir: Path, model_dir: Path, out_dir: Path, config: RunConfig, actors: int) -> None:
    from ray.data import ActorPoolStrategy

    from noiseal_ray.score import Scorer

    actors = _fit_actors(actors, table_dir, batch_rows=config.score_batch_size)
    ds = _read(table_dir, min_blocks=actors)
    threads = max(1, (os.cpu_count() or 1) // actors)
    ds = ds.map_batches(
        Scorer, fn_constructor_kwargs={"model_dir": str(model_dir), "batch_size": 32, "threads": threads},
        batch_size=config.score_batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors), num_cpus=1)
    _write(ds, out_dir)


def thresholds(*, scored_dir: Path, state: ThresholdState, num_classes: int) -> ThresholdState:
    from noiseal_ray.score import class_means

    ms, mw, _ = class_means(_read(scored_dir, ["label", "p_strong", "p_weak"]), num_classes=num_classes,
                            per_class=state.per_class)
    state.update(mean_strong=ms, mean_weak=mw)
    return state


def _assign(batch: dict, *, tau_s: np.ndarray, tau_w: np.ndarray) -> dict:
    from noiseal_ray.partition import partition

    batch["part"] = partition(p_strong=batch["p_strong"], p_weak=batch["p_weak"],
                              labels=batch["label"].astype(np.int64), tau_strong=tau_s, tau_weak=tau_w)
    return batch


@dataclass(frozen=True)
class PoolHandle:
    """A demonstration pool (``DemoPool``) in Ray's object store; the driver holds only this."""

    ref: object  # ObjectRef[DemoPool]
    size: int

    def __len__(self) -> int:
        return self.size


def demo_pool(*, scored_dir: Path, state: ThresholdState, num_classes: int, per_class: int,
              seed: int) -> PoolHandle:
    """A seeded uniform sample of R, at most ``per_class`` rows per class, for retrieval.

    Built by one Ray task (see ``build_demo_pool``) straight into the object store, where the
    annotate actors fetch it: the driver's memory does not depend on the corpus or on the pool.
    """
    import ray

    build = ray.remote(num_cpus=0, num_returns=2)(_build_demo_pool_task)
    ref, size = build.remote(scored_dir=scored_dir, state=state, num_classes=num_classes,
                             per_class=per_class, seed=seed)
    return PoolHandle(ref=ref, size=int(ray.get(size)))


def _build_demo_pool_task(**kw):
    configure_data_context()  # a fresh worker: no progress bars, ordered execution
    pool = build_demo_pool(**kw)
    return pool, len(pool)


def build_demo_pool(*, scored_dir: Path, state: ThresholdState, num_classes: int, per_class: int, seed: int):
    """The ``DemoPool`` of ``demo_pool``, built in the calling process.

    One pass: each batch keeps, per class, its ``per_class`` R rows with the smallest seeded
    hash; the caller merges those bounded partial samples into the global bottom-k (the same
    rows whatever the batching, so the sample is deterministic). Memory: at most about
    5 * per_class * num_classes rows at a time, whatever the corpus size.
    """
    from noiseal_ray.annotate.demos import DemoPool

    tau = {"tau_s": state.strong, "tau_w": state.weak}

    def bottom_k(batch: dict) -> dict:
        batch = _assign(batch, **tau)
        u = np.array([hash_text(f"{seed}:{t}") for t in batch["text"]], dtype=np.uint64)
        y = batch["label"].astype(np.int64)
        keep = []
        for c in np.unique(y[batch["part"] == CODES["R"]]):
            rows = np.flatnonzero((batch["part"] == CODES["R"]) & (y == c))
            keep.append(rows[np.argsort(u[rows], kind="stable")[:per_class]])
        k = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        return {"text": batch["text"][k], "label": y[k], "embedding": batch["embedding"][k], "u": u[k]}

    parts = _read(scored_dir, ["text", "label", "p_strong", "p_weak", "embedding"]).map_batches(
        bottom_k, batch_format="numpy", batch_size=4096)
    texts, labels, embs, us = [], [], [], []
    for b in parts.iter_batches(batch_size=None, batch_format="numpy"):
        texts.append(b["text"])
        labels.append(b["label"])
        embs.append(b["embedding"])
        us.append(b["u"])
        if sum(len(x) for x in labels) > 4 * per_class * num_classes:
            texts, labels, embs, us = _bottom_k_merge(texts, labels, embs, us, per_class)
    texts, labels, embs, us = _bottom_k_merge(texts, labels, embs, us, per_class)
    if not len(labels[0]):
        return DemoPool(texts=np.zeros(0, object), labels=np.zeros(0, np.int64), embeddings=np.zeros((0, 1), np.float32))
    return DemoPool(texts=texts[0].astype(object), labels=labels[0], embeddings=embs[0].astype(np.float32))


def _bottom_k_merge(texts, labels, embs, us, per_class):
    """Concatenate partial samples and keep the ``per_class`` smallest hashes of each class."""
    t, y, e, u = (np.concatenate(x) if x else np.zeros(0) for x in (texts, labels, embs, us))
    if not len(y):
        return [t], [y.astype(np.int64)], [e], [u]
    order = np.lexsort((u, y))
    y_sorted = y[order]
    first = np.searchsorted(y_sorted, y_sorted, side="left")
    rank = np.arange(len(order)) - first
    k = order[rank < per_class]
    return [t[k]], [y[k].astype(np.int64)], [e[k]], [u[k]]


def hash_text(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class PartitionAnnotate:
    """Callable class: assign R/P/H, then ask the annotator about P rows not yet annotated."""

    def __init__(self, *, spec, pool, tau_s, tau_w, round_no: int, label_names: list[str], demos: int,
                 class_balanced: bool, candidates_topk: int, min_logprob: float | None):
        import ray

        from noiseal_ray.annotate.factory import make_annotator

        self.annotator = make_annotator(spec)
        self.pool = ray.get(pool) if isinstance(pool, ray.ObjectRef) else pool
        self.tau_s, self.tau_w = tau_s, tau_w
        self.round_no = round_no
        self.label_names = label_names
        self.k = demos
        self.class_balanced = class_balanced
        self.topk = candidates_topk
        self.min_logprob = min_logprob

    def __call__(self, batch: dict) -> dict:
        from noiseal_ray.annotate.base import Demo, Query, gate_answer

        batch = _assign(batch, tau_s=self.tau_s, tau_w=self.tau_w)
        need = np.flatnonzero((batch["part"] == CODES["P"]) & (batch["llm_label"] < 0))
        if self.annotator is not None and len(need):
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
            answers = self.annotator.annotate(queries=queries, label_names=self.label_names)
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
        return {k: v for k, v in batch.items() if k not in TABLE_DROP}


def annotate(*, scored_dir: Path, out_dir: Path, spec, pool, state: ThresholdState, round_no: int,
             label_names: list[str], config: RunConfig, actors: int) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    pool_ref = pool.ref if isinstance(pool, PoolHandle) else ray.put(pool)
    actors = _fit_actors(actors, scored_dir, batch_rows=max(config.score_batch_size, 256))
    ds = _read(scored_dir, min_blocks=actors)
    ds = ds.map_batches(
        PartitionAnnotate,
        fn_constructor_kwargs=dict(spec=spec, pool=pool_ref, tau_s=state.strong, tau_w=state.weak,
                                   round_no=round_no, label_names=label_names, demos=config.demos,
                                   class_balanced=config.class_balanced_demos,
                                   candidates_topk=config.llm_candidates_topk, min_logprob=config.llm_min_logprob),
        batch_size=max(config.score_batch_size, 256), batch_format="numpy", compute=ActorPoolStrategy(size=actors),
        num_cpus=0.5)
    _write(ds, out_dir)


def round_counts(*, table_dir: Path, round_no: int, hard_policy: str) -> dict[str, int]:
    from noiseal_ray.finalize import STAT_KEYS, batch_stats

    cols = ["part", "label", "llm_label", "pred", "clean_label", "llm_round", "llm_error", "llm_cached", "truncated"]
    from noiseal_ray.score import reduce_sum

    sums = reduce_sum(_read(table_dir, cols), batch_stats, round_no=round_no, hard_policy=hard_policy)
    return {k: int(sums[k]) for k in STAT_KEYS}


def write_labels(*, table_dir: Path, out: Path, label_names: list[str], hard_policy: str, has_clean: bool) -> None:
    """labels.parquet/: every input row once: id, text, given_label, final_label, partition, ..."""
    from noiseal_ray.finalize import final_labels

    names = np.array(label_names, dtype=object)
    parts = np.array(["R", "P", "H"], dtype=object)

    import pyarrow as pa

    fields = [("id", pa.string()), ("text", pa.string()), ("given_label", pa.string()), ("final_label", pa.string()),
              ("partition", pa.string()), ("llm_label", pa.string()), ("llm_logprob", pa.float64()),
              ("llm_error", pa.string()), ("llm_round", pa.int64()), ("p_strong", pa.float64()),
              ("p_weak", pa.float64()), ("pred_label", pa.string()), ("pred_prob", pa.float64()),
              ("changed", pa.bool_()), ("truncated", pa.bool_())]
    if has_clean:
        fields.append(("clean_label", pa.string()))
    schema = pa.schema(fields)

    def to_output(b: dict) -> pa.Table:
        given = b["label"].astype(np.int64)
        llm = b["llm_label"].astype(np.int64)
        final = final_labels(part=b["part"].astype(np.int64), given=given, llm=llm,
                             pred=b["pred"].astype(np.int64), hard_policy=hard_policy)
        cols = {
            "id": b["id"], "text": b["text"], "given_label": names[given], "final_label": names[final],
            "partition": parts[b["part"].astype(np.int64)],
            # An answer from an earlier round stays for reporting; llm_round says when it came.
            "llm_label": [names[v] if v >= 0 else None for v in llm],
            "llm_logprob": b["llm_logprob"].astype(np.float64),
            "llm_error": [e or None for e in b["llm_error"]],
            "llm_round": [int(r) if r >= 0 else None for r in b["llm_round"]],
            "p_strong": b["p_strong"].astype(np.float64), "p_weak": b["p_weak"].astype(np.float64),
            "pred_label": names[b["pred"].astype(np.int64)], "pred_prob": b["pred_prob"].astype(np.float64),
            "changed": final != given, "truncated": b["truncated"].astype(bool),
        }
        if has_clean:
            c = b["clean_label"].astype(np.int64)
            cols["clean_label"] = [names[v] if v >= 0 else None for v in c]
        # A fixed schema: a part where every llm_error is null must not be typed null.
        return pa.table({k: pa.array(v, type=schema.field(k).type)
                         for k, v in cols.items()}, schema=schema)

    _write(_read(table_dir).map_batches(to_output, batch_format="numpy"), out / "labels.parquet")


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------

def _check_resume(out: Path, config: RunConfig) -> None:
    saved = out / "config.yaml"
    if not saved.is_file():
        if (out / "manifest.json").exists() or (out / "labels.parquet").exists():
            raise OutputError(f"{out} holds a run without config.yaml; use an empty --out")
        return
    from noiseal_ray.config import load_saved_config

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
    ``noiseal_ray.train.fit`` (tests hand in a cheaper one).
    """
    progress = progress or Progress()
    check_run_dir_path(out)
    out = Path(out)
    check_writable(out)  # before any work: an unwritable --out fails in milliseconds
    # Two runs in one folder would sweep each other's temp files and interleave manifest writes.
    with hold_run_dir(out):
        return _run_locked(config=config, out=out, progress=progress, fit_fn=fit_fn)


def _run_locked(*, config: RunConfig, out: Path, progress: Progress, fit_fn: Callable | None) -> dict:
    """``run_pipeline`` once this process holds ``out`` (``hold_run_dir``)."""
    from noiseal_ray import train as train_mod

    fit_fn = fit_fn or train_mod.fit
    _check_resume(out, config)
    # A killed earlier run may have left temp files/dirs; none is ever read, so they just go.
    swept = sweep_debris(out, skip=("checkpoints",))
    if swept:
        progress.note(f"removed {len(swept)} leftover temp file(s) of an interrupted earlier run")
    manifest = Manifest.load(out)
    rounds_dir = out / "rounds"
    t_start = time.time()
    # Before Ray starts and before config.yaml is written: bad input or an unreachable LLM
    # endpoint fails in seconds, and leaves no run that a corrected rerun would be refused by.
    _preflight_annotator(config, needed=not manifest.done(f"r{config.rounds + 1}/annotate"))
    facts = None
    if not manifest.done("ingest"):
        with progress.stage("ingest: read and validate the corpus") as st:
            facts = ingest(config=config, table_dir=rounds_dir / "r0" / "table")
            st["rows"] = facts["n_rows"]
    save_config(config, out / "config.yaml")
    if facts is not None:
        manifest.mark("ingest", **facts, metrics={"rounds": [], "stage_seconds": {}})

    with ray_session(address=config.address, workers=config.workers):
        configure_data_context()
        use_gpu = config.use_gpu if config.use_gpu is not None else _cluster_has_gpu()
        actors = config.score_actors or max(1, config.workers)
        storage = config.storage_path or str((out / "checkpoints").resolve())
        base = rounds_dir / "r0" / "table"
        names = manifest.data["label_names"]
        c = len(names)
        metrics = manifest.data["metrics"]
        stage_s = metrics["stage_seconds"]

        def timed(key: str, seconds: float) -> None:
            stage_s[key] = stage_s.get(key, 0.0) + seconds

        test_ds = None
        if config.test_data:
            import ray.data

            from noiseal_ray.data.io import load_corpus

            tc = load_corpus(config.test_data, text_col=config.text_col,
                             label_col=config.test_label_col or config.clean_label_col or config.label_col,
                             label_names=names, min_classes=1)
            test_ds = ray.data.from_arrow(tc.to_table().select(["text", "label"]))

        total_epochs = config.warmup_epochs + config.rounds * config.epochs_per_round

        def train_args(init_dir: Path, epochs: int, seed: int, r: int) -> train_mod.TrainSpec:
            offset = train_mod.run_epoch_offset(round_no=r, warmup_epochs=config.warmup_epochs,
                                                epochs_per_round=config.epochs_per_round)
            return train_mod.TrainSpec(init_dir=str(init_dir.resolve()), epochs=epochs, seed=seed,
                                       lr_schedule=config.lr_schedule, epoch_offset=offset,
                                       total_epochs=total_epochs,
                                       strong_lr=config.strong_lr, weak_lr=config.weak_lr,
                                       batch_size=config.batch_size, rce_a=config.rce_a,
                                       embmix_alpha=config.embmix_alpha, sharpen_t=config.sharpen_t,
                                       loss_weights=tuple(config.loss_weights),
                                       threads=max(1, (os.cpu_count() or 1) // config.workers))

        def train_stage(r: int, table_dir: Path, init_dir: Path, epochs: int) -> None:
            model_dir = rounds_dir / f"r{r}" / "model"
            with progress.stage(f"[round {r}/{config.rounds}] train {epochs} epoch(s) on {config.workers} "
                                f"worker(s){' (GPU)' if use_gpu else ''}", rows=manifest.data["n_rows"] * epochs) as st:
                ds = _read(table_dir, ["text", "label", "part", "llm_label"])
                m = fit_fn(spec=train_args(init_dir, epochs, config.seed + r, r), dataset=ds, workers=config.workers,
                           use_gpu=use_gpu, name=f"{out.name}-r{r}", storage_path=storage,
                           max_failures=config.max_failures, out_dir=str(model_dir), test_dataset=test_ds,
                           placement_strategy=config.train_placement)
                st["note"] = f"loss strong {m.get('loss_strong', float('nan')):.3f}" + (
                    f", test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else "")
            timed("train", st["seconds"])
            entry = {"round": r, "train": {k: v for k, v in m.items() if k.startswith("loss") or k in ("steps", "epoch")}}
            if "test_accuracy" in m:
                entry["test_accuracy"] = m["test_accuracy"]
            manifest.data["rounds"][f"train{r}"] = entry
            manifest.mark(f"r{r}/train")

        # --- warm-up -------------------------------------------------------------------------
        init_dir = rounds_dir / "r0" / "init"
        if config.warmup_from and not manifest.done("r0/train"):
            with progress.stage(f"warm-up: adopt {config.warmup_from}"):
                adopt_warmup(src=Path(config.warmup_from), label_names=names, dest=rounds_dir / "r0" / "model")
            manifest.mark("init")
            manifest.mark("r0/train")
        if not manifest.done("init"):
            from noiseal_ray.models.bundle import new_bundle, save_bundle

            with progress.stage("load models"):
                save_bundle(new_bundle(strong_model=config.strong_model, label_names=names,
                                       max_length=config.max_length, weak_embed_dim=config.weak_embed_dim,
                                       weak_hidden=config.weak_hidden, seed=config.seed), init_dir)
            manifest.mark("init")
        if not manifest.done("r0/train"):
            if config.warmup_epochs > 0:
                train_stage(0, base, init_dir, config.warmup_epochs)
            else:
                replace_dir(_copy(init_dir), rounds_dir / "r0" / "model")
                manifest.mark("r0/train")

        # --- rounds --------------------------------------------------------------------------
        state = ThresholdState.from_dict(manifest.data["thresholds"]) if "thresholds" in manifest.data else \
            ThresholdState(beta=config.ema_beta, per_class=config.per_class_threshold)
        from noiseal_ray.annotate.factory import annotator_backend

        last = config.rounds + 1
        with _lazy_backend(annotator_backend, config=config, run_dir=str(out), needed=not manifest.done(f"r{last}/annotate")) as spec:
            for r in range(1, last + 1):
                rd = rounds_dir / f"r{r}"
                prev = rounds_dir / f"r{r - 1}"
                tag = f"[round {r}/{config.rounds}]" if r <= config.rounds else "[final]"
                if not manifest.done(f"r{r}/score"):
                    with progress.stage(f"{tag} score with both models", rows=manifest.data["n_rows"]) as st:
                        score(table_dir=prev / "table" if r > 1 else base, model_dir=prev / "model",
                              out_dir=rd / "scored", config=config, actors=actors)
                    timed("score", st["seconds"])
                    manifest.mark(f"r{r}/score")
                if not manifest.done(f"r{r}/thresholds"):
                    with progress.stage(f"{tag} thresholds") as st:
                        state = thresholds(scored_dir=rd / "scored", state=state, num_classes=c)
                    timed("partition", st["seconds"])
                    manifest.mark(f"r{r}/thresholds", thresholds=state.to_dict())
                if not manifest.done(f"r{r}/annotate"):
                    with progress.stage(f"{tag} partition + annotate ({config.annotator})") as st:
                        pool = demo_pool(scored_dir=rd / "scored", state=state, num_classes=c,
                                         per_class=config.demo_pool_per_class_for(c), seed=config.seed + r)
                        annotate(scored_dir=rd / "scored", out_dir=rd / "table", spec=spec, pool=pool, state=state,
                                 round_no=r, label_names=names, config=config, actors=actors)
                        counts = round_counts(table_dir=rd / "table", round_no=r, hard_policy=config.hard_policy)
                        from noiseal_ray.finalize import summarise

                        summary = summarise(counts)
                        s = summary["sizes"]
                        st["rows"] = counts["n"]
                        st["note"] = (f"R {s['R']} P {s['P']} H {s['H']}, {summary['annotator']['new_answers']} new "
                                      f"labels, {summary['annotator']['failed']} failed")
                    timed("annotate", st["seconds"])
                    summary["thresholds"] = {"strong": state.strong.tolist(), "weak": state.weak.tolist()}
                    summary["demo_pool"] = len(pool)
                    manifest.data["rounds"][f"part{r}"] = summary
                    manifest.mark(f"r{r}/annotate")
                if r <= config.rounds and not manifest.done(f"r{r}/train"):
                    train_stage(r, rd / "table", prev / "model", config.epochs_per_round)
                    # The scored table (embeddings) is only needed within its round.
                    shutil.rmtree(rd / "scored", ignore_errors=True)

        # --- finalize ------------------------------------------------------------------------
        final_table = rounds_dir / f"r{last}" / "table"
        if not manifest.done("labels"):
            with progress.stage("write labels.parquet", rows=manifest.data["n_rows"]):
                write_labels(table_dir=final_table, out=out, label_names=names, hard_policy=config.hard_policy,
                             has_clean=manifest.data["has_clean"])
            manifest.mark("labels")
            shutil.rmtree(rounds_dir / f"r{last}" / "scored", ignore_errors=True)
        if not manifest.done("model"):
            from noiseal_ray.models.bundle import load_bundle, save_bundle

            save_bundle(load_bundle(rounds_dir / f"r{config.rounds}" / "model"), out / "model", include_weak=False)
            manifest.mark("model")
        if config.storage_path is None:
            # Ray Train's checkpoints (weights + optimizer state, ~300 MB a fit for MiniLM) only serve a
            # resume mid-fit; a finished run never reads them. A storage path the user chose is theirs.
            shutil.rmtree(out / "checkpoints", ignore_errors=True)

    metrics = build_metrics(manifest=manifest, config=config, wall=time.time() - t_start)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=_json_default))
    if config.report:
        try:
            from noiseal_ray.report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            with progress.stage("write report.html"):
                write_report(run_dir=out)
    return metrics


def adopt_warmup(*, src: Path, label_names: list[str], dest: Path) -> None:
    """Copy the model folder ``src`` (strong + weak model, optimizer state) to ``dest`` as this
    run's warm-up fit. ConfigError when it is not a bundle with both models and the same labels."""
    from noiseal_ray.errors import ConfigError
    from noiseal_ray.models.bundle import META

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


def _preflight_annotator(config: RunConfig, *, needed: bool) -> None:
    """An explicit LLM endpoint that does not answer is an AnnotatorError before any work
    (unless a fallback annotator is configured: then ``llm_backend`` falls back later)."""
    if not needed or config.annotator != "llm" or not config.llm_endpoint:
        return
    if config.annotator_fallback not in (None, "llm"):
        return
    from noiseal_ray.annotate.llm import check_endpoint, normalize_base_url

    check_endpoint(base_url=normalize_base_url(config.llm_endpoint), api_key_env=config.llm_api_key_env,
                   model=config.llm_model)


def _copy(src: Path) -> Path:
    tmp = src.parent / f".{src.name}.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    return tmp


@contextmanager
def _lazy_backend(factory, *, config: RunConfig, run_dir: str, needed: bool):
    """Start the annotator backend only when an annotate stage is still to run."""
    if not needed:
        from noiseal_ray.annotate.factory import AnnotatorSpec

        yield AnnotatorSpec(kind="none")
        return
    with factory(config=config, run_dir=run_dir) as spec:
        yield spec


def build_metrics(*, manifest: Manifest, config: RunConfig, wall: float) -> dict:
    """metrics.json: per round sizes, thresholds, losses, annotator counts, test accuracy, timing."""
    d = manifest.data
    rounds = []
    for r in range(0, config.rounds + 2):
        entry = {"round": r}
        entry.update(d["rounds"].get(f"part{r}", {}))
        tr = d["rounds"].get(f"train{r}")
        if tr:
            entry["train"] = tr["train"]
            if "test_accuracy" in tr:
                entry["test_accuracy"] = tr["test_accuracy"]
        if len(entry) > 1:
            rounds.append(entry)
    final = dict(d["rounds"].get(f"part{config.rounds + 1}", {}))
    accs = [e["test_accuracy"] for e in rounds if "test_accuracy" in e]
    if accs:
        final["test_accuracy_last"] = accs[-1]
        final["test_accuracy_best"] = max(accs)
    total_llm = sum(e.get("annotator", {}).get("queries", 0) for e in rounds)
    return {"version": 1, "data": config.data, "rows": d["n_rows"], "label_names": d["label_names"],
            "class_counts": d.get("class_counts"), "annotator": config.annotator,
            "annotator_queries": total_llm if config.annotator == "llm" else 0,
            "workers": config.workers, "rounds": rounds, "final": final,
            "stage_seconds": d["metrics"]["stage_seconds"], "wall_seconds_this_invocation": wall}
