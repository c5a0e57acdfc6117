

"""Grading many responses at once, in worker processes.

Where ``fork`` is safe (:func:`fork_is_safe`), :func:`grade_batch` forks its
workers with the batch already in memory, so no response or reference is
pickled: each worker takes chunks of row numbers from a counter in shared
memory, grades them with its own copy of the grader (rebuilt from its pickle,
so a grader's connections and sandboxes are never shared with this process),
and sends back per chunk the scores as one array. A structured fast-path grade
(whose details are not built yet) goes no further: it is made again in this
process, by grading that pair, when the caller first reads it (the grader is
deterministic; the score is checked). Any other grade travels whole, pickled.
The result is a :class:`GradeList`, a list whose Grade objects are made as
they are read. The exchange was the cost: pickling a fast-path grade and its
pair costs more than the grade itself (about 7 us).

Elsewhere the workers are started with ``forkserver`` (``spawn`` where that is
missing), the grader is sent once per worker and chunks of (response,
reference) pairs go out pickled.

:func:`grade_batch` starts workers only where they pay (``adaptive``, the
default): it grades the first rows here, measures what a row costs to grade and
to send back, and :func:`choose_workers` picks the count from that.

Either way results come back in input order, and a worker never swallows a
grader bug: the exception of the first row (in input order) whose grading
raised propagates to the caller, as with ``workers=1``. Bad *responses* are not
exceptions -- they come back as flagged zero grades, like any other.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import pickle
import sys
import threading
import time
import traceback
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from multiprocessing.connection import Connection, wait
from operator import index
from typing import Any, Protocol, SupportsIndex, overload

from ._errors import GraderConfigError
from ._result import Grade


class _Grades(Protocol):
    def grade(self, response: Any, reference: Any) -> Grade: ...


_WORKER_GRADER: Any = None


_YOUNG_EVERY = 1000
"""While paused, the young generation is collected after this many grades (see :func:`_grade_all`)."""


@contextmanager
def gc_paused() -> Iterator[bool]:
    """Pause Python's cyclic garbage collector while a batch is graded; yields whether it was enabled.

    Grading builds many small objects and no reference cycles, so the cyclic
    collector finds nothing to free, yet left on it keeps re-scanning every grade
    kept so far in its older generations: on 20,000 grades it more than doubled
    the time per grade in ``benchmarks/grader_throughput.py``. Reference counting
    still frees everything as usual. The collector's previous state is restored
    afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield was_enabled
    finally:
        if was_enabled:
            gc.enable()


def _grade_all(grader: _Grades, pairs: Iterable[tuple[Any, Any]]) -> list[Grade]:
    """Grade every pair with the collector paused, collecting only its young generation every
    :data:`_YOUNG_EVERY` grades (when the caller had it on).

    The young collection scans the grades just made, while they are still in the
    CPU's caches, once; without it, one collection of the whole batch runs when
    the collector is back on, over objects long out of cache: 8.6 against 7.2 us
    per grade on 100,000 résumé grades (no difference on 1,000).
    """
    with gc_paused() as was_enabled:
        if not was_enabled:
            return [grader.grade(response, reference) for response, reference in pairs]
        out: list[Grade] = []
        grade = grader.grade
        rest = iter(pairs)
        while True:
            part = [grade(response, reference) for response, reference in islice(rest, _YOUNG_EVERY)]
            out += part
            if len(part) < _YOUNG_EVERY:
                return out
            gc.collect(0)


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


# --------------------------------------------------------------------------- worker processes (pickled chunks)


def _init_worker(grader: Any) -> None:
    global _WORKER_GRADER
    _WORKER_GRADER = grader


def worker_grader() -> Any:
    """In a process of :func:`worker_pool`: the grader it was started with."""
    return _WORKER_GRADER


