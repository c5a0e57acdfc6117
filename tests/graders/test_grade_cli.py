"""``rftkit grade``: (sample, item) rows for every grader type, items from another file, workers, Ray, nothing dropped."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import graders.batch._engine
import graders.batch._work
from graders import StructuredGrader, from_config
from graders._cli import app
from graders.batch import Costs, grade_rows

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
ENV = {"COLUMNS": "200"}

NAME = {"type": "string_check", "name": "name", "operation": "eq",
        "input": "{{ sample.output_json.name }}", "reference": "{{ item.name }}"}
EMAIL = {"type": "string_check", "name": "email", "operation": "ilike",
         "input": "{{ sample.output_json.email }}", "reference": "{{ item.email }}"}
CONTACT = {"type": "multi", "name": "contact", "graders": {"name": NAME, "email": EMAIL},
           "calculate_output": "0.5 * name + 0.5 * email"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


SAMPLES = [
    {"id": 1, "sample": '{"name": "Ada", "email": "ADA@example.com"}', "item": {"name": "Ada", "email": "ada@example.com"}},
    {"id": 2, "sample": '{"name": "Bob", "email": "x@y.z"}', "item": {"name": "Bob", "email": "bob@example.com"}},
    {"id": 3, "sample": "no json here", "item": {"name": "Cy", "email": "cy@example.com"}},
]


def test_multi_rows_with_item_columns_give_run_shaped_results_and_a_summary(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", str(data), "-g", str(config(tmp_path, CONTACT)), "-o", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert [r["reward"] for r in rows] == [1.0, 0.5, 0.0]
    assert rows[1]["sub_rewards"] == {"name": 1.0, "email": 0.0}
    assert rows[0]["metadata"]["name"] == "contact" and rows[0]["metadata"]["type"] == "multi"
    assert rows[0]["metadata"]["execution_time"] >= 0
    assert rows[2]["metadata"]["errors"]["invalid_variable_error"] is True  # output_json of a non-JSON sample
    assert "did not resolve" in rows[2]["reason"]
    # The summary: mean reward, the mean of each sub-grader, and the error counts.
    assert "contact (multi): 3 rows" in result.output
    assert "0.500" in result.output  # mean reward (1 + 0.5 + 0) / 3
    assert "invalid_variable_error" in result.output


def test_a_row_without_an_item_column_is_its_own_item(tmp_path: Path) -> None:
    rows = [{"output": "Paris", "answer": "Paris"}, {"output": "Lyon", "answer": "Paris"}]
    cfg = {"type": "string_check", "name": "capital", "operation": "eq",
           "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", str(write_jsonl(tmp_path / "d.jsonl", rows)), "-g", str(config(tmp_path, cfg)),
                                 "-o", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    assert [r["reward"] for r in read_results(out)] == [1.0, 0.0]


def test_items_from_a_separate_file_by_line_or_by_join_key(tmp_path: Path) -> None:
    samples = write_jsonl(tmp_path / "s.jsonl", [{"qid": "b", "sample": "4"}, {"qid": "a", "sample": "2"}])
    items = write_jsonl(tmp_path / "i.jsonl", [{"qid": "a", "answer": "2"}, {"qid": "b", "answer": "4"}])
    cfg = config(tmp_path, {"type": "string_check", "name": "n", "operation": "eq",
                            "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"})
    out = tmp_path / "out.jsonl"
    by_line = runner.invoke(app, ["grade", str(samples), "-g", str(cfg), "--items", str(items), "-o", str(out)], env=ENV)
    assert by_line.exit_code == 0, by_line.output
    assert [r["reward"] for r in read_results(out)] == [0.0, 0.0]  # line i with line i: both mismatched
    joined = runner.invoke(app, ["grade", str(samples), "-g", str(cfg), "--items", str(items), "--join-key", "qid",
                                 "-o", str(out)], env=ENV)
    assert joined.exit_code == 0, joined.output
    assert [r["reward"] for r in read_results(out)] == [1.0, 1.0]


@pytest.mark.parametrize("items_rows, extra, message", [
    ([{"answer": "2"}], [], "has 1 items for 2 sample rows"),
    ([{"qid": "a", "answer": "2"}], ["--join-key", "qid"], "no item in"),
])
def test_unmatched_items_are_reported_not_guessed(tmp_path: Path, items_rows: list[Any], extra: list[str], message: str) -> None:
    samples = write_jsonl(tmp_path / "s.jsonl", [{"qid": "b", "sample": "4"}, {"qid": "a", "sample": "2"}])
    items = write_jsonl(tmp_path / "i.jsonl", items_rows)
    cfg = config(tmp_path, {"type": "string_check", "name": "n", "operation": "eq",
                            "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"})
    result = runner.invoke(app, ["grade", str(samples), "-g", str(cfg), "--items", str(items), *extra], env=ENV)
    assert result.exit_code == 2 and message in result.output


def test_a_row_whose_grading_raises_is_a_flagged_row_and_the_others_are_kept(tmp_path: Path) -> None:
    rows = [{"id": "ok", "output": '{"a": 1}', "reference": {"a": 1}},
            {"id": "bad", "output": '{"a": 1}', "reference": "{not json"},  # the structured grader raises bad_reference
            {"id": "ok2", "output": '{"a": 2}', "reference": {"a": 1}}]
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", str(write_jsonl(tmp_path / "d.jsonl", rows)),
                                 "-g", str(config(tmp_path, {"type": "structured"})), "-o", str(out)], env=ENV)
    assert result.exit_code == 1
    assert "grading raised on 1 row(s)" in result.output and "line 2" in result.output
    results = read_results(out)
    assert [r["id"] for r in results] == ["ok", "bad", "ok2"]
    assert results[1]["reward"] == 0.0 and results[1]["metadata"]["errors"]["other_error"] is True
    assert "bad_reference" in results[1]["reason"] or "not valid JSON" in results[1]["reason"]
    assert results[0]["reward"] == 1.0 and results[2]["reward"] == 0.0


def test_the_sample_column_must_exist(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    result = runner.invoke(app, ["grade", str(data), "-g", str(config(tmp_path, NAME))], env=ENV)
    assert result.exit_code == 2 and "lack the sample column 'output'" in result.output and "--sample-key" in result.output


def test_worker_processes_give_the_same_results_in_input_order() -> None:
    grader = from_config(CONTACT)
    samples = [r["sample"] for r in SAMPLES] * 7
    items = [r["item"] for r in SAMPLES] * 7
    local = grade_rows(grader, samples, items)
    pooled = grade_rows(grader, samples, items, workers=2, chunk_size=3)
    assert [r.grade.to_dict() for r in pooled] == [r.grade.to_dict() for r in local]


def test_worker_processes_keep_a_raising_row() -> None:
    responses = ['{"a": 1}', '{"a": 1}', '{"a": 1}']
    references = [{"a": 1}, "{broken", {"a": 1}]
    results = grade_rows(StructuredGrader(), responses, references, workers=2, chunk_size=1)
    assert [r.raised for r in results] == [False, True, False]
    assert [r.grade.score for r in results] == [1.0, 0.0, 1.0]


def test_worker_processes_keep_a_row_too_deeply_nested_to_pickle() -> None:
    deep = '{"a": ' + "[" * 500 + "]" * 500 + "}"  # its grade's details nest past pickle's recursion limit
    responses, references = ['{"a": 1}', deep, '{"a": 1}'], [{"a": 1}] * 3
    local = grade_rows(StructuredGrader(), responses, references)
    pooled = grade_rows(StructuredGrader(), responses, references, workers=2, chunk_size=1)
    assert [r.grade.score for r in pooled] == [r.grade.score for r in local] == [1.0, 0.0, 1.0]
    assert [r.raised for r in pooled] == [False, False, False]


def test_worker_processes_keep_a_row_whose_sample_is_too_deeply_nested_to_send() -> None:
    deep: Any = 1
    for _ in range(2000):
        deep = [deep]
    samples, references = ['{"a": 1}', {"output_json": {"a": deep}}, '{"a": 1}'], [{"a": 1}] * 3
    pooled = grade_rows(StructuredGrader(), samples, references, workers=2, chunk_size=1)
    assert [r.grade.score for r in pooled] == [1.0, 0.0, 1.0] and not any(r.raised for r in pooled)


def test_output_with_a_lone_surrogate_is_written_as_valid_json(tmp_path: Path) -> None:
    rows = [{"id": 1, "sample": '{"name": "Par\\ud83d"}', "item": {"name": "Paris"}},  # a JSON escape of a lone surrogate
            {"id": 2, "sample": "Par\ud83d", "item": {"name": "Paris"}},  # the surrogate itself in the sample text
            {"id": 3, "sample": '{"name": "Paris"}', "item": {"name": "Paris"}}]
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # json.dumps escapes the surrogates
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", str(data), "-g", str(config(tmp_path, NAME)), "-o", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    written = read_results(out)  # every line is UTF-8 JSON
    assert [r["id"] for r in written] == [1, 2, 3] and [r["reward"] for r in written] == [0.0, 0.0, 1.0]
    assert written[0]["details"]["name"]["prediction"] == "Par\ud83d"  # nothing lost: the escape reads back as the text


@pytest.mark.slow
def test_ray_backend_on_a_local_ray_matches_local_grading() -> None:
    pytest.importorskip("ray")
    grader = from_config(CONTACT)
    samples = [r["sample"] for r in SAMPLES] * 4
    items = [r["item"] for r in SAMPLES] * 4
    local = grade_rows(grader, samples, items)
    on_ray = grade_rows(grader, samples, items, workers=2, backend="ray", chunk_size=5)
    assert [r.grade.to_dict() for r in on_ray] == [r.grade.to_dict() for r in local]


# --------------------------------------------------------------------------- --workers: the same bytes, from the workers

DEEP = '{"a": ' + "[" * 500 + "]" * 500 + "}"  # its grade's details nest past pickle's recursion limit


def mixed_rows(times: int) -> list[dict[str, Any]]:
    """Rows of every kind: right, wrong, not JSON, a reference that makes grading raise, and a too-deep output."""
    rows = [{"output": '{"a": 1, "b": ["x", "y"]}', "reference": {"a": 1, "b": ["x"]}},
            {"output": '{"a": 2, "b": []}', "reference": {"a": 1, "b": ["x"]}},
            {"output": "not json", "reference": {"a": 1}},
            {"output": '{"a": 1}', "reference": "{broken"},  # grading raises: a flagged zero with other_error
            {"output": DEEP, "reference": {"a": 1}},
            {"output": '{"a": "caf\\u00e9"}', "reference": {"a": "café"}}]
    return [{"id": f"r{k}", **row} for k, row in enumerate(rows * times)]


def graded_bytes(tmp_path: Path, rows: list[dict[str, Any]], *args: str) -> tuple[bytes, str, int]:
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / f"out{'-'.join(args)}.jsonl"
    result = runner.invoke(app, ["grade", str(data), "-g", str(config(tmp_path, {"type": "structured"})), "-o", str(out),
                                 *args], env=ENV)
    return out.read_bytes(), result.output.replace(str(out), "OUT"), result.exit_code


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row's execution_time 0.0, so that outputs compare byte for byte (forked workers inherit the patch)."""
    monkeypatch.setattr(graders.batch._work, "clock", lambda: 0.0)


