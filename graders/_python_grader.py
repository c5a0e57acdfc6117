"""OpenAI's ``python`` grader, run locally: the config's ``grade(sample, item)`` runs in a sandbox, one process per grade.

The config is OpenAI's: ``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}``.
``source`` defines ``grade(sample, item) -> float``; ``sample`` is a dict with
``output_text``, ``output_json``, ``output_tools`` and ``choices`` (see
:func:`sample_dict`) and ``item`` is the dataset row.

**How it runs.** Each grader owns a *template*: a fresh interpreter
(``python -I -B graders/_python_worker.py``) that confines itself and runs the
source's top level once. Every grade runs in a child forked from the template
(a batch: one child per chunk of samples), which gets the sample on a pipe of its
own, writes its reply on another pipe that no other grade holds, and is killed
afterwards. So nothing a grade does to its process (replacing ``float`` or
``json.dumps``, the harness's functions, writing forged replies, starting
threads) reaches any other grade; this process validates every reply (exactly
the expected frames, in order, a finite number) and a bad one is a flagged 0 for
that grade alone. Up to ``concurrency`` grades run at once, from any number of
threads; a hung grade holds one of them until its ``timeout`` or the caller's
:func:`grading_deadline`, when its process is killed.

**Limits** (OpenAI's, from its graders guide): source under 256 KiB; wall clock
``timeout`` per grade (120 s); address space ``memory_limit`` (2 GiB); 1 GiB of
disk (a private tmpfs per grade with namespaces; per file without); 2 threads
for the numeric libraries. The top level gets ``max(timeout, 30 s)`` once per template.

**Confinement** (``isolation="namespaces"``, which ``"auto"`` picks where Linux
allows user namespaces): new user, mount, network, PID and IPC namespaces; every
mount read-only but the temp dir, a fresh ``/proc``, a ``/dev`` of harmless
devices; no capabilities; a template no grade can read or write (not
dumpable); a seccomp filter that refuses ``fork``/``clone``/``exec`` and
signals to other processes unless ``allow_subprocess=True``; resource limits;
an audit hook for readable errors. Not confined: reading files, CPU time,
system calls made through ``ctypes`` within a grade's own process, and kernel
exploits (use a VM). ``isolation="basic"`` keeps the process per grade, the
seccomp filter, the limits and the audit hook, plus Landlock where the kernel
has it (writes outside the temp dir, TCP), and nothing else.
docs/graders/python.md has the full threat model.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import itertools
import json
import math
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import GraderConfigError
from ._openai import SampleInput, _check_keys, _check_name, check_threshold
from ._result import FieldDetail, Grade, no_errors
from ._templates import Sample

Isolation = Literal["auto", "namespaces", "basic"]
"""How the sandbox is isolated: ``namespaces`` (user, mount, network and PID namespaces,
read-only mounts and no capabilities on top of ``basic``; grading fails with
``python_grader_server_error`` where Linux refuses them), ``basic`` (a process per
grade, seccomp, resource limits, audit hook), or ``auto`` (namespaces where
available, else basic)."""

SOURCE_LIMIT = 256 * 1024
"""The source must be smaller than this many bytes (UTF-8), as on OpenAI."""
DEFAULT_TIMEOUT = 120.0
"""Seconds of wall clock one grade may take (OpenAI: 2 minutes)."""
DEFAULT_MEMORY_LIMIT = 2 * 1024**3
"""Bytes of address space for each sandbox process (OpenAI: 2 GB of memory)."""
FILE_SIZE_LIMIT = 1024**3
"""Bytes a grade may write (OpenAI: 1 GB of disk): its private tmpfs with namespaces, else each file."""
DEFAULT_CONCURRENCY = 4
"""Grades of one grader that may run at once (each in its own process); more wait for a slot."""
BATCH_CHUNK = 16
"""Samples of a batch graded in one process by default (see :meth:`PythonGrader.grade_batch`)."""
LOAD_TIMEOUT = 30.0
"""The source's top level (its imports) may take ``max(timeout, LOAD_TIMEOUT)`` seconds."""

