"""OpenAI's ``python`` grader, run locally: the config's ``grade(sample, item)`` runs in a sandbox, one process per grade.

The config is OpenAI's: ``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}``.
``source`` defines ``grade(sample, item) -> float``; ``sample`` is a dict with
``output_text``, ``output_json``, ``output_tools`` and ``choices`` (see
:func:`sample_dict`) and ``item`` is the dataset row.

**How it runs.** Each grader owns a *template*: a fresh interpreter
(``python -I -B graders/openai/python/_worker/__main__.py``) that confines itself and runs the
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
import math
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from ..._errors import GraderConfigError
from ..._result import FieldDetail, Grade, no_errors
from ..._validation import validate_config
from .._common import OpenAIGrader, SampleInput
from .._configs import PythonConfig
from .._templates import Sample
from ._sandbox import (
    BATCH_CHUNK,
    DEFAULT_CONCURRENCY,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT,
    SOURCE_LIMIT,
    Isolation,
    _Pool,
    _Reply,
)

_FILENAME = "<python grader>"




# -- the config ----------------------------------------------------------------------------


def check_source(source: str) -> str:
    """The source, or :class:`GraderConfigError` when it is too big, does not compile or defines no ``grade``.

    The check of :class:`~graders.openai._configs.PythonConfig`'s ``source`` (the error points at ``source`` there).
    """
    size = len(source.encode("utf-8", "surrogatepass"))
    if size >= SOURCE_LIMIT:
        raise GraderConfigError(f"source is {size} bytes; the limit is under {SOURCE_LIMIT} (256 KiB)", code="source_too_large",
                                hint="move data into the item, or trim the code")
    try:
        compile(source, _FILENAME, "exec", dont_inherit=True)  # every compile-time check, not only the parser's
        tree = ast.parse(source, _FILENAME)
    except (SyntaxError, ValueError) as exc:
        line = f"line {exc.lineno}: " if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise GraderConfigError(f"source does not compile: {line}{exc.msg if isinstance(exc, SyntaxError) else exc}",
                                code="source_syntax_error") from None
    definition = _find_grade(tree.body)
    if definition is None:
        raise GraderConfigError("source defines no grade function", code="missing_grade_function",
                                hint="def grade(sample: dict, item: dict) -> float: ...")
    if isinstance(definition, ast.AsyncFunctionDef):
        raise GraderConfigError("grade is a coroutine (async def); it must return a float", code="bad_grade_signature",
                                hint="def grade(sample, item) -> float")
    if isinstance(definition, ast.FunctionDef) and not _takes_two(definition.args):
        raise GraderConfigError("grade must accept exactly two positional arguments, (sample, item)",
                                code="bad_grade_signature", hint="def grade(sample, item) -> float")
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


class PythonGrader(OpenAIGrader):
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
        config = validate_config(PythonConfig, {"type": "python", "name": name, "source": source, "image_tag": image_tag,
                                                "pass_threshold": pass_threshold})
        self._setup(config, timeout=timeout, memory_limit=memory_limit, allow_subprocess=allow_subprocess,
                    isolation=isolation, concurrency=concurrency)

    def _setup(self, config: PythonConfig, *, timeout: float = DEFAULT_TIMEOUT, memory_limit: int = DEFAULT_MEMORY_LIMIT,
               allow_subprocess: bool = False, isolation: Isolation = "auto", concurrency: int = DEFAULT_CONCURRENCY) -> None:
        """Set the grader up from its validated config and the keywords (the constructor's defaults): the one path of
        the constructor and :meth:`from_config`."""
        self._name = config.name
        self.source = config.source
        """The Python code that defines ``grade``."""
        self.image_tag = config.image_tag
        """OpenAI's image tag (``"2025-05-08"``), kept for the config; it selects nothing locally."""
        self.pass_threshold = config.pass_threshold
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
    def from_config(cls, config: Mapping[str, Any] | PythonConfig) -> PythonGrader:
        """Build from ``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}`` (:class:`PythonConfig`)."""
        grader = cls.__new__(cls)
        grader._setup(config if isinstance(config, PythonConfig) else validate_config(PythonConfig, config))
        return grader

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
            from ...batch._engine import grade_batch

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




