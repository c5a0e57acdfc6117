

"""OpenAI grader templates: ``{{ item.x }}`` and ``{{ sample.output_json.a.b }}``.

A template is a string with variables in double braces. A variable names a
namespace -- ``item`` (the dataset row) or ``sample`` (the model's output) --
then a path of dotted keys (letters, digits, ``_`` and ``-``) and ``[i]`` list
indexes, with or without spaces inside the braces::

    {{ item.reference }}   {{sample.output_text}}   {{ sample.output_json.a.b }}
    {{sample.output_tools[0].function.arguments}}

Templates never execute code: a template is split with one regular expression
when the grader is built, and rendering walks dicts and lists. A variable that
does not fit that grammar (``{{ items.x }}``, ``{{ item.x | upper }}``) is a
config mistake and raises :class:`GraderConfigError` at construction.

**Rendering rule.** A string value is inserted as is. Any other value is
inserted as compact JSON, ``json.dumps(value, separators=(",", ":"),
ensure_ascii=False)``: ``{"a":1}``, ``[1,2]``, ``3.5``, ``true``, ``null``.
:meth:`Template.render_value` returns the raw value instead when the template is
exactly one variable with nothing around it (that is how a ``structured``
sub-grader receives an object as its reference).

**A missing variable is data, not a crash.** When a path does not resolve (no
such key, an index past the end, ``item`` not given, ``sample.output_json`` of an
output that is not JSON) rendering returns a :class:`MissingVariable` record;
graders turn it into a score of 0 with ``invalid_variable_error``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from schemas import UserError

from .._errors import GraderConfigError
from ..structured._decode import max_output_chars, over_bound_reason, parse_response

_BRACES = re.compile(r"\{\{(.*?)\}\}")
_VARIABLE = re.compile(r"(?P<root>[A-Za-z_]\w*)(?P<path>(?:\.[\w-]+|\[\d+\])*)")
_STEP = re.compile(r"\.([\w-]+)|\[(\d+)\]")
_NAMESPACES = ("item", "sample")
_SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")
_ABSENT = object()
_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so it encodes as UTF-8.

    A model output read from JSON can hold one (``"Par\\ud83d"`` decodes to a string no
    UTF-8 encoder accepts); code that hands text to a tokenizer or writes it as UTF-8 calls this.
    A Python string holds no valid surrogate pairs (they decode to one code point), so every
    surrogate in it is lone.

    >>> well_formed("Par\\ud83d"), well_formed("Paris \\U0001F600")
    ('Par�', 'Paris 😀')
    """
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


@dataclass(frozen=True, slots=True)
class MissingVariable:
    """A template variable that did not resolve: the record behind ``invalid_variable_error``."""

    variable: str
    """The variable as written, without braces (``item.answers[2].text``)."""
    message: str
    """Which step failed and why, for the grade's reason."""


