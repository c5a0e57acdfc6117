"""The fenced speed layer of batch grading: workers forked with the batch in memory, and the lazy GradeList.

:func:`forked` runs a :class:`~graders.batch._work.ChunkWork` on every chunk in
workers forked with the batch already in memory, so no row is pickled on the way
out: each worker takes chunk numbers from a counter in shared memory, rebuilds
its own grader from the grader's pickle (so a grader's connections and sandboxes
are never shared with this process) and sends back what the work answers. The
work decides what travels: ``grade_batch``'s sends each row's score and leaves a
structured fast-path grade (whose details are not built yet,
:meth:`graders._lazy_grade.LazyGrade.recorded`) to be made again here, by grading its pair, when
the caller first reads it -- which is why :class:`GradeList` makes its Grade
objects as they are read; ``rftkit grade``'s sends each row's output line,
already serialised, so this process only writes.

Why it is kept: the trip back was the cost. ``benchmarks/batch_scaling.py`` and
``benchmarks/cli_grade.py`` measure it (figures in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import pickle
import sys
import threading
import traceback
import warnings
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from operator import index
from typing import Any, SupportsIndex, TypeVar, cast, overload

from .._result import Grade
from ._local import _Grades, gc_paused
from ._work import ChunkWork, Scored

T = TypeVar("T")

# --------------------------------------------------------------------------- forked workers (the batch in memory)


def fork_is_safe() -> bool:
    """Whether batch grading forks its workers: ``fork`` exists, this is not macOS (whose system
    libraries may crash in a forked child), the program has not chosen another start method
    (``multiprocessing.set_start_method``), and no other Python thread runs (a forked child could inherit
    a lock that thread holds, and deadlock on it).

    Threads started by C libraries are not counted: numpy's BLAS keeps a pool of idle threads in every
    process that imported ``graders`` (which imports numpy), and BLAS libraries make their pools safe to fork.
    """
    if sys.platform == "darwin" or "fork" not in multiprocessing.get_all_start_methods():
        return False
    return multiprocessing.get_start_method(allow_none=True) in (None, "fork") and threading.active_count() == 1


class _WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""


class _Here:
    """Sent instead of a chunk's answer that nests too deeply to pickle: this process runs the chunk itself."""


@dataclass(frozen=True, slots=True)
class _Shared:
    """What the workers share with the parent (all inherited by fork, none pickled)."""

    grader: bytes
    work: ChunkWork[Any]
    samples: Sequence[Any]
    items: Sequence[Any]
    bounds: list[tuple[int, int]]
    """Each chunk's first row and the row after its last."""
    counters: memoryview
    """Two integers in memory shared with the workers: the next chunk to take, and the lowest chunk where a
    grade raised (no chunk after it is taken; the number of chunks while none has; -1 to stop every worker)."""
    lock: Any  # a multiprocessing Lock, held while the counters are read or changed


def _forked_worker(shared: _Shared, conn: Connection) -> None:
    """A forked worker: take chunk numbers until none is left, send each chunk's answer, then ``None``.

    An exception stops every worker at its next chunk after the one where it was raised, and goes to the
    parent with its chunk and row (-1 before the first chunk: the grader's rebuilding)."""
    gc.disable()  # no cycles to find, and a collection would copy every page it touches of the parent's memory
    chunk, work = -1, shared.work
    try:
        grader = pickle.loads(shared.grader)
        samples, items, bounds, count = shared.samples, shared.items, shared.bounds, len(shared.bounds)
        while True:
            with shared.lock:
                chunk = shared.counters[0]
                if chunk >= count or chunk > shared.counters[1]:
                    break
                shared.counters[0] = chunk + 1
            start, stop = bounds[chunk]
            answer = work(grader, samples[start:stop], items[start:stop], start)
            try:
                conn.send((chunk, answer))
            except RecursionError:  # an answer nested too deeply to pickle: the parent runs this chunk itself
                conn.send((chunk, _Here()))
    except Exception as exc:
        with shared.lock:
            shared.counters[1] = min(shared.counters[1], chunk)
        row = work.failed_at if work.failed_at >= 0 else shared.bounds[chunk][0] if chunk >= 0 else -1
        _send_raised(conn, chunk, row, exc)
    try:
        conn.send(None)
        conn.close()
    except OSError:  # the parent stopped reading (interrupted): nothing to tell it
        pass


