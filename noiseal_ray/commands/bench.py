"""`noiseal-ray bench`: the benchmark grid (quality vs baselines, and speed) -> benchmarks/RESULTS.md.

A thin wrapper: the flags and the work are in the repository's ``benchmarks/run.py`` (run from a
checkout), so that ``noiseal-ray bench ARGS`` and ``python -m benchmarks.run ARGS`` are one command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def _repo_root() -> Path:
    """The checkout holding ``benchmarks/``: this file's repository, else the working directory."""
    for cand in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (cand / "benchmarks" / "run.py").is_file():
            return cand
    from noiseal_ray.errors import ConfigError

    raise ConfigError("noiseal-ray bench needs the repository's benchmarks/ folder; run it from a checkout")


def bench(ctx: typer.Context) -> None:
    """Run the benchmark grid and write the results table (Markdown, CSV, JSON).

    Options: --grid, --out, --results, --data-root, --only, --fresh, --cells, --speed, --keep-models
    (`noiseal-ray bench --help` lists them). Example: noiseal-ray bench --grid smoke
    """
    root = _repo_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.run import main

    raise typer.Exit(main(list(ctx.args), prog="noiseal-ray bench"))


# How cli.py registers it: every argument, --help included, goes to benchmarks/run.py's parser.
SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
