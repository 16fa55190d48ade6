"""A scripted OpenAI-compatible loopback server that can die mid-batch (no Ray, no vLLM).

``FakeLLM(die_after=k)``: the first ``k`` chat requests get an answer; request ``k+1`` has its
connection cut without a response (a replica killed with requests in flight) and, with
``restart=False``, the server stops listening for good; with ``restart=True`` only the requests
in flight at that moment are cut (Serve restarting the replica) and later ones are answered.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLLM:
    def __init__(self, *, die_after: int | None = None, restart: bool = False, cut: int = 1) -> None:
        self.die_after = die_after
        self.restart = restart
        self.cut = cut  # with restart: how many requests are cut (those "in flight")
        self.posts = 0
        self.answered = 0
        self.dropped = 0
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.dead = threading.Event()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with srv.lock:
                    srv.posts += 1
                    n = srv.posts
                    srv.headers.append(dict(self.headers))
                    if srv.die_after is not None and n > srv.die_after:
                        drop = not srv.restart or n <= srv.die_after + srv.cut
                    else:
                        drop = False
                    if drop:
                        srv.dropped += 1
                    else:
                        srv.answered += 1
                if drop:
                    # Killed with the request in flight: the socket closes, no response.
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    if not srv.restart and not srv.dead.is_set():
                        srv.dead.set()
                        threading.Thread(target=srv.close, daemon=True).start()
                    return
                choice = body["structured_outputs"]["choice"][0]
                self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": choice},
                                         "logprobs": {"content": [{"token": choice, "logprob": -0.1}]}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
