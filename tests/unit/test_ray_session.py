"""The Ray session helpers shared by the pipeline, the LLM service, --dry-run and the benchmarks."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("resources, expected", [({}, False), ({"GPU": 0.0}, False), ({"GPU": 0.5}, False),
                                                 ({"GPU": 1.0}, True), ({"CPU": 8.0, "GPU": 4.0}, True)])
def test_cluster_has_gpus_needs_one_whole_gpu(monkeypatch, resources, expected):
    """One check for training (use_gpu auto) and the LLM service (a {"GPU": 1} bundle)."""
    import ray

    from noiseal_ray.annotate import service
    from noiseal_ray.ray_session import cluster_has_gpus

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    assert cluster_has_gpus() is expected
    assert service.cluster_has_gpus is cluster_has_gpus


def test_local_ray_has_cpus_beyond_the_cores_and_the_workers(monkeypatch):
    from noiseal_ray.ray_session import local_num_cpus

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert local_num_cpus(workers=2) == 4
    assert local_num_cpus(workers=6) == 8
