"""The one batch engine: grade_batch's backends (local | processes | ray) and its error modes (raise | flag)."""

from __future__ import annotations

from typing import Any

import pytest

from graders import Grade, GraderConfigError, StructuredGrader, grade_batch
from graders.batch import grade_rows

RESPONSES = ['{"a": 1}', "not json", '{"a": 2}', '{"a": 1, "b": 3}'] * 3
REFERENCES = [{"a": 1}] * len(RESPONSES)


class Buggy:
    """A grader with a bug on one input: it raises (a grader bug is not a bad response)."""

    def grade(self, response: Any, reference: Any) -> Grade:
        if response == "boom":
            raise ZeroDivisionError("a bug in the grader")
        return StructuredGrader().grade(response, reference)


def test_local_backend_ignores_workers_and_matches_one_worker() -> None:
    one = grade_batch(StructuredGrader(), RESPONSES, REFERENCES)
    local = grade_batch(StructuredGrader(), RESPONSES, REFERENCES, workers=4, backend="local")
    assert [g.to_dict() for g in local] == [g.to_dict() for g in one]


def test_errors_raise_propagates_the_grader_bug() -> None:
    with pytest.raises(ZeroDivisionError):
        grade_batch(Buggy(), ['{"a": 1}', "boom"], [{"a": 1}, {"a": 1}])


def test_errors_flag_turns_the_bug_into_a_flagged_zero_and_keeps_the_other_rows() -> None:
    grades = grade_batch(Buggy(), ['{"a": 1}', "boom", '{"a": 1}'], [{"a": 1}] * 3, errors="flag")
    assert [g.score for g in grades] == [1.0, 0.0, 1.0]
    assert grades[1].errors["other_error"] and "ZeroDivisionError" in grades[1].reason
    assert not grades[0].errors["other_error"]


def test_errors_flag_equals_the_rows_engine() -> None:
    grades = grade_batch(StructuredGrader(), RESPONSES, REFERENCES, errors="flag")
    rows = grade_rows(StructuredGrader(), RESPONSES, REFERENCES)
    assert [g.to_dict() for g in grades] == [r.grade.to_dict() for r in rows]


def test_grade_rows_errors_raise_propagates() -> None:
    with pytest.raises(ZeroDivisionError):
        grade_rows(Buggy(), ["boom"], [{"a": 1}], errors="raise")


@pytest.mark.parametrize(("options", "code"), [({"backend": "gpu"}, "bad_option"), ({"errors": "ignore"}, "bad_option")])
def test_bad_options_raise_at_the_call(options: dict[str, Any], code: str) -> None:
    with pytest.raises(GraderConfigError) as info:
        grade_batch(StructuredGrader(), RESPONSES, REFERENCES, **options)
    assert info.value.code == code


@pytest.mark.slow
def test_ray_backend_matches_local_grading() -> None:
    pytest.importorskip("ray")
    local = grade_batch(StructuredGrader(), RESPONSES, REFERENCES)
    on_ray = grade_batch(StructuredGrader(), RESPONSES, REFERENCES, workers=2, backend="ray", chunk_size=5)
    assert [g.to_dict() for g in on_ray] == [g.to_dict() for g in local]
