"""Batch prediction with a trained model folder, on Ray Data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from noiseal_ray.errors import InputError


def _read_dataset(path: str):
    import ray.data

    from noiseal_ray.data.io import detect_format

    fmt = detect_format(path)
    try:
        if fmt == "parquet":
            return ray.data.read_parquet(path)
        if fmt == "csv":
            return ray.data.read_csv(path)
        return ray.data.read_json(path, lines=True)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None


def predict(*, model_dir: str, data: str, out: str, text_col: str = "text", id_col: str | None = None,
            label_col: str | None = None, batch_size: int = 128, actors: int = 1) -> dict:
    """Predict every row of ``data`` with the strong model in ``model_dir``; write ``out``.

    Output columns: id (``id_col`` or the row number), pred_label, pred_prob and probs (one
    probability per label, in the model's label order, as a JSON list in CSV/JSONL). When
    ``label_col`` is given, returns the accuracy against it too. ``out`` with an extension is
    one file written atomically; without one it is a parquet folder (rows in input order, written atomically).
    """
    import ray
    from ray.data import ActorPoolStrategy

    from noiseal_ray.data.io import write_table
    from noiseal_ray.models.bundle import META
    from noiseal_ray.score import Scorer

    meta_path = Path(model_dir) / META
    if not meta_path.is_file():
        raise InputError(f"{model_dir} is not a noiseal-ray model folder (no {META})")
    names = json.loads(meta_path.read_text())["label_names"]
    index = {n: i for i, n in enumerate(names)}
    ds = _read_dataset(data)
    cols = ds.columns()
    for role, col in (("text", text_col), ("id", id_col), ("label", label_col)):
        if col is not None and col not in cols:
            raise InputError(f"{data}: {role} column {col!r} not found; columns are {cols}")
    if not ray.is_initialized():
        raise RuntimeError("predict needs an initialised Ray (the CLI starts one)")

    def prepare(batch: dict) -> dict:
        n = len(batch[text_col])
        out = {"text": np.array([str(t) for t in batch[text_col]], dtype=object)}
        # Without an id column the rows are numbered once they are in output order (finish_table).
        out["id"] = np.array([str(v) for v in batch[id_col]], dtype=object) if id_col else np.full(n, "", object)
        if label_col:
            out["label"] = np.array([index.get(str(v), -1) for v in batch[label_col]], dtype=np.int64)
        else:
            out["label"] = np.zeros(n, np.int64)
        return out

    def finish(batch: dict) -> dict:
        res = {"id": batch["id"], "pred_label": np.array(names, dtype=object)[batch["pred"]],
               "pred_prob": batch["pred_prob"].astype(np.float64), "probs": batch["probs"].astype(np.float64)}
        if label_col:
            res["label"] = batch["label"]
        return res

    scored = (ds.map_batches(prepare, batch_format="numpy")
              .map_batches(Scorer, fn_constructor_kwargs={"model_dir": model_dir, "with_embedding": False},
                           batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors))
              .map_batches(finish, batch_format="numpy"))
    tally = {"rows": 0, "known": 0, "right": 0}

    def finish_table(table):
        """Number the rows (no ``id_col``), count right predictions against ``label_col`` and drop
        it; tables arrive in output order, so row numbers continue from the previous one."""
        import pyarrow as pa

        n = table.num_rows
        if not id_col:
            ids = pa.array([str(i) for i in range(tally["rows"], tally["rows"] + n)], pa.string())
            table = table.set_column(table.column_names.index("id"), "id", ids)
        if label_col:
            lab = table.column("label").to_numpy()
            pred = np.array([index[p] for p in table.column("pred_label").to_pylist()], dtype=np.int64)
            known = lab >= 0
            tally["known"] += int(known.sum())
            tally["right"] += int((pred[known] == lab[known]).sum())
            table = table.drop(["label"])
        tally["rows"] += n
        return table

    if not Path(out).suffix:
        import pyarrow.parquet as pq

        from noiseal_ray.data.sink import write_parquet_dir

        def finish_folder(folder: Path) -> None:
            # Before the folder is published: one file at a time, in row order.
            for f in sorted(folder.glob("part-*.parquet")):
                pq.write_table(finish_table(pq.read_table(f)), f)

        write_parquet_dir(scored, out, prepare=finish_folder)
    else:
        import pyarrow as pa

        table = finish_table(pa.concat_tables(ray.get(scored.to_arrow_refs())))
        if not out.endswith(".parquet"):
            table = table.set_column(table.column_names.index("probs"), "probs",
                                     pa.array([json.dumps([round(x, 6) for x in p]) for p in table.column("probs").to_pylist()]))
        write_table(table, out)
    result: dict = {"rows": tally["rows"]}
    if label_col:
        result["accuracy"] = tally["right"] / tally["known"] if tally["known"] else None
        result["unknown_labels"] = tally["rows"] - tally["known"]
    return result
