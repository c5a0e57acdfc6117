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

import contextvars
import copy
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

from ._endpoint_grader import (
    DEFAULT_TIMEOUT,
    HttpFailure,
    LazyClient,
    check_options,
    check_threshold,
    check_url,
    excerpt,
    flagged,
    json_body,
    post_json,
    verdict,
)
from ._errors import GraderConfigError
from ._openai import SampleInput, _check_keys, _check_name, _missing, noting_cut
from ._parsing import parse_response
from ._result import FieldDetail, Grade
from ._templates import MissingVariable, Sample, Template, well_formed

if TYPE_CHECKING:
    import torch

BASE_URL_ENV = "RFTKIT_MODEL_BASE_URL"
"""Environment variable with the chat-completions base URL (``$OPENAI_BASE_URL`` is the fallback)."""
LOCAL_MAX_NEW_TOKENS = 512
"""Tokens a local grader model may write when ``sampling_params`` sets no cap."""
ROLES = ("system", "developer", "user", "assistant")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_SAMPLING_KEYS = ("temperature", "top_p", "seed", "max_completions_tokens", "max_tokens", "reasoning_effort")
_TEXT_PARTS = ("input_text", "output_text")
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


# -- reading the grader model's answer --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Why a reply holds no score or label (the reason behind ``model_grader_parse_error``)."""

    message: str


def _strip_thinking(text: str) -> str:
    return _THINK.sub("", text, count=1)


def _json_result(text: str, finish_reason: str | None) -> tuple[bool, Any, str]:
    """(found an object, its ``result`` or None, why not) for the JSON object in ``text``."""
    parsed = parse_response(text, finish_reason=finish_reason)
    if parsed.status != "ok":
        return False, None, parsed.reason
    if not isinstance(parsed.value, dict):
        return False, None, "the JSON in the reply is not an object"
    if "result" not in parsed.value:
        return True, None, f'the JSON object has no "result" (keys: {sorted(parsed.value)[:8]})'
    return True, parsed.value["result"], ""


def read_score(text: str, *, finish_reason: str | None = None) -> float | ParseFailure:
    """The score in a grader model's reply.

    Read as, in order: the ``result`` of the JSON object in the reply (a bare
    object, a fenced block or the last object in prose; see
    :func:`graders.parse_response`), which must be a JSON number; or the whole
    reply when it is one number (``"0.9"``, for prompts that say "return only the
    score"). Anything else -- a string ``result``, NaN, prose -- is a
    :class:`ParseFailure`.

    >>> read_score('{"steps": [], "result": 0.7}')
    0.7
    >>> read_score('Let me think.\\n```json\\n{"result": 8}\\n```')
    8.0
    >>> read_score(" 0.25 ")
    0.25
    >>> read_score('{"result": "high"}')
    ParseFailure(message="result is 'high', not a number")
    """
    text = _strip_thinking(text)
    found, result, why = _json_result(text, finish_reason)
    if found:
        if why:
            return ParseFailure(why)
        if isinstance(result, bool) or not isinstance(result, (int, float)) or not math.isfinite(result):
            return ParseFailure(f"result is {result!r}, not a number")
        return float(result)
    bare = text.strip()
    if _NUMBER.fullmatch(bare):
        return float(bare)
    cut = " (the reply was cut at the token limit)" if finish_reason == "length" else ""
    return ParseFailure(f"no JSON result and not a number: {why}{cut}")


def _match_label(answer: str, labels: Sequence[str]) -> str | None:
    """``answer`` itself when it is a label, else the one label equal to it ignoring case, else None."""
    if answer in labels:
        return answer
    folded = [label for label in labels if label.casefold() == answer.casefold()]
    return folded[0] if len(folded) == 1 else None


