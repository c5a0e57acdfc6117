"""The one result shape every grader returns: :class:`Grade`.

``score`` is a finite float in [0, 1]; ``sub_scores`` names one float per field
(or per sub-grader); ``details`` says per field what was compared and how it
scored; ``errors`` holds OpenAI's error flags (all false on success) plus
rftkit's own; ``reason`` is one line a person can read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from schemas import Issue

ERROR_FLAGS: tuple[str, ...] = (
    # OpenAI's graders/run metadata.errors flags, in their order.
    "formula_parse_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
    "invalid_variable_error",
    "other_error",
    "python_grader_server_error",
    "python_grader_runtime_error",
    "model_grader_server_error",
    "model_grader_refusal_error",
    "model_grader_parse_error",
    # rftkit's own.
    "schema_validation_error",
    "truncated_output_error",
)
"""Every error flag a :class:`Grade` carries; all are False on success."""

FieldStatus = Literal["compared", "both_empty", "missing", "extra", "wrong_type"]
"""How a field was scored: both sides had a value (``compared``); neither had
(``both_empty``, a match); the reference had a value the prediction lacks
(``missing``, costs recall); the prediction had a value the reference lacks
(``extra``, costs precision); the two values are of incompatible kinds
(``wrong_type``, e.g. a string where a list belongs: scored 0)."""


@dataclass(slots=True)
class FieldDetail:
    """What one field compared and how it scored. List fields fill the P/R/F1 part."""

    comparator: str
    """The comparator used (``fuzzy``, ``number`` ...; ``object`` or ``list/<mode>`` for containers)."""
    score: float
    """The field's score in [0, 1] (for lists: F1; for objects: their aggregate)."""
    status: FieldStatus
    prediction: Any = None
    reference: Any = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    matched: list[tuple[int, int, float]] | None = None
    """For lists: (prediction index, reference index, similarity) of each matched pair."""
    missing: list[Any] | None = None
    """For lists: reference items no prediction matched (they cost recall)."""
    extra: list[Any] | None = None
    """For lists: predicted items that match nothing in the reference (they cost precision)."""
    fields: dict[str, FieldDetail] | None = None
    """For objects: the details of their fields."""
    items: list[FieldDetail] | None = None
    """For lists of objects: the details of each matched pair, in ``matched`` order."""
    notes: list[str] | None = None
    """What a reader should know about this score: the schema violations at or under this
    field (the output was graded per field anyway), characters a comparator left out."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Positional values: about twice as fast to pickle as the dataclass's default slot state.
        return (FieldDetail, (self.comparator, self.score, self.status, self.prediction, self.reference, self.precision,
                              self.recall, self.f1, self.matched, self.missing, self.extra, self.fields, self.items,
                              self.notes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, leaving out what does not apply."""
        out: dict[str, Any] = {"comparator": self.comparator, "score": self.score, "status": self.status}
        for name in ("prediction", "reference", "precision", "recall", "f1", "matched", "missing", "extra"):
            value = getattr(self, name)
            if value is not None or name in ("prediction", "reference"):
                out[name] = [list(p) for p in value] if name == "matched" and value is not None else value
        if self.fields is not None:
            out["fields"] = {k: v.to_dict() for k, v in self.fields.items()}
        if self.items is not None:
            out["items"] = [v.to_dict() for v in self.items]
        if self.notes is not None:
            out["notes"] = list(self.notes)
        return out


def no_errors() -> dict[str, bool]:
    """A fresh errors dict with every flag False."""
    return dict.fromkeys(ERROR_FLAGS, False)


DetailsBuilder = Callable[[tuple[Any, ...]], dict[str, "FieldDetail"]]
"""Builds a grade's details from the values its grader recorded while grading."""


