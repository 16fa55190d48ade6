"""Real faults on one local Ray cluster (shared by this module):

* a Ray Train worker SIGKILLed during an epoch: FailureConfig restarts the worker group from the
  last checkpoint and the fit completes with a valid bundle;
* a whole run whose LLM server dies after a few requests: the run completes, the unanswered P
  rows are recorded as failed (llm_error), the API key reaches the server but no file;
* a killed write's leftovers (``.labels.parquet.tmp/`` with bogus rows, stray ``.*.tmp`` files)
  are ignored and cleaned by the rerun, which writes every id exactly once;
* long texts are flagged ``truncated`` at max_length.

Exactly-once ids on the sample and the driver SIGKILLed mid-round then rerun are in
tests/ray/test_pipeline.py (test_every_input_id_exactly_once,
test_sigkill_mid_round_then_rerun_matches_uninterrupted).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakellm import FakeLLM

from noiseal_ray.config import make_config
from noiseal_ray.pipeline import Progress, run_pipeline

pytestmark = pytest.mark.filterwarnings("ignore")

SECRET_ENV = "NOISEAL_RELIABILITY_KEY"
SECRET = "sk-reliability-" + "7" * 24


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # Set before ray.init: Ray workers (annotate actors) inherit the environment from here.
    old = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = SECRET
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:  # an overloaded machine: the raylet may miss Ray's 30 s window
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = old


# --------------------------------------------------------------------------------------------
# a Train worker killed during an epoch
# --------------------------------------------------------------------------------------------

STEPS_PER_EPOCH = 8  # 64 rows, batch 8 per step over 2 workers: 4 rows each, 32 rows per worker


def toy_rows(n: int = 64) -> list[dict]:
    words = [["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        y = i % 2
        part = i % 3
        rows.append({"text": " ".join(rng.choice(words[y], 5)), "label": y, "part": part,
                     "llm_label": y if part == 1 else -1})
    return rows


def test_train_worker_sigkilled_mid_epoch_restores_and_completes(ray_cluster, tiny_encoder, tmp_path):
    import ray.data

    from noiseal_ray.models.bundle import load_bundle, new_bundle, save_bundle
    from noiseal_ray.train import TrainSpec, fit

    init = tmp_path / "init"
    save_bundle(new_bundle(strong_model=tiny_encoder, label_names=["neg", "pos"], max_length=16, weak_embed_dim=8,
                           weak_hidden=8, seed=0), init)
    log = tmp_path / "log"
    log.mkdir()
    spec = TrainSpec(init_dir=str(init), epochs=2, seed=0, strong_lr=1e-3, weak_lr=1e-2, batch_size=8, rce_a=-4.0,
                     embmix_alpha=0.75, sharpen_t=0.5, loss_weights=(1.0, 1.0, 1.0), threads=1)
    out = tmp_path / "model"

    def killing_train_loop(config: dict) -> None:
        """``train_loop`` whose rank 1 SIGKILLs itself two steps into epoch 2, on the first attempt
        only (marker file); every attempt records whether it started from a checkpoint."""
        import ray.train

        import noiseal_ray.models.bundle as bundle_mod
        from noiseal_ray.train import STATE, train_loop

        log = Path(config["log_dir"])
        rank = ray.train.get_context().get_world_rank()
        ckpt = ray.train.get_checkpoint()
        done = 0
        if ckpt is not None:
            with ckpt.as_directory() as d:
                done = json.loads(Path(d, STATE).read_text())["epochs_done"]
        with open(log / f"attempts-rank{rank}.jsonl", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "epochs_done": done}) + "\n")
        marker = log / "killed"
        if rank == 1 and not marker.exists():
            real = bundle_mod.encode
            calls = {"n": 0}

            def encode(*args, **kw):
                calls["n"] += 1
                if calls["n"] == config["kill_at"]:
                    # Die only once Ray Train has registered epoch 1's checkpoint (its controller
                    # writes this snapshot): on a loaded machine rank 0's upload can lag rank 1's
                    # steps, and a kill before registration restarts from scratch, by design.
                    snap = Path(config["snapshot"])
                    deadline = time.monotonic() + 300
                    while time.monotonic() < deadline:
                        try:
                            if json.loads(snap.read_text())["latest_checkpoint_result"]["metrics"]["epoch"] >= 1:
                                break
                        except (OSError, ValueError, KeyError, TypeError):
                            pass
                        time.sleep(0.2)
                    marker.write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kw)

            bundle_mod.encode = encode
        train_loop(config)

    steps_per_epoch = STEPS_PER_EPOCH

    def loop(config: dict) -> None:
        killing_train_loop({**config, "log_dir": str(log), "kill_at": steps_per_epoch + 2,
                            "snapshot": str(tmp_path / "storage" / "killed-worker" / "checkpoint_manager_snapshot.json")})

    m = fit(spec=spec, dataset=ray.data.from_items(toy_rows()), workers=2, use_gpu=False, name="killed-worker",
            storage_path=str(tmp_path / "storage"), max_failures=1, out_dir=str(out), train_loop_fn=loop)

    assert (log / "killed").is_file()  # the fault happened ...
    attempts = [json.loads(x) for x in (log / "attempts-rank1.jsonl").read_text().splitlines()]
    assert len(attempts) == 2  # ... the worker group was restarted once ...
    assert attempts[0]["epochs_done"] == 0 and attempts[1]["epochs_done"] == 1  # ... from epoch 1's checkpoint
    assert attempts[1]["pid"] != attempts[0]["pid"]
    assert m["epoch"] == 2 and m["steps"] >= 1
    # The final checkpoint is a complete, loadable bundle (safetensors only).
    assert json.loads((out / "train_state.json").read_text())["epochs_done"] == 2
    b = load_bundle(out)
    assert b.label_names == ["neg", "pos"] and b.weak is not None
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))


# --------------------------------------------------------------------------------------------
# a whole run: LLM server dies mid-run; secret never written; long texts; leftovers on rerun
# --------------------------------------------------------------------------------------------

TOPICS = {"sport": ["goal", "match", "team", "coach", "score"], "money": ["bank", "stock", "price", "loan", "tax"],
          "tech": ["chip", "code", "robot", "data", "cloud"]}
LONG_IDS = {"doc-0", "doc-7", "doc-13"}


def corpus_rows(n: int = 60) -> list[dict]:
    rng = np.random.default_rng(1)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        y = names[i % 3]
        given = names[(i + 1) % 3] if i % 5 == 0 else y  # 20% noise
        k = 60 if f"doc-{i}" in LONG_IDS else 4
        rows.append({"doc": f"doc-{i}", "body": " ".join(rng.choice(TOPICS[y], k)), "topic": given})
    return rows


@pytest.fixture(scope="module")
def llm_run(ray_cluster, tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_run")
    data = root / "corpus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows()))
    srv = FakeLLM(die_after=2)
    overrides = dict(data=str(data), text_col="body", label_col="topic", id_col="doc", strong_model=tiny_encoder,
                     warmup_epochs=1, rounds=1, workers=1, annotator="llm", llm_endpoint=srv.url,
                     llm_api_key_env=SECRET_ENV, llm_retries=1, llm_timeout_s=10, max_length=16, batch_size=16,
                     weak_embed_dim=8, weak_hidden=8, demos=3, report=False, seed=0)
    out = root / "out"
    try:
        metrics = run_pipeline(config=make_config(overrides=overrides), out=out, progress=Progress(enabled=False))
    finally:
        srv.close()
    return out, metrics, srv, overrides


def labels_of(out: Path):
    return pq.read_table(out / "labels.parquet").to_pandas()


def test_llm_server_dies_mid_run_and_the_run_completes(llm_run):
    out, metrics, srv, _ = llm_run
    df = labels_of(out)
    assert len(df) == 60 and df["id"].is_unique and set(df["id"]) == {f"doc-{i}" for i in range(60)}
    p = df[df["partition"] == "P"]
    assert len(p), "no P rows: the LLM was never asked"
    # The fault happened: the server answered its first two requests, cut the third without a
    # response and stopped listening, while the run still had queries to send.
    assert srv.posts > srv.die_after == 2, f"the server never died: {srv.posts} requests, {srv.answered} answered"
    assert srv.answered == 2 and srv.dropped >= 1 and srv.dead.is_set()
    assert srv.posts == srv.answered + srv.dropped
    # Every P row has an LLM answer or a recorded error; the errors are the dead server's.
    assert (p["llm_label"].notna() | p["llm_error"].notna()).all()
    errors = df["llm_error"].dropna()
    assert len(errors) >= 1, "the dead server's failures were not recorded"
    assert all(e.startswith("connection:") for e in errors), errors.tolist()
    assert srv.answered <= 2
    # Exactly the two answers became annotator labels; no row holds both a label and an error.
    assert df["llm_label"].notna().sum() == srv.answered
    assert not (df["llm_label"].notna() & df["llm_error"].notna()).any()
    failed = df[df["llm_error"].notna() & (df["partition"] == "P")]
    assert len(failed) >= 1, "no P row of the final partition records the failure"
    assert failed["llm_label"].isna().all()
    assert (failed["final_label"] == failed["pred_label"]).all()  # documented: no answer -> prediction
    # metrics.json counts the failures: the final round's P failures are its "failed".
    assert metrics["final"]["annotator"]["failed"] >= len(failed)
    assert sum(e.get("annotator", {}).get("failed", 0) for e in metrics["rounds"]) >= len(errors)
    assert set(df["final_label"]) <= set(TOPICS)


def test_api_key_sent_but_never_written(llm_run):
    out, _, srv, _ = llm_run
    import ray

    assert len(srv.headers) == srv.posts > 0  # one entry per request the server received
    assert all(h.get("Authorization") == f"Bearer {SECRET}" for h in srv.headers)
    cfg_text = (out / "config.yaml").read_text()
    assert f"llm_api_key_env: {SECRET_ENV}" in cfg_text
    roots = [out, Path(ray._private.worker._global_node.get_session_dir_path())]
    leaked = []
    for root in roots:
        for p in root.rglob("*"):
            try:
                if p.is_file() and p.stat().st_size < 50_000_000 and SECRET.encode() in p.read_bytes():
                    leaked.append(str(p))
            except OSError:
                pass
    assert leaked == []


def test_long_texts_are_flagged_truncated(llm_run):
    df = labels_of(llm_run[0]).set_index("id")
    assert df.loc[sorted(LONG_IDS), "truncated"].all()
    assert not df.drop(index=sorted(LONG_IDS))["truncated"].any()
    assert len(df.loc["doc-0", "text"].split()) == 60  # the output keeps the whole text


def test_no_temp_leftovers_and_rerun_ignores_a_killed_writes_debris(llm_run):
    out, _, _, overrides = llm_run
    debris = [p for p in out.rglob("*") if ".tmp" in p.name or ".old-" in p.name or p.name.endswith(".copy")]
    debris = [p for p in debris if "checkpoints" not in p.relative_to(out).parts]
    assert debris == []
    before = labels_of(out).sort_values("id").reset_index(drop=True)

    # What a write killed half-way leaves: labels not yet recorded in the manifest, a temp dir
    # holding bogus rows (ids duplicated), half-written temp files of the JSON outputs.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stages"] = [s for s in manifest["stages"] if s not in ("labels", "model")]
    (out / "manifest.json").write_text(json.dumps(manifest))
    import shutil

    shutil.rmtree(out / "labels.parquet")
    tmp = out / ".labels.parquet.tmp"
    tmp.mkdir()
    pq.write_table(pa.Table.from_pandas(before.head(5)), tmp / "bogus.parquet")
    (tmp / "torn.parquet").write_bytes(b"PAR1\x00\x01garbage")
    (out / ".manifest.json.abc123.tmp").write_text('{"stages": ["bogus"')
    (out / ".metrics.json.abc123.tmp").write_text("{")

    run_pipeline(config=make_config(overrides=overrides), out=out, progress=Progress(enabled=False))
    after = labels_of(out).sort_values("id").reset_index(drop=True)
    assert len(after) == 60 and after["id"].is_unique
    assert after.equals(before)
    assert not tmp.exists()  # the killed write's temp dir was removed, never read
    assert not (out / ".manifest.json.abc123.tmp").exists()
    assert not (out / ".metrics.json.abc123.tmp").exists()
    assert json.loads((out / "manifest.json").read_text())["stages"][-2:] == ["labels", "model"]
