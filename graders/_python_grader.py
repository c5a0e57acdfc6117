"""OpenAI's ``python`` grader, run locally: the config's ``grade(sample, item)`` runs in a sandboxed worker process.

The config is OpenAI's: ``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}``.
``source`` defines ``grade(sample, item) -> float``; ``sample`` is a dict with
``output_text``, ``output_json``, ``output_tools`` and ``choices`` (see
:func:`sample_dict`) and ``item`` is the dataset row.

**How it runs.** Each grader owns one persistent worker: a fresh interpreter
(``python -I -B``) that runs the source's top level once, then answers grade
requests over a pipe, as JSON (a reply is never unpickled: the worker is not
trusted). A warm grade costs a pipe round trip, about 0.1 ms; :meth:`PythonGrader.grade_batch`
sends a batch in one message and streams the replies back, about 0.04 ms a sample. The worker is stopped, its whole process tree
killed, and a new one started on the next grade, after any timeout, crash, kill,
``sys.exit``, ``MemoryError``, malformed reply, or child process or thread left
running. A plain exception in ``grade`` is a flagged 0 and keeps the worker.

**Limits** (OpenAI's, from its graders guide): source under 256 KiB; wall clock
``timeout`` per grade (120 s); address space ``memory_limit`` (2 GiB); each file
written at most 1 GiB; 2 threads for the numeric libraries. The source's top
level (its imports) gets ``max(timeout, 30 s)`` once per worker.

**Threat model.** The sandbox contains *buggy or careless* grader code: an
infinite loop, a memory hog, a process flood, ``sys.exit``/``os._exit``, a
stray network call, a write outside its scratch directory, megabytes of prints.
It is not a security boundary against code written to escape. What it does:

* the worker runs in its own session (process group) with a minimal environment
  (no API keys), ``cwd``/``HOME``/``TMPDIR`` in a private temporary directory
  that is deleted when the worker stops; stdout and stderr go to ``/dev/null``
  (the reason of a failed grade ends with the last 300 characters it printed);
* ``RLIMIT_AS``, ``RLIMIT_FSIZE`` and ``RLIMIT_CORE`` (no core dumps) bound memory and file sizes;
* where Linux allows unprivileged user namespaces (``isolation="auto"``), the
  worker runs in new user, network and PID namespaces: it has no network at all
  (not even the host's loopback), and when the worker dies the kernel kills every
  process it started, whatever session it moved to;
* a Python audit hook in the worker refuses, with ``PermissionError``: network
  calls (``connect``, ``bind``, ``sendto``, name lookups), opening a file (or an
  sqlite3 database) for writing or removing/renaming/``chmod``-ing anything outside the temp dir,
  ``subprocess``/``os.system``/``fork``/``exec`` (unless ``allow_subprocess=True``),
  and signalling processes that are not the worker's own children;
* a supervisor process (the worker's parent) kills the worker and its process group if
  this process dies;
  on every stop, this process freezes (``SIGSTOP``) and kills (``SIGKILL``) the
  supervisor's whole process tree found in ``/proc``, then the process group.

What it does not stop: code that uses ``ctypes`` or a C extension to make system
calls directly (the audit hook sees only Python-level calls; ``ctypes`` stays
importable because numpy and scipy need it); reading any file the user can read;
exhausting the disk with many files under 1 GiB; an unbounded fork bomb (there
is no process-count limit: ``RLIMIT_NPROC`` counts all of the user's processes);
CPU starvation of other processes while a grade runs. Without namespaces the
network block is the audit hook only, and a process that both leaves the
process group and loses its ancestry before a stop can survive. Run untrusted
code in a container or VM.
"""

from __future__ import annotations

import ast
import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import GraderConfigError
from ._openai import SampleInput, _check_keys, _check_name, check_threshold
from ._result import FieldDetail, Grade, no_errors
from ._templates import Sample

Isolation = Literal["auto", "namespaces", "basic"]
"""How the worker is isolated: ``namespaces`` (user, network and PID namespaces on
top of ``basic``; grading fails with ``python_grader_server_error`` where Linux
refuses them), ``basic`` (process group, resource limits, audit hook), or
``auto`` (namespaces where available, else basic)."""

SOURCE_LIMIT = 256 * 1024
"""The source must be smaller than this many bytes (UTF-8), as on OpenAI."""
DEFAULT_TIMEOUT = 120.0
"""Seconds of wall clock one grade may take (OpenAI: 2 minutes)."""
DEFAULT_MEMORY_LIMIT = 2 * 1024**3
"""Bytes of address space for the worker (OpenAI: 2 GB of memory)."""
FILE_SIZE_LIMIT = 1024**3
"""Largest file the worker may write, in bytes (OpenAI: 1 GB of disk)."""
LOAD_TIMEOUT = 30.0
"""The source's top level (its imports) may take ``max(timeout, LOAD_TIMEOUT)`` seconds."""

