"""The fenced fast path: flat schemas graded by generated code, checked against the plain path.

:func:`compile_fast_path` is the one entry point: for a schema whose fields are
values or lists of values it generates two functions (from a bare JSON text,
and from decoded objects) that decode, check, compare and combine in one pass,
with the same comparators, list pairing, counts and floats as the generic walk.
The source holds only names made here; every value from the schema or config is
bound in the functions' namespace. Each source is registered in
:mod:`linecache` under its own name (``<rftkit flat grader N>``) while its
functions live, so tracebacks and debuggers show it.
``tests/graders/test_fastpath.py`` grades randomized corpora both ways and
requires identical grades.

Why it is kept (``benchmarks/side_by_side.py`` against the generic walk alone,
2026-12-05, shared 2-core machine, medians of 3 alternated rounds):
``grader_throughput.py --n 50000``: ``grade_batch`` 1.36x the minimal grader
with it, 2.89x without (2.1x slower); ``batch_scaling.py --n 200000``:
``workers=1`` 1.36 s against 3.65 s; ``server_load.py``: 5.6 against 7.2 ms of
server CPU per 256-row batch (1.32x). ``benchmarks/NOTES.md`` has the table.
"""

from __future__ import annotations

import itertools
import linecache
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from schemas import Schema
from schemas._loading import FieldTypes

from .._lazy_grade import DetailsBuilder, LazyGrade
from .._result import FieldDetail, Grade
from ..comparators._base import Comparator
from ._decode import _DECODER, _NOT_BARE
from ._nodes import _cut_note, _identity_pairs, _Leaf, _List, _list_detail, _Node, _Object
from ._options import Counts

# --------------------------------------------------------------------------- the one entry point


class FastPath(NamedTuple):
    """A flat schema's generated grading functions (see :func:`compile_fast_path`)."""

    compare: Callable[[Any, Any], Grade | None]
    """``compare(prediction, reference)``: the Grade of two decoded objects, or None (the generic walk grades them)."""
    grade_text: Callable[[str, Any], Any]
    """``grade_text(response, reference)``: the same from a bare JSON object's text (see :func:`_compile_flat`)."""
    build: DetailsBuilder
    """Builds a fast-path grade's :class:`FieldDetail` objects from its recorded values."""
    validates: bool
    """True when the generated type checks are the schema's validation (:func:`_validating_types`)."""
    source: str
    """The generated source, registered in :mod:`linecache` while the functions live."""
    plan: tuple[_FlatField, ...]
    """The fields, in order: (name, weight, label, leaf comparator or None, list node or None)."""


def compile_fast_path(root: _Node, schema: Schema | None, *, penalize: bool,
                      finish: Callable[[float, dict[str, float], tuple[Any, ...], Counts], Grade | None],
                      weighted_mean: float | None) -> FastPath | None:
    """The fast path of a grader whose compiled schema is ``root``, or None when its shape has none.

    Flat shapes only (:func:`_flat_plan`: an object of leaves and of set or
    multiset lists of leaves). ``penalize`` is ``extra_fields="penalize"``;
    ``finish`` combines the field scores (the grader's aggregation) unless
    ``weighted_mean`` (the sum of the weights) lets the generated code do it.
    """
    plan = _flat_plan(root)
    if plan is None:
        return None
    validating = _validating_types(plan, schema)
    build = _flat_details(plan)
    compare, grade_text, source = _compile_flat(plan, penalize, finish, weighted_mean, validating, schema, build)
    return FastPath(compare, grade_text, build, validating is not None, source, plan)


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


_FlatFunctions = tuple[Callable[[Any, Any], "Grade | None"], Callable[[str, Any], Any], str]


_GENERATED = itertools.count()
"""Numbers the generated sources, so each has its own name in :mod:`linecache`."""


def _compile_flat(plan: tuple[_FlatField, ...], penalize: bool,
                  finish: Callable[[float, dict[str, float], tuple[Any, ...], Counts], Grade | None],
                  weighted_mean: float | None, validating: tuple[FieldTypes, bool] | None,
                  schema: Schema | None, build: DetailsBuilder) -> _FlatFunctions:
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
    bare JSON object (the hot path of :func:`graders.structured.parse_response`):
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
    namespace: dict[str, Any] = {"SCALARS": _SCALARS, "FINISH": finish, "NOT_BARE": _NOT_BARE, "DECODE": _DECODER.raw_decode}
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
        namespace.update(WEIGHTS=weighted_mean, GRADE=LazyGrade.recorded, BUILD=build)
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
             "        pred, end = DECODE(stripped)",
             "    except (ValueError, RecursionError):", "        return NOT_BARE",
             "    if end != len(stripped):", "        return NOT_BARE"]
    if validating is None and schema is not None:
        namespace["VALID"] = schema.is_valid
        lines += ["    if not VALID(pred):", "        return NOT_BARE"]
    lines += [line.replace("DECLINE", "pred") for line in body]
    source = "\n".join(lines) + "\n"
    filename = f"<rftkit flat grader {next(_GENERATED)}>"
    exec(compile(source, filename, "exec"), namespace)  # our own source; values live in the namespace
    compare, grade_text = namespace["compare_flat"], namespace["grade_text"]
    # Tracebacks and debuggers show the generated lines (as attrs does); the entry goes with the functions.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    weakref.finalize(compare, linecache.cache.pop, filename, None)
    return compare, grade_text, source
