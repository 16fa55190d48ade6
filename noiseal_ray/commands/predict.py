"""`noiseal-ray predict`: batch prediction with a trained model folder (Ray Data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from noiseal_ray.commands.options import Address, IdCol, TextCol


def predict(
    model: Annotated[Path, typer.Option("--model", help="Model folder, e.g. RUN_DIR/model.")],
    data: Annotated[str, typer.Option("--data", help="Texts to label (.csv/.jsonl/.parquet).")],
    out: Annotated[str, typer.Option("--out", help="Output file (.parquet/.csv/.jsonl), or a folder (no extension).")],
    text_col: TextCol = None,
    id_col: IdCol = None,
    label_col: Annotated[Optional[str], typer.Option("--label-col", help="If given, also report accuracy against it.")] = None,
    address: Address = None,
    actors: Annotated[int, typer.Option("--actors", min=1, help="Scoring actors.")] = 1,
) -> None:
    """Predict labels with their probabilities.

    Example: noiseal-ray predict --model runs/demo/model --data test.csv --label-col label --out preds.csv
    """
    # Deferred: cli.py imports every command module, and --help must not load Ray or the models.
    from noiseal_ray.predict import predict as run_predict
    from noiseal_ray.ray_session import configure_data_context, ray_session

    with ray_session(address=address, workers=actors):
        configure_data_context()
        res = run_predict(model_dir=str(model), data=data, out=out, text_col=text_col or "text", id_col=id_col,
                          label_col=label_col, actors=actors)
    line = f"wrote {res['rows']} predictions to {out}"
    if res.get("accuracy") is not None:
        line += f"; accuracy {res['accuracy']:.4f} against {label_col}"
        if res.get("unknown_labels"):
            line += f" ({res['unknown_labels']} rows with labels the model does not know)"
    typer.echo(line)
