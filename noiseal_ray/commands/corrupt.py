"""`noiseal-ray corrupt`: inject synthetic label noise, keeping the true label beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from noiseal_ray.commands.options import IdCol, LabelCol, TextCol


def corrupt(
    data: Annotated[str, typer.Option("--data", help="Input corpus (.csv, .jsonl, .parquet; local or URI).")],
    out: Annotated[Path, typer.Option("--out", help="Output file; format from its extension.")],
    noise: Annotated[str, typer.Option("--noise", help="sym | asym | idn")] = "sym",
    rate: Annotated[float, typer.Option("--rate", min=0.0, max=1.0, help="Noise rate r.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
    noisy_col: Annotated[str, typer.Option("--noisy-col", help="Name of the added column.")] = "noisy_label",
) -> None:
    """Write the input rows plus NOISY_COL, a corrupted copy of the label column.

    Example: noiseal-ray corrupt --data ../shared/data/trec/train.jsonl --noise asym --rate 0.4 --out trec_asym40.csv
    """
    from noiseal_ray.corrupt import corrupt_file

    stats = corrupt_file(data=data, out=str(out), kind=noise, rate=rate, seed=seed, text_col=text_col or "text",
                         label_col=label_col or "label", id_col=id_col, noisy_col=noisy_col)
    typer.echo(f"wrote {stats['rows']} rows to {out}: {stats['flipped']} labels changed "
               f"(realised rate {stats['realised_rate']:.4f}, {noise}, seed {seed})")
