"""The one result shape every grader returns: :class:`Grade`.

``score`` is a finite float in [0, 1]; ``sub_scores`` names one float per field
(or per sub-grader); ``details`` says per field what was compared and how it
scored; ``errors`` holds OpenAI's error flags (all false on success) plus
rftkit's own; ``reason`` is one line a person can read.

A :class:`Grade` is plain data: every attribute is set when it is made. The
structured grader answers with subclasses that make some of them when first
read (its speed layer, fenced in :mod:`graders._lazy_grade`); they read the same
and pickle as a plain :class:`Grade`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from schemas import Issue

from ._errors import ErrorFlag

ERROR_FLAGS: tuple[ErrorFlag, ...] = get_args(ErrorFlag)
"""Every error flag a :class:`Grade` carries, in :data:`~graders._errors.ErrorFlag`'s order; all are False on success."""

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


def no_errors() -> dict[ErrorFlag, bool]:
    """A fresh errors dict with every flag False."""
    return dict.fromkeys(ERROR_FLAGS, False)


def default_reason(grade: Grade) -> str:
    """The reason line of a grade made without one, written from its scores.

    >>> default_reason(Grade(0.75, {"city": 1.0, "state": 0.5}, reason="given"))
    '0.750: below 1: state 0.50'
    """
    imperfect = [f"{k or 'value'} {v:.2f}" for k, v in grade.sub_scores.items() if v < 1.0]
    head = f"{grade.score:.3f}" + (f" by {grade.how}" if grade.how else "")
    tail = "all fields match" if not imperfect else "below 1: " + ", ".join(imperfect)
    if grade.repairs:
        tail += f"; repaired ({', '.join(grade.repairs)})"
    if grade.issues:
        tail += f"; {len(grade.issues)} schema issue(s), partial credit"
    return f"{head}: {tail}"


class Grade:
    """The result of grading one response.

    Every argument but ``score`` may be left out: no sub-scores, no details, every
    error flag False, and a reason written from the scores (:func:`default_reason`).

    >>> g = Grade(0.5, {"city": 1.0, "state": 0.0})
    >>> g.ok, g.reason, g.to_dict()["errors"]["sample_parse_error"]
    (True, '0.500: below 1: state 0.00', False)
    """

    __slots__ = ("score", "sub_scores", "details", "errors", "reason", "repairs", "issues", "counts", "how")

    score: float
    """The reward: a finite float in [0, 1] (a ``score_model`` may use its configured range)."""
    sub_scores: dict[str, float]
    """One score per field (or per sub-grader)."""
    details: dict[str, FieldDetail]
    """Per field: what was compared and how it scored."""
    errors: dict[ErrorFlag, bool]
    """OpenAI's error flags plus rftkit's own (:data:`ERROR_FLAGS`); all False on success."""
    reason: str
    """One line a person can read."""
    repairs: tuple[str, ...]
    """Lenient JSON repairs that were needed to read the response (penalise them if you like)."""
    issues: tuple[Issue, ...]
    """Parse failures and schema violations, as records."""
    counts: tuple[float, float, float] | None
    """(true positives, false positives, false negatives) over leaf values, for micro-F1 (None: not counted)."""
    how: str
    """How the fields were combined (``weighted_mean`` ...), for the reason line."""

    def __init__(
        self,
        score: float,
        sub_scores: dict[str, float] | None = None,
        details: dict[str, FieldDetail] | None = None,
        errors: dict[ErrorFlag, bool] | None = None,
        reason: str | None = None,
        repairs: tuple[str, ...] = (),
        issues: tuple[Issue, ...] = (),
        counts: tuple[float, float, float] | None = None,
        how: str = "",
    ) -> None:
        self.score = score
        self.sub_scores = sub_scores if sub_scores is not None else {}
        self.details = details if details is not None else {}
        self.errors = errors if errors is not None else no_errors()
        self.repairs = repairs
        self.issues = issues
        self.counts = counts
        self.how = how
        self.reason = reason if reason is not None else default_reason(self)

    @property
    def ok(self) -> bool:
        """True when no error flag is set."""
        return not any(self.errors.values())

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
        return (Grade, (self.score, self.sub_scores, self.details, self.errors, self.reason, self.repairs, self.issues,
                        self.counts, self.how))

    def __repr__(self) -> str:
        return f"Grade(score={self.score!r}, sub_scores={self.sub_scores!r}, reason={self.reason!r})"
