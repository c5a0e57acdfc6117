"""The lazy grades (graders/_lazy_grade.py) read, compare and pickle as the plain Grade made at once."""

from __future__ import annotations

import itertools
import json
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

from graders import FieldDetail, Grade, StructuredGrader
from graders._lazy_grade import FailedGrade, LazyGrade, details_unbuilt, packed, unpacked
from graders._result import no_errors

FLAT = {"type": "object", "properties": {"city": {"type": "string"}, "langs": {"type": "array", "items": {"type": "string"}}},
        "required": ["city", "langs"]}
NESTED = {"type": "object", "properties": {"name": {"type": "string"}, "address": {"type": "object", "properties": {
    "city": {"type": "string"}, "zip": {"type": "string"}}}}, "required": ["name"]}
FLAT_REF = {"city": "Paris", "langs": ["python", "c"]}
NESTED_REF = {"name": "Ada", "address": {"city": "London", "zip": "N1"}}

# (grader, response, reference, the class the grader answers with)
CASES: list[tuple[Callable[[], StructuredGrader], str, Any, type[Grade]]] = [
    (lambda: StructuredGrader(FLAT), '{"city": "Paris", "langs": ["c", "python"]}', FLAT_REF, LazyGrade),  # fast path
    (lambda: StructuredGrader(FLAT), '{"city": "Pariss", "langs": ["go"]}', FLAT_REF, LazyGrade),
    (lambda: StructuredGrader(NESTED), '{"name": "Ada", "address": {"city": "Londres"}}', NESTED_REF, LazyGrade),  # generic walk
    (lambda: StructuredGrader(FLAT), '{"city": 3, "langs": ["c"]}', FLAT_REF, LazyGrade),  # schema-invalid, per field: flagged
    (lambda: StructuredGrader(FLAT), "not json at all", FLAT_REF, FailedGrade),
    (lambda: StructuredGrader(FLAT, on_schema_violation="gate"), '{"city": 3, "langs": []}', FLAT_REF, FailedGrade),
    (lambda: StructuredGrader(FLAT, lenient=True), "{'city': 'Paris', 'langs': ['c'],}", FLAT_REF, LazyGrade),  # repaired
    (lambda: StructuredGrader(FLAT), "[1]", FLAT_REF, Grade),  # not an object: a plain grade, its reason written at once
]
ATTRIBUTES = ("score", "sub_scores", "details", "errors", "reason", "repairs", "issues", "counts", "how", "ok")


def said(grade: Grade, order: tuple[str, ...] = ATTRIBUTES) -> dict[str, Any]:
    """Every attribute of ``grade``, read in ``order``, then its dict and repr."""
    out = {name: getattr(grade, name) for name in order}
    return {**out, "to_dict": grade.to_dict(), "repr": repr(grade)}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_a_lazy_grade_says_what_the_plain_grade_says_whatever_is_read_first(case: int) -> None:
    make, response, reference, kind = CASES[case]
    grader = make()
    plain = pickle.loads(pickle.dumps(grader.grade(response, reference)))
    assert type(plain) is Grade  # a lazy grade pickles as a plain one
    for first in ("details", "errors", "reason", "repairs", "issues", "counts", "ok", "to_dict"):
        grade = grader.grade(response, reference)
        assert type(grade) is kind
        order = (first, *ATTRIBUTES) if first != "to_dict" else ATTRIBUTES
        if first == "to_dict":
            assert grade.to_dict() == plain.to_dict()
        assert said(grade, order) == said(plain)
        assert said(pickle.loads(pickle.dumps(grade))) == said(plain)


def test_the_reason_of_a_lazy_grade_is_the_one_a_plain_grade_writes() -> None:
    details = {"city": FieldDetail("fuzzy", 0.5, "compared", "Pari", "Paris")}
    for errors in (None, {**no_errors(), "schema_validation_error": True}):
        lazy = LazyGrade.unformatted(0.5, {"city": 0.5}, details, errors, ("trailing comma",), (), (0.5, 0.5, 0.5), "weighted_mean")
        plain = Grade(0.5, {"city": 0.5}, details, errors, None, ("trailing comma",), (), (0.5, 0.5, 0.5), "weighted_mean")
        assert said(lazy) == said(plain)
        assert lazy.ok is (errors is None) and lazy.reason == "0.500 by weighted_mean: below 1: city 0.50; repaired (trailing comma)"