def read_label(text: str, labels: Sequence[str], *, finish_reason: str | None = None) -> str | ParseFailure:
    """The label in a grader model's reply: one of ``labels``.

    Read as, in order: the ``result`` string of the JSON object in the reply; or
    the whole reply, stripped of spaces, quotes, backticks and a final period.
    Either must equal a label, exactly or (when only one label fits) ignoring
    case. There is no search inside prose: in "this is not good", the label
    ``good`` is not the answer.

    >>> read_label('{"result": "good"}', ["good", "bad"])
    'good'
    >>> read_label("`Bad`.", ["good", "bad"])
    'bad'
    >>> read_label('{"result": "meh"}', ["good", "bad"])
    ParseFailure(message="label 'meh' is not one of ['good', 'bad']")
    """
    text = _strip_thinking(text)
    found, result, why = _json_result(text, finish_reason)
    if found:
        if why:
            return ParseFailure(why)
        if not isinstance(result, str):
            return ParseFailure(f"result is {result!r}, not a label")
        answer = result
    else:
        answer = text.strip().rstrip(".").strip().strip("\"'`").strip()
        if not answer:
            return ParseFailure("the reply is empty")
    label = _match_label(answer, labels)
    if label is None:
        return ParseFailure(f"label {answer if len(answer) <= 60 else answer[:57] + '...'!r} is not one of {list(labels)}")
    return label


def response_format(result: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The strict JSON-schema ``response_format`` asking for ``{"steps": [...], "result": ...}``."""
    step = {"type": "object", "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
            "required": ["description", "conclusion"], "additionalProperties": False}
    schema = {"type": "object", "properties": {"steps": {"type": "array", "items": step}, "result": dict(result)},
              "required": ["steps", "result"], "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


# -- config checks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Message:
    role: str
    parts: tuple[Template, ...]


def _text_part(part: Mapping[str, Any], at: str) -> Template:
    kind = part.get("type")
    if kind in ("input_image", "input_audio"):
        raise GraderConfigError(f"{kind} content is not supported: rftkit's model graders send text only",
                                code="unsupported_content", pointer=f"{at}/type",
                                hint="describe the image or audio in text, or grade it with a python or endpoint grader")
    if kind not in _TEXT_PARTS:
        raise GraderConfigError(f"a content part's type must be one of {list(_TEXT_PARTS)}, got {kind!r}", code="bad_value",
                                pointer=f"{at}/type")
    for key in part:
        if key not in ("type", "text"):
            raise GraderConfigError(f"unknown key {key!r} in a {kind} part", code="unknown_key", pointer=f"{at}/{key}")
    if "text" not in part:
        raise GraderConfigError(f"a {kind} part needs 'text'", code="missing_key", pointer=f"{at}/text")
    return Template(part["text"], pointer=f"{at}/text")


def _content(content: Any, at: str) -> tuple[Template, ...]:
    if isinstance(content, str):
        return (Template(content, pointer=at),)
    if isinstance(content, Mapping):
        return (_text_part(content, at),)
    if isinstance(content, list) and content:
        return tuple(Template(p, pointer=f"{at}/{j}") if isinstance(p, str) else
                     _text_part(p, f"{at}/{j}") if isinstance(p, Mapping) else
                     _wrong(f"a content part is a string or an object, got {type(p).__name__}", f"{at}/{j}")
                     for j, p in enumerate(content))
    raise GraderConfigError(f"content must be a string, a text part or a non-empty list of them, got {content!r}",
                            code="wrong_type", pointer=at, hint='"Grade this: {{ sample.output_text }}"')


def _wrong(message: str, at: str) -> Template:
    raise GraderConfigError(message, code="wrong_type", pointer=at)


def _compile_input(messages: Any) -> tuple[_Message, ...]:
    if not isinstance(messages, list) or not messages:
        raise GraderConfigError("input must be a non-empty list of messages", code="wrong_type", pointer="/input",
                                hint='[{"role": "user", "content": "Score this answer: {{ sample.output_text }}"}]')
    out = []
    for i, message in enumerate(messages):
        at = f"/input/{i}"
        if not isinstance(message, Mapping):
            raise GraderConfigError(f"a message is an object with role and content, got {type(message).__name__}",
                                    code="wrong_type", pointer=at)
        for key in message:
            if key not in ("role", "content", "type"):
                raise GraderConfigError(f"unknown key {key!r} in a message", code="unknown_key", pointer=f"{at}/{key}",
                                        hint="a message has role, content and optionally type")
        if message.get("role") not in ROLES:
            raise GraderConfigError(f"role must be one of {list(ROLES)}, got {message.get('role')!r}", code="bad_value",
                                    pointer=f"{at}/role")
        if "type" in message and message["type"] != "message":
            raise GraderConfigError(f"a message's type is 'message', got {message['type']!r}", code="bad_value",
                                    pointer=f"{at}/type")
        if "content" not in message:
            raise GraderConfigError("a message needs content", code="missing_key", pointer=f"{at}/content")
        out.append(_Message(message["role"], _content(message["content"], f"{at}/content")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """OpenAI's ``sampling_params``, checked. None means "not set"."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    """``max_completions_tokens`` (or ``max_tokens``): the cap on the tokens the grader model writes."""
    reasoning_effort: str | None = None

    def request(self) -> dict[str, Any]:
        """The chat-completions request fields that are set."""
        out: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                               "max_tokens": self.max_tokens, "reasoning_effort": self.reasoning_effort}
        return {k: v for k, v in out.items() if v is not None}


