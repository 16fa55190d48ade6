"""`noiseal-ray models`: prepare and locate the offline models."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare and locate the offline models.", no_args_is_help=True)


@app.command("prepare")
def prepare() -> None:
    """Convert the packaged SmolLM2 (GGUF) to a cached safetensors folder, once per machine.

    Example: noiseal-ray models prepare
    """
    from noiseal_ray.models.strong import default_encoder_path

    typer.echo(f"strong encoder: {default_encoder_path()}")
    try:
        from noiseal_ray.annotate.llm_model import prepare_default_llm
    except ModuleNotFoundError as exc:
        typer.echo(f"LLM: not available ({exc.name} missing)")
        return
    typer.echo(f"LLM: {prepare_default_llm()}")
