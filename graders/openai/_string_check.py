"""OpenAI's ``string_check`` grader."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from .._result import FieldDetail, Grade
from .._validation import validate_config
from ._common import OpenAIGrader, SampleInput, noting_cut, render_pair
from ._configs import Operation, StringCheckConfig
from ._templates import Sample, compile_template

# -- string_check --------------------------------------------------------------------------


def _eq(text: str, reference: str) -> bool:
    return text == reference


def _ne(text: str, reference: str) -> bool:
    return text != reference


def _like(text: str, reference: str) -> bool:
    return reference in text


def _ilike(text: str, reference: str) -> bool:
    return reference.casefold() in text.casefold()


_OPERATIONS: dict[str, Callable[[str, str], bool]] = {"eq": _eq, "ne": _ne, "like": _like, "ilike": _ilike}
_OPERATION_WORDS = {"eq": "equals", "ne": "differs from", "like": "contains", "ilike": "contains (ignoring case)"}


class StringCheckGrader(OpenAIGrader):
    """OpenAI's ``string_check``: compare two rendered templates; score 1 or 0.

    ``eq`` and ``ne`` test case-sensitive equality and inequality; ``like`` passes
    when the input contains the reference (case-sensitive), ``ilike`` when it
    contains it ignoring case (Unicode case folding: ``"STRASSE"`` ilike
    ``"straße"``). No wildcards, no trimming: ``%`` and ``_`` are plain text and
    spaces count. An empty reference is contained in every input.

    >>> g = StringCheckGrader(name="city", input="{{ sample.output_json.city }}", reference="{{ item.city }}", operation="eq")
    >>> g.grade('{"city": "Paris"}', {"city": "Paris"}).score
    1.0
    >>> g.grade('{"city": "paris"}', {"city": "Paris"}).score
    0.0
    >>> bad = g.grade("Paris", {"city": "Paris"})
    >>> bad.score, bad.errors["invalid_variable_error"]
    (0.0, True)
    """

    type: Literal["string_check"] = "string_check"

    def __init__(self, *, name: str, input: str, reference: str, operation: Operation) -> None:
        self._setup(validate_config(StringCheckConfig, {"type": "string_check", "name": name, "input": input,
                                                        "reference": reference, "operation": operation}))

    def _setup(self, config: StringCheckConfig) -> None:
        self._name = config.name
        self.input = compile_template(config.input)
        self.reference = compile_template(config.reference)
        self.operation: Operation = config.operation
        self._test = _OPERATIONS[config.operation]

    @property
    def name(self) -> str:
        """The grader's name (its key in ``sub_rewards``)."""
        return self._name

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | StringCheckConfig) -> StringCheckGrader:
        """Build from ``{"type": "string_check", "name", "input", "reference", "operation"}`` (:class:`StringCheckConfig`)."""
        grader = cls.__new__(cls)
        grader._setup(config if isinstance(config, StringCheckConfig) else validate_config(StringCheckConfig, config))
        return grader

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """1.0 when the rendered input and reference pass the operation, else 0.0."""
        s = Sample.of(sample)
        rendered = render_pair(self.input, self.reference, s, item)
        if isinstance(rendered, Grade):
            return noting_cut(rendered, s)
        text, reference = rendered
        passed = self._test(text, reference)
        score = 1.0 if passed else 0.0
        detail = FieldDetail(f"string_check/{self.operation}", score, "compared", text, reference)
        verdict = "passes" if passed else "fails"
        return noting_cut(Grade(score, {}, {self.name: detail}, None,
                                f"{score:.0f}: {verdict} ({_short(text)} {_OPERATION_WORDS[self.operation]} {_short(reference)}?)"),
                          s)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its config, rebuilt on the other side (worker processes, Ray, TRL's async trainer)."""
        return (_rebuild, (self.config(),))

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        return {"type": "string_check", "name": self.name, "input": self.input.source, "reference": self.reference.source,
                "operation": self.operation}

    def __repr__(self) -> str:
        return f"StringCheckGrader(name={self.name!r}, operation={self.operation!r})"


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")





def _rebuild(config: dict[str, Any]) -> StringCheckGrader:
    return StringCheckGrader.from_config(config)
