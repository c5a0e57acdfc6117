"""grade_batch with worker processes reads, row for row, exactly as grading in this process: every
attribute of every grade, the exception of a row that raises, and the list it returns."""

from __future__ import annotations

import copy
import mmap
import multiprocessing
import os
import pickle
import signal
import threading
import time
from typing import Any

import pytest

import graders.batch._engine
from graders import StructuredGrader, grade_batch
from graders._errors import GraderConfigError
from graders._lazy_grade import LazyGrade, details_unbuilt
from graders._result import Grade
from graders.batch._engine import Costs, choose_workers
from graders.batch._forked import GradeList, _grade_forked, fork_is_safe
from graders.batch._pool import _grade_pooled

FLAT = {"type": "object", "properties": {"city": {"type": "string"}, "langs": {"type": "array", "items": {"type": "string"}},
                                         "year": {"type": "integer"}}, "required": ["city", "langs"]}
NESTED = {"type": "object", "properties": {"name": {"type": "string"}, "address": {"type": "object", "properties": {
    "city": {"type": "string"}, "zip": {"type": "string"}}}, "jobs": {"type": "array", "items": {
        "type": "object", "properties": {"title": {"type": "string"}, "years": {"type": "number"}}}}}, "required": ["name"]}

REF = {"city": "Paris", "langs": ["python", "c"], "year": 2020}
FLAT_ROWS: list[tuple[Any, Any]] = [
    ('{"city": "Paris", "langs": ["python", "c"], "year": 2020}', REF),  # valid, the fast path
    ('{"city": "Pariss", "langs": ["c", "rust"], "year": 2021}', REF),  # valid, imperfect
    ('Here it is:\n```json\n{"city": "Paris", "langs": ["c"], "year": 2020}\n```', REF),  # fenced
    ('{"city": "Paris", "langs": ["python", "c"], "ye', REF),  # truncated
    ('{"city": 3, "langs": ["python"], "year": 2020}', REF),  # schema-invalid: partial credit, an issue
    ('{"langs": ["python"]}', REF),  # schema-invalid: a required field missing
    ("no JSON here at all", REF),  # non-JSON
    ("", REF),  # empty
    ('{"city": "Paris", "langs": [], "year": 2020}', REF),  # an empty list: the generic path
    ('{"city": "  ", "langs": ["c"], "year": 2020}', REF),  # a blank value: the generic path
    ("{'city': 'Paris', 'langs': ['c'], 'year': 2020,}", REF),  # repaired (lenient): penalised
    ({"output_text": '{"city": "Lyon", "langs": ["c"], "year": 2020}'}, REF),  # an OpenAI-style sample
    ({"output_json": {"city": "Paris", "langs": ["python", "c"], "year": 2020}}, REF),
    ('{"city": "Paris", "langs": ["python", "c", "c"], "year": 2020}', json_ref := '{"city": "Paris", "langs": ["c"]}'),
    ('{"city": "Paris", "langs": ["python"], "year": 2020, "extra": 1}', REF),  # an extra key
]
NESTED_REF = {"name": "Ada", "address": {"city": "London", "zip": "N1"}, "jobs": [{"title": "eng", "years": 3}]}
NESTED_ROWS: list[tuple[Any, Any]] = [
    ('{"name": "Ada", "address": {"city": "London", "zip": "N1"}, "jobs": [{"title": "eng", "years": 3}]}', NESTED_REF),
    ('{"name": "Ada", "address": {"city": "Londn"}, "jobs": [{"title": "eng", "years": 4}, {"title": "x"}]}', NESTED_REF),
    ('{"name": 1}', NESTED_REF),
    ("nope", NESTED_REF),
]


