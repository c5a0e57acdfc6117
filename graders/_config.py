"""Building graders from JSON configs (``graders.from_config``).

A config is a dict (or a path to a JSON file holding one) whose ``type`` names
the grader. OpenAI's type names keep their meaning; rftkit's own types are new
names (``structured``), never changes to OpenAI's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import GraderConfigError
from ._structured import StructuredGrader, _from_structured_config

_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "structured": _from_structured_config,
}
_OPENAI_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "multi", "endpoint")


def from_config(config: Mapping[str, Any] | str | Path) -> StructuredGrader:
    """Build a grader from a config dict or a JSON file.

    >>> g = from_config({"type": "structured", "fields": {"city": {"comparator": "normalized"}}})
    >>> g.grade('{"city": "los  angeles"}', {"city": "Los Angeles"}).score
    1.0
    """
    if isinstance(config, (str, Path)):
        path = Path(config)
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise GraderConfigError(f"grader config not found: {path}", code="config_not_found") from None
        except json.JSONDecodeError as exc:
            raise GraderConfigError(f"grader config {path} is not valid JSON: {exc}", code="config_not_json") from None
        config = data
    if not isinstance(config, Mapping):
        raise GraderConfigError(f"a grader config is a JSON object, got {type(config).__name__}", code="config_not_object", pointer="")
    kind = config.get("type")
    builder = _BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        later = " (OpenAI grader types arrive with the OpenAI-compatible grader family)" if kind in _OPENAI_TYPES else ""
        raise GraderConfigError(f"unknown grader type {kind!r}{later}", code="unknown_grader_type", pointer="/type",
                                hint=f"supported types: {sorted(_BUILDERS)}")
    grader: StructuredGrader = builder(config)
    return grader
