"""Defects found in review, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import pickle
from typing import Optional

import pytest
from pydantic import BaseModel

from graders import GraderConfigError, StructuredGrader, from_config
from graders.openai import Formula
from schemas import SchemaError, load_schema


class Tree(BaseModel):
    name: str
    left: Optional[Tree] = None  # noqa: UP045 -- pydantic needs the forward reference spelled this way
    right: Optional[Tree] = None  # noqa: UP045


def test_recursive_schema_with_two_self_references_builds_and_grades() -> None:
    grader = StructuredGrader(schema=Tree)  # used to expand 2^64 nodes
    ref = {"name": "a", "left": {"name": "b", "right": {"name": "c"}}}
    assert grader.grade(json.dumps(ref), ref).score == 1.0
    pred = {"name": "a", "left": {"name": "b", "right": {"name": "zzz"}}}
    assert 0.0 < grader.grade(json.dumps(pred), ref).score < 1.0
    deep: dict = {"name": "n"}
    node = deep
    for _ in range(400):  # deeper than the planner's limit: still graded, never a RecursionError
        node["left"] = {"name": "n"}
        node = node["left"]
    assert grader.grade(json.dumps(deep), deep).score == 1.0


def test_min_max_need_two_arguments() -> None:
    for source in ("min(a)", "max(a)"):
        with pytest.raises(GraderConfigError) as err:
            Formula(source)
        assert err.value.code == "formula_parse_error"


def test_unknown_formula_name_without_schema_is_a_flagged_zero() -> None:
    grade = StructuredGrader(aggregation="formula", formula="cty").grade('{"city": "x"}', {"city": "y"})
    assert grade.score == 0.0 and grade.errors["invalid_variable_error"]


@pytest.mark.parametrize(
    ("config", "pointer"),
    [
        ({"partial_credit": "no"}, "/partial_credit"),
        ({"lenient": "false"}, "/lenient"),
        ({"repair_penalty": "0.5"}, "/repair_penalty"),
        ({"fields": [1]}, "/fields"),
        ({"fields": {"a": {"weight": "2"}}}, "/fields/a/weight"),
        ({"schema": 5}, "/schema"),
    ],
)
def test_config_values_are_type_checked_with_pointers(config: dict, pointer: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        from_config({"type": "structured", **config})
    assert err.value.pointer == pointer


def test_schema_errors_point_into_the_config() -> None:
    with pytest.raises(SchemaError) as err:
        from_config({"type": "structured", "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}})
    assert err.value.pointer == "/schema/properties/a/type"


def test_response_format_without_schema_says_so() -> None:
    with pytest.raises(SchemaError) as err:
        load_schema({"type": "json_object"})
    assert err.value.code == "schema_missing" and "carries no schema" in err.value.message


def test_user_errors_survive_pickling_and_worker_processes() -> None:
    err = pickle.loads(pickle.dumps(GraderConfigError("x", code="c", pointer="/p", hint="h")))
    assert (type(err), err.code, err.pointer, err.hint) == (GraderConfigError, "c", "/p", "h")
    grader = StructuredGrader()
    with pytest.raises(GraderConfigError) as caught:
        grader.grade_batch(['{"a": 1}', '{"a": 2}'], [{"a": 1}, '{"bad'], workers=2)
    assert caught.value.code == "bad_reference"


def test_the_fast_validator_verdict_is_final() -> None:
    schema = load_schema({"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}})
    assert not schema.is_valid({"t": "not a date"})
    issues = schema.validate({"t": "not a date"})
    assert [(i.code, i.pointer) for i in issues] == [("format", "/t")]
    grade = StructuredGrader(schema=schema).grade('{"t": "not a date"}', {"t": "2024-01-01T00:00:00Z"})
    assert grade.score == 0.0 and grade.errors["schema_validation_error"]


class Person(BaseModel):
    name: str | None = None
    age: int


class Team(BaseModel):
    people: list[Person]


class Address(BaseModel):
    city: str | None = None


class Contact(BaseModel):
    addr: Address | None = None
    other: int


def test_required_inside_list_items_and_under_a_missing_parent() -> None:
    team = StructuredGrader(schema=Team, fields={"people.name": {"required": True}})
    grade = team.grade('{"people": [{"name": null, "age": 3}]}', {"people": [{"name": "A", "age": 3}]})
    assert grade.score == 0.0 and "people[0].name" in grade.reason
    contact = StructuredGrader(schema=Contact, fields={"addr.city": {"required": True}})
    grade = contact.grade('{"other": 1}', {"addr": {"city": "LA"}, "other": 1})
    assert grade.score == 0.0 and "addr.city" in grade.reason
    # the reference has no city: nothing required is missed, so no gate; and an object of nulls is no value (issue 12)
    ungated = contact.grade('{"other": 1}', {"addr": {"city": None}, "other": 1})
    assert ungated.score == 1.0 and "required" not in ungated.reason


def test_all_zero_weights_and_mode_on_a_non_list_are_rejected() -> None:
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Contact, fields={"addr": {"weight": 0}, "other": {"weight": 0}})
    assert err.value.pointer == "/fields"
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Contact, fields={"other": {"mode": "set"}})
    assert err.value.pointer == "/fields/other/mode"


def test_empty_list_items_are_not_items() -> None:
    grade = StructuredGrader().grade('{"a": [1, 2, 3]}', {"a": [1, "x", None]})
    detail = grade.details["a"]
    assert (detail.precision, detail.recall) == (1 / 3, 1 / 2)
    assert StructuredGrader().grade('{"a": [null, ""]}', {"a": []}).details["a"].status == "both_empty"
