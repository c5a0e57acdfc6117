"""What a client may make the server do: allowed grader types, refusals, and the cache of graders built from requests."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import orjson

from schemas import UserError

from .._config import load_config
from .._errors import pointer_token
from .._registry import GRADER_TYPES
from ..openai._common import SampleGrader
from ..openai._multi import build_sample_grader
from ._wire import _CACHE_SIZE, DEFAULT_MAX_PYTHON_GRADERS, OPT_IN_GRADER_TYPES, SAFE_GRADER_TYPES, Rejected, _bad

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
    known = set(GRADER_TYPES)
    stack: list[tuple[Mapping[str, Any], str]] = [(config, "/grader")]
    while stack:
        node, pointer = stack.pop()
        kind = node.get("type")
        if not isinstance(kind, str):
            continue
        if kind == "multi":
            subs = node.get("graders")
            if isinstance(subs, Mapping):
                stack.extend((sub, f"{pointer}/graders/{pointer_token(str(key))}") for key, sub in reversed(list(subs.items()))
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
    :func:`graders.openai._model_backends.served_models_only`.
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
            from ..openai._model_backends import served_models_only

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




