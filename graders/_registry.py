"""The grader registry: every grader type's name and how to build it from its config.

Adding a grader type is one entry in :data:`GRADER_TYPES`. A builder is named by
module and attribute and imported on first use: the python, model and endpoint
graders bring subprocess and HTTP client code (httpx adds about 0.15 s) that
``import graders`` -- paid by every CLI command and batch worker -- does not need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ._errors import GraderConfigError


@dataclass(frozen=True)
class GraderType:
    """Where a grader type's builders live: ``module:attribute`` paths, imported on first use."""

    top: str
    """Builds the grader when the config is the whole grader (``from_config``)."""
    sub: str | None = None
    """Builds it as a sub-grader of ``multi`` (grading ``(sample, item)``), when that differs from :attr:`top`."""

    def builder(self, *, sub: bool) -> Callable[[Mapping[str, Any] | BaseModel], Any]:
        module, _, attribute = ((self.sub or self.top) if sub else self.top).partition(":")
        value: Any = importlib.import_module(module)
        for part in attribute.split("."):
            value = getattr(value, part)
        built: Callable[[Mapping[str, Any] | BaseModel], Any] = value
        return built


GRADER_TYPES: dict[str, GraderType] = {
    "structured": GraderType("graders.structured._grader:from_structured_config",
                             sub="graders.openai._multi:_StructuredItemGrader.from_config"),
    "string_check": GraderType("graders.openai._string_check:StringCheckGrader.from_config"),
    "text_similarity": GraderType("graders.openai._similarity:TextSimilarityGrader.from_config"),
    "multi": GraderType("graders.openai._multi:MultiGrader.from_config"),
    "python": GraderType("graders.openai.python._grader:PythonGrader.from_config"),
    "score_model": GraderType("graders.openai._model_grader:ScoreModelGrader.from_config"),
    "label_model": GraderType("graders.openai._model_grader:LabelModelGrader.from_config"),
    "endpoint": GraderType("graders.openai._endpoint:EndpointGrader.from_config"),
}
"""Every grader type: OpenAI's names keep their meaning; rftkit's own types (``structured``) are new names."""


def grader_type(config: Mapping[str, Any] | BaseModel) -> GraderType:
    """The registry entry of the type ``config`` names; :class:`GraderConfigError` (``unknown_grader_type``) if none."""
    kind = getattr(config, "type", None) if isinstance(config, BaseModel) else config.get("type")
    entry = GRADER_TYPES.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise GraderConfigError(f"unknown grader type {kind!r}", code="unknown_grader_type", pointer="/type",
                                hint=f"supported types: {sorted(GRADER_TYPES)}")
    return entry


def build(config: Mapping[str, Any] | BaseModel, *, sub: bool = False) -> Any:
    """The grader ``config["type"]`` names, built from ``config`` (as a ``multi`` sub-grader when ``sub``).

    ``config`` is a dict, or the type's config model already validated (``multi`` passes its sub-graders' so).
    """
    return grader_type(config).builder(sub=sub)(config)
