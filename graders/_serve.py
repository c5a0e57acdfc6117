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
before FastAPI's layers) and a protocol whose response head and body leave in
one write (:class:`_Coalesced`); ``docs/serve.md`` has what each saved.

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
:func:`graders._python_grader.grading_deadline`, so it is killed at the
deadline, not abandoned. Requests to the served grader and request-borne or
large ones are graded on separate threads (:class:`GradingPool`'s two lanes),
so heavy work never takes the threads a normal request needs. Slow clients are
cut off: a request's head and body must arrive within the read timeout
(:class:`_Protocol`, and :meth:`_Server._body` under other ASGI servers), and
connections over the cap are closed as they arrive.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import ipaddress
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
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
from ._openai import _LAZY, _SUB_BUILDERS, SampleGrader, _escape, build_sample_grader
from ._run import run_response
from ._structured import StructuredGrader

T = TypeVar("T")

TOKEN_ENV = "RFTKIT_SERVE_TOKEN"
"""The environment variable ``rftkit serve`` reads the bearer token from when ``--token`` is not given."""

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_THREADS = 4
DEFAULT_READ_TIMEOUT_S = 10.0
"""Seconds a client has to send a request's head, and again its body (a slow or stalled client is disconnected)."""
DEFAULT_MAX_CONNECTIONS = 512
"""Open connections per worker process; more are answered 503 and closed at once (under the usual 1,024 open files)."""
DEFAULT_MAX_PYTHON_GRADERS = 4
"""Request-borne python graders kept alive at once (each holds a sandboxed worker process)."""
RUN_PATH = "/v1/fine_tuning/alpha/graders/run"
VALIDATE_PATH = "/v1/fine_tuning/alpha/graders/validate"
SAFE_GRADER_TYPES = ("string_check", "text_similarity", "structured", "multi")
"""Grader types a request may carry by default: they run no user code, open no file and make no request."""
OPT_IN_GRADER_TYPES = ("python", "score_model", "label_model", "endpoint")
"""Grader types a request may carry only when the operator allows them (``--allow-graders``)."""
_SETTINGS_ENV = "_RFTKIT_SERVE_SETTINGS"  # how `rftkit serve --workers N` hands its settings to each worker process
_CACHE_SIZE = 128
_INLINE_BYTES = 16 * 1024
"""A structured grader's ``/get_reward`` request up to this size is graded on the event loop (see :meth:`_Server._respond`)."""
_HEAVY_BYTES = 1024 * 1024
"""A body larger than this is decoded, checked and graded on the heavy lane's threads, never on the event loop."""
_TIMED = "rftkit.read_timeout"
"""The scope extension :class:`_Protocol` sets: the connection itself times the request's head and body out."""
_ECHO_DEPTH = 200
"""Values nested deeper than this are not echoed back in full by the stdlib fallback of :func:`_dumps`."""

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
    """``value`` as JSON; what orjson refuses (a lone surrogate, an integer over 64 bits, deep nesting) goes through
    :func:`_jsonable` and the stdlib, so a model output echoed in a grade never turns an answer into a 500."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(_jsonable(value, 0), ensure_ascii=False, allow_nan=False).encode()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _jsonable(value: Any, depth: int) -> Any:
    """A copy of ``value`` that any JSON reader takes: lone surrogates as U+FFFD, non-finite floats as null (as orjson
    writes them), integers kept however large, anything nested deeper than :data:`_ECHO_DEPTH` replaced by a note."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() < 13_000 else f"<an integer of {value.bit_length()} bits>"  # str() stops near 4,300 digits
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)):
        if depth >= _ECHO_DEPTH:
            return f"<nested more than {_ECHO_DEPTH} levels deep>"
        if isinstance(value, dict):
            return {_jsonable(str(k), depth): _jsonable(v, depth + 1) for k, v in value.items()}
        return [_jsonable(v, depth + 1) for v in value]
    return _jsonable(str(value), depth)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(raw: bytes) -> Any:
    """The request body's JSON. orjson first; what it refuses but JSON allows (a lone surrogate escape such as
    ``"Par\\ud83d"``, an integer over 64 bits) is read by the stdlib. NaN and Infinity are not JSON: refused."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            pass
        raise _bad("malformed_json", f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                   "", "send one JSON object (UTF-8), with Content-Type: application/json") from None


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


def _python_deadline() -> Callable[[float], AbstractContextManager[Any]]:
    """:func:`graders._python_grader.grading_deadline` (python grades started inside are killed when it passes),
    imported only by a server that may run python: the module brings the sandbox's code."""
    from ._python_grader import grading_deadline

    return grading_deadline


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any], float | None]
"""A grading job: the loop and future to answer on, the work, and its deadline (``time.monotonic``) when python work in
it is to be killed there."""