def _send_raised(conn: Connection, chunk: int, row: int, exc: Exception) -> None:
    cause = _WorkerTraceback("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        try:
            pickle.loads(pickle.dumps(exc))  # some exceptions pickle but cannot be rebuilt (required __init__ arguments)
            conn.send((chunk, exc, cause))
        except OSError:
            raise
        except Exception:  # an exception that does not travel: its text, then
            conn.send((chunk, RuntimeError(f"grading row {row} raised {type(exc).__name__}: {exc}"), cause))
    except OSError:  # the parent stopped reading
        pass


@contextmanager
def forked(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], bounds: list[tuple[int, int]],
           workers: int) -> Iterator[Iterator[T]]:
    """Start ``workers`` forked processes that run ``work`` on the chunks ``bounds``; yields the answers, in order.

    The workers are started on entry, before the caller starts anything that runs a thread (a progress bar).
    The exception of the first chunk (in input order) whose work raised propagates when that chunk's turn
    comes, after every chunk before it. Leaving early (an interrupt, an exception of the caller's) stops the
    workers after the chunk each is on.
    """
    count = len(bounds)
    context = multiprocessing.get_context("fork")
    counters = memoryview(mmap.mmap(-1, 16)).cast("q")  # anonymous and shared: forked workers see the same pages
    counters[1] = count
    shared = _Shared(pickle.dumps(grader), work, samples, items, bounds, counters, context.Lock())
    processes: list[Any] = []
    readers: list[Connection] = []
    with gc_paused():  # a collection in this process would copy the pages the workers share
        try:
            for _ in range(min(workers, count)):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(target=_forked_worker, args=(shared, writer), daemon=True)
                with warnings.catch_warnings():  # Python >= 3.12 warns of any thread; the C libraries' ones are fine
                    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                    process.start()
                writer.close()
                processes.append(process)
                readers.append(reader)
            yield _received(grader, shared, processes, readers)
        except BaseException:  # interrupted, or the caller left early: the workers stop after the chunk they are on
            counters[1] = -1
            raise
        finally:
            for process in processes:  # each has sent its last chunk (or died, or this process was interrupted)
                process.join(timeout=5)
                if process.is_alive():
                    process.terminate()
                    process.join()
            for reader in readers:
                reader.close()


def _received(grader: Any, shared: _Shared, processes: list[Any], readers: list[Connection]) -> Iterator[Any]:
    """The chunks' answers in order, as the workers send them (see :func:`forked`)."""
    count = len(shared.bounds)
    ready: dict[int, Any] = {}
    raised: dict[int, tuple[BaseException, BaseException]] = {}
    live = list(readers)
    for turn in range(count):
        while turn not in ready and not any(c <= turn for c in raised) and live:
            for waited in wait(live):
                reader = cast(Connection, waited)  # wait() answers what it was given
                try:
                    message: Any = reader.recv()
                except EOFError:
                    message = None  # the worker died (killed?): the missing chunks say so below
                if message is None:
                    live.remove(reader)
                elif len(message) == 2:
                    ready[message[0]] = message[1]
                else:
                    raised[message[0]] = (message[1], message[2])
        if raised and min(raised) <= turn:
            exc, cause = raised[min(raised)]
            raise exc from cause
        if turn not in ready:
            codes = sorted({str(p.exitcode) for p in processes if not p.is_alive()})
            raise RuntimeError(f"a worker process exited (exit codes {codes}) before grading rows "
                               f"{shared.bounds[turn][0]} onwards; no grade was lost silently, so none is returned")
        answer = ready.pop(turn)
        if isinstance(answer, _Here):
            start, stop = shared.bounds[turn]
            answer = shared.work(grader, shared.samples[start:stop], shared.items[start:stop], start)
        yield answer


# --------------------------------------------------------------------------- grade_batch's answers as one list


class _Lazy:
    """Makes the Grade of any row from the chunks of :class:`~graders.batch._work.Scores` (for :class:`GradeList`)."""

    def __init__(self, grader: _Grades, samples: list[Any], items: list[Any], parts: list[tuple[int, Scored]],
                 scores: array[float]) -> None:
        self._grader, self._samples, self._items = grader, samples, items
        self._starts = [start for start, _ in parts]
        self._whole = [part.whole for _, part in parts]
        self._scores = scores

    def grade(self, i: int) -> Grade:
        """Row ``i``'s grade: as sent whole, or the fast path's, made again here (the grader is deterministic)."""
        c = bisect_right(self._starts, i) - 1
        whole = self._whole[c]
        if whole:
            grade = whole.get(i - self._starts[c])
            if grade is not None:
                return grade
        grade = self._grader.grade(self._samples[i], self._items[i])
        if grade.score != self._scores[i]:
            raise RuntimeError(f"row {i} scored {self._scores[i]!r} in a worker process but {grade.score!r} when "
                               "graded again here: the grader is not deterministic, or the row's inputs were changed")
        return grade


def scored_list(grader: _Grades, samples: list[Any], items: list[Any], parts: list[tuple[int, Scored]]) -> GradeList:
    """The :class:`GradeList` of a batch from its chunks (each with its first row), in order."""
    scores = array("d", b"".join(part.scores for _, part in parts))
    if all(len(part.whole) == len(part) for _, part in parts):  # every grade travelled whole: a plain list
        return GradeList([part.whole[j] for _, part in parts for j in range(len(part))])
    return GradeList._lazy(len(samples), _Lazy(grader, samples, items, parts, scores).grade, scores)


