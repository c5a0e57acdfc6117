"""The one batch engine: cut a batch into chunks, run a work on each where it pays, answers back in input order.

:func:`run_chunks` (and :func:`each_chunk`, its streaming form) is the engine
every caller shares: :func:`grade_batch` (the trainer, Python users),
:func:`grade_rows` and ``rftkit grade``. A caller says what is done with a chunk
(a :class:`~graders.batch._work.ChunkWork`), and the engine picks where it runs:

- ``backend="local"``: here, chunk by chunk;
- ``backend="processes"``: worker processes forked with the batch in memory
  where that is safe (:func:`fork_is_safe`, :mod:`graders.batch._forked`), else a
  ``forkserver`` (``spawn``) pool sent pickled chunks (:mod:`graders.batch._pool`);
- ``backend="ray"``: Ray tasks (:mod:`graders.batch._ray`).

With ``adaptive`` (the default), the first rows are run here while what a row
costs is measured -- the work itself, and the trip of its answer (and, for a
pool, of its rows) -- and :func:`choose_workers` decides how many workers, if
any, run the rest. Whatever runs it, the answers reach the caller in input order,
and the exception of the first row (in input order) whose grading raised
propagates, as in a plain loop; ``errors="flag"`` makes such a row a flagged zero
instead. Bad *responses* are not exceptions: they are flagged zero grades.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .._errors import GraderConfigError
from .._result import Grade
from ._forked import GradeList, fork_is_safe, forked, scored_list
from ._local import _grade_all, _Grades, _progress_bar, gc_paused, local
from ._pool import pooled
from ._ray import on_ray
from ._work import ChunkWork, ErrorMode, RowResult, Rows, Scored, Scores

T = TypeVar("T")

Backend = Literal["local", "processes", "ray"]
"""Where rows are graded: this process, worker processes on this machine, or Ray tasks."""

Transport = Literal["local", "forked", "pooled", "ray"]
"""How chunks travel: not at all, to forked workers, to a pool of started workers, or to Ray tasks."""

_TRANSPORTS: dict[str, Callable[..., AbstractContextManager[Iterator[Any]]]] = {
    "local": local, "forked": forked, "pooled": pooled, "ray": on_ray}
"""Each transport: ``(grader, samples, items, work, bounds, workers[, address])`` -> a context yielding the answers."""


# --------------------------------------------------------------------------- the cost model


@dataclass(frozen=True, slots=True)
class Costs:
    """What one row costs, measured on the first rows of a batch (see :func:`choose_workers`)."""

    grade_s: float
    """Seconds to run the work on one row (grade it, and whatever the work makes of the grade)."""
    send_s: float
    """Seconds a worker spends pickling one row's answer for the trip back."""
    receive_s: float
    """Seconds this process spends unpickling one row's answer (it does them all, one after another)."""
    out_s: float = 0.0
    """Seconds this process spends pickling one row's sample and item for a worker (pooled workers and Ray
    only: forked ones find the batch in memory)."""


STARTUP_S = {"fork": 0.02, "pool": 0.5}
"""Seconds to start one worker: a fork of this process, or a ``forkserver``/``spawn`` process that imports graders
(measured: a pool of one took 0.57 s to answer its first task, of two 0.94-1.08 s, on the 2-core machine)."""


