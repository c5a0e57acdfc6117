"""OpenAI's ``score_model`` and ``label_model`` graders, run with a model you host.

A model grader renders its ``input`` messages (templates such as ``{{ item.x }}``
and ``{{ sample.output_text }}``), asks a grader model for an answer, and reads
a score (``score_model``) or a label (``label_model``) from the reply.

**Where the grader model runs** (how ``model`` resolves, in this order):

1. ``model`` names a local directory (an existing path, or one written with a
   leading ``/``, ``./``, ``../`` or ``~``): a transformers causal LM loaded
   from it with ``local_files_only=True`` (never a download), on first grade,
   on CUDA when available, else CPU. torch and transformers are imported only
   then, so ``import graders`` never loads them. The prompt is the tokenizer's
   chat template when it has one, else plain lines ``"role: content"`` followed
   by ``"assistant:"``. Generation is greedy unless ``temperature > 0``.
2. Otherwise ``model`` is a model name served by an OpenAI-compatible
   chat-completions server (vLLM, llama.cpp, SGLang, Ollama, OpenAI): the
   grader POSTs to ``<base_url>/chat/completions``. ``base_url`` is the
   constructor keyword, else ``$RFTKIT_MODEL_BASE_URL``, else
   ``$OPENAI_BASE_URL`` (like ``http://127.0.0.1:8000/v1``); the API key is the
   ``api_key`` keyword, else ``$OPENAI_API_KEY`` when set (sent as a bearer
   token). With none of them set, building the grader raises
   ``model_not_found``: nothing is sent anywhere by default.

The request asks for OpenAI's answer shape with a strict JSON-schema
``response_format`` (``{"steps": [{"description", "conclusion"}], "result": ...}``);
pass ``structured_output=False`` for a server that rejects it. A local model
gets no constrained decoding: the prompt must ask for the format (OpenAI's
guide recommends naming ``result`` in the prompt anyway).

**Messages.** Roles ``system``, ``developer``, ``user``, ``assistant`` (``developer``
is sent as ``system``: local chat templates and servers rarely know it).
Content is a string, an ``input_text``/``output_text`` part, or a list of those,
joined with newlines; image and audio parts raise ``unsupported_content``.

**sampling_params.** ``temperature``, ``top_p``, ``seed`` and
``max_completions_tokens`` (``max_tokens``, as in OpenAI's guide, is accepted
too) are sent to the server, the token cap as ``max_tokens`` (what vLLM and
llama.cpp read). ``reasoning_effort`` is passed through to servers and ignored
by local models. A local model writes at most :data:`LOCAL_MAX_NEW_TOKENS`
tokens unless a cap is given.

**Reading the reply.** A leading ``<think>...</think>`` block is dropped. See
:func:`read_score` and :func:`read_label`.

**Failures are data** (score 0, one flag, the details in the reason):

=================================================  ==============================
what happened                                      flag
=================================================  ==============================
a template variable does not resolve               ``invalid_variable_error``
HTTP error, timeout, connection failure (after     ``model_grader_server_error``
retries), a malformed server reply, or the local
model failing while it generates
the message carries a ``refusal``, or              ``model_grader_refusal_error``
``finish_reason`` is ``"content_filter"``
no number / no known label in the reply            ``model_grader_parse_error``
=================================================  ==============================

A bad config raises :class:`GraderConfigError` at construction, with its JSON
pointer; so does a local model directory that fails to load (on first grade).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx

from .._result import FieldDetail, Grade
from .._validation import validate_config
from ._common import SampleInput, missing_variable_grade, noting_cut
from ._configs import LabelModelConfig, ScoreModelConfig
from ._endpoint import DEFAULT_TIMEOUT, check_options, excerpt, flagged, verdict
from ._templates import MissingVariable, Sample, well_formed

if TYPE_CHECKING:
    pass
from ._common import OpenAIGrader
from ._model_backends import ChatCompletions, Reply, ServerFailure, resolve_backend
from ._model_io import ParseFailure, compile_input, read_label, read_score, response_format, sampling_params

# -- the graders ---------------------------------------------------------------------------


class _ModelGrader(OpenAIGrader):
    """What ``score_model`` and ``label_model`` share: messages, sampling, the backend, the flagged failures."""

    kind: str = ""
    """The OpenAI type name, for reasons and details."""

    def _setup_model(self, config: ScoreModelConfig | LabelModelConfig, *, base_url: str | None = None,
                     api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT, max_retries: int = 2,
                     backoff: float = 0.5, structured_output: bool = True, device: str | None = None,
                     client: httpx.Client | None = None) -> None:
        """What both types set from a validated config and the rftkit keywords (the constructors' defaults)."""
        self._name = config.name
        self.messages = compile_input(config.input)
        self._input = [m.model_dump(exclude_unset=True) for m in config.input]
        self.sampling_params = sampling_params(config.sampling_params)
        self._sampling_config = (config.sampling_params.model_dump(exclude_unset=True)
                                 if config.sampling_params is not None else None)
        timeout, max_retries, backoff = check_options(timeout, max_retries, backoff)
        model = config.model
        self.model = model
        """The grader model: a local directory or a served model's name."""
        self.backend = resolve_backend(model, base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                       backoff=backoff, structured_output=structured_output, device=device, client=client)
        self._options: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries, "backoff": backoff,
                                         "structured_output": structured_output, "device": device}
        if isinstance(self.backend, ChatCompletions):
            self._options["base_url"] = self.backend.url
        if api_key is not None:
            self._options["api_key"] = api_key

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    def render(self, sample: SampleInput, item: Mapping[str, Any] | None) -> list[dict[str, str]] | Grade:
        """The chat messages with every template filled in, or the flagged 0 grade of a missing variable."""
        s = Sample.of(sample)
        out = []
        for i, message in enumerate(self.messages):
            texts = []
            for part in message.parts:
                text = part.render(s, item)
                if isinstance(text, MissingVariable):
                    return missing_variable_grade(text, f"input[{i}]")
                texts.append(text)
            role = "system" if message.role == "developer" else message.role
            out.append({"role": role, "content": well_formed("\n".join(texts))})  # a lone surrogate: U+FFFD for the model
        return out

    def _answer_format(self) -> dict[str, Any]:
        raise NotImplementedError

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Ask the grader model and read its answer (see each subclass); a failure is a flagged 0."""
        s = Sample.of(sample)
        return noting_cut(self._graded(s, item), s)

    def _graded(self, sample: Sample, item: Mapping[str, Any] | None) -> Grade:
        raise NotImplementedError

    def ask(self, sample: SampleInput, item: Mapping[str, Any] | None) -> Reply | Grade:
        """Render the messages and ask the grader model; its reply, or the flagged 0 grade of a failure."""
        messages = self.render(sample, item)
        if isinstance(messages, Grade):
            return messages
        reply = self.backend.complete(messages, self.sampling_params, self._answer_format())
        where = self.backend.describe()
        if isinstance(reply, ServerFailure):
            return flagged("model_grader_server_error", f"{self.kind} {where}: {reply.detail}; scored 0")
        if reply.refusal is not None or reply.finish_reason == "content_filter":
            said = excerpt(reply.refusal) if reply.refusal is not None else "finish_reason content_filter"
            return flagged("model_grader_refusal_error", f"{self.kind} {where} refused: {said}; scored 0")
        return reply

    def _parse_failure(self, failure: ParseFailure, reply: Reply) -> Grade:
        detail = FieldDetail(self.kind, 0.0, "compared", reply.text, None)
        return flagged("model_grader_parse_error", f"{self.kind} {self.backend.describe()}: {failure.message}; "
                       f"reply {excerpt(reply.text, 120)}; scored 0", {self.name: detail})

    def _base_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "name": self.name, "model": self.model, "input": copy.deepcopy(self._input)}
        if self._sampling_config is not None:
            out["sampling_params"] = copy.deepcopy(self._sampling_config)
        return out

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.config(), dict(self._options)))


def _rebuild(cls: type[ScoreModelGrader] | type[LabelModelGrader], config: dict[str, Any],
             options: dict[str, Any]) -> _ModelGrader:
    return cls.from_config(config, **options)


class ScoreModelGrader(_ModelGrader):
    """OpenAI's ``score_model``: a grader model scores the sample; the reward is its ``result``, clamped to ``range``.

    The reward is the clamped value itself, as OpenAI's (their guide: the output
    "will be truncated to the given range", and ``result`` is "the reward
    value"): with ``range: [0, 10]`` a result of 7 scores 7.0, not 0.7. Write
    ``score / 10`` in a ``multi`` formula to normalise. A reply without a
    number scores 0 (``model_grader_parse_error``), as OpenAI's "default to 0
    for all non-numeric outputs", even when 0 is outside ``range``.
    ``pass_threshold`` only marks the reason ``passes``/``fails``.

    ``base_url``, ``api_key``, ``timeout`` (seconds per request, default 600),
    ``max_retries`` (default 2), ``backoff``, ``structured_output``, ``device``
    (for a local model) and ``client`` (an :class:`httpx.Client` to reuse) are
    rftkit's settings, not part of the config. See the module docstring.
    """

    type: Literal["score_model"] = "score_model"
    kind = "score_model"

    def __init__(self, *, name: str, model: str, input: list[dict[str, Any]], range: Sequence[float] | None = None,
                 sampling_params: Mapping[str, Any] | None = None, pass_threshold: float | None = None,
                 base_url: str | None = None, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = 2, backoff: float = 0.5, structured_output: bool = True, device: str | None = None,
                 client: httpx.Client | None = None) -> None:
        config = validate_config(ScoreModelConfig, {"type": "score_model", "name": name, "model": model, "input": input,
                                                    "range": range, "sampling_params": sampling_params,
                                                    "pass_threshold": pass_threshold})
        self._setup(config, base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                    structured_output=structured_output, device=device, client=client)

    def _setup(self, config: ScoreModelConfig, **options: Any) -> None:
        """Set the grader up from its validated config: the one path of the constructor and :meth:`from_config`."""
        self.low, self.high = config.range if config.range is not None else (0.0, 1.0)
        self._range_given = config.range is not None
        self.pass_threshold = config.pass_threshold
        """The score at or above which a grade passes (only marks the reason); None: no verdict."""
        self._setup_model(config, **options)

    @property
    def range(self) -> tuple[float, float]:
        """(low, high): where the reward is clamped."""
        return self.low, self.high

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ScoreModelConfig, **options: Any) -> ScoreModelGrader:
        """Build from ``{"type": "score_model", "name", "model", "input", "range"?, "sampling_params"?, "pass_threshold"?}``.

        ``options`` are the constructor's rftkit keywords (``base_url``, ``timeout`` ...).
        """
        grader = cls.__new__(cls)
        grader._setup(config if isinstance(config, ScoreModelConfig) else validate_config(ScoreModelConfig, config), **options)
        return grader

    def _answer_format(self) -> dict[str, Any]:
        return response_format({"type": "number"}, "score_model_result")

    def _graded(self, sample: Sample, item: Mapping[str, Any] | None) -> Grade:
        reply = self.ask(sample, item)
        if isinstance(reply, Grade):
            return reply
        value = read_score(reply.text, finish_reason=reply.finish_reason)
        if isinstance(value, ParseFailure):
            return self._parse_failure(value, reply)
        score = min(max(value, self.low), self.high)
        clamped = f", clamped to [{self.low:g}, {self.high:g}]" if score != value else ""
        detail = FieldDetail("score_model", score, "compared", reply.text, None)
        return Grade(score, {}, {self.name: detail}, None,
                     f"{score:g} from {self.backend.describe()} (result {value:g}{clamped})"
                     f"{verdict(score, self.pass_threshold)}")

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        out = self._base_config()
        if self._range_given:
            out["range"] = [self.low, self.high]
        if self.pass_threshold is not None:
            out["pass_threshold"] = self.pass_threshold
        return out

    def __repr__(self) -> str:
        return f"ScoreModelGrader(name={self.name!r}, model={self.model!r}, range={list(self.range)})"


class LabelModelGrader(_ModelGrader):
    """OpenAI's ``label_model``: a grader model picks one of ``labels``; 1.0 when it is in ``passing_labels``, else 0.

    The label is read by :func:`read_label` (a JSON ``{"result": label}`` or the
    bare label); a reply naming no known label scores 0 with
    ``model_grader_parse_error``. The rftkit keywords are those of
    :class:`ScoreModelGrader`.
    """

    type: Literal["label_model"] = "label_model"
    kind = "label_model"

    def __init__(self, *, name: str, model: str, input: list[dict[str, Any]], labels: list[str], passing_labels: list[str],
                 sampling_params: Mapping[str, Any] | None = None, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = 2, backoff: float = 0.5,
                 structured_output: bool = True, device: str | None = None, client: httpx.Client | None = None) -> None:
        config = validate_config(LabelModelConfig, {"type": "label_model", "name": name, "model": model, "input": input,
                                                    "labels": labels, "passing_labels": passing_labels,
                                                    "sampling_params": sampling_params})
        self._setup(config, base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                    structured_output=structured_output, device=device, client=client)

    def _setup(self, config: LabelModelConfig, **options: Any) -> None:
        """Set the grader up from its validated config: the one path of the constructor and :meth:`from_config`."""
        self.labels = tuple(config.labels)
        """Every label the grader model may answer."""
        self.passing_labels = tuple(config.passing_labels)
        """The labels that score 1."""
        self._setup_model(config, **options)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | LabelModelConfig, **options: Any) -> LabelModelGrader:
        """Build from ``{"type": "label_model", "name", "model", "input", "labels", "passing_labels", "sampling_params"?}``.

        ``options`` are the constructor's rftkit keywords (``base_url``, ``timeout`` ...).
        """
        grader = cls.__new__(cls)
        grader._setup(config if isinstance(config, LabelModelConfig) else validate_config(LabelModelConfig, config), **options)
        return grader

    def _answer_format(self) -> dict[str, Any]:
        return response_format({"type": "string", "enum": list(self.labels)}, "label_model_result")

    def _graded(self, sample: Sample, item: Mapping[str, Any] | None) -> Grade:
        reply = self.ask(sample, item)
        if isinstance(reply, Grade):
            return reply
        label = read_label(reply.text, self.labels, finish_reason=reply.finish_reason)
        if isinstance(label, ParseFailure):
            return self._parse_failure(label, reply)
        passed = label in self.passing_labels
        score = 1.0 if passed else 0.0
        detail = FieldDetail("label_model", score, "compared", label, list(self.passing_labels))
        return Grade(score, {}, {self.name: detail}, None,
                     f"{score:.0f}: {self.backend.describe()} chose {label!r}, "
                     f"{'a passing' if passed else 'not a passing'} label")

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        out = self._base_config()
        out["labels"] = list(self.labels)
        out["passing_labels"] = list(self.passing_labels)
        return out

    def __repr__(self) -> str:
        return f"LabelModelGrader(name={self.name!r}, model={self.model!r}, labels={list(self.labels)})"


