"""Scale benchmark: the scoring and partitioning stages of one round on a synthetic corpus.

For each corpus size, a fresh driver process (a fresh local Ray, sized like ``ray_session``)
runs ``pipeline.score``, ``pipeline.thresholds``, ``pipeline.demo_pool``, ``pipeline.annotate``
(kNN annotator) and ``pipeline.round_counts`` on a base table in the layout ``pipeline.ingest``
writes (8 parquet files; columns id, text, label, clean_label, part, llm_label, llm_logprob,
llm_error, llm_round, llm_cached), with a tiny model bundle (2-layer hidden-32 encoder with the
MiniLM tokenizer, BiLSTM 16/16, max_length 32). It reports rows/s per stage and the driver's
peak RSS (psutil, sampled every 20 ms in a thread, the driver process only). Ray worker
processes are not counted there; their summed RSS (which double-counts shared object-store
pages) is shown separately for information.

    .venv/bin/python benchmarks/scale.py                      # 100k and 1M rows
    .venv/bin/python benchmarks/scale.py --rows 100000 300000 --md benchmarks/results/scale.md

The corpus is generated (numpy, seeded) by the parent process before the measured driver starts,
so generation never shows in the driver's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
FILES = 8  # pipeline.ingest writes the base table as 8 files
STAGES = ["score", "thresholds", "demo_pool", "annotate", "round_counts"]


# --------------------------------------------------------------------------------------------
# corpus and model (parent process)
# --------------------------------------------------------------------------------------------

def make_corpus(*, n: int, table_dir: Path, seed: int = 0, noise: float = 0.3) -> None:
    """``n`` short texts (4-12 pseudo-words, class-dependent vocabulary), 30% symmetric noise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    syll = np.array(["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "va", "zu", "be", "co", "fi", "ga", "hu"])
    vocab = np.array(["".join(rng.choice(syll, rng.integers(2, 4))) for _ in range(3000)], dtype=object)
    table_dir.mkdir(parents=True, exist_ok=True)
    names = np.array(LABELS, dtype=object)
    raw = pq.ParquetWriter(str(table_dir.parent / "input.parquet"), pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("clean_label", pa.string())]))
    step = -(-n // FILES)
    for i, s in enumerate(range(0, n, step)):
        m = min(step, n - s)
        clean = rng.integers(0, len(LABELS), m)
        flip = rng.random(m) < noise
        noisy = np.where(flip, (clean + rng.integers(1, len(LABELS), m)) % len(LABELS), clean)
        lens = rng.integers(4, 13, m)
        # Half of each text's words come from its class's own 500-word slice of the vocabulary.
        words = rng.integers(0, len(vocab), (m, 12))
        own = rng.random((m, 12)) < 0.5
        words = np.where(own, clean[:, None] * 500 + words % 500, words)
        toks = vocab[words]
        text = np.array([" ".join(toks[j, : lens[j]]) + " ?" for j in range(m)], dtype=object)
        t = pa.table({
            "id": pa.array([f"s{k:08d}" for k in range(s, s + m)]),
            "text": pa.array(text, pa.string()),
            "label": pa.array(noisy.astype(np.int64)),
            "clean_label": pa.array(clean.astype(np.int64)),
            "part": pa.array(np.zeros(m, np.int8)),
            "llm_label": pa.array(np.full(m, -1, np.int64)),
            "llm_logprob": pa.array(np.full(m, np.nan)),
            "llm_error": pa.array([""] * m, pa.string()),
            "llm_round": pa.array(np.full(m, -1, np.int64)),
            "llm_cached": pa.array(np.zeros(m, bool)),
        })
        pq.write_table(t, table_dir / f"part-{i:05d}.parquet")
        # The same rows as a user's input file, for the (driver-side) ingest stage.
        raw.write_table(pa.table({"id": t["id"], "text": t["text"], "label": pa.array(names[noisy], pa.string()),
                                  "clean_label": pa.array(names[clean], pa.string())}))
    raw.close()


def make_model(work: Path) -> Path:
    """A tiny model bundle (2-layer hidden-32 encoder, BiLSTM 16/16) saved under ``work``."""
    from noiseal_ray.models.bundle import new_bundle, save_bundle
    from noiseal_ray.models.strong import make_tiny_encoder_dir

    enc = make_tiny_encoder_dir(work / "tiny-encoder")
    model = work / "model"
    save_bundle(new_bundle(strong_model=enc, label_names=LABELS, max_length=32, weak_embed_dim=16, weak_hidden=16,
                           seed=0), model)
    return model


# --------------------------------------------------------------------------------------------
# the measured driver (child process)
# --------------------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Driver RSS every 20 ms (the figure reported); Ray's processes' summed RSS every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.psutil = psutil
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.peak = self.proc.memory_info().rss
        self.workers_peak = 0

    def reset(self) -> int:
        with self.lock:
            self.peak = self.proc.memory_info().rss
            self.workers_peak = 0
            return self.peak

    def run(self) -> None:
        last = 0.0
        while not self.stop.is_set():
            rss = self.proc.memory_info().rss
            with self.lock:
                self.peak = max(self.peak, rss)
            if time.time() - last > 1.0:
                last = time.time()
                total = 0
                for c in self.proc.children(recursive=True):
                    try:
                        total += c.memory_info().rss
                    except self.psutil.Error:
                        pass
                with self.lock:
                    self.workers_peak = max(self.workers_peak, total)
            time.sleep(0.02)


def _timed(*, name: str, fn: Callable[[], Any], n: int, sampler: Sampler, res: dict, out: dict) -> None:
    """Run one stage, recording its wall time and the driver's (and Ray's) peak RSS in ``res``."""
    mib = 1 / 2**20
    start = sampler.reset()
    t0 = time.time()
    out[name] = fn()
    dt = time.time() - t0
    with sampler.lock:
        peak, wpeak = sampler.peak, sampler.workers_peak
    res["stages"][name] = {"seconds": dt, "rows_per_s": n / dt, "driver_rss_start_mib": start * mib,
                           "driver_rss_peak_mib": peak * mib, "ray_processes_rss_peak_mib": wpeak * mib}
    print(f"  {name:13s} {dt:8.1f}s {n / dt:10,.0f} rows/s  driver peak {peak * mib:7.0f} MiB "
          f"(+{(peak - start) * mib:.0f})  ray processes {wpeak * mib:7.0f} MiB", flush=True)


def measure(*, n: int, work: Path, actors: int) -> dict:
    """The child process: one round's stages on the ``n``-row table in ``work``, in a fresh local Ray."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray

    from noiseal_ray import pipeline as P
    from noiseal_ray.annotate.factory import AnnotatorSpec
    from noiseal_ray.config import RunConfig
    from noiseal_ray.partition import ThresholdState
    from noiseal_ray.stages.thresholds import SplitState

    sampler = Sampler()
    sampler.start()
    mib = 1 / 2**20
    base, model = work / "table", work / "model"
    rd = work / "r1"
    cfg = RunConfig(workers=actors, annotator="knn", max_length=32, weak_embed_dim=16, weak_hidden=16)
    res: dict = {"rows": n, "actors": actors, "cpus": os.cpu_count(), "stages": {},
                 "load_avg_start": list(os.getloadavg())}
    res["driver_rss_before_ray_mib"] = sampler.reset() * mib
    with P.ray_session(address=None, workers=actors):
        P.configure_data_context()
        res["ray_cpus"] = ray.cluster_resources().get("CPU")
        res["driver_rss_start_mib"] = sampler.reset() * mib
        state = SplitState(ema=ThresholdState(beta=cfg.ema_beta, per_class=True), rule=cfg.split)
        out: dict = {}

        def stage(name: str, fn: Callable[[], Any]) -> None:
            _timed(name=name, fn=fn, n=n, sampler=sampler, res=res, out=out)

        stage("score", lambda: P.score(table_dir=base, model_dir=model, out_dir=rd / "scored", config=cfg,
                                       actors=actors))
        stage("thresholds", lambda: P.thresholds(scored_dir=rd / "scored", state=state, num_classes=len(LABELS)))
        stage("demo_pool", lambda: P.demo_pool(scored_dir=rd / "scored", split=state.current, num_classes=len(LABELS),
                                               per_class=cfg.demo_pool_per_class_for(len(LABELS)), seed=1))
        stage("annotate", lambda: P.annotate(scored_dir=rd / "scored", out_dir=rd / "table",
                                             spec=AnnotatorSpec(kind="knn"), pool=out["demo_pool"],
                                             split=state.current,
                                             round_no=1, label_names=LABELS, config=cfg, actors=actors))
        stage("round_counts", lambda: P.round_counts(table_dir=rd / "table", round_no=1, hard_policy="strong"))
        # Last, so that whatever it leaves in the driver's heap does not shift the stages above.
        stage("ingest", lambda: P.ingest(config=RunConfig(data=str(work / "input.parquet"), text_col="text",
                                                          label_col="label", id_col="id",
                                                          clean_label_col="clean_label"),
                                         table_dir=work / "ingested"))
    counts = out["round_counts"]
    res["sizes"] = {k: counts[k] for k in ("R", "P", "H")}
    res["demo_pool"] = len(out["demo_pool"])
    assert counts["n"] == n, counts
    with sampler.lock:
        res["driver_rss_peak_mib"] = max(res["stages"][s]["driver_rss_peak_mib"] for s in STAGES)
    res["total_seconds"] = sum(res["stages"][s]["seconds"] for s in STAGES)
    res["load_avg_end"] = list(os.getloadavg())
    sampler.stop.set()
    return res


# --------------------------------------------------------------------------------------------
# orchestration and report
# --------------------------------------------------------------------------------------------

def run_size(*, n: int, root: Path, model: Path, actors: int) -> dict:
    """Generate the ``n``-row corpus and measure it in a fresh driver process (``--child``)."""
    work = root / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    make_corpus(n=n, table_dir=work / "table")
    print(f"[{n:,} rows] corpus generated in {time.time() - t0:.1f}s "
          f"({sum(f.stat().st_size for f in (work / 'table').iterdir()) / 2**20:.0f} MiB parquet)", flush=True)
    (work / "model").symlink_to(model)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--work", str(work),
           "--actors", str(actors)]
    # RAY_ADDRESS=local: a new local Ray even while another cluster on this host advertises itself in
    # /tmp/ray/ray_current_cluster (ray_session calls ray.init(address=None), which would join it).
    env = dict(os.environ, RAY_ADDRESS="local",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    lines = p.stdout.splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    if p.returncode != 0:
        raise SystemExit(f"driver for {n} rows failed (exit {p.returncode})")
    return json.loads(lines[-1])


def _fmt(x: float, d: int = 0) -> str:
    return f"{x:,.{d}f}"


def _intro(results: list[dict], *, command: str, note: str) -> list[str]:
    first = results[0]
    loads = [f"Load average (1/5/15 min) of this host for {r['rows']:,} rows at start / end: "
             + ", ".join(f"{x:.1f}" for x in r["load_avg_start"]) + " / "
             + ", ".join(f"{x:.1f}" for x in r["load_avg_end"])
             + f" ({r['cpus']} cores: above {r['cpus']}, other work shared the machine and the rows/s are "
             "lower bounds)." for r in results if "load_avg_start" in r]
    return ["# Scale: scoring and partitioning on a synthetic corpus", "",
            f"Command (from the repository root): `{command}`", "", "Machine: " + note, "",
            "What runs: one round's `pipeline.score` (both models, Ray Data actor pool), `pipeline.thresholds` "
            "(distributed per-class means), `pipeline.demo_pool` (bounded R sample), `pipeline.annotate` (partition "
            "+ kNN annotator, actor pool) and `pipeline.round_counts` (distributed counts), on a base table in "
            "`pipeline.ingest`'s layout (8 parquet files). Model: tiny 2-layer hidden-32 encoder with the MiniLM "
            "tokenizer, BiLSTM 16/16, max_length 32; texts of 4-12 synthetic words. A fresh driver and a fresh "
            f"local Ray ({first.get('ray_cpus')} logical CPUs, as `ray_session` sizes it) per size; "
            f"{first['actors']} actors per Ray Data stage.", "", "## Throughput (rows/s) and time", "",
            *[x for line in loads for x in (line, "")]]


def _throughput(results: list[dict]) -> list[str]:
    lines = ["| rows | " + " | ".join(STAGES) + " | all stages | seconds per 100k rows |",
             "| ---: | " + " | ".join("---:" for _ in STAGES) + " | ---: | ---: |"]
    for r in results:
        total = r["total_seconds"]
        lines.append(f"| {r['rows']:,} | " + " | ".join(_fmt(r["stages"][s]["rows_per_s"]) for s in STAGES)
                     + f" | {_fmt(r['rows'] / total)} ({_fmt(total, 1)} s) | {_fmt(total / r['rows'] * 1e5, 1)} |")
    return lines


def _memory(results: list[dict]) -> list[str]:
    lines = ["", "## Driver memory (RSS of the driver process only, MiB)", "",
             "Peak RSS sampled every 20 ms during each stage; `+` is the growth over the RSS at the start of "
             "that stage. Ray worker processes (scoring and annotate actors, read/write tasks, raylet, object "
             "store) are **not** counted here; their summed RSS is in the last column for information only "
             "(it double-counts shared object-store pages and is sampled once per second).", "",
             "| rows | driver after ray.init | " + " | ".join(STAGES) +
             " | driver peak | growth over RSS after ray.init | Ray processes peak (info) |",
             "| ---: | ---: | " + " | ".join("---:" for _ in STAGES) + " | ---: | ---: | ---: |"]
    for r in results:
        st = r["stages"]
        cells = [f"{_fmt(st[s]['driver_rss_peak_mib'])} (+{_fmt(st[s]['driver_rss_peak_mib'] - st[s]['driver_rss_start_mib'])})"
                 for s in STAGES]
        wpeak = max(st[s]["ray_processes_rss_peak_mib"] for s in STAGES)
        lines.append(f"| {r['rows']:,} | {_fmt(r['driver_rss_start_mib'])} | " + " | ".join(cells) +
                     f" | {_fmt(r['driver_rss_peak_mib'])} | +{_fmt(r['driver_rss_peak_mib'] - r['driver_rss_start_mib'])} | "
                     f"{_fmt(wpeak)} |")
    if len(results) > 1:
        a, b = results[0], results[-1]
        slope = (b["driver_rss_peak_mib"] - a["driver_rss_peak_mib"]) / (b["rows"] - a["rows"]) * 1e5
        tpr = [r["total_seconds"] / r["rows"] * 1e5 for r in results]
        lines += ["", f"Driver peak RSS from {a['rows']:,} to {b['rows']:,} rows: {_fmt(a['driver_rss_peak_mib'])} -> "
                  f"{_fmt(b['driver_rss_peak_mib'])} MiB, i.e. {slope:+.2f} MiB per additional 100k rows. Time per "
                  f"100k rows (all five stages): " + ", ".join(f"{t:.1f} s at {r['rows']:,}" for t, r in zip(tpr, results))
                  + "."]
    return lines


def _ingest_and_sizes(results: list[dict]) -> list[str]:
    lines = ["", "## Ingest (driver-side, outside the figures above)", "",
             "`pipeline.ingest` as of the commit above, on the same rows as one parquet file (string labels). "
             "Until `benchmarks/ingest_scale.py`'s commit it read the whole input into one table on the driver; "
             "it now reads it piece by piece (`benchmarks/results/ingest_scale.md` compares the two).", "",
             "| rows | seconds | rows/s | driver RSS at start | driver peak | growth | growth per 100k rows |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        g = r["stages"]["ingest"]
        d = g["driver_rss_peak_mib"] - g["driver_rss_start_mib"]
        lines.append(f"| {r['rows']:,} | {_fmt(g['seconds'], 1)} | {_fmt(g['rows_per_s'])} | {_fmt(g['driver_rss_start_mib'])} | "
                     f"{_fmt(g['driver_rss_peak_mib'])} | +{_fmt(d)} | +{_fmt(d / r['rows'] * 1e5, 1)} |")
    lines += ["", "## Partition sizes", "", "| rows | R | P | H | demo pool |", "| ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['rows']:,} | {r['sizes']['R']:,} | {r['sizes']['P']:,} | {r['sizes']['H']:,} | {r['demo_pool']:,} |"
              for r in results]
    return lines


def write_md(*, results: list[dict], path: Path, command: str, note: str) -> str:
    """Write the scale report (``results/scale.md``) from the measurements of each size; returns its text."""
    lines = _intro(results, command=command, note=note) + _throughput(results) + _memory(results)
    text = "\n".join(lines + _ingest_and_sizes(results)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main() -> None:
    """Measure each ``--rows`` size (or re-render ``--from-json``) and write the Markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--actors", type=int, default=2, help="actors per Ray Data stage (the pipeline: one per worker)")
    ap.add_argument("--md", default=str(ROOT / "benchmarks" / "results" / "scale.md"))
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--note", default="2 cores (shared), 24 GiB, no GPU; see benchmarks/results/scale.md")
    ap.add_argument("--json-out", default=None, help="also save the raw results (JSON list) here")
    ap.add_argument("--from-json", nargs="+", default=None,
                    help="write the markdown from saved results (of separate invocations) instead of running")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        res = measure(n=a.child, work=Path(a.work), actors=a.actors)
        print(json.dumps(res), flush=True)
        return
    if a.from_json:
        results = sorted((r for f in a.from_json for r in json.loads(Path(f).read_text())), key=lambda r: r["rows"])
        a.rows = [r["rows"] for r in results]
    command = " ".join([".venv/bin/python benchmarks/scale.py"] + (["--rows " + " ".join(map(str, a.rows))]
                                                                  if a.rows != [100_000, 1_000_000] else []))
    if not a.from_json:
        with tempfile.TemporaryDirectory(dir=a.work) as tmp:
            root = Path(tmp)
            model = make_model(root)
            results = []
            for n in a.rows:
                results.append(run_size(n=n, root=root, model=model, actors=a.actors))
                shutil.rmtree(root / f"n{n}", ignore_errors=True)
                if a.json_out:
                    Path(a.json_out).write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"{r['rows']:>9,} rows: {r['total_seconds']:.1f}s for all stages "
              f"({r['total_seconds'] / r['rows'] * 1e5:.1f}s per 100k rows), driver peak RSS "
              f"{r['driver_rss_peak_mib']:.0f} MiB")
    write_md(results=results, path=Path(a.md), command=command, note=a.note)
    print(f"command: {command}\nwritten: {a.md}")


if __name__ == "__main__":
    main()
