"""The shipped JSON Schemas of grader configs match the code, and agree with ``from_config`` on good and bad configs."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from graders import GraderConfigError, from_config
from graders._config_schema import grader_config_schema
from graders.structured._grader import structured_config_schema
from schemas import SchemaError, load_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = resources.files("schemas") / "formats" / "structured_grader.json"


def test_shipped_schema_is_generated_from_the_code() -> None:
    # After changing the options, regenerate the file with:
    # .venv/bin/python -c "import json; from graders.structured._grader import structured_config_schema as s; \
    #   open('schemas/formats/structured_grader.json', 'w').write(json.dumps(s(), indent=2, ensure_ascii=False) + '\n')"
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == structured_config_schema()


def test_example_config_satisfies_the_schema_and_mistakes_do_not() -> None:
    schema = load_schema(json.loads(SHIPPED.read_text(encoding="utf-8")))
    example = json.loads((ROOT / "examples" / "resume" / "grader.json").read_text(encoding="utf-8"))
    assert schema.validate(example) == []
    issues = schema.validate({"type": "structured", "aggregation": "median", "partial_credit": "no", "shema": {}})
    assert {i.pointer for i in issues} >= {"/aggregation", "/partial_credit"}
    assert any(i.code == "additionalProperties" for i in issues)


# -- every grader type: schemas/formats/grader_config.json ------------------------------------------------

ALL_TYPES = resources.files("schemas") / "formats" / "grader_config.json"
CHECK = {"type": "string_check", "name": "c", "input": "{{ sample.output_text }}", "reference": "{{ item.a }}", "operation": "eq"}
ASK = [{"role": "system", "content": "Grade it."}, {"role": "user", "content": [{"type": "input_text", "text": "{{ sample.output_text }}"}]}]
GOOD: list[dict[str, Any]] = [
    CHECK,
    {"type": "text_similarity", "name": "t", "input": "{{ sample.output_text }}", "reference": "x", "evaluation_metric": "bleu",
     "pass_threshold": 0.5},
    {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n", "image_tag": "2025-05-08"},
    {"type": "score_model", "name": "s", "model": "grader-model", "input": ASK, "range": [0, 10],
     "sampling_params": {"temperature": 0.2, "max_completions_tokens": 64, "seed": 1}},
    {"type": "label_model", "name": "l", "model": "grader-model", "input": ASK, "labels": ["good", "bad"],
     "passing_labels": ["good"]},
    {"type": "endpoint", "name": "e", "url": "http://127.0.0.1:9/score", "headers": {"X-Key": "k"}, "rate_limit": 5},
    {"type": "multi", "name": "m", "calculate_output": "0.5 * a + 0.5 * b", "graders": {
        "a": CHECK, "b": {"type": "structured", "name": "b", "reference": "{{ item.answer }}"}}},
    json.loads((ROOT / "examples" / "resume" / "grader.json").read_text(encoding="utf-8")),
]
BAD: list[dict[str, Any]] = [
    {**CHECK, "operation": "equals"},
    {**CHECK, "extra": 1},
    {k: v for k, v in CHECK.items() if k != "reference"},
    {**GOOD[1], "evaluation_metric": "rouge_9"},
    {**GOOD[1], "pass_threshold": "high"},
    {k: v for k, v in GOOD[2].items() if k != "source"},
    {**GOOD[3], "range": [0]},
    {**GOOD[3], "sampling_params": {"temperature": 3}},
    {**GOOD[3], "sampling_params": {"max_completions_tokens": 5, "max_tokens": 5}},
    {**GOOD[3], "input": [{"role": "robot", "content": "hi"}]},
    {**GOOD[3], "input": []},
    {k: v for k, v in GOOD[4].items() if k != "passing_labels"},
    {**GOOD[5], "rate_limit": 0},
    {**GOOD[5], "headers": {"X-Key": 1}},
    {**GOOD[5], "timeout": 3},                         # rftkit's own settings are keywords, never config keys
    {**GOOD[6], "graders": {"inner": GOOD[6]}},        # a multi inside a multi
    {**GOOD[6], "graders": {}},
    {"type": "structured", "aggregation": "median"},
    {"type": "nope", "name": "x"},
]


@pytest.fixture
def all_types() -> Any:
    return load_schema(json.loads(ALL_TYPES.read_text(encoding="utf-8")))


def test_shipped_all_types_schema_is_generated_from_the_code() -> None:
    assert json.loads(ALL_TYPES.read_text(encoding="utf-8")) == grader_config_schema()


@pytest.mark.parametrize("config", GOOD, ids=lambda c: c["type"])
def test_good_configs_satisfy_the_schema_and_build(config: dict[str, Any], all_types: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFTKIT_MODEL_BASE_URL", "http://127.0.0.1:9/v1")  # model graders need a server named; none is called
    assert all_types.validate(config) == []
    grader = from_config(config)
    assert grader.type == config["type"]
    close = getattr(grader, "close", None)
    if close is not None:
        close()


@pytest.mark.parametrize("config", BAD, ids=lambda c: json.dumps(c)[:70])
def test_bad_configs_fail_both_the_schema_and_from_config(config: dict[str, Any], all_types: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFTKIT_MODEL_BASE_URL", "http://127.0.0.1:9/v1")
    assert all_types.validate(config) != []
    with pytest.raises((GraderConfigError, SchemaError)):
        from_config(config)
