"""What ``rftkit serve`` hands uvicorn: its httptools protocol with a read timeout and a connection cap, and the app with rftkit's paths in front."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from ._app import _Dispatch, _Server
from ._wire import _TIMED, DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT_S, Rejected

# --------------------------------------------------------------------------- the command


try:  # the serve extra installs httptools; without it uvicorn picks its own protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None  # type: ignore[assignment,misc]  # (checked in _http_protocol)

def _server_of(app: Any) -> _Server | None:
    """The :class:`_Server` behind the app uvicorn serves (through its wrappers: proxy headers, logging), or None."""
    for _ in range(8):
        if isinstance(app, _Dispatch):
            return app.server
        server = getattr(getattr(app, "state", None), "rftkit", None)
        if isinstance(server, _Server):
            return server
        app = getattr(app, "app", None)
    return None


_OVER_CAPACITY = Rejected(503, "too_many_connections", "the server has as many open connections as it keeps", "",
                          "retry shortly, reuse connections (keep-alive), or raise --max-connections").body()
_OVER_CAPACITY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                           b"connection: close\r\ncontent-length: " + str(len(_OVER_CAPACITY)).encode() + b"\r\n\r\n"
                           + _OVER_CAPACITY)

if HttpToolsProtocol is not None:
    class _Protocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a read timeout and a cap on open connections.

        uvicorn times out only idle kept-alive connections: a client that opens a
        connection and sends nothing, half a request head, or a chunked body it
        never ends holds its socket (and a file descriptor) forever. Here a
        request's head and body must arrive within the server's read timeout,
        counted from the connection opening or, on a kept-alive connection, from
        the request's first byte; then the connection is closed. A connection
        over the cap gets a 503 and is closed at once, so half-open clients
        cannot exhaust the process's file descriptors. Both settings are the
        app's (:func:`create_app`'s ``read_timeout_s`` and ``max_connections``).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            server = _server_of(self.app)
            self._read_timeout = server.read_timeout_s if server else DEFAULT_READ_TIMEOUT_S
            self._max_connections = server.max_connections if server else DEFAULT_MAX_CONNECTIONS
            self._read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # (as uvicorn's own)
            if len(self.connections) >= self._max_connections:
                super().connection_made(transport)  # registered, so that connection_lost's bookkeeping holds
                transport.write(_OVER_CAPACITY_RESPONSE)
                transport.close()
                return
            super().connection_made(transport)
            self._read_timer = self.loop.call_later(self._read_timeout, self._read_timed_out)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {_TIMED: {}}  # tells _Server._body not to time the body itself
            if self._read_timer is None:  # a kept-alive connection's next request: timed from its first byte
                self._read_timer = self.loop.call_later(self._read_timeout, self._read_timed_out)

        def on_message_complete(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            super().connection_lost(exc)

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()


def _http_protocol() -> Any:
    """The protocol class ``rftkit serve`` hands uvicorn (module level: ``--workers`` processes unpickle it)."""
    return _Protocol if HttpToolsProtocol is not None else "auto"


def _served(app: FastAPI) -> ASGIApp:
    """What ``rftkit serve`` hands uvicorn: rftkit's paths answered before FastAPI's own layers, the rest by ``app``.

    ``app`` answers the same requests the same way (its :class:`_Dispatch`
    middleware does); in front of it, a request to rftkit's paths also skips
    FastAPI's and Starlette's entry layers.

    Why it is kept: without it ``benchmarks/server_load.py`` measured 1.14x the
    server CPU per request with a new connection per request (``--reconnect``,
    OpenRLHF's pattern; 1.08-1.19x over 4 alternated rounds, 2026-12-05) and
    1.08x with keep-alive clients (``benchmarks/NOTES.md``).
    """
    server = app.state.rftkit
    assert isinstance(server, _Server)
    return _Dispatch(app, server)



