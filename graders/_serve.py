"""``rftkit serve``: a grader behind an HTTP endpoint, for trainers and clients that want a URL, not a function.

One process (or several: ``--workers``) serves the grader config that
``--grader`` names in three protocols, plus OpenAI's two grader endpoints,
which take the grader from the request (built once per distinct config, then
cached)::

    POST /get_reward                               OpenRLHF's remote reward model (--remote_rm_url)
    POST /v1/fine_tuning/alpha/graders/run         OpenAI's graders/run  (the grader comes with the request)
    POST /v1/fine_tuning/alpha/graders/validate    OpenAI's graders/validate
    POST /grade                                    rftkit's batch shape: a full Grade per row
    POST /score                                    the ``endpoint`` grader protocol: {"sample", "item", "trace_id"} -> {"score"}
    GET  /health                                   liveness, never behind the token

``docs/serve.md`` has a request and a response for each, and the measured load.

Every request goes through the same stages, each of which can only answer
with one status: the bearer token (401), the body size (413), JSON decoding
and the field checks (400), a free grading slot (503), grading within the
deadline (504), then 200. Every refusal is a JSON body
``{"error": {"code", "message", "pointer", "hint"}}`` whose pointer names the
offending part of the request (``/labels/3``), so a client can fix it.

What it deliberately leaves out, and why:

* **pydantic request models and FastAPI's routing.** rftkit's paths are
  answered by a small ASGI middleware (:class:`_Dispatch`) that checks the
  decoded JSON by hand: it costs a few microseconds instead of tens, on a path
  whose job is microsecond rewards, and the checks say exactly which element is
  wrong, in rftkit's error shape rather than FastAPI's 422 list. The app is still
  a FastAPI app, so routes a user adds to it work as usual.
* **Grading on the event loop**, except where it cannot block. Grading runs on
  a small pool of daemon threads, so a grader that blocks (an HTTP endpoint, a
  stuck sub-process) cannot stall the server: the request gets 504 at its
  deadline and the slot stays taken until the grader returns, so a server whose
  threads are all stuck answers 503 at once rather than queueing forever. A
  thread cannot be killed: the stuck grading itself goes on in the background.
  The one exception is a ``/get_reward`` body of at most 16 KiB for a
  structured grader (OpenRLHF's one sample per request): that grader only
  computes, for microseconds, and the hop to a thread and back cost more CPU
  than the grading (see :meth:`_Server._respond`).

``rftkit serve`` itself hands uvicorn :func:`_served` (rftkit's paths answered
before FastAPI's layers) and a protocol whose response head and body leave in
one write (:class:`_Coalesced`); ``docs/serve.md`` has what each saved.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas import UserError

from ._adapters import GraderSource, _build, _grade, field_names, openrlhf_rewards
from ._config import AnyGrader, load_config
from ._openai import SampleGrader, build_sample_grader
from ._run import run_response
from ._structured import StructuredGrader

T = TypeVar("T")

TOKEN_ENV = "RFTKIT_SERVE_TOKEN"
"""The environment variable ``rftkit serve`` reads the bearer token from when ``--token`` is not given."""

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_THREADS = 4
RUN_PATH = "/v1/fine_tuning/alpha/graders/run"
VALIDATE_PATH = "/v1/fine_tuning/alpha/graders/validate"
_SETTINGS_ENV = "_RFTKIT_SERVE_SETTINGS"  # how `rftkit serve --workers N` hands its settings to each worker process
_CACHE_SIZE = 128
_INLINE_BYTES = 16 * 1024
"""A structured grader's ``/get_reward`` request up to this size is graded on the event loop (see :meth:`_Server._respond`)."""

log = logging.getLogger("rftkit.serve")


# --------------------------------------------------------------------------- errors


