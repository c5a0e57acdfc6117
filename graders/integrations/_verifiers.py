"""Graders in verifiers' environments (``verifiers`` 0.4, the ``verifiers.v1`` API): rewards, metrics, a single-turn taskset.

How verifiers 0.4 scores a rollout (read from its ``Task.score``): the task's ``@vf.reward``
and ``@vf.metric`` methods, and the functions a ``TaskConfig`` plugs in by import path
(``rewards = {name = {fn = "pkg.module:function", weight = 1.0}}``), are awaited with the
arguments each names among ``task`` (the row, a ``TaskData``), ``trace`` (the rollout) and
``runtime``. Metrics run first. A reward is recorded in ``trace.rewards`` with its weight,
and the rollout's reward is ``sum(score * weight)`` over them; a metric is recorded in
``trace.metrics`` and never summed. A function returning a mapping records one entry per key.
(verifiers 0.4 ships only ``verifiers.v1``: the v0 ``Rubric`` of weighted functions and
weight-0 metrics is gone, and so is ``SingleTurnEnv``; rewards and metrics on a Task, and a
single-agent env with a harness, are what replace them.)

What rftkit plugs in there:

* :class:`VerifiersGrader` -- any grader as that pair of functions:
  ``reward(task, trace)`` gives ``{<grader>: score}`` and ``metrics(task, trace)`` gives
  ``<grader>/<field>`` per field, ``<grader>/parse_error`` (1.0 when the reply held no
  readable answer) and ``<grader>/error`` (1.0 when any error flag is set). A score that is
  not finite is recorded as 0 with ``<grader>/error`` set, so no NaN reaches the weighted sum.
  A field named ``parse_error`` or ``error`` is reported as ``<field>_field``.
* :func:`verifiers_taskset` -- a complete single-turn taskset from a dataset file (rows with
  ``prompt`` or ``messages`` and a reference) and a grader config, in one call; with
  :class:`SingleTurnHarness` (one chat completion, in-process) and :class:`SingleTurnEnv`
  (the agent on the local runtime) exported beside it, ``vf-eval <module>`` and prime-rl run it.
* :func:`verifiers_reward` / :func:`verifiers_metrics` -- the same functions for any other
  task, plugged by import path, grading with the config file named by ``$RFTKIT_GRADER``.

The text graded is the rollout's reply (``trace.root_reply``, else the last assistant
message, as sent); a structured grader is given the model call's finish reason, so a reply
cut at the token limit inside its JSON is flagged ``truncated_output_error``. The reference
is the task's ``reference`` field (``reference_key``); an OpenAI-type grader reads the row
as ``{{ item.* }}``. Grading is synchronous CPU work for a structured
grader and runs inline; other graders (which may wait on a sandbox or HTTP) run on a thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import verifiers.v1 as vf
from verifiers.v1.dialects.chat import message_to_wire
from verifiers.v1.errors import MODEL_TRANSPORT_ERROR_EXIT_CODE

from graders import Grade, GraderConfigError
from graders.adapters import GRADER_ENV, field_names
from graders.integrations._common import GraderSource, build_grader
from schemas import UserError, load_jsonl

"""A grader, a config dict, or the path of a JSON config file."""

_FLAG_METRICS = frozenset({"parse_error", "error"})


def reply_of(trace: Any) -> tuple[str, str | None]:
    """The rollout's reply and its finish reason (``"length"`` when cut at the token limit, else None)."""
    if trace.root_reply is not None:
        text = trace.root_reply
    else:
        messages = trace.assistant_messages
        text = (messages[-1].content or "") if messages else ""
    last = next((c for c in reversed(trace.calls) if c.error is None), None)
    return text, ("length" if last is not None and last.finish_reason == "length" else None)


def _task_value(task: Any, key: str) -> tuple[bool, Any]:
    """``task.<key>``, a declared field or an extra one (``WireTaskData``); (False, None) when absent."""
    if key in type(task).model_fields:
        return True, getattr(task, key)
    extra = task.model_extra or {}
    return (True, extra[key]) if key in extra else (False, None)