_START_TIMEOUT = 30.0  # interpreter start-up and confinement, before the source runs
_KILL_WAIT = 5.0  # seconds for the template to confirm a killed grade is gone before the whole sandbox is stopped
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_python_worker.py")
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


# -- the caller's deadline -----------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("rftkit_python_grading_deadline", default=None)


@contextlib.contextmanager
def grading_deadline(seconds: float) -> Iterator[None]:
    """Within this block, every python grade ends by ``seconds`` from now: work still running then is killed.

    The reward server wraps a request's grading in it, so that a request past
    its deadline leaves no sandbox process working for it. A grade cut short
    scores 0 with ``python_grader_server_error`` and a reason saying the
    deadline passed; each grade's own ``timeout`` still applies. Nested blocks
    keep the earlier deadline. The deadline lives in a context variable: it
    holds in this thread and in contexts copied from it (``asyncio.to_thread``,
    ``contextvars.copy_context().run``), not in a plain new thread.

    >>> with grading_deadline(5.0):
    ...     with grading_deadline(60.0):
    ...         round(_deadline.get() - time.monotonic())
    5
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        raise GraderConfigError(f"a grading deadline is a number of seconds, got {seconds!r}", code="bad_option")
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(outer, at))
    try:
        yield
    finally:
        _deadline.reset(token)


# -- the grader ----------------------------------------------------------------------------


class PythonGrader:
    """OpenAI's ``python`` grader: ``grade(sample, item)`` from the config's ``source``, one sandboxed process per grade.

    ``grade`` returns a number: anything ``float()`` takes except strings
    (``bool``, ``int``, numpy scalars, ``Fraction``, ``Decimal``). OpenAI's docs
    say graders score in [0, 1] but not what happens to a float outside it; here a
    finite value outside [0, 1] is **clamped** into it (as ``multi`` clamps its
    formula), with no error flag: the reason says ``clamped`` and
    ``details[name].prediction`` keeps the raw value. A grader on a 0-100 scale
    therefore scores 1 for everything: divide by 100.

    Everything else scores 0 with ``python_grader_runtime_error`` and says why in
    ``reason``: an exception (its type, message and line), a value that is not a
    number, NaN or infinity, a grade over ``timeout``, a process that died or was
    killed (its exit status or signal), a malformed reply, a source whose top
    level failed. A sandbox that cannot be started, a grade cut by
    :func:`grading_deadline` or by :meth:`close` scores 0 with ``python_grader_server_error``.

    ``timeout``, ``memory_limit``, ``allow_subprocess``, ``isolation`` and
    ``concurrency`` are rftkit's own knobs (not part of OpenAI's config): see the
    module docstring. ``image_tag`` is kept in the config but picks nothing:
    the sandbox uses this interpreter and its installed packages. Call
    :meth:`close` (or use ``with``) to stop the sandbox; it also stops when the
    grader is garbage-collected and at exit. A grader may be shared by threads.

    >>> source = "def grade(sample, item):\\n    return float(sample['output_text'] == item['answer'])\\n"
    >>> with PythonGrader(name="exact", source=source) as g:
    ...     g.grade("42", {"answer": "42"}).score, g.grade("41", {"answer": "42"}).score
    (1.0, 0.0)
    """

    type: Literal["python"] = "python"

    def __init__(self, *, name: str, source: str, image_tag: str | None = None, pass_threshold: float | None = None,
                 timeout: float = DEFAULT_TIMEOUT, memory_limit: int = DEFAULT_MEMORY_LIMIT, allow_subprocess: bool = False,
                 isolation: Isolation = "auto", concurrency: int = DEFAULT_CONCURRENCY) -> None:
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
        """Bytes of address space for each sandbox process (``RLIMIT_AS``)."""
        self.allow_subprocess = bool(allow_subprocess)
        """Whether ``grade`` may start processes (``subprocess``, ``os.fork`` ...); they are killed with its grade."""
        if isolation not in ("auto", "namespaces", "basic"):
            raise GraderConfigError(f"isolation must be 'auto', 'namespaces' or 'basic', got {isolation!r}", code="bad_option",
                                    pointer="/isolation")
        self.isolation: Isolation = isolation
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 256:
            raise GraderConfigError(f"concurrency must be a whole number from 1 to 256, got {concurrency!r}",
                                    code="bad_option", pointer="/concurrency", hint="e.g. the number of CPU cores")
        self.concurrency = concurrency
        """How many grades may run at once (each in its own process); more calls wait for a free slot."""
        self._pool = _Pool(self.source, self.timeout, memory_limit, self.allow_subprocess, isolation, concurrency)
        self._finalizer = weakref.finalize(self, self._pool.close)

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    @property
    def isolation_in_use(self) -> str | None:
        """``"namespaces"`` or ``"basic"``: how the running sandbox is isolated (None while none runs)."""
        sandbox = self._pool.sandbox
        return sandbox.isolation if sandbox is not None else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PythonGrader:
        """Build from ``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}``."""
        _check_keys(config, "python", ("name", "source"), ("image_tag", "pass_threshold"))
        return cls(name=config["name"], source=config["source"], image_tag=config.get("image_tag"),
                   pass_threshold=config.get("pass_threshold"))

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Run ``grade(sample, item)`` in a fresh child of the template; a failure of the user's code is a flagged 0."""
        (reply,) = self._pool.run([_message(sample, item)], _deadline.get())
        return self._to_grade(reply)

    def grade_batch(self, samples: Iterable[SampleInput], items: Iterable[Mapping[str, Any] | None], *,
                    workers: int = 1, progress: bool = False, chunk_size: int = BATCH_CHUNK) -> list[Grade]:
        """Grade ``samples[i]`` with ``items[i]`` for every i, in order; the same grades as calling :meth:`grade` on each.

        With ``workers=1`` the batch is cut into chunks of ``chunk_size``
        samples; each chunk is graded in one child of the template, and up to
        ``concurrency`` chunks run at once. Each sample still has its own
        ``timeout``, and after a failure that ends the child the rest of its chunk
        goes to a fresh one. Samples of one chunk share a process, so a sample
        that tampers with it (replacing a builtin, starting a thread) can change
        the grades of the samples after it *in its chunk*, never beyond:
        ``chunk_size=1`` gives every sample a process of its own, at the cost of
        a fork each (docs/benchmarks.md has the figures). ``workers=N`` grades in
        N processes, each with its own sandbox (see :func:`graders.grade_batch`).
        """
        samples, items = list(samples), list(items)
        if workers != 1 or progress:
            from ._batch import grade_batch

            return grade_batch(self, samples, items, workers=workers, progress=progress)  # type: ignore[arg-type]  # items are the references
        if len(samples) != len(items):
            raise GraderConfigError(f"{len(samples)} samples but {len(items)} items", code="length_mismatch",
                                    hint="pass one item per sample")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise GraderConfigError(f"chunk_size must be a positive whole number, got {chunk_size!r}", code="bad_option",
                                    hint="1 grades every sample in a process of its own")
        messages = [_message(s, i) for s, i in zip(samples, items)]
        chunks = [messages[at:at + chunk_size] for at in range(0, len(messages), chunk_size)]
        deadline = _deadline.get()
        if len(chunks) <= 1:
            replies = [r for chunk in chunks for r in self._pool.run(chunk, deadline)]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(chunks)), thread_name_prefix="python-grader") as pool:
                replies = [r for part in pool.map(lambda chunk: self._pool.run(chunk, deadline), chunks) for r in part]
        return [self._to_grade(reply) for reply in replies]

    def close(self) -> None:
        """Stop the sandbox and kill its processes (a later grade starts a new one).

        Safe from any thread while grades run: each of them ends at once as a
        flagged 0 (``python_grader_server_error``, "the grader was closed").
        """
        self._pool.close()

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
        return (_rebuild, (self.config(), self.timeout, self.memory_limit, self.allow_subprocess, self.isolation,
                           self.concurrency))

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
             isolation: Isolation, concurrency: int = DEFAULT_CONCURRENCY) -> PythonGrader:
    return PythonGrader(name=config["name"], source=config["source"], image_tag=config.get("image_tag"),
                        pass_threshold=config.get("pass_threshold"), timeout=timeout, memory_limit=memory_limit,
                        allow_subprocess=allow_subprocess, isolation=isolation, concurrency=concurrency)


