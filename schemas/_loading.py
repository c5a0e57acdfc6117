"""Loading a schema from whatever the user has, and validating one object.

A :class:`Schema` wraps one JSON Schema, whatever it came from:

* a pydantic model class (its ``model_json_schema()``),
* a JSON Schema dict,
* a path to a ``.json`` file holding one,
* an OpenAI ``response_format`` block (``{"type": "json_schema", "json_schema":
  {"name": ..., "schema": {...}}}``) or just its inner ``json_schema`` part.

Validation answers with :class:`~schemas.Issue` records, never exceptions. Two
libraries share the work: ``fastjsonschema`` compiles the schema to Python and
gives the verdict (far faster than ``jsonschema`` on a small object); when the verdict is "invalid", ``jsonschema`` lists every issue
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
from typing import Any, cast, get_args

import fastjsonschema
import jsonschema
import jsonschema_specifications
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import SchemaError as _JsonSchemaError

from ._errors import Issue, SchemaError, SchemaIssueCode, json_pointer, shorten

# Keywords whose meaning fastjsonschema (drafts 4/6/7) does not implement.
_NEWER_KEYWORDS = frozenset(
    {"prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentSchemas",
     "dependentRequired", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "minContains", "maxContains"}
)

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
                          "writeOnly", "$defs", "definitions", "$schema"})
"""Keywords that do not constrain a value (``$defs`` only holds schemas reached by ``$ref``)."""
_DRAFTS = ("draft-04", "draft-06", "draft-07", "2019-09", "2020-12")
"""The drafts in which ``type``, ``properties``, ``required``, ``items`` and ``anyOf`` read as :meth:`Schema.field_types` reads them."""
_EXACT_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),),
    "array": (list,), "object": (dict,),
}
"""The exact Python types a value of each JSON type may have here (bool is not a number; no subclasses, no tuples)."""

FieldTypes = dict[str, tuple[tuple[type, ...], "tuple[type, ...] | None"]]
"""Per field: the exact Python types a valid value may have, and for arrays their items' types (None: any)."""


def _exact_types(kind: Any) -> tuple[type, ...] | None:
    names = [kind] if isinstance(kind, str) else kind
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in _EXACT_TYPES for n in names):
        return None
    found: list[type] = []
    for name in names:
        found.extend(t for t in _EXACT_TYPES[name] if t not in found)
    return tuple(found)


def _plain_type(node: Any, items_allowed: bool = True) -> tuple[tuple[type, ...], tuple[type, ...] | None] | None:
    """(types, item types or None) when ``node`` only restricts the type (``{"type": ...}``, an array of
    such, an ``anyOf`` of such), else None."""
    if not isinstance(node, dict):
        return None
    keys = node.keys() - _ANNOTATIONS
    if keys == {"anyOf"}:
        branches = node["anyOf"]
        if not isinstance(branches, list) or not branches:
            return None
        union: list[type] = []
        for branch in branches:
            found = _plain_type(branch, items_allowed=False)
            if found is None:
                return None
            union.extend(t for t in found[0] if t not in union)
        return tuple(union), None
    if "type" not in keys or not keys <= ({"type", "items"} if items_allowed else {"type"}):
        return None
    types = _exact_types(node["type"])
    if types is None or "items" not in keys:
        return None if types is None else (types, None)
    item = _plain_type(node["items"], items_allowed=False)
    if types != (list,) or item is None:
        return None
    return types, item[0]


def _field_types(json_schema: Mapping[str, Any]) -> tuple[FieldTypes, bool] | None:
    draft = json_schema.get("$schema")
    if draft is not None and not (isinstance(draft, str) and any(d in draft for d in _DRAFTS)):
        return None
    keys = json_schema.keys() - _ANNOTATIONS
    props = json_schema.get("properties")
    required = json_schema.get("required", [])
    extra = json_schema.get("additionalProperties", True)
    if (not keys <= {"type", "properties", "required", "additionalProperties"} or json_schema.get("type", "object") != "object"
            or not isinstance(props, dict) or not props or not isinstance(required, list)
            or not all(isinstance(r, str) for r in required) or not set(required) <= props.keys()
            or not isinstance(extra, bool)):
        return None
    fields: FieldTypes = {}
    for name, sub in props.items():
        found = _plain_type(sub)
        if found is None:
            return None
        fields[name] = found
    return fields, extra is False


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


_SCHEMA_ISSUE_CODES = frozenset(get_args(SchemaIssueCode))


