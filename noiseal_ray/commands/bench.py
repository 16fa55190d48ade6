"""`noiseal-ray bench`: the benchmark grid (quality vs baselines, and speed) -> benchmarks/RESULTS.md.

A thin wrapper: the work is in the repository's ``benchmarks/`` package (run from a checkout).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def _repo_root() -> Path:
    """The checkout holding ``benchmarks/``: this file's repository, else the working directory."""
    for cand in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (cand / "benchmarks" / "run.py").is_file():
            return cand
    from noiseal_ray.errors import ConfigError

    raise ConfigError("noiseal-ray bench needs the repository's benchmarks/ folder; run it from a checkout")


# Packages of the `bench` extra, by the method cells that import them.
BENCH_MODULES = {"cleanlab": ("cleanlab", "sklearn")}


def _check_bench_dependencies(*, methods: set[str]) -> None:
    """Stop before any cell runs, in one line, when a method of the grid lacks its package."""
    import importlib.util

    from noiseal_ray.errors import ConfigError

    missing = sorted({mod for m in methods for mod in BENCH_MODULES.get(m, ()) if importlib.util.find_spec(mod) is None})
    if missing:
        raise ConfigError(f"noiseal-ray bench needs {', '.join(missing)} (the 'bench' extra): run scripts/setup.sh, "
                          "or pip install 'noiseal-ray[bench]'")


def bench(
    grid: Annotated[str, typer.Option("--grid", help="smoke (plumbing and a first look, 1,000 rows, under 15 minutes) | trec (the headline claims, about 9 hours on 2 cores) | real (real rule-based noise, Hausa, about an hour) | breadth (NoisyAG-News real human noise and SST-2, about 70 minutes) | full (days)")] = "smoke",
    out: Annotated[Optional[Path], typer.Option("--out", help="Work folder for records and runs (default: benchmarks/out/GRID).")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="Markdown to write (default: benchmarks/RESULTS.md for trec, RESULTS-GRID.md otherwise).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Datasets folder (default: REPO/../shared/data).")] = None,
    only: Annotated[Optional[str], typer.Option("--only", help="quality | speed | report (render from existing records).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore existing records; rerun everything.")] = False,
    cells: Annotated[Optional[str], typer.Option("--cells", help="Comma-separated cell keys to run (parallel processes may share --out).")] = None,
    speed: Annotated[Optional[str], typer.Option("--speed", help="Comma-separated speed benchmarks: scoring,round_scaling,ddp.")] = None,
    keep_models: Annotated[bool, typer.Option("--keep-models", help="Keep each finished cell's checkpoints and weights (GBs a cell).")] = False,
) -> None:
    """Run the benchmark grid and write the results table (Markdown, CSV, JSON).

    Example: noiseal-ray bench --grid smoke
    """
    if only not in (None, "quality", "speed", "report"):
        raise typer.BadParameter("--only must be quality, speed or report")
    root = _repo_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.grid import GRIDS, get_grid
    from benchmarks.run import bench as run_bench

    if grid not in GRIDS:
        raise typer.BadParameter(f"--grid must be one of {', '.join(sorted(GRIDS))}")
    if only != "report":
        _check_bench_dependencies(methods={c.method for c in get_grid(grid).cells})

    argv = [f"--grid {grid}"] + [f"--{k.replace('_', '-')} {v}" for k, v in
                                 (("out", out), ("results", results), ("data_root", data_root), ("only", only),
                                  ("cells", cells), ("speed", speed)) if v]
    if fresh:
        argv.append("--fresh")
    if keep_models:
        argv.append("--keep-models")
    code = run_bench(grid=grid, out=str(out) if out else None, results=str(results) if results else None,
                     data_root=str(data_root) if data_root else None, only=only, fresh=fresh, keep_models=keep_models,
                     cells=set(cells.split(",")) if cells else None, speed_names=set(speed.split(",")) if speed else None,
                     command="noiseal-ray bench " + " ".join(argv))
    raise typer.Exit(code)