class Rejected(Exception):
    """A request the server refuses: becomes ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, pointer: str = "", hint: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.pointer, self.hint = status, code, message, pointer, hint
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return _dumps({"error": {"code": self.code, "message": self.message, "pointer": self.pointer, "hint": self.hint}})

    def response(self) -> Response:
        return Response(self.body(), self.status, self.headers, media_type="application/json")


_JSON_TYPE = (b"content-type", b"application/json")


async def _send(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    """One whole response, JSON unless empty, as ASGI messages (what a Starlette ``Response`` sends, without building one)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()] if headers else []
    raw.append((b"content-length", str(len(body)).encode("latin-1")))
    if body:
        raw.append(_JSON_TYPE)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _bad(code: str, message: str, pointer: str, hint: str = "") -> Rejected:
    return Rejected(400, code, message, pointer, hint)


def _type_name(value: Any) -> str:
    return {str: "a string", dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _field(body: Mapping[str, Any], key: str, hint: str = "") -> Any:
    if key not in body:
        raise _bad("missing_field", f"the request needs {key!r}", f"/{key}", hint)
    return body[key]


def _array(body: Mapping[str, Any], key: str, n: int | None = None, hint: str = "") -> list[Any]:
    value = _field(body, key, hint)
    if not isinstance(value, list):
        raise _bad("wrong_type", f"{key!r} must be an array, got {_type_name(value)}", f"/{key}", hint)
    if n is not None and len(value) != n:
        raise _bad("length_mismatch", f"{key!r} has {len(value)} elements but there are {n} samples", f"/{key}",
                   "send one element per sample, in the same order")
    return value


def _each(values: list[Any], key: str, types: tuple[type, ...], what: str) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, types):
            raise _bad("wrong_type", f"{key}[{i}] must be {what}, got {_type_name(v)}", f"/{key}/{i}")


def _object_or_null(value: Any, pointer: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise _bad("wrong_type", f"{pointer[1:]} must be an object or null, got {_type_name(value)}", pointer)
    return value


def _sample(value: Any, pointer: str) -> str | dict[str, Any]:
    if not isinstance(value, (str, dict)):
        raise _bad("wrong_type", f"{pointer[1:]} must be a string or an OpenAI-style sample object, got {_type_name(value)}",
                   pointer, 'the model\'s text, or {"output_text": ..., "output_json": ...}')
    return value


def _data_error(exc: UserError, pointer: str) -> Rejected:
    """A :class:`UserError` raised while grading one row (a reference that is not JSON, a bad sample) as a 400."""
    return _bad(exc.code, exc.message, pointer, exc.hint)


# --------------------------------------------------------------------------- grading threads


class _Timeout(Exception):
    pass


class GradingPool:
    """Runs grading jobs on daemon threads: at most ``limit`` jobs at once (running or waiting), each with a deadline.

    The count of jobs is kept on the event loop's thread; a job's slot is given
    back only when its thread is done with it (or drops it unstarted after its
    deadline), so a server whose threads are all stuck refuses at once (503)
    instead of queueing. The threads are daemons: a stuck grader never keeps the
    process from exiting.
    """

    def __init__(self, threads: int, limit: int) -> None:
        self.threads = threads
        self.limit = limit
        self.in_flight = 0
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue())
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            while len(self._started) < self.threads:
                t = threading.Thread(target=self._work, name=f"rftkit-grading-{len(self._started)}", daemon=True)
                t.start()
                self._started.append(t)

    def close(self) -> None:
        """Ask every thread to stop once its current job is done (a stuck one stops when its grader returns)."""
        with self._lock:
            for _ in self._started:
                self._jobs.put(None)
            self._started.clear()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn = job
            result: Any = None
            error: BaseException | None = None
            if not future.done():  # done already: its deadline passed while it waited, so it is dropped unstarted
                try:
                    result = fn()
                except BaseException as exc:  # delivered to the awaiting request, which answers 4xx or 500
                    error = exc
            try:
                loop.call_soon_threadsafe(self._finish, future, result, error)
            except RuntimeError:  # the loop closed (the server stopped) while this job ran
                pass

    def _finish(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.in_flight -= 1
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    async def run(self, fn: Callable[[], T], timeout_s: float) -> T:
        """``fn()`` on a grading thread; 503 when ``limit`` jobs are already in flight, 504 after ``timeout_s``."""
        if self.in_flight >= self.limit:
            raise Rejected(503, "overloaded", f"the server is grading {self.in_flight} requests, its limit; try again shortly",
                           hint="retry after a short wait, send fewer concurrent requests, or start with more --workers",
                           headers={"Retry-After": "1"})
        if len(self._started) < self.threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.in_flight += 1
        self._jobs.put((loop, future, fn))
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        except _Timeout:
            raise Rejected(504, "grading_timeout", f"grading took longer than the {timeout_s:g} s limit", hint=(
                "send smaller batches or raise --timeout; the grading itself goes on in the background")) from None
        finally:
            timer.cancel()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_Timeout())


