"""The fenced speed layer of batch grading: workers forked with the batch in memory, and the lazy GradeList they return.

Workers take chunks of row numbers from a counter in shared memory and send back
each chunk's scores as one array; a structured fast-path grade does not travel
(its details are not built yet, :meth:`graders._lazy_grade.LazyGrade.recorded`): it is made
again here, by grading its pair, when the caller first reads it, which is why
:class:`GradeList` makes its Grade objects as they are read.

Why it is kept: ``benchmarks/batch_scaling.py --n 200000 --order 1,2,a`` (three
rounds alternating with the variants, 2026-12-05, shared 2-core machine) took
0.62 s with ``workers=2`` against 1.32 s with ``workers=1`` (2.14x). The same
workers sending every grade back pickled (as its packed values, a plain list)
took 3.81 s; the forkserver pool that serves every other platform, 2.68 s pinned
to two workers and 1.62 s with ``adaptive=True``. ``benchmarks/NOTES.md`` has the
table. The price: reading every Grade of a forked batch grades each fast-path row
again in this process, so the workers pay for callers that use ``scores`` (RL
rewards) or read some rows; ``rftkit grade``, which writes every grade, uses
:func:`graders.batch.grade_rows` instead.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from operator import index
from typing import Any, SupportsIndex, overload

from .._lazy_grade import details_unbuilt
from .._result import Grade
from ._local import _Grades, _progress_bar, _travels, gc_paused

# --------------------------------------------------------------------------- forked workers (the batch in memory)


def fork_is_safe() -> bool:
    """Whether :func:`grade_batch` forks its workers: ``fork`` exists, this is not macOS (whose system
    libraries may crash in a forked child), the program has not chosen another start method
    (``multiprocessing.set_start_method``), and no other Python thread runs (a forked child could inherit
    a lock that thread holds, and deadlock on it).

    Threads started by C libraries are not counted: numpy's BLAS keeps a pool of idle threads in every
    process that imported ``graders`` (which imports numpy), and BLAS libraries make their pools safe to fork.
    """
    if sys.platform == "darwin" or "fork" not in multiprocessing.get_all_start_methods():
        return False
    return multiprocessing.get_start_method(allow_none=True) in (None, "fork") and threading.active_count() == 1


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One chunk's grades as a worker sends them back."""

    scores: bytes
    """Every row's score (an array of doubles)."""
    whole: dict[int, Grade]
    """The rows sent whole, by their place in the chunk: every grade but the fast path's (whose details are
    not built yet) and one nested too deeply to pickle, which are made again here when read."""


class _WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""


@dataclass(frozen=True, slots=True)
class _Shared:
    """What the workers share with the parent (all inherited by fork, none pickled)."""

    grader: bytes
    responses: list[Any]
    references: list[Any]
    size: int
    chunks: int
    counters: memoryview
    """Two integers in memory shared with the workers: the next chunk to take, and the lowest chunk where a
    grade raised (no chunk after it is taken; the number of chunks while none has)."""
    lock: Any  # a multiprocessing Lock, held while the counters are read or changed


def _forked_worker(shared: _Shared, conn: Connection) -> None:
    """A forked worker: take chunk numbers until none is left, send each chunk's grades, then ``None``.

    An exception stops every worker at its next chunk after the one where it was raised, and goes to the
    parent with its row: a grade's (the row that raised), or the grader's rebuilding or a grade's pickling
    (the chunk's first row; -1 before the first chunk)."""
    gc.disable()  # no cycles to find, and a collection would copy every page it touches of the parent's memory
    chunk, start = -1, -1
    try:
        grade = pickle.loads(shared.grader).grade
        responses, references, size = shared.responses, shared.references, shared.size
        while True:
            with shared.lock:
                chunk = shared.counters[0]
                if chunk >= shared.chunks or chunk > shared.counters[1]:
                    break
                shared.counters[0] = chunk + 1
            start = chunk * size
            scores = array("d")
            add = scores.append
            whole: dict[int, Grade] = {}
            try:
                # Each grade is dropped as soon as its score is kept (unless it goes back whole), so its memory
                # is reused while still in the CPU's caches: 12-15 % less CPU than keeping the chunk's grades.
                for response, reference in zip(responses[start:start + size], references[start:start + size]):
                    got = grade(response, reference)
                    if not details_unbuilt(got):  # not the fast path's (details unbuilt)
                        whole[len(scores)] = got
                    add(got.score)
            except Exception:
                start += len(scores)  # the row that raised
                raise
            try:
                conn.send((chunk, _Chunk(scores.tobytes(), whole)))
            except RecursionError:  # a grade nested too deeply to pickle: the parent grades its row again when read
                conn.send((chunk, _Chunk(scores.tobytes(), {j: g for j, g in whole.items() if _travels(g)})))
    except Exception as exc:
        with shared.lock:
            shared.counters[1] = min(shared.counters[1], chunk)
        _send_raised(conn, start, exc)
    conn.send(None)
    conn.close()


