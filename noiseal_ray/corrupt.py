"""Corrupt a labelled file with synthetic noise (the library side of `noiseal-ray corrupt`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from noiseal_ray.data.io import load_corpus, read_table, write_table
from noiseal_ray.data.noise import KINDS, idn_probs, inject_noise
from noiseal_ray.errors import ConfigError


def corrupt_file(*, data: str, out: str, kind: str, rate: float, seed: int, text_col: str = "text",
                 label_col: str = "label", id_col: str | None = None, noisy_col: str = "noisy_label") -> dict:
    """Write every input row plus ``noisy_col``; return rows, flipped count and realised rate.

    The original label column is kept unchanged so the truth stays known. Label values keep
    their spelling (as strings).
    """
    if kind not in KINDS:
        raise ConfigError(f"--noise must be one of {KINDS}, got {kind!r}")
    corpus = load_corpus(data, text_col=text_col, label_col=label_col, id_col=id_col)
    c = len(corpus.label_names)
    probs = None
    if kind == "idn":
        probs = idn_probs(corpus.texts.to_pylist(), corpus.labels, num_classes=c, seed=seed)
    noisy = inject_noise(corpus.labels, num_classes=c, kind=kind, rate=rate, seed=seed, probs=probs)
    table = read_table(data)
    if noisy_col in table.column_names:
        raise ConfigError(f"{data} already has a column {noisy_col!r}; pass another --noisy-col")
    names = np.array(corpus.label_names, dtype=object)
    table = table.append_column(noisy_col, pa.array(names[noisy].tolist(), pa.string()))
    write_table(table, out)
    flipped = int((noisy != corpus.labels).sum())
    return {"rows": len(noisy), "flipped": flipped, "realised_rate": flipped / max(len(noisy), 1)}
