"""Score: both models of the previous round predict every row (Ray Data actor pool).

Ray is imported inside the functions: importing it takes seconds, and ``--dry-run`` and the
unit tests that import the stages do not need it.
"""

from __future__ import annotations

import os
from pathlib import Path

from noiseal_ray.config import RunConfig
from noiseal_ray.rundir import SCORE, round_stage
from noiseal_ray.score import Scorer
from noiseal_ray.stages.context import RunContext
from noiseal_ray.stages.tables import fit_actors, read_dir, write_dir


def score(*, table_dir: Path, model_dir: Path, out_dir: Path, config: RunConfig, actors: int) -> None:
    """Score the table ``table_dir`` with the bundle ``model_dir``; write ``out_dir``.

    Adds ``Scorer``'s columns (p_strong, p_weak, probs (C,), embedding (D,), pred, pred_prob,
    truncated) to every row, rows in input order; at most ``actors`` actors.
    """
    from ray.data import ActorPoolStrategy  # deferred: heavy (module docstring)

    actors = fit_actors(actors=actors, table_dir=table_dir, batch_rows=config.score_batch_size)
    ds = read_dir(path=table_dir, min_blocks=actors)
    threads = max(1, (os.cpu_count() or 1) // actors)
    ds = ds.map_batches(
        Scorer, fn_constructor_kwargs={"model_dir": str(model_dir), "batch_size": 32, "threads": threads},
        batch_size=config.score_batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors), num_cpus=1)
    write_dir(ds=ds, final=out_dir)


def score_stage(*, run: RunContext, round_no: int, actors: int) -> None:
    """Score round ``round_no``'s input with the previous round's models, unless done."""
    stage = round_stage(round_no=round_no, step=SCORE)
    if run.manifest.done(stage):
        return
    rd = run.round_dir(round_no)
    with run.progress.stage(f"{run.tag(round_no)} score with both models", rows=run.manifest.n_rows) as st:
        score(table_dir=run.input_table(round_no), model_dir=run.round_dir(round_no - 1) / "model",
              out_dir=rd / "scored", config=run.config, actors=actors)
    run.manifest.add_seconds("score", st["seconds"])
    run.manifest.mark(stage)
