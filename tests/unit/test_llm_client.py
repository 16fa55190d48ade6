"""LLMAnnotator against a scripted loopback OpenAI-compatible server (no Ray, no vLLM):
retries, error kinds, bounded concurrency, the answer cache, the API key."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from noiseal_ray.annotate.base import AnnotatorStats, Demo, Query
from noiseal_ray.annotate.cache import AnswerCache, CachedAnswer
from noiseal_ray.annotate.llm import LLMAnnotator, check_endpoint, llm_backend
from noiseal_ray.config import RunConfig
from noiseal_ray.errors import AnnotatorError

LABELS = ["World", "Sports", "Business"]

# handler(body, call_index) -> (status, json_payload)
Script = Callable[[dict[str, Any], int], tuple[int, Any]]


def completion(content: str, logprobs: list[float] | None = None) -> dict[str, Any]:
    lp = None if logprobs is None else {"content": [{"token": "t", "logprob": x} for x in logprobs]}
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": lp}]}


class FakeServer:
    def __init__(self, script: Script, *, delay_s: float = 0.0) -> None:
        self.script = script
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"data": [{"id": "fake-model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    idx = len(server.calls)
                    server.calls.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    status, payload = server.script(body, idx)
                finally:
                    # Before the answer goes out: once the client has it, it may send its next request
                    # before this thread runs again, and a loaded machine would count one too many.
                    with server.lock:
                        server.in_flight -= 1
                self._send(status, payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve_script() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(script: Script, **kw: Any) -> FakeServer:
        s = FakeServer(script, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def queries(n: int, **kw: Any) -> list[Query]:
    return [Query(id=str(i), text=f"text {i}", given=0, demos=(Demo("d", 1, 0.5),), **kw) for i in range(n)]


def first_choice(body: dict[str, Any], _i: int) -> tuple[int, Any]:
    return 200, completion(body["structured_outputs"]["choice"][0], [-0.25, -0.25])


def test_answers_follow_the_choice_and_sum_logprobs(serve_script: Callable[..., FakeServer]) -> None:
    srv = serve_script(first_choice)
    ann = LLMAnnotator(base_url=srv.url, model="fake-model", concurrency=4)
    answers = ann.annotate(queries=queries(3, candidates=(2, 1)), label_names=LABELS)
    assert [a.label for a in answers] == [2, 2, 2]
    assert all(a.logprob == pytest.approx(-0.5) and a.error is None and not a.cached for a in answers)
    body = srv.calls[0]
    assert body["structured_outputs"] == {"choice": ["Business", "Sports"]}
    assert body["temperature"] == 0 and body["model"] == "fake-model"


def test_retries_5xx_then_succeeds(serve_script: Callable[..., FakeServer]) -> None:
    srv = serve_script(lambda b, i: (503, {"error": "busy"}) if i < 2 else first_choice(b, i))
    ann = LLMAnnotator(base_url=srv.url, model="m", retries=3, backoff_s=0.01, concurrency=1)
    [answer] = ann.annotate(queries=queries(1), label_names=LABELS)
    assert answer.label == 0 and len(srv.calls) == 3 and ann.http_requests == 3


def test_failures_are_recorded_not_raised(serve_script: Callable[..., FakeServer]) -> None:
    def script(body: dict[str, Any], i: int) -> tuple[int, Any]:
        text = body["messages"][-1]["content"]
        if "text 0" in text:
            return 400, {"error": "context too long"}
        if "text 1" in text:
            return 200, completion("Politics", [-0.1])
        if "text 2" in text:
            return 200, {"unexpected": True}
        if "text 3" in text:
            return 500, {"error": "boom"}
        return 200, completion("Sports", [-3.0])

    srv = serve_script(script)
    ann = LLMAnnotator(base_url=srv.url, model="m", retries=1, backoff_s=0.01, min_logprob=-1.0)
    answers = ann.annotate(queries=queries(5), label_names=LABELS)
    kinds = [a.error.split(":", 1)[0] if a.error else None for a in answers]
    assert kinds == ["http_400", "unparseable", "bad_response", "http_500", "low_logprob"]
    assert all(a.label is None for a in answers)
    # 400 is not retried; 500 is retried once.
    assert sum("text 0" in c["messages"][-1]["content"] for c in srv.calls) == 1
    assert sum("text 3" in c["messages"][-1]["content"] for c in srv.calls) == 2
    stats = AnnotatorStats()
    stats.add(answers)
    assert stats.failed == 5 and stats.errors["low_logprob"] == 1


def test_unreachable_endpoint_gives_connection_errors() -> None:
    ann = LLMAnnotator(base_url=closed_port_url(), model="m", retries=1, backoff_s=0.01, timeout_s=5)
    answers = ann.annotate(queries=queries(3), label_names=LABELS)
    assert all(a.label is None and a.error.startswith("connection:") for a in answers)
    assert ann.http_requests == 6


def test_concurrency_is_bounded(serve_script: Callable[..., FakeServer]) -> None:
    srv = serve_script(first_choice, delay_s=0.1)
    ann = LLMAnnotator(base_url=srv.url, model="m", concurrency=3)
    ann.annotate(queries=queries(12), label_names=LABELS)
    assert srv.max_in_flight == 3


def test_cache_persists_successes_only(serve_script: Callable[..., FakeServer], tmp_path: Path) -> None:
    srv = serve_script(lambda b, i: (500, {}) if "text 1" in b["messages"][-1]["content"] else first_choice(b, i))
    cache_dir = tmp_path / "llm_cache"
    first = LLMAnnotator(base_url=srv.url, model="m", retries=0, cache_dir=str(cache_dir), min_logprob=-0.1)
    a1 = first.annotate(queries=queries(3), label_names=LABELS)
    assert [a.error.split(":")[0] if a.error else None for a in a1] == ["low_logprob", "http_500", "low_logprob"]
    assert len(list(cache_dir.glob("part-*.parquet"))) == 1
    assert not list(cache_dir.glob(".tmp-*"))

    # A new annotator (new actor / rerun) with a looser threshold: the two parsed answers come
    # from the cache, the failed one is asked again.
    second = LLMAnnotator(base_url=srv.url, model="m", retries=0, cache_dir=str(cache_dir))
    before = len(srv.calls)
    a2 = second.annotate(queries=queries(3), label_names=LABELS)
    assert [a.cached for a in a2] == [True, False, True]
    assert a2[0].label == 0 and a2[0].logprob == pytest.approx(-0.5)
    assert len(srv.calls) - before == 1 == second.http_requests

    # Another model or other candidates are other keys.
    other = LLMAnnotator(base_url=srv.url, model="m2", retries=0, cache_dir=str(cache_dir))
    assert not any(a.cached for a in other.annotate(queries=queries(1), label_names=LABELS))
    assert not any(a.cached for a in second.annotate(queries=queries(1, candidates=(1, 2)), label_names=LABELS))


def test_cache_parts_from_concurrent_writers(tmp_path: Path) -> None:
    caches = [AnswerCache(directory=tmp_path) for _ in range(4)]

    def write(c: AnswerCache, n: int) -> None:
        for j in range(5):
            c.add([(f"k{n}-{j}", CachedAnswer(label=n % 3, choice=LABELS[n % 3], logprob=-1.0))], model="m")

    threads = [threading.Thread(target=write, args=(c, n)) for n, c in enumerate(caches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(tmp_path.glob("part-*.parquet"))) == 20
    merged = AnswerCache(directory=tmp_path)
    assert len(merged) == 20 and merged.get("k3-4") == CachedAnswer(label=0, choice="World", logprob=-1.0)


def test_api_key_is_sent_but_never_written(
    serve_script: Callable[..., FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-" + "9" * 24
    monkeypatch.setenv("NOISEAL_TEST_KEY", secret)
    srv = serve_script(first_choice)
    cfg = RunConfig(annotator="llm", llm_endpoint=srv.url, llm_api_key_env="NOISEAL_TEST_KEY")
    with llm_backend(config=cfg, run_dir=str(tmp_path)) as spec:
        assert spec.kind == "llm" and spec.options["model"] == "fake-model"
        assert secret not in repr(spec.options)
        ann = LLMAnnotator(**spec.options)
        ann.annotate(queries=queries(2), label_names=LABELS)
    assert all(h.get("Authorization") == f"Bearer {secret}" for h in srv.headers)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written  # the cache was written ...
    assert all(secret.encode() not in p.read_bytes() for p in written)  # ... without the key


def test_backend_unreachable_raises_or_falls_back(tmp_path: Path) -> None:
    cfg = RunConfig(annotator="llm", llm_endpoint=closed_port_url())
    with pytest.raises(AnnotatorError, match="unreachable"):
        with llm_backend(config=cfg, run_dir=str(tmp_path)):
            pass
    cfg.annotator_fallback = "knn"
    with llm_backend(config=cfg, run_dir=str(tmp_path)) as spec:
        assert spec.kind == "knn"


def test_check_endpoint_model_selection(serve_script: Callable[..., FakeServer]) -> None:
    srv = serve_script(first_choice)
    assert check_endpoint(base_url=srv.url, api_key_env=None, model=None) == "fake-model"
    with pytest.raises(AnnotatorError, match="does not serve"):
        check_endpoint(base_url=srv.url, api_key_env=None, model="other")


def test_serve_command_is_cheap_to_import_and_documented() -> None:
    import subprocess
    import sys

    code = (
        "import sys, noiseal_ray.commands.serve as s; "
        "print(sorted(m for m in ('ray', 'vllm', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

    import typer
    from typer.testing import CliRunner

    from noiseal_ray.commands.serve import serve

    app = typer.Typer()
    app.command("serve")(serve)
    app.command("other")(lambda: None)  # two commands: "serve" stays a subcommand
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--llm-model", "--min-replicas", "--max-replicas", "--downscale-delay-s", "--host", "--port", "--address"):
        assert flag in result.output
    bad = CliRunner().invoke(app, ["serve", "--min-replicas", "3", "--max-replicas", "1"])
    assert bad.exit_code != 0


def _cold_start_script(wait_s: float, arrivals: list[tuple[int, float, float]]) -> Script:
    """The first request waits ``wait_s`` (a replica starting), the rest answer at once; each
    call's (index, arrival, departure) goes to ``arrivals``."""
    def script(body: dict[str, Any], idx: int) -> tuple[int, Any]:
        t0 = time.monotonic()
        # The rest take a moment too, so that requests sent together are seen in flight together.
        time.sleep(wait_s if idx == 0 else 0.05)
        arrivals.append((idx, t0, time.monotonic()))
        return first_choice(body, idx)
    return script


