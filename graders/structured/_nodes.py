"""The node classes of a compiled schema: a leaf, a list (paired by optimal assignment), an object; each grades one value."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._result import FieldDetail
from ..comparators._base import Comparator
from ..comparators._registry import make_comparator
from ._matching import Pair, assign, ordered_pairs, prf
from ._options import (
    _MAX_DEPTH,
    _NUMBER_REL_TOL,
    _OBJECT_MATCH_THRESHOLD,
    _STRING_MATCH_THRESHOLD,
    ExtraFields,
    FieldSpec,
    ListMode,
    _implied_comparator,
)


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



