"""Round tables (parquet folders under ``rounds/r{n}/``) as Ray Datasets: read, write in order.

Ray is imported inside the functions: importing it takes seconds, and ``--dry-run`` and the
unit tests that import the stages do not need it.
"""

from __future__ import annotations

from pathlib import Path

from noiseal_ray.rundir import parquet_rows

# Upper bound on rows per block when a table is split for an actor pool: enough blocks to keep
# every actor busy and to stream a large table through bounded memory.
MAX_BLOCK_ROWS = 8192


def read_dir(*, path: Path, columns: list[str] | None = None, min_blocks: int | None = None):
    """A table folder as a Ray Dataset (only ``columns``, when given).

    ``min_blocks``: cut it into at least that many blocks (streaming repartition, order kept), so
    that an actor pool of that size has work from the start: Ray Data reads a small table of
    several files as one block, which leaves all actors but one idle.
    """
    import ray.data  # deferred: heavy (module docstring)

    ds = ray.data.read_parquet(str(path))
    if columns:
        ds = ds.select_columns(columns)
    if min_blocks:
        per_block = max(1, min(MAX_BLOCK_ROWS, -(-parquet_rows(path) // (2 * min_blocks))))
        ds = ds.repartition(target_num_rows_per_block=per_block)
    return ds


def table_columns(path: Path) -> list[str]:
    """Column names of a table folder (its parquet schema; no Ray)."""
    import pyarrow.dataset as pads

    return list(pads.dataset(str(path), format="parquet").schema.names)


def write_dir(*, ds, final: Path) -> None:
    """Write dataset ``ds`` to the folder ``final`` atomically, rows in dataset order.

    Not ``ds.write_parquet``: it can reorder the rows within a file (see data/sink.py).
    """
    from noiseal_ray.data.sink import write_parquet_dir  # deferred: imports Ray

    write_parquet_dir(ds, final)


def fit_actors(*, actors: int, table_dir: Path, batch_rows: int) -> int:
    """No more actors than batches to process: an idle actor still costs a process and a model load."""
    return max(1, min(actors, -(-parquet_rows(table_dir) // max(batch_rows, 1))))
