"""`run --annotator llm` end to end against the session's SmolLM2 engine (no second engine):
every P row gets an LLM label from the label set or a recorded failure, one query per distinct
sample, and a rerun over the same inputs makes zero new queries (cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from noiseal_ray.config import make_config
from noiseal_ray.pipeline import Progress, run_pipeline, sample_data_path

NAMES = {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}


def test_llm_run_queries_each_p_sample_once_and_rerun_hits_cache(llm_spec, tiny_encoder, tmp_path):
    data = tmp_path / "trec150.csv"
    pacsv.write_csv(pacsv.read_csv(sample_data_path()).slice(0, 150), data)
    overrides = dict(data=str(data), label_col="noisy_label", clean_label_col="label", id_col="id",
                     strong_model=tiny_encoder, warmup_epochs=1, rounds=1, workers=1, annotator="llm",
                     llm_endpoint=llm_spec.options["base_url"], llm_model=llm_spec.options["model"],
                     max_length=32, weak_embed_dim=16, weak_hidden=16, report=False, demos=4)
    out = tmp_path / "run"
    metrics = run_pipeline(config=make_config(overrides=overrides), out=str(out), progress=Progress(enabled=False))
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert len(labels) == 150 and labels["id"].is_unique
    p = labels[labels["partition"] == "P"]
    assert len(p) > 0
    # Every P row: a label from the label set, or a recorded failure reason.
    assert (p["llm_label"].notna() | p["llm_error"].notna()).all()
    assert set(p["llm_label"].dropna()) <= NAMES
    queried = labels["llm_round"].notna().sum()
    assert metrics["annotator_queries"] == queried  # one query per distinct sample ever in P
    assert (out / "llm_cache").is_dir()

    # Rerun from the first scoring on a copy: the same prompts come back, all from the cache.
    again = tmp_path / "again"
    shutil.copytree(out, again)
    manifest = json.loads((again / "manifest.json").read_text())
    keep = manifest["stages"][: manifest["stages"].index("r1/score")]
    manifest["stages"] = keep
    manifest["rounds"] = {k: v for k, v in manifest["rounds"].items() if k == "train0"}
    manifest.pop("thresholds")  # the EMA state restarts from the warm-up, as in the first run
    (again / "manifest.json").write_text(json.dumps(manifest))
    for name in ("labels.parquet", "model", "metrics.json"):
        shutil.rmtree(again / name, ignore_errors=True) if (again / name).is_dir() else (again / name).unlink(missing_ok=True)
    m2 = run_pipeline(config=make_config(overrides=overrides), out=str(again), progress=Progress(enabled=False))
    assert m2["annotator_queries"] == 0
    hits = sum(r.get("annotator", {}).get("cache_hits", 0) for r in m2["rounds"])
    assert hits == queried
