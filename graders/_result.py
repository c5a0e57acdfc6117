"""The one result shape every grader returns: :class:`Grade`.

``score`` is a finite float in [0, 1]; ``sub_scores`` names one float per field
(or per sub-grader); ``details`` says per field what was compared and how it
scored; ``errors`` holds OpenAI's error flags (all false on success) plus
rftkit's own; ``reason`` is one line a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
        return out


def no_errors() -> dict[str, bool]:
    """A fresh errors dict with every flag False."""
    return dict.fromkeys(ERROR_FLAGS, False)


@dataclass(slots=True)
class Grade:
    """The result of grading one response.

    >>> g = Grade(score=0.5, sub_scores={"city": 1.0, "state": 0.0}, reason="half right")
    >>> g.ok, g.to_dict()["errors"]["sample_parse_error"]
    (True, False)
    """

    score: float
    sub_scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, FieldDetail] = field(default_factory=dict)
    errors: dict[str, bool] = field(default_factory=no_errors)
    reason: str = ""
    repairs: tuple[str, ...] = ()
    """Lenient JSON repairs that were needed to read the response (penalise them if you like)."""
    issues: tuple[Issue, ...] = ()
    """Parse failures and schema violations, as records."""
    counts: tuple[float, float, float] | None = None
    """(true positives, false positives, false negatives) over leaf fields, for micro-F1."""

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