def choose_workers(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
    """How many of ``workers`` processes run ``rows`` rows fastest, by a model of the costs; 1 means here.

    One process takes ``rows * grade_s``. ``w`` forked workers take
    ``w * startup + rows * (grade_s + send_s) / w + rows * receive_s``: the
    workers share the work and the pickling of answers, and this process
    unpickles every answer that comes back. Workers that are not forked
    (``start="pool"``) also cost ``rows * out_s`` here, pickling every row they are
    sent (counted in full, though it overlaps their grading), and as much again
    between them, unpickling it. Workers are used only when that is under 80 % of
    one process's time, so that a close call stays in this process.

    >>> choose_workers(Costs(grade_s=7e-6, send_s=0.0, receive_s=0.0), 1_000_000, 2)   # fast path, a million rows
    2
    >>> choose_workers(Costs(grade_s=70e-6, send_s=50e-6, receive_s=40e-6), 20_000, 2)  # nested grades sent whole
    1
    >>> choose_workers(Costs(grade_s=7e-6, send_s=0.0, receive_s=0.0), 1_000, 8)        # too few rows to start one
    1
    """
    alone = rows * costs.grade_s
    best, best_s = 1, 0.8 * alone
    for w in range(2, workers + 1):
        out = costs.out_s if start == "pool" else 0.0
        took = w * STARTUP_S[start] + rows * (costs.grade_s + costs.send_s + out) / w + rows * (costs.receive_s + out)
        if took < best_s:
            best, best_s = w, took
    return best


_PROBE_ROWS = 4096
_PROBE_S = 0.05

clock: Callable[[], float] = time.perf_counter
"""The probe's clock (a module attribute, so a test can decide what each piece took without racing the machine)."""


def _probe(grader: Any, samples: Sequence[Any], items: Sequence[Any],
           work: ChunkWork[T]) -> tuple[list[tuple[int, T]], int, Costs]:
    """Run ``work`` here on the first rows and measure what a row costs.

    The rows go in pieces of 8, 16, 32 ... rows until about 50 ms have passed, 4,096 rows are done, or a
    sixteenth of the batch (so that most of it is left for the workers). A row's cost is the least time per row
    of any piece: a pause of this process (another job taking the core) only ever adds time, so it does not
    decide the count. Returns the answers
    (kept: they are the batch's first chunks, by their first row), the rows done, and the costs (the trip
    measured on what a worker would send, :meth:`ChunkWork.travelling`)."""
    here = work.here()
    n = min(_PROBE_ROWS, max(8, len(samples) // 16), len(samples))
    parts: list[tuple[int, T]] = []
    rates: list[float] = []
    took, done, more = 0.0, 0, 8
    with gc_paused():  # paused across the pieces: a full collection between two would be timed as grading
        while done < n and took < _PROBE_S:
            more = min(more, n - done)
            started = clock()
            parts.append((done, here(grader, samples[done:done + more], items[done:done + more], done)))
            spent = clock() - started
            rates.append(spent / more)
            took += spent
            done += more
            more *= 2
    grade_s = min(rates)
    answers = [work.travelling(answer) for _, answer in parts]
    try:
        started = clock()
        sent = pickle.dumps(answers, pickle.HIGHEST_PROTOCOL)
        send_s = (clock() - started) / done
        started = clock()
        pickle.loads(sent)
        receive_s = (clock() - started) / done
    except RecursionError:  # an answer too deep to pickle is run again here: count it as running twice
        send_s, receive_s = 0.0, grade_s
    try:
        started = clock()
        pickle.dumps((samples[:done], items[:done]), pickle.HIGHEST_PROTOCOL)
        out_s = (clock() - started) / done
    except RecursionError:  # rows that cannot travel: a pool runs their chunk here
        out_s = grade_s
    return parts, done, Costs(grade_s, send_s, receive_s, out_s)


# --------------------------------------------------------------------------- the engine


def _checked(samples: Any, items: Any, workers: int, backend: str | None, errors: str) -> tuple[list[Any], list[Any]]:
    samples = samples if type(samples) is list else list(samples)
    items = items if type(items) is list else list(items)
    if len(samples) != len(items):
        raise GraderConfigError(f"{len(samples)} responses but {len(items)} references", code="length_mismatch",
                                hint="pass one reference (item) per response (sample)")
    if workers < 1:
        raise GraderConfigError(f"workers must be >= 1, got {workers}", code="bad_option", pointer="/workers",
                                hint="1 grades in this process")
    if backend not in (None, "local", "processes", "ray"):
        raise GraderConfigError(f"unknown backend {backend!r}", code="bad_option", pointer="/backend",
                                hint="local, processes or ray")
    if errors not in ("raise", "flag"):
        raise GraderConfigError(f"unknown errors mode {errors!r}", code="bad_option", pointer="/errors", hint="raise or flag")
    return samples, items


@dataclass(slots=True)
class _Plan:
    """Where the rest of a batch runs, once the first rows have been probed."""

    transport: Transport
    workers: int
    parts: list[tuple[int, Any]]
    """The probed rows' answers, by their first row."""
    done: int
    """The rows probed."""


def _plan(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[Any], workers: int,
          backend: Backend | None, adaptive: bool) -> _Plan:
    """Pick the transport (and, with ``adaptive``, the worker count from a probe of the first rows)."""
    backend = backend or ("local" if workers == 1 else "processes")
    transport: Transport = ("local" if backend == "local" or (workers == 1 or len(samples) < 2) and backend != "ray"
                            else "ray" if backend == "ray" else "forked" if fork_is_safe() else "pooled")
    if not adaptive or transport not in ("forked", "pooled"):
        return _Plan(transport, workers, [], 0)
    parts, done, costs = _probe(grader, samples, items, work)
    workers = choose_workers(costs, len(samples) - done, workers, "fork" if transport == "forked" else "pool")
    return _Plan("local" if workers == 1 else transport, workers, parts, done)


def each_chunk(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], *, workers: int = 1,
               backend: Backend | None = None, adaptive: bool = True, chunk_size: int | None = None,
               ray_address: str | None = None, progress: bool = False,
               on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, T]]:
    """Run ``work`` on every chunk of the batch; yield ``(first row, answer)`` per chunk, in input order.

    ``backend`` defaults to ``processes`` for ``workers > 1`` (forked where :func:`fork_is_safe`, else a pool)
    and ``local`` for one. ``adaptive`` measures the first rows here and lets :func:`choose_workers` pick how
    many of the ``workers`` to start (not for Ray: a cluster's costs are not this machine's). ``progress``
    shows a progress bar; ``on_progress(rows)`` is called as each chunk arrives (from this thread, after any
    worker is forked, so a progress bar it starts on its first call does not stop the fork).
    """
    plan = _plan(grader, samples, items, work, workers, backend, adaptive)
    return _run(grader, samples, items, work, plan, chunk_size, ray_address, progress, on_progress)


def _run(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], plan: _Plan,
         chunk_size: int | None, ray_address: str | None, progress: bool,
         on_progress: Callable[[int], None] | None) -> Iterator[tuple[int, T]]:
    n, done, parts, workers = len(samples), plan.done, plan.parts, plan.workers
    if plan.transport == "local":
        work = work.here()
    # Chunks: at least 8 per worker, so that one slowed down (by other jobs on the machine) delays the end little;
    # at most 4,096 rows (2,000 when pickled), so that this process's work per chunk stays small.
    cap = {"forked": 4096, "pooled": 2000, "ray": 2000, "local": 1000}[plan.transport]
    size = chunk_size or max(1, min(cap, (n - done) // (workers * 8) or 1))
    bounds = [(a, min(a + size, n)) for a in range(done, n, size)]
    extra = {"address": ray_address} if plan.transport == "ray" else {}
    with _TRANSPORTS[plan.transport](grader, samples, items, work, bounds, workers, **extra) as answers, \
            _progress_bar(progress, n) as advance:
        for k, (first, answer) in enumerate(parts):
            rows = _rows(parts, done, k)
            advance(rows)
            if on_progress is not None:
                on_progress(rows)
            yield first, answer
        for (first, stop), answer in zip(bounds, answers):
            advance(stop - first)
            if on_progress is not None:
                on_progress(stop - first)
            yield first, answer


def _rows(parts: list[tuple[int, Any]], end: int, k: int) -> int:
    """Rows in the ``k``-th of ``parts`` (chunks given by their first row; the last ends at ``end``)."""
    return (parts[k + 1][0] if k + 1 < len(parts) else end) - parts[k][0]


def run_chunks(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], *, workers: int = 1,
               transport: Transport | None = None, size: int | None = None, progress: bool = False,
               **options: Any) -> list[tuple[int, T]]:
    """Every chunk's ``(first row, answer)``, in input order: :func:`each_chunk` collected (``transport`` pins the
    path, for tests and benchmarks; ``size`` is the chunk size)."""
    if transport is None:
        return list(each_chunk(grader, samples, items, work, workers=workers, chunk_size=size, progress=progress,
                               **options))
    return list(_run(grader, samples, items, work, _Plan(transport, workers, [], 0), size, options.get("ray_address"),
                     progress, None))


# --------------------------------------------------------------------------- the entry points


def grade_batch(grader: _Grades, responses: Iterable[str | Mapping[str, Any]], references: Iterable[Any], *,
                workers: int = 1, progress: bool = False, chunk_size: int | None = None,
                adaptive: bool = True, backend: Backend | None = None, errors: ErrorMode = "raise",
                ray_address: str | None = None) -> GradeList:
    """Grade ``responses[i]`` against ``references[i]`` for every i; results in input order, as a :class:`GradeList`.

    ``workers=1`` grades in this process; ``workers=N`` uses up to N processes: forked
    with the batch in memory where that is safe (see :func:`fork_is_safe`), else
    started with ``forkserver`` (``spawn`` where missing) and sent the pairs. Either
    way each row's score comes back in an array, with every grade but the structured
    fast path's (whose details are not built yet), and a fast-path grade is made again
    here, from the same response and reference objects, when first read: every grade
    reads the same as with ``workers=1`` (the lists are copied, their items are not, so
    do not change those until then). ``progress=True`` shows a progress bar.

    With ``adaptive`` (the default) the first rows are graded here while what a
    row costs is measured (grading it, and the trip of its answer), and
    :func:`choose_workers` decides how many of the N processes grade the rest: a
    batch whose grades cost less than their trip back, or too small to pay for
    starting a process, is graded here. ``adaptive=False`` uses exactly N.

    ``backend`` picks where rows are graded: ``local`` (this process), ``processes``
    (the default for ``workers > 1``: the paths above) or ``ray`` (Ray tasks, one per
    chunk, on the running Ray, else the cluster ``ray_address`` or ``RAY_ADDRESS``
    names, else a local one with ``workers`` CPUs). ``errors`` says what a row whose
    grading raised becomes: ``raise`` (the default: the first such row's exception
    propagates) or ``flag`` (a zero grade flagged ``other_error``, the exception in
    its reason).
    """
    responses, references = _checked(responses, references, workers, backend, errors)
    flag = errors == "flag"
    if backend == "local" or (workers == 1 and backend != "ray") or len(responses) < 2:
        return GradeList(_run_local(grader, responses, references, progress, flag))
    # The grades may be made again from the inputs later: keep the lists as they are now.
    responses, references = list(responses), list(references)
    work = Scores(flag)
    plan = _plan(grader, responses, references, work, workers, backend, adaptive)
    if plan.transport == "local":  # no worker pays: the probed grades, then the rest as with workers=1
        probed = [part.whole[j] for _, part in plan.parts for j in range(len(part))]
        return GradeList(probed + _run_local(grader, responses[plan.done:], references[plan.done:], progress, flag))
    parts: list[tuple[int, Scored]] = list(_run(grader, responses, references, work, plan, chunk_size, ray_address,
                                                progress, None))
    return scored_list(grader, responses, references, parts)


def _run_local(grader: _Grades, responses: list[Any], references: list[Any], progress: bool, flag: bool) -> list[Grade]:
    pairs: Iterable[tuple[Any, Any]] = zip(responses, references)
    if progress:
        from rich.progress import track

        pairs = track(pairs, total=len(responses), description="grading", transient=True)
    return _grade_all(grader, pairs, flag)


def grade_rows(grader: _Grades, samples: Sequence[Any], items: Sequence[Any], *, workers: int = 1,
               backend: Backend | None = None, chunk_size: int | None = None, ray_address: str | None = None,
               on_progress: Callable[[int], None] | None = None, errors: ErrorMode = "flag",
               adaptive: bool = True) -> list[RowResult]:
    """Grade ``samples[i]`` against ``items[i]`` for every i; one :class:`RowResult` per row, in input order.

    The engine of :func:`grade_batch` (same backends, same ``adaptive`` choice), each row answered whole with
    the seconds its grading took. ``errors="flag"`` (the default here) turns a row whose grading raised into a
    flagged zero (``raised``); ``errors="raise"`` lets the exception of the first such row in input order
    propagate. ``on_progress(n)`` is called as each chunk of ``n`` rows arrives.

    >>> from graders import StructuredGrader
    >>> rows = grade_rows(StructuredGrader(), ['{"a": 1}', "not json"], [{"a": 1}, {"a": 1}])
    >>> [(r.grade.score, r.grade.ok) for r in rows]
    [(1.0, True), (0.0, False)]
    """
    samples, items = _checked(samples, items, workers, backend, errors)
    out: list[RowResult] = []
    for _, part in each_chunk(grader, samples, items, Rows(errors == "flag"), workers=workers, backend=backend,
                              adaptive=adaptive, chunk_size=chunk_size, ray_address=ray_address, on_progress=on_progress):
        out += part
    return out
