"""The structured grader's fast paths give exactly the grades of the generic walk.

The fast path (``StructuredGrader._flat``, generated per schema) handles flat
objects of leaves and lists of leaves when both sides hold plain values; the
list core (``_List.text_items``) has shortcuts of its own. Each test here grades
a randomized corpus both ways and requires the same score, sub-scores, details
(``to_dict`` and the ``FieldDetail`` objects), counts and reason, bit for bit.
"""

from __future__ import annotations

import json
import pickle
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graders import FieldDetail, Grade, StructuredGrader, assign
from graders._structured import _flat_plan, _List, _list_detail

WORDS = ["Python", "python", " PYTHON ", "c++", "C++", "C#", "c", "Los Angeles", "los  angeles", "LA", "Berkeley",
         "Berkley", "University of California Berkeley", "Berkeley University of California", "", " ", "café",
         "CAFÉ", "x.", "...", "(x)", "12", "1,000", "1000", "2021-03-05", "5 March 2021", "true", "yes", "No"]

STRING = {"type": "string"}
LIST = {"type": "array", "items": {"type": "string"}}
SCHEMA = {"type": "object", "properties": {"a": STRING, "b": STRING, "tags": LIST, "more": LIST},
          "required": ["a", "tags"]}
MIXED = {"type": "object", "properties": {"a": STRING, "n": {"type": "number"}, "ok": {"type": "boolean"},
                                          "tags": LIST, "maybe": {"anyOf": [STRING, {"type": "null"}]}},
         "additionalProperties": False}

CHECKED = {"type": "object", "properties": {"a": {"type": "string", "minLength": 2}, "b": STRING, "tags": LIST},
           "required": ["a"], "additionalProperties": False}  # minLength: the fast path cannot check this schema itself

CONFIGS: list[dict[str, Any]] = [
    {"schema": SCHEMA},
    {"schema": SCHEMA, "fields": {"tags": {"comparator": "normalized"}, "more": {"comparator": "normalized",
                                                                                 "mode": "multiset"}}},
    {"schema": SCHEMA, "fields": {"a": {"comparator": "normalized", "strip_punctuation": True, "weight": 2},
                                  "b": {"comparator": "fuzzy", "scorer": "token_set_ratio", "threshold": 0.5},
                                  "tags": {"comparator": "normalized", "strip_punctuation": True},
                                  "more": {"comparator": "exact", "weight": 0}},
     "aggregation": "micro_f1"},
    {"schema": SCHEMA, "fields": {"a": {"comparator": "fuzzy", "threshold": 0.9, "partial_credit": False},
                                  "b": {"comparator": "enum", "case_sensitive": False, "required": True},
                                  "tags": {"comparator": "fuzzy", "threshold": 0.6, "mode": "multiset"},
                                  "more": {"mode": "ordered"}},
     "aggregation": "all_or_nothing", "extra_fields": "ignore"},
    {"schema": SCHEMA, "fields": {"a": {"comparator": "date", "order": "day_first"}, "b": {"comparator": "bool"},
                                  "tags": {"comparator": "normalized", "weight": 3}},
     "aggregation": "formula", "formula": "0.5 * a + 0.25 * tags + 0.25 * min(b, more)"},
    {"schema": SCHEMA, "aggregation": "formula", "formula": "log(a) + tags"},  # log(0) is a formula_parse_error
    {"schema": SCHEMA, "partial_credit": True, "fields": {"tags": {"comparator": "normalized"}}},
    {"schema": MIXED},
    {"schema": MIXED, "fields": {"n": {"comparator": "number", "rel_tol": 0.01}, "ok": {"comparator": "exact"},
                                 "a": {"comparator": "number"}}, "extra_fields": "ignore", "partial_credit": True},
    {"schema": CHECKED, "fields": {"tags": {"comparator": "normalized"}}},  # validated before the fast path
    {"schema": CHECKED, "extra_fields": "ignore", "aggregation": "micro_f1"},
]


def _pair(config: dict[str, Any]) -> tuple[StructuredGrader, StructuredGrader]:
    fast = StructuredGrader(**config)
    generic = StructuredGrader(**config)
    generic._flat = generic._flat_text = None  # the generic walk only
    return fast, generic