class Sample:
    """The ``sample`` namespace of a template: what the model wrote.

    Built from a raw string (``output_text``; ``output_json`` when the text holds
    JSON, read by :func:`graders.structured.parse_response` -- a bare object, a fenced block
    or the last balanced object in prose, strict JSON only; an output text over the
    per-sample bound is cut to it, see :attr:`cut`) or from an
    OpenAI-style dict with ``output_text``, ``output_json``, ``output_tools`` and
    ``choices``. A dict without ``output_text`` takes it from
    ``choices[0].message.content``; without ``output_tools``, from
    ``choices[0].message.tool_calls``; without ``output_json``, it is parsed as
    for a string. ``output_json`` is parsed on first use only.

    >>> s = Sample.of('{"city": "Paris"}')
    >>> s.output_text, s.output_json
    ('{"city": "Paris"}', {'city': 'Paris'})
    >>> Sample.of("Paris").output_json is None
    True
    """

    __slots__ = ("raw", "output_text", "output_tools", "choices", "_output_json", "cut")

    def __init__(self, raw: str | Mapping[str, Any]) -> None:
        self.raw = raw
        """What the caller passed: graders that parse for themselves (``structured``) read this."""
        self._output_json: Any = _ABSENT
        self.output_tools: Any = None
        self.choices: Any = None
        self.cut: int | None = None
        """The length of an output text longer than :func:`~graders.structured.max_output_chars`, whose first
        that-many characters ``output_text`` then holds (graders flag ``truncated_output_error``); None otherwise."""
        if isinstance(raw, str):
            self.output_text: str | None = self._bounded(raw)
            return
        if not isinstance(raw, Mapping):
            raise UserError(f"a model sample is a string or a dict, got {type(raw).__name__}", code="bad_sample",
                            hint='pass the text, or {"output_text": ..., "output_json": ...}')
        message = _first_message(raw.get("choices"))
        text = raw.get("output_text")
        if text is None and isinstance(message.get("content"), str):
            text = message["content"]
        self.output_text = self._bounded(text) if isinstance(text, str) else None
        self.output_tools = raw.get("output_tools") if raw.get("output_tools") is not None else message.get("tool_calls")
        self.choices = raw.get("choices")
        if raw.get("output_json") is not None:
            self._output_json = raw["output_json"]

    def _bounded(self, text: str) -> str:
        """``text``, or its first :func:`~graders.structured.max_output_chars` characters (noted in :attr:`cut`)."""
        limit = max_output_chars()
        if len(text) <= limit:
            return text
        self.cut = len(text)
        return text[:limit]

    def cut_note(self) -> str:
        """The reason's note for a cut output (``""`` when it was not cut)."""
        return "" if self.cut is None else f"; {over_bound_reason(self.cut)} (its first {max_output_chars():,} read)"

    @classmethod
    def of(cls, sample: Sample | str | Mapping[str, Any]) -> Sample:
        """``sample`` itself when it is already a :class:`Sample`, else one built from it."""
        return sample if isinstance(sample, Sample) else cls(sample)

    @property
    def output_json(self) -> Any:
        """The decoded JSON of the output, or None when it holds none."""
        if self._output_json is _ABSENT:
            parsed = parse_response(self.raw)
            self._output_json = parsed.value if parsed.status == "ok" else None
        return self._output_json

    def field(self, name: str) -> Any:
        """One field of the namespace, or the module's absent marker when the sample lacks it."""
        if name not in _SAMPLE_FIELDS:
            return _ABSENT
        value = getattr(self, name)
        return _ABSENT if value is None else value

    def to_dict(self) -> dict[str, Any]:
        """The fields the sample has (what ``{{ sample }}`` renders)."""
        return {name: value for name in _SAMPLE_FIELDS if (value := self.field(name)) is not _ABSENT}

    def __repr__(self) -> str:
        return f"Sample({self.raw!r})"


def _first_message(choices: Any) -> Mapping[str, Any]:
    if isinstance(choices, (list, tuple)) and choices and isinstance(choices[0], Mapping):
        message = choices[0].get("message")
        if isinstance(message, Mapping):
            return message
    return {}


@dataclass(frozen=True, slots=True)
class _Variable:
    text: str
    root: str
    steps: tuple[str | int, ...]


