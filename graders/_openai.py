"""OpenAI's grader types, run locally: ``string_check`` and ``multi`` (``text_similarity`` is in ``_similarity``).

Each grader is built from OpenAI's grader JSON, with OpenAI's field names, and
grades with ``grade(sample, item) -> Grade``: ``sample`` is what the model wrote
(a string or an OpenAI-style sample dict, see :class:`~graders.Sample`) and
``item`` is the dataset row its templates read (``{{ item.x }}``).

A bad config raises :class:`GraderConfigError` when the grader is built, with the
JSON pointer of the offending part (``/graders/name_check/operation``). A
template variable that does not resolve while grading is data: score 0 with
``invalid_variable_error``.

``structured`` (rftkit's own type) may be a ``multi`` sub-grader. There it takes
one key more than on its own, ``reference``: a template giving the reference
answer, ``"{{ item.reference }}"`` when left out. A reference template that is
exactly one variable yields the raw value, so an object in the item reaches the
structured grader as an object.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from schemas import SchemaError

from ._errors import GraderConfigError
from ._formula import Formula
from ._result import FieldDetail, Grade, no_errors
from ._structured import StructuredGrader, _from_structured_config
from ._templates import MissingVariable, Sample, Template

Operation = Literal["eq", "ne", "like", "ilike"]
"""``eq``/``ne``: case-sensitive equality/inequality; ``like``: the input contains
the reference (case-sensitive); ``ilike``: contains, ignoring case."""

SampleInput = Sample | str | Mapping[str, Any]
"""What a grader accepts as the model's output."""


class SampleGrader(Protocol):
    """A grader that reads a model sample and a dataset item (every OpenAI grader type)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade: ...

    def config(self) -> dict[str, Any]: ...


# -- config checks -------------------------------------------------------------------------


def _check_keys(config: Mapping[str, Any], kind: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Raise on a missing or unknown key (pointers are relative to this grader's config)."""
    known = ("type", *required, *optional)
    for key in config:
        if key not in known:
            raise GraderConfigError(f"unknown key {key!r} in a {kind} grader config", code="unknown_key", pointer=f"/{key}",
                                    hint=f"known keys: {sorted(known)}")
    for key in required:
        if key not in config:
            raise GraderConfigError(f"a {kind} grader config needs {key!r}", code="missing_key", pointer=f"/{key}")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise GraderConfigError(f"name must be a non-empty string, got {name!r}", code="wrong_type", pointer="/name")
    return name


def check_threshold(value: object) -> float | None:
    """A config's optional ``pass_threshold``: None, or a finite number (the score at or above which a grade passes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GraderConfigError(f"pass_threshold must be a finite number, got {value!r}", code="wrong_type",
                                pointer="/pass_threshold", hint="a score in [0, 1], e.g. 0.8")
    return float(value)


def _under(prefix: str, exc: GraderConfigError | SchemaError) -> GraderConfigError | SchemaError:
    """The same error, pointing into the enclosing config."""
    return type(exc)(exc.message, code=exc.code, pointer=prefix + exc.pointer, hint=exc.hint)


def unknown_type_error(kind: object, implemented: list[str]) -> GraderConfigError:
    """The error for a config whose ``type`` names no grader here: one not built yet, or no grader at all."""
    if kind in NOT_YET:
        return GraderConfigError(f"grader type {kind!r} is not implemented in rftkit yet", code="unsupported_grader_type",
                                 pointer="/type", hint=f"implemented: {sorted(implemented)}")
    return GraderConfigError(f"unknown grader type {kind!r}", code="unknown_grader_type", pointer="/type",
                             hint=f"supported types: {sorted(implemented)}")


def noting_cut(grade: Grade, sample: Sample) -> Grade:
    """``grade``, with ``truncated_output_error`` raised and said in its reason when ``sample``'s output was cut
    to the per-sample bound (see :attr:`Sample.cut`)."""
    if sample.cut is None:
        return grade
    errors = dict(grade.errors)
    errors["truncated_output_error"] = True
    return Grade(grade.score, grade.sub_scores, grade.details, errors, grade.reason + sample.cut_note(), grade.repairs,
                 grade.issues, grade.counts, grade.how)


def _missing(variable: MissingVariable, key: str) -> Grade:
    errors = no_errors()
    errors["invalid_variable_error"] = True
    return Grade(0.0, {}, {}, errors, f"{key}: template variable {{{{ {variable.variable} }}}} did not resolve "
                 f"({variable.message}); scored 0")


def _render_pair(input_template: Template, reference_template: Template, sample: SampleInput,
                 item: Mapping[str, Any] | None) -> tuple[str, str] | Grade:
    """Render a grader's ``input`` and ``reference`` templates; a missing variable gives the flagged 0 grade."""
    s = Sample.of(sample)
    text = input_template.render(s, item)
    if isinstance(text, MissingVariable):
        return _missing(text, "input")
    reference = reference_template.render(s, item)
    if isinstance(reference, MissingVariable):
        return _missing(reference, "reference")
    return text, reference


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