class _Lane:
    """Daemon threads that take jobs from one queue, started on first use."""

    def __init__(self, name: str, threads: int, finish: Callable[[asyncio.Future[Any], Any, BaseException | None], None],
                 deadline: Callable[[float], AbstractContextManager[Any]] | None) -> None:
        self.name, self.threads = name, threads
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._finish = finish
        self._deadline = deadline
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()

    def put(self, job: _Job) -> None:
        if len(self._started) < self.threads:
            with self._lock:
                while len(self._started) < self.threads:
                    t = threading.Thread(target=self._work, name=f"rftkit-{self.name}-{len(self._started)}", daemon=True)
                    t.start()
                    self._started.append(t)
        self.jobs.put(job)

    def close(self) -> None:
        with self._lock:
            for _ in self._started:
                self.jobs.put(None)
            self._started.clear()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            loop, future, fn, deadline = job
            result: Any = None
            error: BaseException | None = None
            if not future.done():  # done already: its deadline passed while it waited, so it is dropped unstarted
                try:
                    if deadline is not None and self._deadline is not None:
                        with self._deadline(max(deadline - time.monotonic(), 0.001)):  # python work is killed there
                            result = fn()
                        if time.monotonic() >= deadline:  # cut short (grades flagged as such): the request's answer is 504
                            result, error = None, _Timeout()
                    else:
                        result = fn()
                except BaseException as exc:  # delivered to the awaiting request, which answers 4xx or 500
                    error = exc
            try:
                loop.call_soon_threadsafe(self._finish, future, result, error)
            except RuntimeError:  # the loop closed (the server stopped) while this job ran
                pass


