"""The planner: a schema and its field options compiled once into a tree of nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas import Schema, json_pointer

from .._errors import GraderConfigError
from ._nodes import _Any, _element_spec, _Lazy, _leaf, _List, _list_threshold, _Node, _Object
from ._options import _MAX_DEPTH, _NUMBER_REL_TOL, ExtraFields, FieldSpec, ListMode, _did_you_mean

_EXACT_FORMATS = frozenset({"uri", "uri-reference", "iri", "iri-reference", "uri-template", "json-pointer",
                            "relative-json-pointer", "regex"})
"""String formats compared exactly: identifiers whose case matters (a URI's path)."""
_NORMALIZED_FORMATS = frozenset({"uuid", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6"})
"""String formats compared ``normalized`` (case and surrounding space aside): identifiers whose case does not matter.
A ``pattern`` makes a string an identifier too (an invoice number one digit off is wrong, not 92% right)."""


class _Planner:
    """Compiles a schema plus overrides into a tree of nodes, once, at construction."""

    def __init__(self, schema: Schema | None, extra_fields: ExtraFields) -> None:
        self.schema = schema
        self.extra_fields = extra_fields
        self._by_ref: dict[tuple[str, str], _Node] = {}  # one node per ($ref, overrides): recursion stays finite

    def node(self, sn: Mapping[str, Any] | None, spec: FieldSpec | None, name: str, path: tuple[str, ...], depth: int = 0) -> _Node:
        pointer = json_pointer(("fields",) + path)
        if sn is None or depth > _MAX_DEPTH:
            if spec is not None and spec.comparator and not spec.fields:
                return _leaf(name, spec, spec.comparator, {}, pointer)
            return _Any(spec, self.extra_fields, name)
        assert self.schema is not None
        ref = sn.get("$ref")
        if isinstance(ref, str):
            ref_key = (ref, spec.model_dump_json() if spec is not None else "")
            known = self._by_ref.get(ref_key)
            if known is not None:
                return known
            lazy = _Lazy(spec)
            self._by_ref[ref_key] = lazy
            built = self.node(self.schema.resolve(sn), spec, name, path, depth)
            lazy.target = built
            self._by_ref[ref_key] = built
            return built
        sn = self.schema.resolve(sn)
        for key in ("anyOf", "oneOf"):
            if key in sn:
                real = [b for b in sn[key] if isinstance(b, Mapping) and self.schema.resolve(b).get("type") != "null"]
                return self.node(real[0] if len(real) == 1 else None, spec, name, path, depth)
        if "allOf" in sn and len(sn["allOf"]) == 1:
            return self.node(sn["allOf"][0], spec, name, path, depth)
        kind = sn.get("type")
        if isinstance(kind, list):
            real_kinds = [k for k in kind if k != "null"]
            kind = real_kinds[0] if len(real_kinds) == 1 else None
        weight = spec.weight if spec else 1.0
        required = spec.required if spec else False
        if spec is not None and spec.mode is not None and kind != "array":
            raise GraderConfigError(f"'mode' applies to lists, but the schema makes {name!r} a {kind or 'non-list value'}",
                                    code="bad_field_option", pointer=pointer + "/mode", hint="remove 'mode' from this field")
        is_object = kind == "object" or "properties" in sn
        if spec is not None and spec.fields and not is_object and kind != "array":
            field = next(iter(spec.fields))
            raise GraderConfigError(
                f"field {'.'.join(path + (field,))!r} is not in the schema: {'.'.join(path)!r} is a {kind or 'value'}",
                code="unknown_field", pointer=json_pointer(("fields", *path, field)),
                hint=f"{'.'.join(path)!r} has no fields; override it as a whole (its comparator, weight ...)")
        if "enum" in sn or "const" in sn:
            return _leaf(name, spec, "enum", {}, pointer)
        if is_object:
            props: Mapping[str, Any] = sn.get("properties", {})
            sub = dict(spec.fields) if spec and spec.fields else {}
            unknown = [k for k in sub if k not in props]
            additional = sn.get("additionalProperties")
            if unknown and props and (additional is None or additional is False) and "patternProperties" not in sn:
                # Declared fields and no schema for others: a name the schema lacks is a typo that would never apply.
                dotted = ".".join(path + (unknown[0],))
                where = ".".join(path)
                raise GraderConfigError(
                    f"field {dotted!r} is not in the schema, so its override would never apply",
                    code="unknown_field", pointer=json_pointer(("fields", *path, unknown[0])),
                    hint=_did_you_mean(unknown[0], props, where + "." if where else "")
                    + f"{'the fields of ' + repr(where) if where else 'the top-level fields'}: {', '.join(props)}")
            fields = {k: self.node(v, sub.get(k), k, path + (k,), depth + 1) for k, v in props.items()}
            for k in unknown:  # overrides for fields only the data will show
                fields[k] = self.node(None, sub[k], k, path + (k,), depth + 1)
            return _Object(fields, self.extra_fields, sub, weight, required)
        if kind == "array":
            items = sn.get("items") if isinstance(sn.get("items"), Mapping) else None
            element = self.node(items, _element_spec(spec), name, path, depth + 1)
            if isinstance(element, _Any) and items is not None and not items:
                element = _Any(_element_spec(spec), self.extra_fields, name)
            mode: ListMode = spec.mode if spec and spec.mode else "set"
            return _List(element, mode, _list_threshold(spec, element), weight, required)
        if kind == "string":
            fmt = sn.get("format")
            if fmt == "date":
                return _leaf(name, spec, "date", {}, pointer)
            if fmt == "date-time":
                return _leaf(name, spec, "datetime", {}, pointer)
            if fmt in _EXACT_FORMATS:
                return _leaf(name, spec, "exact", {}, pointer)
            if fmt in _NORMALIZED_FORMATS or "pattern" in sn:  # an identifier: close is not right
                return _leaf(name, spec, "normalized", {}, pointer)
            return _leaf(name, spec, "fuzzy", {}, pointer)
        if kind == "integer":
            return _leaf(name, spec, "exact", {}, pointer)
        if kind == "number":
            return _leaf(name, spec, "number", {"rel_tol": _NUMBER_REL_TOL}, pointer)
        if kind == "boolean":
            return _leaf(name, spec, "bool", {}, pointer)
        return self.node(None, spec, name, path, depth)




