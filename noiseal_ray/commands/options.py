"""Shared typer option aliases (one definition per flag used by several commands)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

TextCol = Annotated[Optional[str], typer.Option("--text-col", help="Column holding the text [default: text].")]
LabelCol = Annotated[Optional[str], typer.Option("--label-col", help="Column holding the given label [default: label].")]
IdCol = Annotated[Optional[str], typer.Option("--id-col", help="Column holding a unique id (default: row number).")]
Address = Annotated[Optional[str], typer.Option("--address", help="Ray cluster address to join (default: start a local Ray).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed [default: 0].")]