class VerifiersGrader:
    """A grader as verifiers' reward and metric functions; build it with :func:`verifiers_grader`.

    ``reward`` and ``metrics`` are coroutine functions taking ``task`` and ``trace`` by
    name, as verifiers calls them. ``metrics`` grades and keeps the grade on the trace
    (``trace.info["rftkit"][<grader>]``: score, reason and the error flags set), so the
    reward that follows does not grade again; ``reward`` grades when it finds none.

    >>> vg = verifiers_grader({"type": "structured", "name": "city", "schema": {"type": "object",
    ...     "properties": {"city": {"type": "string"}}}})
    >>> vg.metric_values(vg.grade_text('{"city": "Paris"}', {"city": "Paris"}))
    {'city/city': 1.0, 'city/parse_error': 0.0, 'city/error': 0.0}
    >>> vg.metric_values(vg.grade_text('no JSON here', {"city": "Paris"}))
    {'city/city': 0.0, 'city/parse_error': 1.0, 'city/error': 1.0}
    """

    def __init__(self, grader: GraderSource, *, reference_key: str = "reference", name: str | None = None) -> None:
        self.grader = build_grader(grader)
        self.reference_key = reference_key
        self.name = name or self.grader.name
        """The reward's name, and the metrics' prefix."""
        self._declared = field_names(self.grader)
        self._inline = self.grader.bounded_cost
        """Grade on the event loop (bounded CPU work, no I/O) rather than on a thread."""

    # ----------------------------------------------------------------- grading

    def grade_text(self, text: str, reference: Any, item: Mapping[str, Any] | None = None, *,
                   finish_reason: str | None = None) -> Grade:
        """Grade one reply as :func:`graders.grade_batch` does: the row-level call, the reference inside the item.

        ``finish_reason`` travels in the sample, where a structured grader reads it (a cut reply is flagged truncated)."""
        sample: str | dict[str, Any] = text if finish_reason is None else {"output_text": text, "finish_reason": finish_reason}
        return self.grader.grade_row(sample, {**(item or {}), "reference": reference})

    def _grade_args(self, task: Any, trace: Any) -> tuple[str, Any, dict[str, Any], str | None]:
        found, reference = _task_value(task, self.reference_key)
        if not found and self.grader.needs_reference:
            raise GraderConfigError(f"the task has no {self.reference_key!r} field to grade against", code="missing_reference",
                                    pointer=f"/{self.reference_key}",
                                    hint="give each row a reference, or verifiers_grader(reference_key=...) naming its field")
        _, item = _task_value(task, "item")
        text, finish = reply_of(trace)
        return text, reference, dict(item or {}), finish

    async def grade(self, task: Any, trace: Any) -> Grade:
        """The grade of one rollout (a structured grader inline, any other on a thread)."""
        text, reference, item, finish = self._grade_args(task, trace)
        if self._inline:
            return self.grade_text(text, reference, item, finish_reason=finish)
        return await asyncio.to_thread(self.grade_text, text, reference, item, finish_reason=finish)

    # ----------------------------------------------------------------- what verifiers records

    def _key(self, field: str) -> str:
        return f"{self.name}/{field}_field" if field in _FLAG_METRICS else f"{self.name}/{field}"

    def metric_values(self, grade: Grade) -> dict[str, float]:
        """The metrics of one grade: a finite score per field, then the parse-error and error flags (1.0 or 0.0)."""
        scores = ({f: grade.sub_scores.get(f, 0.0) for f in self._declared} if self._declared
                  else {k or "value": v for k, v in grade.sub_scores.items()})
        out: dict[str, float] = {}
        broken = not math.isfinite(grade.score)
        for field, value in scores.items():
            finite = math.isfinite(value)
            broken |= not finite
            out[self._key(field)] = value if finite else 0.0
        out[f"{self.name}/parse_error"] = float(grade.errors.get("sample_parse_error", False))
        out[f"{self.name}/error"] = float(broken or not grade.ok)
        return out

    def reward_value(self, grade: Grade) -> float:
        """The grade's score, or 0.0 where it is not finite (the error metric says so)."""
        return grade.score if math.isfinite(grade.score) else 0.0

    def _record(self, trace: Any, grade: Grade) -> None:
        flags = sorted(k for k, v in grade.errors.items() if v)
        trace.info.setdefault("rftkit", {})[self.name] = {"score": self.reward_value(grade), "reason": grade.reason,
                                                           "errors": flags}

    async def metrics(self, task: Any, trace: Any) -> dict[str, float]:
        """verifiers' metric function: ``<grader>/<field>``, ``<grader>/parse_error``, ``<grader>/error``."""
        grade = await self.grade(task, trace)
        self._record(trace, grade)
        return self.metric_values(grade)

    async def reward(self, task: Any, trace: Any) -> dict[str, float]:
        """verifiers' reward function: ``{<grader>: score}`` (the grade :meth:`metrics` kept, else a new one)."""
        kept = trace.info.get("rftkit", {}).get(self.name)
        if kept is None:
            grade = await self.grade(task, trace)
            self._record(trace, grade)
            return {self.name: self.reward_value(grade)}
        return {self.name: kept["score"]}

    def __deepcopy__(self, memo: dict[int, Any]) -> VerifiersGrader:
        return self  # graders are values: a task copied by verifiers (defer_scoring) shares it

    def __repr__(self) -> str:
        return f"VerifiersGrader({self.name!r}, reference_key={self.reference_key!r})"


