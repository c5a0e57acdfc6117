"""Adapters: any rftkit grader as a TRL reward function, a verl ``compute_score`` or an OpenRLHF ``reward_func``.

Each adapter turns a grader (a :class:`StructuredGrader`, an OpenAI-type grader,
a ``multi``, or the config of one) into the calling convention of one trainer.
None imports torch or the trainer: the OpenRLHF adapter imports torch inside the
call, and only where it is installed.

How each trainer's row reaches the grader:

=========  ==========================================  ===========================================
trainer    the model's text                            the reference (and the item)
=========  ==========================================  ===========================================
TRL        ``completions[i]`` (a string, or the last   ``kwargs[reference_column][i]``; the item is
           assistant message of a chat list)           row i of every dataset column
verl       ``solution_str`` (already without prompt)   ``ground_truth`` (a dict or a JSON string)
OpenRLHF   ``queries[i]`` minus the prompt             ``labels[i]``; the item: see below
=========  ==========================================  ===========================================

A :class:`StructuredGrader` grades ``(text, reference)``; the other graders grade
``(text, item)`` where the item holds the reference under ``"reference"`` (so the
default ``{{ item.reference }}`` template of a structured sub-grader finds it).

**Labels as items (OpenRLHF, verl).** These trainers hand the reward one column
per row (OpenRLHF's ``--data.label_key``, verl's ``ground_truth``), not the row.
A config migrated from OpenAI reads the row's fields (``{{ item.label }}``,
``{{ item.reference_answer }}``), so when that column holds an object, or its
JSON text, the object's keys are the item's keys, next to ``prompt`` (OpenRLHF),
``data_source`` and ``extra_info`` (verl) and ``reference`` (the column as
given); a key of the object wins over those (:func:`label_item`).

**Which grader verl and OpenRLHF use.** Those trainers load a function from a
file by name, so the grader cannot be passed as an argument. The module-level
functions read the config file named by the environment variable
``RFTKIT_GRADER`` (or by a ``grader=`` keyword, which verl's
``custom_reward_function.reward_kwargs`` can pass), build it once per process
and cache it. The factories (:func:`trl_reward`, :func:`verl_compute_score`)
take the grader directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .._config import AnyGrader, from_config
from .._errors import GraderConfigError
from .._result import Grade

GRADER_ENV = "RFTKIT_GRADER"
"""The environment variable naming the grader config file that verl and OpenRLHF use."""

GraderSource = AnyGrader | Mapping[str, Any] | str | Path
"""A grader, a config dict, or the path of a JSON config file."""

_NOT_COLUMNS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"})


class _Hook(Protocol):
    def __call__(self, name: str, value: Any, /) -> Any: ...


# --------------------------------------------------------------------------- shared stages


def build_grader(source: GraderSource) -> AnyGrader:
    """The grader itself, or the one a config describes."""
    if isinstance(source, (Mapping, str, Path)):
        return from_config(source)
    if not hasattr(source, "grade") or not hasattr(source, "config"):
        raise GraderConfigError(f"expected a grader, a config dict or a config path, got {type(source).__name__}",
                                code="wrong_type", hint="pass StructuredGrader(...), a dict with a 'type', or a JSON file path")
    return source


def field_names(grader: AnyGrader) -> list[str]:
    """The fields a grader reports on every row: a structured schema's top-level properties, a multi's sub-graders.

    Empty when the grader does not declare them (a schema-less structured grader
    reports the reference's fields, which may differ from row to row).

    >>> from graders import StructuredGrader
    >>> field_names(StructuredGrader({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}))
    ['a', 'b']
    """
    names = getattr(grader, "field_names", None)  # a duck-typed grader (grade and config only) declares none
    return names() if callable(names) else []


def label_item(label: Any, base: Mapping[str, Any]) -> dict[str, Any]:
    """The item an OpenAI-type grader reads for a row whose trainer passes only its label (the reference column).

    ``base`` holds what the trainer knows besides (OpenRLHF: the prompt); the
    label is the item's ``reference``; when it is an object, or the JSON text of
    one, its keys are item keys too, and win over the others (they are the row's own).

    >>> label_item('{"label": "positive"}', {"prompt": "p"})
    {'prompt': 'p', 'reference': '{"label": "positive"}', 'label': 'positive'}
    >>> label_item("42", {"prompt": "p"})
    {'prompt': 'p', 'reference': '42'}
    """
    item = {**base, "reference": label}
    fields: Any = label
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            fields = json.loads(label)
        except (ValueError, RecursionError):  # not JSON after all: the label is only the reference
            fields = None
    if isinstance(fields, Mapping):
        item.update(fields)
    return item


def row_item(grader: AnyGrader, label: Any, base: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item ``grader.grade_row`` reads for a row whose trainer passes only its label: the label as the
    ``reference`` alone for a grader that reads nothing else (the label is not decoded: the grader caches its
    references), else :func:`label_item`.

    >>> from graders import StructuredGrader
    >>> row_item(StructuredGrader(), '{"a": 1}', {"prompt": "p"})
    {'reference': '{"a": 1}'}
    """
    return {"reference": label} if grader.needs_reference else label_item(label, base)


def _field_scores(grade: Grade, declared: list[str]) -> dict[str, float]:
    """One score per field; with declared fields every row has the same keys (a failed parse scores them 0)."""
    if declared:
        return {f: grade.sub_scores.get(f, 0.0) for f in declared}
    return {k or "value": v for k, v in grade.sub_scores.items()}


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The model's text from a TRL completion: the string itself, or the last assistant message's content.

    A chat list without roles (TRL's own examples use ``[{"content": ...}]``)
    gives its last message. Content given as parts keeps the text parts, joined.

    >>> completion_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{}"}])
    '{}'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    'ab'
    """
    if isinstance(completion, str):
        return completion
    messages = list(completion)
    if not messages:
        return ""
    chosen = next((m for m in reversed(messages) if m.get("role") == "assistant"), messages[-1])
    content = chosen.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "" if content is None else str(content)




