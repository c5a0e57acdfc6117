"""The structured grader's options: what a user writes for each field, checked at construction."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas import MisuseCode, json_pointer

from .._errors import GraderConfigError, pointer_token
from .._validation import ConfigModel, validate_config
from ..comparators._registry import comparator_models, comparator_options, comparators_taking, make_comparator

Aggregation = Literal["weighted_mean", "micro_f1", "all_or_nothing", "formula"]
OnSchemaViolation = Literal["per_field", "gate"]
ListMode = Literal["set", "multiset", "ordered"]
ExtraFields = Literal["penalize", "ignore"]

_NUMBER_REL_TOL = 1e-6
_STRING_MATCH_THRESHOLD = 0.8
_OBJECT_MATCH_THRESHOLD = 0.5
_MAX_DEPTH = 64  # values nested deeper than this (schema-less) are compared exactly


def _comparator_options_schema(schema: dict[str, Any]) -> None:
    """Add to :class:`FieldSpec`'s JSON Schema the comparator options, generated from each comparator's options model.

    A field's other keys are its comparator's options: those of the comparator it names, or, naming none,
    those of exactly one comparator (which is then its comparator), as :func:`_check_fields` checks them.
    """
    field_keys = list(schema["properties"])
    models = comparator_models()
    schema["properties"]["comparator"]["anyOf"][0]["enum"] = list(models)
    branches = []
    for name, model in models.items():
        own = model.model_json_schema()
        branch: dict[str, Any] = {"title": f"{name} options", "properties": {"comparator": {"enum": [name, None]},
                                                                             **own.get("properties", {})},
                                  "propertyNames": {"enum": list(dict.fromkeys([*field_keys, *own.get("properties", {})]))}}
        branch.update({k: v for k, v in own.items() if k in ("if", "then", "else", "allOf")})
        branches.append(branch)
    no_options = {"properties": {"comparator": {"type": "null"}}, "propertyNames": {"enum": field_keys}}
    schema["anyOf"] = [no_options, {"oneOf": branches}]


class FieldSpec(BaseModel):
    """Per-field overrides, in Python or in a JSON config.

    Unknown keys are comparator options (``scorer``, ``partial_credit``,
    ``abs_tol``, ``rel_tol``, ``decimal``, ``order``, ``tolerance``,
    ``case_sensitive``, ``strip_punctuation``, ``max_chars``...), checked when the
    grader is built by the comparator's options model (``FuzzyOptions`` ...), from
    which the JSON Schema of these keys is generated.

    >>> FieldSpec(comparator="fuzzy", scorer="token_set_ratio", weight=2).options
    {'scorer': 'token_set_ratio'}
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, use_attribute_docstrings=True,
                              json_schema_extra=_comparator_options_schema)

    comparator: str | None = None
    """Comparator name (``exact normalized fuzzy number date datetime enum bool math``); for
    a list field, the comparator of its elements. None: inferred from the schema (or, without
    one, from the options given: ``abs_tol`` means ``number``)."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Leaf: the fuzzy pass threshold. List: the similarity a pair needs to match."""
    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    """Weight in the weighted mean of the enclosing object (0 ignores the field)."""
    required: bool = False
    """When True, a prediction without a value for this field (while the reference
    has one) fails the whole grade: score 0, as for schema-invalid output."""
    mode: ListMode | None = None
    """Lists only: ``set`` (default; duplicates collapse), ``multiset`` or ``ordered``."""
    fields: dict[str, FieldSpec] | None = None
    """Objects and lists of objects: overrides for their own fields."""

    @property
    def options(self) -> dict[str, Any]:
        """The comparator options given alongside the known keys."""
        return dict(self.model_extra or {})


FieldsArg = Mapping[str, FieldSpec | Mapping[str, Any]]


