"""The JSON Schema of every grader config: ``schemas/formats/grader_config.json`` is generated from here.

One ``$defs`` entry per type (OpenAI's ``string_check``, ``text_similarity``,
``python``, ``score_model``, ``label_model``, ``endpoint``, ``multi``, and rftkit's
``structured``, whose part comes from :func:`structured_config_schema`). The
schema is for editors and for checking configs without rftkit; ``from_config`` is
still the authority (it also checks what JSON Schema cannot say: formulas parse,
templates are well formed, ``meteor`` has WordNet installed). A test keeps the shipped
file equal to :func:`grader_config_schema` and checks that both agree on a table
of good and bad configs. To regenerate the file::

    .venv/bin/python -c "import json; from graders._config_schema import grader_config_schema as s; \
      open('schemas/formats/grader_config.json', 'w').write(json.dumps(s(), indent=2, ensure_ascii=False) + '\n')"
"""

from __future__ import annotations

import copy
from typing import Any

from .structured._grader import structured_config_schema

_NAME = {"type": "string", "minLength": 1, "description": "The grader's name (sub_rewards and log keys use it)."}
_THRESHOLD = {"type": "number", "description": "A score at or above it passes (the reason says so)."}
_SUB_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "endpoint", "structured_with_reference")
_TOP_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "endpoint", "multi", "structured")


def _template(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _grader(kind: str, required: list[str], properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": ["type", *required], "additionalProperties": False,
            "properties": {"type": {"const": kind}, **properties}}


def _messages() -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/message"}}


def grader_config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every grader config rftkit reads satisfies."""
    structured = structured_config_schema()
    structured_defs = structured.pop("$defs", {})
    structured.pop("$schema", None)
    with_reference = copy.deepcopy(structured)
    with_reference["description"] = "structured inside multi (and in run_grader): with a reference template."
    with_reference["properties"]["reference"] = _template("Template of the reference answer; default {{ item.reference }}.")
    defs: dict[str, Any] = {
        "string_check": _grader("string_check", ["name", "input", "reference", "operation"], {
            "name": _NAME, "input": _template("Template of the text to check."),
            "reference": _template("Template of the reference text."),
            "operation": {"enum": ["eq", "ne", "like", "ilike"]}},
            "OpenAI's string_check: 1 when the rendered input and reference satisfy the operation, else 0."),
        "text_similarity": _grader("text_similarity", ["name", "input", "reference", "evaluation_metric"], {
            "name": _NAME, "input": _template("Template of the text to score."),
            "reference": _template("Template of the reference text."),
            "evaluation_metric": {"enum": ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4",
                                           "rouge_5", "rouge_l", "cosine"],
                                  "description": "OpenAI's names; meteor needs rftkit[meteor] (WordNet 3.0) installed."},
            "pass_threshold": _THRESHOLD},
            "OpenAI's text_similarity: a similarity in [0, 1] between the rendered input and reference."),
        "python": _grader("python", ["name", "source"], {
            "name": _NAME,
            "source": {"type": "string", "description": "Python source defining grade(sample, item) -> float; under 256 kB."},
            "image_tag": {"type": "string", "description": "Accepted; rftkit runs the local interpreter whatever it names."},
            "pass_threshold": _THRESHOLD},
            "OpenAI's python grader, run in rftkit's sandboxed worker process."),
        "score_model": _grader("score_model", ["name", "model", "input"], {
            "name": _NAME,
            "model": {"type": "string", "description": "A local model directory, or a model name on the chat-completions server."},
            "input": _messages(),
            "range": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}},
            "sampling_params": {"$ref": "#/$defs/sampling_params"}, "pass_threshold": _THRESHOLD},
            "OpenAI's score_model: the grader model's numeric result, clamped to range."),
        "label_model": _grader("label_model", ["name", "model", "input", "labels", "passing_labels"], {
            "name": _NAME, "model": {"type": "string"}, "input": _messages(),
            "labels": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "passing_labels": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "sampling_params": {"$ref": "#/$defs/sampling_params"}},
            "OpenAI's label_model: 1 when the grader model's label is one of passing_labels."),
        "endpoint": _grader("endpoint", ["url"], {
            "name": _NAME, "url": {"type": "string", "description": "Where {sample, item, trace_id} is POSTed."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "rate_limit": {"type": "integer", "minimum": 1, "description": "Requests per second."},
            "pass_threshold": _THRESHOLD,
            "range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
                      "description": "rftkit's addition: the scores the server may answer, [low, high] (default [0, 1])."}},
            'The endpoint grader: your HTTP service answers {"score": number}.'),
        "structured": structured,
        "structured_with_reference": with_reference,
    }
    defs["multi"] = _grader("multi", ["name", "graders", "calculate_output"], {
        "name": _NAME,
        "graders": {"type": "object", "minProperties": 1,
                    "additionalProperties": {"oneOf": [{"$ref": f"#/$defs/{k}"} for k in _SUB_TYPES]},
                    "description": "Named sub-graders (never a multi); each name is a variable of calculate_output."},
        "calculate_output": {"type": "string",
                             "description": "A formula over the sub-graders' names: + - * / ^ min max abs floor ceil exp sqrt log."}},
        "OpenAI's multi: sub-graders combined by a formula.")
    defs.update(structured_defs)
    text_part = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
                 "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": _template("A template.")}}
    defs["text_part"] = text_part
    defs["content"] = {"anyOf": [_template("A template."), {"$ref": "#/$defs/text_part"},
                                 {"type": "array", "minItems": 1,
                                  "items": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/text_part"}]}}]}
    defs["message"] = {"type": "object", "required": ["role", "content"], "additionalProperties": False,
                       "properties": {"role": {"enum": ["system", "developer", "user", "assistant"]},
                                      "content": {"$ref": "#/$defs/content"}, "type": {"const": "message"}}}
    defs["sampling_params"] = {
        "type": "object", "additionalProperties": False, "not": {"required": ["max_completions_tokens", "max_tokens"]},
        "properties": {"temperature": {"type": "number", "minimum": 0, "maximum": 2},
                       "top_p": {"type": "number", "minimum": 0, "maximum": 1}, "seed": {"type": "integer"},
                       "max_completions_tokens": {"type": "integer", "minimum": 1},
                       "max_tokens": {"type": "integer", "minimum": 1},
                       "reasoning_effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh"]}}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "rftkit grader config",
            "description": "Every grader config rftkit reads: OpenAI's seven types and rftkit's structured.",
            "oneOf": [{"$ref": f"#/$defs/{k}"} for k in _TOP_TYPES], "$defs": defs}