class StringCheckGrader:
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
        self._name = _check_name(name)
        self.input = Template(input, pointer="/input")
        self.reference = Template(reference, pointer="/reference")
        if operation not in _OPERATIONS:
            raise GraderConfigError(f"operation must be one of {list(_OPERATIONS)}, got {operation!r}", code="bad_value",
                                    pointer="/operation", hint="eq, ne, like (contains) or ilike (contains, ignoring case)")
        self.operation: Operation = operation
        self._test = _OPERATIONS[operation]

    @property
    def name(self) -> str:
        """The grader's name (its key in ``sub_rewards``)."""
        return self._name

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StringCheckGrader:
        """Build from ``{"type": "string_check", "name", "input", "reference", "operation"}``."""
        _check_keys(config, "string_check", ("name", "input", "reference", "operation"))
        return cls(name=config["name"], input=config["input"], reference=config["reference"], operation=config["operation"])

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """1.0 when the rendered input and reference pass the operation, else 0.0."""
        s = Sample.of(sample)
        rendered = _render_pair(self.input, self.reference, s, item)
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
        return (build_sample_grader, (self.config(),))

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        return {"type": "string_check", "name": self.name, "input": self.input.source, "reference": self.reference.source,
                "operation": self.operation}

    def __repr__(self) -> str:
        return f"StringCheckGrader(name={self.name!r}, operation={self.operation!r})"


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# -- structured inside multi ---------------------------------------------------------------

_DEFAULT_REFERENCE = "{{ item.reference }}"


