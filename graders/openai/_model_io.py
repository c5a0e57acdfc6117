"""What a model grader sends and reads: messages rendered from templates, sampling parameters, scores and labels read from replies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import GraderConfigError
from ..structured._decode import parse_response
from ._templates import Template

if TYPE_CHECKING:
    pass



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
    :func:`graders.structured.parse_response`), which must be a JSON number; or the whole
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