_START_TIMEOUT = 30.0  # interpreter start-up, before the source runs
_MAX_REPLY = 1 << 20  # bytes: a longer reply is treated as garbage
_THREADS = "2"  # OpenAI's 2 CPU cores: numeric libraries start this many threads
_FILENAME = "<python grader>"
_namespaces_refused: str | None = None  # why Linux refused namespaces here, once an "auto" start found out


# -- the config ----------------------------------------------------------------------------


def _check_source(source: object) -> str:
    """The source, or :class:`GraderConfigError` at ``/source`` when it is too big, does not compile or defines no ``grade``."""
    if not isinstance(source, str):
        raise GraderConfigError(f"source must be a string of Python code, got {type(source).__name__}", code="wrong_type",
                                pointer="/source")
    size = len(source.encode("utf-8", "surrogatepass"))
    if size >= SOURCE_LIMIT:
        raise GraderConfigError(f"source is {size} bytes; the limit is under {SOURCE_LIMIT} (256 KiB)", code="source_too_large",
                                pointer="/source", hint="move data into the item, or trim the code")
    try:
        compile(source, _FILENAME, "exec", dont_inherit=True)  # every compile-time check, not only the parser's
        tree = ast.parse(source, _FILENAME)
    except (SyntaxError, ValueError) as exc:
        line = f"line {exc.lineno}: " if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise GraderConfigError(f"source does not compile: {line}{exc.msg if isinstance(exc, SyntaxError) else exc}",
                                code="source_syntax_error", pointer="/source") from None
    definition = _find_grade(tree.body)
    if definition is None:
        raise GraderConfigError("source defines no grade function", code="missing_grade_function", pointer="/source",
                                hint="def grade(sample: dict, item: dict) -> float: ...")
    if isinstance(definition, ast.AsyncFunctionDef):
        raise GraderConfigError("grade is a coroutine (async def); it must return a float", code="bad_grade_signature",
                                pointer="/source", hint="def grade(sample, item) -> float")
    if isinstance(definition, ast.FunctionDef) and not _takes_two(definition.args):
        raise GraderConfigError("grade must accept exactly two positional arguments, (sample, item)",
                                code="bad_grade_signature", pointer="/source", hint="def grade(sample, item) -> float")
    return source


def _find_grade(body: list[ast.stmt]) -> ast.stmt | None:
    """The last top-level statement that binds ``grade`` (looking inside ``if``/``try``/``with`` blocks), or None."""
    found: ast.stmt | None = None
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == "grade":
            found = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == "grade" for t in targets for n in ast.walk(t)):
                found = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name.split(".")[0]) == "grade" for alias in node.names):
                found = node
        else:
            for block in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, block, None)
                if isinstance(inner, list):
                    stmts = [s for h in inner for s in h.body] if block == "handlers" else inner
                    found = _find_grade([s for s in stmts if isinstance(s, ast.stmt)]) or found
    return found


def _takes_two(args: ast.arguments) -> bool:
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    kw_required = sum(default is None for default in args.kw_defaults)
    return required <= 2 and (positional >= 2 or args.vararg is not None) and kw_required == 0


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise GraderConfigError(f"{name} must be a positive number, got {value!r}", code="bad_option", pointer=f"/{name}")
    return float(value)


def sample_dict(sample: SampleInput) -> dict[str, Any]:
    """The ``sample`` argument ``grade`` receives: OpenAI's four keys, always present.

    ``output_text`` is the text (None when the sample has none); ``output_json`` the
    JSON it holds (read as for templates) or None; ``output_tools`` and ``choices``
    lists, empty when absent. Other keys of a sample dict (``output_audio`` ...)
    pass through unchanged.

    >>> sample_dict('{"city": "Paris"}')
    {'output_text': '{"city": "Paris"}', 'output_json': {'city': 'Paris'}, 'output_tools': [], 'choices': []}
    """
    s = Sample.of(sample)
    out: dict[str, Any] = dict(s.raw) if isinstance(s.raw, Mapping) else {}
    out.update(output_text=s.output_text, output_json=s.output_json, output_tools=s.output_tools or [],
               choices=s.choices or [])
    return out


def _message(sample: SampleInput, item: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"sample": sample_dict(sample), "item": dict(item) if item is not None else {}}


def _encode(message: Mapping[str, Any]) -> bytes:
    try:
        data = json.dumps(message, separators=(",", ":")).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as exc:
        raise GraderConfigError(f"the sample and item must be JSON data to reach the python grader: {exc}", code="not_json",
                                hint="convert dates, sets and bytes to strings or lists first") from None
    return struct.pack(">I", len(data)) + data


# -- the grader ----------------------------------------------------------------------------


