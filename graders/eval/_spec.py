"""What an eval run reads: the graders, the sampling settings and the dataset rows.

Three ways to say what to grade with, all through ``--grader FILE``:

* a grader config (any type :func:`graders.from_config` reads), reported under its ``name``;
* an OpenAI eval definition, as sent to ``POST /v1/evals``: its ``testing_criteria`` (a list of
  grader configs, each graded and reported under its name);
* the same with the run's ``data_source`` beside it (``POST /v1/evals/{id}/runs``, ``"type":
  "completions"``): its ``input_messages`` turn each item into the chat sent to the model (a
  ``template`` over ``{{ item.x }}``, or an ``item_reference`` such as ``item.input_trajectory``
  naming a chat inside each item), its ``sampling_params`` set the defaults of ``--temperature``,
  ``--top-p``, ``--max-tokens`` (``max_completion_tokens``), ``--seed`` and ``response_format``,
  its ``model`` the default model name, and a ``file_content`` ``source`` carries the rows
  themselves (then the dataset argument may be left out). A ``file_id`` source names a file on
  OpenAI's side: download it and pass it as the dataset. What has no local meaning (another
  data source type, a ``stored_completions`` source, ``tools``) is refused with a hint.

Dataset rows are the layouts ``rftkit validate`` knows: ``messages`` (a chat), ``prompt`` (a
string, or a chat), and OpenAI's eval JSONL where each line is ``{"item": {...}}``. The item a
grader's ``{{ item.x }}`` reads is the row (or its ``item``); a ``structured`` grader compares with
the item's ``reference``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import UserError, load_jsonl

from .. import GraderConfigError
from .._config import load_config
from .._registry import GRADER_TYPES


@dataclass(frozen=True)
class SamplingParams:
    """How each sample is drawn; the same for every model source."""

    temperature: float = 0.0
    """0 is greedy decoding."""
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    """Sample ``k`` of a row is drawn with ``seed + k`` where the source takes a seed."""
    stop: tuple[str, ...] = ()
    response_format: Mapping[str, Any] | None = None
    """OpenAI's ``response_format`` (``{"type": "json_schema", "json_schema": {...}}``), sent to servers as is."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise UserError(f"temperature must be >= 0, got {self.temperature}", code="bad_option", pointer="/sampling_params/temperature")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}", code="bad_option", pointer="/sampling_params/top_p")
        if self.max_tokens < 1:
            raise UserError(f"max_tokens must be >= 1, got {self.max_tokens}", code="bad_option",
                            pointer="/sampling_params/max_tokens")

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed,
                "stop": list(self.stop), "response_format": dict(self.response_format) if self.response_format else None}


@dataclass(frozen=True)
class NamedGrader:
    """One grader of the run: its report name, the grader, and its ``pass_threshold`` (None: no pass rate)."""

    name: str
    grader: Any
    config: Mapping[str, Any]
    pass_threshold: float | None
    needs_reference: bool
    """The grader compares with the row's ``reference`` (a structured grader); others read the item."""


@dataclass(frozen=True)
class EvalRow:
    """One dataset row: the item graders read, and what the model is asked (a prompt string or a chat)."""

    index: int
    """0-based position among the used rows (the key of ``samples.jsonl``)."""
    line: int
    """1-based line in the dataset file."""
    item: Mapping[str, Any]
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    id: Any = None


@dataclass(frozen=True)
class EvalDefinition:
    """The graders, and what an OpenAI run definition adds (input template, sampling defaults, model)."""

    graders: list[NamedGrader]
    input_messages: list[dict[str, Any]] | None = None
    """The ``template`` of the run's ``input_messages``, rendered per item."""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    """The run's ``sampling_params``, checked (numbers where numbers go)."""
    model: str | None = None
    item_reference: str | None = None
    """The ``item_reference`` of the run's ``input_messages`` (``item.input_trajectory``): each item's chat."""
    items: list[dict[str, Any]] | None = None
    """The rows of a ``file_content`` source (``{"item": ...}`` each), in order; None: the rows come from a file."""


PASS_FAIL = frozenset(name for name, kind in GRADER_TYPES.items() if kind.pass_fail)
"""Grader types whose reward is 1 (pass) or 0 (fail): their pass threshold is 1."""


def _threshold(config: Mapping[str, Any], pointer: str) -> float | None:
    """The config's ``pass_threshold``; 1 for a pass/fail type; None (no pass rate) otherwise."""
    value = config.get("pass_threshold")
    if value is None:
        return 1.0 if config.get("type") in PASS_FAIL else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GraderConfigError(f"pass_threshold must be a finite number, got {value!r}", code="wrong_type", pointer=pointer)
    return float(value)


def _build(config: Mapping[str, Any], pointer: str) -> NamedGrader:
    from .. import from_config

    try:
        grader = from_config(config)
    except GraderConfigError as exc:  # the pointer inside the eval definition
        raise GraderConfigError(exc.message, code=exc.code, pointer=pointer + exc.pointer, hint=exc.hint) from None
    given = config.get("name")
    name = given if isinstance(given, str) else str(config.get("type", "grader"))
    return NamedGrader(name, grader, config, _threshold(config, pointer + "/pass_threshold"), grader.needs_reference)


