"""rftkit graders inside the real ``verifiers`` (0.4, ``verifiers.v1``): its own scoring and its own evaluation loop.

* verifiers' ``Task.score`` (the code that calls rewards and metrics and sums the
  weighted rewards) scores a handful of completions exactly as ``grade_batch`` does,
  with one metric per field named ``<grader>/<field>``, the parse-error flag as a
  metric, and a NaN score recorded as 0 with the error metric set;
* the taskset built by ``verifiers_taskset`` from the demo's résumé rows runs through
  verifiers' ``run_eval`` (what ``vf-eval`` runs) against a fake OpenAI-compatible
  server on loopback, and every rollout's reward and per-field metrics equal rftkit's;
  so do the ``vf-eval`` command itself (a subprocess) and verifiers' env server (its own
  process, driven by ``EnvClient``, as prime-rl drives it).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

vf = pytest.importorskip("verifiers.v1")

from fake_http import FakeServer  # noqa: E402  (after the skip: the module is only useful with verifiers)

import graders  # noqa: E402
from graders import Grade, GraderConfigError, grade_batch  # noqa: E402
from graders.adapters import (  # noqa: E402
    VerifiersGrader,
    VerifiersTask,
    VerifiersTaskConfig,
    VerifiersTaskData,
    VerifiersTaskset,
    VerifiersTasksetConfig,
    verifiers_grader,
    verifiers_taskset,
)
from rl._demo_data import demo_splits  # noqa: E402
from schemas import UserError  # noqa: E402

RESUME = Path(graders.__file__).parent / "data" / "resume_grader.json"
FIELDS = ["university", "programming_languages", "city", "state"]


def completions_for(rows: list[dict[str, Any]]) -> list[str]:
    """One reply per row, of every kind a model writes: the gold JSON, legacy labels, prose around JSON, a wrong
    list, no JSON at all, a cut-off object, and a schema-invalid answer (graded per field)."""
    out = []
    for i, row in enumerate(rows):
        ref = row["reference"]
        kind = i % 7
        if kind == 0:
            out.append(row["completion"])
        elif kind == 1:
            out.append(json.dumps({**ref, "city": f"{ref['city']}, XX", "state": "XX"}))
        elif kind == 2:
            out.append(f"Here is the JSON:\n```json\n{json.dumps(ref)}\n```\nDone.")
        elif kind == 3:
            out.append(json.dumps({**ref, "programming_languages": [*ref["programming_languages"][:1], "cobol"]}))
        elif kind == 4:
            out.append("I cannot find a résumé in this text.")
        elif kind == 5:
            out.append(json.dumps(ref)[:25])
        else:
            out.append(json.dumps({**ref, "programming_languages": "python", "extra": 1}))
    return out


def trace_for(data: Any, text: str, *, finish_reason: str = "stop") -> Any:
    """A finished single-turn trace: one sampled assistant message and the model call that produced it."""
    return vf.Trace(task=vf.TraceTask(type="VerifiersTask", data=data), agent=vf.AgentInfo(config=vf.AgentConfig()),
                    nodes=[vf.MessageNode(message=vf.AssistantMessage(content=text), sampled=True)],
                    calls=[vf.ModelCall(node=0, finish_reason=finish_reason)])


def expected_metrics(grade: Grade, name: str, fields: list[str]) -> dict[str, float]:
    out = {f"{name}/{f}": grade.sub_scores.get(f, 0.0) for f in fields}
    out[f"{name}/parse_error"] = float(grade.errors["sample_parse_error"])
    out[f"{name}/error"] = float(not grade.ok)
    return out


# --------------------------------------------------------------------------- verifiers' Task.score


MULTI = {"type": "multi", "name": "mixed", "calculate_output": "0.7 * fields + 0.3 * text", "graders": {
    "fields": {"type": "structured", "name": "fields", "schema": json.loads(RESUME.read_text())["schema"]},
    "text": {"type": "text_similarity", "name": "text", "evaluation_metric": "fuzzy_match",
             "input": "{{ sample.output_text }}", "reference": "{{ item.completion }}"}}}


@pytest.mark.parametrize("config", [str(RESUME), MULTI], ids=["structured", "multi"])
def test_task_score_equals_grade_batch(config: Any) -> None:
    rows = demo_splits(seed=3, sft=0, train=14, heldout=0).train
    texts = completions_for(rows)
    adapter = verifiers_grader(config)
    structured = isinstance(adapter.grader, graders.StructuredGrader)
    references = [r["reference"] for r in rows] if structured else [{**r} for r in rows]
    grades = grade_batch(adapter.grader, texts, references)
    assert len({g.score for g in grades}) >= 4 and any(g.errors["sample_parse_error"] for g in grades)  # the cases differ
    fields = FIELDS if structured else ["fields", "text"]

    async def score_all() -> list[Any]:
        traces = []
        for row, text in zip(rows, texts):
            data = VerifiersTaskData(prompt=row["prompt"], reference=row["reference"], item={} if structured else row)
            trace = trace_for(data, text)
            await VerifiersTask(data, grader=adapter).score(trace)
            traces.append(trace)
        return traces

    for trace, grade in zip(asyncio.run(score_all()), grades):
        assert trace.rewards == {adapter.name: vf.Reward(score=grade.score, weight=1.0)}
        assert trace.reward == grade.score  # exactly: verifiers' own weighted sum
        assert trace.metrics == expected_metrics(grade, adapter.name, fields)
        assert trace.info["rftkit"][adapter.name]["reason"] == grade.reason


class NanGrader:
    """A grader whose score and one field come out NaN (what a buggy custom grader or metric can produce)."""

    name = "nan"
    needs_reference = True
    bounded_cost = True

    def grade(self, response: Any, reference: Any) -> Grade:
        return Grade(float("nan"), {"a": float("nan"), "b": 1.0})

    def grade_row(self, sample: Any, item: Any) -> Grade:
        return self.grade(sample, item["reference"])

    def field_names(self) -> list[str]:
        return []

    def config(self) -> dict[str, Any]:
        return {}


def test_nan_never_reaches_the_weighted_sum() -> None:
    data = VerifiersTaskData(prompt="p", reference={"a": 1})
    adapter = VerifiersGrader(NanGrader())  # type: ignore[arg-type]  # duck-typed on purpose

    async def score() -> Any:
        trace = trace_for(data, "{}")
        await VerifiersTask(data, grader=adapter).score(trace)
        return trace

    trace = asyncio.run(score())
    assert trace.reward == 0.0 and trace.rewards["nan"].score == 0.0
    assert trace.metrics == {"nan/a": 0.0, "nan/b": 1.0, "nan/parse_error": 0.0, "nan/error": 1.0}
    assert all(math.isfinite(v) for v in trace.metrics.values())

    class RawNan(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):  # type: ignore[misc]  # what verifiers does unguarded
        @vf.reward
        async def raw(self, trace: Any) -> float:
            return float("nan")

    async def raw() -> Any:
        trace = trace_for(data, "{}")
        await RawNan(vf.TaskData(prompt="p")).score(trace)
        return trace

    assert math.isnan(asyncio.run(raw()).reward)  # the poisoning the adapter prevents


def test_truncated_reply_is_graded_as_truncated() -> None:
    row = demo_splits(seed=1, sft=0, train=1, heldout=0).train[0]
    data = VerifiersTaskData(prompt=row["prompt"], reference=row["reference"])
    adapter = verifiers_grader(RESUME)
    text = row["completion"][:-3]

    async def score() -> Any:
        trace = trace_for(data, text, finish_reason="length")
        await VerifiersTask(data, grader=adapter).score(trace)
        return trace

    trace = asyncio.run(score())
    grade = adapter.grader.grade(text, row["reference"], finish_reason="length")
    assert grade.errors["truncated_output_error"] and trace.reward == grade.score
    assert trace.metrics["resume/error"] == 1.0 and "truncated_output_error" in trace.info["rftkit"]["resume"]["errors"]
    assert "finish_reason was 'length'" in grade.reason and trace.info["rftkit"]["resume"]["reason"] == grade.reason


def test_plugged_functions_grade_any_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """``graders.adapters:verifiers_reward`` / ``verifiers_metrics`` plugged into a plain task by its config."""
    monkeypatch.setenv("RFTKIT_GRADER", str(RESUME))
    row = demo_splits(seed=2, sft=0, train=1, heldout=0).train[0]
    config = vf.TaskConfig(rewards={"rftkit": {"fn": "graders.adapters:verifiers_reward", "weight": 2.0}},
                           metrics={"rftkit_fields": {"fn": "graders.adapters:verifiers_metrics"}})
    data = vf.WireTaskData(prompt=row["prompt"], reference=row["reference"])
    text = json.dumps({**row["reference"], "state": "XX"})

    async def score() -> Any:
        trace = trace_for(data, text)
        await vf.Task(data, config).score(trace)
        return trace

    trace = asyncio.run(score())
    grade = graders.from_config(RESUME).grade(text, row["reference"])
    assert trace.rewards == {"resume": vf.Reward(score=grade.score, weight=2.0)}
    assert trace.reward == 2.0 * grade.score and trace.metrics["resume/state"] == 0.0


def test_misuse_raises_at_construction(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "reference": {"city": "x"}}) + "\n")
    with pytest.raises(GraderConfigError):
        verifiers_taskset(rows, {"type": "no_such_grader"})
    with pytest.raises(UserError, match="no dataset file"):
        verifiers_taskset(tmp_path / "missing.jsonl", RESUME)
    with pytest.raises(GraderConfigError, match="expected a grader"):
        verifiers_grader(42)  # type: ignore[arg-type]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "reference": {}}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    with pytest.raises(GraderConfigError, match="needs a dataset file"):
        VerifiersTaskset(VerifiersTasksetConfig(task=VerifiersTaskConfig(grader=str(RESUME))))
    with pytest.raises(GraderConfigError, match="names no grader"):
        VerifiersTaskset(VerifiersTasksetConfig(dataset=bad))
    with pytest.raises(GraderConfigError, match="names no grader"):
        VerifiersTask(VerifiersTaskData(prompt="p"))
    with pytest.raises(GraderConfigError, match="takes a VerifiersTasksetConfig"):
        VerifiersTaskset(vf.TasksetConfig(id="x"))
    with pytest.raises(UserError, match="row 2") as info:
        list(VerifiersTaskset(VerifiersTasksetConfig(dataset=bad, task=VerifiersTaskConfig(grader=str(RESUME)))))
    assert info.value.pointer == "/2" and info.value.hint


# --------------------------------------------------------------------------- verifiers' evaluation loop


def chat_completion(n: int, model: str, text: str, finish_reason: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}


@pytest.fixture
def env_module(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The environment module a user writes (three lines), for 12 of the demo's résumé rows, on sys.path."""
    rows = demo_splits(seed=0, sft=0, train=12, heldout=0).train
    (tmp_path / "resume.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    name = f"resume_env_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "from graders.adapters import SingleTurnEnv, SingleTurnHarness, verifiers_taskset\n\n"
        f"ResumeTaskset = verifiers_taskset({str(tmp_path / 'resume.jsonl')!r}, {str(RESUME)!r})\n"
        '__all__ = ["ResumeTaskset", "SingleTurnHarness", "SingleTurnEnv"]\n')
    sys.path.insert(0, str(tmp_path))
    try:
        yield name, rows
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_environment_runs_verifiers_eval_loop_on_demo_rows(env_module: tuple[str, list[dict[str, Any]]], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from verifiers.v1.cli.eval.runner import run_eval
    from verifiers.v1.configs.cli.eval import EvalConfig

    monkeypatch.delenv("VF_RUN_ID", raising=False)  # run_eval sets it for the processes it starts; gone after the test

    name, rows = env_module
    replies = dict(zip((r["prompt"] for r in rows), completions_for(rows)))
    cut = rows[5]["prompt"]  # this one the server cuts at the token limit

    def respond(n: int, request: dict[str, Any]) -> tuple[int, Any]:
        body = request["body"]
        prompt = body["messages"][-1]["content"]
        return 200, chat_completion(n, body["model"], replies[prompt], "length" if prompt == cut else "stop")

    server = FakeServer(respond)
    try:
        config = EvalConfig.model_validate({
            "env": {"taskset": {"id": name}}, "model": "fake-model", "push": False, "rich": None,
            "client": {"type": "eval", "base_url": f"{server.root}/v1", "api_key_var": "RFTKIT_FAKE_KEY"},
            "output_dir": str(tmp_path / "outputs"), "max_concurrent": 4})
        episodes = asyncio.run(run_eval(config))
    finally:
        server.close()

    assert len(server.requests) == len(rows)
    assert {r["body"]["model"] for r in server.requests} == {"fake-model"}
    assert {r["body"]["messages"][-1]["content"] for r in server.requests} == set(replies)
    grader = graders.from_config(RESUME)
    seen = 0
    for episode in episodes:
        assert episode.ok, episode.errors
        (trace,) = episode.traces
        row = rows[trace.task.data.idx]
        text = replies[row["prompt"]]
        grade = grade_batch(grader, [text], [row["reference"]])[0] if row["prompt"] != cut else \
            grader.grade(text, row["reference"], finish_reason="length")
        assert trace.reward == grade.score
        assert trace.metrics == expected_metrics(grade, "resume", FIELDS)
        assert trace.info["rftkit"]["resume"]["reason"] == grade.reason
        seen += 1
    assert seen == len(rows) and len({ep.traces[0].reward for ep in episodes}) >= 4
    # What verifiers wrote to its run directory (what `vf-eval` leaves behind) carries the same rewards.
    (written,) = (tmp_path / "outputs").glob("*/traces.jsonl")
    records = [json.loads(line) for line in written.read_text().splitlines()]
    by_idx = {ep.traces[0].task.data.idx: ep.traces[0] for ep in episodes}
    for record in records:
        trace = record["traces"][0]
        live = by_idx[trace["task"]["data"]["idx"]]
        assert trace["rewards"]["resume"]["score"] == pytest.approx(live.reward, abs=1e-6)
        assert set(trace["metrics"]) == set(live.metrics)


def test_vf_eval_command_on_chat_rows(tmp_path: Path) -> None:
    """The ``vf-eval`` command itself, in a subprocess, on rows given as chat messages (a system turn kept as sent)."""
    rows = demo_splits(seed=4, sft=0, train=3, heldout=0).train
    chat_rows = [{"id": f"row-{i}", "messages": [{"role": "system", "content": "Answer with JSON only."},
                                                 {"role": "user", "content": r["prompt"]}], "reference": r["reference"]}
                 for i, r in enumerate(rows)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat_rows))
    (tmp_path / "chat_env.py").write_text(
        "from pathlib import Path\n"
        "from graders.adapters import SingleTurnEnv, SingleTurnHarness, verifiers_taskset\n\n"
        f"ChatTaskset = verifiers_taskset(Path(__file__).parent / 'chat.jsonl', {str(RESUME)!r})\n"
        '__all__ = ["ChatTaskset", "SingleTurnHarness", "SingleTurnEnv"]\n')
    replies = dict(zip((r["prompt"] for r in rows), completions_for(rows)))

    def respond(n: int, request: dict[str, Any]) -> tuple[int, Any]:
        body = request["body"]
        return 200, chat_completion(n, body["model"], replies[body["messages"][-1]["content"]], "stop")

    server = FakeServer(respond)
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from verifiers.v1.cli.eval.main import main; main(sys.argv[1:])",
             "chat_env", "-m", "fake-model", "--client.base-url", f"{server.root}/v1", "--client.api-key-var",
             "RFTKIT_FAKE_KEY", "--no-push", "--no-rich", "-o", str(tmp_path / "outputs")],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["body"]["messages"] for r in server.requests] and all(
        r["body"]["messages"][:1] == [{"role": "system", "content": "Answer with JSON only."}] for r in server.requests)
    (written,) = (tmp_path / "outputs").glob("*/traces.jsonl")
    grader = graders.from_config(RESUME)
    by_id = {r["id"]: r for r in chat_rows}
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert sorted(rec["traces"][0]["task"]["data"]["id"] for rec in records) == sorted(by_id)
    for record in records:
        trace = record["traces"][0]
        row = by_id[trace["task"]["data"]["id"]]
        grade = grader.grade(replies[row["messages"][-1]["content"]], row["reference"])
        assert trace["rewards"]["resume"]["score"] == pytest.approx(grade.score, abs=1e-6)
        assert trace["metrics"] == pytest.approx(expected_metrics(grade, "resume", FIELDS), abs=1e-6)


