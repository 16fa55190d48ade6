"""`noiseal-ray report`: (re)write the HTML report of a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (the --out of `noiseal-ray run`).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file to write [default: RUN_DIR/report.html].")] = None,
) -> None:
    """Write a self-contained HTML report: R/P/H per round, confidence histograms, label changes.

    Example: noiseal-ray report runs/demo --out demo.html
    """
    from noiseal_ray.report import write_report

    path = write_report(run_dir=run_dir, out=out)
    typer.echo(f"wrote {path}")
