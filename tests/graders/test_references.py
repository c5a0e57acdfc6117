"""References: what users naturally pass is accepted; what cannot be a reference is refused.

A pydantic instance, ``model_dump()`` output (dates, datetimes, decimals, enums,
UUIDs) and JSON text all grade like the plain JSON object; ``None``, ``""``, a
string that is not JSON and a scalar raise ``UserError`` (``bad_reference``) with
a pointer and a hint, and the reward server answers them with 400.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel

from graders import StructuredGrader
from graders.serve._app import create_app
from schemas import UserError


class Status(str, Enum):
    PAID = "paid"
    OPEN = "open"


class Line(BaseModel):
    description: str
    amount: Decimal


class Invoice(BaseModel):
    number: str
    issued: dt.date
    due: dt.datetime
    status: Status
    total: Decimal
    id: uuid.UUID
    lines: list[Line]


INVOICE = Invoice(number="INV-1", issued=dt.date(2024, 3, 15), due=dt.datetime(2024, 4, 15, 12, 0, tzinfo=dt.timezone.utc),
                  status=Status.PAID, total=Decimal("187.50"), id=uuid.UUID("0b6f3c1e-8a3d-4c1e-9f0a-3b2c1d4e5f60"),
                  lines=[Line(description="Widget", amount=Decimal("187.50"))])
OUTPUT = INVOICE.model_dump_json()


@pytest.mark.parametrize("reference", [INVOICE, INVOICE.model_dump(), INVOICE.model_dump(mode="json"), OUTPUT],
                         ids=["instance", "model_dump", "model_dump_json_mode", "json_text"])
@pytest.mark.parametrize("schema", [Invoice, None], ids=["schema", "schema_free"])
def test_what_users_naturally_pass_grades_like_json(reference: Any, schema: type[BaseModel] | None) -> None:
    grade = StructuredGrader(schema=schema).grade(OUTPUT, reference)
    assert grade.score == 1.0, grade.reason
    assert all(v == 1.0 for v in grade.sub_scores.values()), grade.sub_scores
    json.dumps(grade.to_dict())  # no date or Decimal left in the details


def test_the_users_reference_is_left_as_it_was() -> None:
    dumped = INVOICE.model_dump()
    before = repr(dumped)
    StructuredGrader(schema=Invoice).grade(OUTPUT, dumped)
    assert repr(dumped) == before


@pytest.mark.parametrize(("reference", "words"), [
    (None, "null"), ("", "empty"), ("not json", "not JSON"), ("  ", "empty"), ('"just a string"', "object"),
    (5, "int"), ({"a": [1, object()]}, "/a/1"), ("{broken", "not valid JSON"),
])
def test_what_cannot_be_a_reference_is_refused(reference: Any, words: str) -> None:
    with pytest.raises(UserError) as err:
        StructuredGrader().grade('{"a": 1}', reference)
    assert err.value.code == "bad_reference" and err.value.hint
    assert words in str(err.value), err.value


def test_a_schema_for_an_object_refuses_a_list_reference() -> None:
    with pytest.raises(UserError) as err:
        StructuredGrader(schema=Invoice).grade(OUTPUT, [INVOICE.model_dump(mode="json")])
    assert err.value.code == "bad_reference" and err.value.pointer == ""


@pytest.mark.parametrize("label", ["not json", "", None])
def test_get_reward_answers_a_label_that_cannot_be_a_reference_with_400(label: Any) -> None:
    from fastapi.testclient import TestClient

    app = create_app({"type": "structured", "name": "inv"})
    with TestClient(app) as client:
        r = client.post("/get_reward", json={"query": ['{"a": 1}'], "prompts": [""], "labels": [label]})
        assert r.status_code == 400, r.text
        body: dict[str, Any] = r.json()["error"]
        assert body["code"] == "bad_reference" and body["pointer"] == "/labels/0" and body["hint"], body
        good = client.post("/get_reward", json={"query": ['{"a": 1}'], "prompts": [""], "labels": ['{"a": 1}']})
        assert good.status_code == 200 and good.json()["rewards"] == [1.0]