def test_a_lazy_grade_keeps_what_is_set_on_it() -> None:
    grade = StructuredGrader(FLAT).grade('{"city": "Paris", "langs": ["c"]}', FLAT_REF)
    assert details_unbuilt(grade)
    grade.details = {}
    grade.reason = "mine"
    grade.errors = {**no_errors(), "other_error": True}
    assert (grade.details, grade.reason, grade.ok, not details_unbuilt(grade)) == ({}, "mine", False, True)
    assert said(pickle.loads(pickle.dumps(grade))) == said(grade)
    failed = StructuredGrader(FLAT).grade("no", FLAT_REF)
    failed.reason = "mine too"
    assert failed.reason == "mine too" and failed.errors["sample_parse_error"] and failed.counts is None


def test_only_an_unread_fast_path_grade_travels_as_its_values() -> None:
    grader = StructuredGrader(FLAT)
    assert grader._flat_build is not None
    fresh = grader.grade('{"city": "Paris", "langs": ["c"]}', FLAT_REF)
    sent = packed(fresh)
    assert type(sent) is tuple and details_unbuilt(fresh)
    back = unpacked(pickle.loads(pickle.dumps(sent)), grader._flat_build)
    assert type(back) is LazyGrade and said(back) == said(fresh)
    for read in ("details", "errors", "reason"):
        grade = grader.grade('{"city": "Paris", "langs": ["c"]}', FLAT_REF)
        getattr(grade, read)
        assert packed(grade) is grade and unpacked(grade, grader._flat_build) is grade
    for other in (Grade(1.0), grader.grade("no", FLAT_REF), StructuredGrader(NESTED).grade(json.dumps(NESTED_REF), NESTED_REF)):
        assert packed(other) is other and not details_unbuilt(other)


def test_two_threads_building_a_details_dict_at_once_get_equal_ones() -> None:
    grader = StructuredGrader(FLAT)
    assert grader._flat_build is not None
    build = grader._flat_build
    both_inside = threading.Barrier(2, timeout=30)

    def slow_build(values: tuple[Any, ...]) -> dict[str, FieldDetail]:
        both_inside.wait()  # each thread builds only once the other is building too
        return build(values)

    fresh = grader.grade('{"city": "Pariss", "langs": ["c", "go"]}', FLAT_REF)
    assert type(fresh) is LazyGrade
    grade = unpacked(packed(fresh), slow_build)
    got = read_at_once(lambda: grade.details)
    assert got[0] is not got[1] and got[0] == got[1] == grade.details == fresh.details


def test_two_threads_explaining_a_failed_grade_at_once_get_equal_answers() -> None:
    grader = StructuredGrader(FLAT)
    both_inside = threading.Barrier(2, timeout=30)
    calls = itertools.count()

    def explain() -> Grade:
        next(calls)
        both_inside.wait()
        return grader._full("not json", FLAT_REF, None)

    grade = FailedGrade(explain)
    got = read_at_once(lambda: (grade.reason, grade.errors, grade.issues))
    assert next(calls) == 2 and got[0] == got[1] == (grade.reason, grade.errors, grade.issues)
    assert said(grade) == said(grader.grade("not json", FLAT_REF))


def read_at_once(read: Callable[[], Any]) -> list[Any]:
    """``read()`` in two threads started together; both answers (an exception in either is raised here)."""
    answers: list[Any] = [None, None]
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            answers[i] = read()
        except BaseException as exc:  # noqa: B036  # handed to the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return answers


def test_a_failed_grade_must_be_explained_as_a_failure() -> None:
    grade = FailedGrade(lambda: Grade(0.5, {"a": 0.5}))
    assert grade.ok is False and grade.score == 0.0
    with pytest.raises(AssertionError, match="explained as something else"):
        grade.reason  # noqa: B018  # the read runs the check