def to_text(value: Any) -> str:
    """The rendering rule: strings as they are, anything else as compact JSON.

    >>> to_text("a b"), to_text({"x": [1, 2.5, None]}), to_text(True), to_text("é")
    ('a b', '{"x":[1,2.5,null]}', 'true', 'é')
    """
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Template:
    """A compiled template: literal text and variables.

    >>> t = Template("Capital of {{ item.country }}: {{sample.output_json.city}}")
    >>> t.variables
    ('item.country', 'sample.output_json.city')
    >>> t.render(Sample.of('{"city": "Paris"}'), {"country": "France"})
    'Capital of France: Paris'
    >>> t.render(Sample.of("Paris"), {"country": "France"})
    MissingVariable(variable='sample.output_json.city', message='sample.output_json: the output holds no JSON')
    >>> Template("{{ item.tags }}").render_value(Sample.of(""), {"tags": ["a", "b"]})
    ['a', 'b']
    """

    __slots__ = ("source", "_parts", "_single")

    def __init__(self, source: str, *, pointer: str = "") -> None:
        """Compile ``source``; a malformed variable raises :class:`GraderConfigError` at ``pointer``."""
        if not isinstance(source, str):
            raise GraderConfigError(f"a template is a string, got {type(source).__name__}", code="wrong_type", pointer=pointer)
        self.source = source
        parts: list[str | _Variable] = []
        at = 0
        for m in _BRACES.finditer(source):
            if m.start() > at:
                parts.append(source[at:m.start()])
            parts.append(_compile_variable(m.group(1), source, pointer))
            at = m.end()
        if at < len(source):
            parts.append(source[at:])
        self._parts = tuple(parts)
        self._single = self._parts[0] if len(self._parts) == 1 and isinstance(self._parts[0], _Variable) else None

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables in order of appearance, as written (without braces and spaces)."""
        return tuple(p.text for p in self._parts if isinstance(p, _Variable))

    @property
    def item_variables(self) -> tuple[tuple[str, tuple[str | int, ...]], ...]:
        """The ``item`` variables: each one's path as written (after ``item.``) and its steps (keys and indexes).

        >>> Template("{{ item.first-name }}, {{ item.a[0].b }} {{ sample.output_text }}").item_variables
        (('first-name', ('first-name',)), ('a[0].b', ('a', 0, 'b')))
        """
        return tuple((p.text[len("item."):], p.steps) for p in self._parts if isinstance(p, _Variable) and p.root == "item")

    def render(self, sample: Sample, item: Mapping[str, Any] | None) -> str | MissingVariable:
        """The text with every variable replaced, or the first variable that did not resolve."""
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _resolve(part, sample, item)
            if isinstance(value, MissingVariable):
                return value
            out.append(to_text(value))
        return "".join(out)

    def render_value(self, sample: Sample, item: Mapping[str, Any] | None) -> Any:
        """The raw value when the template is exactly one variable, else :meth:`render`'s text.

        Returns a :class:`MissingVariable` when a variable does not resolve.
        """
        if self._single is not None:
            return _resolve(self._single, sample, item)
        return self.render(sample, item)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    """``Template(source)``, shared: a template holds no state, so the config check and the grader compile it once."""
    return Template(source)


def _compile_variable(inner: str, source: str, pointer: str) -> _Variable:
    text = inner.strip()
    m = _VARIABLE.fullmatch(text)
    if m is None or m.group("root") not in _NAMESPACES:
        what = "names no namespace" if m is None else f"uses namespace {m.group('root')!r}"
        raise GraderConfigError(
            f"template {source!r}: {{{{{inner}}}}} {what}", code="bad_template", pointer=pointer,
            hint="variables read item.<path> or sample.<path>, with dotted keys and [i] indexes, e.g. {{ item.answer }}",
        )
    steps = tuple(int(s.group(2)) if s.group(2) is not None else s.group(1) for s in _STEP.finditer(m.group("path")))
    return _Variable(text, m.group("root"), steps)


def _resolve(var: _Variable, sample: Sample, item: Mapping[str, Any] | None) -> Any:
    """The value at ``var``'s path, or a :class:`MissingVariable` saying which step failed."""
    steps = var.steps
    if var.root == "item":
        if item is None:
            return MissingVariable(var.text, "no item was given")
        node: Any = item
    elif not steps:
        return sample.to_dict()
    else:
        first = steps[0]
        node = sample.field(first) if isinstance(first, str) else _ABSENT
        if node is _ABSENT:
            why = ("the output holds no JSON" if first == "output_json" else "the sample has no such field") \
                if first in _SAMPLE_FIELDS else f"not a sample field (known: {', '.join(_SAMPLE_FIELDS)})"
            return MissingVariable(var.text, f"sample.{first}: {why}" if isinstance(first, str) else f"sample[{first}]: {why}")
        steps = steps[1:]
    where = var.text[: len(var.root)] if var.root == "item" else f"sample.{var.steps[0]}"
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, (list, tuple)):
                return MissingVariable(var.text, f"{where} is {_kind(node)}, not a list, so [{step}] does not apply")
            if step >= len(node):
                return MissingVariable(var.text, f"{where} has {len(node)} item(s), so [{step}] is past the end")
            node = node[step]
            where += f"[{step}]"
        else:
            if not isinstance(node, Mapping):
                return MissingVariable(var.text, f"{where} is {_kind(node)}, not an object, so .{step} does not apply")
            if step not in node:
                return MissingVariable(var.text, f"{where} has no key {step!r}")
            node = node[step]
            where += f".{step}"
    return node


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