class PythonGrader:
    """OpenAI's ``python`` grader: ``grade(sample, item)`` from the config's ``source``, run in a sandboxed worker.

    ``grade`` returns a number: anything ``float()`` takes except strings
    (``bool``, ``int``, numpy scalars, ``Fraction``, ``Decimal``). OpenAI's docs
    say graders score in [0, 1] but not what happens to a float outside it; here a
    finite value outside [0, 1] is **clamped** into it (as ``multi`` clamps its
    formula), with no error flag: the reason says ``clamped`` and
    ``details[name].prediction`` keeps the raw value. A grader on a 0-100 scale
    therefore scores 1 for everything: divide by 100.

    Everything else scores 0 with ``python_grader_runtime_error`` and says why in
    ``reason``: an exception (its type, message and line), a value that is not a
    number, NaN or infinity, a grade over ``timeout``, a worker that died or was
    killed (its exit status or signal), a source whose top level failed. A worker
    that cannot be started at all scores 0 with ``python_grader_server_error``.

    ``timeout``, ``memory_limit``, ``allow_subprocess`` and ``isolation`` are
    rftkit's own knobs (not part of OpenAI's config): see the module docstring for
    what each limit does. ``image_tag`` is kept in the config but picks nothing:
    the worker uses this interpreter and its installed packages. Call
    :meth:`close` (or use ``with``) to stop the worker; it also stops when the
    grader is garbage-collected and at exit.

    >>> source = "def grade(sample, item):\\n    return float(sample['output_text'] == item['answer'])\\n"
    >>> with PythonGrader(name="exact", source=source) as g:
    ...     g.grade("42", {"answer": "42"}).score, g.grade("41", {"answer": "42"}).score
    (1.0, 0.0)
    """

    type: Literal["python"] = "python"

    def __init__(self, *, name: str, source: str, image_tag: str | None = None, pass_threshold: float | None = None,
                 timeout: float = DEFAULT_TIMEOUT, memory_limit: int = DEFAULT_MEMORY_LIMIT, allow_subprocess: bool = False,
                 isolation: Isolation = "auto") -> None:
        self._name = _check_name(name)
        self.source = _check_source(source)
        """The Python code that defines ``grade``."""
        if image_tag is not None and not isinstance(image_tag, str):
            raise GraderConfigError(f"image_tag must be a string, got {type(image_tag).__name__}", code="wrong_type",
                                    pointer="/image_tag")
        self.image_tag = image_tag
        """OpenAI's image tag (``"2025-05-08"``), kept for the config; it selects nothing locally."""
        self.pass_threshold = check_threshold(pass_threshold)
        """The score at or above which a grade passes (only marks the reason); None: no verdict."""
        self.timeout = _check_positive(timeout, "timeout")
        """Seconds of wall clock one grade may take."""
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit < 64 * 1024**2:
            raise GraderConfigError(f"memory_limit must be a number of bytes >= 64 MiB, got {memory_limit!r}", code="bad_option",
                                    pointer="/memory_limit", hint="e.g. 2 * 1024**3")
        self.memory_limit = memory_limit
        """Bytes of address space for the worker (``RLIMIT_AS``)."""
        self.allow_subprocess = bool(allow_subprocess)
        """Whether ``grade`` may start processes (``subprocess``, ``os.fork`` ...); they are killed with the worker."""
        if isolation not in ("auto", "namespaces", "basic"):
            raise GraderConfigError(f"isolation must be 'auto', 'namespaces' or 'basic', got {isolation!r}", code="bad_option",
                                    pointer="/isolation")
        self.isolation: Isolation = isolation
        self._lock = threading.Lock()
        self._worker = _Worker(self.source, self.timeout, memory_limit, self.allow_subprocess, isolation)
        self._finalizer = weakref.finalize(self, self._worker.stop)

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    @property
    def isolation_in_use(self) -> str | None:
        """``"namespaces"`` or ``"basic"``: how the running worker is isolated (None while none runs)."""
        return self._worker.isolation

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PythonGrader:
        """Build from ``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}``."""
        _check_keys(config, "python", ("name", "source"), ("image_tag", "pass_threshold"))
        return cls(name=config["name"], source=config["source"], image_tag=config.get("image_tag"),
                   pass_threshold=config.get("pass_threshold"))

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Run ``grade(sample, item)`` in the worker; a failure of the user's code is a flagged 0, never an exception."""
        (grade,) = self._grade_many([_message(sample, item)])
        return grade

    def grade_batch(self, samples: Iterable[SampleInput], items: Iterable[Mapping[str, Any] | None], *,
                    workers: int = 1, progress: bool = False) -> list[Grade]:
        """Grade ``samples[i]`` with ``items[i]`` for every i, in order; the same grades as calling :meth:`grade` on each.

        With ``workers=1`` the requests go to the worker in one message and the
        replies stream back, so the pipe round trip is paid once, not per sample;
        each sample still has its own ``timeout``, and after a failure the rest go
        to a fresh worker. ``workers=N`` grades in N processes, each with its own
        sandboxed worker (see :func:`graders.grade_batch`).
        """
        samples, items = list(samples), list(items)
        if workers != 1 or progress:
            from ._batch import grade_batch

            return grade_batch(self, samples, items, workers=workers, progress=progress)  # type: ignore[arg-type]  # items are the references
        if len(samples) != len(items):
            raise GraderConfigError(f"{len(samples)} samples but {len(items)} items", code="length_mismatch",
                                    hint="pass one item per sample")
        return self._grade_many([_message(s, i) for s, i in zip(samples, items)])

    def _grade_many(self, messages: list[dict[str, Any]]) -> list[Grade]:
        with self._lock:
            replies = self._worker.call(messages)
        return [self._to_grade(reply) for reply in replies]

    def close(self) -> None:
        """Stop the worker and kill its process tree (a later grade starts a new one)."""
        with self._lock:
            self._worker.stop()

    def __enter__(self) -> PythonGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        out: dict[str, Any] = {"type": "python", "name": self.name, "source": self.source}
        if self.image_tag is not None:
            out["image_tag"] = self.image_tag
        if self.pass_threshold is not None:
            out["pass_threshold"] = self.pass_threshold
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels as its settings (to batch worker processes); each process starts its own sandbox.
        return (_rebuild, (self.config(), self.timeout, self.memory_limit, self.allow_subprocess, self.isolation))

    def __repr__(self) -> str:
        return f"PythonGrader(name={self.name!r}, timeout={self.timeout:g}, isolation={self.isolation!r})"

    def _to_grade(self, reply: _Reply) -> Grade:
        if reply.error is not None:
            errors = no_errors()
            errors["python_grader_server_error" if reply.server else "python_grader_runtime_error"] = True
            return Grade(0.0, {}, {}, errors, f"{reply.error}; scored 0")
        raw = reply.value
        if not math.isfinite(raw):
            errors = no_errors()
            errors["python_grader_runtime_error"] = True
            return Grade(0.0, {}, {}, errors, f"grade returned {raw}, not a finite number; scored 0")
        score = min(max(raw, 0.0), 1.0)
        clamped = f" (returned {raw:g}, clamped)" if score != raw else ""
        verdict = ""
        if self.pass_threshold is not None:
            passed = score >= self.pass_threshold
            verdict = f" {'>=' if passed else '<'} {self.pass_threshold:g}: {'passes' if passed else 'fails'}"
        detail = FieldDetail("python", score, "compared", prediction=raw)
        return Grade(score, {}, {self.name: detail}, None, f"{score:.3f} from grade(){clamped}{verdict}")