def _number(raw: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise GraderConfigError(f"{key} must be a number in [{low:g}, {high:g}], got {value!r}", code="bad_value",
                                pointer=f"/sampling_params/{key}")
    return float(value)


def _integer(raw: Mapping[str, Any], key: str, low: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GraderConfigError(f"{key} must be an integer >= {low}, got {value!r}", code="bad_value",
                                pointer=f"/sampling_params/{key}")
    return value


def _check_sampling(raw: Any) -> SamplingParams:
    if raw is None:
        return SamplingParams()
    if not isinstance(raw, Mapping):
        raise GraderConfigError(f"sampling_params must be an object, got {type(raw).__name__}", code="wrong_type",
                                pointer="/sampling_params")
    for key in raw:
        if key not in _SAMPLING_KEYS:
            raise GraderConfigError(f"unknown key {key!r} in sampling_params", code="unknown_key",
                                    pointer=f"/sampling_params/{key}", hint=f"known keys: {sorted(_SAMPLING_KEYS)}")
    if raw.get("max_completions_tokens") is not None and raw.get("max_tokens") is not None:
        raise GraderConfigError("give max_completions_tokens or max_tokens, not both", code="bad_value",
                                pointer="/sampling_params/max_tokens")
    effort = raw.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise GraderConfigError(f"reasoning_effort must be one of {list(REASONING_EFFORTS)}, got {effort!r}",
                                code="bad_value", pointer="/sampling_params/reasoning_effort")
    cap = _integer(raw, "max_completions_tokens", 1)
    return SamplingParams(temperature=_number(raw, "temperature", 0.0, 2.0), top_p=_number(raw, "top_p", 0.0, 1.0),
                          seed=_integer(raw, "seed", -(2 ** 63)),
                          max_tokens=cap if cap is not None else _integer(raw, "max_tokens", 1), reasoning_effort=effort)


def _check_range(value: Any) -> tuple[float, float]:
    if value is None:
        return 0.0, 1.0
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value))
    if not ok or not value[0] < value[1]:
        raise GraderConfigError(f"range must be [low, high] with finite numbers and low < high, got {value!r}",
                                code="bad_value", pointer="/range", hint="e.g. [0, 1] (the default) or [0, 10]")
    return float(value[0]), float(value[1])


