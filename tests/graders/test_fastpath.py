"""The structured grader's fast paths give exactly the grades of the generic walk.

The fast path (``StructuredGrader._flat``, generated per schema) handles flat
objects of leaves and lists of leaves when both sides hold plain values; the
list core (``_List.text_items``) has shortcuts of its own. ``grade`` also takes
shortcuts before them: a reference given as JSON text is decoded once (cached),
JSON in a fence or in prose is found without the full parse stages, and output
that fails (no JSON, cut, schema-invalid) gets a grade whose reason and issues
the full stages give when read. Each test here grades a randomized corpus both
ways, against the full stages (``StructuredGrader._full`` on a grader without
the fast path), and requires the same score, sub-scores, details (``to_dict``
and the ``FieldDetail`` objects), counts, reason, error flags, repairs and
issues, bit for bit.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graders import FieldDetail, Grade, GraderConfigError, StructuredGrader, from_config
from graders._lazy_grade import FailedGrade, packed
from graders._result import no_errors
from graders.integrations._openrlhf import _END_MARKERS, _strip_end, response_from_query
from graders.structured import assign
from graders.structured._fastpath import _flat_plan
from graders.structured._nodes import _List, _list_detail

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

IDENTIFIERS = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^.*$"}, "b": STRING, "tags": LIST,
                                               "more": LIST, "when": {"type": "string", "format": "date-time"},
                                               "id": {"type": "string", "format": "uuid"}}}

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
    {"schema": CHECKED, "on_schema_violation": "gate", "schema_penalty": 0.5},
    {"schema": CHECKED, "schema_penalty": 0.25},
    # identifiers and instants inferred from the schema; fuzzy texts cut to a few characters (noted in the details)
    {"schema": IDENTIFIERS, "fields": {"b": {"comparator": "fuzzy", "max_chars": 6}, "tags": {"max_chars": 4}}},
    {"schema": IDENTIFIERS, "fields": {"more": {"comparator": "fuzzy", "scorer": "WRatio", "max_chars": 3}},
     "aggregation": "micro_f1"},
]


def _pair(config: dict[str, Any]) -> tuple[StructuredGrader, StructuredGrader]:
    fast = StructuredGrader(**config)
    generic = StructuredGrader(**config)
    generic._flat = generic._flat_text = None  # the generic walk only
    return fast, generic


def full(generic: StructuredGrader, text: str, ref: Any, finish_reason: str | None = None) -> Grade:
    """The grade by the full stages alone (parse_response, then the generic walk): what every shortcut must give."""
    if isinstance(ref, str) and ref.lstrip()[:1] in ("{", "["):
        ref = json.loads(ref)
    return generic._full(text, ref, finish_reason)


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
    want = full(generic, text, ref)
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
        assert_same_grade(fast.grade(text, ref), full(generic, text, ref))


@pytest.mark.parametrize("n", [1, 64, 65, 200])
def test_long_identical_lists(n: int) -> None:
    fast, generic = _pair({"schema": SCHEMA, "fields": {"tags": {"comparator": "normalized"}}})
    ref = {"a": "x", "b": "y", "tags": [f"t{i}" for i in range(n)], "more": ["m"]}
    text = json.dumps(ref)
    assert_same_grade(fast.grade(text, ref), full(generic, text, ref))
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
    assert flat == [True] * 3 + [False] + [True] * 11  # the fourth has an ordered list
    # minLength, pattern and format: only the schema's validator can check those
    assert [fast._flat_validates for fast, _ in GRADERS] == [True] * 3 + [False] + [True] * 5 + [False] * 6
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



# --------------------------------------------------------------------------- text that is not one bare object

NESTED = {"type": "object", "properties": {"a": STRING, "tags": LIST, "inner": {"type": "object", "properties": {
    "b": STRING, "n": {"type": "integer"}}}}, "required": ["a"]}
WRAPPED_CONFIGS: list[dict[str, Any]] = [
    *CONFIGS,
    {"schema": SCHEMA, "lenient": True, "repair_penalty": 0.25, "fields": {"tags": {"comparator": "normalized"}}},
    {"schema": CHECKED, "lenient": True, "partial_credit": True},
    {"schema": NESTED},  # outside the generated fast path: the other shortcuts still apply
    {"schema": NESTED, "lenient": True, "partial_credit": True},
    {},  # no schema
]
WRAPPED = [_pair(config) for config in WRAPPED_CONFIGS]
WRAPS = [
    "@", "```json\n@\n```", "Here is the profile:\n```json\n@\n```\nDone.", "Sure! @ Hope that helps.", "```\n@\n```",
    "```python\n@\n```", "```json\n@", "@ @", 'First {"a": "x"}, then: @', "[@]", "  @\n\n",
    '```json\n@\n```\n```json\n{"a": 1}\n```', "@,", "The answer: ```json @ ```", "```json\n@\n```\nor @",
]


@st.composite
def outputs(draw: st.DrawFn, schema: dict[str, Any]) -> str:
    """Model outputs as RL sees them: the JSON bare, fenced or in prose, cut short, made non-JSON, or no JSON at all."""
    record = draw(records(schema)) if "properties" in schema and "inner" not in schema["properties"] else draw(
        st.fixed_dictionaries({}, optional={"a": words, "tags": text_lists, "inner": st.fixed_dictionaries(
            {}, optional={"b": words, "n": st.one_of(st.integers(0, 3), words)}), "extra": values}))
    text = json.dumps(record)
    change = draw(st.sampled_from(["none", "none", "cut", "quotes", "comma", "python", "other"]))
    if change == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif change == "quotes":
        text = text.replace('"', "'")
    elif change == "comma" and text.endswith("}") and len(text) > 2:
        text = text[:-1] + ",}"
    elif change == "python":
        text = text.replace("true", "True").replace("null", "None")
    elif change == "other":
        return draw(st.sampled_from(["I could not find the fields.", "", "   ", "{", "[1, 2", "```json\n```", "{} and []",
                                     '{"a": NaN}', '```json\n{"a": "x"}\n```\n{"a": "y"']))
    return draw(st.sampled_from(WRAPS)).replace("@", text)


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_every_output_grades_like_the_full_stages(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, len(WRAPPED) - 1))
    fast, generic = WRAPPED[which]
    schema = WRAPPED_CONFIGS[which].get("schema", {})
    text = data.draw(outputs(schema))
    ref = data.draw(records(schema)) if "properties" in schema and "inner" not in schema["properties"] else {
        "a": "Python", "tags": ["c++", "python"], "inner": {"b": "Berkeley", "n": 2}}
    finish_reason = data.draw(st.sampled_from([None, None, "stop", "length"]))
    want = full(generic, text, ref, finish_reason)
    got = fast.grade(text, ref, finish_reason=finish_reason)
    assert got.ok == want.ok  # before anything else is read: a failed grade knows it failed
    assert_same_grade(got, want)
    assert_same_grade(fast.grade(text, json.dumps(ref), finish_reason=finish_reason), want)
    assert_same_grade(pickle.loads(pickle.dumps(fast.grade(text, ref, finish_reason=finish_reason))), want)


BENCHMARK_ROWS = [json.loads(line) for line in (Path(__file__).parents[2] / "graders" / "data" / "resume_demo.jsonl")
                  .read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_benchmark_rows_take_the_shortcuts_and_grade_like_the_full_stages() -> None:
    config = json.loads((Path(__file__).parents[2] / "graders" / "data" / "resume_grader.json").read_text(encoding="utf-8"))
    fast = from_config(config)
    generic = from_config(config)
    assert isinstance(fast, StructuredGrader) and isinstance(generic, StructuredGrader)
    generic._flat = generic._flat_text = None
    for row in BENCHMARK_ROWS:
        label = json.dumps(row["reference"])
        want = full(generic, row["output"], label)
        with patch("graders.structured._grader.parse_response", side_effect=AssertionError("the full stages ran")):
            got = fast.grade(row["output"], label)
            assert (got.score, got.sub_scores) == (want.score, want.sub_scores)
        assert_same_grade(got, want)  # the reason and issues of a failed grade: the full stages, now


def test_a_failed_grade_is_explained_once_on_first_read() -> None:
    calls = []

    def explain() -> Grade:
        calls.append(1)
        return Grade(0.0, {}, {}, {**no_errors(), "sample_parse_error": True}, "no JSON", (), ())

    grade = FailedGrade(explain)
    assert (grade.score, grade.sub_scores, grade.details, grade.ok, grade.how) == (0.0, {}, {}, False, "")
    assert packed(grade) is grade and not calls  # a failed grade travels as itself (and is explained when pickled)
    assert grade.reason == "no JSON" and grade.errors["sample_parse_error"] and grade.counts is None
    assert grade.repairs == () and grade.issues == () and calls == [1]
    again = FailedGrade(explain)
    assert pickle.loads(pickle.dumps(again)).to_dict() == grade.to_dict() and calls == [1, 1]


def test_a_reference_given_as_json_text_is_decoded_once() -> None:
    grader = StructuredGrader(schema=RESUME)
    label = json.dumps({"university": "MIT", "programming_languages": ["go"], "city": "Boston", "state": "MA"})
    with patch("graders.structured._references.json.loads", wraps=json.loads) as loads:
        scores = {grader.grade(f'{{"university": "MIT", "programming_languages": ["go"], "city": "Boston", "state": "{s}"}}',
                               label).score for s in ("MA", "NY", "MA")}
    assert scores == {1.0, 0.75} and loads.call_count <= 1
    with pytest.raises(GraderConfigError, match="reference is not valid JSON"):
        grader.grade("{}", "{not json")
    with pytest.raises(GraderConfigError, match="reference is not valid JSON"):
        grader.grade("{}", "{not json")  # an error is not cached
    long = json.dumps({"university": "MIT " * 20000, "programming_languages": ["go"], "city": "Boston", "state": "MA"})
    with patch("graders.structured._references.json.loads", wraps=json.loads) as loads:
        grader.grade("{}", long)
        grader.grade("{}", long)
    assert loads.call_count == 2  # a long reference is not kept


END_BITS = ["<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<eos>", "<|end|>", " ", "\n", "\t", "\u00a0", "x",
            "}", "<|im_end", "s>", "<|end|", "end|>"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(END_BITS), max_size=8), st.lists(st.sampled_from(END_BITS), max_size=8))
def test_the_response_cut_strips_the_end_as_the_regex_did(head: list[str], tail: list[str]) -> None:
    old = re.compile("(?:" + "|".join(re.escape(m) for m in _END_MARKERS) + r"|\s)+\Z")
    text = "".join(head) + "{}" + "".join(tail)
    assert _strip_end(text) == old.sub("", text)
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert response_from_query(prompt + text, prompt) == old.sub("", text).lstrip("\n")


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


def test_generated_source_is_in_linecache_while_its_grader_lives() -> None:
    import gc
    import linecache

    grader = StructuredGrader(schema=RESUME, fields={"programming_languages": {"comparator": "normalized"}})
    assert grader._flat is not None
    filename = grader._flat.__code__.co_filename
    other = StructuredGrader(schema=RESUME)
    assert other._flat is not None and other._flat.__code__.co_filename != filename  # each source its own name
    first = grader._flat.__code__.co_firstlineno
    assert linecache.getline(filename, first).startswith("def compare_flat")  # tracebacks show the generated code
    assert linecache.getline(filename, first) == grader._flat_source.splitlines(True)[first - 1]
    del grader
    gc.collect()
    assert filename not in linecache.cache  # the entry goes with the grader
