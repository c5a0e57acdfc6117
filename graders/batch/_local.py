"""Grading in this process: the collector paused, and GradeList, the list grade_batch returns (lazy where grades come from forked workers)."""

from __future__ import annotations

import gc
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from operator import index
from typing import Any, Protocol, SupportsIndex, overload

from .._result import Grade


class _Grades(Protocol):
    def grade(self, response: Any, reference: Any) -> Grade: ...




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
    the collector is back on, over objects long out of cache (the difference shows
    on 100,000 résumé grades in ``benchmarks/grader_throughput.py``, not on 1,000).
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