def read_definition(path: Path) -> EvalDefinition:
    """The graders of ``path`` (a grader config or an OpenAI eval definition), and the run settings it carries."""
    config = load_config(path)
    if "testing_criteria" not in config:
        return EvalDefinition([_build(config, "")])
    criteria = config["testing_criteria"]
    if not isinstance(criteria, list) or not criteria:
        raise GraderConfigError("testing_criteria must be a non-empty list of grader configs", code="wrong_type",
                                pointer="/testing_criteria")
    graders = []
    for i, c in enumerate(criteria):
        if not isinstance(c, Mapping):
            raise GraderConfigError(f"a testing criterion is a grader config object, got {type(c).__name__}", code="wrong_type",
                                    pointer=f"/testing_criteria/{i}")
        graders.append(_build(c, f"/testing_criteria/{i}"))
    names = [g.name for g in graders]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise GraderConfigError(f"two testing criteria are named {name!r}; each is reported by its name", code="duplicate_name",
                                    pointer=f"/testing_criteria/{i}/name", hint="give each criterion its own name")
    source = config.get("data_source")
    if source is None:
        return EvalDefinition(graders)
    if not isinstance(source, Mapping):
        raise GraderConfigError("data_source must be an object (a run's completions data source)", code="wrong_type",
                                pointer="/data_source")
    if source.get("type", "completions") != "completions":
        raise GraderConfigError(f"data_source type {source.get('type')!r} is not one rftkit eval runs: it samples a model, as a "
                                "'completions' data source does", code="unsupported", pointer="/data_source/type",
                                hint="a 'jsonl' source holds samples already made: grade them with rftkit grade; a 'responses' "
                                     "run becomes a 'completions' one with the same input_messages and sampling_params")
    template, reference = _input_messages(source.get("input_messages"))
    model = source.get("model")
    if model is not None and not isinstance(model, str):
        raise GraderConfigError(f"model must be a string, got {type(model).__name__}", code="wrong_type", pointer="/data_source/model")
    return EvalDefinition(graders, template, _sampling_params(source.get("sampling_params")), model, reference,
                          _source_items(source.get("source")))


