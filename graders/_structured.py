"""The structured grader: parse a response into a typed object, compare it with a
reference field by field, and combine the comparisons into one scalar.

Pipeline (each stage a pure function with its own tests)::

    response -> parse_response (extract, decode, validate)  graders._parsing
             -> compile-time plan of the schema             _Planner (here)
             -> compare field by field                      _Leaf/_List/_Object.grade
             -> combine                                     Aggregation
             -> Grade

**The fast path.** For the common shape (an object of leaves and lists of
leaves, a bare JSON object, every field filled on both sides) the same stages run
in one function generated per schema at construction (:func:`_compile_flat`),
with the same comparators and list pairing, the same counts and the same grade;
each field's :class:`FieldDetail` is built when ``Grade.details`` is first read.
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

import dataclasses
import datetime as _dt
import difflib
import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from schemas import Issue, Schema, SchemaError, SchemaSource, json_pointer
from schemas._loading import FieldTypes

from ._comparators import Comparator, comparator_options, comparators_taking, make_comparator
from ._comparators import math as _math_comparator
from ._errors import GraderConfigError
from ._formula import Formula
from ._matching import Pair, assign, ordered_pairs, prf
from ._parsing import _DECODER, _NOT_BARE, _UNDECODED, _strict_value, max_output_chars, parse_response, validate_value
from ._result import DetailsBuilder, FieldDetail, Grade, no_errors

Aggregation = Literal["weighted_mean", "micro_f1", "all_or_nothing", "formula"]
OnSchemaViolation = Literal["per_field", "gate"]
ListMode = Literal["set", "multiset", "ordered"]
ExtraFields = Literal["penalize", "ignore"]

_NUMBER_REL_TOL = 1e-6
_STRING_MATCH_THRESHOLD = 0.8
_OBJECT_MATCH_THRESHOLD = 0.5
_MAX_DEPTH = 64  # values nested deeper than this (schema-less) are compared exactly


class FieldSpec(BaseModel):
    """Per-field overrides, in Python or in a JSON config.

    Unknown keys are comparator options (``scorer``, ``partial_credit``,
    ``abs_tol``, ``rel_tol``, ``decimal``, ``order``, ``tolerance``,
    ``case_sensitive``, ``strip_punctuation``, ``max_chars``...), checked when the
    grader is built.

    >>> FieldSpec(comparator="fuzzy", scorer="token_set_ratio", weight=2).options
    {'scorer': 'token_set_ratio'}
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, use_attribute_docstrings=True)

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


class StructuredOptions(BaseModel):
    """The structured grader's options, type-checked strictly (``"no"`` is not a bool).

    With ``type`` and ``schema`` added, these are the keys of a
    ``{"type": "structured", ...}`` config.
    """

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

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


def _options(values: Mapping[str, Any]) -> StructuredOptions:
    """Validate the options; the first problem raises with its JSON pointer."""
    try:
        return StructuredOptions.model_validate(dict(values))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        head = str(loc[0]) if loc else ""
        code = {"fields": "bad_field_option", "aggregation": "bad_aggregation"}.get(head, "bad_option")
        hint = ("known field keys: comparator, threshold, weight, required, mode, fields, plus comparator options"
                if head == "fields" else f"known options: {sorted(StructuredOptions.model_fields)}")
        raise GraderConfigError(f"{'/'.join(map(str, loc)) or 'options'}: {err['msg']}", code=code,
                                pointer=json_pointer(loc), hint=hint) from None


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
                    pointer=f"{pointer}/{_escape(key)}",
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


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


# --------------------------------------------------------------------------- helpers


def _is_empty(value: Any) -> bool:
    """The empty-value policy: null, "" (or whitespace), [] and {} mean *no value*, and so does
    an object or a list whose values all mean no value (``{"b": null}``, ``[null, {}]``), at any depth.

    >>> [_is_empty(v) for v in (None, " ", [], {"b": None}, {"b": {"c": [None, ""]}}, {"b": 0}, [None, "x"], False)]
    [True, True, True, True, True, False, False, False]
    """
    if value is None:
        return True
    if type(value) is str:
        return not value or value.isspace()
    if isinstance(value, dict):
        return not value or _holds_no_value(value.values())
    if isinstance(value, list):
        return not value or _holds_no_value(value)
    return False


def _holds_no_value(values: Iterable[Any]) -> bool:
    """True when no value inside ``values`` (through nested objects and lists) holds a value.

    Iterative, so depth cannot overflow the stack, and it stops at the first value found
    (the common case: a filled object answers at its first field)."""
    stack: list[Iterator[Any]] = [iter(values)]
    while stack:
        for v in stack[-1]:
            if v is None:
                continue
            if isinstance(v, str):
                if v and not v.isspace():
                    return False
            elif isinstance(v, dict):
                if v:
                    stack.append(iter(v.values()))
                    break
            elif isinstance(v, list):
                if v:
                    stack.append(iter(v))
                    break
            else:
                return False
        else:
            stack.pop()
    return True


def _leaf_count(value: Any) -> int:
    """How many leaf values ``value`` holds (iterative, so depth cannot overflow)."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif not _is_empty(v):
            count += 1
    return count


class _Ctx:
    """Counts gathered while grading one response."""

    __slots__ = ("tp", "fp", "fn", "required_missed")

    def __init__(self) -> None:
        self.tp = 0.0
        self.fp = 0.0
        self.fn = 0.0
        self.required_missed: list[str] = []


def _empty_cases(pred: Any, ref: Any, label: str, ctx: _Ctx) -> tuple[float, FieldDetail] | None:
    """Score the cases where one side (or both) has no value; None when both have one."""
    pred_empty, ref_empty = _is_empty(pred), _is_empty(ref)
    if pred_empty and ref_empty:
        return 1.0, FieldDetail(label, 1.0, "both_empty", pred, ref)
    if ref_empty:
        ctx.fp += _leaf_count(pred)
        return 0.0, FieldDetail(label, 0.0, "extra", pred, ref)
    if pred_empty:
        ctx.fn += _leaf_count(ref)
        return 0.0, FieldDetail(label, 0.0, "missing", pred, ref)
    return None


# --------------------------------------------------------------------------- nodes


class _Node:
    """One compiled part of the schema; ``grade`` scores a (prediction, reference) pair."""

    label = "node"
    weight = 1.0
    required = False

    def grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        raise NotImplementedError


def _cut_note(cap: int, *values: Any) -> list[str] | None:
    """The note for a field whose texts (strings, or lists of strings) a comparator cut to ``cap`` characters; None if none was cut."""
    longest = 0
    for v in values:
        if type(v) is str:
            longest = max(longest, len(v))
        elif type(v) is list:
            for x in v:
                if type(x) is str and len(x) > longest:
                    longest = len(x)
    if longest <= cap:
        return None
    return [f"compared the first {cap} characters of each text (the longest has {longest}); set max_chars to see more"]


class _Leaf(_Node):
    __slots__ = ("label", "compare", "weight", "required", "_matrix", "key", "keys", "max_chars")

    def __init__(self, label: str, compare: Comparator, weight: float = 1.0, required: bool = False) -> None:
        self.label, self.compare, self.weight, self.required = label, compare, weight, required
        self.max_chars: int | None = getattr(compare, "max_chars", None)
        """The characters of each text the comparator looks at (fuzzy), or None: a cut text is noted in the detail."""
        self._matrix: Callable[[list[Any], list[Any]], list[list[float]] | None] | None = getattr(compare, "matrix", None)
        self.key: Callable[[str], str] | None = getattr(compare, "key", None)
        """For all-or-nothing comparators of strings: equal keys score 1, others 0."""
        self.keys: Callable[[list[str]], list[str]] | None = getattr(compare, "keys", None)
        if self.keys is None and self.key is not None:
            key = self.key
            self.keys = lambda texts: [key(t) for t in texts]
        """``key`` applied to a whole list."""

    def grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        if not (type(pred) is str and type(ref) is str and pred and ref and not pred.isspace() and not ref.isspace()):
            empty = _empty_cases(pred, ref, self.label, ctx)  # the fast test above covers two non-blank strings
            if empty is not None:
                return empty
        s = self.compare(pred, ref)
        ctx.tp += s
        ctx.fp += 1.0 - s
        ctx.fn += 1.0 - s
        cap = self.max_chars
        if cap is not None and ((type(pred) is str and len(pred) > cap) or (type(ref) is str and len(ref) > cap)):
            return s, FieldDetail(self.label, s, "compared", pred, ref, notes=_cut_note(cap, pred, ref))
        return s, FieldDetail(self.label, s, "compared", pred, ref)

    def similarity(self, pred: Any, ref: Any) -> float:
        if _is_empty(pred) or _is_empty(ref):
            return 1.0 if _is_empty(pred) and _is_empty(ref) else 0.0
        return self.compare(pred, ref)

    def matrix(self, preds: list[Any], refs: list[Any]) -> list[list[float]]:
        """Similarity of every (prediction, reference) pair, shape (P, R).

        Comparators that can (fuzzy, normalized) prepare each string once
        instead of once per pair; the result equals ``similarity`` pair by pair.
        """
        if self._matrix is not None:
            result = self._matrix(preds, refs)
            if result is not None:
                return result
        sim = self.similarity
        return [[sim(p, r) for r in refs] for p in preds]


_DEEP = _Leaf("exact", make_comparator("exact"))
"""How values nested deeper than the planner's limit are compared: exactly."""


