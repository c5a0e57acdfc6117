"""The server's wire format: JSON in and out, the shape of each request, and the Rejected answer."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Send

from schemas import MisuseCode, UserError

from .._registry import GRADER_TYPES

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
SAFE_GRADER_TYPES = tuple(name for name, t in GRADER_TYPES.items() if t.request_borne == "safe")
"""Grader types a request may carry by default: they run no user code, open no file and make no request."""
OPT_IN_GRADER_TYPES = tuple(name for name, t in GRADER_TYPES.items() if t.request_borne == "opt_in")
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


RequestErrorCode = Literal[
    "bad_content_length", "body_timeout", "body_too_large", "config_too_deep", "grader_error",
    "grader_type_not_allowed", "grading_timeout", "http_error", "invalid_token", "length_mismatch",
    "local_model_refused", "malformed_json", "method_not_allowed", "missing_field", "missing_token",
    "not_found", "overloaded", "server_path_refused", "too_many_connections", "wrong_type",
]
"""The server's own ``error.code`` for a refused request (docs/errors.md, docs/serve.md); a bad grader config in a
request is refused with the grader's own :data:`schemas.MisuseCode`."""


class Rejected(Exception):
    """A request the server refuses: becomes ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, code: RequestErrorCode | MisuseCode, message: str, pointer: str = "", hint: str = "",
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


def _bad(code: RequestErrorCode | MisuseCode, message: str, pointer: str, hint: str = "") -> Rejected:
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




