"""deploy/serve.yaml deployed for real (see conftest.py: `serve run` of the file, the packaged
SmolLM2 on the CPU build of vLLM): it starts, answers a relabel request with a label from the
label set, carries the file's autoscaling settings, and listens where the file says."""

from __future__ import annotations

import psutil

from noiseal_ray.annotate.base import Demo, Query
from noiseal_ray.annotate.llm import LLMAnnotator

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def test_relabel_request_through_the_served_file_returns_a_label(served_app, fresh_cache_options) -> None:
    demos = (Demo("The team won the championship game in overtime.", 1, 0.8),
             Demo("Oil prices rose as markets reacted to supply cuts.", 2, 0.6))
    q = Query(id="0", text="The striker scored twice as the home side won the cup final.", given=0, demos=demos)
    ann = LLMAnnotator(**fresh_cache_options)
    assert ann.base_url == served_app.base_url
    (a,) = ann.annotate(queries=[q], label_names=LABELS)
    assert a.error is None and a.label in range(len(LABELS)), a
    assert ann.http_requests == 1


def test_the_files_autoscaling_settings_reach_the_deployment(served_app) -> None:
    from ray.serve.context import _get_global_client

    args = served_app.config["applications"][0]["args"]
    details = _get_global_client().get_serve_details()
    deployments = details["applications"][served_app.app_name]["deployments"]
    (engine,) = [d for name, d in deployments.items() if name.startswith("LLMServer")]
    auto = engine["deployment_config"]["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (args["min_replicas"], args["max_replicas"])
    assert auto["max_replicas"] > 1  # the file autoscales: a deployment of one fixed replica would not show it
    # The builder took the CPU path the laptop args ask for (the file itself says GPU): the engine's
    # processes get the CPU KV-cache setting and the replica actor reserves no CPU of its own.
    actor = engine["deployment_config"]["ray_actor_options"]
    assert actor["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1" and actor["num_cpus"] == 0


def test_the_proxy_listens_only_where_the_file_says(served_app) -> None:
    host = served_app.config["http_options"]["host"]
    listening = {c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == served_app.port}
    assert listening == {host} == {"127.0.0.1"}
