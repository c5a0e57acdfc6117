"""The structured grader's policies that issue 12 found broken, one reproduction each.

Empty objects of nulls, misuse that must raise at construction, per-field credit on
schema violations, money and identifiers, date-times as instants, very deep JSON,
a JSON array where an object belongs, and the fuzzy comparators' character cap.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel, Field

from graders import GraderConfigError, StructuredGrader, comparators, from_config
from graders.comparators import fuzzy, make_comparator, number, parse_number


class Currency(str, Enum):
    EUR = "EUR"
    USD = "USD"


class Address(BaseModel):
    street: str | None = None
    city: str | None = None


class Vendor(BaseModel):
    name: str
    address: Address | None = None


class LineItem(BaseModel):
    description: str
    quantity: int
    unit_price: float


class Invoice(BaseModel):
    invoice_number: str = Field(pattern=r"^INV-\d{4}-\d{4}$")
    issue_date: dt.date
    currency: Currency
    total: float
    vendor: Vendor
    line_items: list[LineItem]
    quantity: int = 1


INVOICE_REF: dict[str, Any] = {
    "invoice_number": "INV-2024-0042", "issue_date": "2024-03-15", "currency": "EUR", "total": 187.5,
    "vendor": {"name": "ACME GmbH", "address": {"street": "Hauptstr. 1", "city": "Berlin"}},
    "line_items": [{"description": "Widget", "quantity": 10, "unit_price": 18.75}], "quantity": 10,
}


def invoice(**changes: Any) -> str:
    return json.dumps({**INVOICE_REF, **changes})


# --------------------------------------------------------------------------- 1. objects of nulls are empty


@pytest.mark.parametrize("output", ['{"id": "x"}', '{"id": "x", "o": null}', '{"id": "x", "o": {}}',
                                    '{"id": "x", "o": {"b": null}}', '{"id": "x", "o": {"b": {"c": []}}}'])
def test_an_object_of_nulls_is_no_value_against_one(output: str) -> None:
    grade = StructuredGrader().grade(output, {"id": "x", "o": {"b": None}})
    assert grade.score == 1.0, grade.reason


@pytest.mark.parametrize("extra", ['{"d": null}', '{"d": {"e": [null, ""]}}', "null", "{}", "[]"])
def test_a_predicted_object_of_nulls_is_not_an_extra_field(extra: str) -> None:
    grade = StructuredGrader().grade('{"id": "x", "c": ' + extra + "}", {"id": "x"})
    assert grade.score == 1.0, grade.reason


class WithAddress(BaseModel):
    id: str
    address: Address | None = None


@pytest.mark.parametrize(("output", "reference"), [
    ('{"id": "x"}', {"id": "x", "address": {"street": None, "city": None}}),
    ('{"id": "x", "address": null}', {"id": "x", "address": {"street": None}}),
    ('{"id": "x", "address": {"street": null, "city": null}}', {"id": "x"}),
    ('{"id": "x", "address": {"street": null, "city": null}}', {"id": "x", "address": None}),
])
def test_an_optional_pydantic_object_of_nulls_is_no_value(output: str, reference: dict[str, Any]) -> None:
    for aggregation in ("weighted_mean", "micro_f1"):
        grade = StructuredGrader(schema=WithAddress, aggregation=aggregation).grade(output, reference)
        assert grade.score == 1.0, (aggregation, grade.reason)


def test_a_list_of_empty_items_is_no_value_even_when_ordered() -> None:
    grader = StructuredGrader(fields={"xs": {"mode": "ordered"}})
    assert grader.grade('{"xs": [null, ""]}', {"xs": []}).details["xs"].status == "both_empty"
    assert grader.grade('{"xs": [{"a": null}]}', {"xs": None}).score == 1.0


# --------------------------------------------------------------------------- 2. misuse raises at construction


@pytest.mark.parametrize(("fields", "pointer", "suggestion"), [
    ({"totl": {"comparator": "number"}}, "/fields/totl", "'total'"),
    ({"vendor.nme": {"comparator": "exact"}}, "/fields/vendor/nme", "'vendor.name'"),
    ({"line_items.descripton": {"comparator": "exact"}}, "/fields/line_items/descripton", "'line_items.description'"),
    ({"vendor": {"fields": {"adress": {"weight": 2}}}}, "/fields/vendor/adress", "'vendor.address'"),
    ({"total.cents": {"weight": 2}}, "/fields/total/cents", "no fields"),
])
def test_a_field_name_the_schema_does_not_have_raises_with_the_closest(fields: dict[str, Any], pointer: str,
                                                                        suggestion: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Invoice, fields=fields)
    assert err.value.code == "unknown_field" and err.value.pointer == pointer
    assert suggestion in err.value.hint, err.value


def test_overrides_for_undeclared_keys_stay_allowed_where_the_schema_allows_any_key() -> None:
    free = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True}
    assert StructuredGrader(schema=free, fields={"b": {"comparator": "exact"}}).grade('{"a": "x", "b": "y"}',
                                                                                      {"a": "x", "b": "y"}).score == 1.0
    assert StructuredGrader(schema={"type": "object"}, fields={"b": {"comparator": "exact"}}) is not None


@pytest.mark.parametrize(("field", "code", "pointer", "suggestion"), [
    ({"comparator": "numbr"}, "unknown_comparator", "/fields/total/comparator", "'number'"),
    ({"comparator": "number", "abs_toll": 1}, "bad_comparator_option", "/fields/total/abs_toll", "'abs_tol'"),
    ({"abs_toll": 1}, "bad_comparator_option", "/fields/total/abs_toll", "'abs_tol'"),
    ({"wieght": 2}, "bad_comparator_option", "/fields/total/wieght", "'weight'"),
    ({"fields": {"x": {"comparator": "fuzy"}}}, "unknown_comparator", "/fields/total/x/comparator", "'fuzzy'"),
    ({"abs_tol": 1, "scorer": "ratio"}, "bad_comparator_option", "/fields/total", "no one comparator"),
])
def test_a_schema_free_config_checks_its_comparators_at_construction(field: dict[str, Any], code: str, pointer: str,
                                                                    suggestion: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        from_config({"type": "structured", "fields": {"total": field}})
    assert err.value.code == code and err.value.pointer == pointer, err.value
    assert suggestion in err.value.hint + err.value.message, err.value


def test_schema_free_options_name_their_comparator() -> None:
    grader = from_config({"type": "structured", "fields": {"total": {"abs_tol": 0.5}, "when": {"order": "day_first"}}})
    grade = grader.grade('{"total": "187.20", "when": "15/03/2024"}', {"total": 187.5, "when": "2024-03-15"})
    assert grade.sub_scores == {"total": 1.0, "when": 1.0}
    assert (grade.details["total"].comparator, grade.details["when"].comparator) == ("number", "date")


def test_an_option_of_another_comparator_names_it_in_the_hint() -> None:
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Invoice, fields={"vendor.name": {"abs_tol": 1}})
    assert err.value.pointer == "/fields/vendor/name/abs_tol" and "'number'" in err.value.hint


# --------------------------------------------------------------------------- 4. a format slip costs its field


@pytest.mark.parametrize(("change", "field"), [
    ({"issue_date": "15 March 2024"}, "issue_date"),
    ({"quantity": "10"}, "quantity"),
    ({"currency": "eur"}, "currency"),
    ({"total": "187.50 EUR"}, "total"),
])
def test_a_schema_violation_costs_its_field_not_the_answer(change: dict[str, Any], field: str) -> None:
    grade = StructuredGrader(schema=Invoice).grade(invoice(**change), INVOICE_REF)
    others = [v for k, v in grade.sub_scores.items() if k != field]
    assert others and all(v == 1.0 for v in others), grade.sub_scores
    assert grade.score > 0.8
    assert grade.errors["schema_validation_error"] and grade.issues
    assert grade.details[field].notes and "schema" in grade.details[field].notes[0]


def test_the_fields_comparator_options_get_their_say_on_a_violation() -> None:
    grader = StructuredGrader(schema=Invoice, fields={"issue_date": {"order": "day_first"},
                                                      "currency": {"case_sensitive": False},
                                                      "quantity": {"comparator": "number"}})
    grade = grader.grade(invoice(issue_date="15 March 2024", currency="eur", quantity="10", total="187.50 EUR"), INVOICE_REF)
    assert grade.score == 1.0 and grade.errors["schema_validation_error"] and len(grade.issues) == 4


def test_schema_penalty_and_the_gate_remain() -> None:
    slipped = invoice(quantity="10")
    per_field = StructuredGrader(schema=Invoice).grade(slipped, INVOICE_REF).score
    penalised = StructuredGrader(schema=Invoice, schema_penalty=0.5).grade(slipped, INVOICE_REF).score
    assert penalised == pytest.approx(per_field * 0.5)
    gated = StructuredGrader(schema=Invoice, on_schema_violation="gate").grade(slipped, INVOICE_REF)
    assert gated.score == 0.0 and gated.errors["schema_validation_error"]
    assert StructuredGrader(schema=Invoice, partial_credit=False).grade(slipped, INVOICE_REF).score == 0.0
    assert StructuredGrader(schema=Invoice, on_schema_violation="gate").grade(invoice(), INVOICE_REF).score == 1.0
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Invoice, on_schema_violation="per_field", partial_credit=False)
    assert err.value.pointer == "/partial_credit"


def test_the_new_options_round_trip_through_config() -> None:
    grader = StructuredGrader(schema=Invoice, schema_penalty=0.25, on_schema_violation="gate")
    again = from_config(grader.config())
    assert (again.schema_penalty, again.on_schema_violation) == (0.25, "gate")


# --------------------------------------------------------------------------- 5. money, identifiers, instants


@pytest.mark.parametrize(("text", "value"), [
    ("187.50 EUR", 187.5), ("USD 187.50", 187.5), ("EUR1,234.50", 1234.5), ("-12 GBP", -12.0),
])
def test_number_reads_currency_codes(text: str, value: float) -> None:
    assert parse_number(text) == value
    assert number(text, value) == 1.0


@pytest.mark.parametrize("text", ["187.50 EURO", "187.50 eur", "EUR $5", "10 XYZ1", "USD"])
def test_number_refuses_what_is_not_a_currency_code(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(("text", "value"), [
    ("187,50", 187.5), ("1.234,50", 1234.5), ("1 234,50 €", 1234.5), ("EUR 1.234.567,8", 1234567.8), ("12", 12.0),
    ("(1.000,00)", -1000.0),
])
def test_a_declared_decimal_comma(text: str, value: float) -> None:
    assert parse_number(text, decimal=",") == value
    assert number(text, value, decimal=",") == 1.0


def test_the_decimal_comma_is_declared_never_guessed() -> None:
    assert parse_number("187,50") is None and parse_number("1,234") == 1234.0
    assert parse_number("1.234", decimal=",") == 1234.0 and parse_number("1.5", decimal=",") is None
    with pytest.raises(GraderConfigError):
        make_comparator("number", decimal=";")


class Ids(BaseModel):
    invoice_number: str = Field(pattern=r"^INV-\d{4}-\d{4}$")
    id: uuid.UUID
    email: str = Field(json_schema_extra={"format": "email"})
    site: str = Field(json_schema_extra={"format": "uri"})
    note: str


def test_identifier_strings_are_compared_exactly_not_fuzzily() -> None:
    ref = {"invoice_number": "INV-2024-0042", "id": "0b6f3c1e-8a3d-4c1e-9f0a-3b2c1d4e5f60", "email": "Ann@Example.com",
           "site": "https://example.com/A", "note": "paid in full"}
    grader = StructuredGrader(schema=Ids)
    near = dict(ref, invoice_number="INV-2024-0043", id=ref["id"][:-1] + "1", site="https://example.com/a",
                note="paid in ful")
    grade = grader.grade(json.dumps(near), ref)
    assert grade.sub_scores["invoice_number"] == 0.0 and grade.sub_scores["id"] == 0.0
    assert grade.sub_scores["site"] == 0.0  # a URI's path is case-sensitive: exact
    assert 0.8 < grade.sub_scores["note"] < 1.0  # free text keeps fuzzy credit
    same = dict(ref, id=ref["id"].upper(), email=" ann@example.com ", invoice_number="INV-2024-0042 ")
    assert grader.grade(json.dumps(same), ref).score == 1.0  # normalized: case and surrounding space do not matter
    labels = {k: d.comparator for k, d in grade.details.items()}
    assert labels == {"invoice_number": "normalized", "id": "normalized", "email": "normalized", "site": "exact",
                      "note": "fuzzy"}


class Event(BaseModel):
    at: dt.datetime
    on: dt.date


def test_a_date_time_field_compares_instants() -> None:
    grader = StructuredGrader(schema=Event)
    ref = {"at": "2024-03-15T10:00:00Z", "on": "2024-03-15"}
    assert grader.grade('{"at": "2024-03-15T23:59:00Z", "on": "2024-03-15"}', ref).sub_scores["at"] == 0.0
    assert grader.grade('{"at": "2024-03-15T12:00:00+02:00", "on": "2024-03-15"}', ref).sub_scores["at"] == 1.0
    assert grader.grade('{"at": "2024-03-15T10:00:00", "on": "2024-03-15"}', ref).sub_scores["at"] == 1.0  # naive: UTC
    tolerant = StructuredGrader(schema=Event, fields={"at": {"tolerance": 120}})
    assert tolerant.grade('{"at": "2024-03-15T10:01:30Z", "on": "2024-03-15"}', ref).sub_scores["at"] == 1.0
    assert tolerant.grade('{"at": "2024-03-15T10:03:00Z", "on": "2024-03-15"}', ref).sub_scores["at"] == 0.0
    assert grader.grade('{"at": "2024-03-15T10:00:00Z", "on": "2024-03-15"}', ref).details["at"].comparator == "datetime"


def test_the_datetime_comparator() -> None:
    datetime_comparator = comparators.datetime
    assert datetime_comparator("2024-03-15T10:00Z", "2024-03-15 11:00+01:00") == 1.0
    assert datetime_comparator("2024-03-15T10:00:00.5Z", "2024-03-15T10:00:00Z", tolerance=1) == 1.0
    assert datetime_comparator("2024-03-15", "2024-03-15T00:00:00Z") == 0.0  # a date is not an instant
    assert datetime_comparator("soon", "soon") == 1.0 and datetime_comparator("soon", "later") == 0.0
    with pytest.raises(GraderConfigError):
        make_comparator("datetime", tolerance=-1)


# --------------------------------------------------------------------------- 6. deep JSON, arrays, wrong kinds, long texts


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("schema", [None, {"type": "object", "properties": {"a": {"type": "array"}}}])
def test_very_deep_json_is_graded_or_a_flagged_zero_never_raises(schema: dict[str, Any] | None) -> None:
    # Every depth around the recursion limit: some decode and then overflowed json.dumps in the list's set semantics.
    limit = sys.getrecursionlimit()
    for grader in (StructuredGrader(schema=schema), StructuredGrader(schema=schema, aggregation="micro_f1")):
        for depth in [*range(limit - 250, limit + 30, 4), 5 * limit]:
            deep = "[" * depth + "]" * depth
            for output in ('{"a": [' + deep + ", 1]}", '{"a": [' + deep + ", " + deep + "]}", '{"a": 1, "b": ' + deep + "}"):
                grade = grader.grade(output, {"a": [[1], 2]})
                assert 0.0 <= grade.score < 1.0 and grade.reason
        for depth in (limit, 5 * limit):  # a decoded value handed to compare (no decoder in the way)
            grade = grader.compare({"a": [_nested(depth), _nested(depth), 1]}, {"a": [[1], 2]})
            assert 0.0 <= grade.score < 1.0 and grade.reason


def test_a_json_array_where_an_object_belongs_scores_each_field_zero() -> None:
    for grader in (StructuredGrader(schema=WithAddress, partial_credit=True), StructuredGrader(schema=WithAddress),
                   StructuredGrader()):
        grade = grader.grade('[{"id": "x"}]', {"id": "x", "address": {"city": "Berlin"}})
        assert grade.score == 0.0 and set(grade.sub_scores) == {"id", "address"} and not any(grade.sub_scores.values())
        assert {d.status for d in grade.details.values()} == {"wrong_type"}
        assert grade.errors["schema_validation_error"] and "array" in grade.reason


def test_a_value_a_comparator_cannot_read_falls_back_to_exact_as_the_docs_say() -> None:
    assert number("abc", "abc") == 1.0 and number("abc", "abd") == 0.0 and number("abc", 5) == 0.0
    docs = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "grading.md").read_text(encoding="utf-8")
    assert "a value of the wrong kind scores 0" not in docs
    assert "falls back to `exact`" in docs


def test_fuzzy_comparators_look_at_a_capped_number_of_characters() -> None:
    long_a, long_b = "alpha beta " * 300_000, "gamma delta " * 250_000  # about 3 MB each
    for scorer in ("WRatio", "partial_ratio", "ratio", "token_set_ratio"):
        started = time.perf_counter()
        assert 0.0 <= fuzzy(long_a, long_b, scorer=scorer) < 1.0
        assert time.perf_counter() - started < 10.0  # uncapped, WRatio alone took seconds and GBs
    assert fuzzy("x" * 20_000 + "a", "x" * 20_000 + "b") == 1.0  # beyond the cap nothing is compared
    assert fuzzy("x" * 20_000 + "a", "x" * 20_000 + "b", max_chars=30_000) < 1.0
    grade = StructuredGrader().grade(json.dumps({"t": long_a[:50_000]}), {"t": long_b[:50_000]})
    assert grade.details["t"].notes and "first" in grade.details["t"].notes[0]
    assert StructuredGrader().grade('{"t": "short"}', {"t": "shorts"}).details["t"].notes is None
