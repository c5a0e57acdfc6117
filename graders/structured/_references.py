"""References: a reference answer decoded, checked against the schema and cached once per grader."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from schemas import Issue, Schema

from .._errors import GraderConfigError, pointer_token
from .._result import FieldDetail

_REFERENCES = 512
"""How many decoded JSON-text references :func:`_decoded_reference` keeps."""
_REFERENCE_CHARS = 64 * 1024
"""References longer than this are decoded every time (so the cache holds at most 512 x 64 KiB of text)."""


def _decoded_reference(text: str) -> Any:
    """A reference given as JSON text, decoded; the last few hundred short ones are kept, because RL
    grades a group's samples (8, say) against one reference, sent as the same text each time."""
    return _decode_reference(text) if len(text) > _REFERENCE_CHARS else _cached_reference(text)


def _decode_reference(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise GraderConfigError(f"reference is not valid JSON: {exc}", code="bad_reference", hint=_REFERENCE_HINT) from None


_cached_reference = lru_cache(maxsize=_REFERENCES)(_decode_reference)  # an error is raised, not kept

_REFERENCE_HINT = ("a reference is the expected answer: a JSON object (or array), its JSON text, or a pydantic model "
                   "instance; check the dataset's reference column (OpenRLHF: --label_key)")
_PLAIN = frozenset({str, int, float, bool, type(None)})
"""The types of JSON's scalar values as ``json.loads`` makes them."""


def _json_kind(value: Any) -> str:
    """How a message names a reference's kind."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "JSON object"
    if isinstance(value, list):
        return "JSON array"
    return type(value).__name__


def _plain_reference(reference: Any) -> Any:
    """A reference as plain JSON values, the way users naturally pass one; what cannot be one raises.

    Accepted: a JSON object or array; its JSON text; a pydantic model instance; and, inside
    any of them (as ``Model.model_dump()`` leaves them), dates, datetimes and times (as ISO
    8601 text), decimals (as floats), enums (their values), UUIDs (text), tuples and sets
    (lists), nested model instances. Refused with ``bad_reference``: None, an empty or
    non-JSON string, JSON text of a scalar, a scalar, any other object (its pointer given).
    A reference that needs no conversion is returned as is (it is checked, not copied).

    >>> import datetime
    >>> _plain_reference({"on": datetime.date(2024, 3, 15), "tags": ("a",)})
    {'on': '2024-03-15', 'tags': ['a']}
    """
    kind = type(reference)
    if kind is dict or kind is list:
        return reference if _is_plain(reference) else _converted(reference, "")
    if kind is str or isinstance(reference, str):
        text = str(reference)
        if not text.strip():
            raise GraderConfigError("the reference is an empty string: there is nothing to grade against",
                                    code="bad_reference", pointer="", hint=_REFERENCE_HINT)
        if text.lstrip()[:1] not in ("{", "["):
            try:
                json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise GraderConfigError(f"the reference is a string that is not JSON: {text[:60]!r}", code="bad_reference",
                                        pointer="", hint=_REFERENCE_HINT) from None
            raise GraderConfigError(f"the reference is the JSON text of a scalar ({text[:60]!r}), not of an object or array",
                                    code="bad_reference", pointer="", hint=_REFERENCE_HINT)
        return _decoded_reference(text)
    if reference is None:
        raise GraderConfigError("the reference is null: there is nothing to grade against (a missing label?)",
                                code="bad_reference", pointer="", hint=_REFERENCE_HINT)
    if isinstance(reference, BaseModel):
        return _plain_reference(reference.model_dump(mode="json"))
    if isinstance(reference, (Mapping, list, tuple)):
        return _converted(reference, "")
    raise GraderConfigError(f"the reference is a {_json_kind(reference)}, not a JSON object or array", code="bad_reference",
                            pointer="", hint=_REFERENCE_HINT)


def _is_plain(value: Any) -> bool:
    """True when ``value`` holds only what ``json.loads`` makes (iterative: any depth)."""
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is dict:
            for key, item in v.items():
                if type(key) is not str:
                    return False
                if type(item) in _PLAIN:
                    continue
                stack.append(item)
        elif kind is list:
            for item in v:
                if type(item) not in _PLAIN:
                    stack.append(item)
        elif kind not in _PLAIN:
            return False
    return True


def _converted(value: Any, pointer: str) -> Any:
    """``value`` with every leaf turned into a JSON value (see :func:`_plain_reference`); ``pointer`` is where it is."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Enum):
        return _converted(value.value, pointer)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, Enum):
                key = key.value
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise GraderConfigError(f"the reference has a key {key!r} at {pointer or '/'}, which is not a JSON key",
                                        code="bad_reference", pointer=pointer, hint="JSON object keys are strings")
            name = str(key)
            out[name] = _converted(item, f"{pointer}/{pointer_token(name)}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_converted(item, f"{pointer}/{i}") for i, item in enumerate(value)]
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date; ISO 8601 as pydantic writes it ("...Z" for UTC)
        return str(to_jsonable_python(value))
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _converted(dataclasses.asdict(value), pointer)
    raise GraderConfigError(f"the reference holds a {type(value).__name__} at {pointer or '/'}, which is not a JSON value",
                            code="bad_reference", pointer=pointer,
                            hint="references hold JSON values (and dates, decimals, enums, UUIDs, which are converted)")


def _note_issues(details: dict[str, FieldDetail], issues: tuple[Issue, ...]) -> None:
    """Note each schema violation in the detail of the deepest field its pointer reaches (the output
    was graded field by field anyway); violations of the whole object stay in ``Grade.issues`` only."""
    for issue in issues:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in issue.pointer.split("/")[1:]]
        fields: dict[str, FieldDetail] | None = details
        target: FieldDetail | None = None
        for token in tokens:
            if fields is None or token not in fields:
                break
            target = fields[token]
            fields = target.fields
        if target is not None:
            note = f"violates the schema at {issue.pointer}: {issue.message}"
            target.notes = [*(target.notes or ()), note]


def _valid(schema: Schema, value: Any) -> bool | None:
    """Whether ``value`` satisfies ``schema``; None when it is nested too deeply to tell here (the full stages report it)."""
    try:
        return schema.is_valid(value)
    except RecursionError:
        return None