GRADERS = [_pair(config) for config in CONFIGS]

words = st.sampled_from(WORDS)
scalars = st.one_of(words, words, words, st.integers(-2, 1000), st.floats(-5, 5, width=16), st.booleans(), st.none())
text_lists = st.lists(words, max_size=6)
mixed_lists = st.lists(st.one_of(words, words, st.none(), st.integers(0, 3)), max_size=5)
values = st.one_of(scalars, scalars, text_lists, mixed_lists, st.just({}), st.just({"x": "y"}))
KEYS = ["a", "b", "tags", "more", "n", "ok", "maybe", "extra"]


nonblank = st.sampled_from([w for w in WORDS if w.strip()])
FILLED = {"string": nonblank, "array": st.lists(nonblank, min_size=1, max_size=6), "number": st.one_of(
    st.integers(-3, 1000), st.floats(-5, 5, width=16)), "boolean": st.booleans()}


@st.composite
def records(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """Records for ``schema``: often the common case (every field filled with a value of its type),
    else with a few changes (a gap, a blank, an extra key, a wrong type), or anything at all."""
    style = draw(st.sampled_from(["filled", "filled", "changed", "changed", "anything"]))
    if style == "anything":
        out: dict[str, Any] = {}
        for key in KEYS:
            if draw(st.integers(0, 3)) == 0:
                continue
            if key in ("tags", "more"):
                out[key] = draw(st.one_of(text_lists, text_lists, mixed_lists, scalars))
            else:
                out[key] = draw(st.one_of(words, words, values))
        return out
    out = {}
    for key, sub in schema["properties"].items():
        out[key] = draw(FILLED[sub.get("type", "string")])
    for _ in range(draw(st.integers(0, 2)) if style == "changed" else 0):
        key = draw(st.sampled_from(sorted(out) + ["extra"]))
        out[key] = draw(st.one_of(values, st.just(None), st.just(""), st.just([]), st.just([" "]), nonblank))
        if draw(st.booleans()) and key in out and key != "extra":
            del out[key]
    return out


def assert_same_grade(got: Grade, want: Grade) -> None:
    assert got.score == want.score
    assert list(got.sub_scores.items()) == list(want.sub_scores.items())  # values and order
    assert got.counts == want.counts and got.how == want.how
    assert got.reason == want.reason and got.errors == want.errors
    assert got.repairs == want.repairs and got.issues == want.issues
    assert list(got.details) == list(want.details)
    for name, detail in want.details.items():
        assert got.details[name] == detail, name  # every attribute, lists and pairs included
        assert type(got.details[name]) is FieldDetail
    assert got.to_dict() == want.to_dict()


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_fast_path_grades_like_the_generic_walk(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, len(GRADERS) - 1))
    fast, generic = GRADERS[which]
    schema = CONFIGS[which]["schema"]
    pred, ref = data.draw(records(schema)), data.draw(records(schema))
    text = json.dumps(pred)
    want = generic.grade(text, ref)
    assert_same_grade(fast.grade(text, ref), want)
    assert_same_grade(fast.grade(text, json.dumps(ref)), want)  # a reference given as JSON text
    assert_same_grade(fast.compare(pred, ref), generic.compare(pred, ref))


