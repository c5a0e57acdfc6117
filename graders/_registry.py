"""The grader registry: every grader type's name, its config model and how to build it.

Adding a grader type is one entry in :data:`GRADER_TYPES`: from it ``from_config`` builds
the grader, ``multi`` admits it as a sub-grader, the config unions
(:func:`config_union`, hence ``MultiConfig`` and ``schemas/formats/grader_config.json``)
include its model, and the reward server knows whether a request may carry it.
Models and builders are named by ``module:attribute`` and imported on first use: the
python, model and endpoint graders bring subprocess and HTTP client code (httpx adds
about 0.15 s) that ``import graders`` -- paid by every CLI command and batch worker --
does not need. A config model's module must stay light (heavy imports go inside its
validators), as every model is imported to build the unions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from ._errors import GraderConfigError


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class GraderType:
    """One grader type: its config model and its builders, as ``module:attribute`` paths imported on first use."""

    config: str
    """The config model (a :class:`~graders._validation.ConfigModel` whose ``type`` is a ``Literal`` of the name)."""
    top: str
    """Builds the grader when the config is the whole grader (``from_config``): takes a dict or the validated model."""
    sub: str | None = None
    """Builds it as a sub-grader of ``multi`` (grading ``(sample, item)``), when that differs from :attr:`top`."""
    sub_config: str | None = None
    """The config model as a ``multi`` sub-grader, when that differs from :attr:`config`."""
    in_multi: bool = True
    """Whether a ``multi`` may hold it (``multi`` itself may not)."""
    request_borne: Literal["safe", "opt_in"] = "opt_in"
    """Whether the reward server builds it from a request by default (``safe``: it runs no user code, opens no
    file and makes no request) or only when its operator allows the type (``--allow-graders``)."""
    calls_out: bool = False
    """Whether grading calls a model or a server for every row (the gold check skips such graders unless asked)."""
    pass_fail: bool = False
    """Whether its reward is 1 (pass) or 0 (fail), so that its pass threshold is 1 unless the config sets one."""

    def builder(self, *, sub: bool) -> Callable[[Mapping[str, Any] | BaseModel], Any]:
        built: Callable[[Mapping[str, Any] | BaseModel], Any] = _resolve((self.sub or self.top) if sub else self.top)
        return built

    def model(self, *, sub: bool = False) -> type[BaseModel]:
        """The config model (as a ``multi`` sub-grader when ``sub``)."""
        model: type[BaseModel] = _resolve((self.sub_config or self.config) if sub else self.config)
        return model


GRADER_TYPES: dict[str, GraderType] = {
    "string_check": GraderType("graders.openai._configs:StringCheckConfig",
                               "graders.openai._string_check:StringCheckGrader.from_config", request_borne="safe",
                               pass_fail=True),
    "text_similarity": GraderType("graders.openai._configs:TextSimilarityConfig",
                                  "graders.openai._similarity:TextSimilarityGrader.from_config", request_borne="safe"),
    "structured": GraderType("graders.structured._options:StructuredConfig", "graders.structured._grader:from_structured_config",
                             sub="graders.openai._multi:_StructuredItemGrader.from_config",
                             sub_config="graders.openai._configs:StructuredSubConfig", request_borne="safe"),
    "multi": GraderType("graders.openai._configs:MultiConfig", "graders.openai._multi:MultiGrader.from_config",
                        in_multi=False, request_borne="safe"),
    "python": GraderType("graders.openai._configs:PythonConfig", "graders.openai.python._grader:PythonGrader.from_config"),
    "score_model": GraderType("graders.openai._configs:ScoreModelConfig",
                              "graders.openai._model_grader:ScoreModelGrader.from_config", calls_out=True),
    "label_model": GraderType("graders.openai._configs:LabelModelConfig",
                              "graders.openai._model_grader:LabelModelGrader.from_config", calls_out=True, pass_fail=True),
    "endpoint": GraderType("graders.openai._configs:EndpointConfig", "graders.openai._endpoint:EndpointGrader.from_config",
                           calls_out=True),
}
"""Every grader type: OpenAI's names keep their meaning; rftkit's own types (``structured``) are new names."""


def config_union(*, sub: bool = False) -> Any:
    """The config models of every type (``sub``: of every type a ``multi`` may hold, as sub-graders), one union
    told apart by ``type``: what ``MultiConfig.graders`` holds, and the JSON Schema of every config."""
    models = tuple(t.model(sub=sub) for t in GRADER_TYPES.values() if t.in_multi or not sub)
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007  # a union built at run time


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
