"""Loading a schema from whatever the user has, and validating one object.

A :class:`Schema` wraps one JSON Schema, whatever it came from:

* a pydantic model class (its ``model_json_schema()``),
* a JSON Schema dict,
* a path to a ``.json`` file holding one,
* an OpenAI ``response_format`` block (``{"type": "json_schema", "json_schema":
  {"name": ..., "schema": {...}}}``) or just its inner ``json_schema`` part.

Validation answers with :class:`~schemas.Issue` records, never exceptions. Two
libraries share the work: ``fastjsonschema`` compiles the schema to Python and
gives the verdict (about 1 us for a small object, against about 45 us for
``jsonschema``); when the verdict is "invalid", ``jsonschema`` lists every issue
with its JSON pointer. The two can differ at the edges (``jsonschema`` checks
``format: date-time`` only with an optional extra package, and its ``pattern``
lets ``"abc\n"`` match ``^abc$``); the fast verdict is final, and when
``jsonschema`` finds nothing to report, the fast validator's own message is the
issue. Schemas that use keywords fastjsonschema does not implement (draft
2019-09/2020-12 additions such as ``prefixItems`` or ``unevaluatedProperties``)
are validated by ``jsonschema`` alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema.exceptions import SchemaError as _JsonSchemaError

from ._errors import Issue, SchemaError, json_pointer, shorten

# Keywords whose meaning fastjsonschema (drafts 4/6/7) does not implement.
_NEWER_KEYWORDS = frozenset(
    {"prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentSchemas",
     "dependentRequired", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "minContains", "maxContains"}
)

SchemaSource = Any
"""A pydantic model class, a JSON Schema dict, an OpenAI ``response_format`` dict, a path, or a :class:`Schema`."""


def _walk_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _walk_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_keys(value)


def _unwrap_response_format(obj: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Return (schema, name) for an OpenAI response_format block, else (obj, None)."""
    if obj.get("type") in ("json_object", "text") and len(obj) == 1:
        raise SchemaError(
            f"a response_format of type {obj['type']!r} carries no schema to grade against",
            code="schema_missing", pointer="/type",
            hint='use {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}} or a JSON Schema',
        )
    if obj.get("type") == "json_schema" and isinstance(obj.get("json_schema"), Mapping):
        inner = obj["json_schema"]
        if not isinstance(inner.get("schema"), Mapping):
            raise SchemaError(
                "response_format block has no 'schema' object",
                code="schema_missing", pointer="/json_schema/schema",
                hint='write {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
            )
        return dict(inner["schema"]), inner.get("name")
    if isinstance(obj.get("schema"), Mapping) and "name" in obj and "properties" not in obj:
        return dict(obj["schema"]), obj.get("name")
    return dict(obj), None


