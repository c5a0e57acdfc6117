"""Grading in this process, the collector paused; the local transport; the progress bar every path shares."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any, Protocol, TypeVar

from .._result import Grade

T = TypeVar("T")


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


def _grade_all(grader: _Grades, pairs: Iterable[tuple[Any, Any]], flag: bool = False) -> list[Grade]:
    """Grade every pair with the collector paused, collecting only its young generation every
    :data:`_YOUNG_EVERY` grades (when the caller had it on); with ``flag``, a pair whose grading raised is
    its flagged zero (``errors="flag"``).

    The young collection scans the grades just made, while they are still in the
    CPU's caches, once; without it, one collection of the whole batch runs when
    the collector is back on, over objects long out of cache (the difference shows
    on 100,000 résumé grades in ``benchmarks/grader_throughput.py``, not on 1,000).
    """
    grade = _flagging(grader.grade) if flag else grader.grade
    with gc_paused() as was_enabled:
        if not was_enabled:
            return [grade(response, reference) for response, reference in pairs]
        out: list[Grade] = []
        rest = iter(pairs)
        while True:
            part = [grade(response, reference) for response, reference in islice(rest, _YOUNG_EVERY)]
            out += part
            if len(part) < _YOUNG_EVERY:
                return out
            gc.collect(0)


def _flagging(grade: Callable[[Any, Any], Grade]) -> Callable[[Any, Any], Grade]:
    from ._work import flagged

    def flagging(response: Any, reference: Any) -> Grade:
        try:
            return grade(response, reference)
        except Exception as exc:  # the dataset boundary (errors="flag"): the row is reported, not lost
            return flagged(exc)

    return flagging


@contextmanager
def local(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: Callable[..., T], bounds: list[tuple[int, int]],
          workers: int = 1) -> Iterator[Iterator[T]]:
    """The transport that is none: ``work`` run here on each chunk of ``bounds``, in order.

    The collector stays paused from the first chunk to the last, its young generation collected after each
    chunk (when the caller had it on), for the reason :func:`_grade_all` gives."""

    def answers() -> Iterator[T]:
        with gc_paused() as was_enabled:
            for a, b in bounds:
                yield work(grader, samples[a:b], items[a:b], a)
                if was_enabled:
                    gc.collect(0)

    yield answers()


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

