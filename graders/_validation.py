"""Config models: one pydantic model per config is its validation, its JSON Schema and the docs of its fields.

Every grader type's config (and the structured grader's options) is a :class:`ConfigModel`.
:func:`validate_config` runs the model and turns the first problem pydantic reports into
a :class:`~graders._errors.GraderConfigError` with the JSON pointer of the bad part, a
stable code and a hint:

==========================  ==================================================================
pydantic error              code
==========================  ==================================================================
``extra_forbidden``         ``unknown_key`` (hint: the known keys)
``missing``                 ``missing_key``
``literal_error``, bounds   ``bad_value`` (hint: the allowed values)
a wrong type, an empty str  ``wrong_type``
a validator's own check     the code, pointer and hint of the ``GraderConfigError`` it raised
==========================  ==================================================================

A model may override the code of its fields' errors (:attr:`ConfigModel.error_codes`,
``"*"`` for every field), so codes stay what callers already match on; a field's type may
carry its own words for a value it rejects (:class:`Explained`); a model may say what an
unknown key means for it (:meth:`ConfigModel.unknown_key_error`). Unknown and missing keys
are reported first, as a reader fixes the shape of a config before its values.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from schemas import MisuseCode

from ._errors import GraderConfigError, pointer_token

M = TypeVar("M", bound=BaseModel)

_GENERIC_CODES: dict[str, MisuseCode] = {
    "extra_forbidden": "unknown_key",
    "missing": "missing_key",
    "literal_error": "bad_value",
    "enum": "bad_value",
    "greater_than": "bad_value",
    "greater_than_equal": "bad_value",
    "less_than": "bad_value",
    "less_than_equal": "bad_value",
    "string_pattern_mismatch": "bad_value",
}
"""pydantic's error types -> rftkit's codes; any other type (a wrong type, an empty string or list) is ``wrong_type``."""


@dataclass(frozen=True)
class Explained:
    """A field type's own words for a value it rejects, in its ``Annotated`` metadata.

    The error reads ``"<message>, got <input>"`` with ``hint``, whatever check pydantic
    failed (a wrong type, a bound, NaN): ``Annotated[bool, Explained("expected true or false",
    "use a JSON boolean")]``.
    """

    message: str
    hint: str = ""


class ConfigModel(BaseModel):
    """The base of every config model: strict types (``"no"`` is not a bool), no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)

    what: ClassVar[str] = "a config"
    """How messages name this object (``"unknown key 'x' in a string_check grader config"``)."""
    error_codes: ClassVar[Mapping[str, MisuseCode]] = {}
    """Field name (``"*"``: any field) -> the code of its value errors, where it is not the generic one."""
    error_hints: ClassVar[Mapping[str, str]] = {}
    """Field name (``"*"``: any field) -> the hint of its value errors."""

    @classmethod
    def unknown_key_error(cls, key: str, pointer: str) -> GraderConfigError:
        """The error of a key this model does not have, at ``pointer``: ``unknown_key``, with the known keys."""
        known = sorted(f.alias or n for n, f in cls.model_fields.items())
        return GraderConfigError(f"unknown key {key!r} in {cls.what}", code="unknown_key", pointer=pointer,
                                 hint=f"known keys: {known}" if known else "")