def _check_labels(value: Any, key: str, known: Sequence[str] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise GraderConfigError(f"{key} must be a non-empty list of strings", code="wrong_type", pointer=f"/{key}",
                                hint='e.g. ["correct", "incorrect"]')
    for i, label in enumerate(value):
        if not isinstance(label, str) or not label.strip():
            raise GraderConfigError(f"a label is a non-empty string, got {label!r}", code="wrong_type", pointer=f"/{key}/{i}")
        if label in value[:i]:
            raise GraderConfigError(f"label {label!r} is listed twice", code="bad_value", pointer=f"/{key}/{i}")
        if known is not None and label not in known:
            raise GraderConfigError(f"passing label {label!r} is not one of labels {list(known)}", code="bad_value",
                                    pointer=f"/{key}/{i}", hint="passing_labels must be a subset of labels")
    return tuple(value)


# -- where the grader model runs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """What the grader model answered."""

    text: str
    finish_reason: str | None
    refusal: str | None = None
    usage: dict[str, Any] | None = None
    """The server's token counts (``prompt_tokens``, ``completion_tokens`` ...), when it sent them."""


@dataclass(frozen=True, slots=True)
class ServerFailure:
    """The grader model gave no reply (the reason behind ``model_grader_server_error``)."""

    detail: str


class Backend(Protocol):
    """Runs the grader model: a chat-completions server or a local transformers model."""

    def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                 answer_format: dict[str, Any] | None) -> Reply | ServerFailure: ...

    def describe(self) -> str: ...


class ChatCompletions:
    """An OpenAI-compatible ``/chat/completions`` server (vLLM, llama.cpp, SGLang, Ollama, OpenAI)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = 2, backoff: float = 0.5, structured_output: bool = True,
                 client: httpx.Client | None = None) -> None:
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.structured_output = structured_output
        self._http = LazyClient(client)

    def describe(self) -> str:
        return f"model {self.model!r} at {self.url}"

    def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                 answer_format: dict[str, Any] | None) -> Reply | ServerFailure:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, **params.request()}
        if answer_format is not None and self.structured_output:
            payload["response_format"] = answer_format
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = post_json(self.url, json_body(payload, "the grader prompt"), headers, timeout=self.timeout,
                           max_retries=self.max_retries, backoff=self.backoff, client=self._http.get())
        if isinstance(answer, HttpFailure):
            hint = (" (if the server does not support JSON-schema response_format, build the grader with "
                    "structured_output=False)" if answer.status == 400 and "response_format" in payload else "")
            return ServerFailure(answer.detail + hint)
        return _read_completion(answer)


def _read_completion(response: httpx.Response) -> Reply | ServerFailure:
    try:
        body = response.json()
    except ValueError:
        return ServerFailure(f"HTTP {response.status_code} with a body that is not JSON: {excerpt(response.text)}")
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, dict):
        return ServerFailure(f"the reply has no choices[0].message: {excerpt(response.text)}")
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is not None and not isinstance(content, str):
        return ServerFailure(f"choices[0].message.content is {type(content).__name__}, not text")
    refusal = message.get("refusal")
    finish = choice.get("finish_reason") if choice is not None else None
    usage = body.get("usage")
    return Reply(content or "", finish if isinstance(finish, str) else None,
                 refusal if isinstance(refusal, str) and refusal.strip() else None,
                 usage if isinstance(usage, dict) else None)


class LocalModel:
    """A transformers causal LM in a local directory, loaded on first use (one copy per directory and device)."""

    def __init__(self, path: Path, device: str | None = None) -> None:
        self.path = path
        self.device = device

    def describe(self) -> str:
        return f"local model {str(self.path)!r}"

    def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                 answer_format: dict[str, Any] | None) -> Reply | ServerFailure:
        lm = load_local_model(self.path, self.device)
        try:
            text, finish = lm.generate(messages, params)
        except Exception as exc:  # the model grader's boundary (DESIGN: error policy): a failing model is a flagged 0
            return ServerFailure(f"generation failed: {type(exc).__name__}: {exc}")
        return Reply(text, finish)


class LoadedModel:
    """A loaded local grader model and its tokenizer."""

    def __init__(self, path: Path, device: str | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer  # torch and transformers load here, not on import

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        loaded: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        self.model: Any = loaded.to(self.device)  # typed loosely, as rl does: transformers' Auto classes type poorly
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos or [])
        pad = self.tokenizer.pad_token_id
        self.pad_id: int | None = pad if pad is not None else min(self.eos_ids, default=None)

    def prompt(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """The prompt text, and whether it came from the chat template (which then holds the special tokens)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return str(text), True
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:", False

    def generate(self, messages: list[dict[str, str]], params: SamplingParams) -> tuple[str, str]:
        """The reply text and its finish reason (``stop`` at an end-of-sequence token, else ``length``)."""
        import torch

        text, templated = self.prompt(messages)
        batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=not templated).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": params.max_tokens or LOCAL_MAX_NEW_TOKENS, "pad_token_id": self.pad_id}
        if params.temperature:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p or 1.0)
        else:
            options.update(do_sample=False)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():  # a seed must not move the trainer's RNG
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out: torch.Tensor = self.model.generate(**batch, **options)  # (1, T_prompt + T_new)
        new = out[0, batch["input_ids"].shape[1]:]  # (T_new,)
        finish = "stop" if len(new) and int(new[-1]) in self.eos_ids else "length"
        return str(self.tokenizer.decode(new, skip_special_tokens=True)), finish