def _send_raised(conn: Connection, row: int, exc: Exception) -> None:
    cause = _WorkerTraceback("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        pickle.loads(pickle.dumps(exc))  # some exceptions pickle but cannot be rebuilt (required __init__ arguments)
        conn.send((row, exc, cause))
    except Exception:  # an exception that does not travel: its text, then
        conn.send((row, RuntimeError(f"grading row {row} raised {type(exc).__name__}: {exc}"), cause))


class _Rows:
    """Makes the Grade of any row from the chunks the workers sent back (for :class:`GradeList`)."""

    def __init__(self, grader: _Grades, responses: list[Any], references: list[Any], size: int, chunks: list[_Chunk],
                 scores: array[float]) -> None:
        self._grader, self._responses, self._references, self._size = grader, responses, references, size
        self._whole = [c.whole for c in chunks]
        self._scores = scores

    def grade(self, i: int) -> Grade:
        """Row ``i``'s grade: as sent whole, or the fast path's, made again here (the grader is deterministic)."""
        c, j = divmod(i, self._size)
        whole = self._whole[c]
        if whole:
            grade = whole.get(j)
            if grade is not None:
                return grade
        grade = self._grader.grade(self._responses[i], self._references[i])
        if grade.score != self._scores[i]:
            raise RuntimeError(f"row {i} scored {self._scores[i]!r} in a worker process but {grade.score!r} when "
                               "graded again here: the grader is not deterministic, or the row's inputs were changed")
        return grade


def _grade_forked(grader: _Grades, responses: list[Any], references: list[Any], workers: int, progress: bool,
                  size: int) -> GradeList:
    n = len(responses)
    count = (n + size - 1) // size
    context = multiprocessing.get_context("fork")
    counters = memoryview(mmap.mmap(-1, 16)).cast("q")  # anonymous and shared: forked workers see the same pages
    counters[1] = count
    shared = _Shared(pickle.dumps(grader), responses, references, size, count, counters, context.Lock())
    chunks: list[_Chunk | None] = [None] * count
    raised: list[tuple[int, BaseException, BaseException]] = []
    processes, readers = [], []
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
            with _progress_bar(progress, n) as advance:  # after the fork: the bar runs a thread
                live = list(readers)
                while live:
                    for ready in wait(live):
                        reader = readers[readers.index(ready)]  # type: ignore[arg-type]  # wait() answers what it was given
                        try:
                            message = reader.recv()
                        except EOFError:
                            message = None  # the worker died (killed?): the missing chunks say so below
                        if message is None:
                            live.remove(reader)
                        elif isinstance(message[1], _Chunk):
                            chunks[message[0]] = message[1]
                            advance(len(message[1].scores) // 8)
                        else:
                            raised.append(message)
        except BaseException:  # interrupted here (Ctrl-C): the workers stop after the chunk they are on
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
    if raised:
        row, exc, cause = min(raised, key=lambda r: r[0])
        raise exc from cause
    missing = [c for c, chunk in enumerate(chunks) if chunk is None]
    if missing:
        codes = sorted({str(p.exitcode) for p in processes})
        raise RuntimeError(f"a worker process exited (exit codes {codes}) before grading rows {missing[0] * size} "
                           f"onwards; no grade was lost silently, so none is returned")
    done = [c for c in chunks if c is not None]
    scores = array("d", b"".join(c.scores for c in done))
    return GradeList._lazy(n, _Rows(grader, responses, references, size, done, scores).grade, scores)


# --------------------------------------------------------------------------- the result


class GradeList(list[Grade]):
    """The grades :func:`grade_batch` returns: a ``list[Grade]`` in input order, plus :attr:`scores`.

    From forked workers the Grade objects are made as they are read (a
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


def _joined(first: list[Grade], later: GradeList) -> GradeList:
    """``first`` then ``later``, as one GradeList (still lazy where ``later`` is)."""
    if later._make is None:
        return GradeList(first + list(later))
    make, n = later._make, len(first)
    scores = array("d", [g.score for g in first])
    assert later._scores is not None  # a lazy GradeList holds its scores
    scores.extend(later._scores)
    return GradeList._lazy(n + len(later), lambda i: first[i] if i < n else make(i - n), scores)