def _grade_forked(grader: _Grades, responses: list[Any], references: list[Any], workers: int, progress: bool,
                  size: int) -> GradeList:
    """Every row graded by ``workers`` forked workers in chunks of ``size`` (``grade_batch``'s forked path)."""
    from ._engine import run_chunks
    from ._work import Scores

    parts = run_chunks(grader, responses, references, Scores(flag=False), workers=workers, transport="forked",
                       size=size, progress=progress)
    return scored_list(grader, responses, references, parts)


# --------------------------------------------------------------------------- the result


class GradeList(list[Grade]):
    """The grades :func:`grade_batch` returns: a ``list[Grade]`` in input order, plus :attr:`scores`.

    From worker processes (or Ray) the Grade objects are made as they are read (a
    fast-path grade by grading its pair again, as much as the grading saved), so
    ``len``, indexing, slicing, iteration and :attr:`scores` never make more than
    they return; reading the same index twice gives the same object. Any other
    list operation (comparison, ``+``, ``in``, mutation, ``repr``, copying,
    pickling) first makes every Grade, once, and from then on it is an ordinary
    list. Code that reads a list's storage without calling its methods (numpy,
    slice assignment ``a[i:j] = grades``, ``heapq``) must be given ``list(grades)``.

    >>> grades = GradeList([Grade(1.0), Grade(0.5)])
    >>> grades.scores, len(grades), grades[1].score
    ([1.0, 0.5], 2, 0.5)
    """

    __slots__ = ("_n", "_make", "_made", "_scores")
    _make: Callable[[int], Grade] | None
    """Makes the Grade of one row, until every row is in the list's own storage (then None)."""

    def __init__(self, grades: Iterable[Grade] = ()) -> None:
        super().__init__(grades)
        self._n = 0
        self._make = None
        self._made: dict[int, Grade] = {}
        self._scores: array[float] | None = None

    @classmethod
    def _lazy(cls, n: int, make: Callable[[int], Grade], scores: array[float]) -> GradeList:
        """``n`` grades, the i-th made by ``make(i)`` when first read; ``scores`` holds every score."""
        out = cls()
        out._n, out._make, out._scores = n, make, scores
        return out

    @property
    def scores(self) -> list[float]:
        """Every grade's score, in input order (a new list; no Grade object is made for it)."""
        if self._make is not None and self._scores is not None:
            return self._scores.tolist()
        return [g.score for g in list.__iter__(self)]

    def _row(self, i: int) -> Grade:
        if self._make is None:
            return list.__getitem__(self, i)
        made = self._made.get(i)
        if made is None:
            made = self._made[i] = self._make(i)
        return made

    def _fill(self) -> None:
        """Make every Grade and keep them in the list's own storage: an ordinary list from now on."""
        if self._make is not None:
            grades = [self._row(i) for i in range(self._n)]
            self._make, self._made, self._scores = None, {}, None
            list.extend(self, grades)

    def __len__(self) -> int:
        return self._n if self._make is not None else list.__len__(self)

    @overload
    def __getitem__(self, i: SupportsIndex) -> Grade: ...

    @overload
    def __getitem__(self, i: slice) -> list[Grade]: ...

    def __getitem__(self, i: SupportsIndex | slice) -> Grade | list[Grade]:
        if self._make is None:
            return list.__getitem__(self, i)
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(self._n))]
        k = index(i)
        if not -self._n <= k < self._n:
            raise IndexError("list index out of range")
        return self._row(k + self._n if k < 0 else k)

    def __iter__(self) -> Iterator[Grade]:
        if self._make is None:
            return list.__iter__(self)
        return map(self._row, range(self._n))

    def __reversed__(self) -> Iterator[Grade]:
        if self._make is None:
            return list.__reversed__(self)
        return map(self._row, range(self._n - 1, -1, -1))

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, list):
            return NotImplemented
        self._fill()
        return list.__add__(other, self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (list, (list(self),))  # copies and pickles are plain lists of plain Grades


def _filled_first(name: str) -> Callable[..., Any]:
    base = getattr(list, name)

    def method(self: GradeList, *args: Any, **kwargs: Any) -> Any:
        self._fill()
        for arg in args:
            if isinstance(arg, GradeList):
                arg._fill()
        return base(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = base.__doc__
    return method


for _name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__contains__", "__add__", "__mul__", "__rmul__",
              "__iadd__", "__imul__", "__setitem__", "__delitem__", "__repr__", "__sizeof__", "append", "extend", "insert",
              "pop", "remove", "clear", "sort", "reverse", "index", "count", "copy"):
    setattr(GradeList, _name, _filled_first(_name))
del _name

