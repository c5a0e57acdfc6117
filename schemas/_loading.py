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

Before either, a *quick check* runs when the schema only uses the keywords most
structured outputs need (``type``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``enum``/``const`` of strings, ``anyOf``,
local ``$ref``, and annotations such as ``title``). It compares exact Python
types (``type(v) is str``), so it is stricter than both validators: when it says
yes, the value is valid for both, and when it says no (or meets anything it does
not cover, such as a tuple or a ``float`` given for an integer), fastjsonschema
decides as before. It never turns a valid value into an invalid one, it only
answers the common case sooner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import referencing
import referencing.exceptions
from jsonschema.exceptions import SchemaError as _JsonSchemaError

from ._errors import Issue, SchemaError, json_pointer, shorten

# Keywords whose meaning fastjsonschema (drafts 4/6/7) does not implement.
_NEWER_KEYWORDS = frozenset(
    {"prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentSchemas",
     "dependentRequired", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "minContains", "maxContains"}
)

_Check = Callable[[Any], bool]
"""A quick check: True only when the value is certainly valid."""

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
                          "writeOnly", "$defs", "definitions", "$schema"})
"""Keywords that do not constrain a value (``$defs`` only holds schemas reached by ``$ref``)."""
_QUICK_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "const",
                             "anyOf", "$ref"})
_QUICK_DRAFTS = ("draft-04", "draft-06", "draft-07", "2019-09", "2020-12")
_EXACT_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),),
    "array": (list,), "object": (dict,),
}
"""The exact Python types the quick check accepts per JSON type (bool is not a number; no subclasses, no tuples)."""


class _Uncovered(Exception):
    """The schema uses something the quick check does not cover: no quick check for it."""


def _anything(value: Any) -> bool:
    return True


def _uncertain(value: Any) -> bool:
    return False


