"""Exceptions raised by :mod:`graders` (the tree is drawn in ``schemas._errors``)."""

from __future__ import annotations

from typing import Literal

from schemas import UserError

ErrorFlag = Literal[
    # OpenAI's graders/run metadata.errors flags, in their order.
    "formula_parse_error", "sample_parse_error", "truncated_observation_error", "unresponsive_reward_error",
    "invalid_variable_error", "other_error", "python_grader_server_error", "python_grader_runtime_error",
    "model_grader_server_error", "model_grader_refusal_error", "model_grader_parse_error",
    # rftkit's own.
    "schema_validation_error", "truncated_output_error",
]
"""Every error flag a ``Grade`` carries in ``errors`` (``graders._result.ERROR_FLAGS`` lists them in this order; see
docs/errors.md). ``truncated_observation_error`` is OpenAI's: no rftkit grader sets it (it keeps the errors dict OpenAI's shape)."""


class GraderConfigError(UserError):
    """A grader config, a field option, a comparator option or a weight is wrong.

    Raised at construction, with the JSON pointer of the offending part of the
    config and a hint. The one case raised while grading is a *reference* that
    cannot be one (code ``bad_reference``: None, text that is not JSON, a
    scalar): references are the user's data, not the model's output.
    """


def pointer_token(key: str) -> str:
    """``key`` as one reference token of a JSON pointer (RFC 6901: ``~`` -> ``~0``, ``/`` -> ``~1``).

    >>> "/fields/" + pointer_token("a/b")
    '/fields/a~1b'
    """
    return key.replace("~", "~0").replace("/", "~1")