class StructuredOptions(ConfigModel):
    """The structured grader's options, type-checked strictly (``"no"`` is not a bool).

    With ``type`` and ``schema`` added (:class:`StructuredConfig`), these are the keys of a
    ``{"type": "structured", ...}`` config.
    """

    what = "the structured grader's options"
    error_codes: ClassVar[dict[str, MisuseCode]] = {"*": "bad_option", "fields": "bad_field_option", "aggregation": "bad_aggregation"}
    error_hints: ClassVar[dict[str, str]] = {
        "fields": "known field keys: comparator, threshold, weight, required, mode, fields, plus comparator options"}

    name: str = "structured"
    """The grader's name, used in log keys (``reward/<name>/<field>``)."""
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    """Per-field overrides; dotted names reach nested fields (``"address.city"``)."""
    aggregation: Aggregation = "weighted_mean"
    """How field scores become one scalar."""
    formula: str | None = None
    """With ``aggregation="formula"``: an expression over the top-level field names."""
    on_schema_violation: OnSchemaViolation | None = None
    """Output that violates the schema: ``per_field`` (the default) grades it field by field, each field
    scoring what its comparator makes of it (0 when it cannot read it), flagged with ``schema_validation_error``;
    ``gate`` scores it 0 as a whole."""
    schema_penalty: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """With ``per_field``: the score is multiplied by ``1 - schema_penalty`` when the output violates the schema."""
    partial_credit: bool | None = None
    """The older name: True is ``on_schema_violation="per_field"``, False is ``"gate"``."""
    lenient: bool = False
    """Accept trailing commas, single quotes and Python literals (recorded in ``Grade.repairs``)."""
    repair_penalty: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """The score is multiplied by ``1 - repair_penalty`` when a repair was needed."""
    extra_fields: ExtraFields = "penalize"
    """``penalize`` counts keys that neither the schema nor the reference has as false positives; ``ignore`` drops them."""


StructuredOptions.error_hints["*"] = f"known options: {sorted(StructuredOptions.model_fields)}"


def _schema_file(value: str) -> str:
    if not Path(value).suffix:
        raise GraderConfigError(f"schema {value!r} is neither a file path nor an object", code="bad_schema")
    return value


class StructuredConfig(StructuredOptions):
    """rftkit's structured grader: the response parsed into a typed object and compared with the reference field by field."""

    what = "a structured grader config"
    error_codes: ClassVar[dict[str, MisuseCode]] = {**StructuredOptions.error_codes, "schema_": "bad_schema"}

    type: Literal["structured"]
    schema_: dict[str, Any] | Annotated[str, AfterValidator(_schema_file)] | None = Field(default=None, alias="schema")
    """The response's JSON Schema (an object), or a path to a JSON file holding one; none: graded by the reference's shape."""


def _options(values: Mapping[str, Any]) -> StructuredOptions:
    """Validate the options; the first problem raises with its JSON pointer."""
    return validate_config(StructuredOptions, dict(values))


_FIELD_KEYS = tuple(FieldSpec.model_fields)
"""The keys of a field's override that are not comparator options."""


def _did_you_mean(name: str, valid: Iterable[str], prefix: str = "") -> str:
    """``"did you mean 'prefix + x'? "`` for the valid name closest to a misspelt one, else ``""``."""
    found = difflib.get_close_matches(name, list(valid), n=1)
    return f"did you mean {prefix + found[0]!r}? " if found else ""


def _implied_comparator(options: Mapping[str, Any]) -> str | None:
    """The one comparator that takes every option in ``options``, or None."""
    found: set[str] | None = None
    for key in options:
        takers = set(comparators_taking(key))
        found = takers if found is None else found & takers
    return next(iter(found)) if found is not None and len(found) == 1 else None


def _check_fields(fields: Mapping[str, FieldSpec], path: tuple[str, ...] = ()) -> None:
    """Check every override's comparator and options now, whether or not a schema says what the field is.

    Without a schema, comparators are built while grading; a misspelt comparator or option
    would then fail every row. A name no comparator knows raises with the closest valid
    key; options given without a comparator must all belong to one (it is then the
    field's comparator wherever no schema says otherwise)."""
    for name, spec in fields.items():
        pointer = json_pointer(("fields", *path, name))
        options = spec.options
        for key in options:
            if not comparators_taking(key):
                raise GraderConfigError(
                    f"{key!r} is neither a field key nor an option of any comparator", code="bad_comparator_option",
                    pointer=f"{pointer}/{pointer_token(key)}",
                    hint=_did_you_mean(key, _FIELD_KEYS + comparator_options())
                    + f"field keys: {', '.join(_FIELD_KEYS)}; comparator options: {', '.join(comparator_options())}")
        comparator = spec.comparator
        if comparator is None and options:
            comparator = _implied_comparator(options)
            if comparator is None:
                owners = "; ".join(f"{k!r} is an option of {', '.join(map(repr, comparators_taking(k)))}" for k in options)
                raise GraderConfigError(f"no one comparator takes all of {', '.join(map(repr, options))}",
                                        code="bad_comparator_option", pointer=pointer,
                                        hint=f"no one comparator takes them all ({owners}): keep one comparator's options")
        if comparator is not None:
            check = dict(options)
            if spec.threshold is not None and "threshold" not in check and comparator in comparators_taking("threshold"):
                check["threshold"] = spec.threshold
            make_comparator(comparator, pointer=pointer, **check)
        if spec.fields:
            _check_fields(spec.fields, (*path, name))



# --------------------------------------------------------------------------- helpers


Counts = tuple[float, float, float]
"""(true positives, false positives, false negatives) over leaf values."""
