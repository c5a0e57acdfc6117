"""OpenAI grader types run locally: string_check, multi, run_grader and validate_grader."""

from __future__ import annotations

import math
from typing import Any

import pytest

from graders import (
    ERROR_FLAGS,
    GraderConfigError,
    MultiGrader,
    StringCheckGrader,
    StructuredGrader,
    from_config,
    run_grader,
    validate_grader,
)


def check(operation: str, input: str = "{{ sample.output_text }}", reference: str = "{{ item.reference }}",
          name: str = "check") -> dict[str, Any]:
    return {"type": "string_check", "name": name, "input": input, "reference": reference, "operation": operation}


# -- string_check -------------------------------------------------------------------------------

STRING_CASES = [
    # (operation, model output, reference, score)
    ("eq", "Paris", "Paris", 1.0),
    ("eq", "Paris", "paris", 0.0),  # case-sensitive
    ("eq", "Paris ", "Paris", 0.0),  # no trimming
    ("eq", "", "", 1.0),
    ("eq", "São Paulo", "São Paulo", 1.0),
    ("eq", "São Paulo", "Sao Paulo", 0.0),  # accents are not folded
    ("eq", "e\u0301", "\u00e9", 0.0),  # no Unicode normalisation either: the code points differ
    ("ne", "Paris", "paris", 1.0),
    ("ne", "Paris", "Paris", 0.0),
    ("ne", "Paris", "Paris ", 1.0),
    ("like", "The capital is Paris.", "Paris", 1.0),
    ("like", "The capital is paris.", "Paris", 0.0),  # case-sensitive
    ("like", "Paris", "The capital is Paris.", 0.0),  # direction: the input contains the reference
    ("like", "100% sure", "100%", 1.0),
    ("like", "abc", "a%c", 0.0),  # % is not a wildcard
    ("like", "abc", "a_c", 0.0),  # neither is _
    ("like", "anything", "", 1.0),  # the empty string is contained in every input
    ("like", "東京都に住んでいます", "東京", 1.0),
    ("ilike", "The capital is PARIS.", "paris", 1.0),
    ("ilike", "the capital is paris.", "PARIS", 1.0),
    ("ilike", "ÉCOLE normale", "école", 1.0),
    ("ilike", "Ich wohne in der STRASSE", "straße", 1.0),  # Unicode case folding: ß folds to ss
    ("ilike", "Paris", "the capital is paris", 0.0),  # direction again
    ("ilike", "Paris", " paris", 0.0),  # no trimming
]


@pytest.mark.parametrize(("operation", "output", "reference", "score"), STRING_CASES, ids=repr)
def test_string_check_operations(operation: str, output: str, reference: str, score: float) -> None:
    grade = from_config(check(operation)).grade(output, {"reference": reference})
    assert grade.score == score and grade.ok
    assert grade.reason.startswith(f"{score:.0f}:")


@pytest.mark.parametrize("operation", ["eq", "like", "ilike"])
@pytest.mark.parametrize("reference", ["Paris", "São Paulo", "", "  spaced  ", '{"a": 1}'])
def test_string_check_scores_its_own_reference_1(operation: str, reference: str) -> None:
    assert from_config(check(operation)).grade(reference, {"reference": reference}).score == 1.0


def test_string_check_renders_non_strings_as_compact_json() -> None:
    grader = from_config(check("eq", input="{{ sample.output_json.answer }}", reference='[1,2,{"k":"é"}]'))
    assert grader.grade('{"answer": [1, 2, {"k": "é"}]}').score == 1.0
    assert from_config(check("eq", input="{{ sample.output_json.n }}", reference="3")).grade('{"n": 3}').score == 1.0
    assert from_config(check("eq", input="{{ sample.output_json.n }}", reference="3.0")).grade('{"n": 3}').score == 0.0
    assert from_config(check("eq", input="{{ sample.output_json.ok }}", reference="true")).grade('{"ok": true}').score == 1.0


