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
and the field checks (400), the policy for a request-borne grader (403), a
free grading slot (503), grading within the deadline (504), then 200. Every refusal is a JSON body
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
  thread cannot be killed: python work is (at the deadline, see below), any
  other stuck grading goes on in the background. The one exception is a ``/get_reward`` body of at most 16 KiB for a
  structured grader (OpenRLHF's one sample per request): that grader only
  computes, for microseconds, and the hop to a thread and back cost more CPU
  than the grading (see :meth:`_Server._respond`).

``rftkit serve`` itself hands uvicorn :func:`_served` (rftkit's paths answered
before FastAPI's layers; ``docs/serve.md`` has what that saves).

**What a client may make the server do** (``docs/serve.md``, "Security"). The
grader a ``graders/run`` or ``graders/validate`` request carries is checked
before anything is built (:func:`_refusal`): by default only types that run no
user code, open no file and make no request (``string_check``,
``text_similarity``, ``structured`` with an inline schema, ``multi`` of those);
``python``, ``score_model``, ``label_model`` and ``endpoint`` need the
operator's ``--allow-graders``, and even then a request never names a server
path (a schema file, a local model directory). Request-borne python graders
share a bounded pool (:class:`_GraderCache`), so their worker processes are
bounded whatever the clients send.

**Liveness.** A request's deadline bounds the work started for it: python
grading on a grading thread runs under
:func:`graders.openai.python.grading_deadline`, so it is killed at the
deadline, not abandoned. Requests to the served grader and request-borne or
large ones are graded on separate threads (:class:`GradingPool`'s two lanes),
so heavy work never takes the threads a normal request needs. Slow clients are
cut off: a request's head and body must arrive within the read timeout
(:class:`_Protocol`, and :meth:`_Server._body` under other ASGI servers), and
connections over the cap are closed as they arrive.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas import UserError

from .._config import AnyGrader
from .._run import run_response
from ..integrations._common import GraderSource, build_grader, field_names
from ._policy import _GraderCache, _python_parts, _refusal, check_allowed
from ._pool import GradingPool, _openrlhf, _python_deadline
from ._wire import (
    _HEAVY_BYTES,
    _INLINE_BYTES,
    _TIMED,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PYTHON_GRADERS,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT_S,
    RUN_PATH,
    VALIDATE_PATH,
    Rejected,
    RequestErrorCode,
    _array,
    _bad,
    _data_error,
    _dumps,
    _each,
    _field,
    _loads,
    _object_or_null,
    _sample,
    _send,
    _type_name,
    log,
)

# --------------------------------------------------------------------------- the app


class _Server:
    """The state behind one app: its grader, limits, grading threads and the endpoints."""

    def __init__(self, grader: AnyGrader, token: str | None, max_body_bytes: int, timeout_s: float, max_concurrency: int,
                 threads: int, allowed: frozenset[str], max_python_graders: int, read_timeout_s: float,
                 max_connections: int) -> None:
        self.grader = grader
        self.declared = field_names(grader)
        self.needs_reference = grader.needs_reference
        self.inline_bytes = _INLINE_BYTES if grader.bounded_cost else 0
        """``/get_reward`` bodies up to this size are graded on the event loop, not on a grading thread."""
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.allowed = allowed
        """The opt-in grader types a request may carry (``--allow-graders``)."""
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.kill = bool(_python_parts(grader)) or "python" in allowed
        """Whether grading jobs may run python: then each runs under its deadline, and python work past it is killed."""
        self.pool = GradingPool(threads, max_concurrency, _python_deadline() if self.kill else None)
        self.cache = _GraderCache(python_size=max_python_graders, models=bool({"score_model", "label_model"} & allowed))
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

    async def _body(self, scope: Scope, receive: Receive) -> tuple[bytes, int]:
        """The request's body and its size in bytes, after the token and the size limit, within the read timeout."""
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
        if _TIMED in (scope.get("extensions") or ()):  # rftkit serve's protocol times the whole request out itself
            return await self._read(receive)
        try:  # under another ASGI server: a body that stalls gets 408 (asyncio.wait_for costs a task, off the fast path)
            return await asyncio.wait_for(self._read(receive), self.read_timeout_s)
        except asyncio.TimeoutError:
            raise Rejected(408, "body_timeout", f"the request body did not arrive within {self.read_timeout_s:g} s", "",
                           "send the whole body promptly (a slow link needs a larger --read-timeout)",
                           {"Connection": "close"}) from None

    async def _read(self, receive: Receive) -> tuple[bytes, int]:
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
        return parts[0] if len(parts) == 1 else b"".join(parts), size

    @staticmethod
    def _decode(raw: bytes) -> dict[str, Any]:
        body = _loads(raw)
        if not isinstance(body, dict):
            raise _bad("wrong_type", f"the request body must be a JSON object, got {_type_name(body)}", "")
        return body

    async def _respond(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Read and check the request with the path's method (which returns the grading job), grade, answer.

        A small ``/get_reward`` request to a structured grader whose cost is bounded
        (``bounded_cost``: a structured grader with a flat plan, no ``math`` field, lists matched by key)
        is graded right here, on the event loop: that grader is pure CPU work that
        never waits (no I/O, no sub-process), a few microseconds per sample, while the hop to a grading thread
        and back (a queue, a thread wake-up, the GIL changing hands, a wake-up of the
        loop) costs far more (``docs/serve.md`` has the numbers). The size bound keeps
        any one such request short. A body over :data:`_HEAVY_BYTES` is decoded,
        checked and graded on the heavy lane, as is every request-borne grader;
        everything else goes to the light lane, under the deadline and the concurrency limit.
        """
        try:
            raw, size = await self._body(scope, receive)
            if size > _HEAVY_BYTES:
                answer = await self.pool.run(lambda: self.posts[path](self._decode(raw))(), self.timeout_s, heavy=True,
                                             kill=self.kill)
            else:
                job = self.posts[path](self._decode(raw))
                if size <= self.inline_bytes and path == "/get_reward":
                    answer = job()
                else:
                    answer = await self.pool.run(job, self.timeout_s, heavy=path in (RUN_PATH, VALIDATE_PATH), kill=self.kill)
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

    def _config(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request's grader config, once the server's policy allows it (403 otherwise, before anything is built)."""
        config = _field(body, "grader")
        if not isinstance(config, dict):
            raise _bad("wrong_type", f"'grader' must be a grader config object, got {_type_name(config)}", "/grader")
        refusal = _refusal(config, self.allowed)
        if refusal is not None:
            raise refusal
        return config

    def run(self, body: dict[str, Any]) -> Callable[[], bytes]:
        config = self._config(body)
        sample = _sample(_field(body, "model_sample"), "/model_sample")
        item = _object_or_null(body.get("item"), "/item")

        def job() -> bytes:
            with self.cache.use(config) as grader:
                start = time.perf_counter()
                try:
                    grade = grader.grade(sample, item)
                except UserError as exc:
                    raise _data_error(exc, "/item") from None
                return _dumps(run_response(grader.name, grader.type, grade, time.perf_counter() - start))

        return job

    def validate(self, body: dict[str, Any]) -> Callable[[], bytes]:
        config = self._config(body)

        def job() -> bytes:
            with self.cache.use(config) as grader:
                return _dumps({"grader": grader.config()})

        return job

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
        if references is None and self.needs_reference:
            for i, it in enumerate(items):
                if "reference" not in it:
                    raise _bad("missing_field", f"items[{i}] has no 'reference' and there are no 'references'",
                               f"/items/{i}/reference", "a structured grader needs the reference answer of each row")
        grader, where = self.grader, "references" if references is not None else "items"

        def job() -> bytes:
            out = []
            for i in range(n):
                try:
                    row = items[i] if references is None else {**items[i], "reference": references[i]}
                    g = grader.grade_row(responses[i], row)
                except UserError as exc:
                    raise _data_error(exc, f"/{where}/{i}") from None
                out.append(g.to_dict())
            return _dumps({"results": out})

        return job

    def score(self, body: dict[str, Any]) -> Callable[[], bytes]:
        sample = _sample(_field(body, "sample"), "/sample")
        item = _object_or_null(body.get("item"), "/item") or {}
        trace_id = body.get("trace_id")
        if self.needs_reference and "reference" not in item:
            raise _bad("missing_field", "item has no 'reference' for the structured grader to compare with", "/item/reference")
        grader = self.grader

        def job() -> bytes:
            try:
                g = grader.grade_row(sample, item)
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

    It skips FastAPI's routing, exception and exit-stack layers on the hot
    path (what that saves: ``benchmarks/server_load.py``). Routes a user adds to
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
               threads: int = DEFAULT_THREADS, allow_graders: Collection[str] = (),
               max_python_graders: int = DEFAULT_MAX_PYTHON_GRADERS, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
               max_connections: int = DEFAULT_MAX_CONNECTIONS) -> FastAPI:
    """The reward server as an ASGI app: serve it with uvicorn (``rftkit serve`` does), or add routes of your own.

    ``grader_config`` is the grader served by ``/get_reward``, ``/grade`` and
    ``/score``: a config dict, a JSON file path, or a built grader (any object
    with ``grade`` and ``config``). ``token`` (None: no auth) is the bearer token
    every POST needs; ``max_body_bytes`` the largest request body (413 above);
    ``timeout_s`` each request's grading deadline (504 after); ``max_concurrency``
    how many requests may be graded or waiting at once (503 above) on
    ``threads`` grading threads per lane. ``allow_graders`` names the opt-in types
    (:data:`OPT_IN_GRADER_TYPES`, or ``"all"``) that ``graders/run`` and
    ``graders/validate`` requests may carry (403 otherwise), of which at most
    ``max_python_graders`` python graders stay alive. ``read_timeout_s`` is how
    long a client has to send a request's body (and, under ``rftkit serve``'s
    protocol, its head); ``max_connections`` the open connections ``rftkit serve``'s
    protocol keeps. A bad config raises :class:`GraderConfigError` here.

    >>> from fastapi.testclient import TestClient
    >>> app = create_app({"type": "structured", "name": "city"})
    >>> TestClient(app).post("/score", json={"sample": '{"city": "Paris"}', "item": {"reference": {"city": "Paris"}}}).json()
    {'score': 1.0, 'sub_scores': {'city': 1.0}, 'trace_id': None}
    """
    for name, value in (("max_body_bytes", max_body_bytes), ("max_concurrency", max_concurrency), ("threads", threads),
                        ("max_python_graders", max_python_graders), ("max_connections", max_connections)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}", code="bad_option", pointer=f"/{name}")
    for name, seconds in (("timeout_s", timeout_s), ("read_timeout_s", read_timeout_s)):
        if not seconds > 0:
            raise UserError(f"{name} must be > 0, got {seconds}", code="bad_option", pointer=f"/{name}")
    allowed = check_allowed([allow_graders] if isinstance(allow_graders, str) else allow_graders)
    server = _Server(build_grader(grader_config), token, max_body_bytes, timeout_s, max_concurrency, threads, allowed,
                     max_python_graders, read_timeout_s, max_connections)

    built_here = isinstance(grader_config, (Mapping, str, Path))  # a grader object passed in stays its owner's to close

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.pool.close()
        server.cache.close()
        for python in _python_parts(server.grader) if built_here else ():
            python.close()  # its worker processes end with the server

    app = FastAPI(title="rftkit reward server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.rftkit = server
    app.add_middleware(_Dispatch, server=server)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        codes: dict[int, RequestErrorCode] = {404: "not_found", 405: "method_not_allowed"}
        code: RequestErrorCode = codes.get(status, "http_error")
        message = f"no endpoint at {request.url.path}" if status == 404 else str(getattr(exc, "detail", exc))
        return Rejected(status, code, message, "", f"endpoints: {_ENDPOINT_LIST}", getattr(exc, "headers", None)).response()

    app.add_exception_handler(HTTPException, http_error)
    return app




