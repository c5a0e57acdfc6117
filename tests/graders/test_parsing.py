"""Tests for graders.structured: each stage alone, then the pipeline and its edge-case table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from graders import structured as _parsing
from graders.structured import _decode, _extract
from graders.structured._decode import decode_json, parse_response, validate_value
from graders.structured._extract import Decoded, Extraction, Parsed, extract_json
from schemas import Issue, Schema, UserError, load_schema

DEEP_ARRAYS = "[" * 10_000 + "]" * 10_000
DEEP_OBJECTS = '{"a":' * 10_000 + "1" + "}" * 10_000
PROSE_5MB = "The model thinks out loud here. " * 164_000  # about 5.2 MB, no brackets


def test_public_names() -> None:
    assert set(_parsing.__all__) >= {
        "MAX_CANDIDATES", "REPAIRS", "Decoded", "Extraction", "ExtractionMethod", "ParseStatus", "Parsed",
        "decode_json", "extract_json", "parse_response", "validate_value", "DEFAULT_MAX_OUTPUT_CHARS", "MAX_OUTPUT_CHARS_ENV",
        "max_output_chars", "set_max_output_chars",
    }
    for name in _parsing.__all__:
        assert hasattr(_parsing, name)


# --------------------------------------------------------------------------------------
# extract


class TestExtract:
    def test_bare_fast_path_does_not_scan(self) -> None:
        # starts and ends like JSON: handed over whole, even if it will not decode
        assert extract_json(' \n{"a": 1} and {"b": 2}\n') == Extraction('{"a": 1} and {"b": 2}', "bare", False)

    def test_bare_array(self) -> None:
        assert extract_json("[1, 2]") == Extraction("[1, 2]", "bare", False)

    def test_fence_with_language(self) -> None:
        text = 'Here:\n```json\n{"a": 1}\n```\nThanks.'
        assert extract_json(text) == Extraction('{"a": 1}', "fence", False)

    def test_fence_without_language(self) -> None:
        assert extract_json('x\n```\n[1]\n```\n').fragment == "[1]"

    def test_last_json_fence_wins_and_other_languages_are_skipped(self) -> None:
        text = '```json\n{"a": 1}\n```\n```json\n{"a": 2}\n```\n```python\nx = {"a": 3}\n```\n'
        assert extract_json(text).fragment == '{"a": 2}'

    def test_backticks_inside_json_strings_are_not_fences(self) -> None:
        text = '```json\n{"code": "```python\\nprint(1)\\n```"}\n```\n'
        assert extract_json(text).fragment == '{"code": "```python\\nprint(1)\\n```"}'

    def test_longer_outer_fence_holds_an_inner_one(self) -> None:
        text = '````markdown\n```json\n{"inner": 1}\n```\n````\nanswer: {"outer": 2}'
        # the markdown block is not a JSON fence; the last object in the text wins
        assert extract_json(text) == Extraction('{"outer": 2}', "balanced", False)

    def test_unclosed_fence_is_truncated(self) -> None:
        assert extract_json('```json\n{"a": [1,') == Extraction('{"a": [1,', "fence", True)

    def test_last_balanced_object_wins(self) -> None:
        assert extract_json('A {"a": 1} B {"a": 2} C').fragment == '{"a": 2}'

    def test_object_preferred_over_trailing_citation(self) -> None:
        assert extract_json('Answer {"a": 1}, see [1].').fragment == '{"a": 1}'

    def test_braces_and_escaped_quotes_inside_strings(self) -> None:
        text = 'so {"a": "}{ \\" ]", "b": [1]} end'
        assert extract_json(text).fragment == '{"a": "}{ \\" ]", "b": [1]}'

    def test_prose_braces_do_not_open_objects(self) -> None:
        assert extract_json('use {braces} and [notes]; {"a": 1}').fragment == '{"a": 1}'

    def test_unclosed_object_is_truncated(self) -> None:
        assert extract_json('Result: {"a": 1, "b": [1,') == Extraction('{"a": 1, "b": [1,', "balanced", True)

    def test_complete_object_before_an_unclosed_one(self) -> None:
        text = '{"a": 1} then {"b": [1,'
        assert extract_json(text) == Extraction('{"a": 1}', "balanced", False)
        # with finish_reason "length" the answer being written was cut
        assert extract_json(text, finish_reason="length") == Extraction('{"b": [1,', "balanced", True)

    def test_length_marks_truncation(self) -> None:
        assert extract_json('{"a": 1}', finish_reason="length").truncated
        assert extract_json("no json", finish_reason="length") == Extraction(None, "none", True)

    def test_nothing_found(self) -> None:
        assert extract_json("just prose") == Extraction(None, "none", False)
        assert extract_json("") == Extraction(None, "none", False)

    def test_mismatched_closer_is_a_broken_candidate(self) -> None:
        assert extract_json('x {"a": [1}').fragment == '{"a": [1}'

    @pytest.mark.parametrize("text", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
    def test_deep_nesting_in_prose_is_scanned_iteratively(self, text: str) -> None:
        assert extract_json("deep: " + text + " done").fragment == text

    def test_5mb(self) -> None:
        assert extract_json(PROSE_5MB + '{"a": 1}').fragment == '{"a": 1}'
        assert extract_json(PROSE_5MB).method == "none"
        assert extract_json(PROSE_5MB + '{"a": [').truncated


# --------------------------------------------------------------------------------------
# decode


class TestDecode:
    def test_strict(self) -> None:
        assert decode_json('{"a": [1, 2.5, "x", null, true]}') == Decoded(
            {"a": [1, 2.5, "x", None, True]}, True, (), None)

    def test_json_null_is_a_value(self) -> None:
        assert decode_json("null") == Decoded(None, True, (), None)

    def test_unicode(self) -> None:
        assert decode_json('{"é": "😀", "u": "\\u00e9\\ud83d\\ude00"}').value == {"é": "😀", "u": "é😀"}

    @pytest.mark.parametrize("text", ["[NaN]", '{"a": Infinity}', "[-Infinity]"])
    @pytest.mark.parametrize("lenient", [False, True])
    def test_non_json_constants_rejected(self, text: str, lenient: bool) -> None:
        d = decode_json(text, lenient=lenient)
        assert not d.ok and d.value is None and d.error is not None and "is not JSON" in d.error

    @pytest.mark.parametrize(
        ("text", "value", "repairs"),
        [
            ('{"a": 1,}', {"a": 1}, ("trailing_comma",)),
            ("[1, [2,],\n]", [1, [2]], ("trailing_comma",)),
            ("{'a': 'it\\'s \"q\"'}", {"a": "it's \"q\""}, ("single_quotes",)),
            ('{"a": True, "b": False, "c": None}', {"a": True, "b": False, "c": None}, ("python_literals",)),
            ("{'a': [True,],}", {"a": [True]}, ("trailing_comma", "single_quotes", "python_literals")),
            ("{'a': true}", {"a": True}, ("single_quotes",)),
            ('{"a": "True, }"}', {"a": "True, }"}, ()),  # no repair needed: strings untouched
        ],
        ids=["trailing-comma-object", "trailing-comma-array", "single-quotes", "python-literals", "all-three",
             "single-quotes-json-literal", "already-json"],
    )
    def test_lenient_repairs_are_exact(self, text: str, value: Any, repairs: tuple[str, ...]) -> None:
        d = decode_json(text, lenient=True)
        assert d == Decoded(value, True, repairs, None)
        if repairs:
            strict = decode_json(text)
            assert not strict.ok and strict.error and "\n" not in strict.error

    @pytest.mark.parametrize(
        "text",
        ["{a: 1}", "[1,,]", "[,]", "{'a': 0x10}", "[1_000]", "[1j]", "(1, 2)", "{1, 2}", "[b'x']", "['\\x41']",
         "[u'x']", "['''x''']", "['a' 'b']", "[1, # comment\n]", "{'a': 1", "[1] [2]", "[True, 'open]", '[None, "open\n]'],
    )
    def test_lenient_allows_nothing_else(self, text: str) -> None:
        d = decode_json(text, lenient=True)
        assert not d.ok and d.repairs == () and d.error

    def test_lenient_single_quotes_keep_json_escapes(self) -> None:
        # JSON semantics, unlike ast.literal_eval: surrogate pairs join, "\/" is "/"
        assert decode_json("['\\ud83d\\ude00', '\\/']", lenient=True).value == ["😀", "/"]

    @pytest.mark.parametrize("text", [DEEP_ARRAYS, DEEP_OBJECTS, "[" * 10_000, "[1,]" + "]" * 5],
                             ids=["arrays", "objects", "open", "junk"])
    @pytest.mark.parametrize("lenient", [False, True])
    def test_never_raises(self, text: str, lenient: bool) -> None:
        d = decode_json(text, lenient=lenient)
        assert not d.ok and d.error

    def test_huge_integer_is_a_flagged_result(self) -> None:
        d = decode_json("[" + "9" * 5000 + "]")
        assert not d.ok and d.error and "\n" not in d.error


# --------------------------------------------------------------------------------------
# validate


class Person(BaseModel):
    name: str
    age: int


PERSON = load_schema(Person)
NUMBERS = load_schema({"type": "array", "items": {"type": "number"}})


class TestValidate:
    def test_pydantic_model(self) -> None:
        assert validate_value({"name": "Ada", "age": 36}, PERSON) == ()
        issues = validate_value({"name": "Ada", "age": "old"}, PERSON)
        assert [(i.code, i.pointer) for i in issues] == [("type", "/age")]

    def test_json_schema_dict_accepts_a_top_level_list(self) -> None:
        assert validate_value([1, 2.5], NUMBERS) == ()
        assert [i.pointer for i in validate_value([1, "x"], NUMBERS)] == ["/1"]

    def test_schema_invalid_keeps_the_value(self) -> None:
        p = parse_response('{"name": "Ada"}', PERSON)
        assert p.status == "schema_invalid" and not p.ok
        assert p.value == {"name": "Ada"}
        assert [(i.code, i.pointer) for i in p.issues] == [("required", "")]
        assert "Person" in p.reason and "\n" not in p.reason

    def test_list_against_object_schema(self) -> None:
        p = parse_response("[1, 2]", PERSON)
        assert p.status == "schema_invalid" and p.value == [1, 2]

    def test_ok_with_schema(self) -> None:
        p = parse_response('Sure: {"name": "Ada", "age": 36}', PERSON)
        assert p.ok and p.issues == ()

    def test_too_deep_for_the_validator(self) -> None:
        tree = load_schema({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"})
        deep: list[Any] = []
        for _ in range(5000):
            deep = [deep]
        issues = validate_value(deep, tree)
        assert all(isinstance(i, Issue) for i in issues)

    def test_unloaded_schema_is_misuse(self) -> None:
        with pytest.raises(UserError, match="load_schema"):
            parse_response("{}", {"type": "object"})  # type: ignore[arg-type]  # misuse on purpose


# --------------------------------------------------------------------------------------
# parse_response: the edge-case table

FENCED = 'Here is the result:\n```json\n{"city": "Paris"}\n```\nLet me know!'
NESTED_FENCE = '```json\n{"md": "```python\\nx = 1\\n```", "n": 2}\n```'

EDGE_CASES: list[tuple[str, str | dict[str, Any], dict[str, Any], str, Any]] = [
    # id, output, kwargs, status, value
    ("bare", '{"a": 1}', {}, "ok", {"a": 1}),
    ("whitespace-around", ' \n\t{"a": 1}\n ', {}, "ok", {"a": 1}),
    ("fence-with-prose", FENCED, {}, "ok", {"city": "Paris"}),
    ("fence-no-language", 'Result\n```\n{"a": 1}\n```', {}, "ok", {"a": 1}),
    ("nested-fences", NESTED_FENCE, {}, "ok", {"md": "```python\nx = 1\n```", "n": 2}),
    ("braces-in-strings", 'It is {"a": "{not} [an] }object{"}.', {}, "ok", {"a": "{not} [an] }object{"}),
    ("escaped-quotes", 'x {"a": "say \\"hi\\" \\\\", "b": "\\""} y', {}, "ok", {"a": 'say "hi" \\', "b": '"'}),
    ("unicode", 'Résumé 😀: {"ville": "Zürich 😀", "u": "\\u00e9"}', {}, "ok", {"ville": "Zürich 😀", "u": "é"}),
    ("empty", "", {}, "empty", None),
    ("whitespace-only", " \n\t ", {}, "empty", None),
    ("only-prose", "I cannot answer that, sorry.", {}, "no_json", None),
    ("two-objects-last-wins", 'Draft {"a": 1}. Final {"a": 2}.', {}, "ok", {"a": 2}),
    ("two-bare-objects", '{"a": 1}\n{"a": 2}', {}, "ok", {"a": 2}),
    ("top-level-list", "[1, 2, 3]", {}, "ok", [1, 2, 3]),
    ("list-in-prose", 'The items are ["x", "y"].', {}, "ok", ["x", "y"]),
    ("truncated-object", '{"a": 1, "b": [1,', {}, "truncated", None),
    ("truncated-in-string", 'ok: {"a": "unfinished', {}, "truncated", None),
    ("length-but-complete", '{"a": 1}', {"finish_reason": "length"}, "ok", {"a": 1}),
    ("length-cut", '{"a": 1, "b": tr', {"finish_reason": "length"}, "truncated", None),
    ("length-no-json", "Let me think step by", {"finish_reason": "length"}, "truncated", None),
    ("length-invalid", '{"a": 1,}', {"finish_reason": "length"}, "truncated", None),
    ("5mb-object-at-end", PROSE_5MB + '{"a": 1}', {}, "truncated", None),  # over the 1 MB per-sample bound
    ("5mb-no-object", PROSE_5MB, {}, "truncated", None),
    ("900kb-object-at-end", PROSE_5MB[:900_000] + '{"a": 1}', {}, "ok", {"a": 1}),
    ("900kb-no-object", PROSE_5MB[:900_000], {}, "no_json", None),
    ("deep-arrays", DEEP_ARRAYS, {}, "invalid_json", None),
    ("deep-objects", DEEP_OBJECTS, {}, "invalid_json", None),
    ("deep-arrays-lenient", DEEP_ARRAYS, {"lenient": True}, "invalid_json", None),
    ("deep-arrays-in-prose", "x " + DEEP_ARRAYS, {}, "invalid_json", None),
    ("trailing-comma-strict", '{"a": 1,}', {}, "invalid_json", None),
    ("trailing-comma-lenient", '{"a": 1,}', {"lenient": True}, "ok", {"a": 1}),
    ("single-quotes-strict", "{'a': 'b'}", {}, "invalid_json", None),
    ("single-quotes-lenient", "Out: {'a': 'b'}", {"lenient": True}, "ok", {"a": "b"}),
    ("python-literals-lenient", '{"a": True, "b": None}', {"lenient": True}, "ok", {"a": True, "b": None}),
    ("python-literals-strict", '{"a": True, "b": None}', {}, "invalid_json", None),
    ("nan-rejected", '{"a": NaN}', {}, "invalid_json", None),
    ("nan-rejected-lenient", '{"a": NaN}', {"lenient": True}, "invalid_json", None),
    ("sample-output-text", {"output_text": 'x {"a": 1}'}, {}, "ok", {"a": 1}),
    ("sample-output-json", {"output_json": {"a": [1]}, "output_text": "ignored"}, {}, "ok", {"a": [1]}),
    ("sample-output-json-none", {"output_json": None, "output_text": '{"a": 2}'}, {}, "ok", {"a": 2}),
    ("sample-choices", {"choices": [{"message": {"content": '{"a": 1}'}, "finish_reason": "stop"}]}, {}, "ok",
     {"a": 1}),
    ("sample-choices-length", {"choices": [{"message": {"content": '{"a": ['}, "finish_reason": "length"}]}, {},
     "truncated", None),
    ("sample-top-level-length", {"output_text": "thinking", "finish_reason": "length"}, {}, "truncated", None),
    ("sample-empty-text", {"output_text": ""}, {}, "empty", None),
    ("sample-content-none", {"choices": [{"message": {"content": None}}]}, {}, "no_json", None),
    ("sample-unknown-shape", {"text": '{"a": 1}'}, {}, "no_json", None),
    ("sample-empty-choices", {"choices": []}, {}, "no_json", None),
]


@pytest.mark.parametrize(("output", "kwargs", "status", "value"), [c[1:] for c in EDGE_CASES],
                         ids=[c[0] for c in EDGE_CASES])
def test_edge_cases(output: str | dict[str, Any], kwargs: dict[str, Any], status: str, value: Any) -> None:
    p = parse_response(output, **kwargs)
    assert isinstance(p, Parsed)
    assert (p.status, p.value) == (status, value)
    assert p.ok is (status == "ok")
    assert p.reason and "\n" not in p.reason
    if status in ("ok", "schema_invalid"):
        assert p.issues == () or status == "schema_invalid"
    else:
        assert p.issues == (Issue(status, "", p.reason, p.issues[0].input),)
        assert p.issues[0].input is None or len(str(p.issues[0].input)) < 250


def test_reasons_say_what_happened() -> None:
    assert parse_response(FENCED).reason == "parsed a JSON object from a ```json fence"
    assert parse_response("I cannot answer.").reason == "no JSON object or array found in 16 chars of text"
    assert "length" in parse_response('{"a": 1}', finish_reason="length").reason
    p = parse_response("{'a': 1,}", lenient=True)
    assert p.repairs == ("trailing_comma", "single_quotes") and "lenient repairs" in p.reason
    assert parse_response('{"a": 1,}').method == "bare"
    assert parse_response('{"a": 1, "b": [').method == "balanced"


def test_later_candidate_that_does_not_decode_is_skipped() -> None:
    p = parse_response('Answer {"a": 1}. Wrong: {"a": 1,}')
    assert p.value == {"a": 1} and "did not decode" in p.reason


def test_explicit_finish_reason_overrides_the_sample() -> None:
    sample = {"output_text": '{"a": [', "finish_reason": "length"}
    assert parse_response(sample).status == "truncated"
    assert parse_response({"output_text": '{"a": 1,}', "finish_reason": "length"}, finish_reason="stop").status == (
        "invalid_json")


@pytest.mark.parametrize("output", [None, 42, b'{"a": 1}', ["x"]], ids=["none", "int", "bytes", "list"])
def test_non_text_output_is_data(output: Any) -> None:
    p = parse_response(output)
    assert p.status == "no_json" and p.value is None and p.reason


def test_output_json_is_validated() -> None:
    assert parse_response({"output_json": {"name": "Ada", "age": 36}}, PERSON).ok
    assert parse_response({"output_json": {"name": "Ada"}}, PERSON).status == "schema_invalid"


# --------------------------------------------------------------------------------------
# properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**18), 10**18) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
json_dicts = st.dictionaries(st.text(), json_values, max_size=5)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.text(), st.booleans())
def test_never_raises_on_any_text(text: str, lenient: bool) -> None:
    p = parse_response(text, lenient=lenient)
    assert p.reason and "\n" not in p.reason
    assert (p.issues == ()) == (p.status == "ok")


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.sampled_from(["{", "[", "```json\n{", "x {'"]), st.text(alphabet=st.sampled_from("{}[]\"'\\,:1aTN \n`")))
def test_never_raises_on_bracket_soup(prefix: str, text: str) -> None:
    for lenient in (False, True):
        assert isinstance(parse_response(prefix + text, lenient=lenient), Parsed)


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(json_dicts, st.sampled_from(["bare", "indent", "prose", "fence"]))
def test_round_trip(d: dict[str, Any], wrap: str) -> None:
    text = json.dumps(d, indent=2 if wrap == "indent" else None)
    if wrap == "prose":
        text = f"Let me think. {{braces}} and [notes].\nAnswer: {text}\nHope that helps!"
    elif wrap == "fence":
        text = f"Sure:\n```json\n{text}\n```\n"
    p = parse_response(text)
    assert (p.status, p.value, p.repairs) == ("ok", d, ())


@settings(max_examples=50, deadline=None, database=None, derandomize=True)
@given(json_dicts)
def test_round_trip_lenient_is_unrepaired(d: dict[str, Any]) -> None:
    assert parse_response(json.dumps(d), lenient=True).repairs == ()


def test_schema_type_is_schema() -> None:
    assert isinstance(PERSON, Schema)


# --------------------------------------------------------------------------------------
# the per-sample bound


@pytest.fixture
def bound_100() -> Any:
    _parsing.set_max_output_chars(100)
    yield 100
    _parsing.set_max_output_chars(None)


def not_read(*_: Any, **__: Any) -> Any:
    raise AssertionError("an output over the bound was read")


@pytest.mark.parametrize("output", ["{" * 101, '{"a": "' + "x" * 100 + '"}', "x" * 101 + '{"a": 1}',
                                    {"output_text": "{" * 101}, {"choices": [{"message": {"content": "[" * 200}}]}])
def test_an_output_over_the_bound_is_truncated_without_being_read(bound_100: int, output: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for stage in ("_scan", "_fences", "_loads", "_bare_object"):
        for module in (_extract, _decode):  # where each stage is defined, and where it is called from
            if hasattr(module, stage):
                monkeypatch.setattr(module, stage, not_read)
    p = parse_response(output)
    assert (p.status, p.value, p.method) == ("truncated", None, "none")
    assert "per-sample bound of 100" in p.reason and "RFTKIT_MAX_OUTPUT_CHARS" in p.reason
    assert _decode._strict_value(output if isinstance(output, str) else "{" * 101) is _decode._UNDECODED
    monkeypatch.undo()
    assert parse_response('{"a": "' + "x" * 90 + '"}').status == "ok"  # at the bound: read as usual


def test_thirty_megabytes_of_braces_cost_no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    from graders import StructuredGrader

    for module in (_extract, _decode):
        for stage in ("_scan", "_fences"):
            if hasattr(module, stage):
                monkeypatch.setattr(module, stage, not_read)
    grade = StructuredGrader().grade("{" * 30_000_000, {"a": 1})
    assert grade.score == 0.0 and grade.errors["truncated_output_error"] and "30,000,000 characters" in grade.reason


def test_a_valid_object_over_the_bound_is_truncated_for_the_structured_grader(bound_100: int) -> None:
    from graders import StructuredGrader

    big, small = '{"a": "' + "x" * 100 + '"}', '{"a": "' + "x" * 80 + '"}'
    for grader in (StructuredGrader(), StructuredGrader(schema={"type": "object", "properties": {"a": {"type": "string"}}})):
        grade = grader.grade(big, {"a": "x" * 100})
        assert (grade.score, grade.errors["truncated_output_error"]) == (0.0, True), grade.reason
        assert grader.grade(small, {"a": "x" * 80}).score == 1.0


def test_the_bound_is_set_by_the_environment_or_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parsing.max_output_chars() == _parsing.DEFAULT_MAX_OUTPUT_CHARS == 1_000_000
    monkeypatch.setenv(_parsing.MAX_OUTPUT_CHARS_ENV, "2_000")
    _parsing.set_max_output_chars(None)
    try:
        assert _parsing.max_output_chars() == 2000
        _parsing.set_max_output_chars(50)
        assert _parsing.max_output_chars() == 50
        for bad in (0, -1, "many", 1.5, True):
            with pytest.raises(UserError, match="positive integer"):
                _parsing.set_max_output_chars(bad)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv(_parsing.MAX_OUTPUT_CHARS_ENV)
        _parsing.set_max_output_chars(None)
    assert _parsing.max_output_chars() == 1_000_000


def plain_spans(text: str) -> Any:
    """The scan's openers by the plain rule (one search per bracket, then a look at the next non-space character)."""
    out, pos = [], 0
    while True:
        at = min((i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0), default=-1)
        if at < 0:
            return out
        rest = text[at + 1:].lstrip(" \t\r\n")
        if not rest or rest[0] in ("\"'}" if text[at] == "{" else "\"'-0123456789[{]tfnTFN"):
            out.append(at)
        pos = at + 1


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from("{}[]\"' \n\tax1-tN"), max_size=40))
def test_the_one_search_opener_finds_what_the_plain_rule_finds(text: str) -> None:
    assert [m.start() for m in _extract._JSON_OPENER.finditer(text)] == plain_spans(text)