def _all_text(items: list[Any]) -> bool:
    """True when every item is a non-blank string (the common, fast case)."""
    for x in items:
        if type(x) is not str or not x or x.isspace():
            return False
    return True


def _dedupe(items: list[Any]) -> list[Any]:
    """Set semantics: drop exact duplicates, keep first occurrences in order."""
    if _all_text(items):
        return list(dict.fromkeys(items))
    return list({_set_key(x): x for x in items}.values())


_SHARED = 64
_FULL_PAIRS: tuple[tuple[Pair, ...], ...] = tuple(tuple([(i, j, 1.0) for j in range(_SHARED)]) for i in range(_SHARED))
"""``_FULL_PAIRS[i][j]`` is the pair (i, j, 1.0), shared (tuples are immutable): a batch of grades keeps
fewer objects for the garbage collector to scan."""
_IDENTITY: tuple[tuple[Pair, ...], ...] = tuple(tuple([_FULL_PAIRS[i][i] for i in range(n)]) for n in range(_SHARED + 1))
"""``_IDENTITY[n]`` holds the pairs (0, 0, 1.0) ... (n-1, n-1, 1.0), shared."""


def _full_pair(i: int, j: int) -> Pair:
    """The pair (i, j, 1.0), shared for small indexes."""
    return _FULL_PAIRS[i][j] if i < _SHARED and j < _SHARED else (i, j, 1.0)


def _identity_pairs(n: int) -> tuple[Pair, ...]:
    """The pairs (i, i, 1.0) for i < n, as a shared tuple up to 64."""
    return _IDENTITY[n] if n <= _SHARED else tuple([_full_pair(i, i) for i in range(n)])


def _list_detail(args: tuple[Any, ...]) -> FieldDetail:
    """The detail of a list field from the arguments :meth:`_List.text_items` answers (lists made of tuples)."""
    label, score, status, pred, ref, precision, recall, f1, matched, missing, extra = args
    return FieldDetail(label, score, status, pred, ref, precision, recall, f1, list(matched), list(missing), list(extra))


def _tally(pairs: Sequence[tuple[int, int, float]]) -> tuple[float, set[int], set[int]]:
    """The summed similarity of matched pairs, and the prediction and reference indices they use."""
    matched = 0.0
    used_p: set[int] = set()
    used_r: set[int] = set()
    for i, j, score in pairs:
        matched += score
        used_p.add(i)
        used_r.add(j)
    return matched, used_p, used_r


def _pair_by_key(keys: Callable[[list[str]], list[str]], pred: list[str], ref: list[str],
                 ) -> tuple[list[Pair], Sequence[str], Sequence[str]]:
    """Optimal pairs, missing and extra items under an all-or-nothing comparator whose equal keys score 1.

    Equal keys score 1 and all else 0: the similarity graph is a union of complete bipartite
    classes, so pairing within each class, in order, until one side runs out is an optimal
    assignment. Pairs come in prediction order; missing items in reference order, extra ones
    in prediction order (``()`` when there are none).
    """
    ref_keys = keys(ref)
    index = {k: j for j, k in enumerate(ref_keys)}
    pairs: list[Pair] = []
    extra: list[str] = []
    if len(index) == len(ref_keys):  # distinct reference keys (the usual case): one candidate per key
        take = index.pop  # each j is taken once
        for i, k in enumerate(keys(pred)):
            j = take(k, -1)
            if j < 0:
                extra.append(pred[i])
            else:
                pairs.append(_FULL_PAIRS[i][j] if i < _SHARED and j < _SHARED else (i, j, 1.0))  # _full_pair, inline
        return pairs, [ref[j] for j in index.values()] if index else (), extra or ()
    buckets: dict[str, list[int]] = {}
    for j, k in enumerate(ref_keys):
        buckets.setdefault(k, []).append(j)
    used_r: set[int] = set()
    for i, k in enumerate(keys(pred)):
        js = buckets.get(k)
        if js:
            j = js.pop(0)
            pairs.append(_full_pair(i, j))
            used_r.add(j)
        else:
            extra.append(pred[i])
    return pairs, [r for j, r in enumerate(ref) if j not in used_r] if len(used_r) < len(ref) else (), extra or ()


def _has_required(node: _Node) -> bool:
    """Whether ``node`` or a field inside it (through objects and list items) is required."""
    if node.required:
        return True
    if isinstance(node, _Object):
        return node._any_required
    if isinstance(node, _List):
        return _has_required(node.element)
    return False


def _required_in(node: _Node, ref: Any, name: str) -> list[str]:
    """The required fields a prediction lacks when it lacks ``node`` (whose reference value is ``ref``)."""
    if _is_empty(ref):
        return []
    if node.required:
        return [name]
    if isinstance(node, _Object) and isinstance(ref, dict):
        return [found for child, sub, _ in node._items for found in _required_in(sub, ref.get(child), f"{name}.{child}")]
    return []


def _set_key(item: Any) -> Any:
    """A hashable identity for de-duplicating set members (a value too deeply nested to write
    as JSON is its own identity: it is then never merged with an equal one)."""
    if isinstance(item, (str, int, float, bool)) or item is None:
        return (type(item).__name__ == "bool", item)
    try:
        return json.dumps(item, sort_keys=True, default=str)
    except (RecursionError, ValueError):
        return ("id", id(item))