def _resume_pair(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    """The benchmark's shape: a résumé with realistic mistakes (typos, dropped, extra and reordered languages)."""
    langs = ["python", "c++", "java", "rust", "go", "c#", "C#", "Python", "sql", "r", "c", "f#", "node.js"]
    unis = ["University of California Berkeley", "Stanford University", "Carnegie Mellon University"]
    places = [("Los Angeles", "California"), ("Austin", "Texas"), ("New York", "New York")]
    city, state = rng.choice(places)
    ref = {"university": rng.choice(unis), "programming_languages": rng.sample(langs, rng.randint(1, 6)),
           "city": city, "state": state}
    pred = json.loads(json.dumps(ref))
    if rng.random() < 0.3:
        u = pred["university"]
        i = rng.randrange(len(u) - 1)
        pred["university"] = u[:i] + u[i + 1] + u[i] + u[i + 2:]
    if rng.random() < 0.5:
        pl = pred["programming_languages"]
        if rng.random() < 0.5:
            pl.pop(rng.randrange(len(pl)))
        for _ in range(rng.randint(0, 2)):
            pl.append(rng.choice(langs))
        rng.shuffle(pl)
    if rng.random() < 0.2:
        pred["city"], pred["state"] = rng.choice(places)
    if rng.random() < 0.1:
        pred["state"] = pred["state"].upper()
    return pred, ref


RESUME = {"type": "object", "properties": {"university": STRING, "programming_languages": LIST, "city": STRING,
                                           "state": STRING},
          "required": ["university", "programming_languages", "city", "state"]}


@pytest.mark.parametrize("fields", [None, {"programming_languages": {"comparator": "normalized"}},
                                    {"programming_languages": {"comparator": "normalized", "mode": "multiset"}}])
def test_fast_path_on_the_benchmark_shape(fields: dict[str, Any] | None) -> None:
    fast, generic = _pair({"schema": RESUME, "fields": fields})
    rng = random.Random(7)
    for _ in range(3000):
        pred, ref = _resume_pair(rng)
        text = json.dumps(pred)
        taken = fast._flat is not None and fast._flat(pred, ref) is not None
        assert taken == bool(pred["programming_languages"])  # an empty list is left to the generic walk
        assert_same_grade(fast.grade(text, ref), generic.grade(text, ref))


@pytest.mark.parametrize("n", [1, 64, 65, 200])
def test_long_identical_lists(n: int) -> None:
    fast, generic = _pair({"schema": SCHEMA, "fields": {"tags": {"comparator": "normalized"}}})
    ref = {"a": "x", "b": "y", "tags": [f"t{i}" for i in range(n)], "more": ["m"]}
    text = json.dumps(ref)
    assert_same_grade(fast.grade(text, ref), generic.grade(text, ref))
    assert fast.grade(text, ref).details["tags"].matched == [(i, i, 1.0) for i in range(n)]


def test_the_fast_path_is_the_one_taken() -> None:
    fast = StructuredGrader(schema=RESUME, fields={"programming_languages": {"comparator": "normalized"}})
    assert fast._flat is not None and "def compare_flat" in fast._flat_source

    class Boom:
        def grade(self, *args: Any) -> Any:
            raise AssertionError("the generic walk ran")

    fast._root = Boom()  # type: ignore[assignment]  # any use of the generic walk now fails
    ref = {"university": "MIT", "programming_languages": ["python", "c++"], "city": "Boston", "state": "MA"}
    grade = fast.grade(json.dumps({**ref, "programming_languages": ["c++", "rust"]}), ref)
    assert grade.sub_scores["programming_languages"] == 0.5 and grade.score == pytest.approx(3.5 / 4)
    langs = grade.details["programming_languages"]
    assert (langs.precision, langs.recall, langs.f1) == (0.5, 0.5, 0.5)
    assert langs.matched == [(0, 1, 1.0)] and langs.missing == ["python"] and langs.extra == ["rust"]


def test_which_graders_check_the_schema_themselves() -> None:
    flat = [fast._flat is not None for fast, _ in GRADERS]
    assert flat == [True] * 3 + [False] + [True] * 7  # the fourth has an ordered list
    assert [fast._flat_validates for fast, _ in GRADERS] == [True] * 3 + [False] + [True] * 5 + [False, False]
    for fast, _ in GRADERS[9:]:
        assert "VALID(pred)" in fast._flat_source
    assert not any("VALID" in fast._flat_source for fast, _ in GRADERS[:9])


def test_shapes_outside_the_fast_path_have_none() -> None:
    nested = {"type": "object", "properties": {"a": STRING, "inner": {"type": "object", "properties": {"b": STRING}}}}
    assert StructuredGrader(schema=nested)._flat is None
    assert StructuredGrader()._flat is None  # no schema: inferred at grade time
    ordered = StructuredGrader(schema=SCHEMA, fields={"tags": {"mode": "ordered"}})
    assert ordered._flat is None
    assert _flat_plan(ordered._root) is None


def test_field_names_never_reach_the_generated_source() -> None:
    hostile = '"):\n    import os  # '
    schema = {"type": "object", "properties": {hostile: STRING, "tags": LIST}}
    grader = StructuredGrader(schema=schema)
    assert grader._flat is not None and hostile not in grader._flat_source and "import" not in grader._flat_source
    grade = grader.grade(json.dumps({hostile: "x", "tags": ["a"]}), {hostile: "x", "tags": ["a"]})
    assert grade.score == 1.0 and grade.details[hostile].status == "compared"


def test_details_are_built_once_on_first_read_and_survive_pickling() -> None:
    grader = StructuredGrader(schema=RESUME)
    ref = {"university": "MIT", "programming_languages": ["python"], "city": "Boston", "state": "MA"}
    grade = grader.grade(json.dumps(ref), ref)
    first = grade.details
    assert grade.details is first and set(first) == set(ref)
    assert first["programming_languages"].matched == [(0, 0, 1.0)]
    again = pickle.loads(pickle.dumps(grader.grade(json.dumps(ref), ref)))
    assert again.to_dict() == grade.to_dict()
    grade.details = {}
    assert grade.details == {}


# --------------------------------------------------------------------------- the list core


def _reference_text_items(node: _List, pred: list[str], ref: list[str]) -> tuple[float, float, tuple[Any, ...]]:
    """The list comparison as written before the fast path (one bucket per key; a full matrix otherwise)."""
    element = node.element
    compare = element.compare  # type: ignore[attr-defined]
    key = element.key  # type: ignore[attr-defined]
    if node.mode == "set":
        pred_keys, ref_keys = dict.fromkeys(pred), dict.fromkeys(ref)
        pred, ref = list(pred_keys), list(ref_keys)
        if pred_keys.keys() == ref_keys.keys():
            where = {r: j for j, r in enumerate(ref)}
            return 1.0, len(ref), (node.label, 1.0, "compared", pred, ref, 1.0, 1.0, 1.0,
                                   [(i, where[p], 1.0) for i, p in enumerate(pred)], [], [])
    if key is not None:
        buckets: dict[str, list[int]] = {}
        for j, r in enumerate(ref):
            buckets.setdefault(key(r), []).append(j)
        pairs = []
        for i, p in enumerate(pred):
            js = buckets.get(key(p))
            if js:
                pairs.append((i, js.pop(0), 1.0))
    else:
        pairs = assign([[compare(p, r) for r in ref] for p in pred], node.threshold)
    matched = 0.0
    for _, _, s in pairs:
        matched += s
    used_p, used_r = {i for i, _, _ in pairs}, {j for _, j, _ in pairs}
    missing = [r for j, r in enumerate(ref) if j not in used_r]
    extra = [x for i, x in enumerate(pred) if i not in used_p]
    n_pred, n_ref = len(pred), len(ref)
    p_, r_, f1 = matched / n_pred, matched / n_ref, 2.0 * matched / (n_pred + n_ref)
    return f1, matched, (node.label, f1, "compared", pred, ref, p_, r_, f1, pairs, missing, extra)


LIST_NODES = [
    node
    for fields in ({"tags": {"comparator": "normalized"}}, {"tags": {"comparator": "normalized", "mode": "multiset"}},
                   {"tags": {"comparator": "normalized", "strip_punctuation": True}}, {"tags": {}},
                   {"tags": {"mode": "multiset", "threshold": 0.5}}, {"tags": {"comparator": "exact"}})
    for node in [StructuredGrader(schema=SCHEMA, fields=fields)._root.fields["tags"]]  # type: ignore[attr-defined]
]
items = st.lists(st.sampled_from([w for w in WORDS if w.strip()]), min_size=1, max_size=7)


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, len(LIST_NODES) - 1), items, items, st.booleans())
def test_list_core_equals_the_reference(which: int, pred: list[str], ref: list[str], same: bool) -> None:
    node = LIST_NODES[which]
    assert isinstance(node, _List)
    if same:
        pred = list(ref)  # the identical-list shortcut
    score, matched, args = node.text_items(list(pred), list(ref))
    want_score, want_matched, want_args = _reference_text_items(node, list(pred), list(ref))
    assert (score, matched) == (want_score, want_matched)
    assert type(matched) is type(want_matched)  # an int stays an int: the same float sums downstream
    assert _list_detail(args) == FieldDetail(*want_args)