class _QuickBuilder:
    """Compiles a JSON Schema into a quick check (closures), or raises :class:`_Uncovered`.

    Each node becomes a function that answers True only if the value certainly
    satisfies that node. Nodes that only restrict the type (``{"type":
    "string"}``, an array of such, an ``anyOf`` of such) are kept as tuples of
    exact types and checked inline by the enclosing object or array.
    """

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, _Check] = {}

    def build(self) -> _Check:
        draft = self.root.get("$schema")
        if draft is not None and not (isinstance(draft, str) and any(d in draft for d in _QUICK_DRAFTS)):
            raise _Uncovered
        return self.node(self.root)

    def simple(self, node: Any) -> tuple[tuple[type, ...], tuple[type, ...] | None] | None:
        """(types, item types or None) when ``node`` only restricts the type, else None."""
        if not isinstance(node, dict):
            return None
        keys = node.keys() - _ANNOTATIONS
        if keys == {"anyOf"}:
            branches = node["anyOf"]
            if not isinstance(branches, list) or not branches:
                return None
            union: list[type] = []
            for branch in branches:
                found = self.simple(branch)
                if found is None or found[1] is not None:
                    return None
                union.extend(t for t in found[0] if t not in union)
            return tuple(union), None
        if "type" not in keys or not keys <= {"type", "items"}:
            return None
        types = self.types(node["type"])
        if "items" not in keys:
            return types, None
        item = self.simple(node["items"])
        if types != (list,) or item is None or item[1] is not None:
            return None
        return types, item[0]

    @staticmethod
    def types(kind: Any) -> tuple[type, ...]:
        names = [kind] if isinstance(kind, str) else kind
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in _EXACT_TYPES for n in names):
            raise _Uncovered
        found: list[type] = []
        for name in names:
            found.extend(t for t in _EXACT_TYPES[name] if t not in found)
        return tuple(found)

    def node(self, node: Any) -> _Check:
        if node is True:
            return _anything
        if node is False:
            return _uncertain
        if not isinstance(node, dict):
            raise _Uncovered
        keys = node.keys() - _ANNOTATIONS
        if not keys <= _QUICK_KEYWORDS:
            raise _Uncovered
        simple = self.simple(node)
        if simple is not None:
            return _typed(*simple)
        checks: list[_Check] = []
        if "$ref" in keys:  # checked together with its siblings: right under every draft's reading
            checks.append(self.ref(node["$ref"]))
        types = self.types(node["type"]) if "type" in keys else None
        is_object = bool(keys & {"properties", "required", "additionalProperties"})
        if types is not None and not (types == (dict,) and is_object) and not (types == (list,) and "items" in keys):
            checks.append(_typed(types, None))  # else the object or array check tests the type itself
        if "const" in keys or "enum" in keys:  # string labels only (JSON equality is not Python's: true != 1)
            if "const" in keys and "enum" in keys:
                raise _Uncovered
            labels = [node["const"]] if "const" in keys else node["enum"]
            if not isinstance(labels, list) or not all(type(v) is str for v in labels):
                raise _Uncovered
            allowed = frozenset(labels)
            checks.append(lambda value: type(value) is str and value in allowed)
        if "anyOf" in keys:
            branches = node["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise _Uncovered
            options = [self.node(b) for b in branches]
            checks.append(lambda value: any(check(value) for check in options))
        if is_object:
            checks.append(self.object(node, strict=types == (dict,)))
        if "items" in keys:
            checks.append(self.array(node["items"], strict=types == (list,)))
        if not checks:
            return _anything
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda value: first(value) and second(value)
        return lambda value: all(check(value) for check in checks)

    def object(self, node: Mapping[str, Any], strict: bool) -> _Check:
        """The object keywords; with ``strict``, a value that is not a dict fails (``type: object``)."""
        props = node.get("properties", {})
        required = node.get("required", [])
        extra = node.get("additionalProperties", True)
        if not isinstance(props, dict) or not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise _Uncovered
        fields: list[tuple[str, tuple[type, ...] | None, tuple[type, ...] | None, _Check]] = []
        for name, sub in props.items():
            simple = self.simple(sub)
            if simple is not None:
                fields.append((name, simple[0], simple[1], _anything))
            else:
                fields.append((name, None, None, self.node(sub)))
        names = frozenset(props)
        needed = frozenset(required)
        closed = extra is False
        other = None if extra is True or extra is False else self.node(extra)

        def check_object(value: Any) -> bool:
            if type(value) is not dict:
                return not strict and not isinstance(value, Mapping)  # the keywords apply to objects only
            if needed and not value.keys() >= needed:
                return False
            for name, types, items, sub in fields:
                if name in value:
                    v = value[name]
                    if types is not None:
                        if type(v) not in types:
                            return False
                        if items is not None and type(v) is list:
                            for item in v:
                                if type(item) not in items:
                                    return False
                    elif not sub(v):
                        return False
            if closed:
                return value.keys() <= names
            if other is not None:
                return all(other(v) for k, v in value.items() if k not in names)
            return True

        return check_object

    def array(self, items: Any, strict: bool) -> _Check:
        """The ``items`` keyword; with ``strict``, a value that is not a list fails (``type: array``)."""
        if not (isinstance(items, dict) or isinstance(items, bool)):
            raise _Uncovered  # a list of schemas (tuple validation) reads differently per draft
        each = self.node(items)

        def check_array(value: Any) -> bool:
            if type(value) is not list:
                return not strict and not isinstance(value, (list, tuple))  # the keyword applies to arrays only
            for item in value:
                if not each(item):
                    return False
            return True

        return check_array

    def ref(self, ref: Any) -> _Check:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise _Uncovered
        known = self.refs.get(ref)
        if known is not None:
            return known
        target: Any = self.root
        for token in ref[2:].split("/") if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise _Uncovered
        cell: list[_Check] = [_uncertain]
        self.refs[ref] = lambda value: cell[0](value)  # a recursive schema reaches itself through this
        cell[0] = self.node(target)
        self.refs[ref] = cell[0]
        return cell[0]


def _typed(types: tuple[type, ...], items: tuple[type, ...] | None) -> _Check:
    if items is None:
        if len(types) == 1:
            only = types[0]
            return lambda value: type(value) is only
        return lambda value: type(value) in types

    def check_typed_list(value: Any) -> bool:
        if type(value) not in types:
            return False
        if type(value) is list:
            for item in value:
                if type(item) not in items:
                    return False
        return True

    return check_typed_list


FieldTypes = dict[str, tuple[tuple[type, ...], "tuple[type, ...] | None"]]
"""Per field: the exact Python types a valid value may have, and for arrays their items' types (None: any)."""


def _field_types(json_schema: Mapping[str, Any]) -> tuple[FieldTypes, bool] | None:
    builder = _QuickBuilder(json_schema)
    try:
        builder.build()
    except (_Uncovered, RecursionError):
        return None
    keys = json_schema.keys() - _ANNOTATIONS
    props = json_schema.get("properties")
    required = json_schema.get("required", [])
    extra = json_schema.get("additionalProperties", True)
    if (not keys <= {"type", "properties", "required", "additionalProperties"} or json_schema.get("type", "object") != "object"
            or not isinstance(props, dict) or not props or not isinstance(required, list) or not set(required) <= props.keys()
            or not isinstance(extra, bool)):
        return None
    fields: FieldTypes = {}
    for name, sub in props.items():
        simple = builder.simple(sub)
        if simple is None:
            return None
        fields[name] = simple
    return fields, extra is False


def quick_check(json_schema: Mapping[str, Any]) -> _Check | None:
    """A quick check for ``json_schema`` (True only for values certainly valid), or None when it uses
    keywords the quick check does not cover."""
    try:
        return _QuickBuilder(json_schema).build()
    except (_Uncovered, RecursionError):
        return None


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

    __slots__ = ("json_schema", "name", "model", "_fast", "_full", "_quick")

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
        self._check_refs()
        self._fast: Callable[[Any], Any] | None = None
        if not _NEWER_KEYWORDS.intersection(_walk_keys(self.json_schema)):
            try:
                self._fast = fastjsonschema.compile(self.json_schema, use_formats=True, use_default=False)  # never fill in the data
            except Exception:
                self._fast = None
        self._quick = quick_check(self.json_schema) if self._fast is not None else None

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

    def field_types(self) -> tuple[FieldTypes, bool] | None:
        """The types of a schema that only declares the types of an object's fields, for callers that check them.

        Answers (per field, the exact Python types a valid value may have and,
        for arrays, their items' types; whether other keys are forbidden) when
        the root is an object constrained only by ``properties`` (each a plain
        type, an array of one, or an ``anyOf`` of such), ``required`` (of declared
        fields) and a boolean ``additionalProperties``; None for any other schema.
        A dict that holds every declared field, each of one of its types (and,
        when forbidden, no other key) is then valid: the quick check's rule, which
        the structured grader's generated fast path applies as it reads the fields.

        >>> Schema.load({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}).field_types()
        ({'tags': ((<class 'list'>,), (<class 'str'>,))}, False)
        """
        if self._quick is None:
            return None
        return _field_types(self.json_schema)

    def is_valid(self, obj: Any) -> bool:
        """True iff ``obj`` satisfies the schema (fast path)."""
        quick = self._quick
        if quick is not None:
            try:
                if quick(obj):
                    return True
            except RecursionError:  # nested too deeply for the quick check: the validators decide
                pass
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
        quick = self._quick
        if quick is not None:
            try:
                if quick(obj):
                    return []
            except RecursionError:  # nested too deeply for the quick check: the validators decide
                pass
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


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    """A registry's retrieval hook that fetches nothing: a ``$ref`` to ``file://`` or ``http://`` stays unresolved.

    Without a registry, jsonschema still opens such URIs (with a deprecation
    warning), so a schema could make rftkit read a local file or send a request;
    a schema that a reward server's client sends must do neither.
    """
    raise referencing.exceptions.NoSuchResource(uri)


_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]  # an attrs field the stubs miss


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
