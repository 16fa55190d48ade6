"""Driver memory and time of ingest, piece by piece (what runs do) against the whole-file read
(what ingest did before: ``load_corpus`` into one table, then the base table's files), at
several corpus sizes.

    .venv/bin/python -m benchmarks.ingest_scale                          # 1M and 10M rows, CSV
    .venv/bin/python -m benchmarks.ingest_scale --rows 100000 --out /tmp/ingest_scale.md

The corpus is synthetic (ids ``r<i>``, texts of 4-12 words from a 2,000-word vocabulary, six
labels) and written once per size and format (CSV; Parquet, in row groups of 500,000 rows; JSONL). Each measurement runs in a fresh Python process (the
same one the CLI would be): its resident set size (RSS, from /proc) is read right before
ingest and then every 10 ms until ingest returns; the figure is the peak minus the RSS before.
Both ways write the same base table (checked: row count and the label column's sum).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WAYS = ("pieces", "whole")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options; ``argv`` defaults to the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000000,10000000", help="corpus sizes, comma-separated")
    p.add_argument("--ways", default=",".join(WAYS), help="pieces (ingest as runs do it), whole (the old read)")
    p.add_argument("--formats", default="csv,parquet,jsonl", help="the corpus file's formats, comma-separated")
    p.add_argument("--out", default="benchmarks/results/ingest_scale.md")
    p.add_argument("--child", nargs=3, metavar=("WAY", "CSV", "TABLE_DIR"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_corpus(*, path: Path, n: int) -> Path:
    """A synthetic corpus of ``n`` rows (id, text, label), written in slices as CSV, JSONL or
    Parquet (by ``path``'s extension)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(2000)], dtype=object)
    labels = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta"], dtype=object)
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string())])
    fmt = path.suffix.lstrip(".")
    with (pacsv.CSVWriter(path, schema) if fmt == "csv" else pq.ParquetWriter(path, schema) if fmt == "parquet"
          else open(path, "w", encoding="utf-8")) as w:
        for s in range(0, n, 500_000):
            m = min(500_000, n - s)
            words = vocab[rng.integers(0, len(vocab), (m, 12))]
            lengths = rng.integers(4, 13, m)
            texts = [" ".join(row[:k]) for row, k in zip(words, lengths)]
            t = pa.table({"id": [f"r{i}" for i in range(s, s + m)], "text": texts,
                          "label": labels[rng.integers(0, 6, m)]}, schema=schema)
            if fmt == "jsonl":
                w.write("".join(json.dumps(r) + "\n" for r in t.to_pylist()))
            else:
                w.write_table(t)
    return path


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def whole_file_ingest(*, csv_path: str, table_dir: Path) -> int:  # csv_path: any format
    """What ingest did before (up to this benchmark's commit): one table on the driver."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from noiseal_ray.data.io import load_corpus

    corpus = load_corpus(csv_path, id_col="id")
    t = corpus.to_table()
    n = t.num_rows
    t = t.append_column("given", pa.array(corpus.labels.astype(np.int64)))
    t = t.append_column("trusted", pa.array(np.zeros(n, bool)))
    for name, column in {"part": pa.array(np.zeros(n, np.int8)), "llm_label": pa.array(np.full(n, -1, np.int64)),
                         "llm_logprob": pa.array(np.full(n, np.nan)), "llm_error": pa.array([""] * n, pa.string()),
                         "llm_round": pa.array(np.full(n, -1, np.int64)),
                         "llm_cached": pa.array(np.zeros(n, bool))}.items():
        t = t.append_column(name, column)
    table_dir.mkdir(parents=True)
    step = max(1, -(-n // 8))
    for i, s in enumerate(range(0, n, step)):
        pq.write_table(t.slice(s, step), table_dir / f"part-{i:05d}.parquet")
    return n


def child(way: str, csv_path: str, table_dir: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import pyarrow.parquet as pq

    from noiseal_ray.config import make_config
    from noiseal_ray.stages.ingest import ingest

    config = make_config(overrides=dict(data=csv_path, id_col="id"))
    before, peak, done = rss_mib(), [0.0], threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss_mib())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    t0 = time.monotonic()
    if way == "pieces":
        ingest(config=config, table_dir=Path(table_dir))
    else:
        whole_file_ingest(csv_path=csv_path, table_dir=Path(table_dir))
    seconds = time.monotonic() - t0
    done.set()
    thread.join()
    top = max(peak[0], rss_mib())  # before the check below reads a column back
    t = pq.read_table(table_dir, columns=["given"])
    print(json.dumps({"way": way, "before": before, "peak": top, "seconds": seconds,
                      "rows": t.num_rows, "label_sum": int(t["given"].to_numpy().sum())}))


def measure(*, way: str, csv_path: Path, table_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.ingest_scale", "--child", way, str(csv_path),
                          str(table_dir)], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every size both ways, print and write the table."""
    args = parse_args(argv)
    if args.child:
        child(*args.child)
        return
    command = " ".join(["python -m benchmarks.ingest_scale", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    rows, load_start = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="noiseal-ingest-bench-") as tmp:
        for fmt in args.formats.split(","):
            for n in [int(x) for x in args.rows.split(",")]:
                path = write_corpus(path=Path(tmp) / f"c{n}.{fmt}", n=n)
                got = {w: measure(way=w, csv_path=path, table_dir=Path(tmp) / f"t{n}-{fmt}-{w}")
                       for w in args.ways.split(",")}
                assert len({(g["rows"], g["label_sum"]) for g in got.values()}) == 1, got
                rows.append((fmt, n, path.stat().st_size, got))
                print(fmt, n, {w: (round(g["peak"] - g["before"], 1), round(g["seconds"], 1))
                               for w, g in got.items()}, flush=True)
                path.unlink()
    write_report(args=args, command=command, rows=rows, load=(load_start, os.getloadavg()))


def write_report(*, args: argparse.Namespace, command: str, rows: list[tuple], load) -> None:
    """The Markdown report at ``args.out`` (atomically), also printed."""
    from benchmarks.records import write_markdown

    ways = args.ways.split(",")
    lines = [
        "# Ingest: driver memory and time, piece by piece vs the whole-file read",
        "",
        "Produced by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"What: `benchmarks/ingest_scale.py` (its docstring says how). {os.cpu_count()} cores. Load average "
        f"(1/5/15 min) at start {', '.join(f'{x:.1f}' for x in load[0])}, at end "
        f"{', '.join(f'{x:.1f}' for x in load[1])}. Growth = peak RSS during ingest minus RSS right before it.",
        "",
        "| format | rows | file (MiB) | " + " | ".join(f"{w}: growth (MiB) | {w}: seconds" for w in ways) + " |",
        "| --- | --- | --- | " + " | ".join("--- | ---" for _ in ways) + " |",
    ]
    for fmt, n, size, got in rows:
        cells = " | ".join(f"{got[w]['peak'] - got[w]['before']:.0f} | {got[w]['seconds']:.1f}" for w in ways)
        lines.append(f"| {fmt} | {n:,} | {size / 2**20:.0f} | {cells} |")
    lines.append("")
    for fmt in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == fmt]
        if len(mine) >= 2:
            (_, n0, _, a), (_, n1, _, b) = mine[0], mine[-1]
            lines.append(f"- {fmt}, from {n0:,} to {n1:,} rows, the growth changes by: " + "; ".join(
                f"{w} {(b[w]['peak'] - b[w]['before']) - (a[w]['peak'] - a[w]['before']):+.0f} MiB" for w in ways) + ".")
    lines.append("")
    write_markdown(lines=lines, out=args.out, repo=REPO)


if __name__ == "__main__":
    main()
