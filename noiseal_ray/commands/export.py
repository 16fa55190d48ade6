"""`noiseal-ray export`: write a run's doubtful or changed labels for human review."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (the --out of `noiseal-ray run`).")],
    out: Annotated[Path, typer.Option("--out", help="File to write (.jsonl or .csv).")],
    subset: Annotated[str, typer.Option("--subset", help="H | P | changed | all")] = "H",
    fmt: Annotated[str, typer.Option("--format", help="jsonl | csv | argilla (JSONL of Argilla records)")] = "jsonl",
) -> None:
    """Export id, text, given and suggested label, scores and a reason per row, for review.

    Read the reviewed file back with noiseal_ray.export.read_review (any of the three formats).

    Example: noiseal-ray export runs/demo --subset changed --format argilla --out review.jsonl
    """
    from noiseal_ray.errors import ConfigError
    from noiseal_ray.export import FORMATS, SUBSETS, export_review

    if subset not in SUBSETS:
        raise ConfigError(f"unknown --subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    n = export_review(run_dir=run_dir, out=out, subset=subset, fmt=fmt)
    typer.echo(f"wrote {n:,} {subset} record(s) to {out} ({fmt})")