class GradingPool:
    """Runs grading jobs on daemon threads: at most ``limit`` jobs at once (running or waiting), each with a deadline.

    Two lanes of ``threads`` threads each: ``light`` for requests to the served
    grader, ``heavy`` for request-borne graders and bodies over
    :data:`_HEAVY_BYTES`, so eight clients posting 10 MB batches or hung
    request-borne python graders never hold the threads a normal ``/score``
    needs. The count of jobs is kept on the event loop's thread; a job's slot is
    given back only when its thread is done with it (or drops it unstarted after
    its deadline), so a server whose threads are all stuck refuses at once (503)
    instead of queueing. The threads are daemons: a stuck grader never keeps the
    process from exiting. With ``deadline`` (:func:`graders._python_grader.grading_deadline`),
    a job run with ``kill=True`` has its python work killed at its deadline, so
    its thread and its slot come back then.
    """

    def __init__(self, threads: int, limit: int, deadline: Callable[[float], AbstractContextManager[Any]] | None = None) -> None:
        self.threads = threads
        self.limit = limit
        self.in_flight = 0
        self.light = _Lane("grading", threads, self._finish, deadline)
        self.heavy = _Lane("heavy", threads, self._finish, deadline)

    def close(self) -> None:
        """Ask every thread to stop once its current job is done (a stuck one stops when its grader returns)."""
        self.light.close()
        self.heavy.close()

    def _finish(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.in_flight -= 1
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    async def run(self, fn: Callable[[], T], timeout_s: float, *, heavy: bool = False, kill: bool = False) -> T:
        """``fn()`` on a grading thread; 503 when ``limit`` jobs are already in flight, 504 after ``timeout_s``."""
        if self.in_flight >= self.limit:
            raise Rejected(503, "overloaded", f"the server is grading {self.in_flight} requests, its limit; try again shortly",
                           hint="retry after a short wait, send fewer concurrent requests, or start with more --workers",
                           headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.in_flight += 1
        (self.heavy if heavy else self.light).put((loop, future, fn, time.monotonic() + timeout_s if kill else None))
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        except _Timeout:
            raise Rejected(504, "grading_timeout", f"grading took longer than the {timeout_s:g} s limit", hint=(
                "send smaller batches or raise --timeout")) from None
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


# --------------------------------------------------------------------------- request-borne graders


def check_allowed(names: Collection[str]) -> frozenset[str]:
    """The grader types ``--allow-graders`` names (``all``: every opt-in type); raises :class:`UserError` on an unknown one."""
    allowed: set[str] = set()
    for name in names:
        if name == "all":
            allowed.update(OPT_IN_GRADER_TYPES)
        elif name in OPT_IN_GRADER_TYPES:
            allowed.add(name)
        else:
            raise UserError(f"allow_graders: {name!r} is not a grader type the server can allow", code="bad_option",
                            pointer="/allow_graders", hint=f"choose from {', '.join(OPT_IN_GRADER_TYPES)}, or all "
                            f"({', '.join(SAFE_GRADER_TYPES)} are always allowed)")
    return frozenset(allowed)


_MODEL_PATH_PREFIXES = ("/", ".", "~", "\\")


def _refusal(config: Mapping[str, Any], allowed: frozenset[str]) -> Rejected | None:
    """Why the server will not build the grader a request carries (403), or None; looks at the config only.

    Walks ``multi`` sub-graders (iteratively: a deep config cannot exhaust the
    stack). A type outside :data:`SAFE_GRADER_TYPES` that the operator did not
    allow is refused, and so is anything that would make the server read a path
    the request names, whatever the flags: a ``structured`` schema given as a
    file path, a model grader's ``model`` written as a path. The answer never
    depends on the server's files. Unknown types are left to the builder (400).
    """
    known = {*_SUB_BUILDERS, *_LAZY}
    stack: list[tuple[Mapping[str, Any], str]] = [(config, "/grader")]
    while stack:
        node, pointer = stack.pop()
        kind = node.get("type")
        if not isinstance(kind, str):
            continue
        if kind == "multi":
            subs = node.get("graders")
            if isinstance(subs, Mapping):
                stack.extend((sub, f"{pointer}/graders/{_escape(str(key))}") for key, sub in reversed(list(subs.items()))
                             if isinstance(sub, Mapping))
            continue
        if kind in known and kind not in SAFE_GRADER_TYPES and kind not in allowed:
            return Rejected(403, "grader_type_not_allowed", f"this server does not run request-borne {kind!r} graders",
                            pointer, f"its operator can allow them with rftkit serve --allow-graders {kind} "
                            f"({_RISKS.get(kind, 'see docs/serve.md, Security')}); allowed by default: "
                            f"{', '.join(SAFE_GRADER_TYPES)}")
        if kind == "structured" and isinstance(node.get("schema"), str):
            return Rejected(403, "server_path_refused", "a request's structured grader must carry its schema inline; "
                            "this server opens no file a request names", f"{pointer}/schema",
                            "send the JSON Schema object itself as 'schema'")
        model = node.get("model")
        if kind in ("score_model", "label_model") and isinstance(model, str) and model.startswith(_MODEL_PATH_PREFIXES):
            return Rejected(403, "local_model_refused", f"a request's {kind} grader may only name a served model; this "
                            "server loads no model directory a request names", f"{pointer}/model",
                            "name a model served at the server's $RFTKIT_MODEL_BASE_URL")
    return None


_RISKS = {
    "python": "it runs the request's code on the server, in the python grader's sandbox",
    "score_model": "each grade calls the server's model endpoint ($RFTKIT_MODEL_BASE_URL)",
    "label_model": "each grade calls the server's model endpoint ($RFTKIT_MODEL_BASE_URL)",
    "endpoint": "the server POSTs to any URL the request names",
}


def _python_parts(grader: Any) -> list[Any]:
    """The python graders in ``grader`` (itself, or a multi's sub-graders): what holds a worker process."""
    subs = getattr(grader, "graders", None) if getattr(grader, "type", None) == "multi" else None
    parts = list(subs.values()) if isinstance(subs, Mapping) else [grader]
    return [g for g in parts if getattr(g, "type", None) == "python"]


def _key(config: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(config, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate, a huge integer, deep nesting: the stdlib's text serves as the key
        try:
            return json.dumps(config, sort_keys=True).encode()
        except RecursionError:
            raise _bad("config_too_deep", "the grader config is nested too deeply", "/grader") from None


class _Entry:
    """A built grader, its python parts, and how many grading jobs use it now."""

    __slots__ = ("grader", "python", "users", "retired")

    def __init__(self, grader: SampleGrader) -> None:
        self.grader = grader
        self.python = _python_parts(grader)
        self.users = 0
        self.retired = False

    def close(self) -> None:
        for g in self.python:
            g.close()


class _GraderCache:
    """Graders built from request configs (OpenAI's endpoints), least recently used dropped first; shared by the threads.

    At most ``size`` graders, and at most ``python_size`` of them holding python
    graders (each keeps a sandboxed worker process, tens to hundreds of MB): a
    dropped one is closed, its workers stopped, once no grading job uses it
    (:meth:`use`), so a grade in flight is never cut off. Live python graders
    are therefore at most ``python_size`` plus one per busy grading thread.
    Request-borne model graders are built with
    :func:`graders._model_grader.served_models_only`.
    """

    def __init__(self, size: int = _CACHE_SIZE, python_size: int = DEFAULT_MAX_PYTHON_GRADERS, *,
                 models: bool = False) -> None:
        self.size = size
        self.python_size = python_size
        self.models = models
        """Whether model graders may be built (then under ``served_models_only``, so only that import is paid)."""
        self._built: OrderedDict[bytes, _Entry] = OrderedDict()
        self._retiring: set[_Entry] = set()
        self._lock = threading.Lock()

    @contextmanager
    def use(self, config: Mapping[str, Any]) -> Iterator[SampleGrader]:
        """The grader ``config`` describes, built once; kept alive (not closed) until the ``with`` block ends."""
        entry = self._acquire(_key(config), config)
        try:
            yield entry.grader
        finally:
            with self._lock:
                entry.users -= 1
                done = entry.retired and entry.users == 0
                if done:
                    self._retiring.discard(entry)
            if done:
                entry.close()

    def live_python(self) -> int:
        """How many python-bearing graders are alive: cached, or dropped but still grading."""
        with self._lock:
            return sum(1 for e in self._built.values() if e.python) + len(self._retiring)

    def close(self) -> None:
        """Close every cached python grader (the server is stopping); one still grading is closed when it is done."""
        with self._lock:
            entries = list(self._built.values())
            self._built.clear()
            for e in entries:
                e.retired = True
            idle = [e for e in entries if e.users == 0]
            self._retiring.update(e for e in entries if e.users and e.python)
        for e in idle:
            e.close()

    def _acquire(self, key: bytes, config: Mapping[str, Any]) -> _Entry:
        with self._lock:
            entry = self._built.get(key)
            if entry is not None:
                self._built.move_to_end(key)
                entry.users += 1
                return entry
        entry = _Entry(self._build(config))
        with self._lock:
            existing = self._built.get(key)
            if existing is not None:  # another thread built the same config meanwhile: use that one, drop this one
                self._built.move_to_end(key)
                existing.users += 1
                idle = [entry]
                entry = existing
            else:
                entry.users = 1
                self._built[key] = entry
                idle = self._evict()
        for e in idle:
            e.close()
        return entry

    def _evict(self) -> list[_Entry]:
        """Drop the least recently used over the limits (under the lock); the ones no job uses, to close now."""
        dropped = []
        while len(self._built) > self.size:
            dropped.append(self._built.popitem(last=False)[1])
        python = [key for key, e in self._built.items() if e.python]
        for key in python[: max(len(python) - self.python_size, 0)]:
            dropped.append(self._built.pop(key))
        idle = []
        for e in dropped:
            e.retired = True
            if e.users:
                if e.python:
                    self._retiring.add(e)
            else:
                idle.append(e)
        return idle

    def _build(self, config: Mapping[str, Any]) -> SampleGrader:
        if self.models:
            from ._model_grader import served_models_only

            only_served: AbstractContextManager[Any] = served_models_only()
        else:
            only_served = nullcontext()
        try:
            with only_served:
                return build_sample_grader(load_config(config))
        except UserError as exc:
            raise _bad(exc.code, exc.message, "/grader" + exc.pointer, exc.hint) from None
        except RecursionError:
            raise _bad("config_too_deep", "the grader config is nested too deeply", "/grader") from None


# --------------------------------------------------------------------------- the app


class _Server:
    """The state behind one app: its grader, limits, grading threads and the endpoints."""

    def __init__(self, grader: AnyGrader, token: str | None, max_body_bytes: int, timeout_s: float, max_concurrency: int,
                 threads: int, allowed: frozenset[str], max_python_graders: int, read_timeout_s: float,
                 max_connections: int) -> None:
        self.grader = grader
        self.declared = field_names(grader)
        self.structured = isinstance(grader, StructuredGrader)
        self.inline_bytes = _INLINE_BYTES if isinstance(grader, StructuredGrader) and grader._bounded else 0
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
        (``StructuredGrader._bounded``: flat, no ``math`` field, lists matched by key)
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
    server = _Server(_build(grader_config), token, max_body_bytes, timeout_s, max_concurrency, threads, allowed,
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
        """uvicorn's httptools protocol, its writes joined per turn of the event loop (:class:`_Coalesced`), with a read
        timeout and a cap on open connections.

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
            super().connection_made(_Coalesced(transport, self.loop))  # type: ignore[arg-type]  # a transport in all but name
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
    app = create_app(s.pop("grader"), **s)
    gc.freeze()
    return _served(app)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _read_token(token: str | None, token_file: Path | None) -> str | None:
    """The bearer token: ``--token`` (or ``$RFTKIT_SERVE_TOKEN``), or the first line of ``--token-file``."""
    if token_file is None:
        return token or None
    if token:
        raise _fail(f"give the token once: --token (or ${TOKEN_ENV}) or --token-file, not both")
    try:
        text = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"--token-file {token_file}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    if not text or "\n" in text:
        raise _fail(f"--token-file {token_file} must hold the token on one line")
    return text


def serve(
    grader: Annotated[Path, typer.Option("--grader", "-g", help="Grader config (JSON) served by /get_reward, /grade and /score.")],
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs a token (or --insecure-no-token).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own copy of the grader.", min=1)] = 1,
    token: Annotated[str | None, typer.Option(envvar=TOKEN_ENV, show_envvar=True, help=(
        "Bearer token every POST must send (GET /health stays open). Prefer the environment variable or --token-file: "
        "a command line is readable by every process on the machine."))] = None,
    token_file: Annotated[Path | None, typer.Option(help="Read the bearer token from this file (one line).")] = None,
    insecure_no_token: Annotated[bool, typer.Option("--insecure-no-token", help=(
        "Serve on a non-loopback --host without a token: anyone who can reach the port can use the server."))] = False,
    allow_graders: Annotated[str, typer.Option(help=(
        "Grader types a graders/run or graders/validate request may carry besides string_check, text_similarity, "
        "structured and multi, comma-separated: python (runs the client's code), score_model, label_model (call your "
        "model server), endpoint (POSTs to any URL the client names), or all. See docs/serve.md, Security."))] = "",
    max_python_graders: Annotated[int, typer.Option(help="Request-borne python graders kept alive at once, per worker.", min=1)]
    = DEFAULT_MAX_PYTHON_GRADERS,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body in bytes; larger ones get 413.", min=1)] = DEFAULT_MAX_BODY_BYTES,
    timeout: Annotated[float, typer.Option(help=(
        "Seconds a request may spend grading; then it gets 504 and its python work is killed."), min=0.001)] = DEFAULT_TIMEOUT_S,
    read_timeout: Annotated[float, typer.Option(help=(
        "Seconds a client has to send a request's head and body; then the connection is closed."), min=0.001)]
    = DEFAULT_READ_TIMEOUT_S,
    max_connections: Annotated[int, typer.Option(help="Open connections per worker; more get 503 and are closed.", min=1)]
    = DEFAULT_MAX_CONNECTIONS,
    max_concurrency: Annotated[int, typer.Option(help="Requests graded or waiting at once, per worker; more get 503.", min=1)]
    = DEFAULT_MAX_CONCURRENCY,
    threads: Annotated[int, typer.Option(help="Grading threads per worker and lane (served grader; request-borne or large).",
                                         min=1)] = DEFAULT_THREADS,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level (critical, error, warning, info, debug).")] = "warning",
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
) -> None:
    """Serve a grader over HTTP: OpenRLHF's /get_reward, OpenAI's graders run/validate, /grade and /score.

    Example: rftkit serve --grader graders/data/resume_grader.json --port 8000 --workers 2
    then point OpenRLHF at http://127.0.0.1:8000/get_reward (--reward.remote_url; before 0.10: --remote_rm_url).
    """
    import uvicorn

    token = _read_token(token, token_file)
    if not token and not _is_loopback(host) and not insecure_no_token:
        raise _fail(f"--host {host} is reachable from other machines and no token is set: give --token-file PATH or "
                    f"${TOKEN_ENV}, serve on 127.0.0.1 behind a proxy, or pass --insecure-no-token")
    settings: dict[str, Any] = {
        "token": token, "max_body_bytes": max_body_bytes, "timeout_s": timeout, "max_concurrency": max_concurrency,
        "threads": threads, "allow_graders": [a.strip() for a in allow_graders.split(",") if a.strip()],
        "max_python_graders": max_python_graders, "read_timeout_s": read_timeout, "max_connections": max_connections}
    try:
        app = create_app(grader, **settings)  # builds the grader: a bad config stops here, before any worker starts
    except UserError as exc:
        raise _fail(str(exc)) from None
    if not token and not _is_loopback(host):
        typer.echo(f"warning: serving on {host} without a token: anyone who can reach it can use it", err=True)
    allowed = sorted(app.state.rftkit.allowed)
    typer.echo(f"rftkit serve: grader {grader} on http://{host}:{port} ({workers} worker(s)); POST /get_reward, /grade, "
               f"/score, {RUN_PATH}, {VALIDATE_PATH} (request-borne graders: {', '.join([*SAFE_GRADER_TYPES, *allowed])}); "
               "GET /health", err=True)
    common: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "access_log": access_log,
                              "http": _http_protocol()}
    if workers == 1:
        gc.freeze()  # see _app_from_env
        uvicorn.run(_served(app), **common)
        return
    os.environ[_SETTINGS_ENV] = json.dumps({"grader": str(grader.resolve()), **settings})
    uvicorn.run(f"{__name__}:_app_from_env", factory=True, workers=workers, **common)


def register(app: typer.Typer) -> None:
    """Add ``rftkit serve`` to ``app`` (the ``rftkit.commands`` entry point)."""
    app.command(name="serve")(serve)
