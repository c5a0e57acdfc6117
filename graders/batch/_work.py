"""What is done with one chunk of rows where it is graded: the part of a batch that differs by caller.

The engine (:mod:`graders.batch._engine`) cuts a batch into chunks and runs a
:class:`ChunkWork` on each, here or in a worker (forked, pooled or a Ray task);
what the work returns travels back and reaches the caller in input order. Three
works exist, one per kind of caller:

- :class:`Scores` (``grade_batch``): each row's score in an array, and the grades
  that are not the structured fast path's, whole; a fast-path grade is made again
  when read (:class:`graders.batch.GradeList`), so the trip back is a few bytes a row;
- :class:`Rows` (``grade_rows``): every row's :class:`RowResult`, whole;
- :class:`graders.batch._lines.JsonLines` (``rftkit grade``): every row's output
  line, already serialised, and the tallies of the summary.

``errors="flag"`` is applied inside the work (:func:`flagged`): a row whose
grading raised becomes a zero grade with ``other_error``, the exception in its
reason. That catch is the dataset boundary, not scoring code: a grader's
``grade`` still raises, and with ``errors="raise"`` the exception of the first
row (in input order) that raised reaches the caller, as in a plain loop.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from .._lazy_grade import details_unbuilt
from .._result import Grade, no_errors
from ._local import gc_paused

ErrorMode = Literal["raise", "flag"]
"""What a row whose grading raised becomes: the exception, propagated (``raise``), or a zero grade flagged
``other_error`` with the exception in its reason (``flag``)."""

T = TypeVar("T")

clock: Callable[[], float] = time.perf_counter
"""The clock of each row's grading time (a module attribute, so a test can fix it and compare outputs byte for byte)."""


def flagged(exc: Exception) -> Grade:
    """The zero grade standing in for a row whose grading raised ``exc`` (``errors="flag"``)."""
    errors = no_errors()
    errors["other_error"] = True
    return Grade(0.0, errors=errors, reason=f"grading raised {type(exc).__name__}: {exc}")


class ChunkWork(Generic[T]):
    """Grades one chunk of rows and answers what travels back (a subclass per kind of caller).

    A work is called with the rows ``samples[k]``, ``items[k]`` of a chunk whose first row is row ``first`` of
    the batch. It must pickle (it is sent once to each pooled worker or Ray task). When grading raises, the work
    sets :attr:`failed_at` to the batch row that raised before the exception leaves it, so that an exception that
    cannot travel back from a worker is reported with its row.
    """

    failed_at: int = -1

    def __call__(self, grader: Any, samples: Sequence[Any], items: Sequence[Any], first: int) -> T:
        raise NotImplementedError

    def here(self) -> ChunkWork[T]:
        """The work as run in this process (the first rows, measured; every chunk when no worker pays)."""
        return self

    def travelling(self, answer: T) -> Any:
        """What a worker would send back of ``answer`` (an answer made :meth:`here`), to measure its trip."""
        return answer


# --------------------------------------------------------------------------- grade_batch: scores, and the grades that travel


@dataclass(frozen=True, slots=True)
class Scored:
    """One chunk of :class:`Scores`: every row's score and the grades sent whole."""

    scores: bytes
    """Every row's score (an array of doubles)."""
    whole: dict[int, Grade]
    """The grades sent whole, by their place in the chunk: every grade but the structured fast path's (whose
    details are not built yet, graders._lazy_grade.LazyGrade.recorded), which is made again here when read."""

    def __len__(self) -> int:
        return len(self.scores) // 8


class Scores(ChunkWork[Scored]):
    """``grade_batch``'s work: scores in an array, fast-path grades left to be made again when read."""

    def __init__(self, flag: bool, keep: bool = False) -> None:
        self.flag = flag
        self.keep = keep
        """Keep every grade whole (run in this process, where a grade need not be made twice)."""

    def here(self) -> Scores:
        return Scores(self.flag, keep=True)

    def travelling(self, answer: Scored) -> Scored:
        return Scored(answer.scores, {j: g for j, g in answer.whole.items() if not details_unbuilt(g)})

    def __call__(self, grader: Any, samples: Sequence[Any], items: Sequence[Any], first: int) -> Scored:
        scores = array("d")
        add = scores.append
        whole: dict[int, Grade] = {}
        grade, keep = grader.grade, self.keep
        with gc_paused():
            # Each grade is dropped as soon as its score is kept (unless it goes back whole), so its memory is
            # reused while still in the CPU's caches.
            for sample, item in zip(samples, items):
                try:
                    got = grade(sample, item)
                except Exception as exc:
                    if not self.flag:
                        self.failed_at = first + len(scores)
                        raise
                    got = flagged(exc)
                if keep or not details_unbuilt(got):  # a fast-path grade is made again from its row when read
                    whole[len(scores)] = got
                add(got.score)
        return Scored(scores.tobytes(), whole)


# --------------------------------------------------------------------------- grade_rows: every row whole


@dataclass(frozen=True, slots=True)
class RowResult:
    """One graded row."""

    grade: Grade
    seconds: float
    """Wall-clock seconds this row's grading took."""
    raised: bool = False
    """True when grading raised and the grade is the flagged zero standing in for it."""


def grade_row(grader: Any, sample: Any, item: Any, flag: bool) -> RowResult:
    """One row graded and timed; with ``flag``, a row whose grading raised is its flagged zero."""
    start = clock()
    try:
        grade = grader.grade(sample, item)
    except Exception as exc:  # the dataset boundary: the row is reported, not lost (module docstring)
        if not flag:
            raise
        return RowResult(flagged(exc), clock() - start, raised=True)
    return RowResult(grade, clock() - start)


class Rows(ChunkWork[list[RowResult]]):
    """``grade_rows``'s work: every row's :class:`RowResult`."""

    def __init__(self, flag: bool) -> None:
        self.flag = flag

    def __call__(self, grader: Any, samples: Sequence[Any], items: Sequence[Any], first: int) -> list[RowResult]:
        out: list[RowResult] = []
        with gc_paused():
            for sample, item in zip(samples, items):
                try:
                    out.append(grade_row(grader, sample, item, self.flag))
                except Exception:
                    self.failed_at = first + len(out)
                    raise
        return out