def verifiers_grader(grader: GraderSource, *, reference_key: str = "reference", name: str | None = None) -> VerifiersGrader:
    """Any rftkit grader (object, config dict or config path) as verifiers' ``reward`` and ``metrics`` functions.

    ``reference_key`` names the task field holding the reference; ``name`` (default:
    the grader's name) names the reward and prefixes the metrics.
    """
    return VerifiersGrader(grader, reference_key=reference_key, name=name)


# --------------------------------------------------------------------------- plugged by import path


@lru_cache(maxsize=8)
def _cached(path: str) -> VerifiersGrader:
    return VerifiersGrader(path)


def _from_env() -> VerifiersGrader:
    source = os.environ.get(GRADER_ENV)
    if not source:
        raise GraderConfigError("no grader config: the plugged verifiers functions read the file named by $RFTKIT_GRADER",
                                code="no_grader", hint="export RFTKIT_GRADER=/path/to/grader.json")
    return _cached(str(Path(source).resolve()))


async def verifiers_reward(task: Any, trace: Any) -> dict[str, float]:
    """A reward to plug into any verifiers task: ``rewards = {rftkit = {fn = "graders.adapters:verifiers_reward"}}``.

    Grades with the config file named by ``$RFTKIT_GRADER`` (built once per process);
    the task needs a ``reference`` field.
    """
    return await _from_env().reward(task, trace)


async def verifiers_metrics(task: Any, trace: Any) -> dict[str, float]:
    """The per-field metrics to plug beside :func:`verifiers_reward`: ``metrics = {rftkit = {fn = "graders.adapters:verifiers_metrics"}}``."""
    return await _from_env().metrics(task, trace)


# --------------------------------------------------------------------------- a single-turn taskset


class VerifiersTaskData(vf.TaskData):  # type: ignore[misc]  # verifiers ships no type information
    """One dataset row as a verifiers task: the prompt, the reference and, for OpenAI-type graders, the row (``{{ item.* }}``)."""

    reference: Any = None
    item: dict[str, Any] = {}


class VerifiersTaskConfig(vf.TaskConfig):  # type: ignore[misc]  # verifiers is untyped
    """How each task is graded (``--env.taskset.task.grader``, ``--env.taskset.task.reference-key``).

    The grader lives in the task's config because verifiers' env servers (what prime-rl
    runs) rebuild every task from its data and this config alone.
    """

    grader: str | dict[str, Any] | None = None
    """The grader: the path of its JSON config, or the config itself."""
    reference_key: str = "reference"
    """The row key holding the reference (the item's ``reference`` for OpenAI-type graders)."""


@lru_cache(maxsize=16)
def _grader_for(source: str, reference_key: str) -> VerifiersGrader:
    grader = json.loads(source)
    return VerifiersGrader(grader, reference_key=reference_key)


def grader_of(config: VerifiersTaskConfig) -> VerifiersGrader:
    """The grader a task config names, built once per process for each distinct config."""
    if config.grader is None:
        raise GraderConfigError("the task config names no grader", code="no_grader", pointer="/taskset/task/grader",
                                hint="--env.taskset.task.grader grader.json, or build the taskset with verifiers_taskset(dataset, grader)")
    return _grader_for(json.dumps(config.grader, sort_keys=True), config.reference_key)


