"""Properties every structured grade must have, checked on generated data (hypothesis)."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from graders import StructuredGrader


class Address(BaseModel):
    street: str
    zip: str | None = None


class Job(BaseModel):
    title: str
    years: int
    current: bool


class Rich(BaseModel):
    name: str
    tags: list[str]
    score: float
    count: int
    active: bool
    kind: Literal["a", "b", "c"]
    born: dt.date
    address: Address
    jobs: list[Job]
    nickname: str | None = None


RICH = StructuredGrader(schema=Rich)
RICH_PARTIAL = StructuredGrader(schema=Rich, partial_credit=True)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=30)
jobs = st.lists(st.fixed_dictionaries({"title": text, "years": st.integers(-5, 60), "current": st.booleans()}), max_size=4)
rich_objects = st.fixed_dictionaries(
    {
        "name": text,
        "tags": st.lists(text, max_size=6),
        "score": st.floats(allow_nan=False, allow_infinity=False, width=64),
        "count": st.integers(-(10**12), 10**12),
        "active": st.booleans(),
        "kind": st.sampled_from(["a", "b", "c"]),
        "born": st.dates().map(dt.date.isoformat),
        "address": st.fixed_dictionaries({"street": text}, optional={"zip": st.none() | text}),
        "jobs": jobs,
    },
    optional={"nickname": st.none() | text},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def assert_valid_score(score: float) -> None:
    assert isinstance(score, float) and math.isfinite(score) and 0.0 <= score <= 1.0


@PROPERTY_SETTINGS
@given(rich_objects)
def test_any_schema_valid_object_scores_one_against_itself(obj: dict[str, Any]) -> None:
    grade = RICH.grade(json.dumps(obj), obj)
    assert grade.ok, grade.reason
    assert grade.score == 1.0, grade.reason
    assert all(v == 1.0 for v in grade.sub_scores.values())


@PROPERTY_SETTINGS
@given(st.text(max_size=300), rich_objects)
def test_scores_are_finite_and_in_range_for_arbitrary_text(output: str, reference: dict[str, Any]) -> None:
    assert_valid_score(RICH.grade(output, reference).score)
    assert_valid_score(RICH_PARTIAL.grade(output, reference).score)


@PROPERTY_SETTINGS
@given(json_values, rich_objects)
def test_scores_are_finite_and_in_range_for_arbitrary_json(value: Any, reference: dict[str, Any]) -> None:
    for grader in (RICH, RICH_PARTIAL, StructuredGrader(aggregation="micro_f1")):
        grade = grader.grade(json.dumps(value), reference)
        assert_valid_score(grade.score)
        assert grade.reason


@PROPERTY_SETTINGS
@given(rich_objects, st.randoms(use_true_random=False))
def test_permuting_set_valued_lists_does_not_change_the_score(obj: dict[str, Any], rng: Any) -> None:
    # A prediction that differs from the reference, so that pairing actually matters.
    pred = json.loads(json.dumps(obj))
    pred["tags"] = [t + "x" for t in pred["tags"][:3]] + ["zz"]
    pred["jobs"] = [dict(j, years=j["years"] + 1) for j in pred["jobs"]]
    base = RICH.grade(json.dumps(pred), obj).score
    shuffled = dict(pred, tags=rng.sample(pred["tags"], len(pred["tags"])), jobs=rng.sample(pred["jobs"], len(pred["jobs"])))
    assert math.isclose(RICH.grade(json.dumps(shuffled), obj).score, base, abs_tol=1e-12)


letters = st.text(alphabet="abcdef", min_size=1, max_size=8)


@PROPERTY_SETTINGS
@given(st.lists(letters, max_size=6), st.lists(letters, max_size=6), st.text(alphabet="0123456789", min_size=1, max_size=8))
def test_a_hallucinated_list_item_never_raises_precision(pred: list[str], ref: list[str], hallucination: str) -> None:
    # The hallucinated item shares no character with any reference item, so it matches nothing.
    grader = StructuredGrader(fields={"tags": {"mode": "multiset"}})
    before = grader.grade(json.dumps({"tags": pred}), {"tags": ref})
    after = grader.grade(json.dumps({"tags": [*pred, hallucination]}), {"tags": ref})
    b, a = before.details["tags"], after.details["tags"]
    assert a.precision is not None and b.precision is not None
    assert a.precision <= b.precision + 1e-12
    assert after.score <= before.score + 1e-12
    assert a.recall == b.recall
