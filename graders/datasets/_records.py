"""What dataset validation reports: issue records, the gold verdict, the report, and the names of the checks."""


import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import Issue

DatasetFormat = Literal["auto", "openai_rft", "prompt_reference", "trl", "verl"]
"""A dataset layout; ``auto`` detects it from the first readable row."""

Severity = Literal["error", "warning"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""Message roles the chat formats accept."""

REFERENCE_CANDIDATES = ("reference", "reference_answer", "ground_truth", "answer", "solution")
"""Columns tried, in order, for the reference answer when none is named (openai_rft and trl)."""

WARNING_CODES = frozenset({"blank_line", "duplicate_prompt", "leaked_prompt"})
"""Codes that are warnings: reported, but they fail a run only under ``strict``."""

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_EPS = 1e-9


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetIssue(Issue):
    """An :class:`Issue` found in a dataset file: where (line, pointer), what (code, message, input), how bad.

    ``pointer`` points into the row (``/messages/2/role``); ``line`` is the 1-based
    line of a JSONL file, or the 1-based row of a Parquet file.
    """

    line: int = 0
    """1-based line (JSONL) or row (Parquet) number; 0 for the file as a whole."""
    severity: Severity = "error"
    """``warning`` for duplicates, leakage and blank lines; ``error`` otherwise."""

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "severity": self.severity, "code": self.code, "pointer": self.pointer,
                "message": self.message, "input": self.input}






@dataclass(frozen=True, slots=True)
class GoldVerdict:
    """What a gold check (:class:`graders.GoldCheck`) found for one row: the reference's score, the maximum, and what fell short.

    ``short`` maps each part (a ``multi``'s sub-grader, or the grader's name) that
    scored below its own maximum to ``(score, maximum)``; the row passes when it is
    empty and ``score`` reaches ``maximum``.
    """

    score: float
    maximum: float
    short: Mapping[str, tuple[float, float]]
    reason: str

    @property
    def passed(self) -> bool:
        """True when the reference reaches the maximum, every part included."""
        return not self.short and self.score >= self.maximum - _EPS




@dataclass(slots=True)
class Report:
    """The result of :func:`validate_dataset`: a summary and every problem, sorted by line.

    >>> r = Report(path="d.jsonl", format="trl", detected=True)
    >>> r.ok(), r.exit_code(), r.to_dict()["summary"]["rows"]
    (True, 0, 0)
    """

    path: str
    format: str
    """The layout the rows were checked against."""
    detected: bool
    """True when ``format`` was detected (``format="auto"``), False when it was given."""
    reference_field: str | None = None
    """The column holding the reference answer (dotted path), when one was needed or found."""
    checks: tuple[str, ...] = ()
    """The checks that ran (``json``, ``structure``, ``schema``, ``templates``, ``gold``, ``duplicates``, ``leakage``)."""
    rows: int = 0
    """Lines (or Parquet rows) read, blank lines included."""
    rows_with_errors: int = 0
    errors: int = 0
    warnings: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Issue count per code (exact, even when records were dropped)."""
    issues: list[DatasetIssue] = field(default_factory=list)
    """Every problem (up to ``max_issues``), sorted by line."""
    dropped: int = 0
    """Issue records not kept because ``max_issues`` was reached."""
    notes: list[str] = field(default_factory=list)
    """What was not checked, and why (a gold self-check that could not run)."""

    def ok(self, strict: bool = False) -> bool:
        """True when there is no error (and, with ``strict``, no warning either)."""
        return self.errors == 0 and (not strict or self.warnings == 0)

    def exit_code(self, strict: bool = False) -> int:
        """0 when :meth:`ok`, else 1 (2, "could not run", is the CLI's answer to an exception)."""
        return 0 if self.ok(strict) else 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``summary`` and ``issues``."""
        return {
            "path": self.path, "format": self.format, "detected": self.detected, "reference_field": self.reference_field,
            "checks": list(self.checks), "notes": list(self.notes),
            "summary": {"rows": self.rows, "rows_with_errors": self.rows_with_errors, "errors": self.errors,
                        "warnings": self.warnings, "counts": dict(sorted(self.counts.items())), "dropped": self.dropped},
            "issues": [i.to_dict() for i in self.issues],
        }

    def summary(self) -> str:
        """One line: what was read, as what, and how many problems."""
        how = "detected" if self.detected else "given"
        return (f"{self.path}: {self.format} ({how}), {self.rows:,} rows, {self.rows_with_errors:,} with errors, "
                f"{self.errors:,} error(s), {self.warnings:,} warning(s)")