class Grade:
    """The result of grading one response.

    ``reason`` may be given, or is written on first access from the scores (so a
    batch of a million grades does not format a million strings nobody reads).
    The structured grader's fast path likewise records every field's detail as
    values in one tuple (all the numbers computed while grading), and the
    :class:`FieldDetail` objects are built from it when ``details`` is first read:
    a batch keeps far fewer objects alive for the garbage collector to scan. A
    grade the structured grader knows cheaply to fail (:meth:`_failed`) gets its
    reason, flags and issues from the full stages when one of them is first read.

    Why this laziness is kept (``benchmarks/side_by_side.py``, 2026-12-05, shared
    2-core machine, medians of 3 alternated rounds; ``benchmarks/NOTES.md``):
    building details, errors and reason at once made ``grader_throughput.py``'s
    ``grade_batch`` 1.8x slower (the reason and errors alone 1.33x),
    ``batch_scaling.py``'s ``workers=1`` 2.3x slower, and the reward server's
    CPU per 256-row batch 1.66x; explaining failed grades at once cost that
    server 1.13x CPU per batch (the demo rows hold cut-off, non-JSON and
    schema-invalid outputs).

    >>> g = Grade(0.5, {"city": 1.0, "state": 0.0})
    >>> g.ok, g.reason, g.to_dict()["errors"]["sample_parse_error"]
    (True, '0.500: below 1: state 0.00', False)
    """

    __slots__ = ("score", "sub_scores", "_details", "_build", "_values", "_errors", "_repairs", "_issues", "_tp", "_fp", "_fn",
                 "how", "_reason", "_explain")
    _tp: float | None  # the counts, kept as three floats (None: no counts)
    _fp: float
    _fn: float

    def __init__(
        self,
        score: float,
        sub_scores: dict[str, float] | None = None,
        details: dict[str, FieldDetail] | None = None,
        errors: dict[str, bool] | None = None,
        reason: str | None = None,
        repairs: tuple[str, ...] = (),
        issues: tuple[Issue, ...] = (),
        counts: tuple[float, float, float] | None = None,
        how: str = "",
    ) -> None:
        self.score = score
        """The reward: a finite float in [0, 1]."""
        self.sub_scores: dict[str, float] = sub_scores if sub_scores is not None else {}
        """One score per field (or per sub-grader)."""
        self._details: dict[str, FieldDetail] | None = details if details is not None else {}
        self._build: DetailsBuilder | None = None  # builds the details from _values when _details is None
        self._values: tuple[Any, ...] = ()
        self._errors = errors  # None means "no error": the dict is built when first read
        self._repairs = repairs
        self._issues = issues
        self._explain: Callable[[], Grade] | None = None  # see _failed
        self.counts = counts
        self.how = how
        """How the fields were combined (``weighted_mean`` ...), for the reason line."""
        self._reason = reason

    @classmethod
    def _recorded(cls, score: float, sub_scores: dict[str, float], build: DetailsBuilder, values: tuple[Any, ...],
                  tp: float, fp: float, fn: float, how: str) -> Grade:
        """A successful grade whose details ``build(values)`` makes on first read (the fast path's result)."""
        grade = cls.__new__(cls)
        grade.score = score
        grade.sub_scores = sub_scores
        grade._details = None
        grade._build = build
        grade._values = values
        grade._errors = None
        grade._repairs = ()
        grade._issues = ()
        grade._explain = None
        grade._tp = tp
        grade._fp = fp
        grade._fn = fn
        grade.how = how
        grade._reason = None
        return grade

    @classmethod
    def _failed(cls, explain: Callable[[], Grade]) -> Grade:
        """A failed grade (score 0, no field scored) whose errors, reason, repairs and issues are ``explain()``'s,
        called when one of them is first read.

        The structured grader answers this when it knows cheaply that a response fails (it does not
        decode, or it violates the schema) and ``explain`` is its full pipeline, which formats the
        reason and lists every schema issue: a trainer that reads only the scores never pays for them.
        """
        grade = cls(0.0)
        grade._explain = explain
        return grade

    def _explained(self) -> None:
        """Fill in the errors, reason, repairs and issues of a :meth:`_failed` grade (two threads may both do it: the results are equal)."""
        explain = self._explain
        if explain is None:
            return
        full = explain()
        assert full.score == 0.0 and not full.sub_scores and not full.details, "a failed grade explained as a success"
        self._errors, self._reason, self._repairs, self._issues = full._errors, full._reason, full._repairs, full._issues
        self._tp, self._fp, self._fn, self.how = full._tp, full._fp, full._fn, full.how
        self._explain = None

    @property
    def repairs(self) -> tuple[str, ...]:
        """Lenient JSON repairs that were needed to read the response (penalise them if you like)."""
        if self._explain is not None:
            self._explained()
        return self._repairs

    @repairs.setter
    def repairs(self, value: tuple[str, ...]) -> None:
        self._repairs = value

    @property
    def issues(self) -> tuple[Issue, ...]:
        """Parse failures and schema violations, as records."""
        if self._explain is not None:
            self._explained()
        return self._issues

    @issues.setter
    def issues(self, value: tuple[Issue, ...]) -> None:
        self._issues = value

    def _packed(self) -> Any:
        """This grade for the trip back from a worker process: a fast-path grade as its values (a tuple;
        the FieldDetail objects are not built), any other grade as itself. :meth:`_unpacked` reverses it."""
        if self._details is not None or self._errors is not None or self._reason is not None:
            return self
        return (self.score, self.sub_scores, self._values, self._tp, self._fp, self._fn, self.how)

    @classmethod
    def _unpacked(cls, packed: Any, build: DetailsBuilder) -> Grade:
        """A grade from :meth:`_packed`, its details built by ``build`` (the receiving grader's own builder) when read."""
        if isinstance(packed, Grade):
            return packed
        score, sub_scores, values, tp, fp, fn, how = packed
        return cls._recorded(score, sub_scores, build, values, tp, fp, fn, how)

    @property
    def counts(self) -> tuple[float, float, float] | None:
        """(true positives, false positives, false negatives) over leaf values, for micro-F1."""
        if self._explain is not None:
            self._explained()
        return None if self._tp is None else (self._tp, self._fp, self._fn)  # three floats: no tuple kept per grade

    @counts.setter
    def counts(self, value: tuple[float, float, float] | None) -> None:
        self._tp, self._fp, self._fn = (None, 0.0, 0.0) if value is None else value

    @property
    def details(self) -> dict[str, FieldDetail]:
        """Per field: what was compared and how it scored."""
        details = self._details
        if details is None:  # _build and _values stay: another thread may be reading them (two builds are equal)
            assert self._build is not None
            details = self._details = self._build(self._values)
        return details

    @details.setter
    def details(self, value: dict[str, FieldDetail]) -> None:
        self._details = value

    @property
    def reason(self) -> str:
        """One line a person can read."""
        if self._explain is not None:
            self._explained()
        if self._reason is None:
            imperfect = [f"{k or 'value'} {v:.2f}" for k, v in self.sub_scores.items() if v < 1.0]
            head = f"{self.score:.3f}" + (f" by {self.how}" if self.how else "")
            tail = "all fields match" if not imperfect else "below 1: " + ", ".join(imperfect)
            if self.repairs:
                tail += f"; repaired ({', '.join(self.repairs)})"
            if self.issues:
                tail += f"; {len(self.issues)} schema issue(s), partial credit"
            self._reason = f"{head}: {tail}"
        return self._reason

    @property
    def errors(self) -> dict[str, bool]:
        """OpenAI's error flags plus rftkit's own (:data:`ERROR_FLAGS`); all False on success."""
        if self._explain is not None:
            self._explained()
        if self._errors is None:
            self._errors = no_errors()
        return self._errors

    @property
    def ok(self) -> bool:
        """True when no error flag is set."""
        if self._explain is not None:
            return False  # a failed grade sets a flag
        return self._errors is None or not any(self._errors.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole result."""
        return {
            "score": self.score,
            "sub_scores": dict(self.sub_scores),
            "details": {k: v.to_dict() for k, v in self.details.items()},
            "errors": dict(self.errors),
            "reason": self.reason,
            "repairs": list(self.repairs),
            "issues": [i.to_dict() for i in self.issues],
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # The details travel built (their builder is a per-schema function); the errors dict and the reason
        # stay unbuilt when they still are, so a batch sent back from worker processes costs less to pickle.
        if self._explain is not None:
            self._explained()
        return (Grade, (self.score, self.sub_scores, self.details, self._errors, self._reason, self.repairs, self.issues,
                        self.counts, self.how))

    def __repr__(self) -> str:
        return f"Grade(score={self.score!r}, sub_scores={self.sub_scores!r}, reason={self.reason!r})"