class Schema:
    """One loaded JSON Schema with a fast validator.

    >>> s = Schema.load({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    >>> s.validate({"n": 3})
    []
    >>> [(i.code, i.pointer) for i in s.validate({"n": "3"})]
    [('type', '/n')]
    """

    __slots__ = ("json_schema", "name", "model", "_fast", "_full")

    def __init__(self, json_schema: Mapping[str, Any], *, name: str | None = None, model: type | None = None) -> None:
        self.json_schema: dict[str, Any] = dict(json_schema)
        """The JSON Schema itself (draft 2020-12 unless it says otherwise)."""
        self.name = name
        """A name for messages: the model's class name or the response_format name."""
        self.model = model
        """The pydantic model class when the schema came from one, else None."""
        cls = jsonschema.validators.validator_for(self.json_schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(self.json_schema)
        except _JsonSchemaError as exc:
            raise SchemaError(
                f"not a valid JSON Schema: {exc.message}",
                code="invalid_schema", pointer=json_pointer(list(exc.absolute_path)),
                hint="check the keyword against the JSON Schema specification (draft 2020-12)",
            ) from None
        self._full = cls(self.json_schema, format_checker=cls.FORMAT_CHECKER)
        self._check_refs()
        self._fast: Callable[[Any], Any] | None = None
        if not _NEWER_KEYWORDS.intersection(_walk_keys(self.json_schema)):
            try:
                self._fast = fastjsonschema.compile(self.json_schema, use_formats=True)
            except Exception:
                self._fast = None

    # -- construction -----------------------------------------------------------------

    @classmethod
    def load(cls, source: SchemaSource) -> Schema:
        """Load a schema from a pydantic model, dict, response_format block or file path."""
        if isinstance(source, Schema):
            return source
        if isinstance(source, type) and hasattr(source, "model_json_schema"):
            return cls(source.model_json_schema(), name=source.__name__, model=source)
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise SchemaError(f"schema file not found: {path}", code="schema_not_found",
                                  hint="pass a path to a .json file, a dict or a pydantic model")
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SchemaError(f"schema file {path} is not valid JSON: {exc}", code="schema_not_json") from None
            if not isinstance(data, dict):
                raise SchemaError(f"schema file {path} must hold a JSON object", code="schema_not_object")
            schema, name = _unwrap_response_format(data)
            return cls(schema, name=name or path.stem)
        if isinstance(source, Mapping):
            schema, name = _unwrap_response_format(source)
            return cls(schema, name=name)
        raise SchemaError(
            f"cannot load a schema from {type(source).__name__}",
            code="schema_source", hint="pass a pydantic model class, a JSON Schema dict, a response_format dict or a path",
        )

    def _check_refs(self) -> None:
        resolver = self._full._resolver  # the referencing.Resolver of this validator
        for pointer, ref in _iter_refs(self.json_schema, ()):
            try:
                resolver.lookup(ref)
            except Exception:
                raise SchemaError(f"unresolvable $ref {ref!r}", code="unresolvable_ref", pointer=json_pointer(pointer),
                                  hint="local references look like '#/$defs/Name'; remote ones are not fetched") from None

    # -- validation -------------------------------------------------------------------

    def is_valid(self, obj: Any) -> bool:
        """True iff ``obj`` satisfies the schema (fast path)."""
        if self._fast is not None:
            try:
                self._fast(obj)
                return True
            except fastjsonschema.JsonSchemaValueException:
                return False
        return bool(self._full.is_valid(obj))

    def validate(self, obj: Any) -> list[Issue]:
        """Every way ``obj`` violates the schema, as records; ``[]`` when valid."""
        fast_error: fastjsonschema.JsonSchemaValueException | None = None
        if self._fast is not None:
            try:
                self._fast(obj)
                return []
            except fastjsonschema.JsonSchemaValueException as exc:
                fast_error = exc
        issues = [
            Issue(code=str(err.validator), pointer=json_pointer(list(err.absolute_path)),
                  message=err.message if len(err.message) <= 300 else err.message[:300] + "...",
                  input=shorten(err.instance))
            for err in self._full.iter_errors(obj)
        ]
        issues.sort(key=lambda i: i.pointer)
        if not issues and fast_error is not None:
            path = list(fast_error.path or [])[1:]  # fastjsonschema's path starts with "data"
            issues.append(Issue(code=str(fast_error.rule or "invalid"), pointer=json_pointer(path),
                                message=fast_error.message, input=shorten(fast_error.value)))
        return issues

    def resolve(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """Follow local ``$ref`` chains (``#/$defs/X``) from ``node`` to the schema it names."""
        seen = 0
        current: Mapping[str, Any] = node
        while "$ref" in current and seen < 64:
            current = self._full._resolver.lookup(current["$ref"]).contents
            seen += 1
        return dict(current)

    def __repr__(self) -> str:
        return f"Schema(name={self.name!r})"


def _iter_refs(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path + (key,), value
            else:
                yield from _iter_refs(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _iter_refs(value, path + (i,))


def load_schema(source: SchemaSource) -> Schema:
    """Load a :class:`Schema` from a pydantic model, a dict, a response_format block or a file.

    >>> load_schema({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}).name
    'r'
    """
    return Schema.load(source)


def validate(obj: Any, schema: SchemaSource) -> list[Issue]:
    """Validate one object; the problems come back as :class:`Issue` records.

    >>> validate([1], {"type": "object"})[0].code
    'type'
    """
    return Schema.load(schema).validate(obj)
