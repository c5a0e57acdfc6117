"""The lazy grades: the structured grader's results, whose costly parts are made when first read.

A :class:`~graders.Grade` is plain data. The structured grader answers with one
of two subclasses instead, which read the same, compare the same and pickle as a
plain :class:`~graders.Grade` with equal content:

* :class:`LazyGrade` -- a scored grade. Its ``errors`` (all False unless given)
  and its ``reason`` (written from the scores) are made on first read. The fast
  path's grades (:meth:`LazyGrade.recorded`) also keep their details as values
  in one tuple (every number computed while grading) and build the
  :class:`~graders.FieldDetail` objects from it on first read: a batch keeps far
  fewer objects alive for the garbage collector to scan, and a worker process
  sends a grade back as that tuple (:func:`packed`, :func:`unpacked`).
* :class:`FailedGrade` -- a response the grader knows cheaply to fail (it does
  not decode, or it violates a gating schema): score 0, and its errors, reason,
  repairs and issues are the full stages' (``explain()``), run when one of them
  is first read. A trainer that reads only the scores never pays for them.

Two threads may read an unbuilt part at once: both build it, and the results
are equal. Nothing here changes a score; ``tests/graders/test_lazy_grade.py``
compares every lazy grade with the plain one made at once.

Why this is kept (``benchmarks/side_by_side.py``, shared 2-core machine,
medians of 3 alternated rounds; ``benchmarks/NOTES.md`` has the table): making
the details, errors and reason at once made ``grader_throughput.py``'s
``grade_batch`` 1.8x slower (the reason and errors alone 1.33x),
``batch_scaling.py``'s ``workers=1`` 2.3x slower, and the reward server's CPU
per 256-row batch 1.66x; explaining failed grades at once cost that server
1.13x CPU per batch (the demo rows hold cut-off, non-JSON and schema-invalid
outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas import Issue

from ._errors import ErrorFlag
from ._result import FieldDetail, Grade, default_reason, no_errors

DetailsBuilder = Callable[[tuple[Any, ...]], dict[str, FieldDetail]]
"""Builds a fast-path grade's details from the values its grader recorded while grading."""

Packed = tuple[float, dict[str, float], tuple[Any, ...], float, float, float, str]
"""A fast-path grade on its way back from a worker: (score, sub_scores, values, tp, fp, fn, how)."""


class LazyGrade(Grade):
    """A scored grade whose details (when recorded as values), errors and reason are made on first read.

    >>> import pickle
    >>> g = LazyGrade.unformatted(0.5, {"city": 1.0, "state": 0.0}, {}, None, (), (), None, "")
    >>> g.ok, g.reason, g.errors["sample_parse_error"], type(pickle.loads(pickle.dumps(g))).__name__
    (True, '0.500: below 1: state 0.00', False, 'Grade')
    """

    # details, errors and reason live here until made (None: not yet), and the counts as three floats (a tuple per
    # grade made grade_batch 3 % slower); the plain Grade's slots of those names go unused.
    __slots__ = ("_details", "_build", "_values", "_errors", "_reason", "_tp", "_fp", "_fn")
    _details: dict[str, FieldDetail] | None
    _build: DetailsBuilder | None
    _values: tuple[Any, ...]
    _errors: dict[ErrorFlag, bool] | None
    _reason: str | None
    _tp: float | None  # None: no counts
    _fp: float
    _fn: float

    @classmethod
    def recorded(cls, score: float, sub_scores: dict[str, float], build: DetailsBuilder, values: tuple[Any, ...],
                 tp: float, fp: float, fn: float, how: str) -> LazyGrade:
        """The fast path's grade: no error, its details ``build(values)`` when first read (``build`` is the grader's)."""
        grade = cls.__new__(cls)
        grade.score = score
        grade.sub_scores = sub_scores
        grade.repairs = ()
        grade.issues = ()
        grade._tp = tp
        grade._fp = fp
        grade._fn = fn
        grade.how = how
        grade._details = None
        grade._build = build
        grade._values = values
        grade._errors = None
        grade._reason = None
        return grade

    @classmethod
    def unformatted(cls, score: float, sub_scores: dict[str, float], details: dict[str, FieldDetail],
                    errors: dict[ErrorFlag, bool] | None, repairs: tuple[str, ...], issues: tuple[Issue, ...],
                    counts: tuple[float, float, float] | None, how: str) -> LazyGrade:
        """The generic walk's grade: its reason written when first read; ``errors`` None means no flag is set."""
        grade = cls.__new__(cls)
        grade.score = score
        grade.sub_scores = sub_scores
        grade.repairs = repairs
        grade.issues = issues
        grade.counts = counts
        grade.how = how
        grade._details = details
        grade._build = None
        grade._values = ()
        grade._errors = errors
        grade._reason = None
        return grade

    @property
    def details(self) -> dict[str, FieldDetail]:
        """Per field: what was compared and how it scored."""
        details = self._details
        if details is None:  # _build and _values stay: another thread may be building from them too (the builds are equal)
            assert self._build is not None
            details = self._details = self._build(self._values)
        return details

    @details.setter
    def details(self, value: dict[str, FieldDetail]) -> None:
        self._details = value

    @property
    def errors(self) -> dict[ErrorFlag, bool]:
        """OpenAI's error flags plus rftkit's own; all False on success."""
        errors = self._errors
        if errors is None:
            errors = self._errors = no_errors()
        return errors

    @errors.setter
    def errors(self, value: dict[ErrorFlag, bool]) -> None:
        self._errors = value

    @property
    def reason(self) -> str:
        """One line a person can read."""
        reason = self._reason
        if reason is None:
            reason = self._reason = default_reason(self)
        return reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value

    @property
    def counts(self) -> tuple[float, float, float] | None:
        """(true positives, false positives, false negatives) over leaf values, for micro-F1."""
        return None if self._tp is None else (self._tp, self._fp, self._fn)

    @counts.setter
    def counts(self, value: tuple[float, float, float] | None) -> None:
        self._tp, self._fp, self._fn = (None, 0.0, 0.0) if value is None else value

    @property
    def ok(self) -> bool:
        """True when no error flag is set (an errors dict not made yet has none)."""
        return self._errors is None or not any(self._errors.values())

    def __reduce__(self) -> tuple[Any, ...]:
        # A plain Grade with the same content. The details travel built (their builder is the grader's own function);
        # errors and reason not made yet travel as None, which Grade() makes the same way, so the pickle stays small.
        return (Grade, (self.score, self.sub_scores, self.details, self._errors, self._reason, self.repairs, self.issues,
                        self.counts, self.how))