@pytest.mark.parametrize(("config", "sample", "item", "says"), [
    (check("eq"), "Paris", {}, "reference"),
    (check("eq"), "Paris", None, "no item"),
    (check("eq", input="{{ sample.output_json.city }}"), "Paris", {"reference": "Paris"}, "no JSON"),
    (check("eq", input="{{ sample.output_json.city }}"), '{"town": "Paris"}', {"reference": "Paris"}, "no key 'city'"),
    (check("eq", reference="{{ item.answers[3] }}"), "Paris", {"answers": ["Paris"]}, "past the end"),
], ids=repr)
def test_a_missing_variable_scores_0_with_invalid_variable_error(config: dict[str, Any], sample: str,
                                                                 item: dict[str, Any] | None, says: str) -> None:
    grade = from_config(config).grade(sample, item)
    assert grade.score == 0.0
    assert grade.errors["invalid_variable_error"] and sum(grade.errors.values()) == 1
    assert says in grade.reason


def test_string_check_reads_sample_dicts_and_tool_calls() -> None:
    grader = from_config(check("eq", input="{{ sample.output_tools[0].function.name }}", reference="lookup"))
    sample = {"choices": [{"message": {"content": None, "tool_calls": [{"function": {"name": "lookup", "arguments": "{}"}}]}}]}
    assert grader.grade(sample).score == 1.0
    assert grader.grade({"output_tools": [{"function": {"name": "other"}}]}).score == 0.0


# -- multi --------------------------------------------------------------------------------------

CONTACT = {
    "type": "multi", "name": "contact", "calculate_output": "(name + email) / 2",
    "graders": {
        "name": check("eq", "{{ sample.output_json.name }}", "{{ item.name }}", "name"),
        "email": check("ilike", "{{ sample.output_json.email }}", "{{ item.email }}", "email"),
    },
}
CONTACT_ITEM = {"name": "Ada Lovelace", "email": "ada@example.com"}


@pytest.mark.parametrize(("output", "score", "subs"), [
    ('{"name": "Ada Lovelace", "email": "ada@example.com"}', 1.0, {"name": 1.0, "email": 1.0}),
    ('{"name": "Ada Lovelace", "email": "Mail: ADA@example.com"}', 1.0, {"name": 1.0, "email": 1.0}),
    ('{"name": "ada lovelace", "email": "ada@example.com"}', 0.5, {"name": 0.0, "email": 1.0}),
    ('{"name": "Ada Lovelace", "email": "ada@example.org"}', 0.5, {"name": 1.0, "email": 0.0}),
], ids=repr)
def test_multi_combines_named_sub_graders(output: str, score: float, subs: dict[str, float]) -> None:
    grade = from_config(CONTACT).grade(output, CONTACT_ITEM)
    assert grade.score == score and grade.sub_scores == subs and grade.ok
    assert set(grade.details) == {"name", "email"} and grade.details["name"].comparator == "string_check"


def _fixed(scores: dict[str, float], formula: str) -> MultiGrader:
    """A multi whose sub-graders score exactly ``scores`` (1 by eq on equal text, 0 on different text)."""
    graders = {k: check("eq", "x", "x" if v == 1.0 else "y", k) for k, v in scores.items()}
    return MultiGrader(name="m", graders=graders, calculate_output=formula)


@pytest.mark.parametrize(("scores", "formula", "expected"), [
    ({"a": 1.0, "b": 0.0}, "0.25 * a + 0.75 * b", 0.25),
    ({"a": 1.0, "b": 1.0}, "a ^ 2 * b", 1.0),
    ({"a": 0.0, "b": 1.0}, "(a + b) ^ 2 / 4", 0.25),
    ({"a": 1.0, "b": 1.0}, "2 ^ 3 ^ 2 / 512", 1.0),  # right-associative: 2^9
    ({"a": 1.0, "b": 0.0}, "min(a, b)", 0.0),
    ({"a": 1.0, "b": 0.0}, "max(a, b)", 1.0),
    ({"a": 1.0, "b": 0.0}, "max(a, b, 0.3) - min(a, b, 0.3)", 1.0),
    ({"a": 1.0, "b": 0.0}, "abs(b - a)", 1.0),
    ({"a": 1.0, "b": 0.0}, "floor(a * 0.9) + ceil(b + 0.1) / 2", 0.5),
    ({"a": 1.0, "b": 1.0}, "sqrt(a) * exp(b - 1)", 1.0),
    ({"a": 1.0, "b": 1.0}, "-a + 2 * b", 1.0),
    ({"a": 1.0, "b": 1.0}, "a + b", 1.0),  # 2, clamped to [0, 1]
    ({"a": 0.0, "b": 1.0}, "a - b", 0.0),  # -1, clamped
    ({"a": 1.0, "b": 1.0}, "2 * a * b / max(a + b, 1e-9)", 1.0),  # F1 of precision a and recall b
    ({"a": 0.0, "b": 0.0}, "2 * a * b / max(a + b, 1e-9)", 0.0),  # ... with no division by zero
], ids=repr)
def test_multi_formulas(scores: dict[str, float], formula: str, expected: float) -> None:
    grade = _fixed(scores, formula).grade("anything")
    assert grade.sub_scores == scores
    assert grade.score == pytest.approx(expected) and grade.ok


