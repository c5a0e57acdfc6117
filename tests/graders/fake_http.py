"""A fake HTTP service for grader tests: a threaded server on an ephemeral 127.0.0.1 port, started and stopped by the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]
"""(status, body: dict or list -> JSON, str or bytes -> as is, HANG -> no answer until the test ends[, headers])."""
Respond = Callable[[int, dict[str, Any]], Answer]
HANG = object()


class FakeServer:
    """``respond(n, request)`` answers the n-th POST (from 0); ``requests`` keeps each one's path, headers and JSON body.

    ``root`` is ``http://127.0.0.1:<port>``; the server runs from construction until :meth:`close`.
    """

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)}
                fake.requests.append(request)
                status, body, *extra = fake.respond(len(fake.requests) - 1, request)
                if body is HANG:
                    fake.release.wait(10)
                    return
                data = json.dumps(body).encode() if isinstance(body, (dict, list)) else \
                    body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    for key, value in (extra[0] if extra else {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