def every_attribute(grade: Grade) -> dict[str, Any]:
    """Everything a grade says, compared field by field (FieldDetail is a dataclass: == compares values).

    A grade that came back from a worker is a plain Grade, one made here may be a lazy one (graders._lazy_grade):
    both are Grades, and what they say is compared."""
    return {"is_grade": isinstance(grade, Grade), "score": grade.score, "sub_scores": list(grade.sub_scores.items()),
            "details": list(grade.details.items()), "errors": list(grade.errors.items()), "reason": grade.reason,
            "repairs": grade.repairs, "issues": grade.issues, "counts": grade.counts, "how": grade.how, "ok": grade.ok,
            "to_dict": grade.to_dict(), "repr": repr(grade)}


def corpus(rows: list[tuple[Any, Any]], times: int) -> tuple[list[Any], list[Any]]:
    rows = rows * times
    return [r for r, _ in rows], [f for _, f in rows]


GRADERS = {
    "flat": lambda: StructuredGrader(FLAT, fields={"langs": {"comparator": "normalized"}}, lenient=True, repair_penalty=0.1),
    "flat-formula": lambda: StructuredGrader(FLAT, aggregation="formula", formula="0.5 * city + 0.5 * langs", partial_credit=True),
    "nested": lambda: StructuredGrader(NESTED),
    "schemaless": lambda: StructuredGrader(),
}


@pytest.mark.parametrize("kind", sorted(GRADERS))
@pytest.mark.parametrize("transport", ["forked", "pooled"])
def test_every_attribute_of_every_row_is_as_in_this_process(kind: str, transport: str) -> None:
    grader = GRADERS[kind]()
    responses, references = corpus(NESTED_ROWS if kind == "nested" else FLAT_ROWS, 3)
    local = grade_batch(grader, responses, references)
    run = _grade_forked if transport == "forked" else _grade_pooled
    for workers, size in ((2, 4), (3, 7), (2, 1000)) if transport == "forked" else ((2, 4),):  # pools start slowly
        parallel = run(grader, list(responses), list(references), workers, False, size)
        assert len(parallel) == len(local)
        assert parallel.scores == local.scores == [g.score for g in local]
        assert [every_attribute(g) for g in parallel] == [every_attribute(g) for g in local]


