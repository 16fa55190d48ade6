"""Batch prediction with a trained model folder, on Ray Data.

Ray is imported inside the functions: importing it takes seconds, and the CLI's other commands
do not need it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from noiseal_ray.data.io import check_columns, read_table, write_table
from noiseal_ray.errors import InputError
from noiseal_ray.score import Scorer

MAX_BLOCK_ROWS = 8192  # rows per block when the input is cut for several actors


def _model_labels(model_dir: str) -> list[str]:
    """The label names of the model folder ``model_dir``; InputError when it is not one."""
    from noiseal_ray.models.bundle import META  # deferred: the bundle module imports torch

    meta_path = Path(model_dir) / META
    if not meta_path.is_file():
        raise InputError(f"{model_dir} is not a noiseal-ray model folder (no {META})")
    return json.loads(meta_path.read_text())["label_names"]


def _prepare(batch: dict, *, text_col: str, id_col: str | None, label_col: str | None,
             label_names: list[str]) -> dict:
    """Input rows -> text, id ("" until ``_Tally`` numbers them when there is no id column) and
    label (index into ``label_names``, -1 unknown; 0 without a label column)."""
    n = len(batch[text_col])
    index = {name: i for i, name in enumerate(label_names)}
    out = {"text": np.array([str(t) for t in batch[text_col]], dtype=object)}
    out["id"] = np.array([str(v) for v in batch[id_col]], dtype=object) if id_col else np.full(n, "", object)
    if label_col:
        out["label"] = np.array([index.get(str(v), -1) for v in batch[label_col]], dtype=np.int64)
    else:
        out["label"] = np.zeros(n, np.int64)
    return out


def _finish(batch: dict, *, label_names: list[str], keep_label: bool) -> dict:
    """Scored rows -> id, pred_label, pred_prob, probs (C,) (and label, for the tally)."""
    res = {"id": batch["id"], "pred_label": np.array(label_names, dtype=object)[batch["pred"]],
           "pred_prob": batch["pred_prob"].astype(np.float64), "probs": batch["probs"].astype(np.float64)}
    if keep_label:
        res["label"] = batch["label"]
    return res


@dataclass
class _Tally:
    """Numbers the rows (no id column) and counts right predictions (label column), table by
    table in output order, so that row numbers continue from the previous table."""

    label_names: list[str]
    number_rows: bool
    has_label: bool
    counts: dict = field(default_factory=lambda: {"rows": 0, "known": 0, "right": 0})

    def __call__(self, table: pa.Table) -> pa.Table:
        n, seen = table.num_rows, self.counts["rows"]
        if self.number_rows:
            ids = pa.array([str(i) for i in range(seen, seen + n)], pa.string())
            table = table.set_column(table.column_names.index("id"), "id", ids)
        if self.has_label:
            index = {name: i for i, name in enumerate(self.label_names)}
            lab = table.column("label").to_numpy()
            pred = np.array([index[p] for p in table.column("pred_label").to_pylist()], dtype=np.int64)
            known = lab >= 0
            self.counts["known"] += int(known.sum())
            self.counts["right"] += int((pred[known] == lab[known]).sum())
            table = table.drop(["label"])
        self.counts["rows"] += n
        return table

    def result(self) -> dict:
        """rows; with a label column also accuracy (None when no label is known) and unknown_labels."""
        c = self.counts
        res: dict = {"rows": c["rows"]}
        if self.has_label:
            res["accuracy"] = c["right"] / c["known"] if c["known"] else None
            res["unknown_labels"] = c["rows"] - c["known"]
        return res


def _write(scored, out: str, tally: _Tally) -> None:
    """``out`` without an extension: a parquet folder; with one: one file (probs as JSON text
    unless parquet). Both written atomically, rows in input order."""
    import ray  # deferred: heavy (module docstring)

    from noiseal_ray.data.sink import write_parquet_dir  # deferred: imports Ray

    if not Path(out).suffix:
        def finish_folder(folder: Path) -> None:
            # Before the folder is published: one file at a time, in row order.
            for f in sorted(folder.glob("part-*.parquet")):
                pq.write_table(tally(pq.read_table(f)), f)

        write_parquet_dir(scored, out, prepare=finish_folder)
        return
    table = tally(pa.concat_tables(ray.get(scored.to_arrow_refs())))
    if not out.endswith(".parquet"):
        probs = [json.dumps([round(x, 6) for x in p]) for p in table.column("probs").to_pylist()]
        table = table.set_column(table.column_names.index("probs"), "probs", pa.array(probs))
    write_table(table, out)


def predict(*, model_dir: str, data: str, out: str, text_col: str = "text", id_col: str | None = None,
            label_col: str | None = None, batch_size: int = 128, actors: int = 1) -> dict:
    """Predict every row of ``data`` with the strong model in ``model_dir``; write ``out``.

    ``data`` is read like a corpus (``data.io.read_table``: CSV columns as strings). Output
    columns: id (``id_col`` or the row number), pred_label, pred_prob and probs (one probability
    per label, in the model's label order, as a JSON list in CSV/JSONL). Returns {"rows"}, and
    with ``label_col`` also "accuracy" and "unknown_labels". ``out`` with an extension is one file
    written atomically; without one it is a parquet folder (rows in input order, written atomically).
    """
    import ray  # deferred: heavy (module docstring)
    from ray.data import ActorPoolStrategy

    names = _model_labels(model_dir)
    table = read_table(data)
    check_columns(table=table, path=data, roles=(("text", text_col), ("id", id_col), ("label", label_col)), unique=False)
    if not ray.is_initialized():
        raise RuntimeError("predict needs an initialised Ray (the CLI starts one)")
    ds = ray.data.from_arrow(table)
    if actors > 1:  # one block would keep all actors but one idle
        ds = ds.repartition(target_num_rows_per_block=max(1, min(MAX_BLOCK_ROWS, -(-table.num_rows // (2 * actors)))))
    scored = (ds.map_batches(_prepare, batch_format="numpy", fn_kwargs={
                  "text_col": text_col, "id_col": id_col, "label_col": label_col, "label_names": names})
              .map_batches(Scorer, fn_constructor_kwargs={"model_dir": model_dir, "with_embedding": False},
                           batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors))
              .map_batches(_finish, batch_format="numpy", fn_kwargs={"label_names": names,
                                                                     "keep_label": bool(label_col)}))
    tally = _Tally(label_names=names, number_rows=not id_col, has_label=bool(label_col))
    _write(scored, out, tally)
    return tally.result()


def test_confusion(*, model_dir: str, data: str, text_col: str, label_col: str) -> np.ndarray:
    """(C, C) int64 confusion matrix (rows true label, columns predicted, in the model's label order)
    of the model in ``model_dir`` on the labelled rows of ``data`` (``predict``; rows whose label is
    not one of the model's count nowhere). Needs an initialised Ray."""
    import tempfile

    from noiseal_ray.metrics import confusion_matrix

    names = {name: i for i, name in enumerate(_model_labels(model_dir))}
    with tempfile.TemporaryDirectory() as tmp:
        predict(model_dir=model_dir, data=data, out=f"{tmp}/pred.parquet", text_col=text_col, label_col=label_col)
        pred = [names[p] for p in pq.read_table(f"{tmp}/pred.parquet", columns=["pred_label"]).column(0).to_pylist()]
    truth = [names.get(str(v), -1) for v in read_table(data).column(label_col).to_pylist()]
    return confusion_matrix(truth=np.asarray(truth), pred=np.asarray(pred), num_classes=len(names))
