"""Building graders from JSON configs (``graders.from_config``).

A config is a dict (or a path to a JSON file holding one) whose ``type`` names
the grader. OpenAI's type names keep their meaning; rftkit's own types are new
names (``structured``), never changes to OpenAI's.

Every type is implemented: ``structured`` (grades ``(response, reference)``), and
OpenAI's ``string_check``, ``text_similarity``, ``multi``, ``python``, ``score_model``,
``label_model`` and ``endpoint`` (grade ``(sample, item)``). The last four are imported
on first use (subprocess and HTTP client code ``import graders`` does not need).

A config nests at most :data:`MAX_CONFIG_DEPTH` objects and arrays deep (an
inline schema included); a deeper one raises :class:`GraderConfigError`
(``config_too_deep``) before anything is built, so no part of rftkit recurses
past Python's stack on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import GraderConfigError
from ._registry import build
from .openai._common import SampleGrader
from .openai._multi import MultiGrader
from .openai._similarity import TextSimilarityGrader
from .openai._string_check import StringCheckGrader
from .structured._grader import StructuredGrader

AnyGrader = StructuredGrader | StringCheckGrader | TextSimilarityGrader | MultiGrader | SampleGrader
"""What :func:`from_config` returns: one of the grader classes (the python, model and endpoint
graders are :class:`SampleGrader` s whose modules load on first use)."""

MAX_CONFIG_DEPTH = 64
"""The deepest nesting of objects and arrays a grader config may have (the config itself is depth 1)."""

def load_config(config: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    """The config dict itself, or the JSON object read from a file; raises :class:`GraderConfigError` otherwise."""
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
    check_depth(config)
    return config


def check_depth(config: Mapping[str, Any], limit: int = MAX_CONFIG_DEPTH) -> None:
    """Raise :class:`GraderConfigError` (``config_too_deep``, at the first too-deep place) when ``config`` nests
    more than ``limit`` objects and arrays deep.

    Iterative, so a hostile config deeper than Python's stack is measured, not recursed into.

    >>> check_depth({"a": [{"b": 1}]})
    >>> check_depth({"a": {"b": {"c": {}}}}, limit=3)
    Traceback (most recent call last):
    ...
    graders._errors.GraderConfigError: the config nests deeper than 3 levels [config_too_deep at /a/b/c] (hint: a grader config (its schema included) nests at most 3 objects and arrays deep; flatten it or use $defs/$ref)
    """
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(config, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)
            raise GraderConfigError(f"the config nests deeper than {limit} levels", code="config_too_deep", pointer=pointer,
                                    hint=f"a grader config (its schema included) nests at most {limit} objects and arrays "
                                         "deep; flatten it or use $defs/$ref")
        children = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, (list, tuple)) else ()
        for key, child in children:
            if isinstance(child, (Mapping, list, tuple)):
                stack.append((child, depth + 1, (*path, str(key))))


def from_config(config: Mapping[str, Any] | str | Path) -> AnyGrader:
    """Build a grader from a config dict or a JSON file.

    >>> g = from_config({"type": "structured", "fields": {"city": {"comparator": "normalized"}}})
    >>> g.grade('{"city": "los  angeles"}', {"city": "Los Angeles"}).score
    1.0
    >>> g = from_config({"type": "string_check", "name": "yes", "input": "{{ sample.output_text }}", "reference": "yes",
    ...                  "operation": "ilike"})
    >>> g.grade("YES!").score
    1.0
    """
    config = load_config(config)
    grader: AnyGrader = build(config)
    return grader