def worker_pool(grader: Any, workers: int) -> ProcessPoolExecutor:
    """``workers`` processes (``forkserver`` on POSIX, ``spawn`` elsewhere, so safe in threaded programs),
    each holding ``grader`` (sent once, pickled as its config) for :func:`worker_grader`."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(grader,))


def _grade_chunk(chunk: Sequence[tuple[Any, Any]]) -> bytes:
    """Grade a chunk in a worker; the grades pickled (see :func:`_pickled`)."""
    grades: list[Any] = _grade_all(_WORKER_GRADER, chunk)
    if getattr(_WORKER_GRADER, "_flat_build", None) is not None:
        # A structured fast-path grade travels back as its values (Grade._packed): pickling the
        # FieldDetail objects instead cost several times the grading itself.
        grades = [g._packed() for g in grades]
    return _pickled(grades)


def _pickled(grades: list[Any]) -> bytes:
    """``grades`` pickled, each grade too deep to pickle replaced by None (the parent grades that row again).

    A grade's details hold the model's output: one nested a few hundred levels deep (a 1 KB
    output can be) pickles past Python's recursion limit. Such a row must not cost the batch:
    the parent, which has the row, grades it again when it is read, as with ``workers=1``.
    """
    try:
        return pickle.dumps(grades, pickle.HIGHEST_PROTOCOL)
    except RecursionError:
        return pickle.dumps([g if _travels(g) else None for g in grades], pickle.HIGHEST_PROTOCOL)


def _travels(grade: Any) -> bool:
    """Whether ``grade`` pickles without exceeding the recursion limit (other pickling errors are raised)."""
    try:
        pickle.dumps(grade, pickle.HIGHEST_PROTOCOL)
    except RecursionError:
        return False
    return True


def _grade_pooled(grader: _Grades, responses: list[Any], references: list[Any], workers: int, progress: bool,
                  size: int) -> GradeList:
    pairs = list(zip(responses, references))
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    out = GradeList()
    build = getattr(grader, "_flat_build", None)
    with worker_pool(grader, workers) as pool, gc_paused(), _progress_bar(progress, len(pairs)) as advance:
        futures = [pool.submit(_grade_chunk, chunk) for chunk in chunks]
        for chunk, future in zip(chunks, futures):
            try:
                part = pickle.loads(future.result())
            except RecursionError:  # a row nested too deeply to send to a worker: the chunk is graded here
                out.extend(_grade_all(grader, chunk))
                advance(len(chunk))
                continue
            part = [grader.grade(*pair) if p is None else p for pair, p in zip(chunk, part)]  # None: too deep to send
            out.extend(part if build is None else [Grade._unpacked(p, build) for p in part])
            advance(len(part))
    return out


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
                    if type(got) is not Grade or got._details is not None:  # not the fast path's (details unbuilt)
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


# --------------------------------------------------------------------------- the entry point


@contextmanager
def _progress_bar(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(rows)``; with ``show``, a transient progress bar it moves."""
    if not show:
        yield lambda rows: None
        return
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("grading", total=total)
    bar.start()
    try:
        yield lambda rows: bar.advance(task, rows)
    finally:
        bar.stop()


@dataclass(frozen=True, slots=True)
class Costs:
    """What one row costs, measured on the first rows of a batch (see :func:`choose_workers`)."""

    grade_s: float
    """Seconds to grade one row."""
    send_s: float
    """Seconds a worker spends pickling one row's grade for the trip back (0 for a fast-path grade, sent as its score)."""
    receive_s: float
    """Seconds this process spends unpickling one row's grade (it does them all, one after another)."""
    out_s: float = 0.0
    """Seconds this process spends pickling one row's response and reference for a worker (``forkserver`` and
    ``spawn`` workers only: forked ones find the batch in memory)."""


STARTUP_S = {"fork": 0.02, "pool": 0.5}
"""Seconds to start one worker: a fork of this process, or a ``forkserver``/``spawn`` process that imports graders."""