def _rebuild(config: Mapping[str, Any], timeout: float, memory_limit: int, allow_subprocess: bool,
             isolation: Isolation) -> PythonGrader:
    return PythonGrader(name=config["name"], source=config["source"], image_tag=config.get("image_tag"),
                        pass_threshold=config.get("pass_threshold"), timeout=timeout, memory_limit=memory_limit,
                        allow_subprocess=allow_subprocess, isolation=isolation)


# -- the worker, seen from this process ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    """What one grade request came to: a value, or an error message (``server``: the sandbox, not the code, failed)."""

    value: float = 0.0
    error: str | None = None
    server: bool = False


_TIMEOUT = "timeout"
_DIED = "died"


class _Worker:
    """The sandboxed process tree of one grader (a supervisor and the worker it forked) and the pipes to it.

    Started on the first call, stopped (the whole tree killed) after any failure
    and restarted on the next call. Used under the grader's lock.
    """

    def __init__(self, source: str, timeout: float, memory_limit: int, allow_subprocess: bool, isolation: Isolation) -> None:
        self.source, self.timeout, self.memory_limit = source, timeout, memory_limit
        self.allow_subprocess, self.mode = allow_subprocess, isolation
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = 0  # the pid of the process that started the worker (a forked copy must not use or kill it)
        self.pid = 0  # the worker's pid (the supervisor's child)
        self.isolation: str | None = None
        self.tmp = ""
        self.fds: dict[str, int] = {}

    # -- one request ----------------------------------------------------------------------

    def call(self, messages: list[dict[str, Any]]) -> list[_Reply]:
        """One reply per message, in order. The messages go out in one request and the replies stream back; after a
        failure the worker is stopped and the rest go to a fresh one."""
        replies: list[_Reply] = []
        request = _encode({"batch": messages})  # a GraderConfigError here leaves the worker untouched
        try:
            while len(replies) < len(messages):
                if replies:
                    request = _encode({"batch": messages[len(replies):]})
                replies += self._call_some(request, len(messages) - len(replies))
        except BaseException:  # KeyboardInterrupt while starting or waiting: the worker cannot be reused
            self.stop()
            raise
        return replies

    def _call_some(self, request: bytes, count: int) -> list[_Reply]:
        """Send ``count`` messages, read replies until they are all in or one fails (it is the last one returned)."""
        if self.proc is not None and self.owner != os.getpid():
            self._forget()  # inherited through fork: the worker belongs to the parent process
        if self.proc is not None and select.select([self.fds["ctl"]], [], [], 0)[0]:
            self.stop()  # the worker died while idle (killed from outside): not this sample's fault, start afresh
        for attempt in (1, 2):
            if self.proc is None:
                failed = self._start()
                if failed is not None:
                    return [failed]
            unsent = self._write(request, time.monotonic() + self.timeout)
            if unsent != _DIED or attempt == 2:
                break
            self.stop()  # the worker was gone before it read the request: start afresh, once
        replies: list[_Reply] = []
        while len(replies) < count:
            frame: object = unsent or self._read(self.fds["resp"], time.monotonic() + self.timeout)
            if frame == _TIMEOUT:
                self.stop()
                return [*replies, _Reply(error=f"grade did not return within {self.timeout:g} s (wall clock); "
                                                "the worker was killed")]
            if frame == _DIED:
                status = self._exit_status()
                self.stop()
                return [*replies, _Reply(error=f"the worker died during grade ({status})")]
            reply = _parse_reply(frame)
            if reply is None or (isinstance(frame, dict) and frame.get("restart") is True):
                self.stop()
                return [*replies, reply or _Reply(error="the worker sent a malformed reply; it was killed")]
            replies.append(reply)
        return replies

    # -- start and stop -------------------------------------------------------------------

    def _start(self) -> _Reply | None:
        global _namespaces_refused
        mode = self.mode
        if mode == "auto" and _namespaces_refused is not None:
            mode = "basic"
        started = self._spawn(mode)
        if isinstance(started, _Reply):
            return started
        deadline = time.monotonic() + _START_TIMEOUT
        hello = self._read(self.fds["ctl"], deadline)
        if isinstance(hello, dict) and isinstance(hello.get("refused"), str) and mode == "auto":
            _namespaces_refused = hello["refused"]  # not available here: remember, and start over without namespaces
            self.stop()
            return self._start()
        if not (isinstance(hello, dict) and isinstance(hello.get("pid"), int)):
            why = hello.get("error") if isinstance(hello, dict) else None
            return self._server_error(str(why) if why else "the supervisor did not report")
        if isinstance(hello.get("refused"), str):
            _namespaces_refused = hello["refused"]
        self.pid, self.isolation = hello["pid"], str(hello.get("isolation"))
        init = {"source": self.source, "tmp": self.tmp, "memory": self.memory_limit, "file_size": FILE_SIZE_LIMIT,
                "allow_subprocess": self.allow_subprocess, "namespaces": self.isolation == "namespaces"}
        if self._write(_encode(init), deadline) or self._read(self.fds["resp"], deadline) != {"loading": True}:
            return self._server_error("the worker did not start")
        ready = self._read(self.fds["resp"], time.monotonic() + max(self.timeout, LOAD_TIMEOUT))
        if ready == _TIMEOUT:
            self.stop()
            return _Reply(error=f"the source's top level did not finish within {max(self.timeout, LOAD_TIMEOUT):g} s")
        if ready == _DIED:
            status = self._exit_status()
            self.stop()
            return _Reply(error=f"the worker died while running the source's top level ({status})")
        if ready != {"ready": True}:
            self.stop()
            return _Reply(error="the worker sent a malformed reply; it was killed")
        return None

    def _spawn(self, mode: str) -> _Reply | None:
        child: dict[str, int] = {}
        try:
            self.tmp = tempfile.mkdtemp(prefix="rftkit-python-grader-")
            for name in ("req", "resp", "ctl", "life"):
                read, write = os.pipe()
                mine, theirs = (write, read) if name in ("req", "life") else (read, write)
                self.fds[name], child[name] = mine, theirs
        except OSError as exc:
            for fd in child.values():
                os.close(fd)
            self.stop()
            return _Reply(error=f"the python grader's sandbox could not start: {exc}", server=True)
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": self.tmp, "TMPDIR": self.tmp, "LANG": "C.UTF-8",
               **{k: _THREADS for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                                        "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")},
               **{k: os.environ[k] for k in ("NLTK_DATA", "LD_LIBRARY_PATH") if k in os.environ}}
        argv = [sys.executable, "-I", "-B", "-c", _CHILD, *(str(child[k]) for k in ("req", "resp", "ctl", "life")), mode]
        try:
            with open(os.path.join(self.tmp, ".supervisor-stderr"), "wb") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                             pass_fds=tuple(child.values()), start_new_session=True, cwd=self.tmp, env=env)
        except OSError as exc:
            self.stop()
            return _Reply(error=f"the python grader's sandbox could not start: {exc}", server=True)
        finally:
            for fd in child.values():
                os.close(fd)
        self.owner = os.getpid()
        for name in ("req", "ctl", "resp"):
            os.set_blocking(self.fds[name], False)
        return None

    def _server_error(self, why: str) -> _Reply:
        log = ""
        try:
            with open(os.path.join(self.tmp, ".supervisor-stderr"), "rb") as f:
                log = f.read()[-500:].decode("utf-8", "replace").strip().replace("\n", " | ")
        except OSError:
            pass
        self.stop()
        return _Reply(error=f"the python grader's sandbox could not start: {why}" + (f" ({log})" if log else ""), server=True)

    def _exit_status(self) -> str:
        """How the worker ended, as the supervisor reported it (waits a moment for the report)."""
        frame = self._read(self.fds["ctl"], time.monotonic() + 2.0)
        code = frame.get("exit") if isinstance(frame, dict) else None
        if not isinstance(code, int):
            return "exit status unknown"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}"
        return f"exit status {code}: os._exit or a crash"

    def stop(self) -> None:
        """Kill the whole process tree, reap it, close the pipes and delete the temp dir."""
        proc, self.proc = self.proc, None
        if proc is not None and self.owner == os.getpid():
            if proc.poll() is None:
                _kill_tree(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        elif proc is not None:
            self.proc = proc
            self._forget()
            return
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        self.isolation = None
        if self.tmp:
            if sys.version_info >= (3, 12):
                shutil.rmtree(self.tmp, onexc=_force_remove)
            else:
                shutil.rmtree(self.tmp, onerror=_force_remove)
            self.tmp = ""

    def _forget(self) -> None:
        """Drop a worker inherited through ``fork`` without touching it (it belongs to the parent process)."""
        if self.proc is not None:
            self.proc.returncode = 0  # not this process's child: never wait for it, never warn that it still runs
        for fd in self.fds.values():
            os.close(fd)
        self.proc, self.fds, self.tmp, self.isolation = None, {}, "", None

    # -- framed pipes ---------------------------------------------------------------------

    def _write(self, data: bytes, deadline: float) -> str | None:
        """Send one frame: None once sent, ``_TIMEOUT`` or ``_DIED`` when the deadline passed or the worker died first."""
        fd, ctl = self.fds["req"], self.fds["ctl"]
        view = memoryview(data)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        poller.register(ctl, select.POLLIN)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _TIMEOUT
            events = dict(poller.poll(remaining * 1000))
            if events.get(fd, 0) & select.POLLOUT:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    return _DIED
            elif events:
                return _DIED  # the supervisor reported the worker's end, or the pipe broke
        return None

    def _read(self, fd: int, deadline: float) -> object:
        """One decoded frame from ``fd``; ``_TIMEOUT`` or ``_DIED`` when none comes (or garbage: returned as None)."""
        ctl = self.fds["ctl"]
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if fd != ctl:
            poller.register(ctl, select.POLLIN)
        buf = bytearray()
        need = 4
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _TIMEOUT
            events = dict(poller.poll(remaining * 1000))
            if events.get(fd, 0):
                try:
                    chunk = os.read(fd, need - len(buf))
                except BlockingIOError:
                    continue
                if not chunk:
                    return _DIED
                buf += chunk
                if need == 4 and len(buf) == 4:
                    need += struct.unpack(">I", buf)[0]
                    if need > _MAX_REPLY:
                        return None
            elif events:
                return _DIED  # the supervisor reported the worker's end
        try:
            return json.loads(bytes(buf[4:]))
        except ValueError:
            return None


def _parse_reply(frame: object) -> _Reply | None:
    """A reply frame checked field by field (the worker is not trusted), or None when it is malformed."""
    if not isinstance(frame, dict):
        return None
    value, error = frame.get("value"), frame.get("error")
    if isinstance(error, str):
        output = frame.get("output")
        tail = f" (printed: {output[-300:]!r})" if isinstance(output, str) and output else ""
        return _Reply(error=error[:2000] + tail)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _Reply(value=float(value))
    return None


def _process_tree(root: int) -> set[int]:
    """``root`` and its descendants, from the parent pids in ``/proc`` (just ``root`` where there is no ``/proc``)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {root}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    tree, todo = {root}, [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in tree:
                tree.add(pid)
                todo.append(pid)
    return tree


def _kill_tree(root: int) -> None:
    """Stop ``root`` and every descendant (so none can fork any more), then kill them all."""
    stopped: set[int] = set()
    for _ in range(20):
        fresh = _process_tree(root) - stopped
        if not fresh:
            break
        for pid in fresh:
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
        stopped |= fresh
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 2.0  # SIGKILL is asynchronous: wait until they are dead (or zombies)
    while stopped and time.monotonic() < deadline:
        stopped = {pid for pid in stopped if _running(pid)}
        if stopped:
            time.sleep(0.001)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _force_remove(function: Callable[..., Any], path: str, error: object) -> None:
    """``rmtree`` error handler: make the directory writable (the grader may have chmod-ed it) and retry once."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


# -- the worker, seen from inside (runs as `python -I -B -c _CHILD req resp ctl life mode`) ---

_CHILD = r'''
import json, os, select, signal, struct, sys, time, traceback

REQ, RESP, CTL, LIFE = (int(a) for a in sys.argv[1:5])
MODE = sys.argv[5]
FILENAME = "<python grader>"
TMP = os.getcwd()  # the sandbox's private directory: the grading process starts us there


def send(fd, obj):
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd, n):
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv(fd):
    head = read_exact(fd, 4)
    body = None if head is None else read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def load_libc():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


def enter_namespaces(libc):
    """New user, network and PID namespaces: None on success, else (why, whether this process is now unusable)."""
    if libc is None or not sys.platform.startswith("linux"):
        return "not available on this platform", False
    import ctypes
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(0x10000000 | 0x40000000 | 0x20000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID
        return "unshare: " + os.strerror(ctypes.get_errno()), False
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    except OSError as exc:
        return "id maps: %s" % exc, True
    return None


def become_subreaper(libc):
    if libc is not None and sys.platform.startswith("linux"):
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the tree stay in it


def supervise():
    libc = load_libc()
    isolation, refused = "basic", None
    if MODE != "basic":
        failed = enter_namespaces(libc)
        if failed is None:
            isolation = "namespaces"
        elif failed[1] or MODE == "namespaces":
            send(CTL, {"refused": failed[0]} if MODE == "auto" else {"error": "namespaces unavailable: " + failed[0]})
            os._exit(0)
        else:
            refused = failed[0]
    if isolation == "basic":
        become_subreaper(libc)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pid = os.fork()
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w, CTL, LIFE):
                os.close(fd)
            work(libc, isolation)
        finally:
            os._exit(70)
    os.close(REQ)
    os.close(RESP)
    send(CTL, {"pid": pid, "isolation": isolation, "refused": refused})
    reported = False
    while True:
        ready = select.select([LIFE, wake_r], [], [])[0]
        if LIFE in ready:
            orphaned(pid, isolation)
        if wake_r in ready:
            os.read(wake_r, 512)
        while True:
            try:
                child, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if child == 0:
                break
            if child == pid and not reported:
                reported = True
                send(CTL, {"exit": os.waitstatus_to_exitcode(status)})


def orphaned(pid, isolation):
    """The grading process died without stopping us: kill the worker and its group, then remove the temp dir."""
    import shutil
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    if isolation == "namespaces":  # the worker is the namespace's init: the kernel kills every process in it too
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        shutil.rmtree(TMP, ignore_errors=True)
        os._exit(0)
    group = os.getpgrp()
    cleaner = os.fork()
    if cleaner == 0:  # a cleaner in a group of its own: once the old group is dead, remove the temp dir
        try:
            os.setpgid(0, 0)
            deadline = time.monotonic() + 10
            while group_running(group) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            shutil.rmtree(TMP, ignore_errors=True)
            os._exit(0)
    try:
        os.setpgid(cleaner, cleaner)  # here too, so that the cleaner has left the group before it is killed
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)


def group_running(group):
    """Whether a process of the group still runs (zombies do not count: they write nothing)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(group, 0)
            return True
        except OSError:
            return False
    for name in names:
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
                return True
    return False


class Tail:
    """sys.stdout and sys.stderr of the worker: keeps the last 2,000 characters, drops the rest."""

    encoding, errors, text = "utf-8", "replace", ""

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        self.text = (self.text + s[-2000:])[-2000:]
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        return 1


def install_hook(tmp, allow_subprocess, in_namespaces):
    """The audit hook: refuses the network, writes outside tmp, processes and stray signals (Python-level calls only)."""
    from os import path as osp
    real_tmp = osp.realpath(tmp)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    network = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
               "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname"}
    processes = {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
                 "os.startfile"}
    # event -> (path index, dir_fd index or None) of each path it changes
    paths = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
             "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
             "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.setxattr": ((0, None),),
             "os.removexattr": ((0, None),), "os.chflags": ((0, None),), "os.lchflags": ((0, None),),
             "shutil.rmtree": ((0, 1),)}
    me = os.getpid()

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True  # an open descriptor: it was checked when opened
        try:
            path = os.fsdecode(path)
            if isinstance(dir_fd, int) and dir_fd >= 0 and not osp.isabs(path):
                path = osp.join(os.readlink("/proc/self/fd/%d" % dir_fd), path)
            full = osp.realpath(path)
        except Exception:
            return False
        return full == real_tmp or full.startswith(real_tmp + os.sep) or full == os.devnull

    def own_child(pid):
        if pid == me or in_namespaces:
            return True  # inside the PID namespace only the sandbox's own processes exist
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                return int(f.read().rsplit(b")", 1)[1].split()[1]) == me
        except (OSError, ValueError, IndexError):
            return False

    def deny(what):
        raise PermissionError("python grader sandbox: %s is not allowed" % what)

    def hook(event, args):
        if event == "open":
            if isinstance(args[2], int) and args[2] & write_flags and not inside(args[0]):
                deny("writing %r (only the temp dir %s is writable)" % (args[0], tmp))
        elif event in paths:
            for at, dir_at in paths[event]:
                if len(args) > at and not inside(args[at], args[dir_at] if dir_at is not None and len(args) > dir_at else None):
                    deny("%s(%r) outside the temp dir %s" % (event, args[at], tmp))
        elif event == "sqlite3.connect":
            if args[0] not in (":memory:", "", b":memory:", b"") and not inside(args[0]):
                deny("sqlite3.connect(%r) outside the temp dir %s" % (args[0], tmp))
        elif event in network:
            deny("network access (%s)" % event)
        elif event in processes:
            if not allow_subprocess:
                deny("starting a process (%s); build the grader with allow_subprocess=True to allow it" % event)
        elif event == "os.kill":
            if args[0] <= 0 or not own_child(args[0]):
                deny("os.kill(%r) (only the grader's own child processes)" % (args[0],))
        elif event == "os.killpg":
            if args[0] <= 1 or args[0] == os.getpgrp() or not own_child(args[0]):
                deny("os.killpg(%r) (only the grader's own child process groups)" % (args[0],))

    sys.addaudithook(hook)


def describe(exc, memory):
    where = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable>"
    if len(text) > 300:
        text = text[:297] + "..."
    out = type(exc).__name__ + (": " + text if text else "")
    if where:
        out += " (line %d, in %s)" % (where[-1].lineno, where[-1].name)
    if isinstance(exc, MemoryError):
        out += " (the memory limit is %d MiB)" % (memory >> 20)
    return out


def call(grade, message, memory):
    """One grade: {"value": float} or {"error": str}, with "restart" when the worker should not be reused."""
    try:
        value = grade(message["sample"], message["item"])
    except SystemExit as exc:
        return {"error": "grade called sys.exit(%r)" % (exc.code,), "restart": True}
    except Exception as exc:
        return {"error": "grade raised " + describe(exc, memory), "restart": isinstance(exc, MemoryError)}
    except BaseException as exc:
        return {"error": "grade raised " + describe(exc, memory), "restart": True}
    kind = type(value).__name__
    if isinstance(value, (str, bytes, bytearray)) or not hasattr(type(value), "__float__"):
        return {"error": "grade returned %s, not a number" % ("None" if value is None else "a " + kind)}
    try:
        return {"value": float(value)}
    except Exception as exc:
        return {"error": "grade returned a %s that float() rejects (%s: %s)" % (kind, type(exc).__name__, exc)}


def has_children():
    try:
        for tid in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % tid) as f:
                if f.read().strip():
                    return True
    except OSError:
        pass
    return False


def work(libc, isolation):
    import builtins, linecache, resource, threading
    init = recv(REQ)
    if init is None:
        os._exit(0)
    for fd in (REQ, RESP):
        os.set_inheritable(fd, False)
    if isolation == "basic":
        become_subreaper(libc)
    memory = init["memory"]
    for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, init["file_size"]), (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass  # a platform without this limit (macOS and RLIMIT_AS)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing
    os.chdir(init["tmp"])
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    out = Tail()
    sys.stdout = sys.stderr = out
    sys.argv = ["grader"]
    install_hook(init["tmp"], init["allow_subprocess"], init["namespaces"])
    send(RESP, {"loading": True})
    source = init["source"]
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    scope = {"__name__": "grader", "__builtins__": builtins}
    grade, broken = None, None
    try:
        exec(compile(source, FILENAME, "exec", dont_inherit=True), scope)
        grade = scope.get("grade")
        if not callable(grade):
            broken = "the source's grade is a %s, not a function" % type(grade).__name__
    except BaseException as exc:
        broken = "the source's top level raised " + describe(exc, memory)
    threads = threading.active_count()
    send(RESP, {"ready": True})
    while True:
        request = recv(REQ)
        if request is None:
            os._exit(0)
        for message in request["batch"]:
            out.text = ""
            reply = {"error": broken} if broken else call(grade, message, memory)
            if "error" in reply and out.text:
                reply["output"] = out.text
            if has_children() or threading.active_count() > threads:
                reply["restart"] = True  # a process or thread outlived the grade: start afresh
            send(RESP, reply)
            if reply.get("restart"):
                break  # the grading process stops this worker; the rest of the batch goes to a new one


supervise()
'''