@pytest.mark.parametrize("formula", ["log(a)", "a / b", "sqrt(b - 1)", "exp(1000 * (1 - a))", "(b - 1) ^ 0.5"])
def test_a_math_error_scores_0_with_formula_parse_error(formula: str) -> None:
    grade = _fixed({"a": 0.0, "b": 0.0}, formula).grade("anything")
    assert grade.score == 0.0 and grade.errors["formula_parse_error"]
    assert "scored 0" in grade.reason


def test_a_failing_sub_grader_scores_0_and_raises_its_flag_on_the_multi() -> None:
    grade = from_config(CONTACT).grade('{"name": "Ada Lovelace"}', CONTACT_ITEM)
    assert grade.sub_scores == {"name": 1.0, "email": 0.0} and grade.score == 0.5
    assert grade.errors["invalid_variable_error"] and "email" in grade.reason


def test_structured_is_a_sub_grader_with_a_reference_template() -> None:
    config = {
        "type": "multi", "name": "resume", "calculate_output": "0.8 * fields + 0.2 * city_exact",
        "graders": {
            "fields": {"type": "structured", "name": "fields", "reference": "{{ item.answer }}",
                       "fields": {"city": {"comparator": "normalized"}, "langs": {"mode": "set"}}},
            "city_exact": check("eq", "{{ sample.output_json.city }}", "{{ item.answer.city }}", "city_exact"),
        },
    }
    answer = {"city": "Los Angeles", "langs": ["python", "c++"]}
    item = {"answer": answer}
    gold = from_config(config).grade(json_text(answer), item)
    assert gold.score == 1.0 and gold.ok  # the reference scores 1
    grade = from_config(config).grade('{"city": "los angeles", "langs": ["python"]}', item)
    assert grade.sub_scores["city_exact"] == 0.0
    assert grade.details["fields"].fields is not None and set(grade.details["fields"].fields) == {"city", "langs"}
    expected = StructuredGrader(fields={"city": {"comparator": "normalized"}}).grade(
        '{"city": "los angeles", "langs": ["python"]}', answer).score
    assert grade.sub_scores["fields"] == pytest.approx(expected)
    assert grade.score == pytest.approx(0.8 * expected)


def test_structured_sub_grader_reference_defaults_to_item_reference() -> None:
    config = {"type": "multi", "name": "m", "calculate_output": "s", "graders": {"s": {"type": "structured"}}}
    assert from_config(config).grade('{"a": 1}', {"reference": {"a": 1}}).score == 1.0
    assert from_config(config).grade('{"a": 1}', {"reference": '{"a": 1}'}).score == 1.0  # a JSON string is decoded
    missing = from_config(config).grade('{"a": 1}', {"answer": {"a": 1}})
    assert missing.score == 0.0 and missing.errors["invalid_variable_error"]
    unparsable = from_config(config).grade("no json here", {"reference": {"a": 1}})
    assert unparsable.score == 0.0 and unparsable.errors["sample_parse_error"]


def test_a_structured_option_checked_while_grading_points_into_the_multi() -> None:
    config = {"type": "multi", "name": "m", "calculate_output": "s",
              "graders": {"s": {"type": "structured", "fields": {"a": {"comparator": "nope"}}}}}
    with pytest.raises(GraderConfigError) as info:
        from_config(config).grade('{"a": 1}', {"reference": {"a": 1}})
    assert info.value.pointer == "/graders/s/fields/a/comparator"


