"""``rftkit eval`` against a fake OpenAI-compatible server on loopback: summaries, retries, timeouts, resume, compare, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fake_http import HANG, Answer, FakeServer
from typer.testing import CliRunner

from graders import StructuredGrader, from_config
from graders.eval import (
    EvalRow,
    NamedGrader,
    SamplingParams,
    ServerSampler,
    compare_runs,
    paired_bootstrap,
    pass_at_k,
    read_samples,
    run_eval,
)
from graders.eval._cli import register

ROOT = Path(__file__).resolve().parents[2]

EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}",
         "operation": "eq"}
# six rows; the fake model answers four of them right
ANSWERS = {"q0": "4", "q1": "9", "q2": "x", "q3": "16", "q4": "25", "q5": "y"}
GOLD = {"q0": "4", "q1": "9", "q2": "1", "q3": "16", "q4": "25", "q5": "36"}


def completion(text: str, finish: str = "stop") -> dict[str, Any]:
    # both shapes: "message" is read from /chat/completions, "text" from /completions
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "text": text, "finish_reason": finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2}}


def asked(request: dict[str, Any]) -> str:
    body = request["body"]
    return str(body["prompt"] if "prompt" in body else body["messages"][-1]["content"])


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(lambda n, req: (200, completion(ANSWERS[asked(req)])))
    yield fake
    fake.close()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": q}], "answer": a}) + "\n"
                            for i, (q, a) in enumerate(GOLD.items())), encoding="utf-8")
    return path


@pytest.fixture
def grader_file(tmp_path: Path) -> Path:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(EXACT), encoding="utf-8")
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so typer keeps "eval" as a named subcommand
        pass

    return CliRunner().invoke(app, ["eval", *args], env={"COLUMNS": "200", **(env or {})})


def no_perf(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "perf"}


# --------------------------------------------------------------------------- the summary


def test_summary_equals_the_grades_computed_by_hand(server: FakeServer, dataset: Path, grader_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli(str(dataset), "-g", str(grader_file), "--base-url", server.root + "/v1", "--model", "fake", "-o", str(out),
                 "--max-tokens", "12", "--seed", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    exact = summary["graders"]["exact"]
    assert exact["mean"] == pytest.approx(4 / 6) and exact["pass_rate"] == pytest.approx(4 / 6)
    assert exact["pass_at_k"] == {"1": pytest.approx(4 / 6)} and exact["errors"] == {} and exact["parse_error_rate"] == 0
    assert summary["samples"] == 6 and summary["missing_samples"] == 0
    assert summary["tokens"] == {"prompt": 42, "completion": 12, "mean_completion": 2.0, "samples_without_usage": 0}
    assert summary["finish_reasons"] == {"stop": 6}
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((r["row"], r["sample"]) for r in records) == [(i, 0) for i in range(6)]
    by_row = {r["id"]: r for r in records}
    assert by_row["r2"]["output_text"] == "x" and by_row["r2"]["grades"]["exact"]["reward"] == 0.0
    assert set(by_row["r0"]["grades"]["exact"]) >= {"reward", "metadata", "sub_rewards", "reason"}  # the graders/run shape
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert body["model"] == "fake" and body["temperature"] == 0.0 and body["max_tokens"] == 12 and body["seed"] == 3
    assert "exact" in result.output and "0.667" in result.output  # the terminal table
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<table id="summary">' in page and "<svg" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_structured_grader_per_field_means_match_grading_each_sample_directly(tmp_path: Path) -> None:
    config = json.loads((ROOT / "examples" / "resume" / "grader.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (ROOT / "graders" / "data" / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    data = tmp_path / "resume.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "reference": r["reference"]}) + "\n" for i, r in enumerate(rows)),
                    encoding="utf-8")
    outputs = {f"p{i}": r["output"] for i, r in enumerate(rows)}
    fake = FakeServer(lambda n, req: (200, {"choices": [{"text": outputs[asked(req)], "finish_reason": "stop"}]}))
    try:
        (tmp_path / "g.json").write_text(json.dumps(config), encoding="utf-8")
        result = cli(str(data), "-g", str(tmp_path / "g.json"), "--base-url", fake.root, "--model", "m", "-o", str(tmp_path / "run"))
    finally:
        fake.close()
    assert result.exit_code == 0, result.output
    assert {r["path"] for r in fake.requests} == {"/completions"}  # prompt strings go to /completions under --api auto
    grader = from_config(config)
    assert isinstance(grader, StructuredGrader)
    grades = [grader.grade(r["output"], r["reference"]) for r in rows]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    name = next(iter(summary["graders"]))
    got = summary["graders"][name]
    assert got["mean"] == pytest.approx(sum(g.score for g in grades) / len(grades))
    for field in grades[0].sub_scores:
        assert got["fields"][field]["mean"] == pytest.approx(sum(g.sub_scores.get(field, 0.0) for g in grades) / len(grades))
    assert summary["tokens"]["samples_without_usage"] == len(rows)


# --------------------------------------------------------------------------- retries and timeouts


def direct_run(server: FakeServer, tmp_path: Path, name: str, **options: Any) -> tuple[dict[str, Any], list[float]]:
    slept: list[float] = []
    sampler = ServerSampler(server.root, "fake", concurrency=2, backoff=0.5, sleep=slept.append, **options)
    g = from_config(EXACT)
    rows = [EvalRow(i, i + 1, {"answer": a}, prompt=q) for i, (q, a) in enumerate(GOLD.items())]
    summary = run_eval(rows, [NamedGrader("exact", g, EXACT, 1.0, False)], sampler, SamplingParams(), tmp_path / name)
    return summary, slept


def test_429_retry_after_and_500_then_success_are_retried(tmp_path: Path) -> None:
    first: dict[str, int] = {}
    lock = threading.Lock()

    def respond(n: int, req: dict[str, Any]) -> Answer:
        q = asked(req)
        with lock:
            first[q] = first.get(q, 0) + 1
            seen = first[q]
        if q == "q1" and seen == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "7"}
        if q == "q3" and seen <= 2:
            return 500, "boom"
        return 200, completion(ANSWERS[q])

    server = FakeServer(respond)
    try:
        summary, slept = direct_run(server, tmp_path, "run")
    finally:
        server.close()
    assert summary["graders"]["exact"]["mean"] == pytest.approx(4 / 6) and summary["missing_samples"] == 0
    assert sorted(slept) == [0.5, 1.0, 7.0]  # Retry-After honoured; the 500s backed off 0.5 then 1.0
    assert first == {"q0": 1, "q1": 2, "q2": 1, "q3": 3, "q4": 1, "q5": 1}
    attempts = {r["input"]["prompt"]: r["attempts"] for r in read_samples(tmp_path / "run" / "samples.jsonl")}
    assert attempts["q1"] == 2 and attempts["q3"] == 3 and attempts["q0"] == 1


def test_a_timeout_is_retried_and_a_request_that_never_succeeds_is_retried_by_the_next_run(tmp_path: Path) -> None:
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def respond(n: int, req: dict[str, Any]) -> Answer:
        q = asked(req)
        with lock:
            calls[q] = calls.get(q, 0) + 1
        if q == "q2" and calls[q] == 1:
            return 200, HANG  # no answer: the client's timeout ends the attempt
        if q == "q5":
            return 503, "down"
        return 200, completion(ANSWERS[q])

    server = FakeServer(respond)
    try:
        summary, _ = direct_run(server, tmp_path, "run", timeout=0.5, max_retries=2)
        assert calls["q2"] == 2 and calls["q5"] == 3
        assert summary["missing_samples"] == 1 and summary["samples"] == 5
        failed = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
                  if json.loads(line)["error"]]
        assert len(failed) == 1 and "HTTP 503" in failed[0]["error"] and "after 3 attempts" in failed[0]["error"]
        server.respond = lambda n, req: (200, completion(ANSWERS[asked(req)]))
        before = len(server.requests)
        summary, _ = direct_run(server, tmp_path, "run")  # the same folder: resumes
        assert [asked(r) for r in server.requests[before:]] == ["q5"]  # only the failed sample is drawn again
    finally:
        server.close()
    assert summary["missing_samples"] == 0 and summary["samples"] == 6
    assert summary["graders"]["exact"]["mean"] == pytest.approx(4 / 6)
    lines = (tmp_path / "run" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and all(json.loads(line)["error"] is None for line in lines)


# --------------------------------------------------------------------------- SIGKILL, then resume


def test_sigkill_mid_run_then_resume_gives_one_sample_per_row_and_the_uninterrupted_summary(
        dataset: Path, grader_file: Path, tmp_path: Path) -> None:
    reached = threading.Event()
    kill_at = 3

    def respond(n: int, req: dict[str, Any]) -> Answer:
        if n >= kill_at:  # answered: the first kill_at requests; this one and any later never are
            reached.set()
            return 200, HANG
        return 200, completion(ANSWERS[asked(req)])

    server = FakeServer(respond)
    out = tmp_path / "killed"
    command = [sys.executable, "-c", "from graders._cli import main; main()", "eval", str(dataset), "-g", str(grader_file),
               "--base-url", server.root, "--model", "fake", "-o", str(out), "--concurrency", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    try:
        assert reached.wait(120), proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else "no request"
        lines = out / "samples.jsonl"
        for _ in range(1200):  # the answered samples are graded and written, then the run waits for an answer that never comes
            if proc.poll() is not None or len(lines.read_bytes().splitlines()) >= kill_at:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        server.close()
        if proc.stderr:
            proc.stderr.close()
    assert len((out / "samples.jsonl").read_text(encoding="utf-8").splitlines()) == kill_at and not (out / "summary.json").exists()
    with (out / "samples.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"row": 5, "sample": 0, "output_te')  # as if the kill had come in the middle of a write
    again = FakeServer(lambda n, req: (200, completion(ANSWERS[asked(req)])))
    try:
        result = cli(str(dataset), "-g", str(grader_file), "--base-url", again.root, "--model", "fake", "-o", str(out),
                     "--concurrency", "1")
        resumed_prompts = sorted(asked(r) for r in again.requests)
        whole = cli(str(dataset), "-g", str(grader_file), "--base-url", again.root, "--model", "fake", "-o", str(tmp_path / "whole"))
    finally:
        again.close()
    assert result.exit_code == 0 and whole.exit_code == 0, result.output + whole.output
    assert resumed_prompts == ["q3", "q4", "q5"]  # the finished rows were not sampled again
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((r["row"], r["sample"]) for r in records) == [(i, 0) for i in range(6)]
    a = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "whole" / "summary.json").read_text(encoding="utf-8"))
    assert no_perf(a) == no_perf(b)


def test_resuming_with_other_settings_is_refused_and_overwrite_starts_afresh(server: FakeServer, dataset: Path,
                                                                              grader_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = [str(dataset), "-g", str(grader_file), "--base-url", server.root, "--model", "fake", "-o", str(out)]
    assert cli(*base).exit_code == 0
    refused = cli(*base, "--temperature", "0.7")
    assert refused.exit_code == 2 and "resume_mismatch" in refused.output and "--overwrite" in refused.output
    n = len(server.requests)
    assert cli(*base).exit_code == 0 and len(server.requests) == n  # nothing left to sample
    assert cli(*base, "--temperature", "0.7", "--overwrite").exit_code == 0 and len(server.requests) == n + 6


# --------------------------------------------------------------------------- OpenAI eval definitions, sampling


def test_an_openai_eval_definition_runs_as_is(server: FakeServer, tmp_path: Path) -> None:
    definition = {
        "name": "squares",
        "data_source_config": {"type": "custom", "item_schema": {"type": "object"}, "include_sample_schema": True},
        "testing_criteria": [EXACT, {"type": "string_check", "name": "mentions", "input": "{{ sample.output_text }}",
                                     "reference": "1", "operation": "like"}],
        "data_source": {"type": "completions", "model": "fake",
                        "input_messages": {"type": "template", "template": [
                            {"role": "developer", "content": "Answer with a number."},
                            {"role": "user", "content": {"type": "input_text", "text": "{{ item.question }}"}}]},
                        "sampling_params": {"temperature": 0, "max_completion_tokens": 5, "seed": 42,
                                            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}},
                        "source": {"type": "file_id", "id": "file-abc"}},
    }
    (tmp_path / "eval.json").write_text(json.dumps(definition), encoding="utf-8")
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"item": {"question": q, "answer": a}}) + "\n" for q, a in GOLD.items()), encoding="utf-8")
    result = cli(str(data), "-g", str(tmp_path / "eval.json"), "--base-url", server.root, "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["graders"]["exact"]["mean"] == pytest.approx(4 / 6)
    assert summary["graders"]["mentions"]["mean"] == pytest.approx(1 / 6)  # of 4, 9, x, 16, 25, y only "16" holds a "1"
    body = server.requests[0]["body"]
    assert body["messages"][0] == {"role": "developer", "content": "Answer with a number."}
    assert body["model"] == "fake" and body["max_tokens"] == 5 and body["seed"] == 42
    assert body["response_format"]["type"] == "json_schema"


def test_an_item_reference_chat_and_inline_file_content_items_run_without_a_dataset_file(server: FakeServer, tmp_path: Path) -> None:
    items = [{"item": {"trajectory": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}], "answer": a}}
             for q, a in GOLD.items()]
    definition = {"testing_criteria": [EXACT],
                  "data_source": {"type": "completions", "model": "fake",
                                  "input_messages": {"type": "item_reference", "item_reference": "item.trajectory"},
                                  "sampling_params": {"max_completion_tokens": 3, "top_p": 0.5},
                                  "source": {"type": "file_content", "content": items}}}
    (tmp_path / "eval.json").write_text(json.dumps(definition), encoding="utf-8")
    result = cli("-g", str(tmp_path / "eval.json"), "--base-url", server.root, "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["graders"]["exact"]["mean"] == pytest.approx(4 / 6) and summary["samples"] == 6
    bodies = sorted((r["body"] for r in server.requests), key=lambda b: b["messages"][-1]["content"])
    assert bodies[0]["messages"] == items[0]["item"]["trajectory"]
    assert all(b["max_tokens"] == 3 and b["top_p"] == 0.5 for b in bodies)


@pytest.mark.parametrize(("data_source", "pointer", "words"), [
    ({"type": "jsonl", "source": {"type": "file_id", "id": "f"}}, "/data_source/type", "rftkit grade"),
    ({"type": "completions", "sampling_params": {"tools": []}}, "/data_source/sampling_params/tools", "no local equivalent"),
    ({"type": "completions", "sampling_params": {"temperature": "hot"}}, "/data_source/sampling_params/temperature", "a number"),
    ({"type": "completions", "sampling_params": {"max_completion_tokens": 2.5}}, "/data_source/sampling_params/max_completion_tokens",
     "an integer"),
    ({"type": "completions", "source": {"type": "stored_completions"}}, "/data_source/source/type", "export the items"),
    ({"type": "completions", "source": {"type": "file_content", "content": [{"q": 1}]}}, "/data_source/source/content", "item"),
    ({"type": "completions", "input_messages": {"type": "item_reference", "item_reference": "sample.x"}},
     "/data_source/input_messages/item_reference", "item.input_trajectory"),
])
def test_a_data_source_without_a_local_meaning_is_refused_with_a_pointer(server: FakeServer, dataset: Path, tmp_path: Path,
                                                                         data_source: dict[str, Any], pointer: str, words: str) -> None:
    (tmp_path / "eval.json").write_text(json.dumps({"testing_criteria": [EXACT], "data_source": data_source}), encoding="utf-8")
    result = cli(str(dataset), "-g", str(tmp_path / "eval.json"), "--base-url", server.root, "--model", "m", "-o", str(tmp_path / "r"))
    assert result.exit_code == 2 and pointer in result.output and words in result.output, result.output
    assert not server.requests


def test_rows_an_item_reference_cannot_read_and_a_missing_dataset_are_clear_errors(server: FakeServer, tmp_path: Path) -> None:
    source = {"type": "completions", "input_messages": {"type": "item_reference", "item_reference": "item.chat"}}
    (tmp_path / "eval.json").write_text(json.dumps({"testing_criteria": [EXACT], "data_source": source}), encoding="utf-8")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"item": {"chat": [{"role": "user", "content": "q0"}]}}) + "\n"
                    + json.dumps({"item": {"question": "q1"}}) + "\n", encoding="utf-8")
    base = ["-g", str(tmp_path / "eval.json"), "--base-url", server.root, "--model", "m", "-o", str(tmp_path / "r")]
    result = cli(str(data), *base)
    assert result.exit_code == 2 and "rows.jsonl:2" in result.output and "invalid_variable" in result.output
    result = cli(*base)  # no dataset, and the source is not inline
    assert result.exit_code == 2 and "missing_dataset" in result.output and "file_content" in result.output
    assert not server.requests


def test_the_api_key_comes_from_the_option_or_the_environment(server: FakeServer, dataset: Path, grader_file: Path,
                                                              tmp_path: Path) -> None:
    base = [str(dataset), "-g", str(grader_file), "--base-url", server.root, "--model", "m", "--limit", "1"]
    assert cli(*base, "-o", str(tmp_path / "a"), env={"OPENAI_API_KEY": "sk-env"}).exit_code == 0
    assert cli(*base, "-o", str(tmp_path / "b"), "--api-key", "sk-option", env={"OPENAI_API_KEY": "sk-env"}).exit_code == 0
    assert [r["headers"].get("Authorization") for r in server.requests] == ["Bearer sk-env", "Bearer sk-option"]


def test_every_sampling_option_reaches_the_server(server: FakeServer, dataset: Path, grader_file: Path, tmp_path: Path) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}
    (tmp_path / "fmt.json").write_text(json.dumps(fmt), encoding="utf-8")
    result = cli(str(dataset), "-g", str(grader_file), "--base-url", server.root, "--model", "m", "-o", str(tmp_path / "r"),
                 "--samples", "2", "--temperature", "0.7", "--top-p", "0.9", "--max-tokens", "7", "--seed", "10",
                 "--stop", "END", "--stop", "\n\n", "--response-format", str(tmp_path / "fmt.json"), "--limit", "2")
    assert result.exit_code == 0, result.output
    bodies = sorted((r["body"] for r in server.requests), key=lambda b: (b["messages"][-1]["content"], b["seed"]))
    assert [(b["messages"][-1]["content"], b["seed"]) for b in bodies] == [("q0", 10), ("q0", 11), ("q1", 10), ("q1", 11)]
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 and b["max_tokens"] == 7 and b["stop"] == ["END", "\n\n"]
               and b["response_format"] == fmt for b in bodies)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert summary["samples"] == 4 and summary["samples_per_row"] == 2 and set(summary["graders"]["exact"]["pass_at_k"]) == {"1", "2"}


def test_several_samples_per_row_report_pass_at_k(tmp_path: Path) -> None:
    # sample k of a row is sent with seed + k; the fake answers right on even seeds only
    fake = FakeServer(lambda n, req: (200, completion(GOLD[asked(req)] if req["body"]["seed"] % 2 == 0 else "no")))
    try:
        sampler = ServerSampler(fake.root, "fake", concurrency=4)
        rows = [EvalRow(i, i + 1, {"answer": a}, prompt=q) for i, (q, a) in enumerate(GOLD.items())]
        summary = run_eval(rows, [NamedGrader("exact", from_config(EXACT), EXACT, 1.0, False)], sampler,
                           SamplingParams(temperature=1.0, seed=0), tmp_path / "run", samples_per_row=4)
    finally:
        fake.close()
    exact = summary["graders"]["exact"]
    assert summary["samples"] == 24 and exact["pass_rate"] == 0.5
    assert exact["pass_at_k"] == {"1": 0.5, "2": pytest.approx(1 - 1 / 6), "4": 1.0}  # 2 of 4 pass in every row
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)


def test_bad_input_is_a_clear_error_with_a_pointer(server: FakeServer, grader_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q0", "answer": "4"}\n{"question": "q1"}\n', encoding="utf-8")
    result = cli(str(data), "-g", str(grader_file), "--base-url", server.root, "--model", "m", "-o", str(tmp_path / "r"))
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output and "missing_prompt" in result.output
    assert "/prompt" in result.output and "hint" in result.output
    result = cli(str(data), "-g", str(grader_file), "--base-url", server.root, "-o", str(tmp_path / "r"))
    assert result.exit_code == 2 and "missing_model" in result.output
    (tmp_path / "g.json").write_text(json.dumps({"testing_criteria": [EXACT, EXACT]}), encoding="utf-8")
    result = cli(str(data), "-g", str(tmp_path / "g.json"), "--base-url", server.root, "--model", "m")
    assert result.exit_code == 2 and "/testing_criteria/1/name" in result.output
    assert not server.requests


# --------------------------------------------------------------------------- compare


def make_run(tmp_path: Path, name: str, answers: dict[str, str], dataset: Path, grader_file: Path) -> Path:
    fake = FakeServer(lambda n, req: (200, completion(answers[asked(req)])))
    try:
        result = cli(str(dataset), "-g", str(grader_file), "--base-url", fake.root, "--model", name, "-o", str(tmp_path / name))
    finally:
        fake.close()
    assert result.exit_code in (0, 1), result.output
    return tmp_path / name


def test_compare_gives_the_paired_difference_and_gates_on_the_margin(dataset: Path, grader_file: Path, tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ANSWERS, dataset, grader_file)
    b = make_run(tmp_path, "b", {**ANSWERS, "q2": "1", "q5": "36"}, dataset, grader_file)  # fixes two rows
    worse = make_run(tmp_path, "worse", {**ANSWERS, "q0": "no", "q1": "no", "q3": "no"}, dataset, grader_file)
    result = compare_runs(a, b)
    exact = result["graders"]["exact"]["overall"]
    assert exact["mean_a"] == pytest.approx(4 / 6) and exact["mean_b"] == 1.0 and exact["diff"] == pytest.approx(2 / 6)
    low, high = exact["ci95"]
    assert 0.0 <= low <= 2 / 6 <= high <= 1.0 and exact["rows"] == 6
    assert len(result["graders"]["exact"]["most_changed"]) == 2
    ok = CliRunner().invoke(_compare_app(), ["eval", "compare", str(a), str(b)])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(_compare_app(), ["eval", "compare", str(a), str(worse), "--margin", "0.05", "-o", str(tmp_path / "c.json")])
    assert bad.exit_code == 1 and "worse than A" in bad.output
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))["graders"]["exact"]["overall"]["diff"] == pytest.approx(-0.5)
    missing = CliRunner().invoke(_compare_app(), ["eval", "compare", str(a), str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not_a_run" in missing.output


def _compare_app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        pass

    return app


def test_paired_bootstrap_matches_a_plain_resampling_loop() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    a = rng.random(40)
    b = np.clip(a + rng.normal(0.05, 0.1, 40), 0, 1)
    d, low, high = paired_bootstrap(a.tolist(), b.tolist(), resamples=4000, seed=2)
    diffs = b - a
    loop = np.random.default_rng(3)
    means = sorted(float(diffs[loop.integers(0, 40, 40)].mean()) for _ in range(4000))
    assert d == pytest.approx(float(diffs.mean()))
    assert low == pytest.approx(means[100], abs=0.01) and high == pytest.approx(means[3899], abs=0.01)
    assert paired_bootstrap([0.5, 0.5], [1.0, 1.0]) == (0.5, 0.5, 0.5)  # no spread: the interval is the point


def test_a_server_run_never_imports_torch(server: FakeServer, dataset: Path, grader_file: Path, tmp_path: Path) -> None:
    code = ("import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
            "from graders._cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code, "eval", str(dataset), "-g", str(grader_file), "--base-url", server.root,
                           "--model", "fake", "-o", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