class FailedGrade(Grade):
    """A grade of 0 whose errors, reason, repairs, issues and counts are ``explain()``'s, run when one is first read.

    ``explain`` grades the response again by the full stages and must answer a failed grade (score 0, no field
    scored, a flag set); its answer is kept. ``ok`` is False without running it.
    """

    __slots__ = ("_explain", "_full")
    _explain: Callable[[], Grade]
    _full: Grade | None

    def __init__(self, explain: Callable[[], Grade]) -> None:
        self.score = 0.0
        self.sub_scores = {}
        self.details = {}
        self.how = ""
        self._explain = explain
        self._full = None

    def _explained(self) -> Grade:
        full = self._full
        if full is None:  # two threads may both explain: the answers are equal, and either is kept
            full = self._explain()
            assert full.score == 0.0 and not full.sub_scores and not full.details and not full.how and not full.ok, \
                "a failed grade explained as something else"
            self._full = full
        return full

    # Each attribute the full stages make reads (and writes) the explained grade's.

    @property
    def errors(self) -> dict[ErrorFlag, bool]:
        """OpenAI's error flags plus rftkit's own; the failure's is set."""
        return self._explained().errors

    @errors.setter
    def errors(self, value: dict[ErrorFlag, bool]) -> None:
        self._explained().errors = value

    @property
    def reason(self) -> str:
        """One line a person can read: why the response failed."""
        return self._explained().reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._explained().reason = value

    @property
    def repairs(self) -> tuple[str, ...]:
        """Lenient JSON repairs the full stages needed before the response failed."""
        return self._explained().repairs

    @repairs.setter
    def repairs(self, value: tuple[str, ...]) -> None:
        self._explained().repairs = value

    @property
    def issues(self) -> tuple[Issue, ...]:
        """The parse failure or the schema violations, as records."""
        return self._explained().issues

    @issues.setter
    def issues(self, value: tuple[Issue, ...]) -> None:
        self._explained().issues = value

    @property
    def counts(self) -> tuple[float, float, float] | None:
        """The full stages' counts (None: no field was compared)."""
        return self._explained().counts

    @counts.setter
    def counts(self, value: tuple[float, float, float] | None) -> None:
        self._explained().counts = value

    @property
    def ok(self) -> bool:
        """False: a failed grade sets a flag."""
        return False

    def __reduce__(self) -> tuple[Any, ...]:
        full = self._explained()
        return (Grade, (self.score, self.sub_scores, self.details, full.errors, full.reason, full.repairs, full.issues,
                        full.counts, self.how))


def details_unbuilt(grade: Grade) -> bool:
    """True for a fast-path grade whose details are not built yet: its row, or its values, make it again."""
    return type(grade) is LazyGrade and grade._details is None


def packed(grade: Grade) -> Grade | Packed:
    """``grade`` for the trip back from a worker process: a fast-path grade nobody has read as its values
    (a tuple; no FieldDetail object is built or pickled), any other grade as itself. :func:`unpacked` reverses it."""
    if type(grade) is LazyGrade and grade._details is None and grade._errors is None and grade._reason is None:
        assert grade._tp is not None  # a recorded grade has counts
        return (grade.score, grade.sub_scores, grade._values, grade._tp, grade._fp, grade._fn, grade.how)
    return grade


def unpacked(item: Grade | Packed, build: DetailsBuilder) -> Grade:
    """A grade from :func:`packed`, its details built by ``build`` (the receiving grader's own builder) when read."""
    if isinstance(item, Grade):
        return item
    return LazyGrade.recorded(item[0], item[1], build, item[2], item[3], item[4], item[5], item[6])