class VerifiersTask(vf.Task[VerifiersTaskData, vf.State, VerifiersTaskConfig]):  # type: ignore[misc]  # verifiers is untyped
    """A row graded by an rftkit grader: one weighted reward named after the grader, and its metrics.

    The grader is the one ``config.grader`` names (checked at construction), or
    ``grader=`` when given (a grader object that has no config, for Python use).
    """

    def __init__(self, data: VerifiersTaskData, config: VerifiersTaskConfig | None = None, *,
                 grader: VerifiersGrader | None = None) -> None:
        super().__init__(data, config)
        self.grader = grader if grader is not None else grader_of(self.config)

    @vf.metric  # type: ignore[untyped-decorator]  # verifiers is untyped
    async def rftkit_metrics(self, task: VerifiersTaskData, trace: Any) -> dict[str, float]:
        return await self.grader.metrics(task, trace)

    @vf.reward(weight=1.0)  # type: ignore[untyped-decorator]  # verifiers is untyped
    async def rftkit_reward(self, task: VerifiersTaskData, trace: Any) -> dict[str, float]:
        return await self.grader.reward(task, trace)


class VerifiersTasksetConfig(vf.TasksetConfig):  # type: ignore[misc]  # verifiers is untyped
    """The rows (``--env.taskset.dataset``) and how each is graded (``--env.taskset.task.*``)."""

    dataset: Path | None = None
    """A JSONL file: each row has ``prompt`` (a string) or ``messages`` (chat messages), and a reference."""
    task: VerifiersTaskConfig = VerifiersTaskConfig()
    """The grader and the reference key, given to every task."""


def _task_data(row: dict[str, Any], line: int, path: Path, reference_key: str, needs_reference: bool) -> VerifiersTaskData:
    """The task of one row; a grader that reads the item gets the row (one that needs a reference reads only that)."""
    where = f"{path}: row {line}"
    prompt = row.get("prompt", row.get("messages"))
    if isinstance(prompt, str):
        pass
    elif isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) and "role" in m for m in prompt):
        pass
    else:
        raise UserError(f"{where}: needs 'prompt' (a string) or 'messages' (a list of chat messages with roles)",
                        code="missing_prompt", pointer=f"/{line}", hint="rftkit validate lists every bad row of a dataset")
    if needs_reference and reference_key not in row:
        raise UserError(f"{where}: no {reference_key!r} to grade against", code="missing_reference",
                        pointer=f"/{line}/{reference_key}", hint="give every row its reference, or set reference_key")
    rid = row.get("id")
    return VerifiersTaskData(prompt=prompt, id=None if rid is None else str(rid), reference=row.get(reference_key),
                             item={} if needs_reference else row)


class VerifiersTaskset(vf.Taskset[VerifiersTask, VerifiersTasksetConfig]):  # type: ignore[misc]  # verifiers is untyped
    """The rows of an rftkit dataset file, each a :class:`VerifiersTask`; the grader is built (and checked) at construction."""

    def __init__(self, config: VerifiersTasksetConfig) -> None:
        super().__init__(config)
        if not isinstance(config, VerifiersTasksetConfig):
            raise GraderConfigError(f"{type(self).__name__} takes a VerifiersTasksetConfig, got {type(config).__name__}",
                                    code="wrong_type", pointer="/taskset",
                                    hint="load it by id, as vf-eval does (taskset_config_type(id)(id=id)), or pass VerifiersTasksetConfig(...)")
        if config.dataset is None:
            raise GraderConfigError("a verifiers taskset needs a dataset file", code="missing_setting", pointer="/taskset/dataset",
                                    hint="--env.taskset.dataset rows.jsonl, or build the class with verifiers_taskset(dataset, grader)")
        self.grader = grader_of(config.task)

    def load(self) -> Iterable[VerifiersTask]:
        path = Path(self.config.dataset)
        needs_reference = self.grader.grader.needs_reference
        for line, row in enumerate(load_jsonl(path, pointer="/taskset/dataset"), 1):
            data = _task_data(row, line, path, self.config.task.reference_key, needs_reference)
            yield VerifiersTask(data, self.config.task)