def choose_workers(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
    """How many of ``workers`` processes grade ``rows`` rows fastest, by a model of the costs; 1 means here.

    One process takes ``rows * grade_s``. ``w`` workers take
    ``w * startup + rows * (grade_s + send_s) / w + rows * (receive_s + out_s)``:
    the workers share the grading and the pickling of grades, and this process
    unpickles every grade that comes back and, for workers that are not forked
    (``start="pool"``), pickles every row it sends (counted in full, though they
    overlap the workers' grading). Workers are used only when that is under 80 %
    of one process's time, so that a close call stays in this process.

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
        serial = costs.receive_s + (costs.out_s if start == "pool" else 0.0)
        took = w * STARTUP_S[start] + rows * (costs.grade_s + costs.send_s) / w + rows * serial
        if took < best_s:
            best, best_s = w, took
    return best


_PROBE_ROWS = 64
_PROBE_S = 0.05


def _probe(grader: _Grades, responses: list[Any], references: list[Any]) -> tuple[list[Grade], Costs]:
    """Grade the first rows here (at least 8, at most 64, for about 50 ms) and measure what a row costs."""
    done: list[Grade] = []
    started = time.perf_counter()
    with gc_paused():
        while len(done) < min(_PROBE_ROWS, len(responses)):
            k = len(done)
            done.append(grader.grade(responses[k], references[k]))
            if len(done) >= 8 and time.perf_counter() - started > _PROBE_S:
                break
    grade_s = (time.perf_counter() - started) / len(done)
    whole = [g for g in done if type(g) is not Grade or g._details is not None]  # fast-path grades travel as scores
    try:
        started = time.perf_counter()
        sent = pickle.dumps(whole, pickle.HIGHEST_PROTOCOL)
        send_s = (time.perf_counter() - started) / len(done)
        started = time.perf_counter()
        pickle.loads(sent)
        receive_s = (time.perf_counter() - started) / len(done)
    except RecursionError:  # a grade too deep to pickle is graded again here: count it as grading twice
        send_s, receive_s = 0.0, grade_s
    try:
        started = time.perf_counter()
        pickle.dumps(list(zip(responses[:len(done)], references[:len(done)])), pickle.HIGHEST_PROTOCOL)
        out_s = (time.perf_counter() - started) / len(done)
    except RecursionError:  # rows that cannot travel: a pool cannot grade them
        out_s = grade_s
    return done, Costs(grade_s, send_s, receive_s, out_s)


def grade_batch(grader: _Grades, responses: Iterable[str | Mapping[str, Any]], references: Iterable[Any], *,
                workers: int = 1, progress: bool = False, chunk_size: int | None = None,
                adaptive: bool = True) -> GradeList:
    """Grade ``responses[i]`` against ``references[i]`` for every i; results in input order, as a :class:`GradeList`.

    ``workers=1`` grades in this process; ``workers=N`` uses up to N processes: forked
    with the batch in memory where that is safe (see :func:`fork_is_safe`; the
    scores come back as arrays, and a structured fast-path grade is made again
    here when first read), else started with ``forkserver`` (``spawn`` where
    missing) and sent the pairs. Either way every grade reads the same as with
    ``workers=1``. ``progress=True`` shows a progress bar. From forked workers a
    grade is made when first read, from the same response and reference objects
    (the lists are copied, their items are not), so do not change those until then.

    With ``adaptive`` (the default) the first rows are graded here while what a
    row costs is measured (grading it, and pickling its grade both ways), and
    :func:`choose_workers` decides how many of the N processes grade the rest: a
    batch whose grades cost less than their trip back (nested grades sent whole),
    or too small to pay for starting a process, is graded here. ``adaptive=False``
    uses exactly N.
    """
    responses = responses if type(responses) is list else list(responses)
    references = references if type(references) is list else list(references)
    if len(responses) != len(references):
        raise GraderConfigError(f"{len(responses)} responses but {len(references)} references", code="length_mismatch",
                                hint="pass one reference per response")
    if workers < 1:
        raise GraderConfigError(f"workers must be >= 1, got {workers}", code="bad_option", pointer="/workers")
    if workers == 1 or len(responses) < 2:
        return GradeList(_run_local(grader, responses, references, progress))
    forked = fork_is_safe()
    if adaptive:
        done, costs = _probe(grader, responses, references)
        rest = len(responses) - len(done)
        workers = choose_workers(costs, rest, workers, "fork" if forked else "pool")
        if workers == 1 or rest < 2:
            return GradeList(done + _run_local(grader, responses[len(done):], references[len(done):], progress))
        later = grade_batch(grader, responses[len(done):], references[len(done):], workers=workers, progress=progress,
                            chunk_size=chunk_size, adaptive=False)
        return _joined(done, later)
    # Chunks: at least 8 per worker, so that one slowed down (by other jobs on the machine) delays the end little;
    # at most 4,096 rows (2,000 when pickled), so that the parent's work per chunk is negligible.
    size = chunk_size or max(1, min(4096 if forked else 2000, len(responses) // (workers * 8) or 1))
    if forked:  # the grades may be made again from the inputs later: keep the lists as they are now
        return _grade_forked(grader, list(responses), list(references), workers, progress, size)
    return _grade_pooled(grader, responses, references, workers, progress, size)


def _joined(first: list[Grade], later: GradeList) -> GradeList:
    """``first`` then ``later``, as one GradeList (still lazy where ``later`` is)."""
    if later._make is None:
        return GradeList(first + list(later))
    make, n = later._make, len(first)
    scores = array("d", [g.score for g in first])
    assert later._scores is not None  # a lazy GradeList holds its scores
    scores.extend(later._scores)
    return GradeList._lazy(n + len(later), lambda i: first[i] if i < n else make(i - n), scores)


def _run_local(grader: _Grades, responses: list[Any], references: list[Any], progress: bool) -> list[Grade]:
    pairs: Iterable[tuple[Any, Any]] = zip(responses, references)
    if progress:
        from rich.progress import track

        pairs = track(pairs, total=len(responses), description="grading", transient=True)
    return _grade_all(grader, pairs)