@lru_cache(maxsize=2)
def load_local_model(path: Path, device: str | None = None) -> LoadedModel:
    """The :class:`LoadedModel` for ``path``, loaded once and kept; a directory that does not load raises."""
    try:
        return LoadedModel(path, device)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise GraderConfigError(f"the grader model in {str(path)!r} did not load: {type(exc).__name__}: {exc}",
                                code="model_load_failed", pointer="/model",
                                hint="a transformers causal LM directory (config.json, weights, tokenizer files)") from None


def _looks_like_path(model: str) -> bool:
    return model.startswith(_PATH_PREFIXES) or (len(model) > 2 and model[1] == ":" and model[2] in "/\\")


_local_models: contextvars.ContextVar[bool] = contextvars.ContextVar("rftkit_local_models", default=True)


@contextmanager
def served_models_only() -> Iterator[None]:
    """Graders built inside take ``model`` as a served model's name only: no local directory is looked at or loaded.

    ``rftkit serve`` builds request-borne model graders in here, so a request
    cannot make the server stat or load a path it names.
    """
    token = _local_models.set(False)
    try:
        yield
    finally:
        _local_models.reset(token)


def resolve_backend(model: object, *, base_url: str | None = None, api_key: str | None = None,
                    timeout: float = DEFAULT_TIMEOUT, max_retries: int = 2, backoff: float = 0.5,
                    structured_output: bool = True, device: str | None = None,
                    client: httpx.Client | None = None) -> Backend:
    """Where ``model`` runs: a local model directory, else a chat-completions server (see the module docstring)."""
    if not isinstance(model, str) or not model.strip():
        raise GraderConfigError(f"model must be a non-empty string, got {model!r}", code="wrong_type", pointer="/model")
    path = Path(model).expanduser() if _local_models.get() else None  # None: looks at nothing on this machine
    if path is not None and (path.is_dir() or _looks_like_path(model)):
        if not (path / "config.json").is_file():
            raise GraderConfigError(f"model {model!r} is not a model directory (no config.json)", code="model_not_found",
                                    pointer="/model", hint="a local transformers causal LM directory, or a model name "
                                    f"served at ${BASE_URL_ENV}")
        if find_spec("torch") is None or find_spec("transformers") is None:
            raise GraderConfigError("a local grader model needs torch and transformers", code="model_backend_missing",
                                    pointer="/model", hint="pip install 'rftkit[rl]', or serve the model with vLLM or "
                                    f"llama.cpp and set ${BASE_URL_ENV}")
        return LocalModel(path, device)
    source = "base_url"
    if base_url is None:
        for env in (BASE_URL_ENV, "OPENAI_BASE_URL"):
            if os.environ.get(env):
                base_url, source = os.environ[env], f"${env}"
                break
    if base_url is None:
        raise GraderConfigError(f"model {model!r} is not a local directory and no chat-completions server is configured",
                                code="model_not_found", pointer="/model",
                                hint=f"set ${BASE_URL_ENV} (or $OPENAI_BASE_URL) to an OpenAI-compatible server such as "
                                     "http://127.0.0.1:8000/v1 (vLLM, llama.cpp), pass base_url=..., or give a local "
                                     "model directory")
    try:
        check_url(base_url, "/model")
    except GraderConfigError as exc:
        raise GraderConfigError(f"{source}: {exc.message}", code=exc.code, pointer="/model",
                                hint="a chat-completions base URL such as http://127.0.0.1:8000/v1") from None
    return ChatCompletions(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                           structured_output=structured_output, client=client)


