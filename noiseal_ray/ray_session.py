"""The Ray session of a command: join a cluster or start a local one sized to this machine.

Ray is imported inside the functions: importing it takes seconds, and ``--help``, ``--dry-run``
and the unit tests do not need it.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator


def local_num_cpus(*, workers: int) -> int:
    """Logical CPUs of a local Ray started for ``workers`` train workers.

    More than the core count: train workers take one each and Ray Data's read tasks must still
    get a slot, or the pipeline waits forever on 2 cores.
    """
    return max(os.cpu_count() or 1, workers) + 2


@contextmanager
def ray_session(*, address: str | None, workers: int) -> Iterator[None]:
    """Join ``address`` or start a local Ray sized to this machine; shut down only what we started."""
    import ray  # deferred: heavy (module docstring)

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
        # address="local": always a new cluster of our own, never a stray one on this host.
        ray.init(address="local", num_cpus=local_num_cpus(workers=workers), **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def configure_data_context() -> None:
    """Ray Data settings of every run: no progress bars, rows kept in order."""
    from ray.data import DataContext  # deferred: heavy (module docstring)

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # deterministic shards: resumed == uninterrupted
    ctx.print_on_execution_start = False
    # Ray 2.60's new file datasource (a ListFiles task ahead of every read) took 2.4 s more than the
    # classic one to read a 1,000-row round table, 0.6 s more at 100,000 rows
    # (benchmarks/results/read_tables.md); a round reads its tables several times.
    ctx.use_datasource_v2 = False


def cluster_has_gpus() -> bool:
    """True when the connected Ray cluster advertises at least one whole GPU (what one train
    worker or one LLM replica asks for)."""
    import ray  # deferred: heavy (module docstring)

    return float(ray.cluster_resources().get("GPU", 0)) >= 1
