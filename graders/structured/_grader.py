"""The structured grader: parse a response into a typed object, compare it with a
reference field by field, and combine the comparisons into one scalar.

Pipeline (each stage a pure function with its own tests)::

    response -> parse_response (extract, decode, validate)  graders.structured
             -> compile-time plan of the schema             _Planner (here)
             -> compare field by field                      _Leaf/_List/_Object.grade
             -> combine                                     Aggregation
             -> Grade

**The fast path.** For the common shape (an object of leaves and lists of
leaves, a bare JSON object, every field filled on both sides) the same stages run
in one function generated per schema at construction (``_fastpath.compile_fast_path``),
with the same comparators and list pairing, the same counts and the same grade;
each field's :class:`FieldDetail` is built when ``Grade.details`` is first read
(:class:`graders._lazy_grade.LazyGrade`; a response known cheaply to fail is a
:class:`~graders._lazy_grade.FailedGrade`, explained by the full stages when read).
Anything else takes the generic walk. ``tests/graders/test_fastpath.py`` checks
that both give identical grades.

**Comparators are inferred from the schema** when no option is given: free text
-> ``fuzzy``; an identifier (a string with a ``pattern``, or ``format`` ``uuid``,
``email``, ``hostname``, ``ipv4``/``ipv6``) -> ``normalized``, and ``format``
``uri`` and the like -> ``exact``; enum -> ``enum``; boolean -> ``bool``; integer
-> ``exact``; number -> ``number`` (relative tolerance 1e-6); ``format: date`` ->
``date``; ``format: date-time`` -> ``datetime`` (instants); list -> set F1 with
its elements' comparator (strings: fuzzy, paired at similarity >= 0.8); list of
objects -> optimal assignment on the recursive object score (paired at >= 0.5);
object -> recursion. Without a schema the same rules apply to the reference
value's JSON type, and a field's options given without a comparator name the one
comparator that takes them. Every override is checked at construction: a field
name the schema lacks, an unknown comparator or option raises with the closest
valid name.

**Empty values and missing fields** (one policy, everywhere): ``null``, a
missing key, ``""`` (or only whitespace), ``[]`` and ``{}`` all mean *no value*,
and so does an object or list whose values all mean no value, at any depth.

============================  ==========  ======================================
reference / prediction        score       counts (micro-F1)
============================  ==========  ======================================
no value / no value           1 (match)   nothing
value / no value              0           its leaves are false negatives (recall)
no value / value              0           its leaves are false positives (precision)
value / value                 comparator  tp += s, fp += 1 - s, fn += 1 - s
============================  ==========  ======================================

A key the prediction has that is neither in the schema nor in the reference is
an *extra field*: it scores 0 and costs precision (``extra_fields="ignore"``
drops it). Every field the schema declares is scored, so a field both sides
leave empty counts as a match in the weighted mean; use ``micro_f1`` if
agreement on absence should earn nothing.

**Aggregation** (a ``Literal``; each option its own function):
``weighted_mean`` of the top-level field scores (default), ``micro_f1`` over all
leaf values (2TP / (2TP + FP + FN)), ``all_or_nothing`` (1 only if every weighted
field scores 1), or a ``formula`` over the field names.

Output that does not parse scores 0 with ``sample_parse_error`` (truncated
output: ``truncated_output_error``). Schema-invalid output is graded field by
field (``on_schema_violation="per_field"``, the default: RL needs the gradient of
the other fields), flagged ``schema_validation_error``, its violations in
``Grade.issues`` and noted in their fields' details, its score optionally cut by
``schema_penalty``; ``on_schema_violation="gate"`` scores it 0. An output that is
not an object where one belongs scores 0, every field ``wrong_type``.

**References** are JSON objects (or arrays), their JSON text, pydantic instances or
``model_dump()`` output (dates, decimals, enums, UUIDs are converted); anything
else raises ``bad_reference`` (:func:`_plain_reference`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, ClassVar, Literal

from schemas import Issue, Schema, SchemaError, SchemaSource, UserError

from .._errors import ErrorFlag, GraderConfigError
from .._lazy_grade import DetailsBuilder, FailedGrade, LazyGrade
from .._result import FieldDetail, Grade, no_errors
from .._validation import validate_config
from ..comparators._math import math as _math_comparator
from ..openai._formula import Formula
from ._decode import _NOT_BARE, _UNDECODED, _strict_value, max_output_chars, parse_response, validate_value
from ._fastpath import compile_fast_path
from ._nodes import _Any, _Ctx, _is_empty, _leaf_count, _List, _Node, _Object
from ._options import (
    Aggregation,
    Counts,
    ExtraFields,
    FieldsArg,
    FieldSpec,
    OnSchemaViolation,
    StructuredConfig,
    StructuredOptions,
    _check_fields,
    _options,
)
from ._planner import _Planner
from ._references import _REFERENCE_HINT, _json_kind, _note_issues, _plain_reference, _valid

_STATUS_FLAGS: dict[str, ErrorFlag] = {"truncated": "truncated_output_error", "schema_invalid": "schema_validation_error"}
"""The error flag of a failed parse status (any other: ``sample_parse_error``)."""

# --------------------------------------------------------------------------- aggregation




def _weighted_mean(root_score: float, sub_scores: Mapping[str, float], counts: Counts) -> float:
    return root_score


def _micro_f1(root_score: float, sub_scores: Mapping[str, float], counts: Counts) -> float:
    tp, fp, fn = counts
    denominator = 2.0 * tp + fp + fn
    return 1.0 if denominator == 0.0 else 2.0 * tp / denominator


def _all_or_nothing(root_score: float, sub_scores: Mapping[str, float], counts: Counts) -> float:
    return 1.0 if root_score >= 1.0 - 1e-9 else 0.0


_AGGREGATIONS: dict[str, Callable[[float, Mapping[str, float], Counts], float]] = {
    "weighted_mean": _weighted_mean,
    "micro_f1": _micro_f1,
    "all_or_nothing": _all_or_nothing,
}


def _expand_dotted(fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
    """Turn ``{"address.city": spec}`` into ``{"address": FieldSpec(fields={"city": spec})}``."""
    plain = {k: v for k, v in fields.items() if "." not in k}
    for dotted, spec in fields.items():
        if "." not in dotted:
            continue
        head, rest = dotted.split(".", 1)
        parent = plain.get(head, FieldSpec())
        children = dict(parent.fields or {})
        children.update(_expand_dotted({rest: spec}))
        plain[head] = parent.model_copy(update={"fields": children})
    return plain


# --------------------------------------------------------------------------- the grader


class StructuredGrader:
    """Grade a model's structured answer against a reference, field by field.

    ``StructuredGrader(schema=Profile)`` works with no options: comparators are
    inferred from the schema. Every option is checked here, at construction.

    >>> from pydantic import BaseModel
    >>> class Profile(BaseModel):
    ...     university: str
    ...     programming_languages: list[str]
    ...     city: str
    ...     state: str
    >>> grader = StructuredGrader(schema=Profile)
    >>> ref = {"university": "University of California Berkeley",
    ...        "programming_languages": ["python", "c++", "java"],
    ...        "city": "Los Angeles", "state": "California"}
    >>> out = '{"university": "University of California Berkeley", "programming_languages": ["python", "java", "rust"], "city": "Los Angeles", "state": "California"}'
    >>> g = grader.grade(out, ref)
    >>> round(g.sub_scores["programming_languages"], 4), round(g.score, 4)
    (0.6667, 0.9167)
    >>> d = g.details["programming_languages"]
    >>> d.precision == d.recall == d.f1 == 2 / 3, d.missing, d.extra
    (True, ['c++'], ['rust'])
    """

    type: Literal["structured"] = "structured"
    """The config type name (rftkit's own, next to OpenAI's)."""

    def __init__(
        self,
        schema: SchemaSource | None = None,
        *,
        fields: FieldsArg | None = None,
        aggregation: Aggregation = "weighted_mean",
        formula: str | None = None,
        on_schema_violation: OnSchemaViolation | None = None,
        schema_penalty: float = 0.0,
        partial_credit: bool | None = None,
        lenient: bool = False,
        repair_penalty: float = 0.0,
        extra_fields: ExtraFields = "penalize",
        name: str = "structured",
    ) -> None:
        """
        Args:
            schema: a pydantic model, JSON Schema dict or file, or OpenAI ``response_format``; None grades by the reference's shape.
            fields: per-field overrides (``FieldSpec`` or dicts); dotted names reach nested fields (``"address.city"``).
            aggregation: how field scores become one scalar; ``formula`` needs ``formula=``.
            formula: an expression over top-level field names, e.g. ``"0.5*city + 0.5*state"``.
            on_schema_violation: ``per_field`` (default): output that violates the schema is graded field by field,
                flagged ``schema_validation_error``; ``gate``: it scores 0.
            schema_penalty: with ``per_field``, the score is multiplied by ``1 - schema_penalty`` on a violation.
            partial_credit: the older name of ``on_schema_violation``: True is ``per_field``, False is ``gate``.
            lenient: accept trailing commas, single quotes and Python literals (recorded in ``Grade.repairs``).
            repair_penalty: the score is multiplied by ``1 - repair_penalty`` when a repair was needed.
            extra_fields: ``penalize`` (default) counts keys the reference lacks as false positives; ``ignore`` drops them.
            name: the grader's name, used in log keys (``reward/<name>/<field>``).
        """
        opts = _options({"fields": dict(fields) if isinstance(fields, Mapping) else (fields if fields is not None else {}), "aggregation": aggregation, "formula": formula,
                         "on_schema_violation": on_schema_violation, "schema_penalty": schema_penalty,
                         "partial_credit": partial_credit, "lenient": lenient, "repair_penalty": repair_penalty,
                         "extra_fields": extra_fields, "name": name})
        if opts.partial_credit is not None and opts.on_schema_violation is not None and \
                opts.partial_credit != (opts.on_schema_violation == "per_field"):
            raise GraderConfigError(f"partial_credit={opts.partial_credit} contradicts on_schema_violation="
                                    f"{opts.on_schema_violation!r}", code="bad_option", pointer="/partial_credit",
                                    hint="partial_credit is the older name of on_schema_violation: give only on_schema_violation")
        if (opts.aggregation == "formula") != (opts.formula is not None):
            raise GraderConfigError("aggregation 'formula' and the formula option go together", code="bad_aggregation",
                                    pointer="/formula", hint='pass aggregation="formula", formula="0.5*a + 0.5*b"')
        self.schema: Schema | None = Schema.load(schema) if schema is not None else None
        self.fields = _expand_dotted(opts.fields)
        _check_fields(self.fields)
        self.aggregation: Aggregation = opts.aggregation
        self.on_schema_violation: OnSchemaViolation = opts.on_schema_violation or (
            "gate" if opts.partial_credit is False else "per_field")
        self.schema_penalty = opts.schema_penalty
        self.partial_credit = self.on_schema_violation == "per_field"
        """True when schema-invalid output is graded field by field (``on_schema_violation="per_field"``)."""
        self.lenient = opts.lenient
        self.repair_penalty = opts.repair_penalty
        self.extra_fields: ExtraFields = opts.extra_fields
        self.name = opts.name
        root_schema = self.schema.json_schema if self.schema is not None else None
        planner = _Planner(self.schema, self.extra_fields)
        root_spec = FieldSpec(fields=self.fields) if self.fields else None
        self._root = planner.node(root_schema, root_spec, "", ())
        if root_schema is None and not isinstance(self._root, _Any):
            raise AssertionError("schema-less grading must infer at grade time")
        if isinstance(self._root, _Object) and self._root.fields and self._root._weights == 0:
            raise GraderConfigError("every field has weight 0, so no score could ever be earned", code="bad_field_option",
                                    pointer="/fields", hint="give at least one field a positive weight")
        self.formula: Formula | None = None
        if formula is not None:
            declared = frozenset(self._root.fields) if isinstance(self._root, _Object) else None
            self.formula = Formula(formula, allowed_names=declared, pointer="/formula")
        self._combine = _AGGREGATIONS.get(self.aggregation)
        self._weights = self._root._weights if isinstance(self._root, _Object) else 0.0
        inline = self._weights if self.aggregation == "weighted_mean" and self._weights > 0 else None
        fast = compile_fast_path(self._root, self.schema, penalize=self.extra_fields == "penalize",
                                 finish=self._finish_flat, weighted_mean=inline)
        self._flat: Callable[[Any, Any], Grade | None] | None = fast.compare if fast is not None else None
        """The fast path (:func:`compile_fast_path`), or None (tests set both to None to compare with the generic walk)."""
        self._flat_text: Callable[[str, Any], Any] | None = fast.grade_text if fast is not None else None
        """The fast path from the response's text, or None."""
        self._flat_source = fast.source if fast is not None else ""
        self._flat_build: DetailsBuilder | None = fast.build if fast is not None else None
        self._flat_validates = fast is not None and fast.validates
        """True when the fast path checks the schema itself (its checks are the schema's), so grade() skips validation before it."""
        self._bounded = fast is not None and all(
            (leaf is None or (leaf is not _math_comparator and not getattr(leaf, "slow_on_long_texts", False)))
            and (lst is None or getattr(lst.element, "key", None) is not None)
            for _, _, _, leaf, lst in fast.plan)
        """True when a grade costs about linear time in the response's size: the flat fast path, no ``math`` leaf
        (sympy can take seconds), no ``partial_ratio``/``WRatio`` fuzzy leaf, and lists matched by key only (no
        pairwise similarity matrix). ``rftkit serve`` grades such small requests on its event loop; any other goes
        to a grading thread under the deadline."""

    # -- grading -----------------------------------------------------------------------

    needs_reference: ClassVar[bool] = True
    """Whether a row must carry a ``reference``: yes, the answer each response is compared with."""

    @property
    def bounded_cost(self) -> bool:
        """Whether grading a row does bounded CPU work and no I/O: a flat plan with no ``math`` field and lists
        matched by key (the server grades small requests of such a grader on its event loop)."""
        return self._bounded

    def field_names(self) -> list[str]:
        """The fields reported on every row: the schema's top-level properties (none without a schema, where the
        reference's fields, which may differ from row to row, are reported)."""
        return list(self._root.fields) if isinstance(self._root, _Object) else []

    def grade_row(self, sample: str | Mapping[str, Any], item: Mapping[str, Any]) -> Grade:
        """Grade one row: the model's sample and the dataset item, whose ``reference`` is the answer to compare with.

        The row-level call every grader has (adapters, the server, the CLI and the
        trainer make it); :meth:`grade` is the typed call.

        >>> StructuredGrader().grade_row('{"a": 1}', {"reference": {"a": 1}, "id": 7}).score
        1.0
        """
        if "reference" not in item:
            raise UserError("the row has no 'reference' for the structured grader to compare with", code="missing_reference",
                            pointer="/reference", hint="put the reference answer in the item's 'reference'")
        return self.grade(sample, item["reference"])

    def grade(self, response: str | Mapping[str, Any], reference: Any, *, finish_reason: str | None = None) -> Grade:
        """Grade one response (a string or an OpenAI-style sample dict) against its reference.

        Never raises on a bad response: it scores 0 with an error flag and a reason.
        A reference given as a JSON string is decoded first (the last few hundred
        decoded are kept: a group of samples shares one reference, so treat a
        grade's reference values as read-only).
        """
        if type(reference) is not dict:  # JSON text, a pydantic instance, a list; or what cannot be a reference (raises)
            reference = self._reference(reference)
        if type(response) is not str or finish_reason == "length" or len(response) > max_output_chars():  # over the bound: truncated
            return self._full(response, reference, finish_reason)
        # The hot path: a bare JSON object, valid for the schema (which the fast path may check itself).
        flat_text = self._flat_text
        got = flat_text(response, reference) if flat_text is not None else _NOT_BARE
        walk: Callable[[Any, Any, tuple[str, ...], tuple[Issue, ...]], Grade]
        if type(got) is LazyGrade:  # the fast path's grade
            return got
        if got is None:  # a formula that gave no finite score: the full stages report it
            return self._full(response, reference, finish_reason)
        if got is not _NOT_BARE:  # a bare object the generated function left to the generic walk
            valid = not self._flat_validates or self.schema is None or _valid(self.schema, got)
            walk = self._walk
        else:  # fenced or wrapped in prose, not JSON at all, or not for the generated function
            got = _strict_value(response, lenient=self.lenient)
            if got is _UNDECODED:  # parse_response fails: the full stages say how when the grade is read
                return FailedGrade(partial(self._full, response, reference, finish_reason))
            if got is _NOT_BARE:
                return self._full(response, reference, finish_reason)
            valid = self.schema is None or _valid(self.schema, got)
            walk = self.compare
        if valid:
            return walk(got, reference, (), ())
        if valid is False and self.schema is not None:
            if self.on_schema_violation == "gate":  # 0: the full stages list the issues when they are read
                return FailedGrade(partial(self._full, response, reference, finish_reason))
            # Per field: the issues the full stages would list (the value is the one they find, strictly decoded).
            return self._walk(got, reference, (), validate_value(got, self.schema))
        return self._full(response, reference, finish_reason)

    def _full(self, response: str | Mapping[str, Any], reference: Any, finish_reason: str | None) -> Grade:
        """:meth:`grade` by the full stages: extract, decode and validate with every reason and issue, then compare."""
        parsed = parse_response(response, self.schema, lenient=self.lenient, finish_reason=finish_reason)
        if parsed.status == "ok":
            return self.compare(parsed.value, reference, parsed.repairs)
        if parsed.status != "schema_invalid" or self.on_schema_violation == "gate":
            errors = no_errors()
            errors[_STATUS_FLAGS.get(parsed.status, "sample_parse_error")] = True
            reason = parsed.reason if parsed.status != "schema_invalid" else (
                f"output violates the schema ({len(parsed.issues)} issue(s); first: {parsed.issues[0].pointer or '/'} "
                f"{parsed.issues[0].message}); gated to 0")
            return Grade(0.0, {}, {}, errors, reason, parsed.repairs, parsed.issues)
        return self.compare(parsed.value, reference, parsed.repairs, parsed.issues)

    def compare(self, prediction: Any, reference: Any, repairs: tuple[str, ...] = (), issues: tuple[Issue, ...] = ()) -> Grade:
        """Compare an already-decoded prediction with the reference (the compare + combine stages)."""
        if self._flat is not None and not repairs and not issues:
            fast = self._flat(prediction, reference)
            if fast is not None:
                return fast
        return self._walk(prediction, reference, repairs, issues)

    def _walk(self, prediction: Any, reference: Any, repairs: tuple[str, ...], issues: tuple[Issue, ...]) -> Grade:
        """The compare and combine stages by the generic walk of the compiled schema."""
        reference = self._reference(reference)
        if type(reference) is dict and not isinstance(prediction, dict) and isinstance(self._root, (_Object, _Any)):
            return self._wrong_root(prediction, reference, repairs, issues)
        ctx = _Ctx()
        root_score, root_detail = self._root.grade(prediction, reference, ctx, 0)
        details = root_detail.fields if root_detail.fields is not None else {"": root_detail}
        sub_scores = {name: d.score for name, d in details.items()}
        if self.formula is not None:
            unknown = [n for n in self.formula.names if n not in sub_scores]
            if unknown:  # only possible without a schema: the names are checked against it otherwise
                flags = no_errors()
                flags["invalid_variable_error"] = True
                return Grade(0.0, sub_scores, details, flags, f"formula names {sorted(unknown)}, which this response and "
                             "reference do not have; scored 0", repairs, issues, (ctx.tp, ctx.fp, ctx.fn))
            score = self.formula(sub_scores)
        else:
            assert self._combine is not None
            score = self._combine(root_score, sub_scores, (ctx.tp, ctx.fp, ctx.fn))
        errors: dict[ErrorFlag, bool] | None = None
        if issues:
            errors = no_errors()
            errors["schema_validation_error"] = True
        if not math.isfinite(score):
            errors = errors or no_errors()
            errors["formula_parse_error"] = True
            return Grade(0.0, sub_scores, details, errors, f"formula {self.formula!r} gave {score}; scored 0",
                         repairs, issues, (ctx.tp, ctx.fp, ctx.fn))
        if score > 1.0:
            score = 1.0
        elif score < 0.0:
            score = 0.0
        if ctx.required_missed:
            return Grade(0.0, sub_scores, details, errors, f"required field(s) {', '.join(ctx.required_missed)} missing; scored 0",
                         repairs, issues, (ctx.tp, ctx.fp, ctx.fn), self.aggregation)
        if repairs and self.repair_penalty:
            score *= 1.0 - self.repair_penalty
        if issues:
            _note_issues(details, issues)
            if self.schema_penalty:
                score *= 1.0 - self.schema_penalty
        return LazyGrade.unformatted(score, sub_scores, details, errors, repairs, issues, (ctx.tp, ctx.fp, ctx.fn), self.aggregation)

    def _wrong_root(self, prediction: Any, reference: dict[str, Any], repairs: tuple[str, ...], issues: tuple[Issue, ...]) -> Grade:
        """An output that is not an object where one belongs (a JSON array, say): every field scores 0, flagged."""
        root = self._root
        nodes: dict[str, _Node] = dict(root.fields) if isinstance(root, _Object) else {}
        names = list(nodes) + [k for k in reference if k not in nodes]
        status: Literal["missing", "wrong_type"] = "missing" if _is_empty(prediction) else "wrong_type"
        details = {name: FieldDetail(nodes[name].label if name in nodes else "inferred", 0.0, status, None, reference.get(name))
                   for name in names}
        errors = no_errors()
        errors["schema_validation_error"] = True
        kind = "JSON array" if isinstance(prediction, list) else "null" if prediction is None else type(prediction).__name__
        return Grade(0.0, dict.fromkeys(names, 0.0), details, errors,
                     f"the output is a {kind} where an object belongs; every field scored 0", repairs, issues,
                     (0.0, float(_leaf_count(prediction)), float(_leaf_count(reference))), self.aggregation)

    def _reference(self, reference: Any) -> Any:
        """The reference as plain JSON values (see :func:`_plain_reference`); one of the wrong shape for the schema raises."""
        reference = _plain_reference(reference)
        root = self._root
        if isinstance(root, _Object) and type(reference) is not dict:
            raise GraderConfigError(f"the reference is a {_json_kind(reference)}, but the schema describes an object",
                                    code="bad_reference", pointer="", hint=_REFERENCE_HINT)
        if isinstance(root, _List) and type(reference) is not list:
            raise GraderConfigError(f"the reference is a {_json_kind(reference)}, but the schema describes an array",
                                    code="bad_reference", pointer="", hint=_REFERENCE_HINT)
        return reference

    def _finish_flat(self, total: float, sub_scores: dict[str, float], values: tuple[Any, ...], counts: Counts) -> Grade | None:
        """The combine stage of the fast path (as :meth:`compare` does it); None for a non-finite formula."""
        weights = self._weights
        root_score = total / weights if weights > 0 else 1.0
        if self.formula is not None:
            score = self.formula(sub_scores)  # its names are the declared fields, all in sub_scores
            if not math.isfinite(score):
                return None  # the generic path reports it
        else:
            assert self._combine is not None
            score = self._combine(root_score, sub_scores, counts)
        if score > 1.0:
            score = 1.0
        elif score < 0.0:
            score = 0.0
        assert self._flat_build is not None
        return LazyGrade.recorded(score, sub_scores, self._flat_build, values, *counts, self.aggregation)

    def grade_batch(self, responses: Iterable[str | Mapping[str, Any]], references: Iterable[Any], *, workers: int = 1,
                    progress: bool = False) -> list[Grade]:
        """Grade many responses, in parallel processes when ``workers > 1``; results keep input order."""
        from ..batch._engine import grade_batch

        return grade_batch(self, responses, references, workers=workers, progress=progress)

    # -- pickling: rebuild from the config, not from compiled closures -----------------

    def config(self) -> dict[str, Any]:
        """The grader as a ``{"type": "structured", ...}`` config (what ``from_config`` reads)."""
        out: dict[str, Any] = {"type": "structured", "name": self.name}
        if self.schema is not None:
            out["schema"] = self.schema.json_schema
        if self.fields:
            out["fields"] = {k: v.model_dump(exclude_defaults=True) for k, v in self.fields.items()}
        out.update(aggregation=self.aggregation, on_schema_violation=self.on_schema_violation,
                   schema_penalty=self.schema_penalty, lenient=self.lenient, repair_penalty=self.repair_penalty,
                   extra_fields=self.extra_fields)
        if self.formula is not None:
            out["formula"] = self.formula.source
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (from_structured_config, (self.config(),))

    def __repr__(self) -> str:
        return f"StructuredGrader(schema={self.schema!r}, aggregation={self.aggregation!r}, fields={sorted(self.fields)})"


def from_structured_config(config: Mapping[str, Any] | StructuredConfig) -> StructuredGrader:
    """Build a StructuredGrader from ``{"type": "structured", ...}`` (:class:`StructuredConfig`); bad keys raise with their pointer."""
    model = config if isinstance(config, StructuredConfig) else validate_config(StructuredConfig, config)
    try:
        loaded = Schema.load(model.schema_) if model.schema_ is not None else None
    except SchemaError as exc:  # point into the config, not into the schema alone
        raise SchemaError(exc.message, code=exc.code, pointer="/schema" + exc.pointer, hint=exc.hint) from None
    return StructuredGrader(loaded, **{name: getattr(model, name) for name in StructuredOptions.model_fields})


def structured_config_schema() -> dict[str, Any]:
    """The JSON Schema of a ``{"type": "structured", ...}`` grader config, generated from :class:`StructuredConfig`.

    Shipped as ``schemas/formats/structured_grader.json``; a test keeps the two identical.
    """
    return StructuredConfig.model_json_schema()