def test_config_round_trips() -> None:
    multi = from_config(CONTACT)
    assert isinstance(multi, MultiGrader) and multi.config() == CONTACT
    single = from_config(check("ilike"))
    assert isinstance(single, StringCheckGrader) and from_config(single.config()).config() == check("ilike")


# -- run_grader and validate_grader -------------------------------------------------------------

ERROR_KEYS = [*ERROR_FLAGS, "python_grader_server_error_type", "python_grader_runtime_error_details",
              "model_grader_server_error_details"]


def test_run_grader_answers_in_the_graders_run_shape() -> None:
    result = run_grader(CONTACT, '{"name": "Ada Lovelace", "email": "x@y.z"}', CONTACT_ITEM)
    assert set(result) == {"reward", "metadata", "sub_rewards", "model_grader_token_usage_per_model"}
    assert set(result["metadata"]) == {"name", "type", "errors", "execution_time", "scores", "token_usage", "sampled_model_name"}
    assert sorted(result["metadata"]["errors"]) == sorted(ERROR_KEYS)
    assert result["reward"] == 0.5
    assert result["sub_rewards"] == result["metadata"]["scores"] == {"name": 1.0, "email": 0.0}
    assert (result["metadata"]["name"], result["metadata"]["type"]) == ("contact", "multi")
    assert not any(result["metadata"]["errors"][k] for k in ERROR_FLAGS)
    assert result["metadata"]["errors"]["python_grader_runtime_error_details"] is None
    assert 0.0 <= result["metadata"]["execution_time"] < 1.0 and math.isfinite(result["metadata"]["execution_time"])


def test_run_grader_flags_and_single_graders() -> None:
    result = run_grader(check("eq"), "Paris")
    assert result["reward"] == 0.0 and result["metadata"]["errors"]["invalid_variable_error"]
    assert result["sub_rewards"] == {} and result["metadata"]["type"] == "string_check"
    structured = run_grader({"type": "structured", "reference": "{{ item.gold }}"}, '{"a": 1, "b": 2}', {"gold": {"a": 1, "b": 3}})
    assert structured["reward"] == 0.5 and structured["sub_rewards"] == {"a": 1.0, "b": 0.0}
    assert structured["metadata"]["type"] == "structured"


def test_run_grader_reads_a_config_file(tmp_path: Any) -> None:
    path = tmp_path / "grader.json"
    path.write_text('{"type": "string_check", "name": "n", "input": "{{ sample.output_text }}", "reference": "ok", "operation": "eq"}')
    assert run_grader(path, "ok")["reward"] == 1.0
    assert validate_grader(str(path))["grader"]["name"] == "n"


BAD_CONFIGS = [
    # (config, code, pointer)
    ({**check("eq"), "operation": "equals"}, "bad_value", "/operation"),
    ({**check("eq"), "operation": "EQ"}, "bad_value", "/operation"),
    ({k: v for k, v in check("eq").items() if k != "reference"}, "missing_key", "/reference"),
    ({**check("eq"), "extra": 1}, "unknown_key", "/extra"),
    ({**check("eq"), "name": ""}, "wrong_type", "/name"),
    ({**check("eq"), "input": 5}, "wrong_type", "/input"),
    ({**check("eq"), "input": "{{ items.x }}"}, "bad_template", "/input"),
    ({**check("eq"), "reference": "{{ item.x | lower }}"}, "bad_template", "/reference"),
    ({**CONTACT, "graders": {**CONTACT["graders"], "email": {**check("ilike"), "operation": "contains"}}},  # type: ignore[dict-item]
     "bad_value", "/graders/email/operation"),
    ({**CONTACT, "graders": {"a/b": {**check("eq"), "reference": "{{ x }}"}}, "calculate_output": "1"},
     "bad_template", "/graders/a~1b/reference"),
    ({**CONTACT, "graders": {"inner": CONTACT}, "calculate_output": "inner"}, "nested_multi", "/graders/inner/type"),
    ({**CONTACT, "graders": {"t": {"type": "endpoint"}}, "calculate_output": "t"}, "missing_key", "/graders/t/url"),
    ({**CONTACT, "graders": {"t": {"type": "nope"}}, "calculate_output": "t"}, "unknown_grader_type", "/graders/t/type"),
    ({**CONTACT, "graders": {}}, "wrong_type", "/graders"),
    ({**CONTACT, "calculate_output": "name +"}, "formula_parse_error", "/calculate_output"),
    ({**CONTACT, "calculate_output": "name + phone"}, "formula_unknown_name", "/calculate_output"),
    ({**CONTACT, "calculate_output": "__import__('os')"}, "formula_parse_error", "/calculate_output"),
    ({**CONTACT, "calculate_output": 1}, "wrong_type", "/calculate_output"),
    ({**CONTACT, "graders": {"s": {"type": "structured", "aggregation": "nope"}}, "calculate_output": "s"},
     "bad_aggregation", "/graders/s/aggregation"),
    ({"type": "python", "name": "p", "source": "def grade(s):\n    return 1\n"}, "bad_grade_signature", "/source"),
    ({"name": "no type"}, "unknown_grader_type", "/type"),
]


