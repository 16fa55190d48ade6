"""The pipeline on a multi-node Ray cluster on this host (``ray.cluster_utils.Cluster``): a head
node and two worker nodes, 2 logical CPUs each.

1. A clean run with 2 Train workers placed on two different nodes (placement strategy SPREAD).
2. The same run while the node of one Train worker (never the head) is removed after the
   warm-up's first epoch was checkpointed: Ray Train restarts the worker group on the remaining
   nodes (4 CPUs left: room for 2 Train workers and Ray Data's tasks), restores the
   checkpoint (the restarted workers see it), the run finishes and ``labels.parquet`` holds the
   same ids as the clean run, each exactly once.

Placement: the run sets ``train_placement="SPREAD"`` (Ray's default PACK would put both workers on
one 2-CPU node); the test checks from the workers' own records that they ran on different nodes.

Kept small for CI (300 rows, tiny encoder, 2 warm-up epochs, rounds=0: the warm-up fit, then the
final score / partition / annotate / labels stages; the round loop itself is covered by
tests/ray/test_pipeline.py).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from noiseal_ray.config import make_config
from noiseal_ray.pipeline import Progress, run_pipeline, sample_data_path

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

N_ROWS = 300
HOLD_S = 180  # how long the first attempt waits after its first checkpoint for the node removal


# --------------------------------------------------------------------------------------------
# the per-worker wrapper and the fit_fn handed to run_pipeline
# --------------------------------------------------------------------------------------------

def _recording_loop(config: dict, marker_dir: str, run: str, hold: bool) -> None:
    """Record (rank, node, restored) of this Train worker, then run the real train loop.

    With ``hold`` and no checkpoint to restore, every worker waits after its first report (the
    checkpoint of epoch 1 is persisted by then) until the test removed a node or HOLD_S passed.
    """
    import os

    import ray
    import ray.train

    from noiseal_ray.train import train_loop

    rank = ray.train.get_context().get_world_rank()
    restored = ray.train.get_checkpoint() is not None
    rec = {"rank": rank, "node": ray.get_runtime_context().get_node_id(), "restored": restored, "pid": os.getpid()}
    with open(Path(marker_dir) / f"{run}.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if not (hold and not restored):
        train_loop(config)
        return
    original = ray.train.report

    def report(metrics, checkpoint=None, **kw):
        original(metrics, checkpoint=checkpoint, **kw)
        Path(marker_dir, f"{run}.reported-{rank}").touch()
        deadline = time.time() + HOLD_S
        while time.time() < deadline and not Path(marker_dir, f"{run}.released").exists():
            time.sleep(0.2)

    ray.train.report = report
    try:
        train_loop(config)
    finally:
        ray.train.report = original


def make_fit_fn(marker_dir: Path, *, hold_warmup: bool):
    """A ``fit_fn`` for run_pipeline: noiseal_ray.train.fit with the recording loop."""
    from noiseal_ray import train as train_mod

    def fit_fn(**kw):
        name = kw["name"]
        hold = hold_warmup and name.endswith("-r0")

        def loop(config):
            _recording_loop(config, str(marker_dir), name, hold)

        return train_mod.fit(**kw, train_loop_fn=loop)

    return fit_fn


def records(marker_dir: Path, run: str) -> list[dict]:
    p = marker_dir / f"{run}.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    # The wrapper above must reach Train workers by value (they cannot import this test module).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Head 2 CPUs (the spare capacity for the restarted worker group) + 2 worker nodes of 2 CPUs.
    # Every node is a raylet with its own pool of Python workers: on 2 cores, fewer nodes is faster.
    from ray._common.utils import reset_ray_address

    def start():
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        # Cluster records its address in /tmp/ray/ray_current_cluster, where every plain ray.init()
        # on this host would find it and join this test's cluster (or fail: "When connecting to an
        # existing cluster, num_cpus ... must not be provided"). Drop it: we connect explicitly.
        reset_ray_address()
        try:
            workers = [c.add_node(num_cpus=2) for _ in range(2)]
            c.wait_for_nodes()
        except Exception:
            c.shutdown()
            raise
        return c, workers

    try:
        c, workers = start()
    except Exception:
        # A raylet has 30 s (fixed in Ray) to register with the GCS; on an overloaded host one
        # start may miss it. One retry.
        c, workers = start()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    import pandas as pd

    p = tmp_path_factory.mktemp("data") / "trec_300.csv"
    pd.read_csv(sample_data_path()).head(N_ROWS).to_csv(p, index=False)
    return str(p)


def config(tiny_encoder: str, data: str):
    return make_config(overrides=dict(
        data=data, label_col="noisy_label", clean_label_col="label", id_col="id", strong_model=tiny_encoder,
        warmup_epochs=2, rounds=0, workers=2, train_placement="SPREAD", annotator="knn", max_length=32, weak_embed_dim=16, weak_hidden=16,
        report=False, seed=5, max_failures=2))


@pytest.fixture(scope="module")
def clean_run(cluster, tiny_encoder, corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    markers = base / "markers"
    markers.mkdir()
    out = base / "out"
    run_pipeline(config=config(tiny_encoder, corpus), out=str(out), progress=Progress(enabled=False),
                 fit_fn=make_fit_fn(markers, hold_warmup=False))
    return out, markers


def labels(out: Path):
    return pq.read_table(out / "labels.parquet").to_pandas()


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

def test_train_workers_spread_over_nodes(cluster, clean_run):
    c, workers = cluster
    out, markers = clean_run
    head = c.head_node.node_id
    recs = records(markers, f"{out.name}-r0")
    assert sorted(x["rank"] for x in recs) == [0, 1], recs
    nodes = {x["node"] for x in recs}
    assert len(nodes) == 2, f"both Train workers on one node: {recs}"
    assert nodes <= {w.node_id for w in workers} | {head}, recs
    assert not any(x["restored"] for x in recs)
    lab = labels(out)
    assert len(lab) == N_ROWS and lab["id"].is_unique


def test_node_removed_mid_training_restores_checkpoint_and_finishes(cluster, clean_run, tiny_encoder, corpus,
                                                                     tmp_path):
    import ray

    c, workers = cluster
    ref_out, _ = clean_run
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    run = f"{out.name}-r0"
    head = c.head_node.node_id
    by_id = {w.node_id: w for w in workers}
    removed: dict = {}

    def remove_a_train_node():
        """Wait until both workers of the warm-up fit reported epoch 1 (checkpoint persisted), then
        remove the node of one of them (never the head) and release the other."""
        try:
            deadline = time.time() + 600
            while time.time() < deadline:
                recs = records(markers, run)
                if len(recs) >= 2 and all((markers / f"{run}.reported-{x['rank']}").exists() for x in recs):
                    break
                time.sleep(0.3)
            else:
                removed["error"] = "the warm-up fit never reported its first epoch"
                return
            # The controller registers the checkpoint when it next polls the workers.
            time.sleep(5)
            victim = next(x for x in recs if x["node"] != head and x["node"] in by_id)
            removed.update(node=victim["node"], rank=victim["rank"], at=time.time())
            c.remove_node(by_id[victim["node"]])
        except Exception as exc:  # reported by the test thread below
            removed["error"] = repr(exc)
        finally:
            (markers / f"{run}.released").touch()

    t = threading.Thread(target=remove_a_train_node, daemon=True)
    t.start()
    t0 = time.time()
    metrics = run_pipeline(config=config(tiny_encoder, corpus), out=str(out), progress=Progress(enabled=False),
                           fit_fn=make_fit_fn(markers, hold_warmup=True))
    t.join(timeout=30)
    assert "error" not in removed, removed
    assert removed.get("node"), "no node was removed"
    assert removed["node"] not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}

    recs = records(markers, run)
    first, again = [x for x in recs if not x["restored"]], [x for x in recs if x["restored"]]
    assert len(first) == 2, recs
    # The worker group restarted once, on live nodes, from the epoch-1 checkpoint.
    assert sorted(x["rank"] for x in again) == [0, 1], recs
    assert all(x["node"] != removed["node"] for x in again), recs
    assert metrics["rounds"][0]["train"]["epoch"] == 2  # the warm-up finished its 2 epochs

    a = labels(ref_out).sort_values("id").reset_index(drop=True)
    b = labels(out).sort_values("id").reset_index(drop=True)
    assert len(b) == N_ROWS and b["id"].is_unique
    assert list(a["id"]) == list(b["id"])
    assert set(b["partition"]) <= {"R", "P", "H"}
    print(f"node {removed['node'][:8]} (rank {removed['rank']}) removed; run finished "
          f"{time.time() - removed['at']:.0f}s later, {time.time() - t0:.0f}s in all")
