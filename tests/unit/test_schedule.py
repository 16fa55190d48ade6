"""The learning-rate schedule: linear decay over every epoch of a run, across its fits."""

from __future__ import annotations

import pytest

from noiseal_ray.train import TrainSpec, lr_factor, run_epoch_offset


def _spec(**kw):
    return TrainSpec(init_dir="x", epochs=1, seed=0, strong_lr=5e-5, weak_lr=1e-3, batch_size=32, rce_a=-4.0,
                     embmix_alpha=0.75, sharpen_t=0.5, loss_weights=(1.0, 1.0, 1.0), **kw)


def test_a_run_of_warmup_and_rounds_decays_linearly_across_its_fits():
    warmup, rounds, per_round = 2, 4, 1
    total = warmup + rounds * per_round
    factors = []
    for r, epochs in enumerate([warmup] + [per_round] * rounds):
        spec = _spec(lr_schedule="linear", total_epochs=total,
                     epoch_offset=run_epoch_offset(round_no=r, warmup_epochs=warmup, epochs_per_round=per_round))
        factors += [spec.lr_factor(e) for e in range(epochs)]
    assert factors == pytest.approx([1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])  # never 0: the last epoch still learns


def test_constant_or_standalone_fits_keep_the_rate():
    assert lr_factor(epoch=3, lr_schedule="constant", total_epochs=4) == 1.0
    assert _spec().lr_factor(5) == 1.0  # no total: a fit that is not part of a run


def test_unknown_schedule_is_a_config_error():
    from noiseal_ray.config import ConfigError, make_config

    with pytest.raises(ConfigError, match="lr_schedule"):
        make_config(overrides={"lr_schedule": "cosine"})


def test_batch_size_is_rows_per_step_over_all_workers():
    from noiseal_ray.train import per_worker_batch

    assert per_worker_batch(batch_size=32, workers=1) == 32
    assert per_worker_batch(batch_size=32, workers=2) == 16
    assert per_worker_batch(batch_size=32, workers=3) == 11  # rounded up: 33 rows a step, not 30
    assert per_worker_batch(batch_size=4, workers=8) == 1  # never an empty batch
    with pytest.raises(ValueError):
        per_worker_batch(batch_size=0, workers=2)