@pytest.mark.parametrize(("config", "code", "pointer"), BAD_CONFIGS, ids=lambda x: repr(x)[:60])
def test_validate_grader_raises_with_the_pointer(config: dict[str, Any], code: str, pointer: str) -> None:
    with pytest.raises(GraderConfigError) as info:
        validate_grader(config)
    assert (info.value.code, info.value.pointer) == (code, pointer)
    with pytest.raises(GraderConfigError):
        run_grader(config, "x", {})


def nested(levels: int) -> dict[str, Any]:
    """An inline schema ``levels`` objects deep: twice as many config levels (``properties``, then the field)."""
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    inner = schema
    for _ in range(levels - 1):
        inner["properties"]["a"] = {"type": "object", "properties": {}}
        inner = inner["properties"]["a"]
    return schema


LIMITS = [
    # (config, code, pointer): each raised RecursionError or MemoryError before the limits (a 500 from the server)
    ({**CONTACT, "calculate_output": " + ".join(["name"] * 1000)}, "formula_too_complex", "/calculate_output"),
    ({**CONTACT, "calculate_output": "+".join(["name"] * 600)}, "formula_too_complex", "/calculate_output"),  # under 2,000 chars
    ({**CONTACT, "calculate_output": "-" * 10_000 + "name"}, "formula_too_complex", "/calculate_output"),
    ({**CONTACT, "calculate_output": "(" * 5_000 + "name" + ")" * 5_000}, "formula_too_complex", "/calculate_output"),
    ({**CONTACT, "calculate_output": "^".join(["name"] * 999)}, "formula_too_complex", "/calculate_output"),
    ({"type": "structured", "schema": nested(300)}, "config_too_deep", "/schema" + "/properties/a" * 31 + "/properties"),
    ({**CONTACT, "graders": {"s": {"type": "structured", "schema": nested(300)}}, "calculate_output": "s"}, "config_too_deep",
     "/graders/s/schema" + "/properties/a" * 30 + "/properties"),
]


@pytest.mark.parametrize(("config", "code", "pointer"), LIMITS, ids=lambda x: repr(x)[:40])
def test_formulas_and_configs_past_the_limits_raise_with_the_pointer(config: dict[str, Any], code: str, pointer: str) -> None:
    with pytest.raises(GraderConfigError) as info:
        validate_grader(config)
    assert (info.value.code, info.value.pointer) == (code, pointer)
    assert len(str(info.value)) < 1000  # the message quotes the start of a long formula, not all of it
    with pytest.raises(GraderConfigError):
        run_grader(config, "x", {})
    with pytest.raises(GraderConfigError):
        from_config(config)


def test_formulas_and_configs_within_the_limits_build() -> None:
    names = {f"n{i}": check("eq", name=f"n{i}") for i in range(60)}
    wide = MultiGrader(name="m", graders=names, calculate_output=" + ".join(names) + " - 59")  # 60 terms: 59 levels deep
    assert wide.grade("x", {"reference": "x"}).score == 1.0
    deep = from_config({"type": "structured", "schema": nested(31)})  # 62 config levels with the grader's own
    assert deep.grade("{}", {}).score == 1.0


