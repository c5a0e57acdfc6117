"""``run_grader`` and ``validate_grader``: OpenAI's ``graders/run`` and ``graders/validate``, run locally.

``run_grader(config, model_sample, item)`` answers in the shape of OpenAI's
``graders/run`` response, so code that called the hosted endpoint changes a URL
for a function call::

    {"reward": 1.0,
     "metadata": {"name": ..., "type": ..., "errors": {...}, "execution_time": 0.0001,
                  "scores": {...}, "token_usage": None, "sampled_model_name": None},
     "sub_rewards": {...},
     "model_grader_token_usage_per_model": {}}

``metadata.errors`` holds every flag of :data:`graders.ERROR_FLAGS` (OpenAI's
eleven and rftkit's own two) and OpenAI's three detail strings
(``python_grader_server_error_type``, ``python_grader_runtime_error_details``,
``model_grader_server_error_details``): the grade's reason when their flag is
raised, None otherwise. ``sub_rewards`` and ``metadata.scores`` both hold the grade's
``sub_scores``: one per sub-grader for ``multi``, one per field for
``structured``, empty for a single ``string_check``.

A bad config raises :class:`GraderConfigError` with its JSON pointer, in both
functions: a config mistake is never reported as a flagged zero.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._config import load_config
from ._result import ERROR_FLAGS, Grade
from .openai._common import SampleGrader, SampleInput
from .openai._multi import build_sample_grader

_DETAILS = {
    "python_grader_server_error": "python_grader_server_error_type",
    "python_grader_runtime_error": "python_grader_runtime_error_details",
    "model_grader_server_error": "model_grader_server_error_details",
}


def _build(config: Mapping[str, Any] | str | Path) -> SampleGrader:
    return build_sample_grader(load_config(config))


def validate_grader(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Check a grader config; return ``{"grader": <the config as rftkit reads it>}`` or raise.

    >>> validate_grader({"type": "string_check", "name": "x", "input": "{{ sample.output_text }}",
    ...                  "reference": "{{ item.x }}", "operation": "eq"})["grader"]["operation"]
    'eq'
    >>> validate_grader({"type": "string_check", "name": "x", "input": "", "reference": "", "operation": "equals"})
    Traceback (most recent call last):
    ...
    graders._errors.GraderConfigError: operation must be one of ['eq', 'ne', 'like', 'ilike'], got 'equals' [bad_value at /operation] (hint: eq, ne, like (contains) or ilike (contains, ignoring case))
    """
    return {"grader": _build(config).config()}


def run_grader(config: Mapping[str, Any] | str | Path, model_sample: SampleInput,
               item: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Grade one sample with a grader config; the result has the shape of OpenAI's ``graders/run`` response.

    ``model_sample`` is the model's text or an OpenAI-style sample dict; ``item``
    is the dataset row that ``{{ item.x }}`` templates read. A ``structured``
    config may name its reference with a ``reference`` template (default
    ``"{{ item.reference }}"``).

    >>> r = run_grader({"type": "string_check", "name": "ok", "input": "{{ sample.output_text }}",
    ...                 "reference": "{{ item.answer }}", "operation": "eq"}, "42", {"answer": "42"})
    >>> r["reward"], r["metadata"]["name"], r["metadata"]["errors"]["invalid_variable_error"]
    (1.0, 'ok', False)
    """
    grader = _build(config)
    start = time.perf_counter()
    grade = grader.grade(model_sample, item)
    return run_response(grader.name, grader.type, grade, time.perf_counter() - start)


def run_response(name: str, kind: str, grade: Grade, execution_time: float) -> dict[str, Any]:
    """One grade in the shape of OpenAI's ``graders/run`` response.

    A raised flag with a detail string (``python_grader_runtime_error`` ->
    ``python_grader_runtime_error_details`` ...) carries the grade's reason there;
    the detail is None while its flag is down.
    """
    errors: dict[str, Any] = {}
    flags = grade.errors
    for flag in ERROR_FLAGS:
        raised = flags.get(flag, False)
        errors[flag] = raised
        if flag in _DETAILS:
            errors[_DETAILS[flag]] = grade.reason if raised else None
    return {
        "reward": grade.score,
        "metadata": {
            "name": name,
            "type": kind,
            "errors": errors,
            "execution_time": execution_time,
            "scores": dict(grade.sub_scores),
            "token_usage": None,
            "sampled_model_name": None,
        },
        "sub_rewards": dict(grade.sub_scores),
        "model_grader_token_usage_per_model": {},
    }


def grade_record(row_id: Any, name: str, kind: str, grade: Grade, execution_time: float) -> dict[str, Any]:
    """One row of ``rftkit grade --output``: the row's ``id``, the ``graders/run`` response
    (:func:`run_response`), the grade's ``reason`` and its per-field ``details``."""
    return {"id": row_id, **run_response(name, kind, grade, execution_time), "reason": grade.reason,
            "details": {k: v.to_dict() for k, v in grade.details.items()}}
