"""The per-worker train function in Ray Train's local mode (num_workers=0, in-process):
losses go down on separable data, checkpoints hold safetensors only, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from noiseal_ray.models.bundle import load_bundle, new_bundle, save_bundle
from noiseal_ray.train import TrainSpec, fit

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def dataset(n: int = 64):
    import ray.data

    words = [["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        y = i % 2
        text = " ".join(rng.choice(words[y], 5))
        part = [0, 1, 2][i % 3]
        rows.append({"text": text, "label": y, "part": part, "llm_label": y if part == 1 else -1})
    return ray.data.from_items(rows), rows


def spec(init_dir, epochs):
    return TrainSpec(init_dir=str(init_dir), epochs=epochs, seed=0, strong_lr=1e-3, weak_lr=1e-2, batch_size=16,
                     rce_a=-4.0, embmix_alpha=0.75, sharpen_t=0.5, loss_weights=(1.0, 1.0, 1.0), threads=1)


def test_local_fit_learns_and_writes_safetensors_bundle(ray_local, tiny_encoder, tmp_path):
    init = tmp_path / "init"
    save_bundle(new_bundle(strong_model=tiny_encoder, label_names=["neg", "pos"], max_length=16, weak_embed_dim=8,
                           weak_hidden=8, seed=0), init)
    ds, rows = dataset()
    out = tmp_path / "model"
    m = fit(spec=spec(init, 3), dataset=ds, workers=0, use_gpu=False, name="local", storage_path=str(tmp_path / "st"),
            max_failures=0, out_dir=str(out), test_dataset=ds.select_columns(["text", "label"]))
    assert m["epoch"] == 3 and m["steps"] == 4
    assert m["test_accuracy"] > 0.9  # separable toy data
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors") == [
        "optim_strong.safetensors", "optim_weak.safetensors", "strong.safetensors", "weak.safetensors"]
    assert json.loads((out / "train_state.json").read_text())["epochs_done"] == 3
    b = load_bundle(out)
    assert b.label_names == ["neg", "pos"] and b.weak is not None