class _StructuredItemGrader:
    """A :class:`StructuredGrader` that takes its reference from the item through a template."""

    type: Literal["structured"] = "structured"

    def __init__(self, grader: StructuredGrader, reference: str = _DEFAULT_REFERENCE) -> None:
        self.grader = grader
        self.reference = Template(reference, pointer="/reference")

    @property
    def name(self) -> str:
        return self.grader.name

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _StructuredItemGrader:
        reference = config.get("reference", _DEFAULT_REFERENCE)
        own = {k: v for k, v in config.items() if k != "reference"}
        return cls(_from_structured_config(own), reference)

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        s = Sample.of(sample)
        reference = self.reference.render_value(s, item)
        if isinstance(reference, MissingVariable):
            return _missing(reference, "reference")
        return self.grader.grade(s.raw, reference)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its config, rebuilt on the other side (worker processes, Ray, TRL's async trainer)."""
        return (build_sample_grader, (self.config(),))

    def config(self) -> dict[str, Any]:
        """The structured config, with ``reference`` only when it is not the default (so it reads back on its own)."""
        out = self.grader.config()
        if self.reference.source != _DEFAULT_REFERENCE:
            out["reference"] = self.reference.source
        return out


# -- multi ---------------------------------------------------------------------------------

def _text_similarity(config: Mapping[str, Any]) -> SampleGrader:
    from ._similarity import TextSimilarityGrader  # here, not at the top: _similarity builds on this module's helpers

    return TextSimilarityGrader.from_config(config)


_LAZY: dict[str, tuple[str, str]] = {
    "python": ("_python_grader", "PythonGrader"),
    "score_model": ("_model_grader", "ScoreModelGrader"),
    "label_model": ("_model_grader", "LabelModelGrader"),
    "endpoint": ("_endpoint_grader", "EndpointGrader"),
}
"""Grader types whose module is imported on first use (they bring subprocess, HTTP or model code)."""


def lazy_builder(kind: str) -> Callable[[Mapping[str, Any]], SampleGrader] | None:
    """The ``from_config`` of a lazily imported grader type, or None when ``kind`` is not one (or is not built yet)."""
    if kind not in _LAZY:
        return None
    module, cls = _LAZY[kind]
    try:
        mod = importlib.import_module(f"graders.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"graders.{module}":
            raise
        return None
    built: Callable[[Mapping[str, Any]], SampleGrader] = getattr(mod, cls).from_config
    return built


_SUB_BUILDERS: dict[str, Callable[[Mapping[str, Any]], SampleGrader]] = {
    "string_check": StringCheckGrader.from_config,
    "text_similarity": _text_similarity,
    "structured": _StructuredItemGrader.from_config,
}
NOT_YET = tuple(_LAZY)
"""OpenAI grader types whose module may be missing (``unsupported_grader_type`` then)."""


def build_sample_grader(config: Mapping[str, Any], *, inside_multi: bool = False) -> SampleGrader:
    """Build any grader that grades ``(sample, item)``: an OpenAI type, or ``structured`` with a ``reference`` template."""
    if not isinstance(config, Mapping):
        raise GraderConfigError(f"a grader config is a JSON object, got {type(config).__name__}", code="config_not_object")
    kind = config.get("type")
    if kind == "multi":
        if inside_multi:
            raise GraderConfigError("a multi grader cannot contain another multi grader", code="nested_multi", pointer="/type",
                                    hint="list the inner multi's sub-graders in the outer one and combine them in one formula")
        return MultiGrader.from_config(config)
    builder = (_SUB_BUILDERS.get(kind) or lazy_builder(kind)) if isinstance(kind, str) else None
    if builder is None:
        raise unknown_type_error(kind, [*_SUB_BUILDERS, "multi", *(k for k in _LAZY if lazy_builder(k))])
    return builder(config)


class MultiGrader:
    """OpenAI's ``multi``: several named graders combined by a formula over their scores.

    ``graders`` maps a name to a grader config; each name is a variable of
    ``calculate_output`` (``+ - * / ^``, parentheses, ``min max abs floor ceil
    exp sqrt log``; see :class:`~graders.Formula`). Every sub-grader grades the
    same sample and item; one that fails (say an unresolved template) scores 0,
    its error flags are raised on the multi's grade too, and the formula still
    runs. A formula that hits a math error (``log(0)``, a division by zero) scores
    0 with ``formula_parse_error``; a result outside [0, 1] is clamped.

    >>> g = MultiGrader(name="contact", calculate_output="0.5 * name + 0.5 * email", graders={
    ...     "name": {"type": "string_check", "name": "name", "operation": "eq",
    ...              "input": "{{ sample.output_json.name }}", "reference": "{{ item.name }}"},
    ...     "email": {"type": "string_check", "name": "email", "operation": "ilike",
    ...               "input": "{{ sample.output_json.email }}", "reference": "{{ item.email }}"}})
    >>> r = g.grade('{"name": "Ada", "email": "ADA@example.com"}', {"name": "Ada L.", "email": "ada@example.com"})
    >>> r.score, r.sub_scores
    (0.5, {'name': 0.0, 'email': 1.0})
    """

    type: Literal["multi"] = "multi"

    def __init__(self, *, name: str, graders: Mapping[str, Mapping[str, Any] | SampleGrader], calculate_output: str) -> None:
        self._name = _check_name(name)
        if not isinstance(graders, Mapping) or not graders:
            raise GraderConfigError("graders must be a non-empty object of named grader configs", code="wrong_type",
                                    pointer="/graders", hint='{"graders": {"exact": {"type": "string_check", ...}}}')
        built: dict[str, SampleGrader] = {}
        for key, sub in graders.items():
            if not isinstance(sub, Mapping):
                built[key] = sub
                continue
            try:
                built[key] = build_sample_grader(sub, inside_multi=True)
            except (GraderConfigError, SchemaError) as exc:
                raise _under(f"/graders/{_escape(key)}", exc) from None
        self.graders = built
        if not isinstance(calculate_output, str):
            raise GraderConfigError(f"calculate_output must be a formula string, got {type(calculate_output).__name__}",
                                    code="wrong_type", pointer="/calculate_output")
        self.calculate_output = Formula(calculate_output, allowed_names=frozenset(built), pointer="/calculate_output")

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiGrader:
        """Build from ``{"type": "multi", "name", "graders": {...}, "calculate_output"}``."""
        _check_keys(config, "multi", ("name", "graders", "calculate_output"))
        return cls(name=config["name"], graders=config["graders"], calculate_output=config["calculate_output"])

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Grade with every sub-grader, then combine their scores with ``calculate_output``."""
        s = Sample.of(sample)
        grades: dict[str, Grade] = {}
        for key, grader in self.graders.items():
            try:
                grades[key] = grader.grade(s, item)
            except GraderConfigError as exc:  # a structured sub-grader checks some options (and its reference) while grading
                raise _under(f"/graders/{_escape(key)}", exc) from None
        scores = {key: g.score for key, g in grades.items()}
        details = {key: FieldDetail(grader.type, g.score, "compared",
                                    fields=g.details or None)
                   for (key, grader), g in zip(self.graders.items(), grades.values())}
        errors = no_errors()
        flagged = [key for key, g in grades.items() if not g.ok]
        for key in flagged:
            for flag, raised in grades[key].errors.items():
                errors[flag] = errors[flag] or raised
        value = self.calculate_output(scores)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
        tail = "".join(f"; {k}: {grades[k].reason}" for k in flagged)
        if not math.isfinite(value):
            errors["formula_parse_error"] = True
            return Grade(0.0, scores, details, errors, f"{self.calculate_output.source} gave {value} ({parts}); scored 0{tail}")
        score = min(max(value, 0.0), 1.0)
        clamped = f", clamped to {score:g}" if score != value else ""
        return Grade(score, scores, details, errors if flagged else None,
                     f"{score:.3f} = {self.calculate_output.source} ({parts}{clamped}){tail}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its config, rebuilt on the other side (worker processes, Ray, TRL's async trainer)."""
        return (build_sample_grader, (self.config(),))

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        return {"type": "multi", "name": self.name, "graders": {k: g.config() for k, g in self.graders.items()},
                "calculate_output": self.calculate_output.source}

    def __repr__(self) -> str:
        return f"MultiGrader(name={self.name!r}, graders={list(self.graders)}, calculate_output={self.calculate_output.source!r})"


def _escape(key: str) -> str:
    """A key as one JSON-pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")

