"""What a model grader sends and reads: messages rendered from templates, sampling parameters, scores and labels read from replies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..structured._decode import parse_response
from ._configs import Message, SamplingParamsConfig
from ._templates import Template, compile_template

if TYPE_CHECKING:
    pass



BASE_URL_ENV = "RFTKIT_MODEL_BASE_URL"
"""Environment variable with the chat-completions base URL (``$OPENAI_BASE_URL`` is the fallback)."""
LOCAL_MAX_NEW_TOKENS = 512
"""Tokens a local grader model may write when ``sampling_params`` sets no cap."""
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


def compile_input(messages: Sequence[Message]) -> tuple[_Message, ...]:
    """The validated messages with their templates compiled (``developer`` is kept; it is sent as ``system``)."""
    out = []
    for message in messages:
        content = message.content
        parts = content if isinstance(content, list) else [content]
        out.append(_Message(message.role, tuple(compile_template(p if isinstance(p, str) else p.text) for p in parts)))
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


def sampling_params(config: SamplingParamsConfig | None) -> SamplingParams:
    """The validated ``sampling_params`` as the request fields they set."""
    if config is None:
        return SamplingParams()
    cap = config.max_completions_tokens if config.max_completions_tokens is not None else config.max_tokens
    return SamplingParams(temperature=config.temperature, top_p=config.top_p, seed=config.seed, max_tokens=cap,
                          reasoning_effort=config.reasoning_effort)
