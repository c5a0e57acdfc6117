"""``rftkit grade``'s work: each row's output line, made where the row is graded, and the summary's tallies.

A worker that grades a row also writes what ``rftkit grade --output`` holds for
it (:func:`graders._run.grade_record`, serialised as one UTF-8 JSON line), and
adds the grade to a :class:`Tally`; a chunk answers with its lines as one
``bytes`` and its tally, so this process only writes bytes and merges tallies,
and no Grade object travels or is made twice. The lines are the same bytes
whichever process made them.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Sequence
from typing import Any

from .._result import Grade
from .._run import grade_record
from ._local import gc_paused
from ._work import ChunkWork, grade_row


class Tally:
    """What the summary of ``rftkit grade`` needs of each row, gathered where rows are graded, merged in order.

    Means are exact (``math.fsum``) and so do not depend on how the rows were cut into chunks; names and error
    flags keep the order in which rows first show them.

    >>> tally = Tally.of([Grade(1.0, sub_scores={"a": 1.0}), Grade(0.5, sub_scores={"a": 0.0, "b": 1.0})])
    >>> tally.rows, tally.mean(), tally.mean("a"), tally.mean("b")
    (2, 0.75, 0.5, 0.5)
    """

    def __init__(self) -> None:
        self.rows = 0
        self.scores = array("d")
        self.sub_scores: dict[str, array[float]] = {}
        """Per name, the sub-scores of the rows that have it (a row without it counts 0 in :meth:`mean`)."""
        self.precision: dict[str, array[float]] = {}
        self.recall: dict[str, array[float]] = {}
        self.flags: dict[str, int] = {}
        """Per error flag, the rows that raised it."""
        self.raised: list[int] = []
        """The rows (numbered from 0 in the batch) whose grading raised."""
        self.first_reason = ""
        """The reason of the first row whose grading raised."""

    @classmethod
    def of(cls, grades: Sequence[Grade]) -> Tally:
        tally = cls()
        for grade in grades:
            tally.add(grade)
        return tally

    def add(self, grade: Grade, row: int = 0, raised: bool = False) -> None:
        """Count one row's grade (``raised``: the flagged zero of a row whose grading raised)."""
        self.rows += 1
        self.scores.append(grade.score)
        for name, value in grade.sub_scores.items():
            _values(self.sub_scores, name).append(value)
        for name, detail in grade.details.items():
            if detail.precision is not None:
                _values(self.precision, name).append(detail.precision)
            if detail.recall is not None:
                _values(self.recall, name).append(detail.recall)
        if not grade.ok:
            for flag, up in grade.errors.items():
                if up:
                    self.flags[flag] = self.flags.get(flag, 0) + 1
        if raised:
            if not self.raised:
                self.first_reason = grade.reason
            self.raised.append(row)

    def merge(self, later: Tally) -> None:
        """Add the rows of ``later``, which come after these."""
        self.rows += later.rows
        self.scores.extend(later.scores)
        for mine, theirs in ((self.sub_scores, later.sub_scores), (self.precision, later.precision),
                             (self.recall, later.recall)):
            for name, values in theirs.items():
                _values(mine, name).extend(values)
        for flag, count in later.flags.items():
            self.flags[flag] = self.flags.get(flag, 0) + count
        if later.raised and not self.raised:
            self.first_reason = later.first_reason
        self.raised += later.raised

    def mean(self, name: str | None = None) -> float:
        """The mean score (of the sub-score ``name``, 0 where a row lacks it) over every row."""
        values = self.scores if name is None else self.sub_scores.get(name, array("d"))
        return math.fsum(values) / self.rows


def _values(table: dict[str, array[float]], name: str) -> array[float]:
    values = table.get(name)
    if values is None:
        values = table[name] = array("d")
    return values


class JsonLines(ChunkWork[tuple[bytes, Tally]]):
    """Grade a chunk and answer its output lines (empty unless ``lines``) and its :class:`Tally`.

    ``ids`` holds every row's ``id`` (by row of the batch); ``name`` and ``kind`` are the grader's, for the
    ``graders/run`` shape. ``flag``: a row whose grading raised is its flagged zero (``errors="flag"``).
    """

    def __init__(self, ids: Sequence[Any], name: str, kind: str, *, lines: bool = True, flag: bool = True) -> None:
        self.ids, self.name, self.kind, self.lines, self.flag = ids, name, kind, lines, flag

    def __call__(self, grader: Any, samples: Sequence[Any], items: Sequence[Any], first: int) -> tuple[bytes, Tally]:
        out: list[bytes] = []
        tally = Tally()
        ids, name, kind, lines, flag = self.ids, self.name, self.kind, self.lines, self.flag
        with gc_paused():
            for k, (sample, item) in enumerate(zip(samples, items)):
                try:
                    result = grade_row(grader, sample, item, flag)
                except Exception:
                    self.failed_at = first + k
                    raise
                tally.add(result.grade, first + k, result.raised)
                if lines:
                    out.append(_line(grade_record(ids[first + k], name, kind, result.grade, result.seconds)))
        return b"".join(out), tally


def _line(record: dict[str, Any]) -> bytes:
    """``record`` as one JSON line in UTF-8; a lone surrogate (model output can hold one) is written as its \\u escape."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode("utf-8")
