"""What every OpenAI-type grader shares: the sample protocol, config key and name checks, thresholds, error helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from schemas import SchemaError

from .._errors import GraderConfigError
from .._result import Grade, no_errors
from ._templates import MissingVariable, Sample, Template

SampleInput = Sample | str | Mapping[str, Any]
"""What a grader accepts as the model's output."""


class OpenAIGrader:
    """The base of OpenAI's grader types: they read a model sample and the dataset item.

    :meth:`grade_row` is the row-level call every grader has (adapters, the server,
    the CLI and the trainer make it); for these types it is :meth:`grade` itself.
    """

    __slots__ = ()

    needs_reference: ClassVar[bool] = False
    """Whether a row must carry a ``reference`` (no: these graders read what they need from the item)."""
    bounded_cost: ClassVar[bool] = False
    """Whether grading a row does bounded CPU work and no I/O (no: templates, sandboxes, models and URLs)."""

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        raise NotImplementedError

    def grade_row(self, sample: SampleInput, item: Mapping[str, Any]) -> Grade:
        """Grade one row: the model's sample and the dataset item (its ``reference``, if any, inside)."""
        return self.grade(sample, item)

    def field_names(self) -> list[str]:
        """The fields this grader reports on every row (none declared here; ``multi`` names its sub-graders)."""
        return []


class SampleGrader(Protocol):
    """A grader that reads a model sample and a dataset item (every OpenAI grader type)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def needs_reference(self) -> bool: ...

    @property
    def bounded_cost(self) -> bool: ...

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade: ...

    def grade_row(self, sample: SampleInput, item: Mapping[str, Any]) -> Grade: ...

    def field_names(self) -> list[str]: ...

    def config(self) -> dict[str, Any]: ...


def under_pointer(prefix: str, exc: GraderConfigError | SchemaError) -> GraderConfigError | SchemaError:
    """The same error, pointing into the enclosing config."""
    return type(exc)(exc.message, code=exc.code, pointer=prefix + exc.pointer, hint=exc.hint)


def noting_cut(grade: Grade, sample: Sample) -> Grade:
    """``grade``, with ``truncated_output_error`` raised and said in its reason when ``sample``'s output was cut
    to the per-sample bound (see :attr:`Sample.cut`)."""
    if sample.cut is None:
        return grade
    errors = dict(grade.errors)
    errors["truncated_output_error"] = True
    return Grade(grade.score, grade.sub_scores, grade.details, errors, grade.reason + sample.cut_note(), grade.repairs,
                 grade.issues, grade.counts, grade.how)


def missing_variable_grade(variable: MissingVariable, key: str) -> Grade:
    """The flagged 0 grade (``invalid_variable_error``) for a template variable of ``key`` that did not resolve."""
    errors = no_errors()
    errors["invalid_variable_error"] = True
    return Grade(0.0, {}, {}, errors, f"{key}: template variable {{{{ {variable.variable} }}}} did not resolve "
                 f"({variable.message}); scored 0")


def render_pair(input_template: Template, reference_template: Template, sample: SampleInput,
                 item: Mapping[str, Any] | None) -> tuple[str, str] | Grade:
    """Render a grader's ``input`` and ``reference`` templates; a missing variable gives the flagged 0 grade."""
    s = Sample.of(sample)
    text = input_template.render(s, item)
    if isinstance(text, MissingVariable):
        return missing_variable_grade(text, "input")
    reference = reference_template.render(s, item)
    if isinstance(reference, MissingVariable):
        return missing_variable_grade(reference, "reference")
    return text, reference