def verifiers_taskset(dataset: str | Path, grader: str | Path | Mapping[str, Any], *,
                      reference_key: str = "reference") -> type[VerifiersTaskset]:
    """A verifiers taskset class for an rftkit dataset file and grader: the one call an environment module makes.

    In a module on the path (its name is the environment's id), for example ``resume_env.py``::

        from graders.adapters import SingleTurnEnv, SingleTurnHarness, verifiers_taskset

        ResumeTaskset = verifiers_taskset("resume.jsonl", "grader.json")
        __all__ = ["ResumeTaskset", "SingleTurnHarness", "SingleTurnEnv"]

    (verifiers finds the taskset, its default harness and its env in ``__all__``), then
    ``vf-eval resume_env -m <model>`` evaluates it, and prime-rl trains on it by that id.
    The dataset, grader and reference key become the defaults of ``--env.taskset.dataset``,
    ``--env.taskset.task.grader`` and ``--env.taskset.task.reference-key``. Relative paths
    are resolved here, against the working directory. The grader config is checked here,
    so a bad one raises at once.
    """
    path = Path(dataset)
    if not path.is_file():
        raise UserError(f"no dataset file at {path}", code="dataset_not_found", pointer="/dataset", hint="pass the path of a JSONL file")
    source: str | dict[str, Any] = str(Path(grader).resolve()) if isinstance(grader, (str, Path)) else dict(grader)
    grader_of(VerifiersTaskConfig(grader=source, reference_key=reference_key))  # a bad config raises here, not in a rollout
    default_dataset, default_grader, default_key = path.resolve(), source, reference_key

    # Defaults on the classes, not on instances, so a partial override (one --env.taskset.task.* flag) keeps the rest.
    class TaskConfig(VerifiersTaskConfig):
        grader: str | dict[str, Any] | None = default_grader
        reference_key: str = default_key

    class Config(VerifiersTasksetConfig):
        dataset: Path | None = default_dataset
        task: TaskConfig = TaskConfig()

    class Taskset(VerifiersTaskset, vf.Taskset[VerifiersTask, Config]):  # type: ignore[misc]  # verifiers is untyped
        pass

    Taskset.__name__ = Taskset.__qualname__ = VerifiersTaskset.__name__
    return Taskset


# --------------------------------------------------------------------------- the single-turn harness


class SingleTurnHarnessConfig(vf.HarnessConfig):  # type: ignore[misc]  # verifiers is untyped
    """The single-turn harness takes no settings of its own (sampling is the run's ``--sampling.*``)."""


class SingleTurnHarness(vf.Harness[SingleTurnHarnessConfig]):  # type: ignore[misc]  # verifiers is untyped
    """One chat completion per task, in this process: the prompt (and system prompt) in, the reply out.

    verifiers' own harnesses run a program in the rollout's runtime (installed with
    ``uv``); a single-turn task needs none, so this one posts the request to the
    rollout's interception endpoint itself, which is what verifiers records, forwards
    to the model server and scores. Export it from the environment module beside the
    taskset (``__all__``) so it is the taskset's default harness.
    """

    APPENDS_SYSTEM_PROMPT = True
    EXECUTES_CODE = False
    NEEDS_CONTAINER = False

    async def launch(self, ctx: Any, trace: Any, runtime: Any, endpoint: str, secret: str, mcp_urls: dict[str, str],
                     data: Any, tool_interception_url: str | None = None) -> Any:
        system, prompt = self.resolve_prompt(data)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        if isinstance(prompt, str):
            messages.append({"role": "user", "content": prompt})
        else:
            messages.extend(message_to_wire(m) for m in prompt or [])
        try:
            async with httpx.AsyncClient(timeout=None) as client:  # the rollout's agent timeout bounds the call
                response = await client.post(f"{endpoint.rstrip('/')}/chat/completions", json={"model": ctx.model, "messages": messages},
                                             headers={"Authorization": f"Bearer {secret}"})
        except httpx.TransportError as exc:
            return vf.ProgramResult(MODEL_TRANSPORT_ERROR_EXIT_CODE, "", f"model call failed: {exc!r}")
        if response.status_code >= 400:
            return vf.ProgramResult(1, "", f"model call answered {response.status_code}: {response.text[:2000]}")
        return vf.ProgramResult(0, response.text, "")


class SingleTurnEnvConfig(vf.SingleAgentEnvConfig):  # type: ignore[misc]  # verifiers is untyped
    """The single-agent env's config, with the agent on the local ``subprocess`` runtime by default.

    verifiers defaults every agent to a remote Prime sandbox; the single-turn harness
    runs nothing in its runtime, so the local one is enough (``--env.agent.runtime.type``
    still chooses another).
    """

    agent: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())


class SingleTurnEnv(vf.SingleAgentEnv, vf.Env[SingleTurnEnvConfig]):  # type: ignore[misc]  # verifiers is untyped
    """verifiers' single-agent env over :class:`SingleTurnEnvConfig`: export it beside the taskset and the harness."""
