"""OpenAI's grader types, run locally: ``string_check`` and ``multi`` (``text_similarity`` is in ``_similarity``).

Each grader is built from OpenAI's grader JSON, with OpenAI's field names, and
grades with ``grade(sample, item) -> Grade``: ``sample`` is what the model wrote
(a string or an OpenAI-style sample dict, see :class:`~graders.openai.Sample`) and
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

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from schemas import SchemaError

from .._errors import GraderConfigError, pointer_token
from .._registry import build, grader_type
from .._result import FieldDetail, Grade, no_errors
from .._validation import config_error, validate_config
from ..structured._grader import StructuredGrader, from_structured_config
from ._common import OpenAIGrader, SampleGrader, SampleInput, missing_variable_grade, under_pointer
from ._configs import DEFAULT_REFERENCE, MultiConfig, StructuredSubConfig
from ._templates import MissingVariable, Sample, Template, compile_template

# -- structured inside multi ---------------------------------------------------------------

class _StructuredItemGrader(OpenAIGrader):
    """A :class:`StructuredGrader` that takes its reference from the item through a template."""

    type: Literal["structured"] = "structured"

    def __init__(self, grader: StructuredGrader, reference: str = DEFAULT_REFERENCE) -> None:
        self.grader = grader
        self.reference = compile_template(reference) if isinstance(reference, str) else Template(reference, pointer="/reference")

    @property
    def name(self) -> str:
        return self.grader.name

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | StructuredSubConfig) -> _StructuredItemGrader:
        """Build from a structured config with an optional ``reference`` template (:class:`StructuredSubConfig`)."""
        model = config if isinstance(config, StructuredSubConfig) else validate_config(StructuredSubConfig, config)
        return cls(from_structured_config(model), model.reference)

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        s = Sample.of(sample)
        reference = self.reference.render_value(s, item)
        if isinstance(reference, MissingVariable):
            return missing_variable_grade(reference, "reference")
        return self.grader.grade(s.raw, reference)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its config, rebuilt on the other side (worker processes, Ray, TRL's async trainer)."""
        return (build_sample_grader, (self.config(),))

    def config(self) -> dict[str, Any]:
        """The structured config, with ``reference`` only when it is not the default (so it reads back on its own)."""
        out = self.grader.config()
        if self.reference.source != DEFAULT_REFERENCE:
            out["reference"] = self.reference.source
        return out


# -- multi ---------------------------------------------------------------------------------

def build_sample_grader(config: Mapping[str, Any], *, inside_multi: bool = False) -> SampleGrader:
    """Build any grader that grades ``(sample, item)``: an OpenAI type, or ``structured`` with a ``reference`` template."""
    if not isinstance(config, Mapping):
        raise GraderConfigError(f"a grader config is a JSON object, got {type(config).__name__}", code="config_not_object")
    if inside_multi:
        _check_in_multi(config)
    grader: SampleGrader = build(config, sub=True)
    return grader


def _check_in_multi(config: Mapping[str, Any]) -> None:
    """Raise ``nested_multi`` when ``config``'s type may not be a ``multi`` sub-grader (``multi`` itself)."""
    if not grader_type(config).in_multi:
        raise GraderConfigError(f"a multi grader cannot contain another {config['type']} grader", code="nested_multi",
                                pointer="/type",
                                hint="list the inner multi's sub-graders in the outer one and combine them in one formula")


class MultiGrader(OpenAIGrader):
    """OpenAI's ``multi``: several named graders combined by a formula over their scores.

    ``graders`` maps a name to a grader config; each name is a variable of
    ``calculate_output`` (``+ - * / ^``, parentheses, ``min max abs floor ceil
    exp sqrt log``; see :class:`~graders.openai.Formula`). Every sub-grader grades the
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
        prebuilt = {k: g for k, g in graders.items() if not isinstance(g, Mapping)} if isinstance(graders, Mapping) else {}
        configs = ({k: g if isinstance(g, Mapping) else g.config() for k, g in graders.items()}
                   if isinstance(graders, Mapping) else graders)
        self._setup(_validate({"type": "multi", "name": name, "graders": configs, "calculate_output": calculate_output}),
                    prebuilt)

    def _setup(self, config: MultiConfig, prebuilt: Mapping[str, SampleGrader] | None = None) -> None:
        self._name = config.name
        built: dict[str, SampleGrader] = {}
        for key, sub in config.graders.items():
            if prebuilt and key in prebuilt:
                built[key] = prebuilt[key]
                continue
            try:
                built[key] = build(sub, sub=True)
            except (GraderConfigError, SchemaError) as exc:  # what the config cannot say: a schema, a model directory
                raise under_pointer(f"/graders/{pointer_token(key)}", exc) from None
        self.graders = built
        self.calculate_output = config.formula

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | MultiConfig) -> MultiGrader:
        """Build from ``{"type": "multi", "name", "graders": {...}, "calculate_output"}`` (:class:`MultiConfig`)."""
        grader = cls.__new__(cls)
        grader._setup(config if isinstance(config, MultiConfig) else _validate(config))
        return grader

    def field_names(self) -> list[str]:
        """The sub-graders' names: each row reports a score for every one."""
        return list(self.graders)

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Grade with every sub-grader, then combine their scores with ``calculate_output``."""
        s = Sample.of(sample)
        grades: dict[str, Grade] = {}
        for key, grader in self.graders.items():
            try:
                grades[key] = grader.grade(s, item)
            except GraderConfigError as exc:  # a structured sub-grader checks some options (and its reference) while grading
                raise under_pointer(f"/graders/{pointer_token(key)}", exc) from None
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


def _validate(config: Mapping[str, Any]) -> MultiConfig:
    """``config`` as a :class:`MultiConfig`; a bad sub-grader raises the error its own type gives, under its name."""
    try:
        return MultiConfig.model_validate(config)
    except ValidationError as exc:
        error = config_error(MultiConfig, config, exc)
        graders = config.get("graders")
        parts = error.pointer.split("/")
        if len(parts) >= 3 and parts[1] == "graders" and isinstance(graders, Mapping):
            key = parts[2].replace("~1", "/").replace("~0", "~")
            if key in graders:
                raise _sub_error(graders[key], error) from None
        raise error from None


def _sub_error(sub: object, error: GraderConfigError) -> GraderConfigError | SchemaError:
    """The error of one bad sub-grader config, as validating it alone gives it, pointed into the multi."""
    prefix = "/".join(error.pointer.split("/")[:3])
    if not isinstance(sub, Mapping):
        return GraderConfigError(f"a grader config is a JSON object, got {type(sub).__name__}", code="config_not_object",
                                 pointer=prefix)
    try:
        _check_in_multi(sub)  # an unknown type raises unknown_grader_type
        validate_config(grader_type(sub).model(sub=True), sub)
    except (GraderConfigError, SchemaError) as exc:
        return under_pointer(prefix, exc)
    return error