def test_a_failed_model_call_is_that_rollouts_error(env_module: tuple[str, list[dict[str, Any]]], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A 500 from the model server fails that rollout with the server's message (verifiers then scores nothing for it);
    the other rollouts are graded as usual."""
    from verifiers.v1.cli.eval.runner import run_eval
    from verifiers.v1.configs.cli.eval import EvalConfig

    monkeypatch.delenv("VF_RUN_ID", raising=False)
    name, rows = env_module
    failing = rows[0]["prompt"]

    def respond(n: int, request: dict[str, Any]) -> tuple[int, Any]:
        body = request["body"]
        prompt = body["messages"][-1]["content"]
        if prompt == failing:
            return 500, {"error": {"message": "overloaded", "type": "server_error"}}
        return 200, chat_completion(n, body["model"], rows[[r["prompt"] for r in rows].index(prompt)]["completion"], "stop")

    server = FakeServer(respond)
    try:
        config = EvalConfig.model_validate({
            "env": {"taskset": {"id": name}}, "model": "fake-model", "push": False, "rich": None,
            "client": {"type": "eval", "base_url": f"{server.root}/v1", "api_key_var": "RFTKIT_FAKE_KEY"},
            "output_dir": str(tmp_path / "outputs")})
        episodes = asyncio.run(run_eval(config))
    finally:
        server.close()
    by_prompt = {ep.traces[0].task.data.prompt: ep.traces[0] for ep in episodes}
    failed = by_prompt.pop(failing)
    assert not failed.ok and "overloaded" in failed.errors[-1].message and failed.rewards == {}
    assert all(t.ok and t.reward == 1.0 and t.metrics["resume/error"] == 0.0 for t in by_prompt.values())


def test_task_rebuilt_from_wire_data_grades_alike(env_module: tuple[str, list[dict[str, Any]]]) -> None:
    """verifiers' env servers (what prime-rl runs) rebuild each task from its wire data and the task config alone."""
    from verifiers.v1.utils.loaders import load_taskset, taskset_config_type

    name, rows = env_module
    taskset = load_taskset(taskset_config_type(name)(id=name, task={"reference_key": "reference"}))  # a partial override
    assert taskset.config.task.grader == str(RESUME)  # keeps the module's grader
    task = next(iter(taskset))
    wire = json.loads(json.dumps(task.data.model_dump(mode="json")))  # what travels to the server
    rebuilt = type(taskset).task_type()(task.data_type().model_validate(wire), taskset.config.task)  # EnvServer._build_task
    text = json.dumps({**rows[0]["reference"], "city": "Nowhere"})

    async def score(t: Any) -> Any:
        trace = trace_for(t.data, text)
        await t.score(trace)
        return trace

    original, again = asyncio.run(score(task)), asyncio.run(score(rebuilt))
    assert again.rewards == original.rewards and again.metrics == original.metrics and again.metrics["resume/city"] == 0.0
    assert rebuilt.grader is task.grader  # built once per process for the same config


def test_env_server_as_prime_rl_uses_it(env_module: tuple[str, list[dict[str, Any]]]) -> None:
    """verifiers' env server (``serve_env``, what prime-rl's trainer and evals talk to) in its own process, driven by
    verifiers' ``EnvClient``: the tasks travel as wire data and come back graded as rftkit grades them."""
    import multiprocessing

    from verifiers.v1.serve import EnvClient, env_config_data, serve_env
    from verifiers.v1.utils.loaders import load_taskset, resolve_env_config, taskset_config_type

    name, rows = env_module
    rows = rows[:4]
    replies = dict(zip((r["prompt"] for r in rows), completions_for(rows)))

    def respond(n: int, request: dict[str, Any]) -> tuple[int, Any]:
        body = request["body"]
        return 200, chat_completion(n, body["model"], replies[body["messages"][-1]["content"]], "stop")

    tasks = list(load_taskset(taskset_config_type(name)(id=name)).take(len(rows)))
    context = multiprocessing.get_context("spawn")  # the child gets this sys.path, so it imports the env module too
    addresses = context.Queue()
    server_process = context.Process(target=serve_env, kwargs={
        "max_workers": 1, "address": "tcp://127.0.0.1:0", "address_queue": addresses,
        "config_data": env_config_data(resolve_env_config({"taskset": {"id": name}}))})
    model_server = FakeServer(respond)
    server_process.start()
    try:
        address = addresses.get(timeout=120)

        async def run_all() -> list[Any]:
            client = EnvClient(address)
            try:
                endpoint = vf.EvalClientConfig(base_url=f"{model_server.root}/v1", api_key_var="RFTKIT_FAKE_KEY")
                return list(await asyncio.gather(*(client.run(endpoint, "fake-model", vf.SamplingConfig(),
                                                              t.data.model_dump(mode="json")) for t in tasks)))
            finally:
                await client.close()

        episodes = asyncio.run(run_all())
    finally:
        server_process.terminate()
        server_process.join(30)
        model_server.close()
    grader = graders.from_config(RESUME)
    for task, episode in zip(tasks, episodes):
        (trace,) = episode.traces
        grade = grader.grade(replies[task.data.prompt], task.data.reference)
        assert trace.rewards["resume"].score == grade.score
        assert trace.metrics == expected_metrics(grade, "resume", FIELDS)
