"""Scoring throughput as the corpus grows: the pipeline's Ray Data scoring stage against a plain
PyTorch loop over the same model and rows, at several sizes (issue 18: where do Ray's fixed costs
stop mattering?).

    .venv/bin/python -m benchmarks.scoring_scale                       # 1k, 20k, 100k rows
    .venv/bin/python -m benchmarks.scoring_scale --rows 1000,20000 --out /tmp/scoring.md

Both paths score with the same fresh all-MiniLM-L6-v2 bundle (+ BiLSTM; an untrained head costs
what a trained one does) and ``noiseal_ray.score.Scorer`` (length-sorted sub-batches of 32 rows
within batches of ``score_batch_size``):

- Ray Data: ``noiseal_ray.stages.score.score`` exactly as a round calls it (read the parquet table,
  ``map_batches(Scorer)`` on an actor pool of ``--actors``, write the scored table), wall time from
  the call to the written table, actor start-up and model loading included.
- Plain: one process, ``Scorer`` called on consecutive chunks of ``score_batch_size`` rows held in
  memory, with as many torch threads as the machine has cores; model loading and all I/O excluded.

Texts are TREC training questions drawn with replacement (seeded). The two paths alternate at each
size, on one Ray cluster started by this script. Figures are printed and written with the exact
command to ``--out`` (default ``benchmarks/results/scoring_scale.md``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options; ``argv`` defaults to the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000,20000,100000", help="corpus sizes, comma-separated")
    p.add_argument("--actors", type=int, default=2, help="scoring actors (a run uses one per worker)")
    p.add_argument("--trec", default="../shared/data/trec/train.jsonl", help="relative to the repo root")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--out", default="benchmarks/results/scoring_scale.md")
    return p.parse_args(argv)


def corpus(*, path: Path, n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """``n`` texts drawn with replacement from a JSON-lines file, their label ids (n,) and names."""
    from benchmarks.llm_relabel import load_jsonl

    texts, values = load_jsonl(path)
    raw = [str(v) for v in values]
    names = sorted(set(raw))
    idx = np.random.default_rng(seed).integers(0, len(texts), size=n)
    return [texts[i] for i in idx], np.array([names.index(raw[i]) for i in idx], np.int64), names


def time_ray(*, texts: list[str], labels: np.ndarray, model: Path, work: Path, actors: int) -> float:
    """Seconds the pipeline's scoring stage takes over these rows (a table written as ingest does)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from noiseal_ray.config import RunConfig
    from noiseal_ray.stages.ingest import BASE_FILES
    from noiseal_ray.stages.score import score

    table_dir, out = work / f"table-{len(texts)}", work / f"scored-{len(texts)}"
    table_dir.mkdir(parents=True, exist_ok=True)  # a size asked for twice rewrites the same files
    t = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts, "label": labels})
    step = -(-t.num_rows // BASE_FILES)
    for i, s in enumerate(range(0, t.num_rows, step)):
        pq.write_table(t.slice(s, step), table_dir / f"part-{i:05d}.parquet")
    t0 = time.monotonic()
    score(table_dir=table_dir, model_dir=model, out_dir=out, config=RunConfig(), actors=actors)
    seconds = time.monotonic() - t0
    scored = pq.read_table(out, columns=["id"])
    assert scored.num_rows == len(texts), (scored.num_rows, len(texts))
    return seconds


def time_plain(*, texts: list[str], labels: np.ndarray, model: Path) -> tuple[float, float]:
    """(seconds scoring, seconds loading) for a plain in-process loop over the same rows."""
    from noiseal_ray.config import RunConfig
    from noiseal_ray.score import Scorer

    batch = RunConfig().score_batch_size
    t0 = time.monotonic()
    scorer = Scorer(model_dir=str(model), batch_size=32, threads=os.cpu_count())
    load = time.monotonic() - t0
    arr = np.array(texts, dtype=object)
    t0 = time.monotonic()
    for s in range(0, len(texts), batch):
        scorer({"text": arr[s:s + batch], "label": labels[s:s + batch]})
    return time.monotonic() - t0, load


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every size, print the table, write the report."""
    args = parse_args(argv)
    sizes = [int(x) for x in args.rows.split(",")]
    command = " ".join(["python -m benchmarks.scoring_scale", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    from noiseal_ray.models.bundle import new_bundle, save_bundle
    from noiseal_ray.ray_session import configure_data_context, ray_session

    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="noiseal-scoring-") as tmp:
        work = Path(tmp)
        model = work / "model"
        texts_all, labels_all, names = corpus(path=REPO / args.trec if not Path(args.trec).is_absolute()
                                              else Path(args.trec), n=max(sizes))
        save_bundle(new_bundle(strong_model=None, label_names=names, max_length=args.max_length,
                               weak_embed_dim=128, weak_hidden=128, seed=0), model)
        # The cluster a run starts for as many workers as scoring actors, with its data settings.
        with ray_session(address=None, workers=args.actors):
            configure_data_context()
            for n in sizes:
                texts, labels = texts_all[:n], labels_all[:n]
                ray_s = time_ray(texts=texts, labels=labels, model=model, work=work, actors=args.actors)
                plain_s, load_s = time_plain(texts=texts, labels=labels, model=model)
                rows.append({"rows": n, "ray_s": ray_s, "plain_s": plain_s, "load_s": load_s,
                             "ratio": plain_s / ray_s})
                print(f"{n:>7} rows: Ray Data {ray_s:7.1f} s ({n / ray_s:6.1f} rows/s), plain {plain_s:7.1f} s "
                      f"({n / plain_s:6.1f} rows/s; load {load_s:.1f} s), ratio {plain_s / ray_s:.2f}", flush=True)
    write_report(args=args, command=command, rows=rows, load_start=load_start, load_end=os.getloadavg())


def write_report(*, args: argparse.Namespace, command: str, rows: list[dict], load_start, load_end) -> None:
    """The Markdown report at ``args.out`` (written atomically), also printed."""
    from benchmarks.records import write_markdown

    lines = [
        "# Scoring throughput as the corpus grows",
        "",
        "Produced by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"What: `benchmarks/scoring_scale.py` (its docstring says exactly what each path includes). Fresh "
        f"all-MiniLM-L6-v2 bundle + BiLSTM, max_length {args.max_length}, TREC questions drawn with replacement; "
        f"Ray Data stage with {args.actors} actors on the local cluster a run starts, wall time "
        f"including actor start-up, model loading and parquet I/O; plain loop in one process with "
        f"{os.cpu_count()} threads, model loaded and rows in memory beforehand. Load average (1/5/15 min) "
        f"at start {', '.join(f'{x:.1f}' for x in load_start)}, at end {', '.join(f'{x:.1f}' for x in load_end)}.",
        "",
        "| rows | Ray Data stage (s) | rows/s | plain loop (s) | rows/s | Ray / plain throughput |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        n = r["rows"]
        lines.append(f"| {n} | {r['ray_s']:.1f} | {n / r['ray_s']:.1f} | {r['plain_s']:.1f} | "
                     f"{n / r['plain_s']:.1f} | **{r['ratio']:.2f}** |")
    lines.append("")
    write_markdown(lines=lines, out=args.out, repo=REPO)


if __name__ == "__main__":
    main()