def validate_config(model: type[M], data: object, *, pointer: str = "") -> M:
    """``data`` validated by ``model``; the first problem raises :class:`GraderConfigError` with its pointer.

    ``pointer`` is where ``data`` sits in the enclosing config: error pointers start with it.

    >>> from typing import Literal
    >>> class Check(ConfigModel):
    ...     what = "a check config"
    ...     operation: Literal["eq", "ne"]
    >>> validate_config(Check, {"operation": "eq"}).operation
    'eq'
    >>> validate_config(Check, {"operation": "equals", "extra": 1})
    Traceback (most recent call last):
    ...
    graders._errors.GraderConfigError: unknown key 'extra' in a check config [unknown_key at /extra] (hint: known keys: ['operation'])
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(model, data, exc, pointer=pointer) from None


def config_error(model: type[BaseModel], data: object, exc: ValidationError, *, pointer: str = "") -> GraderConfigError:
    """The :class:`GraderConfigError` for the first problem of ``exc`` (raised by ``model`` on ``data``, which sits
    at ``pointer`` in the enclosing config)."""
    errors = exc.errors()
    err = min(enumerate(errors), key=lambda pair: (_rank(pair[1]), pair[0]))[1]
    tokens, fields, parent = _walk(model, data, err)
    pointer += "".join("/" + pointer_token(t) for t in tokens)
    found = err.get("ctx", {}).get("error")
    if isinstance(found, GraderConfigError):  # a validator's own check: its code and hint, its pointer under ours
        return GraderConfigError(found.message, code=found.code, pointer=pointer + found.pointer, hint=found.hint)
    kind = err["type"]
    key = tokens[-1] if tokens else ""
    if kind == "extra_forbidden":
        if parent is not None and issubclass(parent, ConfigModel):
            return parent.unknown_key_error(key, pointer)
        known = sorted(f.alias or n for n, f in parent.model_fields.items()) if parent is not None else []
        return GraderConfigError(f"unknown key {key!r} in {_what(parent)}", code="unknown_key", pointer=pointer,
                                 hint=f"known keys: {known}" if known else "")
    if kind == "missing":
        return GraderConfigError(f"{_what(parent)} needs {key!r}", code="missing_key", pointer=pointer)
    code = _GENERIC_CODES.get(kind, "wrong_type")
    hint = ""
    if kind == "literal_error":
        hint = f"one of {err.get('ctx', {}).get('expected', '')}"
    inner_first = fields[::-1]
    code = next((o.error_codes.get(n) or o.error_codes["*"] for o, n in inner_first
                 if n in o.error_codes or "*" in o.error_codes), code)
    owners = inner_first[:1] if kind == "literal_error" else inner_first  # the choices beat an enclosing field's hint
    hint = next((o.error_hints.get(n) or o.error_hints["*"] for o, n in owners
                 if n in o.error_hints or "*" in o.error_hints), hint)
    explained = _explained(fields[-1]) if fields and fields[-1][1] == key else None
    if explained is not None:
        return GraderConfigError(f"{explained.message}, got {_short(err.get('input'))}", code=code, pointer=pointer,
                                 hint=explained.hint or hint)
    where = "/".join(tokens) or "config"
    choices = _literal_choices(fields[-1]) if kind == "literal_error" and fields and fields[-1][1] == tokens[-1] else None
    if choices is not None:
        return GraderConfigError(f"{where} must be one of {choices}, got {_short(err.get('input'))}", code=code,
                                 pointer=pointer, hint=hint)
    return GraderConfigError(f"{where}: {err['msg']}, got {_short(err.get('input'))}", code=code, pointer=pointer, hint=hint)


def _explained(field: tuple[type[ConfigModel], str]) -> Explained | None:
    """The :class:`Explained` in a field's ``Annotated`` metadata (or, optional, its value's), else None."""
    owner, name = field
    info = owner.model_fields[name]
    annotation = info.annotation
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    metadata = [*info.metadata, *(m for member in members if get_origin(member) is Annotated for m in get_args(member)[1:])]
    return next((m for m in metadata if isinstance(m, Explained)), None)


def _literal_choices(field: tuple[type[ConfigModel], str]) -> list[Any] | None:
    """The values of the ``Literal`` a field is (or, optional, may be), else None."""
    owner, name = field
    annotation = _strip(owner.model_fields[name].annotation)
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    for member in map(_strip, members):
        if get_origin(member) is Literal:
            return list(get_args(member))
    return None


def _rank(err: ErrorDetails) -> int:
    """Unknown keys of the config itself first, then its missing keys, then everything else in pydantic's order."""
    if len(err["loc"]) == 1:
        return {"extra_forbidden": 0, "missing": 1}.get(err["type"], 2)
    return 2


_ABSENT = object()


def _walk(model: type[BaseModel], data: object,
          err: ErrorDetails) -> tuple[list[str], list[tuple[type[ConfigModel], str]], type[BaseModel] | None]:
    """The pointer tokens of ``err``'s place in ``data``, the (model, field) pairs on the way, and the model holding it.

    pydantic's ``loc`` also names the member of a union it tried (``"string"``, ``"function-after[...]"``); those steps
    are not in the data, and are left out of the pointer.
    """
    loc = err["loc"]
    node: Any = data
    annotation: Any = model
    parent: type[BaseModel] | None = model
    tokens: list[str] = []
    fields: list[tuple[type[ConfigModel], str]] = []
    for i, step in enumerate(loc):
        if isinstance(node, Mapping) and step in node:
            child = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            child = node[step]
        elif i == len(loc) - 1 and err["type"] == "missing":
            child = _ABSENT
        else:
            continue
        annotation = _member(annotation, node)
        parent = annotation if _is_model(annotation) else None
        annotation, field = _step(annotation, step)
        if field is not None:
            fields.append(field)
        tokens.append(str(step))
        node = child
    return tokens, fields, parent


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _member(annotation: Any, node: object) -> Any:
    """The member of a union annotation that ``node`` was validated as (a model for an object, its ``type`` first)."""
    annotation = _strip(annotation)
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    members = [_strip(a) for a in get_args(annotation)]
    if isinstance(node, Mapping):
        models = [m for m in members if _is_model(m)]
        for m in models:
            tag = m.model_fields.get("type")
            if tag is not None and node.get("type") in get_args(_strip(tag.annotation)):
                return m
        if models:
            return models[0]
    if isinstance(node, list):
        return next((m for m in members if get_origin(m) in (list, Sequence)), None)
    return next((m for m in members if not _is_model(m) and get_origin(m) is None), None)


def _step(annotation: Any, step: str | int) -> tuple[Any, tuple[type[ConfigModel], str] | None]:
    """The annotation one step inside ``annotation``, and the (model, field) pair when the step is a model's field."""
    if _is_model(annotation):
        for name, info in annotation.model_fields.items():
            if (info.alias or name) == step:
                owner = annotation if issubclass(annotation, ConfigModel) else None
                return info.annotation, ((owner, name) if owner is not None else None)
        return None, None
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1], None
    if origin in (list, Sequence) and args:
        return args[0], None
    return None, None


def _what(model: type[BaseModel] | None) -> str:
    return model.what if model is not None and issubclass(model, ConfigModel) else "the config"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