# -- the graders ---------------------------------------------------------------------------


class _ModelGrader:
    """What ``score_model`` and ``label_model`` share: messages, sampling, the backend, the flagged failures."""

    kind: str = ""
    """The OpenAI type name, for reasons and details."""

    def __init__(self, *, name: str, model: str, input: list[dict[str, Any]], sampling_params: Mapping[str, Any] | None,
                 base_url: str | None, api_key: str | None, timeout: float, max_retries: int, backoff: float,
                 structured_output: bool, device: str | None, client: httpx.Client | None) -> None:
        self._name = _check_name(name)
        self.messages = _compile_input(input)
        self._input = copy.deepcopy(input)
        self.sampling_params = _check_sampling(sampling_params)
        self._sampling_config = copy.deepcopy(dict(sampling_params)) if sampling_params is not None else None
        timeout, max_retries, backoff = check_options(timeout, max_retries, backoff)
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
                    return _missing(text, f"input[{i}]")
                texts.append(text)
            role = "system" if message.role == "developer" else message.role
            out.append({"role": role, "content": well_formed("\n".join(texts))})  # a lone surrogate: U+FFFD for the model
        return out

    def _answer_format(self) -> dict[str, Any]:
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
        self.low, self.high = _check_range(range)
        self._range_given = range is not None
        self.pass_threshold = check_threshold(pass_threshold)
        """The score at or above which a grade passes (only marks the reason); None: no verdict."""
        super().__init__(name=name, model=model, input=input, sampling_params=sampling_params, base_url=base_url,
                         api_key=api_key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                         structured_output=structured_output, device=device, client=client)

    @property
    def range(self) -> tuple[float, float]:
        """(low, high): where the reward is clamped."""
        return self.low, self.high

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **options: Any) -> ScoreModelGrader:
        """Build from ``{"type": "score_model", "name", "model", "input", "range"?, "sampling_params"?, "pass_threshold"?}``.

        ``options`` are the constructor's rftkit keywords (``base_url``, ``timeout`` ...).
        """
        _check_keys(config, "score_model", ("name", "model", "input"), ("range", "sampling_params", "pass_threshold"))
        return cls(name=config["name"], model=config["model"], input=config["input"], range=config.get("range"),
                   sampling_params=config.get("sampling_params"), pass_threshold=config.get("pass_threshold"), **options)

    def _answer_format(self) -> dict[str, Any]:
        return response_format({"type": "number"}, "score_model_result")

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Ask the grader model; its ``result`` clamped to ``range``, or a flagged 0."""
        s = Sample.of(sample)
        return noting_cut(self._graded(s, item), s)

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
        self.labels = _check_labels(labels, "labels")
        """Every label the grader model may answer."""
        self.passing_labels = _check_labels(passing_labels, "passing_labels", self.labels)
        """The labels that score 1."""
        super().__init__(name=name, model=model, input=input, sampling_params=sampling_params, base_url=base_url,
                         api_key=api_key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                         structured_output=structured_output, device=device, client=client)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **options: Any) -> LabelModelGrader:
        """Build from ``{"type": "label_model", "name", "model", "input", "labels", "passing_labels", "sampling_params"?}``.

        ``options`` are the constructor's rftkit keywords (``base_url``, ``timeout`` ...).
        """
        _check_keys(config, "label_model", ("name", "model", "input", "labels", "passing_labels"), ("sampling_params",))
        return cls(name=config["name"], model=config["model"], input=config["input"], labels=config["labels"],
                   passing_labels=config["passing_labels"], sampling_params=config.get("sampling_params"), **options)

    def _answer_format(self) -> dict[str, Any]:
        return response_format({"type": "string", "enum": list(self.labels)}, "label_model_result")

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """Ask the grader model for a label; 1.0 when it passes, else 0.0 (flagged when there is no known label)."""
        s = Sample.of(sample)
        return noting_cut(self._graded(s, item), s)

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