class _List(_Node):
    __slots__ = ("label", "element", "mode", "threshold", "weight", "required")

    def __init__(self, element: _Node, mode: ListMode, threshold: float, weight: float = 1.0, required: bool = False) -> None:
        self.element, self.mode, self.threshold = element, mode, threshold
        self.weight, self.required = weight, required
        self.label = f"list/{mode}"

    def grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        score, detail = self._grade(pred, ref, ctx, depth)
        element = self.element
        if isinstance(element, _Leaf) and element.max_chars is not None:
            detail.notes = _cut_note(element.max_chars, detail.prediction, detail.reference)
        return score, detail

    def _grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        # An empty value (null, "", missing) on either side is the empty list, so a list
        # field always reports precision, recall and F1.
        pred_list = pred if type(pred) is list else ([] if _is_empty(pred) else None)
        ref_list = ref if type(ref) is list else ([] if _is_empty(ref) else None)
        if self.mode == "ordered":  # no item holds a value: no value (the other modes drop such items one by one)
            if pred_list and _is_empty(pred_list):
                pred_list = []
            if ref_list and _is_empty(ref_list):
                ref_list = []
        if pred_list is None or ref_list is None:
            ctx.fp += _leaf_count(pred)
            ctx.fn += _leaf_count(ref)
            return 0.0, FieldDetail(self.label, 0.0, "wrong_type", pred, ref)
        clean = False  # every item a non-blank string (ordered lists are never cleaned: positions matter)
        if self.mode != "ordered":
            # Items without a value (null, "", [], {}) are not items: the empty-value policy, item by item.
            clean = _all_text(pred_list) and _all_text(ref_list)
            if not clean:
                pred_list = [x for x in pred_list if not _is_empty(x)]
                ref_list = [x for x in ref_list if not _is_empty(x)]
        if not pred_list and not ref_list:
            return 1.0, FieldDetail(self.label, 1.0, "both_empty", pred, ref, 1.0, 1.0, 1.0, [], [], [])
        if clean and pred_list and ref_list and isinstance(self.element, _Leaf):
            score, matched, args = self.text_items(pred_list, ref_list)  # the common case, shared with the fast path
            ctx.tp += matched
            ctx.fp += len(args[3]) - matched
            ctx.fn += len(args[4]) - matched
            return score, _list_detail(args)
        if self.mode == "set":
            if clean:
                pred_keys, ref_keys = dict.fromkeys(pred_list), dict.fromkeys(ref_list)
                if len(pred_keys) != len(pred_list):
                    pred_list = list(pred_keys)
                if len(ref_keys) != len(ref_list):
                    ref_list = list(ref_keys)
                if pred_keys.keys() == ref_keys.keys():
                    # The same distinct strings in any order: pairing equal values scores n, the
                    # maximum, because every comparator scores a value against itself 1 and nothing above 1.
                    where = {r: j for j, r in enumerate(ref_list)}
                    ctx.tp += len(ref_list)
                    return 1.0, FieldDetail(self.label, 1.0, "compared", pred_list, ref_list, 1.0, 1.0, 1.0,
                                            [(i, where[p], 1.0) for i, p in enumerate(pred_list)], [], [])
            else:
                pred_list = _dedupe(pred_list)
                ref_list = _dedupe(ref_list)
        element = self.element
        if isinstance(element, _Leaf):
            by_key = element.key is not None and self.mode != "ordered" and clean
            score, detail = self._grade_leaves(element, pred_list, ref_list, ctx, by_key)
        else:
            score, detail = self._grade_nodes(element, pred_list, ref_list, ctx, depth)
        if not ref_list:
            detail.status = "extra"
        elif not pred_list:
            detail.status = "missing"
        return score, detail

    def text_items(self, pred: list[str], ref: list[str]) -> tuple[float, float, tuple[Any, ...]]:
        """Compare two non-empty lists of non-blank strings (set or multiset; a leaf element).

        Answers (F1, matched similarity, the field's :class:`FieldDetail` arguments,
        where the matched pairs, missing and extra items may be tuples:
        :func:`_list_detail` makes the detail). Every number of the detail is
        computed now. The caller counts ``tp += matched``, ``fp += P - matched``,
        ``fn += R - matched`` with the compared (de-duplicated) lengths
        ``P = len(args[3])`` and ``R = len(args[4])``.
        """
        element = self.element
        assert isinstance(element, _Leaf)
        if self.mode == "set":
            ref_set = set(ref)
            if pred == ref and len(ref_set) == len(ref):  # the same distinct strings in the same order
                n = len(ref)
                return 1.0, n, (self.label, 1.0, "compared", pred, ref, 1.0, 1.0, 1.0, _identity_pairs(n), (), ())
            pred_set = set(pred)
            if len(pred_set) != len(pred):  # set semantics: drop duplicates, keep first occurrences in order
                pred = list(dict.fromkeys(pred))
            if len(ref_set) != len(ref):
                ref = list(dict.fromkeys(ref))
            if pred_set == ref_set:
                # The same distinct strings in any order: pairing equal values scores n, the
                # maximum, because every comparator scores a value against itself 1 and nothing above 1.
                where = {r: j for j, r in enumerate(ref)}
                return 1.0, len(ref), (self.label, 1.0, "compared", pred, ref, 1.0, 1.0, 1.0,
                                       [_full_pair(i, where[p]) for i, p in enumerate(pred)], (), ())
        n_pred, n_ref = len(pred), len(ref)
        keys = element.keys
        if keys is not None:
            pairs, missing, extra = _pair_by_key(keys, pred, ref)
            matched = float(len(pairs))  # every pair scores 1.0
        else:
            pairs = assign(element.matrix(pred, ref), self.threshold)
            matched, used_p, used_r = _tally(pairs)
            missing = [r for j, r in enumerate(ref) if j not in used_r] if len(used_r) < n_ref else ()
            extra = [x for i, x in enumerate(pred) if i not in used_p] if len(used_p) < n_pred else ()
        precision, recall, f1 = matched / n_pred, matched / n_ref, 2.0 * matched / (n_pred + n_ref)  # prf, both non-empty
        return f1, matched, (self.label, f1, "compared", pred, ref, precision, recall, f1, pairs, missing, extra)

    def _pairs(self, matrix: list[list[float]]) -> list[Any]:
        if self.mode == "ordered":
            n = min(len(matrix), len(matrix[0]) if matrix else 0)
            return ordered_pairs([matrix[i][i] for i in range(n)], self.threshold)
        return assign(matrix, self.threshold)

    def _grade_leaves(self, element: _Leaf, pred: list[Any], ref: list[Any], ctx: _Ctx,
                      by_key: bool = False) -> tuple[float, FieldDetail]:
        n_pred, n_ref = len(pred), len(ref)
        if by_key:
            assert element.keys is not None
            pairs = _pair_by_key(element.keys, pred, ref)[0]
        elif self.mode == "ordered":
            sim = element.similarity
            matrix = [[sim(p, r) if i == j else 0.0 for j, r in enumerate(ref)] for i, p in enumerate(pred)]
            pairs = self._pairs(matrix)
        else:
            pairs = self._pairs(element.matrix(pred, ref))
        matched, used_p, used_r = _tally(pairs)
        precision, recall, f1 = prf(matched, n_pred, n_ref)
        ctx.tp += matched
        ctx.fp += n_pred - matched
        ctx.fn += n_ref - matched
        missing = [r for j, r in enumerate(ref) if j not in used_r] if len(used_r) < n_ref else []
        extra = [x for i, x in enumerate(pred) if i not in used_p] if len(used_p) < n_pred else []
        return f1, FieldDetail(self.label, f1, "compared", pred, ref, precision, recall, f1, pairs, missing, extra)

    def _grade_nodes(self, element: _Node, pred: list[Any], ref: list[Any], ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        # Grade every pair once with its own counts; keep those of the matched pairs.
        graded = [[self._grade_pair(element, p, r, depth) for r in ref] for p in pred]  # (P, R)
        pairs = self._pairs([[g[0] for g in row] for row in graded])
        matched = 0.0
        items: list[FieldDetail] = []
        for i, j, _ in pairs:
            score, detail, sub = graded[i][j]
            ctx.required_missed.extend(f"[{j}].{name}" for name in sub.required_missed)
            matched += score
            ctx.tp += sub.tp
            ctx.fp += sub.fp
            ctx.fn += sub.fn
            items.append(detail)
        used_p = {p[0] for p in pairs}
        used_r = {p[1] for p in pairs}
        missing = [r for j, r in enumerate(ref) if j not in used_r]
        extra = [x for i, x in enumerate(pred) if i not in used_p]
        ctx.fn += sum(_leaf_count(r) for r in missing)
        ctx.fp += sum(_leaf_count(x) for x in extra)
        precision, recall, f1 = prf(matched, len(pred), len(ref))
        return f1, FieldDetail(
            self.label, f1, "compared", pred, ref, precision, recall, f1,
            matched=pairs, missing=missing, extra=extra, items=items,
        )

    @staticmethod
    def _grade_pair(element: _Node, pred: Any, ref: Any, depth: int) -> tuple[float, FieldDetail, _Ctx]:
        sub = _Ctx()
        score, detail = element.grade(pred, ref, sub, depth + 1)
        return score, detail, sub


class _Object(_Node):
    __slots__ = ("label", "fields", "extra_fields", "weight", "required", "specs", "_items", "_names", "_weights", "_any_required")

    def __init__(self, fields: dict[str, _Node], extra_fields: ExtraFields, specs: Mapping[str, FieldSpec] | None = None,
                 weight: float = 1.0, required: bool = False) -> None:
        self.label = "object"
        self.fields, self.extra_fields = fields, extra_fields
        self.specs = dict(specs or {})  # overrides for keys the schema does not declare
        self.weight, self.required = weight, required
        self._items = tuple((name, node, node.weight) for name, node in fields.items())
        self._names = frozenset(fields)
        self._weights = sum(node.weight for node in fields.values())
        self._any_required = any(_has_required(node) for node in fields.values())

    def grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        if not isinstance(pred, dict) or not isinstance(ref, dict):
            # Two dicts always recurse (even {} vs {...}), so every field gets its own detail.
            empty = _empty_cases(pred, ref, self.label, ctx)
            if empty is not None:
                return empty
            ctx.fp += _leaf_count(pred)
            ctx.fn += _leaf_count(ref)
            return 0.0, FieldDetail(self.label, 0.0, "wrong_type", pred, ref)
        details: dict[str, FieldDetail] = {}
        total = 0.0
        weights = self._weights
        depth += 1
        if not self._any_required:
            for name, node, weight in self._items:
                score, detail = node.grade(pred.get(name), ref.get(name), ctx, depth)
                details[name] = detail
                total += weight * score
        else:
            missed = ctx.required_missed
            for name, node, weight in self._items:
                before = len(missed)
                score, detail = node.grade(pred.get(name), ref.get(name), ctx, depth)
                details[name] = detail
                total += weight * score
                if len(missed) > before:  # required fields missed deeper down: name them from here
                    missed[before:] = [name + (e if e.startswith("[") else "." + e) for e in missed[before:]]
                if detail.status in ("missing", "wrong_type"):
                    missed.extend(_required_in(node, ref.get(name), name))
        names = self._names
        if not names.issuperset(ref):
            for name in ref:  # reference keys the schema does not declare, in the reference's order
                if name in names:
                    continue
                node = _infer(ref[name], self.specs.get(name), name, self.extra_fields, depth)
                score, detail = node.grade(pred.get(name), ref[name], ctx, depth)
                details[name] = detail
                total += node.weight * score
                weights += node.weight
        if self.extra_fields == "penalize" and not names.issuperset(pred):
            for name in pred:  # keys neither the schema nor the reference has: hallucinated fields
                if name in details or _is_empty(pred[name]):
                    continue
                ctx.fp += _leaf_count(pred[name])
                details[name] = FieldDetail("extra_field", 0.0, "extra", pred[name], None)
                weights += 1.0
        score = total / weights if weights > 0 else 1.0
        return score, FieldDetail(self.label, score, "compared", None, None, fields=details)


class _Lazy(_Node):
    """A ``$ref`` seen again while compiling it (a recursive schema): grades with the node built for it.

    Data nested deeper than the limit is compared exactly, so a hostile, very deep
    value cannot exhaust the stack.
    """

    __slots__ = ("target", "weight", "required", "label")

    def __init__(self, spec: FieldSpec | None) -> None:
        self.target: _Node | None = None
        self.weight = spec.weight if spec else 1.0
        self.required = spec.required if spec else False
        self.label = "object"

    def grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        assert self.target is not None, "the planner sets the target before grading starts"
        if depth > 4 * _MAX_DEPTH:
            return _DEEP.grade(pred, ref, ctx, depth)
        return self.target.grade(pred, ref, ctx, depth)


class _Any(_Node):
    """No schema information: infer the comparison from the reference's JSON type at grade time."""

    __slots__ = ("spec", "extra_fields", "weight", "required", "name")
    label = "inferred"

    def __init__(self, spec: FieldSpec | None, extra_fields: ExtraFields, name: str) -> None:
        self.spec, self.extra_fields, self.name = spec, extra_fields, name
        self.weight = spec.weight if spec else 1.0
        self.required = spec.required if spec else False

    def grade(self, pred: Any, ref: Any, ctx: _Ctx, depth: int) -> tuple[float, FieldDetail]:
        sample = ref if not _is_empty(ref) or isinstance(ref, dict) else pred
        return _infer(sample, self.spec, self.name, self.extra_fields, depth).grade(pred, ref, ctx, depth)


# --------------------------------------------------------------------------- compiling a plan


def _leaf(name: str, spec: FieldSpec | None, default: str, defaults: Mapping[str, Any], pointer: str, *, in_list: bool = False) -> _Leaf:
    comparator = spec.comparator if spec and spec.comparator else default
    options: dict[str, Any] = dict(defaults) if comparator == default else {}
    if spec is not None:
        options.update(spec.options)
        partial = options.get("partial_credit", True)
        if spec.threshold is not None and (not in_list or partial is False):
            options["threshold"] = spec.threshold
    compare = make_comparator(comparator, pointer=pointer, **options)
    return _Leaf(comparator, compare, spec.weight if spec else 1.0, spec.required if spec else False)


def _infer(value: Any, spec: FieldSpec | None, name: str, extra_fields: ExtraFields, depth: int) -> _Node:
    """Build a node for a schema-less value from its JSON type (a leaf's options, given without a
    comparator, name the one comparator that takes them: ``{"abs_tol": 0.5}`` is ``number``)."""
    if depth > _MAX_DEPTH:
        return _DEEP
    pointer = f"/fields/{name}"
    implied = _implied_comparator(spec.options) if spec is not None and spec.comparator is None and spec.model_extra else None
    if implied is not None and not isinstance(value, (dict, list)):
        return _leaf(name, spec, implied, {}, pointer)
    if isinstance(value, dict):
        sub = spec.fields if spec and spec.fields else {}
        fields: dict[str, _Node] = {str(k): _Any(sub.get(k), extra_fields, str(k)) for k in value}
        return _Object(fields, extra_fields, sub, spec.weight if spec else 1.0, spec.required if spec else False)
    if isinstance(value, list):
        first = next((v for v in value if not _is_empty(v)), None)
        element = _infer(first, _element_spec(spec), name, extra_fields, depth + 1)
        return _List(element, (spec.mode if spec and spec.mode else "set"), _list_threshold(spec, element),
                     spec.weight if spec else 1.0, spec.required if spec else False)
    if isinstance(value, bool):
        return _leaf(name, spec, "bool", {}, pointer)
    if isinstance(value, (int, float)):
        return _leaf(name, spec, "number", {"rel_tol": _NUMBER_REL_TOL}, pointer)
    return _leaf(name, spec, "fuzzy", {}, pointer)


def _element_spec(spec: FieldSpec | None) -> FieldSpec | None:
    """The part of a list field's spec that applies to each element."""
    if spec is None:
        return None
    data = spec.model_dump(exclude={"weight", "required", "mode"}, exclude_none=True)
    return FieldSpec(**data)


def _list_threshold(spec: FieldSpec | None, element: _Node) -> float:
    if spec is not None and spec.threshold is not None:
        return spec.threshold
    return _STRING_MATCH_THRESHOLD if isinstance(element, _Leaf) and element.label == "fuzzy" else _OBJECT_MATCH_THRESHOLD


_EXACT_FORMATS = frozenset({"uri", "uri-reference", "iri", "iri-reference", "uri-template", "json-pointer",
                            "relative-json-pointer", "regex"})
"""String formats compared exactly: identifiers whose case matters (a URI's path)."""
_NORMALIZED_FORMATS = frozenset({"uuid", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6"})
"""String formats compared ``normalized`` (case and surrounding space aside): identifiers whose case does not matter.
A ``pattern`` makes a string an identifier too (an invoice number one digit off is wrong, not 92% right)."""


class _Planner:
    """Compiles a schema plus overrides into a tree of nodes, once, at construction."""

    def __init__(self, schema: Schema | None, extra_fields: ExtraFields) -> None:
        self.schema = schema
        self.extra_fields = extra_fields
        self._by_ref: dict[tuple[str, str], _Node] = {}  # one node per ($ref, overrides): recursion stays finite

    def node(self, sn: Mapping[str, Any] | None, spec: FieldSpec | None, name: str, path: tuple[str, ...], depth: int = 0) -> _Node:
        pointer = json_pointer(("fields",) + path)
        if sn is None or depth > _MAX_DEPTH:
            if spec is not None and spec.comparator and not spec.fields:
                return _leaf(name, spec, spec.comparator, {}, pointer)
            return _Any(spec, self.extra_fields, name)
        assert self.schema is not None
        ref = sn.get("$ref")
        if isinstance(ref, str):
            ref_key = (ref, spec.model_dump_json() if spec is not None else "")
            known = self._by_ref.get(ref_key)
            if known is not None:
                return known
            lazy = _Lazy(spec)
            self._by_ref[ref_key] = lazy
            built = self.node(self.schema.resolve(sn), spec, name, path, depth)
            lazy.target = built
            self._by_ref[ref_key] = built
            return built
        sn = self.schema.resolve(sn)
        for key in ("anyOf", "oneOf"):
            if key in sn:
                real = [b for b in sn[key] if isinstance(b, Mapping) and self.schema.resolve(b).get("type") != "null"]
                return self.node(real[0] if len(real) == 1 else None, spec, name, path, depth)
        if "allOf" in sn and len(sn["allOf"]) == 1:
            return self.node(sn["allOf"][0], spec, name, path, depth)
        kind = sn.get("type")
        if isinstance(kind, list):
            real_kinds = [k for k in kind if k != "null"]
            kind = real_kinds[0] if len(real_kinds) == 1 else None
        weight = spec.weight if spec else 1.0
        required = spec.required if spec else False
        if spec is not None and spec.mode is not None and kind != "array":
            raise GraderConfigError(f"'mode' applies to lists, but the schema makes {name!r} a {kind or 'non-list value'}",
                                    code="bad_field_option", pointer=pointer + "/mode", hint="remove 'mode' from this field")
        is_object = kind == "object" or "properties" in sn
        if spec is not None and spec.fields and not is_object and kind != "array":
            field = next(iter(spec.fields))
            raise GraderConfigError(
                f"field {'.'.join(path + (field,))!r} is not in the schema: {'.'.join(path)!r} is a {kind or 'value'}",
                code="unknown_field", pointer=json_pointer(("fields", *path, field)),
                hint=f"{'.'.join(path)!r} has no fields; override it as a whole (its comparator, weight ...)")
        if "enum" in sn or "const" in sn:
            return _leaf(name, spec, "enum", {}, pointer)
        if is_object:
            props: Mapping[str, Any] = sn.get("properties", {})
            sub = dict(spec.fields) if spec and spec.fields else {}
            unknown = [k for k in sub if k not in props]
            additional = sn.get("additionalProperties")
            if unknown and props and (additional is None or additional is False) and "patternProperties" not in sn:
                # Declared fields and no schema for others: a name the schema lacks is a typo that would never apply.
                dotted = ".".join(path + (unknown[0],))
                where = ".".join(path)
                raise GraderConfigError(
                    f"field {dotted!r} is not in the schema, so its override would never apply",
                    code="unknown_field", pointer=json_pointer(("fields", *path, unknown[0])),
                    hint=_did_you_mean(unknown[0], props, where + "." if where else "")
                    + f"{'the fields of ' + repr(where) if where else 'the top-level fields'}: {', '.join(props)}")
            fields = {k: self.node(v, sub.get(k), k, path + (k,), depth + 1) for k, v in props.items()}
            for k in unknown:  # overrides for fields only the data will show
                fields[k] = self.node(None, sub[k], k, path + (k,), depth + 1)
            return _Object(fields, self.extra_fields, sub, weight, required)
        if kind == "array":
            items = sn.get("items") if isinstance(sn.get("items"), Mapping) else None
            element = self.node(items, _element_spec(spec), name, path, depth + 1)
            if isinstance(element, _Any) and items is not None and not items:
                element = _Any(_element_spec(spec), self.extra_fields, name)
            mode: ListMode = spec.mode if spec and spec.mode else "set"
            return _List(element, mode, _list_threshold(spec, element), weight, required)
        if kind == "string":
            fmt = sn.get("format")
            if fmt == "date":
                return _leaf(name, spec, "date", {}, pointer)
            if fmt == "date-time":
                return _leaf(name, spec, "datetime", {}, pointer)
            if fmt in _EXACT_FORMATS:
                return _leaf(name, spec, "exact", {}, pointer)
            if fmt in _NORMALIZED_FORMATS or "pattern" in sn:  # an identifier: close is not right
                return _leaf(name, spec, "normalized", {}, pointer)
            return _leaf(name, spec, "fuzzy", {}, pointer)
        if kind == "integer":
            return _leaf(name, spec, "exact", {}, pointer)
        if kind == "number":
            return _leaf(name, spec, "number", {"rel_tol": _NUMBER_REL_TOL}, pointer)
        if kind == "boolean":
            return _leaf(name, spec, "bool", {}, pointer)
        return self.node(None, spec, name, path, depth)


# --------------------------------------------------------------------------- the fast path

_FlatField = tuple[str, float, str, "Comparator | None", "_List | None"]
"""(name, weight, label, the leaf's comparator or None, the list node or None)."""
_SCALARS = (int, float, bool)
"""Types of leaf values that always hold a value under the empty-value policy."""


def _flat_plan(root: _Node) -> tuple[_FlatField, ...] | None:
    """The fast path's plan when ``root`` is an object whose every field is a leaf or a set/multiset
    list of leaves (the common shape: flat records, tags); None for any other shape."""
    if not isinstance(root, _Object) or not root.fields:
        return None
    plan: list[_FlatField] = []
    for name, node in root.fields.items():
        if isinstance(node, _Leaf):
            plan.append((name, node.weight, node.label, node.compare, None))
        elif isinstance(node, _List) and node.mode != "ordered" and isinstance(node.element, _Leaf):
            plan.append((name, node.weight, node.label, None, node))
        else:
            return None
    return tuple(plan)


def _flat_details(plan: tuple[_FlatField, ...]) -> DetailsBuilder:
    """Builds a fast-path grade's details from the one tuple of values it recorded: per leaf
    field its score, prediction and reference; per list field the arguments of ``text_items`` and
    None, or the prediction and reference lists when they are the same distinct strings in the same order."""
    layout = tuple((name, label, compare is not None,
                    getattr(compare if compare is not None else (items.element if items is not None else None), "max_chars", None))
                   for name, _, label, compare, items in plan)

    def build(values: tuple[Any, ...]) -> dict[str, FieldDetail]:
        details: dict[str, FieldDetail] = {}
        k = 0
        for name, label, leaf, cap in layout:
            if leaf:
                detail = FieldDetail(label, values[k], "compared", values[k + 1], values[k + 2])
                k += 3
            else:
                x, y = values[k], values[k + 1]
                if y is None:
                    detail = _list_detail(x)
                else:  # the same distinct strings in the same order: text_items' first case
                    detail = FieldDetail(label, 1.0, "compared", x, y, 1.0, 1.0, 1.0, list(_identity_pairs(len(y))), [], [])
                k += 2
            if cap is not None:  # as _Leaf.grade and _List.grade note a cut text
                p, r = detail.prediction, detail.reference
                if leaf:
                    cut = (type(p) is str and len(p) > cap) or (type(r) is str and len(r) > cap)
                else:  # the fast path's lists hold non-blank strings only
                    cut = len(max(p, key=len)) > cap or len(max(r, key=len)) > cap
                if cut:
                    detail.notes = _cut_note(cap, p, r)
            details[name] = detail
        return details

    return build


def _validating_types(plan: tuple[_FlatField, ...], schema: Schema | None) -> tuple[FieldTypes, bool] | None:
    """The schema's field types when the fast path can check them as it reads the fields, making
    its own checks a schema validation (:meth:`schemas.Schema.field_types`); else None."""
    found = schema.field_types() if schema is not None else None
    if found is None:
        return None
    types, closed = found
    if set(types) != {name for name, *_ in plan}:
        return None
    for name, _, _, compare, _ in plan:
        kinds, items = types[name]
        # A list field passes only as a list of strings: the schema must accept exactly that.
        if compare is None and (list not in kinds or (items is not None and str not in items)):
            return None
    return types, closed


_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]  # not in typeshed
"""The strict decoder's C scanner, what ``JSONDecoder.raw_decode`` runs (it answers (value, end) or raises
StopIteration or JSONDecodeError); called directly it saves the wrapper's call on the hot path."""

_FlatFunctions = tuple[Callable[[Any, Any], "Grade | None"], Callable[[str, Any], Any], str]


def _compile_flat(plan: tuple[_FlatField, ...], penalize: bool,
                  finish: Callable[[float, dict[str, float], tuple[Any, ...], Counts], Grade | None],
                  weighted_mean: float | None, validating: tuple[FieldTypes, bool] | None,
                  schema: Schema | None) -> _FlatFunctions:
    """The fast path for a flat object: two Python functions generated for ``plan``, and their source.

    ``compare_flat(pred, ref)`` answers a Grade when both sides are dicts with
    exactly the declared keys (a prediction may have more with
    ``extra_fields="ignore"``), every leaf holds a value on both sides (a
    non-blank string, a number or a boolean) and every list is a non-empty list
    of non-blank strings on both sides; for anything else it answers None and the
    generic walk grades the pair. It runs the same comparators and list pairing
    as the generic walk (:meth:`_List.text_items`), adds up the same counts in
    the same order, and records each field's detail in one tuple of values that
    becomes :class:`FieldDetail` objects when ``Grade.details`` is first read
    (:func:`_flat_details`). ``tests/graders/test_fastpath.py`` checks that both
    paths give the same grades.

    ``grade_text(text, ref)`` does the same from the model's text when it is one
    bare JSON object (the hot path of :func:`graders._parsing.parse_response`):
    it answers the Grade, or the decoded and schema-valid object the fast path
    leaves to the generic walk, or ``_NOT_BARE`` (any other text, any other
    reference, or an invalid object: the full stages say what is wrong), or
    None (a formula with no finite score, which the full stages report).

    With ``weighted_mean`` (the sum of the weights, > 0) the functions also
    combine the field scores; else ``finish`` does. With ``validating`` (the
    schema's field types, :func:`_validating_types`) each predicted value must
    also be of its field's schema types, and with a closed schema the prediction
    has no other key: then an object that gets a Grade is schema-valid, and
    ``grade_text`` validates only the objects it leaves to the generic walk
    (which its caller does); without it, ``grade_text`` validates every object
    with ``schema``.

    Generating the functions removes the per-field loop, branches, calls and
    tuple unpacking of a generic loop (about a third of the time on the résumé
    example). The source holds only names made here (``p0``, ``K0``, ``C0``...):
    every value from the schema or the config (field names, comparators,
    weights, labels) is bound in the functions' namespace, never written into
    the source.
    """
    namespace: dict[str, Any] = {"SCALARS": _SCALARS, "FINISH": finish, "NOT_BARE": _NOT_BARE, "SCAN": _SCAN}
    size = len(plan)
    closed = penalize or (validating is not None and validating[1])
    keys_check = f"len(ref) != {size}" + (f" or len(pred) != {size}" if closed else "")
    body: list[str] = []  # from the key check on; "DECLINE" is what each function answers when it declines
    body += [f"    if {keys_check}:", "        return DECLINE"]
    blank = "type({0}) is not str or not {0} or {0}.isspace()"  # not a non-blank string
    tp, fp, fn, values = [], [], [], []
    for i, (name, weight, label, compare, items) in enumerate(plan):
        namespace.update({f"K{i}": name, f"W{i}": weight, f"B{i}": label})
        body += [f"    p{i} = pred.get(K{i})", f"    r{i} = ref.get(K{i})"]
        if compare is not None:  # a leaf: both sides hold a value (a prediction of a type its schema accepts)
            namespace[f"C{i}"] = compare
            kinds = validating[0][name][0] if validating is not None else (str, *_SCALARS)
            namespace[f"T{i}"] = tuple(t for t in _SCALARS if t in kinds)
            checks: list[str] = []
            for v, others, text in ((f"p{i}", f"T{i}", str in kinds), (f"r{i}", "SCALARS", True)):
                if text:
                    checks += [f"if type({v}) is str:", f"    if not {v} or {v}.isspace():", "        return DECLINE",
                               f"elif type({v}) not in {others}:", "    return DECLINE"]
                else:
                    checks += [f"if type({v}) not in {others}:", "    return DECLINE"]
            checks.append(f"s{i} = C{i}(p{i}, r{i})")
            if str in kinds:
                # Equal strings: every comparator scores a value against itself 1 (tests/graders/test_comparators.py).
                body += [f"    if type(p{i}) is str and type(r{i}) is str and p{i} == r{i}:",
                         f"        if not p{i} or p{i}.isspace():", "            return DECLINE", f"        s{i} = 1.0",
                         "    else:", *(f"        {line}" for line in checks)]
            else:
                body += [f"    {line}" for line in checks]
            body.append(f"    d{i} = 1.0 - s{i}")
            tp.append(f"s{i}")
            fp.append(f"d{i}")
            fn.append(f"d{i}")
            values += [f"s{i}", f"p{i}", f"r{i}"]
        else:  # a list: non-empty lists of non-blank strings on both sides
            assert items is not None
            namespace[f"L{i}"] = items.text_items
            body += [f"    if type(p{i}) is not list or type(r{i}) is not list or not p{i} or not r{i}:", "        return DECLINE",
                     f"    for x in p{i}:", f"        if {blank.format('x')}:", "            return DECLINE"]
            # x, y: text_items' detail arguments and None; or, for the same distinct strings in the same order
            # (text_items' first case, inline), the two lists themselves (_flat_details makes that detail).
            # e, g: the unmatched counts len(pred) - m and len(ref) - m, as text_items' caller counts them.
            general = [f"for x in r{i}:", f"    if {blank.format('x')}:", "        return DECLINE",
                       f"s{i}, m{i}, x{i} = L{i}(p{i}, r{i})", f"y{i} = None", f"e{i} = len(x{i}[3]) - m{i}",
                       f"g{i} = len(x{i}[4]) - m{i}"]
            if items.mode == "set":
                body += [f"    if p{i} == r{i} and len(set(r{i})) == len(r{i}):",
                         f"        for x in r{i}:", "            if type(x) is not str:",  # equal to non-blank strings
                         "                return DECLINE",
                         f"        s{i} = 1.0", f"        m{i} = len(r{i})", f"        x{i} = p{i}", f"        y{i} = r{i}",
                         f"        e{i} = g{i} = 0", "    else:", *(f"        {line}" for line in general)]
            else:
                body += [f"    {line}" for line in general]
            tp.append(f"m{i}")
            fp.append(f"e{i}")
            fn.append(f"g{i}")
            values += [f"x{i}", f"y{i}"]
    # Left to right, as the generic walk adds them up field by field: the same floats (w * s is s when w is 1).
    body += ["    tp = 0.0 + " + " + ".join(tp),
             "    fp = 0.0 + " + " + ".join(fp),
             "    fn = 0.0 + " + " + ".join(fn),
             "    total = 0.0 + " + " + ".join(f"s{i}" if plan[i][1] == 1.0 else f"W{i} * s{i}" for i in range(size)),
             "    sub_scores = {" + ", ".join(f"K{i}: s{i}" for i in range(size)) + "}",
             "    values = (" + ", ".join(values) + ",)"]  # the details' values, in one tuple (see _flat_details)
    if weighted_mean is None:
        body.append("    return FINISH(total, sub_scores, values, (tp, fp, fn))")
    else:  # the weighted mean, inline (as _finish_flat computes it)
        namespace.update(WEIGHTS=weighted_mean, GRADE=Grade._recorded, BUILD=_flat_details(plan))
        body += ["    score = total / WEIGHTS", "    if score > 1.0:", "        score = 1.0", "    elif score < 0.0:",
                 "        score = 0.0", "    return GRADE(score, sub_scores, BUILD, values, tp, fp, fn, 'weighted_mean')"]
    lines = ["def compare_flat(pred, ref):",
             "    if type(pred) is not dict or type(ref) is not dict:", "        return None",
             *(line.replace("DECLINE", "None") for line in body),
             "",
             "def grade_text(text, ref):",  # the hot path of parse_response (see _parsing._bare_object), then the above
             "    stripped = text.strip()",
             "    if type(ref) is not dict or stripped[:1] != '{' or stripped[-1:] != '}':", "        return NOT_BARE",
             "    try:",
             "        pred, end = SCAN(stripped, 0)",
             "    except (StopIteration, ValueError, RecursionError):", "        return NOT_BARE",
             "    if end != len(stripped):", "        return NOT_BARE"]
    if validating is None and schema is not None:
        namespace["VALID"] = schema.is_valid
        lines += ["    if not VALID(pred):", "        return NOT_BARE"]
    lines += [line.replace("DECLINE", "pred") for line in body]
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<rftkit flat grader>", "exec"), namespace)  # our own source; values live in the namespace
    return namespace["compare_flat"], namespace["grade_text"], source


_REFERENCES = 512
"""How many decoded JSON-text references :func:`_decoded_reference` keeps."""
_REFERENCE_CHARS = 64 * 1024
"""References longer than this are decoded every time (so the cache holds at most 512 x 64 KiB of text)."""


def _decoded_reference(text: str) -> Any:
    """A reference given as JSON text, decoded; the last few hundred short ones are kept, because RL
    grades a group's samples (8, say) against one reference, sent as the same text each time."""
    return _decode_reference(text) if len(text) > _REFERENCE_CHARS else _cached_reference(text)


def _decode_reference(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise GraderConfigError(f"reference is not valid JSON: {exc}", code="bad_reference", hint=_REFERENCE_HINT) from None


_cached_reference = lru_cache(maxsize=_REFERENCES)(_decode_reference)  # an error is raised, not kept

_REFERENCE_HINT = ("a reference is the expected answer: a JSON object (or array), its JSON text, or a pydantic model "
                   "instance; check the dataset's reference column (OpenRLHF: --label_key)")
_PLAIN = frozenset({str, int, float, bool, type(None)})
"""The types of JSON's scalar values as ``json.loads`` makes them."""


def _json_kind(value: Any) -> str:
    """How a message names a reference's kind."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "JSON object"
    if isinstance(value, list):
        return "JSON array"
    return type(value).__name__


def _plain_reference(reference: Any) -> Any:
    """A reference as plain JSON values, the way users naturally pass one; what cannot be one raises.

    Accepted: a JSON object or array; its JSON text; a pydantic model instance; and, inside
    any of them (as ``Model.model_dump()`` leaves them), dates, datetimes and times (as ISO
    8601 text), decimals (as floats), enums (their values), UUIDs (text), tuples and sets
    (lists), nested model instances. Refused with ``bad_reference``: None, an empty or
    non-JSON string, JSON text of a scalar, a scalar, any other object (its pointer given).
    A reference that needs no conversion is returned as is (it is checked, not copied).

    >>> import datetime
    >>> _plain_reference({"on": datetime.date(2024, 3, 15), "tags": ("a",)})
    {'on': '2024-03-15', 'tags': ['a']}
    """
    kind = type(reference)
    if kind is dict or kind is list:
        return reference if _is_plain(reference) else _converted(reference, "")
    if kind is str or isinstance(reference, str):
        text = str(reference)
        if not text.strip():
            raise GraderConfigError("the reference is an empty string: there is nothing to grade against",
                                    code="bad_reference", pointer="", hint=_REFERENCE_HINT)
        if text.lstrip()[:1] not in ("{", "["):
            try:
                json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise GraderConfigError(f"the reference is a string that is not JSON: {text[:60]!r}", code="bad_reference",
                                        pointer="", hint=_REFERENCE_HINT) from None
            raise GraderConfigError(f"the reference is the JSON text of a scalar ({text[:60]!r}), not of an object or array",
                                    code="bad_reference", pointer="", hint=_REFERENCE_HINT)
        return _decoded_reference(text)
    if reference is None:
        raise GraderConfigError("the reference is null: there is nothing to grade against (a missing label?)",
                                code="bad_reference", pointer="", hint=_REFERENCE_HINT)
    if isinstance(reference, BaseModel):
        return _plain_reference(reference.model_dump(mode="json"))
    if isinstance(reference, (Mapping, list, tuple)):
        return _converted(reference, "")
    raise GraderConfigError(f"the reference is a {_json_kind(reference)}, not a JSON object or array", code="bad_reference",
                            pointer="", hint=_REFERENCE_HINT)


def _is_plain(value: Any) -> bool:
    """True when ``value`` holds only what ``json.loads`` makes (iterative: any depth)."""
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is dict:
            for key, item in v.items():
                if type(key) is not str:
                    return False
                if type(item) in _PLAIN:
                    continue
                stack.append(item)
        elif kind is list:
            for item in v:
                if type(item) not in _PLAIN:
                    stack.append(item)
        elif kind not in _PLAIN:
            return False
    return True


def _converted(value: Any, pointer: str) -> Any:
    """``value`` with every leaf turned into a JSON value (see :func:`_plain_reference`); ``pointer`` is where it is."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Enum):
        return _converted(value.value, pointer)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, Enum):
                key = key.value
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise GraderConfigError(f"the reference has a key {key!r} at {pointer or '/'}, which is not a JSON key",
                                        code="bad_reference", pointer=pointer, hint="JSON object keys are strings")
            name = str(key)
            out[name] = _converted(item, f"{pointer}/{_escape(name)}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_converted(item, f"{pointer}/{i}") for i, item in enumerate(value)]
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date; ISO 8601 as pydantic writes it ("...Z" for UTC)
        return str(to_jsonable_python(value))
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _converted(dataclasses.asdict(value), pointer)
    raise GraderConfigError(f"the reference holds a {type(value).__name__} at {pointer or '/'}, which is not a JSON value",
                            code="bad_reference", pointer=pointer,
                            hint="references hold JSON values (and dates, decimals, enums, UUIDs, which are converted)")


def _note_issues(details: dict[str, FieldDetail], issues: tuple[Issue, ...]) -> None:
    """Note each schema violation in the detail of the deepest field its pointer reaches (the output
    was graded field by field anyway); violations of the whole object stay in ``Grade.issues`` only."""
    for issue in issues:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in issue.pointer.split("/")[1:]]
        fields: dict[str, FieldDetail] | None = details
        target: FieldDetail | None = None
        for token in tokens:
            if fields is None or token not in fields:
                break
            target = fields[token]
            fields = target.fields
        if target is not None:
            note = f"violates the schema at {issue.pointer}: {issue.message}"
            target.notes = [*(target.notes or ()), note]


def _valid(schema: Schema, value: Any) -> bool | None:
    """Whether ``value`` satisfies ``schema``; None when it is nested too deeply to tell here (the full stages report it)."""
    try:
        return schema.is_valid(value)
    except RecursionError:
        return None


# --------------------------------------------------------------------------- aggregation


Counts = tuple[float, float, float]
"""(true positives, false positives, false negatives) over leaf values."""


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
        self._flat: Callable[[Any, Any], Grade | None] | None = None
        """The fast path (:func:`_compile_flat`), or None (tests set both to None to compare with the generic walk)."""
        self._flat_text: Callable[[str, Any], Any] | None = None
        """The fast path from the response's text (:func:`_compile_flat`), or None."""
        self._flat_source = ""
        self._flat_build: DetailsBuilder | None = None
        self._flat_validates = False
        """True when the fast path checks the schema itself (its checks are the schema's), so grade() skips validation before it."""
        plan = _flat_plan(self._root)
        self._bounded = plan is not None and all(
            (leaf is None or (leaf is not _math_comparator and not getattr(leaf, "slow_on_long_texts", False)))
            and (lst is None or getattr(lst.element, "key", None) is not None)
            for _, _, _, leaf, lst in plan)
        """True when a grade costs about linear time in the response's size: the flat fast path, no ``math`` leaf
        (sympy can take seconds), no ``partial_ratio``/``WRatio`` fuzzy leaf, and lists matched by key only (no
        pairwise similarity matrix). ``rftkit serve`` grades such small requests on its event loop; any other goes
        to a grading thread under the deadline."""
        if plan is not None:
            inline = self._weights if self.aggregation == "weighted_mean" and self._weights > 0 else None
            validating = _validating_types(plan, self.schema)
            self._flat_validates = validating is not None
            self._flat_build = _flat_details(plan)
            self._flat, self._flat_text, self._flat_source = _compile_flat(
                plan, self.extra_fields == "penalize", self._finish_flat, inline, validating, self.schema)

    # -- grading -----------------------------------------------------------------------

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
        if type(got) is Grade:
            return got
        if got is None:  # a formula that gave no finite score: the full stages report it
            return self._full(response, reference, finish_reason)
        if got is not _NOT_BARE:  # a bare object the generated function left to the generic walk
            valid = not self._flat_validates or self.schema is None or _valid(self.schema, got)
            walk = self._walk
        else:  # fenced or wrapped in prose, not JSON at all, or not for the generated function
            got = _strict_value(response, lenient=self.lenient)
            if got is _UNDECODED:  # parse_response fails: the full stages say how when the grade is read
                return Grade._failed(partial(self._full, response, reference, finish_reason))
            if got is _NOT_BARE:
                return self._full(response, reference, finish_reason)
            valid = self.schema is None or _valid(self.schema, got)
            walk = self.compare
        if valid:
            return walk(got, reference, (), ())
        if valid is False and self.schema is not None:
            if self.on_schema_violation == "gate":  # 0: the full stages list the issues when they are read
                return Grade._failed(partial(self._full, response, reference, finish_reason))
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
            flag = {"truncated": "truncated_output_error", "schema_invalid": "schema_validation_error"}.get(parsed.status, "sample_parse_error")
            errors[flag] = True
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
        errors: dict[str, bool] | None = None
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
        return Grade(score, sub_scores, details, errors, None, repairs, issues, (ctx.tp, ctx.fp, ctx.fn), self.aggregation)

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
        return Grade._recorded(score, sub_scores, self._flat_build, values, *counts, self.aggregation)

    def grade_batch(self, responses: Iterable[str | Mapping[str, Any]], references: Iterable[Any], *, workers: int = 1,
                    progress: bool = False) -> list[Grade]:
        """Grade many responses, in parallel processes when ``workers > 1``; results keep input order."""
        from ._batch import grade_batch

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
        return (_from_structured_config, (self.config(),))

    def __repr__(self) -> str:
        return f"StructuredGrader(schema={self.schema!r}, aggregation={self.aggregation!r}, fields={sorted(self.fields)})"


_STRUCTURED_KEYS = frozenset({"type", "name", "schema", "fields", "aggregation", "formula", "on_schema_violation",
                              "schema_penalty", "partial_credit", "lenient", "repair_penalty", "extra_fields"})


def _from_structured_config(config: Mapping[str, Any]) -> StructuredGrader:
    """Build a StructuredGrader from ``{"type": "structured", ...}``; bad keys raise with their pointer."""
    unknown = set(config) - _STRUCTURED_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise GraderConfigError(f"unknown key {key!r} in a structured grader config", code="unknown_key", pointer=f"/{key}",
                                hint=f"known keys: {sorted(_STRUCTURED_KEYS)}")
    schema = config.get("schema")
    if schema is not None and not isinstance(schema, (str, Mapping)):
        raise GraderConfigError(f"schema must be a JSON Schema object or a file path, got {type(schema).__name__}",
                                code="bad_schema", pointer="/schema")
    if isinstance(schema, str) and not Path(schema).suffix:
        raise GraderConfigError(f"schema {schema!r} is neither a file path nor an object", code="bad_schema", pointer="/schema")
    try:
        loaded = Schema.load(schema) if schema is not None else None
    except SchemaError as exc:  # point into the config, not into the schema alone
        raise SchemaError(exc.message, code=exc.code, pointer="/schema" + exc.pointer, hint=exc.hint) from None
    kwargs = {k: v for k, v in config.items() if k not in ("type", "schema")}
    return StructuredGrader(loaded, **kwargs)


def structured_config_schema() -> dict[str, Any]:
    """The JSON Schema of a ``{"type": "structured", ...}`` grader config.

    Generated from :class:`StructuredOptions` (one source of truth) and shipped as
    ``schemas/formats/structured_grader.json``; a test keeps the two identical.
    """
    schema = StructuredOptions.model_json_schema()
    schema["title"] = "StructuredGraderConfig"
    schema["properties"] = {
        "type": {"const": "structured", "description": "The grader type."},
        "schema": {"description": "The response's JSON Schema (an object), or a path to a JSON file holding one.",
                   "anyOf": [{"type": "object"}, {"type": "string"}]},
        **schema["properties"],
    }
    schema["required"] = ["type"]
    return schema