# -- the sandbox, seen from this process -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    """What one grade came to: a value, or an error message (``server``: the sandbox or the caller, not the code)."""

    value: float = 0.0
    error: str | None = None
    server: bool = False


_TIMEOUT = "timeout"
_DIED = "died"


def _deadline_reply() -> _Reply:
    return _Reply(error="the grading deadline passed before grade returned; its process was killed", server=True)


class _Pool:
    """The sandbox of one grader, (re)started on demand, and the slots that bound how many grades run at once."""

    def __init__(self, source: str, timeout: float, memory_limit: int, allow_subprocess: bool, isolation: Isolation,
                 concurrency: int) -> None:
        self.settings = (source, timeout, memory_limit, allow_subprocess, isolation)
        self.timeout, self.concurrency = timeout, concurrency
        self.sandbox: _Sandbox | None = None
        self.starting: _Sandbox | None = None  # a sandbox loading its source (close() kills it without the lock)
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()  # guards starting and stopping the sandbox
        self.slots = threading.BoundedSemaphore(self.concurrency)
        self.owner = os.getpid()

    def run(self, messages: list[dict[str, Any]], deadline: float | None) -> list[_Reply]:
        """One reply per message, in order, graded in children of the sandbox (a fresh one after any failure)."""
        request = _encode({"batch": messages})  # a GraderConfigError here starts nothing
        if self.owner != os.getpid():  # inherited through fork: the sandbox belongs to the parent process
            if self.sandbox is not None:
                self.sandbox.forget()
            self.sandbox = None
            self._reset()
        replies: list[_Reply] = []
        retried = False
        while len(replies) < len(messages):
            if replies:
                request = _encode({"batch": messages[len(replies):]})
            left = len(messages) - len(replies)
            wait = None if deadline is None else deadline - time.monotonic()
            if (wait is not None and wait <= 0) or not self.slots.acquire(timeout=-1 if wait is None else wait):
                return replies + [_deadline_reply()] * left
            try:
                sandbox = self._sandbox(deadline)
                if isinstance(sandbox, _Reply):
                    return replies + [sandbox] * left
                if sandbox.broken is not None:
                    return replies + [_Reply(error=sandbox.broken)] * left
                got = sandbox.grade(request, left, self.timeout, deadline)
                if got is None:
                    self._stop(sandbox)
            finally:
                self.slots.release()
            if got is None and not retried:
                retried = True  # the template was gone before the child started: not this sample's fault; once
                continue
            replies += got or [_Reply(error="the sandbox died before grade started", server=True)]
            if sandbox.closing:  # close() from another thread: the rest of this call is not graded either
                closed = _Reply(error="the grader was closed during grade", server=True)
                return replies + [closed] * (len(messages) - len(replies))
        return replies

    def _sandbox(self, deadline: float | None) -> _Sandbox | _Reply:
        wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self.lock.acquire(timeout=wait):  # another thread is starting it: wait no longer than the deadline
            return _deadline_reply()
        try:
            return self._sandbox_locked(deadline)
        finally:
            self.lock.release()

    def _sandbox_locked(self, deadline: float | None) -> _Sandbox | _Reply:
        sandbox = self.sandbox
        if sandbox is not None and not sandbox.alive():
            sandbox.stop()  # it died while idle (killed from outside): start afresh
            sandbox = self.sandbox = None
        if sandbox is None:
            sandbox = self.starting = _Sandbox(*self.settings)
            try:
                failed = sandbox.start(deadline)
            finally:
                self.starting = None
            if failed is not None:
                return failed
            self.sandbox = sandbox
        return sandbox

    def _stop(self, sandbox: _Sandbox) -> None:
        with self.lock:
            if self.sandbox is sandbox:
                self.sandbox = None
        sandbox.stop()

    def close(self) -> None:
        if self.owner != os.getpid():
            return  # a copy inherited through fork: the sandbox is the parent's
        starting = self.starting
        if starting is not None:
            starting.kill()  # its start returns at once, and lets go of the lock
        with self.lock:
            sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.stop(closing=True)


