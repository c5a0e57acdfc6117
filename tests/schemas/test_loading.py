"""Loading schemas from every source, and validation as records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from schemas import Issue, Schema, SchemaError, load_schema, validate


class Profile(BaseModel):
    city: str
    tags: list[str]


SCHEMA = Profile.model_json_schema()


@pytest.mark.parametrize(
    "source",
    [
        Profile,
        SCHEMA,
        {"type": "json_schema", "json_schema": {"name": "profile", "schema": SCHEMA, "strict": True}},
        {"name": "profile", "schema": SCHEMA},
    ],
    ids=["pydantic", "dict", "response_format", "json_schema_block"],
)
def test_every_source_gives_the_same_validation(source: object) -> None:
    schema = load_schema(source)
    assert schema.validate({"city": "LA", "tags": []}) == []
    assert [(i.code, i.pointer) for i in schema.validate({"city": 3, "tags": ["a", 4]})] == [
        ("type", "/city"), ("type", "/tags/1")]


def test_names_come_from_the_source() -> None:
    assert load_schema(Profile).name == "Profile" and load_schema(Profile).model is Profile
    assert load_schema({"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}).name == "p"


def test_file_source_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(SCHEMA))
    assert load_schema(path).name == "profile"
    assert load_schema(str(path)).validate({"city": "x", "tags": []}) == []
    with pytest.raises(SchemaError) as err:
        load_schema(tmp_path / "missing.json")
    assert err.value.code == "schema_not_found"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SchemaError) as err:
        load_schema(bad)
    assert err.value.code == "schema_not_json"


def test_invalid_schema_and_unresolvable_ref_raise_with_pointers() -> None:
    with pytest.raises(SchemaError) as err:
        load_schema({"type": "object", "properties": {"a": {"type": 5}}})
    assert err.value.code == "invalid_schema" and err.value.pointer == "/properties/a/type"
    with pytest.raises(SchemaError) as err:
        load_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}})
    assert err.value.code == "unresolvable_ref" and err.value.pointer == "/properties/a/$ref"
    with pytest.raises(SchemaError):
        load_schema(42)


def test_resolve_follows_local_refs() -> None:
    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        inner: Inner

    schema = load_schema(Outer)
    resolved = schema.resolve(schema.json_schema["properties"]["inner"])
    assert resolved["properties"] == {"x": {"title": "X", "type": "integer"}}


def test_newer_keywords_use_jsonschema_alone() -> None:
    schema = Schema({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]})
    assert schema.is_valid([1, "a"]) and not schema.is_valid(["a", 1])
    assert [i.pointer for i in schema.validate(["a", 1])] == ["/0", "/1"]


def test_issues_shorten_large_inputs_and_never_raise() -> None:
    issues = validate({"city": "x" * 10_000, "tags": 1}, {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 5}, "tags": {"type": "array"}}})
    assert all(isinstance(i, Issue) for i in issues)
    big = next(i for i in issues if i.pointer == "/city")
    assert isinstance(big.input, str) and len(big.input) < 300


@pytest.mark.filterwarnings("default::DeprecationWarning")  # as outside the test run: jsonschema only warns, then fetches
@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_a_ref_to_a_file_or_url_is_never_fetched(tmp_path: Path, keyword: str) -> None:
    """jsonschema opens file:// and http:// references when no registry says otherwise: a schema must not read files."""
    target = tmp_path / "string.json"
    target.write_text('{"type": "string"}')
    messages = set()
    for uri in (target.as_uri(), (tmp_path / "missing.json").as_uri(), "http://127.0.0.1:9/schema.json"):
        with pytest.raises(SchemaError) as info:
            load_schema({"type": "object", "properties": {"a": {keyword: uri}}})
        assert (info.value.code, info.value.pointer) == ("unresolvable_ref", f"/properties/a/{keyword}")
        messages.add(str(info.value).replace(uri, "<uri>"))
    assert len(messages) == 1  # the same answer whether the file exists or not


def test_validation_never_fills_in_defaults() -> None:
    # fastjsonschema writes a property's "default" into the data it checks unless told not to; a oneOf tries
    # every branch, so a branch that did not match could leave its defaults in the user's config
    schema = load_schema({"oneOf": [
        {"type": "object", "properties": {"a": {"default": 1}, "t": {"const": "x"}}, "required": ["t"]},
        {"type": "object", "properties": {"t": {"const": "y"}}}]})
    value = {"t": "y"}
    assert schema.validate(value) == [] and value == {"t": "y"}
