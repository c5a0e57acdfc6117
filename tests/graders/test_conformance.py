"""Conformance with OpenAI's published grader examples, run through rftkit unchanged.

Sources (each test names its own):

- OpenAI graders guide, https://platform.openai.com/docs/guides/graders
  (string_check operations; the multigrader examples: a name/email contact check and a
  tool call checked by function name and arguments).
- OpenAI RFT use-case guide, https://platform.openai.com/docs/guides/rft-use-cases
  (a multi grader that combines precision and recall sub-scores into F1 with
  ``2 * precision * recall / max(precision + recall, 1e-9)``).

Two more conformance cases live next to their grader's other tests:
``test_python_grader.py`` (the guide's rapidfuzz WRatio python grader) and
``test_model_grader.py`` (score_model's output clamped to ``range``).
"""

from __future__ import annotations

from typing import Any

import pytest

from graders import from_config, run_grader


def string_check(operation: str, input: str = "{{ sample.output_text }}", reference: str = "{{ item.reference }}",
                 name: str = "check") -> dict[str, Any]:
    return {"type": "string_check", "name": name, "operation": operation, "input": input, "reference": reference}


@pytest.mark.parametrize(("operation", "output", "reference", "expected"), [
    # https://platform.openai.com/docs/guides/graders -- eq / ne are case-sensitive (in)equality,
    # like / ilike test that the INPUT contains the REFERENCE (ilike ignoring case).
    ("eq", "Paris", "Paris", 1.0),
    ("eq", "paris", "Paris", 0.0),
    ("eq", "Paris ", "Paris", 0.0),          # no trimming
    ("ne", "Lyon", "Paris", 1.0),
    ("ne", "Paris", "Paris", 0.0),
    ("like", "The capital is Paris.", "Paris", 1.0),
    ("like", "The capital is PARIS.", "Paris", 0.0),
    ("like", "Paris", "The capital is Paris.", 0.0),   # direction: the input must contain the reference
    ("ilike", "The capital is PARIS.", "paris", 1.0),
    ("ilike", "paris", "The capital is Paris.", 0.0),
    ("like", "100%", "%", 1.0),              # no wildcards: % is a plain character
    ("like", "abc", "a%c", 0.0),
], ids=repr)
def test_string_check_operations(operation: str, output: str, reference: str, expected: float) -> None:
    result = run_grader(string_check(operation), output, {"reference": reference})
    assert result["reward"] == expected


CONTACT = {  # https://platform.openai.com/docs/guides/graders (multigrader: name and email)
    "type": "multi", "name": "contact",
    "graders": {
        "name": string_check("eq", "{{ sample.output_json.name }}", "{{ item.name }}", "name"),
        "email": string_check("like", "{{ sample.output_json.email }}", "{{ item.email }}", "email"),
    },
    "calculate_output": "(name + email) / 2",
}


@pytest.mark.parametrize(("output", "reward", "subs"), [
    ('{"name": "John Doe", "email": "john@example.com"}', 1.0, {"name": 1.0, "email": 1.0}),
    ('{"name": "john doe", "email": "john@example.com"}', 0.5, {"name": 0.0, "email": 1.0}),
    ('{"name": "John Doe", "email": "jdoe@example.org"}', 0.5, {"name": 1.0, "email": 0.0}),
], ids=repr)
def test_the_name_email_multigrader(output: str, reward: float, subs: dict[str, float]) -> None:
    result = run_grader(CONTACT, output, {"name": "John Doe", "email": "john@example.com"})
    assert result["reward"] == reward and result["sub_rewards"] == subs


TOOL_CALL = {  # https://platform.openai.com/docs/guides/graders (multigrader over output_tools)
    "type": "multi", "name": "tool_call",
    "graders": {
        "function_name": string_check("eq", "{{ sample.output_tools[0].function.name }}", "{{ item.function_name }}",
                                      "function_name"),
        "arguments": string_check("eq", "{{ sample.output_tools[0].function.arguments }}", "{{ item.arguments }}",
                                  "arguments"),
    },
    "calculate_output": "0.5 * function_name + 0.5 * arguments",
}


def test_the_tool_call_multigrader_compares_arguments_as_text() -> None:
    item = {"function_name": "lookup_molecule", "arguments": '{"smiles":"CCO"}'}
    sample = {"output_tools": [{"type": "function",
                                "function": {"name": "lookup_molecule", "arguments": '{"smiles": "CCO"}'}}]}
    result = run_grader(TOOL_CALL, sample, item)
    # The arguments are a string: the space after the colon makes eq fail, so only the name counts.
    assert result["reward"] == 0.5 and result["sub_rewards"] == {"function_name": 1.0, "arguments": 0.0}
    sample["output_tools"][0]["function"]["arguments"] = '{"smiles":"CCO"}'
    assert run_grader(TOOL_CALL, sample, item)["reward"] == 1.0


PRECISION = """
def grade(sample, item):
    predicted = set(sample["output_json"]["entities"])
    expected = set(item["entities"])
    return len(predicted & expected) / len(predicted) if predicted else 0.0
"""
RECALL = """
def grade(sample, item):
    predicted = set(sample["output_json"]["entities"])
    expected = set(item["entities"])
    return len(predicted & expected) / len(expected) if expected else 0.0
"""
F1 = {  # https://platform.openai.com/docs/guides/rft-use-cases (precision and recall combined into F1)
    "type": "multi", "name": "entities_f1",
    "graders": {
        "precision": {"type": "python", "name": "precision", "source": PRECISION},
        "recall": {"type": "python", "name": "recall", "source": RECALL},
    },
    "calculate_output": "2 * precision * recall / max(precision + recall, 1e-9)",
}


def test_the_precision_recall_multigrader_gives_f1_and_never_divides_by_zero() -> None:
    grader: Any = from_config(F1)
    try:
        item = {"entities": ["aspirin", "ibuprofen", "naproxen"]}
        half = grader.grade('{"entities": ["aspirin", "ibuprofen", "paracetamol", "codeine"]}', item)
        assert half.sub_scores == {"precision": 0.5, "recall": pytest.approx(2 / 3)}
        assert half.score == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
        none = grader.grade('{"entities": ["codeine"]}', item)
        assert none.sub_scores == {"precision": 0.0, "recall": 0.0} and none.score == 0.0 and none.ok
    finally:
        for sub in grader.graders.values():
            sub.close()