@pytest.fixture
def transports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The transports the engine opened, in order (a seam on its table of transports)."""
    taken: list[str] = []
    for name, transport in list(graders.batch._engine._TRANSPORTS.items()):
        def recorded(*args: Any, _name: str = name, _transport: Any = transport, **kwargs: Any) -> Any:
            taken.append(_name)
            return _transport(*args, **kwargs)
        monkeypatch.setitem(graders.batch._engine._TRANSPORTS, name, recorded)
    return taken


def every_worker(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
    return workers  # the adaptive choice pinned: the test does not depend on how fast this machine is


def test_workers_fork_and_write_the_same_bytes_as_one_process(tmp_path: Path, fixed_clock: None, transports: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graders.batch._engine, "choose_workers", every_worker)
    rows = mixed_rows(8)
    one, one_summary, one_code = graded_bytes(tmp_path, rows)
    assert transports == ["local"]
    if threading.active_count() > 1:
        pytest.skip("an earlier test left a Python thread running, so fork is rightly not used in this process")
    two, two_summary, two_code = graded_bytes(tmp_path, rows, "--workers", "2")
    assert transports == ["local", "forked"]  # rftkit grade --workers 2 takes the forked path
    assert two == one and two_summary == one_summary and two_code == one_code == 1
    written = [json.loads(line) for line in two.decode("utf-8").splitlines()]
    assert [r["id"] for r in written] == [r["id"] for r in rows]  # every row, in input order
    assert [r["metadata"]["errors"]["other_error"] for r in written[:6]] == [False, False, False, True, False, False]
    assert written[3]["reward"] == 0.0 and "grading raised" in written[3]["reason"]
    assert written[4]["reward"] == 0.0 and written[0]["details"]["b"]["precision"] == 0.5
    assert "grading raised on 8 row(s)" in two_summary and "line 4" in two_summary


def test_workers_in_a_pool_write_the_same_bytes_where_fork_is_not_safe(tmp_path: Path, fixed_clock: None, transports: list[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graders.batch._engine, "choose_workers", every_worker)
    rows = mixed_rows(3)
    one = graded_bytes(tmp_path, rows)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # a running thread makes fork unsafe
    thread.start()
    try:
        pooled = graded_bytes(tmp_path, rows, "--workers", "2")
    finally:
        stop.set()
        thread.join()
    assert transports == ["local", "pooled"]
    # A pool's workers start afresh (the test's clock is not theirs): each execution_time is the only difference.
    assert untimed(pooled[0]) == untimed(one[0]) and pooled[1:] == one[1:]


def untimed(lines: bytes) -> bytes:
    return re.sub(rb'"execution_time": [^,]+,', b'"execution_time": 0,', lines)


def test_the_adaptive_count_decides_where_the_cli_grades(tmp_path: Path, fixed_clock: None, transports: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rows = mixed_rows(20)
    one = graded_bytes(tmp_path, rows)
    asked: list[Costs] = []

    def choose(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
        asked.append(costs)
        return 1  # pinned: the test does not depend on how fast this machine is

    monkeypatch.setattr(graders.batch._engine, "choose_workers", choose)
    assert graded_bytes(tmp_path, rows, "--workers", "2") == one
    assert len(asked) == 1 and asked[0].grade_s > 0 and transports == ["local", "local"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_empty_file_grades_to_an_empty_output(tmp_path: Path, workers: str) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", str(data), "-g", str(config(tmp_path, {"type": "structured"})), "-o", str(out),
                                 "--workers", workers], env=ENV)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"" and "0 rows" in result.output


@pytest.mark.slow
def test_ray_tasks_write_the_same_lines_as_one_process(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    rows = mixed_rows(2)
    one = graded_bytes(tmp_path, rows)
    on_ray = graded_bytes(tmp_path, rows, "--workers", "2", "--backend", "ray")
    assert untimed(on_ray[0]) == untimed(one[0]) and on_ray[1:] == one[1:]
