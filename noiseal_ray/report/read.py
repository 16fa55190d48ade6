"""Reading a finished run directory: its checks, JSON/YAML files and parquet record batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from noiseal_ray.errors import InputError


def open_run(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path after checking it holds a finished run; else InputError."""
    p = Path(run_dir)
    if not p.exists():
        raise InputError(f"run directory {p} does not exist")
    if not p.is_dir():
        raise InputError(f"{p} is not a directory (expected a run directory written by `noiseal-ray run --out`)")
    if not (p / "manifest.json").is_file() or not (p / "config.yaml").is_file():
        raise InputError(f"{p} is not a noiseal-ray run directory (no manifest.json/config.yaml); "
                         "pass the --out directory of `noiseal-ray run`")
    missing = [n for n in ("metrics.json", "labels.parquet") if not (p / n).exists()]
    if missing:
        raise InputError(f"the run in {p} has not finished ({', '.join(missing)} missing); "
                         "rerun the same `noiseal-ray run` command to complete it")
    return p


def read_json(path: Path) -> dict:
    """The JSON object in ``path``; InputError (naming the file) when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def read_config(run: Path) -> dict:
    """The run's ``config.yaml`` as a dict ({} when empty); InputError when unreadable."""
    import yaml

    try:
        return yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {run / 'config.yaml'}: {exc}") from None


def iter_batches(path: Path, columns: list[str], batch_size: int = 65536) -> Iterator[Any]:
    """Record batches of a parquet directory (or file), restricted to ``columns`` present."""
    import pyarrow.dataset as pads

    ds = pads.dataset(str(path), format="parquet")
    cols = [c for c in columns if c in ds.schema.names]
    yield from ds.to_batches(columns=cols, batch_size=batch_size)


def parquet_columns(path: Path) -> list[str]:
    """Column names of a parquet directory (or file)."""
    import pyarrow.dataset as pads

    return list(pads.dataset(str(path), format="parquet").schema.names)


def label_codes(values: Any, *, index: dict[str, int]) -> np.ndarray:
    """Label strings (arrow or list) -> int64 codes of shape (len(values),); -1 for null/unknown."""
    import pandas as pd

    s = pd.Series(values.to_pylist() if hasattr(values, "to_pylist") else values, dtype=object)
    return s.map(index).fillna(-1).astype(np.int64).to_numpy()