def schema_issue_code(keyword: object) -> SchemaIssueCode:
    """The :class:`Issue` code of a violated JSON Schema keyword, as jsonschema or fastjsonschema names it.

    >>> schema_issue_code("minimum"), schema_issue_code(None), schema_issue_code("x-custom")
    ('minimum', 'false_schema', 'invalid')
    """
    if keyword is None:  # jsonschema's error for a ``false`` subschema names no keyword
        return "false_schema"
    name = str(keyword)
    return cast(SchemaIssueCode, name) if name in _SCHEMA_ISSUE_CODES else "invalid"


class Schema:
    """One loaded JSON Schema with a fast validator.

    >>> s = Schema.load({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    >>> s.validate({"n": 3})
    []
    >>> [(i.code, i.pointer) for i in s.validate({"n": "3"})]
    [('type', '/n')]
    """

    __slots__ = ("json_schema", "name", "model", "_fast", "_full", "_resolver")

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
        self._full = cls(self.json_schema, format_checker=cls.FORMAT_CHECKER, registry=_NO_RETRIEVAL)
        root = referencing.Resource.from_contents(self.json_schema, default_specification=referencing.jsonschema.DRAFT202012)
        self._resolver = _WITH_META_SCHEMAS.resolver_with_root(root)
        """Resolves this schema's ``$ref`` as its validator does (the same registries, which fetch nothing)."""
        self._check_refs()
        self._fast: Callable[[Any], Any] | None = None
        if not _NEWER_KEYWORDS.intersection(_walk_keys(self.json_schema)):
            try:
                self._fast = fastjsonschema.compile(self.json_schema, use_formats=True, use_default=False)  # never fill in the data
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
        resolver = self._resolver
        for pointer, ref in _iter_refs(self.json_schema, ()):
            try:
                resolver.lookup(ref)
            except Exception:
                raise SchemaError(f"unresolvable $ref {ref!r}", code="unresolvable_ref", pointer=json_pointer(pointer),
                                  hint="local references look like '#/$defs/Name'; remote ones are not fetched") from None

    # -- validation -------------------------------------------------------------------

    def field_types(self) -> tuple[FieldTypes, bool] | None:
        """The types of a schema that only declares the types of an object's fields, for callers that check them.

        Answers (per field, the exact Python types a valid value may have and,
        for arrays, their items' types; whether other keys are forbidden) when
        the root is an object constrained only by ``properties`` (each a plain
        type, an array of one, or an ``anyOf`` of such), ``required`` (of declared
        fields) and a boolean ``additionalProperties``; None for any other schema.
        A dict that holds every declared field, each of one of its types (and,
        when forbidden, no other key) is then valid for both validators, which the
        structured grader's generated fast path uses: its checks as it reads the
        fields are then the schema's validation.

        >>> Schema.load({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}).field_types()
        ({'tags': ((<class 'list'>,), (<class 'str'>,))}, False)
        """
        return _field_types(self.json_schema)

    def is_valid(self, obj: Any) -> bool:
        """True iff ``obj`` satisfies the schema (fastjsonschema's verdict where it applies)."""
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
            Issue(code=schema_issue_code(err.validator), pointer=json_pointer(list(err.absolute_path)),
                  message=err.message if len(err.message) <= 300 else err.message[:300] + "...",
                  input=shorten(err.instance))
            for err in self._full.iter_errors(obj)
        ]
        issues.sort(key=lambda i: i.pointer)
        if not issues and fast_error is not None:
            path = list(fast_error.path or [])[1:]  # fastjsonschema's path starts with "data"
            issues.append(Issue(code=schema_issue_code(fast_error.rule or "invalid"), pointer=json_pointer(path),
                                message=fast_error.message, input=shorten(fast_error.value)))
        return issues

    def resolve(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """Follow local ``$ref`` chains (``#/$defs/X``) from ``node`` to the schema it names."""
        seen = 0
        current: Mapping[str, Any] = node
        while "$ref" in current and seen < 64:
            current = self._resolver.lookup(current["$ref"]).contents
            seen += 1
        return dict(current)

    def __repr__(self) -> str:
        return f"Schema(name={self.name!r})"


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    """A registry's retrieval hook that fetches nothing: a ``$ref`` to ``file://`` or ``http://`` stays unresolved.

    Without a registry, jsonschema still opens such URIs (with a deprecation
    warning), so a schema could make rftkit read a local file or send a request;
    a schema that a reward server's client sends must do neither.
    """
    raise referencing.exceptions.NoSuchResource(uri)


_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]  # an attrs field the stubs miss
_WITH_META_SCHEMAS: referencing.Registry[Any] = jsonschema_specifications.REGISTRY.combine(_NO_RETRIEVAL)
"""The registry a validator resolves with: the JSON Schema meta-schemas, and nothing fetched."""


def _iter_refs(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
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