def test_the_first_request_waits_alone_through_a_cold_start(serve_script: Callable[..., FakeServer]) -> None:
    arrivals: list[tuple[int, float, float]] = []
    # Timeouts of 1 s, not less: answering at once can take half a second on a loaded 2-core machine.
    srv = serve_script(_cold_start_script(3.0, arrivals))
    ann = LLMAnnotator(base_url=srv.url, model="fake-model", concurrency=8, timeout_s=1.0, retries=0,
                       cold_start_timeout_s=10.0)
    answers = ann.annotate(queries=queries(12), label_names=LABELS)
    assert [a.label for a in answers] == [0] * 12 and all(a.error is None for a in answers)
    assert len(srv.calls) == 12  # nothing sent twice
    first_done = next(end for idx, _, end in arrivals if idx == 0)
    assert all(start >= first_done for idx, start, _ in arrivals if idx > 0)  # the batch waited for it
    assert srv.max_in_flight > 1  # then went concurrently


def test_without_the_cold_start_wait_the_first_requests_time_out(serve_script: Callable[..., FakeServer]) -> None:
    srv = serve_script(_cold_start_script(3.0, []))
    ann = LLMAnnotator(base_url=srv.url, model="fake-model", concurrency=8, timeout_s=1.0, retries=0)
    answers = ann.annotate(queries=queries(4), label_names=LABELS)
    # The request that reached the starting server first (any of the four) waited past its timeout.
    timed_out = [a for a in answers if a.label is None and a.error.startswith("timeout: no answer within 1 s")]
    assert len(timed_out) == 1 and sum(a.label == 0 for a in answers) == 3