class _Sandbox:
    """One template process tree (a supervisor, the template, its grade children) and the channels to it.

    The template takes requests on a unix socket: ``G`` + a key with the two
    pipe ends of one grade (the request's read end, the reply's write end), and
    ``K`` + a key to kill that grade's child. Replies never pass through the
    template: the child writes them on its own pipe, and this process reads them.
    """

    def __init__(self, source: str, timeout: float, memory_limit: int, allow_subprocess: bool, mode: Isolation) -> None:
        self.source, self.timeout, self.memory_limit = source, timeout, memory_limit
        self.allow_subprocess, self.mode = allow_subprocess, mode
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = os.getpid()
        self.isolation: str | None = None
        self.broken: str | None = None  # the source's top level failed: every grade reports this
        self.tmp = ""
        self.fds: dict[str, int] = {}
        self.sock: socket.socket | None = None
        self.keys = itertools.count(1)
        self.send_lock = threading.Lock()
        self.stopped = False
        self.closing = False

    # -- start and stop -------------------------------------------------------------------

    def start(self, deadline: float | None) -> _Reply | None:
        """Start the tree and load the source: None once ready, else the reply every grade gets."""
        global _namespaces_refused
        mode = self.mode
        if mode == "auto" and _namespaces_refused is not None:
            mode = "basic"
        failed = self._spawn(mode)
        if failed is not None:
            return failed
        hello = _read_frame(self.fds["ctl"], time.monotonic() + _START_TIMEOUT)
        if isinstance(hello, dict) and isinstance(hello.get("refused"), str) and mode == "auto":
            _namespaces_refused = hello["refused"]  # not available here: remember, and start over without namespaces
            self.stop()
            self.mode, self.stopped = "basic", False
            return self.start(deadline)
        if not (isinstance(hello, dict) and hello.get("isolation") in ("namespaces", "basic")):
            if self.closing:
                self.stop()
                return _Reply(error="the grader was closed during grade", server=True)
            why = hello.get("error") if isinstance(hello, dict) else None
            return self._server_error(str(why) if why else "the supervisor did not report")
        if isinstance(hello.get("refused"), str):
            _namespaces_refused = hello["refused"]
        self.isolation = str(hello["isolation"])
        load = max(self.timeout, LOAD_TIMEOUT)
        ready = self._read_sock(time.monotonic() + load if deadline is None else min(time.monotonic() + load, deadline))
        if ready == _TIMEOUT:
            self.stop()
            if deadline is not None and time.monotonic() >= deadline:
                return _deadline_reply()
            return _Reply(error=f"the source's top level did not finish within {load:g} s")
        if ready == _DIED:
            status = self._exit_status()
            self.stop()
            if self.closing:
                return _Reply(error="the grader was closed during grade", server=True)
            return _Reply(error=f"the sandbox died while running the source's top level ({status})")
        if isinstance(ready, dict) and isinstance(ready.get("broken"), str):
            self.broken = ready["broken"][:2000]
        elif ready != {"ready": True}:
            self.stop()
            return _Reply(error="the sandbox sent a malformed reply; it was killed")
        return None

    def _spawn(self, mode: str) -> _Reply | None:
        child: dict[str, int] = {}
        theirs: socket.socket | None = None
        try:
            self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="rftkit-python-grader-"))
            source_file = os.path.join(self.tmp, ".source.py")
            with open(source_file, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(self.source)
            for name in ("req", "ctl", "life"):
                read, write = os.pipe()
                mine, their = (write, read) if name in ("req", "life") else (read, write)
                self.fds[name], child[name] = mine, their
            self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            child["sock"] = theirs.detach()
        except OSError as exc:
            for fd in child.values():
                os.close(fd)
            self.stop()
            return _Reply(error=f"the python grader's sandbox could not start: {exc}", server=True)
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": self.tmp, "TMPDIR": self.tmp, "LANG": "C.UTF-8",
               **{k: _THREADS for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                                        "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")},
               **{k: os.environ[k] for k in ("NLTK_DATA", "LD_LIBRARY_PATH") if k in os.environ}}
        argv = [sys.executable, "-I", "-B", _WORKER, *(str(child[k]) for k in ("req", "ctl", "life", "sock")), mode]
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
        init = {"tmp": self.tmp, "source_file": source_file, "memory": self.memory_limit, "file_size": FILE_SIZE_LIMIT,
                "allow_subprocess": self.allow_subprocess}
        try:
            os.write(self.fds["req"], _encode(init))  # a small frame: the pipe takes it whole
        except OSError as exc:
            return self._server_error(f"the supervisor did not take its settings ({exc})")
        os.close(self.fds.pop("req"))
        os.set_blocking(self.fds["ctl"], False)
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
        """How the template ended, as the supervisor reported it (waits a moment for the report)."""
        frame = _read_frame(self.fds["ctl"], time.monotonic() + 2.0)
        return _status(frame.get("exit") if isinstance(frame, dict) else None)

    def kill(self) -> None:
        """Kill the process tree from any thread, touching no descriptor (the thread using them sees them end)."""
        self.closing = True
        proc = self.proc
        if proc is not None and self.owner == os.getpid() and proc.returncode is None:
            _kill_tree(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def alive(self) -> bool:
        """Whether the template still serves (the supervisor reports on ``ctl`` only when it ended)."""
        return not self.stopped and "ctl" in self.fds and not select.select([self.fds["ctl"]], [], [], 0)[0]

    def stop(self, closing: bool = False) -> None:
        """Kill the whole process tree, reap it, close the channels and delete the temp dir."""
        with self.send_lock:
            self.closing |= closing
            self.stopped = True
            if self.sock is not None:
                self.sock.close()  # the template sees the end of its socket and exits
                self.sock = None
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
            self.forget()
            return
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        if self.tmp:
            if sys.version_info >= (3, 12):
                shutil.rmtree(self.tmp, onexc=_force_remove)
            else:
                shutil.rmtree(self.tmp, onerror=_force_remove)
            self.tmp = ""

    def forget(self) -> None:
        """Drop a sandbox inherited through ``fork`` without touching it (it belongs to the parent process)."""
        if self.proc is not None:
            self.proc.returncode = 0  # not this process's child: never wait for it, never warn that it still runs
        for fd in self.fds.values():
            os.close(fd)
        if self.sock is not None:
            self.sock.close()  # this process's copy only: the parent's stays open
        self.proc, self.fds, self.tmp, self.sock, self.stopped = None, {}, "", None, True

    # -- one child: a chunk of samples --------------------------------------------------------

    def _send(self, data: bytes, fds: list[int] | None = None) -> bool:
        with self.send_lock:
            if self.sock is None:
                return False
            try:
                if fds:
                    socket.send_fds(self.sock, [data], fds)
                else:
                    self.sock.send(data)
            except OSError:
                return False
            return True

    def grade(self, request: bytes, count: int, timeout: float, deadline: float | None) -> list[_Reply] | None:
        """Replies to the first samples of ``request`` from one child: all ``count``, or up to the first that failed.
        None when the template took no request (it had died): nothing was graded."""
        key = next(self.keys)
        try:
            req_r, req_w = os.pipe()
            rep_r, rep_w = os.pipe()
        except OSError as exc:
            return [_Reply(error=f"the sandbox could not open a pipe: {exc}", server=True)]
        try:
            sent = self._send(b"G" + key.to_bytes(8, "big"), [req_r, rep_w])
        finally:
            os.close(req_r)
            os.close(rep_w)
        if not sent:
            os.close(req_w)
            os.close(rep_r)
            return None
        try:
            return self._replies(key, request, count, req_w, rep_r, timeout, deadline)
        finally:
            self._send(b"K" + key.to_bytes(8, "big"))  # the child's work is over, whatever it does next
            for fd in (req_w, rep_r):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _replies(self, key: int, request: bytes, count: int, req_w: int, rep_r: int, timeout: float,
                 deadline: float | None) -> list[_Reply] | None:
        def limit() -> float:
            at = time.monotonic() + timeout
            return at if deadline is None else min(at, deadline)

        replies: list[_Reply] = []
        os.set_blocking(req_w, False)
        os.set_blocking(rep_r, False)
        first = limit()
        unsent = _write(req_w, rep_r, request, first)
        while len(replies) < count:
            frame: object = _read_frame(rep_r, first if not replies else limit()) if unsent != _TIMEOUT else _TIMEOUT
            if frame == _TIMEOUT:
                self._send(b"K" + key.to_bytes(8, "big"))
                self._await_end(rep_r)
                if deadline is not None and time.monotonic() >= deadline:
                    return [*replies, _deadline_reply()]
                return [*replies, _Reply(error=f"grade did not return within {timeout:g} s (wall clock); "
                                                "its process was killed")]
            if frame == _DIED or (isinstance(frame, dict) and "exit" in frame and "i" not in frame):
                if self.closing:
                    return [*replies, _Reply(error="the grader was closed during grade", server=True)]
                if frame == _DIED:  # no exit status: the template itself is gone (it reports every child's end)
                    ctl = self.fds.get("ctl")
                    if not replies and (ctl is None or select.select([ctl], [], [], 1.0)[0]):
                        return None  # it died before this child started (killed from outside): nothing was graded
                    return [*replies, _Reply(error="the sandbox died during grade")]
                return [*replies, _Reply(error=f"the process died during grade ({_status(frame['exit'])})")]  # type: ignore[index]  # a dict with "exit"
            if not isinstance(frame, dict) or frame.get("i") != len(replies) or (reply := _parse_reply(frame)) is None:
                return [*replies, _Reply(error="grade's process sent a malformed reply; it was killed")]
            if reply.error is not None and frame.get("server") is True:
                reply = _Reply(error=reply.error, server=True)
            replies.append(reply)
            first = limit()
            if isinstance(frame, dict) and frame.get("restart") is True:
                break
        return replies

    def _await_end(self, rep_r: int) -> None:
        """Wait until the killed child's reply pipe closes (the template reaped it); else stop the whole sandbox."""
        deadline = time.monotonic() + _KILL_WAIT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([rep_r], [], [], remaining)[0]:
                self.stop()
                return
            try:
                if not os.read(rep_r, 1 << 16):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return

    # -- framed channels --------------------------------------------------------------------

    def _read_sock(self, deadline: float) -> object:
        """The template's one message on the socket (its source loaded), or ``_TIMEOUT``/``_DIED``."""
        assert self.sock is not None
        ctl, sock = self.fds["ctl"], self.sock.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _TIMEOUT
            ready = select.select([sock, ctl], [], [], remaining)[0]
            if sock in ready:
                try:
                    data = self.sock.recv(1 << 16)
                except OSError:
                    return _DIED
                if not data:
                    return _DIED
                try:
                    return json.loads(data)
                except ValueError:
                    return None
            if ctl in ready:
                return _DIED


def _status(code: object) -> str:
    if not isinstance(code, int) or isinstance(code, bool):
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}: os._exit or a crash"


