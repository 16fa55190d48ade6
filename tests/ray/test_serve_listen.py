"""Where `noiseal-ray serve` listens, read from the operating system, not from default values.

The real command runs (CLI entry point, Ray, Ray Serve, its HTTP proxy); only the vLLM engine is
replaced at the edge by a one-line Serve app, because a second engine next to the one of tests/llm
would not fit the test session (and the bind address is the proxy's, not the engine's). A watcher
thread finds the proxy's listening sockets, calls it over HTTP, then sends the Ctrl-C a user would.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import httpx
import psutil
import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_serve_left(ray_cluster):
    """Each test starts from a cluster without Serve: a test that failed half-way must not leave its
    proxy for the next one to reuse (the CLI reuses a running Serve instead of binding anew)."""
    yield
    from ray import serve

    serve.shutdown()


def _listening(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}


def _serve_and_look(monkeypatch, args: list[str]) -> dict:
    """Run `noiseal-ray serve ARGS` until the watcher has seen the proxy, then Ctrl-C it."""
    from ray import serve

    import cli
    from noiseal_ray.annotate import llm_model, service

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Echo:
        def __call__(self, request) -> str:
            return "relabel service"

    import typer

    serving = threading.Event()
    echo = typer.echo

    def echo_and_watch(message=None, *a, **kw):
        if str(message).startswith("serving model"):
            serving.set()  # deployed, and the CLI is about to wait for Ctrl-C
        return echo(message, *a, **kw)

    monkeypatch.setattr(typer, "echo", echo_and_watch)
    monkeypatch.setattr(llm_model, "resolve_llm_model", lambda name: "stand-in-for-the-engine")
    monkeypatch.setattr(service, "build_llm_app", lambda **kw: Echo.bind())
    port = service.free_loopback_port()
    seen: dict = {}

    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and not _listening(port):
                time.sleep(0.5)
            seen["addresses"] = _listening(port)
            host = next(iter(seen["addresses"]), "127.0.0.1")
            # The proxy may listen a moment before it routes to the app.
            while time.monotonic() < deadline:
                r = httpx.get(f"http://{host}:{port}/", timeout=30)
                if r.status_code == 200:
                    seen["reply"] = r.text
                    break
                time.sleep(0.5)
            # Ctrl-C once the CLI says it serves, as a user would: not while it is still deploying.
            serving.wait(max(1.0, deadline - time.monotonic()))
            time.sleep(1.0)
        except Exception as exc:  # reported by the assertions
            seen["error"] = repr(exc)
        finally:
            # Ctrl-C, as a user would; again if the first one came before the CLI's handler was set.
            for _ in range(5):
                os.kill(os.getpid(), signal.SIGINT)
                if done.wait(30):
                    break

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(sys, "argv", ["noiseal-ray", "serve", "--port", str(port), *args])
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        cli.main()
        seen["exit"] = 0
    except SystemExit as exc:
        seen["exit"] = exc.code
    finally:
        done.set()
        for s, h in handlers.items():
            signal.signal(s, h)
    t.join(timeout=60)
    deadline = time.monotonic() + 30  # the proxy actor exits shortly after serve.shutdown()
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    seen["after"] = _listening(port)
    return seen


def test_serve_listens_on_loopback_only_by_default(ray_cluster, monkeypatch):
    seen = _serve_and_look(monkeypatch, [])
    assert "error" not in seen, seen
    assert seen["addresses"] == {"127.0.0.1"}, seen
    assert seen["reply"] == "relabel service"
    # Ctrl-C tore the proxy down: 0 from the CLI's own handler, 130 when it came a moment before the
    # handler was set (KeyboardInterrupt; the same teardown runs).
    assert seen["exit"] in (0, None, 130) and seen["after"] == set()


def test_host_flag_moves_the_listening_address(ray_cluster, monkeypatch):
    # Another loopback address: proves the flag reaches the proxy without opening a real interface.
    seen = _serve_and_look(monkeypatch, ["--host", "127.0.0.2"])
    assert "error" not in seen, seen
    assert seen["addresses"] == {"127.0.0.2"}, seen
    assert seen["reply"] == "relabel service"
