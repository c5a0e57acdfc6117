"""The fast path's own type checks never call an invalid value valid.

The structured grader's fast path checks field types itself, in place of the
schema's validation, when ``Schema.field_types()`` allows it. That is only a
sufficient condition: when it says "valid", fastjsonschema and jsonschema must
agree. Checked here on generated schemas and values, with ``Schema.is_valid``
and ``Schema.validate`` giving fastjsonschema's verdict.
"""

from __future__ import annotations

import json
from typing import Any

import fastjsonschema
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas import Schema

TYPES = ["string", "integer", "number", "boolean", "null", "array", "object"]

leaf_schemas = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(TYPES)),
    st.builds(lambda ts: {"type": ts}, st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)),
    st.builds(lambda vs: {"enum": vs}, st.lists(st.sampled_from(["a", "b", "1", ""]), min_size=1, max_size=3, unique=True)),
    st.just({"const": "a"}),
    st.just({}),
    st.just({"title": "anything", "description": "at all"}),
    st.just({"type": "string", "minLength": 2}),  # not a type only: no field types
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    props = st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3)
    return st.one_of(
        st.builds(lambda items: {"type": "array", "items": items}, children),
        st.builds(lambda items: {"items": items}, children),
        st.builds(lambda p, req, extra: {"type": "object", "properties": p, "required": sorted(set(req) & set(p)),
                                         "additionalProperties": extra},
                  props, st.lists(st.sampled_from(["a", "b", "c"])), st.sampled_from([True, False])),
        st.builds(lambda p: {"properties": p, "required": sorted(p)[:1]}, props),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
        st.builds(lambda extra: {"type": "object", "additionalProperties": extra}, children),
    )


schemas_ = st.recursive(leaf_schemas, _extend, max_leaves=8)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False),
              st.sampled_from([0.5, -1.5, 2.0, 0, 1, True, "a", "b", "", "1", "xy"])),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), kids,
                                                                       max_size=4)),
    max_leaves=10,
)


def _verdicts(schema: dict[str, Any], value: Any) -> tuple[bool, bool]:
    """(fastjsonschema's verdict, jsonschema's verdict)."""
    return _validators(schema)(value)


def _validators(schema: dict[str, Any]) -> Any:
    fast = fastjsonschema.compile(schema, use_formats=True)
    full = jsonschema.Draft202012Validator(schema)

    def verdicts(value: Any) -> tuple[bool, bool]:
        try:
            fast(value)
            ok = True
        except fastjsonschema.JsonSchemaValueException:
            ok = False
        return ok, full.is_valid(value)

    return verdicts


@settings(max_examples=700, deadline=None)
@given(schemas_, st.lists(json_values, min_size=1, max_size=6))
def test_the_verdict_is_fastjsonschemas(schema: dict[str, Any], values: list[Any]) -> None:
    loaded = Schema.load(schema)
    verdicts = _validators(schema)
    for value in values:
        fast, full = verdicts(value)
        assert loaded.is_valid(value) == fast  # the final verdict is fastjsonschema's, as before
        assert (loaded.validate(value) == []) == fast


@settings(max_examples=500, deadline=None)
@given(schemas_, st.lists(json_values, min_size=1, max_size=6))
def test_field_types_are_sufficient(schema: dict[str, Any], values: list[Any]) -> None:
    found = Schema.load(schema).field_types()
    if found is None:
        return
    types, closed = found
    verdicts = _validators(schema)
    for value in values:
        if not isinstance(value, dict) or not set(types) <= set(value) or (closed and set(value) != set(types)):
            continue
        if all(type(value[name]) in kinds and (items is None or type(value[name]) is not list
                                               or all(type(x) in items for x in value[name]))
               for name, (kinds, items) in types.items()):
            assert verdicts(value) == (True, True), (schema, value)


class Address(BaseModel):
    street: str
    zip: str | None = None


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]
    address: Address
    friends: list[Person] = []


@pytest.mark.parametrize("value", [
    {"name": "a", "age": 3, "tags": ["x"], "address": {"street": "s"}},
    {"name": "a", "age": 3, "tags": [], "address": {"street": "s", "zip": None}, "friends": [
        {"name": "b", "age": 1, "tags": ["y"], "address": {"street": "t", "zip": "9"}}]},
    {"name": "a", "age": 3.0, "tags": [], "address": {"street": "s"}},  # 3.0: a float given for an integer
    {"name": "a", "age": True, "tags": [], "address": {"street": "s"}},
    {"name": "a", "age": 3, "tags": [1], "address": {"street": "s"}},
    {"name": "a", "age": 3, "tags": [], "address": {}},
])
def test_pydantic_schemas_get_fastjsonschemas_verdict(value: dict[str, Any]) -> None:
    schema = Schema.load(Person)  # $ref, $defs, anyOf with null, nested arrays
    fast, full = _verdicts(schema.json_schema, json.loads(json.dumps(value)))
    assert schema.is_valid(value) == fast


def test_schemas_beyond_field_types_have_none() -> None:
    assert Schema.load({"type": "object", "properties": {"a": {"type": "string", "format": "date"}}}).field_types() is None
    assert Schema.load({"type": "object", "properties": {"a": {"type": "string"}}, "patternProperties": {"^a": {}}}).field_types() is None
    assert Schema.load({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                        "properties": {"a": {"type": "string"}}}).field_types() is not None
    assert Schema.load({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}).field_types() is None


def test_deep_values_are_validated() -> None:
    schema = Schema.load({"$defs": {"t": {"type": "object", "properties": {"n": {"$ref": "#/$defs/t"}}}},
                          "$ref": "#/$defs/t"})
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(700):
        node["n"] = {}
        node = node["n"]
    assert schema.is_valid(deep) and schema.validate(deep) == []  # the validators decide
