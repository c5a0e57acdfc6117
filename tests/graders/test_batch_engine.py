"""The one batch engine: grade_batch's backends (local | processes | ray) and its error modes (raise | flag)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import graders.batch._engine
from graders import Grade, GraderConfigError, StructuredGrader, from_config, grade_batch
from graders.batch import Costs, choose_workers, grade_rows
from graders.batch._engine import _probe
from graders.batch._work import Scores

DATA = Path(__file__).resolve().parents[2] / "graders" / "data"

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


def test_a_pool_is_chosen_only_where_its_starts_pay() -> None:
    # The résumé rows of benchmarks/batch_scaling.py: a pool's answer is the scores (no grade unpickled here), but
    # each worker takes ~0.5 s to start and the rows travel pickled both ways.
    resume = Costs(grade_s=6.5e-6, send_s=0.3e-6, receive_s=0.2e-6, out_s=0.4e-6)
    assert choose_workers(resume, 200_000, 2, "pool") == 1  # 1.3 s here against 1.0 s of starts + 0.84 s
    assert choose_workers(resume, 2_000_000, 2, "pool") == 2
    assert choose_workers(resume, 200_000, 2) == 2  # forked: no start to speak of, nothing pickled out


class Ticking:
    """A grader that advances a fake clock 10 us a row, except row 12, during which the process is paused 1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def grade(self, response: Any, reference: Any) -> Grade:
        self.now += 1.0 if response == 12 else 10e-6
        return Grade(1.0)


def test_the_probe_measures_a_row_and_a_pause_does_not_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    grader = Ticking()
    monkeypatch.setattr(graders.batch._engine, "clock", grader.clock)
    rows = list(range(10_000))
    parts, done, costs = _probe(grader, rows, [None] * len(rows), Scores(flag=False))
    assert costs.grade_s == pytest.approx(10e-6)  # the paused piece (rows 8-23) took 1 s, the others 10 us a row
    assert done == 24 and [first for first, _ in parts] == [0, 8]  # past the 50 ms budget after the pause
    assert [len(part) for _, part in parts] == [8, 16] and all(len(part.whole) == len(part) for _, part in parts)


def test_a_small_batch_is_graded_here_whatever_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    choose = graders.batch._engine.choose_workers

    def recorded(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
        asked.append(choose(costs, rows, workers, start))
        return asked[-1]

    monkeypatch.setattr(graders.batch._engine, "choose_workers", recorded)
    grades = grade_batch(StructuredGrader(), RESPONSES, REFERENCES, workers=4)
    assert asked == [1] and grades._make is None  # 12 rows: no process start pays; every grade made here, whole
    assert [g.to_dict() for g in grades] == [g.to_dict() for g in grade_batch(StructuredGrader(), RESPONSES, REFERENCES)]


def test_a_worker_sends_fast_path_grades_as_scores_and_every_other_grade_whole() -> None:
    # The forked and pooled workers run Scores(keep=False): a fast-path grade (details unbuilt) must not travel
    # whole (it is made again here from its row when read); a failed grade, whose details are the point, must.
    config = json.loads((DATA / "resume_grader.json").read_text(encoding="utf-8"))
    row = json.loads((DATA / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()[0])
    grader = from_config(config)
    samples, items = [row["output"], "not json"], [row["reference"], row["reference"]]
    answer = Scores(flag=True)(grader, samples, items, 0)
    assert list(answer.whole) == [1] and len(answer) == 2
    kept = Scores(flag=True).here()(grader, samples, items, 0)
    assert sorted(kept.whole) == [0, 1]  # in this process every grade is kept: none is made twice
