"""A recording relay in front of a real server: every request passes through unchanged (streams
chunk by chunk, a client's close closing the upstream stream too) and each ``POST`` body is
kept, so a test sees the prompts exactly as the router sent them, whatever the server kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class Relay:
    """The relay's address and what passed through it."""

    def __init__(self, upstream: str, server: ThreadingHTTPServer) -> None:
        parts = urlsplit(upstream)
        self.upstream_root = f"{parts.scheme}://{parts.netloc}"
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}{parts.path}"
        self.posts: list[tuple[str, dict[str, Any]]] = []
        """``(path, JSON body)`` of every POST, in the order they arrived."""
        self.lock = threading.Lock()

    def prompts(self) -> list[str]:
        """The ``prompt`` of every ``/v1/completions`` request, in order."""
        with self.lock:
            return [body["prompt"] for path, body in self.posts if path.endswith("/completions")]


def _handler(relay: Relay, http: httpx.Client) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _relay(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if method == "POST":
                with relay.lock:
                    relay.posts.append((self.path, json.loads(body or b"{}")))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
            request = http.build_request(method, relay.upstream_root + self.path, content=body,
                                         headers=headers)  # fmt: skip
            answer = http.send(request, stream=True)
            try:
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                self.end_headers()
                for chunk in answer.iter_raw():
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client closed: closing the upstream stream aborts it there too
            finally:
                answer.close()

        def do_GET(self) -> None:
            self._relay("GET")

        def do_POST(self) -> None:
            self._relay("POST")

    return Handler


@contextmanager
def recording_relay(upstream: str) -> Iterator[Relay]:
    """A relay to ``upstream`` (a base URL such as ``http://host:port/v1``) on a free port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    relay = Relay(upstream, server)
    with httpx.Client(timeout=httpx.Timeout(300, connect=10)) as http:
        server.RequestHandlerClass = _handler(relay, http)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield relay
        finally:
            server.shutdown()
            server.server_close()