def test_a_hung_server_costs_no_more_than_the_clients_bound(serve_script: Callable[..., FakeServer]) -> None:
    from noiseal_ray.annotate.llm import longest_annotate_s

    srv = serve_script(first_choice, delay_s=1.5)  # never answers within any timeout below
    opts = dict(concurrency=2, timeout_s=0.2, retries=0, cold_start_timeout_s=0.4)
    ann = LLMAnnotator(base_url=srv.url, model="fake-model", **opts)
    t0 = time.monotonic()
    answers = ann.annotate(queries=queries(6), label_names=LABELS)
    took = time.monotonic() - t0
    assert all(a.label is None and a.error.startswith("timeout") for a in answers)
    assert len(srv.calls) == 6
    bound = longest_annotate_s(queries=6, **opts)
    assert bound == pytest.approx(0.4 + 3 * 0.2)
    assert took <= bound + 1.0, (took, bound)  # the bound the annotate stage gives Ray Data holds


def test_the_annotate_stage_lets_a_slow_llm_outlast_ray_datas_no_progress_guard() -> None:
    from types import SimpleNamespace

    from noiseal_ray.annotate.base import AnnotatorSpec
    from noiseal_ray.stages.annotate import allow_slow_annotator

    def guard_after(spec: AnnotatorSpec, current: float) -> float:
        ds = SimpleNamespace(context=SimpleNamespace(execution_no_progress_timeout_s=current))
        allow_slow_annotator(ds=ds, spec=spec, batch_rows=256)
        return ds.context.execution_no_progress_timeout_s

    llm = AnnotatorSpec(kind="llm", options=dict(concurrency=32, timeout_s=120.0, retries=3, cold_start_timeout_s=600.0))
    # 600 s cold start, then 8 waves of 32, each request 4 attempts of 120 s and 3 backoffs <= 30.5 s.
    assert guard_after(llm, 1800.0) == pytest.approx(4 * 600 + 3 * 30.5 + 8 * (4 * 120 + 3 * 30.5))
    assert guard_after(llm, 99999.0) == 99999.0  # raised, never lowered
    assert guard_after(llm, -1) == -1  # a disabled guard stays disabled
    assert guard_after(AnnotatorSpec(kind="knn"), 1800.0) == 1800.0