# --------------------------------------------------------------------------- the protocols


def _openrlhf(grader: AnyGrader, declared: list[str], queries: Sequence[str], prompts: Sequence[str],
              labels: Sequence[Any]) -> dict[str, Any]:
    """:func:`graders.adapters.openrlhf_rewards`, with a label it cannot grade as a 400 pointing at it."""
    try:
        return openrlhf_rewards(grader, queries, prompts, labels, declared=declared)
    except UserError as exc:
        raise _data_error(exc, exc.pointer) from None


class _GraderCache:
    """Graders built from request configs (OpenAI's endpoints), least recently used dropped first; shared by the threads."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self._built: OrderedDict[bytes, SampleGrader] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, config: Mapping[str, Any]) -> SampleGrader:
        key = orjson.dumps(config, option=orjson.OPT_SORT_KEYS)
        with self._lock:
            grader = self._built.get(key)
            if grader is not None:
                self._built.move_to_end(key)
                return grader
        try:
            grader = build_sample_grader(load_config(config))
        except UserError as exc:
            raise _bad(exc.code, exc.message, "/grader" + exc.pointer, exc.hint) from None
        with self._lock:
            self._built[key] = grader
            if len(self._built) > self.size:
                self._built.popitem(last=False)
        return grader


# --------------------------------------------------------------------------- the app


class _Server:
    """The state behind one app: its grader, limits, grading threads and the endpoints."""

    def __init__(self, grader: AnyGrader, token: str | None, max_body_bytes: int, timeout_s: float, max_concurrency: int,
                 threads: int) -> None:
        self.grader = grader
        self.declared = field_names(grader)
        self.structured = isinstance(grader, StructuredGrader)
        self.inline_bytes = _INLINE_BYTES if isinstance(grader, StructuredGrader) and grader._bounded else 0
        """``/get_reward`` bodies up to this size are graded on the event loop, not on a grading thread."""
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.pool = GradingPool(threads, max_concurrency)
        self.cache = _GraderCache()
        self.posts: dict[str, Callable[[dict[str, Any]], Callable[[], bytes]]] = {
            "/get_reward": self.get_reward, RUN_PATH: self.run, VALIDATE_PATH: self.validate, "/grade": self.grade,
            "/score": self.score}
        """Each POST path and the method that checks its request and returns the job that grades it."""

    # -- the stages every POST goes through

    def _authorize(self, header: str | None) -> None:
        if self.token is None:
            return
        if header is None:
            raise Rejected(401, "missing_token", "this server needs a bearer token", "",
                           "send the header 'Authorization: Bearer <token>' (the token rftkit serve was started with)",
                           {"WWW-Authenticate": "Bearer"})
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            raise Rejected(401, "invalid_token", "the bearer token is wrong", "",
                           "send 'Authorization: Bearer <token>' with the token rftkit serve was started with",
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _too_large(self, size: str) -> Rejected:
        return Rejected(413, "body_too_large", f"the request body is {size} bytes, over the {self.max_body_bytes}-byte limit",
                        "", "send smaller batches, or start the server with a larger --max-body-bytes",
                        {"Connection": "close"})

    async def _body(self, scope: Scope, receive: Receive) -> tuple[dict[str, Any], int]:
        """The request's JSON object and its size in bytes, after the token and the size limit."""
        authorization = length = None
        for key, value in scope["headers"]:  # the first of each, as Starlette's Headers.get answers
            if key == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif key == b"content-length" and length is None:
                length = value.decode("latin-1")
        self._authorize(authorization)
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise _bad("bad_content_length", f"Content-Length must be a number of bytes, got {length!r}", "")
            if int(length) > self.max_body_bytes:
                raise self._too_large(length)
        parts, size = [], 0  # a chunked body (no Content-Length) is counted as it arrives
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(f"more than {self.max_body_bytes}")
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad("malformed_json", f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       "", "send one JSON object (UTF-8), with Content-Type: application/json") from None
        if not isinstance(body, dict):
            raise _bad("wrong_type", f"the request body must be a JSON object, got {_type_name(body)}", "")
        return body, size

    async def _respond(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Read and check the request with the path's method (which returns the grading job), grade, answer.

        A small ``/get_reward`` request to a structured grader whose cost is bounded
        (``StructuredGrader._bounded``: flat, no ``math`` field, lists matched by key)
        is graded right here, on the event loop: that grader is pure CPU work that
        never waits (no I/O, no sub-process), a few microseconds per sample, while the hop to a grading thread
        and back (a queue, a thread wake-up, the GIL changing hands, a wake-up of the
        loop) costs far more (``docs/serve.md`` has the numbers). The size bound keeps
        any one such request short; everything else, and every other grader, goes to
        the grading threads, under the deadline and the concurrency limit.
        """
        try:
            body, size = await self._body(scope, receive)
            job = self.posts[path](body)
            if size <= self.inline_bytes and path == "/get_reward":
                answer = job()
            else:
                answer = await self.pool.run(job, self.timeout_s)
        except Rejected as exc:
            await _send(send, exc.status, exc.body(), exc.headers)
            return
        except ClientDisconnect:  # the client left before its body arrived: nobody to answer
            await _send(send, 400, b"")
            return
        except Exception as exc:  # a grader bug: report it, keep serving
            log.exception("grading failed on %s", path)
            error = Rejected(500, "grader_error", f"the grader raised {type(exc).__name__}: {exc}", "",
                             "this is a bug in the grader (or rftkit): the server log has the traceback")
            await _send(send, error.status, error.body())
            return
        await _send(send, 200, answer)

    # -- the protocols: each checks its request and returns the job that grades it and encodes the answer

    def get_reward(self, body: dict[str, Any]) -> Callable[[], bytes]:
        hint = 'OpenRLHF sends {"query": [...], "prompts": [...], "labels": [...]}'
        queries = _array(body, "query", hint=hint)
        _each(queries, "query", (str,), "a string (prompt and response, decoded)")
        n = len(queries)
        prompts = _array(body, "prompts", n, hint) if "prompts" in body else [""] * n
        _each(prompts, "prompts", (str,), "a string")
        labels = _array(body, "labels", n, hint=hint + "; each label is the reference answer (an object or its JSON text)")
        return lambda: _dumps(_openrlhf(self.grader, self.declared, queries, prompts, labels))

    def run(self, body: dict[str, Any]) -> Callable[[], bytes]:
        config = _field(body, "grader")
        if not isinstance(config, dict):
            raise _bad("wrong_type", f"'grader' must be a grader config object, got {_type_name(config)}", "/grader")
        sample = _sample(_field(body, "model_sample"), "/model_sample")
        item = _object_or_null(body.get("item"), "/item")

        def job() -> bytes:
            grader = self.cache.get(config)
            start = time.perf_counter()
            try:
                grade = grader.grade(sample, item)
            except UserError as exc:
                raise _data_error(exc, "/item") from None
            return _dumps(run_response(grader.name, grader.type, grade, time.perf_counter() - start))

        return job

    def validate(self, body: dict[str, Any]) -> Callable[[], bytes]:
        config = _field(body, "grader")
        if not isinstance(config, dict):
            raise _bad("wrong_type", f"'grader' must be a grader config object, got {_type_name(config)}", "/grader")
        return lambda: _dumps({"grader": self.cache.get(config).config()})

    def grade(self, body: dict[str, Any]) -> Callable[[], bytes]:
        key = "samples" if "samples" in body and "responses" not in body else "responses"
        responses = _array(body, key, hint='{"responses": [...], "references": [...]} (or "items": [...])')
        _each(responses, key, (str, dict), "a string or an OpenAI-style sample object")
        n = len(responses)
        if "references" not in body and "items" not in body:
            raise _bad("missing_field", "the request needs 'references' or 'items' (or both), one per response", "/references")
        references = _array(body, "references", n) if "references" in body else None
        items = _array(body, "items", n) if "items" in body else [{}] * n
        _each(items, "items", (dict,), "an object")
        if references is None and self.structured:
            for i, it in enumerate(items):
                if "reference" not in it:
                    raise _bad("missing_field", f"items[{i}] has no 'reference' and there are no 'references'",
                               f"/items/{i}/reference", "a structured grader needs the reference answer of each row")
        grader, where = self.grader, "references" if references is not None else "items"

        def job() -> bytes:
            out = []
            for i in range(n):
                try:
                    if references is not None:
                        g = _grade(grader, responses[i], references[i], items[i])
                    elif isinstance(grader, StructuredGrader):
                        g = grader.grade(responses[i], items[i]["reference"])
                    else:
                        g = grader.grade(responses[i], items[i])
                except UserError as exc:
                    raise _data_error(exc, f"/{where}/{i}") from None
                out.append(g.to_dict())
            return _dumps({"results": out})

        return job

    def score(self, body: dict[str, Any]) -> Callable[[], bytes]:
        sample = _sample(_field(body, "sample"), "/sample")
        item = _object_or_null(body.get("item"), "/item") or {}
        trace_id = body.get("trace_id")
        if self.structured and "reference" not in item:
            raise _bad("missing_field", "item has no 'reference' for the structured grader to compare with", "/item/reference")
        grader = self.grader

        def job() -> bytes:
            try:
                g = grader.grade(sample, item["reference"]) if isinstance(grader, StructuredGrader) else grader.grade(sample, item)
            except UserError as exc:
                raise _data_error(exc, "/item") from None
            return _dumps({"score": g.score, "sub_scores": dict(g.sub_scores), "trace_id": trace_id})

        return job

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "grader": {"name": self.grader.name, "type": self.grader.type},
                "in_flight": self.pool.in_flight, "max_concurrency": self.pool.limit}

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request for one of rftkit's :data:`ENDPOINTS`."""
        path, method = scope["path"], scope["method"]
        if path == "/health":
            if method in ("GET", "HEAD"):
                await _send(send, 200, _dumps(self.health()))
                return
            await _not_allowed(send, method, path, "GET")
            return
        if method != "POST":
            await _not_allowed(send, method, path, "POST")
            return
        await self._respond(scope, receive, send, path)


ENDPOINTS = frozenset({"/get_reward", RUN_PATH, VALIDATE_PATH, "/grade", "/score", "/health"})
"""rftkit's paths (the POST ones are :attr:`_Server.posts`)."""
_ENDPOINT_LIST = f"POST /get_reward, /grade, /score, {RUN_PATH}, {VALIDATE_PATH}; GET /health"


async def _not_allowed(send: Send, method: str, path: str, allowed: str) -> None:
    error = Rejected(405, "method_not_allowed", f"{method} is not allowed on {path}; use {allowed}", "",
                     f"endpoints: {_ENDPOINT_LIST}", {"Allow": allowed})
    await _send(send, error.status, error.body(), error.headers)


class _Dispatch:
    """ASGI middleware that answers rftkit's paths itself and hands every other request to the FastAPI app.

    Skipping FastAPI's routing, exception and exit-stack layers on the hot
    path cut the server's CPU per one-sample ``/get_reward`` request from about
    140-155 to 115 us in ``benchmarks/server_load.py``. Routes a user adds to
    the returned app, and the 404s, still go through FastAPI.
    """

    def __init__(self, app: ASGIApp, server: _Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ENDPOINTS:
            await self.server.answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(grader_config: GraderSource, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               timeout_s: float = DEFAULT_TIMEOUT_S, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
               threads: int = DEFAULT_THREADS) -> FastAPI:
    """The reward server as an ASGI app: serve it with uvicorn (``rftkit serve`` does), or add routes of your own.

    ``grader_config`` is the grader served by ``/get_reward``, ``/grade`` and
    ``/score``: a config dict, a JSON file path, or a built grader (any object
    with ``grade`` and ``config``). ``token`` (None: no auth) is the bearer token
    every POST needs; ``max_body_bytes`` the largest request body (413 above);
    ``timeout_s`` each request's grading deadline (504 after); ``max_concurrency``
    how many requests may be graded or waiting at once (503 above) on
    ``threads`` grading threads. A bad config raises :class:`GraderConfigError` here.

    >>> from fastapi.testclient import TestClient
    >>> app = create_app({"type": "structured", "name": "city"})
    >>> TestClient(app).post("/score", json={"sample": '{"city": "Paris"}', "item": {"reference": {"city": "Paris"}}}).json()
    {'score': 1.0, 'sub_scores': {'city': 1.0}, 'trace_id': None}
    """
    for name, value in (("max_body_bytes", max_body_bytes), ("max_concurrency", max_concurrency), ("threads", threads)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}", code="bad_option", pointer=f"/{name}")
    if not timeout_s > 0:
        raise UserError(f"timeout_s must be > 0, got {timeout_s}", code="bad_option", pointer="/timeout_s")
    server = _Server(_build(grader_config), token, max_body_bytes, timeout_s, max_concurrency, threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.pool.close()

    app = FastAPI(title="rftkit reward server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.rftkit = server
    app.add_middleware(_Dispatch, server=server)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        message = f"no endpoint at {request.url.path}" if status == 404 else str(getattr(exc, "detail", exc))
        return Rejected(status, code, message, "", f"endpoints: {_ENDPOINT_LIST}", getattr(exc, "headers", None)).response()

    app.add_exception_handler(HTTPException, http_error)
    return app


# --------------------------------------------------------------------------- the command


class _Coalesced:
    """A transport whose writes in one turn of the event loop leave as one write (one system call, one wake-up of the client).

    uvicorn writes a response's head and its body separately; on a loopback
    connection each write is a system call that also wakes the client, which
    reads a head without its body first. Joined, a response costs one of each.
    Everything else (close, flow control, extra info) is the transport's own;
    ``close`` sends what is pending first.
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


try:  # the serve extra installs httptools; without it uvicorn picks its own protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None  # type: ignore[assignment,misc]  # (checked in _http_protocol)

if HttpToolsProtocol is not None:
    class _Protocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, its writes joined per turn of the event loop (:class:`_Coalesced`)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # (as uvicorn's own)
            super().connection_made(_Coalesced(transport, self.loop))  # type: ignore[arg-type]  # a transport in all but name


def _http_protocol() -> Any:
    """The protocol class ``rftkit serve`` hands uvicorn (module level: ``--workers`` processes unpickle it)."""
    return _Protocol if HttpToolsProtocol is not None else "auto"


def _served(app: FastAPI) -> ASGIApp:
    """What ``rftkit serve`` hands uvicorn: rftkit's paths answered before FastAPI's own layers, the rest by ``app``.

    ``app`` answers the same requests the same way (its :class:`_Dispatch`
    middleware does); in front of it, a request to ``/get_reward`` also skips
    FastAPI's and Starlette's entry layers (about 20 us of CPU per request).
    """
    server = app.state.rftkit
    assert isinstance(server, _Server)
    return _Dispatch(app, server)


def _app_from_env() -> ASGIApp:
    """The app of one ``--workers`` process, from the settings the parent put in the environment.

    Once the app is built, :func:`gc.freeze` moves everything alive (the modules,
    the grader) out of the cyclic collector's reach: grading allocates many
    short-lived objects, and each collection they trigger would otherwise
    re-scan the whole import-time heap (about 8 % of the CPU per 256-row batch).
    """
    s = json.loads(os.environ[_SETTINGS_ENV])
    app = create_app(s["grader"], token=s["token"], max_body_bytes=s["max_body_bytes"], timeout_s=s["timeout_s"],
                     max_concurrency=s["max_concurrency"], threads=s["threads"])
    gc.freeze()
    return _served(app)


def serve(
    grader: Annotated[Path, typer.Option("--grader", "-g", help="Grader config (JSON) served by /get_reward, /grade and /score.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface; then set a --token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own copy of the grader.", min=1)] = 1,
    token: Annotated[str | None, typer.Option(envvar=TOKEN_ENV, show_envvar=True,
                                              help="Bearer token every POST must send (GET /health stays open).")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body in bytes; larger ones get 413.", min=1)] = DEFAULT_MAX_BODY_BYTES,
    timeout: Annotated[float, typer.Option(help="Seconds a request may spend grading; then it gets 504.", min=0.001)] = DEFAULT_TIMEOUT_S,
    max_concurrency: Annotated[int, typer.Option(help="Requests graded or waiting at once, per worker; more get 503.", min=1)]
    = DEFAULT_MAX_CONCURRENCY,
    threads: Annotated[int, typer.Option(help="Grading threads per worker.", min=1)] = DEFAULT_THREADS,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level (critical, error, warning, info, debug).")] = "warning",
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
) -> None:
    """Serve a grader over HTTP: OpenRLHF's /get_reward, OpenAI's graders run/validate, /grade and /score.

    Example: rftkit serve --grader graders/data/resume_grader.json --port 8000 --workers 2
    then point OpenRLHF at http://127.0.0.1:8000/get_reward (--reward.remote_url; before 0.10: --remote_rm_url).
    """
    import uvicorn

    settings = {"grader": str(grader.resolve()), "token": token, "max_body_bytes": max_body_bytes, "timeout_s": timeout,
                "max_concurrency": max_concurrency, "threads": threads}
    try:
        app = create_app(grader, token=token, max_body_bytes=max_body_bytes, timeout_s=timeout, max_concurrency=max_concurrency,
                         threads=threads)  # builds the grader: a bad config stops here, before any worker starts
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        typer.echo(f"warning: serving on {host} without a token: anyone who can reach it can use it", err=True)
    typer.echo(f"rftkit serve: grader {grader} on http://{host}:{port} ({workers} worker(s)); POST /get_reward, /grade, "
               f"/score, {RUN_PATH}, {VALIDATE_PATH}; GET /health", err=True)
    common: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "access_log": access_log,
                              "http": _http_protocol()}
    if workers == 1:
        gc.freeze()  # see _app_from_env
        uvicorn.run(_served(app), **common)
        return
    os.environ[_SETTINGS_ENV] = json.dumps(settings)
    uvicorn.run(f"{__name__}:_app_from_env", factory=True, workers=workers, **common)


def register(app: typer.Typer) -> None:
    """Add ``rftkit serve`` to ``app`` (the ``rftkit.commands`` entry point)."""
    app.command(name="serve")(serve)