def _input_messages(messages: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The run's ``input_messages``: (template, None), (None, item reference) or (None, None) when absent."""
    from .. import Template

    where = "/data_source/input_messages"
    if messages is None:
        return None, None
    kind = messages.get("type") if isinstance(messages, Mapping) else None
    if kind == "item_reference":
        ref = messages.get("item_reference")
        if not isinstance(ref, str) or not ref.strip().startswith("item."):
            raise GraderConfigError(f"item_reference must name a path in the item, like 'item.input_trajectory', got {ref!r}",
                                    code="bad_value", pointer=f"{where}/item_reference")
        Template("{{ " + ref.strip() + " }}", pointer=f"{where}/item_reference")  # a malformed path raises here
        return None, ref.strip()
    if kind != "template" or not isinstance(messages.get("template"), list):
        raise GraderConfigError('input_messages must be {"type": "template", "template": [messages]} or '
                                '{"type": "item_reference", "item_reference": "item.<path>"}', code="unsupported", pointer=where)
    template = []
    for i, m in enumerate(messages["template"]):
        content = m.get("content") if isinstance(m, Mapping) else None
        if isinstance(content, Mapping) and content.get("type") == "input_text":
            content = content.get("text")
        if not isinstance(m, Mapping) or not isinstance(content, str) or not isinstance(m.get("role"), str):
            raise GraderConfigError("each template message needs a role and a text content", code="wrong_type",
                                    pointer=f"{where}/template/{i}")
        template.append({"role": m["role"], "content": content})
    return template, None


SAMPLING_KEYS = {"temperature": float, "top_p": float, "max_completion_tokens": int, "max_tokens": int, "seed": int,
                 "response_format": dict}
"""The ``sampling_params`` a local run uses, and the type of each."""


def _sampling_params(params: Any) -> dict[str, Any]:
    """The run's ``sampling_params``, checked: known keys, each of its type (an unknown one is refused, not ignored)."""
    where = "/data_source/sampling_params"
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise GraderConfigError("sampling_params must be an object", code="wrong_type", pointer=where)
    for key, value in params.items():
        kind = SAMPLING_KEYS.get(key)
        if kind is None:
            raise GraderConfigError(f"sampling_params.{key} has no local equivalent", code="unsupported", pointer=f"{where}/{key}",
                                    hint=f"remove it; rftkit eval reads {', '.join(SAMPLING_KEYS)}")
        ok = isinstance(value, dict) if kind is dict else \
            isinstance(value, int) if kind is int else isinstance(value, (int, float)) and math.isfinite(value)
        if value is not None and (isinstance(value, bool) or not ok):
            raise GraderConfigError(f"sampling_params.{key} must be {'an object' if kind is dict else 'an integer' if kind is int else 'a number'}, "
                                    f"got {value!r}", code="wrong_type", pointer=f"{where}/{key}")
    return {k: v for k, v in params.items() if v is not None}


def _source_items(source: Any) -> list[dict[str, Any]] | None:
    """The rows of a ``file_content`` source; None for a ``file_id`` one (the dataset argument names the file)."""
    where = "/data_source/source"
    if source is None:
        return None
    kind = source.get("type") if isinstance(source, Mapping) else None
    if kind == "file_id":
        return None
    if kind == "file_content":
        content = source.get("content")
        if not isinstance(content, list) or not all(isinstance(r, Mapping) and isinstance(r.get("item"), Mapping) for r in content):
            raise GraderConfigError('a file_content source holds "content": [{"item": {...}}, ...]', code="wrong_type",
                                    pointer=f"{where}/content")
        return [dict(r) for r in content]
    raise GraderConfigError(f"source type {kind!r} has no local equivalent", code="unsupported", pointer=f"{where}/type",
                            hint="export the items as JSONL ({\"item\": {...}} per line) and pass that file as the dataset")


def render_messages(template: Sequence[Mapping[str, Any]], item: Mapping[str, Any], line: int) -> list[dict[str, Any]]:
    """The chat for one item: each ``{{ item.x }}`` of the template filled in; a missing variable raises, naming the row."""
    from .. import MissingVariable, Sample, Template

    out = []
    empty = Sample.of("")
    for i, m in enumerate(template):
        text = Template(m["content"], pointer=f"/data_source/input_messages/template/{i}/content").render(empty, item)
        if isinstance(text, MissingVariable):
            raise UserError(f"row {line}: the input template's {{{{ {text.variable} }}}} does not resolve: {text.message}",
                            code="invalid_variable", pointer=f"/data_source/input_messages/template/{i}/content",
                            hint="every row needs the keys the input template reads")
        out.append({"role": m["role"], "content": text})
    return out


def read_rows(path: Path | None, definition: EvalDefinition, *, limit: int | None = None) -> list[EvalRow]:
    """The dataset's rows (``path``, or the definition's ``file_content`` items when it is None), checked: each needs a
    prompt (its own, or what the run's input_messages make of it), and a ``reference`` for a structured grader."""
    if path is not None:
        raw, name = load_jsonl(path), str(path)
    elif definition.items is not None:
        raw, name = definition.items, "data_source.source"
    else:
        raise UserError("no rows: give the dataset file (JSONL)", code="missing_dataset", pointer="/dataset",
                        hint="or put the items in the eval definition's data_source.source as a file_content source")
    if not raw:
        raise UserError(f"{name} has no rows", code="empty_dataset")
    rows: list[EvalRow] = []
    for n, row in enumerate(raw[:limit] if limit else raw, 1):
        item = row["item"] if isinstance(row.get("item"), Mapping) and "prompt" not in row and "messages" not in row else row
        prompt, messages = None, None
        if definition.input_messages is not None:
            messages = render_messages(definition.input_messages, item, n)
        elif definition.item_reference is not None:
            messages = _referenced_chat(definition.item_reference, item, name, n)
        elif isinstance(item.get("messages"), list):
            messages = item["messages"]
        elif isinstance(item.get("prompt"), list):
            messages = item["prompt"]
        elif isinstance(item.get("prompt"), str):
            prompt = item["prompt"]
        else:
            raise UserError(f"{name}:{n}: the row has no 'prompt' string or 'messages' chat", code="missing_prompt", pointer="/prompt",
                            hint="give each row a prompt or messages, or an eval definition whose data_source has input_messages")
        if messages is not None and not all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in messages):
            raise UserError(f"{name}:{n}: messages must be a list of {{role, content}} objects", code="bad_messages", pointer="/messages")
        for g in definition.graders:
            if g.needs_reference and "reference" not in item:
                raise UserError(f"{name}:{n}: grader {g.name!r} needs the row's 'reference'", code="missing_reference",
                                pointer="/reference", hint="add the expected answer as 'reference'")
        rows.append(EvalRow(len(rows), n, item, prompt, messages, item.get("id")))
    return rows


def _referenced_chat(reference: str, item: Mapping[str, Any], name: str, n: int) -> list[dict[str, Any]]:
    """The chat an ``item_reference`` names in one item; a missing path or a value that is not a chat raises, naming the row."""
    from .. import MissingVariable, Sample, Template

    value = Template("{{ " + reference + " }}").render_value(Sample.of(""), item)
    if isinstance(value, MissingVariable):
        raise UserError(f"{name}:{n}: the input_messages item_reference {reference} does not resolve: {value.message}",
                        code="invalid_variable", pointer="/data_source/input_messages/item_reference",
                        hint="every row needs the chat the item_reference names")
    if not isinstance(value, list) or not value:
        raise UserError(f"{name}:{n}: {reference} must be a chat (a list of {{role, content}} messages), got {type(value).__name__}",
                        code="bad_messages", pointer="/data_source/input_messages/item_reference")
    return [dict(m) if isinstance(m, Mapping) else m for m in value]


def row_digest(rows: Sequence[EvalRow]) -> str:
    """A hash of what the rows ask and hold: a resumed run must see the same rows."""
    import hashlib

    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.prompt, r.messages, r.item], sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]