def test_annotate_actors_share_the_deployments_capacity_instead_of_queueing_past_it() -> None:
    from noiseal_ray.annotate.base import AnnotatorSpec

    served = AnnotatorSpec(kind="llm", options=dict(concurrency=32, timeout_s=120.0), serve_app="app", capacity=8)
    assert served.for_actors(2).options["concurrency"] == 4  # 2 replicas x 4 in flight, over 2 actors
    assert served.for_actors(3).options["concurrency"] == 3  # rounded up: never below the capacity
    assert served.for_actors(1).options == dict(concurrency=8, timeout_s=120.0)
    assert served.options["concurrency"] == 32  # the run's spec itself is left alone
    roomy = AnnotatorSpec(kind="llm", options=dict(concurrency=4), capacity=64)
    assert roomy.for_actors(2) is roomy  # a smaller configured concurrency stays
    external = AnnotatorSpec(kind="llm", options=dict(concurrency=32))  # no deployment: capacity unknown
    assert external.for_actors(2) is external


def test_a_cpu_without_avx512_bf16_runs_the_llm_in_float32() -> None:
    from noiseal_ray.annotate.service import cpu_engine_dtype

    assert cpu_engine_dtype("flags\t: fpu sse2 avx avx2 fma\n") == "float32"
    assert cpu_engine_dtype("flags\t: fpu avx2 avx512f avx512_vnni\n") == "float32"
    assert cpu_engine_dtype("flags\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n") is None
