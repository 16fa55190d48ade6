"""Order-preserving Parquet writes for Ray Data.

Ray Data's own ``write_parquet`` (Ray 2.60) hands each write task's blocks to
``pyarrow.dataset.write_dataset(use_threads=True)`` without ``preserve_order``, so the rows inside
a written file come out in a different order now and then (measured: 4 of 15 plain
read -> write runs of an 800-row table), whatever ``DataContext.preserve_order`` says. Every table a
run writes is read back by the next stage, and Ray Train's shards, the kNN batches and the
threshold sums all follow the physical row order: a reordered table made a resumed run, or
simply a second run, end with different labels. This sink writes each task's blocks in the
order they arrive, one file per write task named by its task index, so reading the folder back
(files in name order) gives the rows in dataset order.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterable

from ray.data import Datasink
from ray.data.block import Block, BlockAccessor


class OrderedParquetSink(Datasink):
    """Writes ``part-<task index>.parquet`` files into a local (or shared-filesystem) folder.

    Each file holds one write task's blocks, in the order Ray Data passes them; a retried task
    rewrites its file whole (temp name, then rename), so no reader sees a half-written file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def on_write_start(self, schema=None) -> None:
        os.makedirs(self.path, exist_ok=True)

    def write(self, blocks: Iterable[Block], ctx) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return 0
        schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
        final = os.path.join(self.path, f"part-{ctx.task_idx:06d}.parquet")
        tmp = os.path.join(self.path, f".{uuid.uuid4().hex}.tmp")
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for t in tables:
                    writer.write_table(t.select(schema.names).cast(schema))
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return sum(t.num_rows for t in tables)


def write_parquet_dir(ds, final: str | Path, *, prepare: Callable[[Path], None] | None = None) -> int:
    """Write ``ds`` to the folder ``final`` in dataset order, atomically; return the row count.

    ``prepare``, when given, is called with the written temporary folder before it is published
    (files ``part-*.parquet`` in row order), e.g. to number rows or drop a column file by file.

    Written under a temporary sibling folder, then renamed over ``final``: an interrupted write
    never leaves a partial ``final``, and an existing ``final`` is replaced whole. The count comes
    from the written files' footers, so the dataset is executed once.
    """
    from noiseal_ray.rundir import parquet_rows, replace_dir

    final = Path(final)
    tmp = final.parent / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ds.write_datasink(OrderedParquetSink(tmp))
    if not tmp.is_dir():  # an empty dataset runs no write task
        tmp.mkdir(parents=True)
    if prepare is not None:
        prepare(tmp)
    rows = parquet_rows(tmp)
    replace_dir(tmp, final)
    return rows