@pytest.mark.parametrize("kind", ["flat", "nested"])
@pytest.mark.parametrize("chosen", [1, 2])
def test_adaptive_batches_read_as_in_this_process_whichever_count_is_chosen(kind: str, chosen: int,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    grader = GRADERS[kind]()
    responses, references = corpus(NESTED_ROWS if kind == "nested" else FLAT_ROWS, 30)  # more rows than the probe takes
    local = grade_batch(grader, responses, references)
    asked: list[tuple[Costs, int, int]] = []

    def choose(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
        asked.append((costs, rows, workers))
        return chosen  # the decision pinned: the test does not depend on how fast this machine is

    monkeypatch.setattr(graders.batch._engine, "choose_workers", choose)
    got = grade_batch(grader, responses, references, workers=3)
    [(costs, rows, workers)] = asked
    assert workers == 3 and 0 < rows < len(responses) and costs.grade_s > 0 and costs.send_s >= 0
    assert [every_attribute(g) for g in got] == [every_attribute(g) for g in local]
    assert got.scores == local.scores


def test_the_worker_count_follows_the_measured_costs() -> None:
    fast = Costs(grade_s=7e-6, send_s=0.0, receive_s=0.0)  # the fast path: only a score travels back
    nested = Costs(grade_s=72e-6, send_s=60e-6, receive_s=40e-6)  # issue 12's 20k invoices: grades travel whole
    assert choose_workers(fast, 1_000_000, 2) == 2 and choose_workers(fast, 1_000_000, 8) == 8
    assert choose_workers(nested, 20_000, 2) == 1 and choose_workers(nested, 20_000, 16) == 1  # the trip back costs more
    assert choose_workers(fast, 5_000, 2) == 1  # 35 ms of grading: not worth a start
    assert choose_workers(Costs(0.05, 1e-5, 1e-5), 100, 4) == 4  # a slow grader (model, python): every worker pays
    assert choose_workers(Costs(0.05, 1e-5, 1e-5), 100, 4, "pool") == 3  # 5 s of grading: a fourth start costs more than it saves
    assert choose_workers(Costs(0.05, 1e-5, 1e-5), 1_000, 4, "pool") == 4
    assert choose_workers(Costs(1e-3, 0.0, 0.0), 1_000, 4, "pool") == 1  # 1 s of grading against 0.5 s a process start
    sent_out = Costs(grade_s=100e-6, send_s=0.0, receive_s=0.0, out_s=90e-6)  # rows pickled out to a pool, not to a fork
    assert choose_workers(sent_out, 1_000_000, 2) == 2 and choose_workers(sent_out, 1_000_000, 2, "pool") == 1


def test_the_flat_corpus_takes_both_paths() -> None:
    grader = GRADERS["flat"]()
    lazy = [details_unbuilt(g) for g in grade_batch(grader, *corpus(FLAT_ROWS, 1))]
    assert any(lazy) and not all(lazy)  # fast-path grades come back as scores, the others whole


def test_grade_batch_forks_where_it_is_safe_and_falls_back_where_a_thread_runs() -> None:
    grader = GRADERS["flat"]()
    responses, references = corpus(FLAT_ROWS, 2)
    expected = [every_attribute(g) for g in grade_batch(grader, responses, references)]
    if threading.active_count() > 1:  # e.g. tqdm's monitor, started by an earlier test that saved a model
        pytest.skip("an earlier test left a Python thread running, so fork is rightly not used in this process")
    assert fork_is_safe()  # the test process runs no other Python thread
    forked = grade_batch(grader, responses, references, workers=2, chunk_size=3, adaptive=False)
    assert forked._make is not None  # forked: made as read
    assert [every_attribute(g) for g in forked] == expected
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not fork_is_safe()
        got = grade_batch(grader, responses, references, workers=2, chunk_size=3, adaptive=False)
    finally:
        stop.set()
        thread.join()
    assert [every_attribute(g) for g in got] == expected


@pytest.mark.parametrize("transport", ["forked", "pooled"])
def test_the_first_row_that_raises_propagates_as_in_this_process(transport: str) -> None:
    grader = GRADERS["flat"]()
    responses, references = corpus(FLAT_ROWS, 4)
    references[13] = '{"broken'  # raises GraderConfigError (bad_reference) ...
    references[41] = 7  # ... and so would this later one
    with pytest.raises(GraderConfigError) as local:
        grade_batch(grader, responses, references)
    run = _grade_forked if transport == "forked" else _grade_pooled
    for size in (2, 5, 100) if transport == "forked" else (5,):
        with pytest.raises(GraderConfigError) as parallel:
            run(grader, list(responses), list(references), 2, False, size)
        assert (parallel.value.code, str(parallel.value)) == (local.value.code, str(local.value))


DEEP = '{"city": ' + "[" * 500 + "]" * 500 + "}"  # about 1 KB, and its grade's details nest past pickle's recursion limit


@pytest.mark.parametrize("transport", ["forked", "pooled"])
def test_an_output_nested_too_deeply_to_pickle_costs_its_row_not_the_batch(transport: str) -> None:
    grader = StructuredGrader()
    responses, references = [DEEP, '{"city": "Paris"}', "nope"] * 3, [{"city": "Paris"}] * 9
    local = grade_batch(grader, responses, references)
    assert local.scores == [0.0, 1.0, 0.0] * 3
    with pytest.raises(RecursionError):
        pickle.dumps(local[0])  # what lost the whole batch before
    run = _grade_forked if transport == "forked" else _grade_pooled
    parallel = run(grader, list(responses), list(references), 2, False, 2)
    assert [every_attribute(g) for g in parallel] == [every_attribute(g) for g in local]


@pytest.mark.parametrize("transport", ["forked", "pooled"])
def test_an_input_nested_too_deeply_to_pickle_costs_its_row_not_the_batch(transport: str) -> None:
    deep: Any = 1
    for _ in range(2000):
        deep = [deep]
    grader = StructuredGrader()
    responses = [{"output_json": {"city": deep}}, '{"city": "Paris"}', "nope"] * 3
    references = [{"city": "Paris"}] * 9
    local = grade_batch(grader, responses, references)
    run = _grade_forked if transport == "forked" else _grade_pooled
    parallel = run(grader, list(responses), list(references), 2, False, 2)
    assert parallel.scores == local.scores == [0.0, 1.0, 0.0] * 3


class Dies:
    """A grader whose process dies on one row (as if killed)."""

    def grade(self, response: Any, reference: Any) -> Grade:
        if response == "die":
            os._exit(3)
        return Grade(1.0)


def test_a_worker_that_dies_is_an_error_not_missing_rows() -> None:
    with pytest.raises(RuntimeError, match="exit codes"):
        _grade_forked(Dies(), ["ok"] * 10 + ["die"] + ["ok"] * 10, [None] * 21, 2, False, 3)


class Flaky:
    """A fast-path-shaped grader that is not deterministic: its details could not be made again."""

    def grade(self, response: Any, reference: Any) -> Grade:
        return LazyGrade.recorded(os.getpid() / 1e9, {"a": 1.0}, lambda values: {}, (), 1.0, 0.0, 0.0, "weighted_mean")


def test_a_grader_that_is_not_deterministic_is_caught_when_its_grades_are_read() -> None:
    grades = _grade_forked(Flaky(), ["x"] * 4, [None] * 4, 2, False, 2)
    assert len(grades.scores) == 4
    with pytest.raises(RuntimeError, match="not deterministic"):
        grades[0]


def test_progress_bar_runs_with_forked_workers() -> None:
    grader = GRADERS["flat"]()
    responses, references = corpus(FLAT_ROWS, 2)
    got = _grade_forked(grader, responses, references, 2, True, 4)
    assert got.scores == grade_batch(grader, responses, references).scores


# --------------------------------------------------------------------------- GradeList


def lazy_and_plain() -> tuple[GradeList, list[Grade]]:
    grader = GRADERS["flat"]()
    responses, references = corpus(FLAT_ROWS[:3], 3)
    return _grade_forked(grader, responses, references, 2, False, 2), grade_batch(grader, responses, references)


def test_a_grade_list_reads_like_a_list_without_making_every_grade() -> None:
    lazy, plain = lazy_and_plain()
    assert isinstance(lazy, list) and len(lazy) == 9 and lazy
    assert lazy._make is not None
    assert lazy[0] is lazy[0] and lazy[-1] is lazy[8]  # made once, kept
    assert [g.score for g in lazy[1:7:2]] == [g.score for g in plain[1:7:2]]
    assert [g.score for g in reversed(lazy)] == [g.score for g in reversed(plain)]
    assert [g.score for g in lazy] == lazy.scores == plain.scores
    with pytest.raises(IndexError):
        lazy[9]
    with pytest.raises(TypeError):
        lazy["0"]  # type: ignore[call-overload]  # what a list says too
    assert lazy._make is not None  # none of that needed every grade in the list's own storage


def test_a_grade_list_compares_adds_copies_and_pickles_like_a_list() -> None:
    lazy, _ = lazy_and_plain()
    items = list(lazy)
    assert lazy == items and items == lazy and not lazy != items and lazy[0] in lazy
    assert lazy._make is None  # comparing needed every grade: now an ordinary list
    other, _ = lazy_and_plain()
    assert other != lazy  # other grades (Grade compares by identity, as in any list)
    one, _ = lazy_and_plain()
    two = one[:]
    assert list.__len__(one) == 0 and one == two and two == one  # filled before comparing
    again, _ = lazy_and_plain()
    assert [g.score for g in [Grade(0.0)] + again] == [0.0] + again.scores
    again, _ = lazy_and_plain()
    assert len(again + [Grade(0.0)]) == 10 and len(again * 2) == 18
    again, _ = lazy_and_plain()
    assert [g.score for g in pickle.loads(pickle.dumps(again))] == again.scores
    assert type(copy.copy(again)) is list and type(copy.deepcopy(again)) is list
    again, _ = lazy_and_plain()
    again.append(Grade(0.25))
    assert len(again) == 10 and again[-1].score == 0.25 and again.scores[-1] == 0.25
    again, _ = lazy_and_plain()
    again.sort(key=lambda g: g.score)
    assert again.scores == sorted(again.scores)


def test_a_grade_list_from_grades_in_hand() -> None:
    grades = GradeList([Grade(1.0), Grade(0.5)])
    assert grades.scores == [1.0, 0.5] and len(grades) == 2 and grades == list(grades)
    assert grade_batch(StructuredGrader(), [], []) == []


class Unpicklable:
    """A grader whose grades cannot travel back from a worker (a lambda among their details)."""

    def grade(self, response: Any, reference: Any) -> Grade:
        return Grade(1.0, details={"x": lambda: None})  # type: ignore[dict-item]  # deliberately not a FieldDetail


def test_a_grade_that_does_not_pickle_raises_here() -> None:
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        _grade_forked(Unpicklable(), ["x"] * 6, [None] * 6, 2, False, 2)


class NeedsArguments(Exception):
    """An exception that pickles but cannot be rebuilt: ``__init__`` takes two arguments, ``args`` holds one."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")


class RaisesOddly:
    def grade(self, response: Any, reference: Any) -> Grade:
        if response == 7:
            raise NeedsArguments(503, "upstream")
        return Grade(1.0)


def test_an_exception_that_cannot_be_rebuilt_arrives_as_its_text_with_the_worker_traceback() -> None:
    with pytest.raises(RuntimeError, match=r"grading row 7 raised NeedsArguments: 503: upstream") as info:
        _grade_forked(RaisesOddly(), list(range(20)), [None] * 20, 2, False, 4)
    assert "NeedsArguments" in str(info.value.__cause__)  # the worker's traceback


class SignalsThenWaits:
    """A grader for the interrupt test: each worker's first grade waits until both workers have begun, then one of
    them sends SIGUSR1 to the parent (which the test turns into Ctrl-C), and every grade waits until the parent has
    told the workers to stop (the second of _grade_forked's shared counters is -1). So the batch is unbounded until
    interrupted and the workers go on only once the stop is given, however fast or slow the machine."""

    def grade(self, response: Any, reference: Any) -> Grade:
        with GRADED.get_lock():
            GRADED.value += 1
        stop = memoryview(SHARED[0]).cast("q")
        if stop[1] != -1:
            if STARTED.wait(timeout=60) == 0:
                os.kill(os.getppid(), signal.SIGUSR1)
            for _ in range(60_000):
                if stop[1] == -1:
                    break
                time.sleep(0.001)
        stop.release()
        return Grade(1.0)


GRADED: Any = None
STARTED: Any = None
SHARED: list[mmap.mmap] = []


def test_an_interrupt_stops_the_workers_at_their_next_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    global GRADED, STARTED
    fork = multiprocessing.get_context("fork")
    GRADED, STARTED = fork.Value("q", 0), fork.Barrier(2)  # inherited by the forked workers
    SHARED.clear()
    real_mmap = mmap.mmap

    def recorded(*args: Any) -> mmap.mmap:  # the workers' shared counters, so the grader can see the stop
        SHARED.append(real_mmap(*args))
        return SHARED[-1]

    monkeypatch.setattr(mmap, "mmap", recorded)
    n, size = 100_000, 4

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            _grade_forked(SignalsThenWaits(), ["x"] * n, [None] * n, 2, False, size)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # Each worker finishes the chunk it is on, then takes no other: not its share of the batch.
    assert 2 <= GRADED.value <= 2 * size, GRADED.value
    assert multiprocessing.active_children() == []