def test_validate_grader_returns_the_config() -> None:
    assert validate_grader(CONTACT) == {"grader": CONTACT}


def json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def test_the_grade_command_runs_openai_grader_types_on_sample_rows(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from graders._cli import app

    cfg = tmp_path / "g.json"
    cfg.write_text('{"type": "string_check", "name": "n", "input": "{{ sample.output_text }}", "reference": "ok", "operation": "eq"}')
    data = tmp_path / "d.jsonl"
    data.write_text('{"output": "ok"}\n{"output": "no"}\n')
    result = CliRunner().invoke(app, ["grade", str(data), "--grader", str(cfg)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "n (string_check): 2 rows" in result.output and "0.500" in result.output


# -- the per-sample bound ---------------------------------------------------------------------


@pytest.fixture
def bound_100() -> Any:
    from graders import structured as _parsing

    _parsing.set_max_output_chars(100)
    yield 100
    _parsing.set_max_output_chars(None)


def test_an_output_over_the_bound_is_graded_on_its_first_characters_and_flagged(bound_100: int) -> None:
    from graders.openai._templates import Sample

    long = "Paris " + "x" * 200
    assert (Sample.of(long).output_text, Sample.of(long).cut) == (long[:100], 206)
    assert Sample.of({"output_text": long}).output_text == long[:100] and Sample.of("short").cut is None
    like = StringCheckGrader(name="c", input="{{ sample.output_text }}", reference="Paris", operation="like")
    grade = like.grade(long)
    assert (grade.score, grade.errors["truncated_output_error"]) == (1.0, True)
    assert "206 characters, more than the per-sample bound of 100" in grade.reason
    assert grade.details["c"].prediction == long[:100]
    tail = like.grade("x" * 200 + "Paris")  # past the bound: not seen
    assert (tail.score, tail.errors["truncated_output_error"]) == (0.0, True)
    assert like.grade("Paris").ok
    field = from_config(check("eq", input="{{ sample.output_json.a }}", reference="x"))
    big = field.grade('{"a": "x", "pad": "' + "y" * 200 + '"}')  # JSON over the bound is not read
    assert big.score == 0.0 and big.errors["truncated_output_error"] and big.errors["invalid_variable_error"]
    multi = from_config({**CONTACT, "graders": {"name": check("like", reference="Paris", name="name"),
                                                "email": check("eq", reference="x", name="email")}})
    both = multi.grade(long)
    assert both.score == 0.5 and both.errors["truncated_output_error"]
    structured = run_grader({"type": "structured"}, '{"a": "' + "y" * 200 + '"}', {"reference": {"a": "y" * 200}})
    assert structured["reward"] == 0.0 and structured["metadata"]["errors"]["truncated_output_error"]


HOSTILE_OUTPUTS = ["Par\ud83d", '{"name": "Par\\ud83d", "n": 123456789012345678901234567890}', '{"n": 1e400}',
                   {"output_json": {"name": "x\ud800", "n": 10 ** 30}}, {"output_text": "\udfff"}]


@pytest.mark.parametrize("output", HOSTILE_OUTPUTS, ids=repr)
def test_a_lone_surrogate_or_a_huge_number_is_graded_as_data_by_every_text_grader(output: Any) -> None:
    import json

    sim = {"type": "text_similarity", "name": "s", "input": "{{ sample.output_text }}", "reference": "{{ item.name }}",
           "evaluation_metric": "fuzzy_match"}
    configs = [check("eq", input="{{ sample.output_json.name }}", reference="{{ item.name }}"), sim,
               {**CONTACT, "graders": {"name": check("ilike", reference="{{ item.name }}", name="name"), "email": sim}},
               {**CONTACT, "graders": {"name": {"type": "structured"}, "email": sim}, "calculate_output": "name + email"}]
    for config in configs:
        result = run_grader(config, output, {"name": "Paris\ud83d", "n": 10 ** 30, "reference": {"name": "Paris"}})
        assert 0.0 <= result["reward"] <= 1.0 and math.isfinite(result["reward"])
        json.dumps(result)  # the answer is JSON (a surrogate as its escape)
