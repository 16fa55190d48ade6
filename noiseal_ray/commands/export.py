"""`noiseal-ray export`: write a run's doubtful or changed labels for human review."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (the --out of `noiseal-ray run`).")],
    out: Annotated[Path, typer.Option("--out", help="File to write (.jsonl or .csv).")],
    subset: Annotated[str, typer.Option("--subset", help="H | P | changed | held (changes the run's change gate held back) | reviewed | all")] = "H",
    fmt: Annotated[str, typer.Option("--format", help="jsonl | csv | argilla (JSONL of Argilla records)")] = "jsonl",
    budget: Annotated[Optional[int], typer.Option("--budget", min=1, help="Only the N rows whose review is worth the most (any --subset ignored), most valuable first, each with why.")] = None,
    rule: Annotated[str, typer.Option("--rule", help="How --budget picks rows: moves (the default: random rows of each of the run's relabeling moves, so that the reviews, handed back as the exported file, can judge each move; then random rows) | doubt | disagree | random (an audit sample) | sample (at random, weighted by doubt) | mixed (half doubt, half random) | cover (one row per embedding cluster; costs a scoring pass).")] = "moves",
    spread: Annotated[str, typer.Option("--spread", help="Spread --budget over the suggested | given classes, the run's decisions (given -> suggested pairs), or none (not used by --rule moves and cover, which spread by the run's moves and by clusters).")] = "suggested",
) -> None:
    """Export id, text, given and suggested label, scores and a reason per row, for review.

    Feed the reviewed file to the next run with `noiseal-ray run --reviewed FILE` (any of the three
    formats; only the rows a reviewer answered count), or read it with noiseal_ray.export.read_review.

    Examples:
      noiseal-ray export runs/demo --subset changed --format argilla --out review.jsonl
      noiseal-ray export runs/demo --budget 200 --format csv --out review.csv
    """
    from noiseal_ray.errors import ConfigError
    from noiseal_ray.export import FORMATS, SUBSETS, export_review
    from noiseal_ray.review.budget import budget_records

    if subset not in SUBSETS:
        raise ConfigError(f"unknown --subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = None if budget is None else budget_records(run_dir=run_dir, budget=budget, rule=rule, spread=spread)
    n = export_review(run_dir=run_dir, out=out, subset=subset, fmt=fmt, records=records)
    what = f"{subset}" if budget is None else f"most-worth-reviewing (budget {budget}, rule {rule})"
    typer.echo(f"wrote {n:,} {what} record(s) to {out} ({fmt})")
