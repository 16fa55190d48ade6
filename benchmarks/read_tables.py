"""What one read of a round table costs with Ray Data's classic parquet datasource (what runs use,
``noiseal_ray.ray_session.configure_data_context``) and with Ray 2.60's new one (a ListFiles task
ahead of the read), at several table sizes.

    .venv/bin/python -m benchmarks.read_tables                  # 1k and 100k rows, 5 reads each
    .venv/bin/python -m benchmarks.read_tables --rows 1000 --repeats 3 --out /tmp/read_tables.md

Tables are written as a round writes them (8 parquet files: id, text, label and a 384-float embedding,
as in a scored table). Each read is ``noiseal_ray.stages.tables.read_dir`` with ``min_blocks=2`` (as the
scoring and annotate stages call it), materialised; the two datasources alternate, on one local Ray
cluster started as a run starts it. Figures are printed and written with the command to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
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
    p.add_argument("--rows", default="1000,100000", help="table sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=5, help="reads per datasource and size")
    p.add_argument("--out", default="benchmarks/results/read_tables.md")
    return p.parse_args(argv)


def write_table(*, folder: Path, n: int) -> Path:
    """A round-like table of ``n`` rows in 8 parquet files under ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, 384)).astype(np.float32)
    t = pa.table({"id": [f"row-{i}" for i in range(n)], "text": [f"a short text number {i}" for i in range(n)],
                  "label": rng.integers(0, 6, n),
                  "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 384)})
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-n // 8)
    for i, s in enumerate(range(0, n, step)):
        pq.write_table(t.slice(s, step), folder / f"part-{i:05d}.parquet")
    return folder


def time_read(folder: Path, *, v2: bool) -> float:
    """Seconds to read ``folder`` through ``read_dir`` with the given datasource, materialised."""
    from ray.data import DataContext

    from noiseal_ray.stages.tables import read_dir

    DataContext.get_current().use_datasource_v2 = v2
    t0 = time.monotonic()
    ds = read_dir(path=folder, min_blocks=2).materialize()
    seconds = time.monotonic() - t0
    assert ds.count() > 0
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    """Time every size with both datasources, print and write the table."""
    args = parse_args(argv)
    command = " ".join(["python -m benchmarks.read_tables", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    from noiseal_ray.ray_session import configure_data_context, ray_session

    rows = []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="noiseal-read-") as tmp, ray_session(address=None, workers=2):
        configure_data_context()
        for n in [int(x) for x in args.rows.split(",")]:
            folder = write_table(folder=Path(tmp) / f"t{n}", n=n)
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for v2 in (True, False):
                    times[v2].append(time_read(folder, v2=v2))
            new, classic = statistics.median(times[True]), statistics.median(times[False])
            rows.append((n, new, classic, min(times[True]), max(times[True]), min(times[False]), max(times[False])))
            print(f"{n:>7} rows: new datasource {new:.2f} s, classic {classic:.2f} s (medians of {args.repeats})",
                  flush=True)
        configure_data_context()  # back to what runs use
    write_report(args=args, command=command, rows=rows, load=(load_start, os.getloadavg()))


def write_report(*, args: argparse.Namespace, command: str, rows: list[tuple], load) -> None:
    """The Markdown report at ``args.out`` (atomically), also printed."""
    from benchmarks.records import write_markdown

    lines = [
        "# One read of a round table: Ray Data's new parquet datasource vs the classic one",
        "",
        "Produced by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"What: `benchmarks/read_tables.py` (its docstring says what is read and how). {args.repeats} reads per "
        f"datasource and size, alternating; {os.cpu_count()} cores. Load average (1/5/15 min) at start "
        f"{', '.join(f'{x:.1f}' for x in load[0])}, at end {', '.join(f'{x:.1f}' for x in load[1])}.",
        "",
        "| rows | new datasource, median s (min-max) | classic, median s (min-max) | new - classic (s) |",
        "| --- | --- | --- | --- |",
    ]
    for n, new, classic, nlo, nhi, clo, chi in rows:
        lines.append(f"| {n} | {new:.2f} ({nlo:.2f}-{nhi:.2f}) | {classic:.2f} ({clo:.2f}-{chi:.2f}) | "
                     f"**{new - classic:+.2f}** |")
    lines.append("")
    write_markdown(lines=lines, out=args.out, repo=REPO)


if __name__ == "__main__":
    main()