def _write(fd: int, watch: int, data: bytes, deadline: float) -> str | None:
    """Send ``data`` on non-blocking ``fd``: None once sent, ``_TIMEOUT`` past the deadline, ``_DIED`` when the reader
    is gone or ``watch`` (the reply pipe) has something to say first (a reply before reading: the child failed)."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.register(watch, select.POLLIN)
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
        elif events.get(fd, 0):
            return _DIED
        elif events:
            return _DIED
    return None


def _read_frame(fd: int, deadline: float) -> object:
    """One decoded frame from non-blocking ``fd``; ``_TIMEOUT`` or ``_DIED`` when none comes (garbage: None)."""
    buf = bytearray()
    need = 4
    while len(buf) < need:
        try:
            chunk = os.read(fd, need - len(buf))
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                if time.monotonic() >= deadline:
                    return _TIMEOUT
            continue
        if not chunk:
            return _DIED if not buf else None
        buf += chunk
        if need == 4 and len(buf) == 4:
            need += struct.unpack(">I", buf)[0]
            if need > _MAX_REPLY:
                return None
    try:
        return json.loads(bytes(buf[4:]))
    except ValueError:
        return None


def _parse_reply(frame: object) -> _Reply | None:
    """A reply frame checked field by field (the sandbox is not trusted), or None when it is malformed."""
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
