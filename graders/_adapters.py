"""Adapters: any rftkit grader as a TRL reward function, a verl ``compute_score`` or an OpenRLHF ``reward_func``.

Each adapter turns a grader (a :class:`StructuredGrader`, an OpenAI-type grader,
a ``multi``, or the config of one) into the calling convention of one trainer.
None imports torch or the trainer: the OpenRLHF adapter imports torch inside the
call, and only where it is installed.

How each trainer's row reaches the grader:

=========  ==========================================  ===========================================
trainer    the model's text                            the reference (and the item)
=========  ==========================================  ===========================================
TRL        ``completions[i]`` (a string, or the last   ``kwargs[reference_column][i]``; the item is
           assistant message of a chat list)           row i of every dataset column
verl       ``solution_str`` (already without prompt)   ``ground_truth`` (a dict or a JSON string)
OpenRLHF   ``queries[i]`` minus the prompt             ``labels[i]``; the item: see below
=========  ==========================================  ===========================================

A :class:`StructuredGrader` grades ``(text, reference)``; the other graders grade
``(text, item)`` where the item holds the reference under ``"reference"`` (so the
default ``{{ item.reference }}`` template of a structured sub-grader finds it).

**Labels as items (OpenRLHF, verl).** These trainers hand the reward one column
per row (OpenRLHF's ``--data.label_key``, verl's ``ground_truth``), not the row.
A config migrated from OpenAI reads the row's fields (``{{ item.label }}``,
``{{ item.reference_answer }}``), so when that column holds an object, or its
JSON text, the object's keys are the item's keys, next to ``prompt`` (OpenRLHF),
``data_source`` and ``extra_info`` (verl) and ``reference`` (the column as
given); a key of the object wins over those (:func:`label_item`).

**Which grader verl and OpenRLHF use.** Those trainers load a function from a
file by name, so the grader cannot be passed as an argument. The module-level
functions read the config file named by the environment variable
``RFTKIT_GRADER`` (or by a ``grader=`` keyword, which verl's
``custom_reward_function.reward_kwargs`` can pass), build it once per process
and cache it. The factories (:func:`trl_reward`, :func:`verl_compute_score`)
take the grader directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from schemas import UserError

from ._config import AnyGrader, from_config
from ._errors import GraderConfigError
from ._openai import MultiGrader
from ._result import Grade
from ._structured import StructuredGrader, _Object

GRADER_ENV = "RFTKIT_GRADER"
"""The environment variable naming the grader config file that verl and OpenRLHF use."""

GraderSource = AnyGrader | Mapping[str, Any] | str | Path
"""A grader, a config dict, or the path of a JSON config file."""

_NOT_COLUMNS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"})


class _Hook(Protocol):
    def __call__(self, name: str, value: Any, /) -> Any: ...


# --------------------------------------------------------------------------- shared stages


def _build(source: GraderSource) -> AnyGrader:
    """The grader itself, or the one a config describes."""
    if isinstance(source, (Mapping, str, Path)):
        return from_config(source)
    if not hasattr(source, "grade") or not hasattr(source, "config"):
        raise GraderConfigError(f"expected a grader, a config dict or a config path, got {type(source).__name__}",
                                code="wrong_type", hint="pass StructuredGrader(...), a dict with a 'type', or a JSON file path")
    return source


def field_names(grader: AnyGrader) -> list[str]:
    """The fields a grader reports on every row: a structured schema's top-level properties, a multi's sub-graders.

    Empty when the grader does not declare them (a schema-less structured grader
    reports the reference's fields, which may differ from row to row).

    >>> field_names(StructuredGrader({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}))
    ['a', 'b']
    """
    if isinstance(grader, StructuredGrader) and isinstance(grader._root, _Object):
        return list(grader._root.fields)
    if isinstance(grader, MultiGrader):
        return list(grader.graders)
    return []


def _grade(grader: AnyGrader, text: str, reference: Any, item: Mapping[str, Any]) -> Grade:
    if isinstance(grader, StructuredGrader):
        return grader.grade(text, reference)
    return grader.grade(text, {**item, "reference": reference})


def label_item(label: Any, base: Mapping[str, Any]) -> dict[str, Any]:
    """The item an OpenAI-type grader reads for a row whose trainer passes only its label (the reference column).

    ``base`` holds what the trainer knows besides (OpenRLHF: the prompt); the
    label is the item's ``reference``; when it is an object, or the JSON text of
    one, its keys are item keys too, and win over the others (they are the row's own).

    >>> label_item('{"label": "positive"}', {"prompt": "p"})
    {'prompt': 'p', 'reference': '{"label": "positive"}', 'label': 'positive'}
    >>> label_item("42", {"prompt": "p"})
    {'prompt': 'p', 'reference': '42'}
    """
    item = {**base, "reference": label}
    fields: Any = label
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            fields = json.loads(label)
        except (ValueError, RecursionError):  # not JSON after all: the label is only the reference
            fields = None
    if isinstance(fields, Mapping):
        item.update(fields)
    return item


def _field_scores(grade: Grade, declared: list[str]) -> dict[str, float]:
    """One score per field; with declared fields every row has the same keys (a failed parse scores them 0)."""
    if declared:
        return {f: grade.sub_scores.get(f, 0.0) for f in declared}
    return {k or "value": v for k, v in grade.sub_scores.items()}


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The model's text from a TRL completion: the string itself, or the last assistant message's content.

    A chat list without roles (TRL's own examples use ``[{"content": ...}]``)
    gives its last message. Content given as parts keeps the text parts, joined.

    >>> completion_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{}"}])
    '{}'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    'ab'
    """
    if isinstance(completion, str):
        return completion
    messages = list(completion)
    if not messages:
        return ""
    chosen = next((m for m in reversed(messages) if m.get("role") == "assistant"), messages[-1])
    content = chosen.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "" if content is None else str(content)


# --------------------------------------------------------------------------- TRL


class TrlReward:
    """A grader as a TRL reward function (``GRPOTrainer`` / ``RLOOTrainer``, 1.x); build it with :func:`trl_reward`.

    Called with keyword arguments only, as TRL calls reward functions. Row i is
    graded from ``completions[i]`` against ``kwargs[reference_column][i]``; a row
    whose reference is None gets None (TRL's "this reward does not apply here").
    When TRL passes its hooks, each field's batch mean goes to
    ``log_metric("reward/<name>/<field>", mean)`` with the share of flagged rows
    as ``reward/<name>/error_rate``, and the per-row field scores and reasons go to
    ``log_extra("reward/<name>/<field>", values)`` (the completions table).

    It pickles as its config (TRL's async trainer grades in another process).

    >>> reward = trl_reward({"type": "structured", "name": "city"})
    >>> reward(prompts=["p"], completions=['{"city": "Paris"}'], reference=[{"city": "Paris"}])
    [1.0]
    """

    def __init__(self, grader: GraderSource, *, reference_column: str = "reference", name: str | None = None) -> None:
        self.grader = _build(grader)
        self.reference_column = reference_column
        self.__name__ = name or self.grader.name
        """TRL logs this function's rewards as ``rewards/<__name__>/mean``."""
        self._declared = field_names(self.grader)

    def __call__(self, *, completions: Sequence[str | Sequence[Mapping[str, Any]]], log_extra: _Hook | None = None,
                 log_metric: _Hook | None = None, **kwargs: Any) -> list[float | None]:
        n = len(completions)
        has_reference = self.reference_column in kwargs
        if not has_reference and isinstance(self.grader, StructuredGrader):
            names = sorted(k for k in kwargs if k not in _NOT_COLUMNS)
            raise GraderConfigError(f"the dataset has no {self.reference_column!r} column", code="missing_column",
                                    hint=f"columns TRL passed: {names}; give trl_reward(reference_column=...)")
        columns = {k: v for k, v in kwargs.items() if k not in _NOT_COLUMNS and isinstance(v, Sequence)
                   and not isinstance(v, str) and len(v) == n}
        refs: Sequence[Any] = kwargs[self.reference_column] if has_reference else [None] * n
        grades: list[Grade | None] = []
        for i, completion in enumerate(completions):
            if has_reference and refs[i] is None:
                grades.append(None)  # not this grader's row
                continue
            item = {k: v[i] for k, v in columns.items()}
            grades.append(_grade(self.grader, completion_text(completion), refs[i], item))
        if log_metric is not None or log_extra is not None:
            self._log(grades, log_metric, log_extra)
        return [None if g is None else g.score for g in grades]

    def _log(self, grades: list[Grade | None], log_metric: _Hook | None, log_extra: _Hook | None) -> None:
        rows = [None if g is None else _field_scores(g, self._declared) for g in grades]
        fields = list(dict.fromkeys(f for r in rows if r is not None for f in r))
        prefix = f"reward/{self.__name__}"
        graded = [g for g in grades if g is not None]
        if log_metric is not None and graded:
            for f in fields:
                values = [r.get(f, 0.0) for r in rows if r is not None]
                log_metric(f"{prefix}/{f}", sum(values) / len(values))
            log_metric(f"{prefix}/error_rate", sum(not g.ok for g in graded) / len(graded))
        if log_extra is not None:
            for f in fields:
                log_extra(f"{prefix}/{f}", [None if r is None else r.get(f, 0.0) for r in rows])
            log_extra(f"{prefix}/reason", [None if g is None else g.reason for g in grades])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_trl, (self.grader.config(), self.reference_column, self.__name__))

    def __repr__(self) -> str:
        return f"TrlReward({self.__name__!r}, reference_column={self.reference_column!r})"


def _rebuild_trl(config: dict[str, Any], reference_column: str, name: str) -> TrlReward:
    return TrlReward(config, reference_column=reference_column, name=name)


def trl_reward(grader: GraderSource, *, reference_column: str = "reference", name: str | None = None) -> TrlReward:
    """A TRL reward function that grades with ``grader``: pass it in ``GRPOTrainer(reward_funcs=[...])``.

    ``reference_column`` names the dataset column holding each row's reference;
    ``name`` (default: the grader's name) is the function's ``__name__``, which
    TRL and the ``reward/<name>/<field>`` log keys use.
    """
    return TrlReward(grader, reference_column=reference_column, name=name)


# --------------------------------------------------------------------------- verl


def _verl_key(field: str) -> str:
    return "score_field" if field == "score" else field


def _verl_result(grader: AnyGrader, declared: list[str], solution_str: str, ground_truth: Any,
                 data_source: Any, extra_info: Mapping[str, Any] | None) -> dict[str, float]:
    if ground_truth is None:
        raise GraderConfigError("ground_truth is None: every verl row needs reward_model.ground_truth",
                                code="missing_reference", hint="store the reference in each row's reward_model.ground_truth")
    base = {"data_source": data_source, "extra_info": dict(extra_info or {})}
    grade = (grader.grade(solution_str, ground_truth) if isinstance(grader, StructuredGrader)
             else grader.grade(solution_str, label_item(ground_truth, base)))
    out = {"score": grade.score}
    out.update({_verl_key(f): v for f, v in _field_scores(grade, declared).items()})
    return out


class VerlComputeScore:
    """A grader as verl's ``compute_score``; build it with :func:`verl_compute_score`.

    Returns ``{"score": s, <field>: ...}``: verl rewards with ``score`` and logs
    the other keys. verl needs the same keys on every row, which a schema (or a
    ``multi``) guarantees; a field named ``score`` is reported as ``score_field``.
    :meth:`score_async` is the same as a coroutine, for verl's async reward loop.

    >>> compute_score = verl_compute_score({"type": "structured", "schema": {"type": "object",
    ...     "properties": {"city": {"type": "string"}}}})
    >>> compute_score(data_source="d", solution_str='{"city": "Paris"}', ground_truth='{"city": "Paris"}')
    {'score': 1.0, 'city': 1.0}
    """

    def __init__(self, grader: GraderSource) -> None:
        self.grader = _build(grader)
        self._declared = field_names(self.grader)
        self.__name__ = "compute_score"

    def __call__(self, data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                 extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
        return _verl_result(self.grader, self._declared, solution_str, ground_truth, data_source, extra_info)

    async def score_async(self, data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                          extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
        """The async variant (grading is CPU work of microseconds, so it runs inline)."""
        return _verl_result(self.grader, self._declared, solution_str, ground_truth, data_source, extra_info)

    def __reduce__(self) -> tuple[Any, ...]:
        return (VerlComputeScore, (self.grader.config(),))


def verl_compute_score(grader: GraderSource) -> VerlComputeScore:
    """A verl ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`` for ``grader``.

    In the file that ``custom_reward_function.path`` names:
    ``compute_score = verl_compute_score("grader.json")`` (or
    ``compute_score = verl_compute_score(...).score_async`` for the async loop).
    """
    return VerlComputeScore(grader)


@lru_cache(maxsize=8)
def _cached(path: str) -> VerlComputeScore:
    return VerlComputeScore(path)


def _from_env(grader: str | None) -> VerlComputeScore:
    source = grader or os.environ.get(GRADER_ENV)
    if not source:
        raise GraderConfigError("no grader config: the adapter reads the file named by $RFTKIT_GRADER", code="no_grader",
                                hint="export RFTKIT_GRADER=/path/to/grader.json (verl: or reward_kwargs.grader=...)")
    return _cached(str(Path(source).resolve()))


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                  extra_info: Mapping[str, Any] | None = None, *, grader: str | None = None,
                  **kwargs: Any) -> dict[str, float]:
    """verl's ``compute_score``, grading with the config named by ``grader=`` or ``$RFTKIT_GRADER`` (cached)."""
    return _from_env(grader)(data_source, solution_str, ground_truth, extra_info)


async def compute_score_async(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                              extra_info: Mapping[str, Any] | None = None, *, grader: str | None = None,
                              **kwargs: Any) -> dict[str, float]:
    """The async :func:`compute_score` (verl picks async reward functions by ``inspect.iscoroutinefunction``)."""
    return await _from_env(grader).score_async(data_source, solution_str, ground_truth, extra_info)


# --------------------------------------------------------------------------- OpenRLHF

_ASSISTANT_OPENERS = (
    "<|im_start|>assistant",  # ChatML (Qwen)
    "<|start_header_id|>assistant<|end_header_id|>",  # Llama 3
    "<start_of_turn>model",  # Gemma
    "<|assistant|>",  # Phi, Zephyr
    "<｜Assistant｜>",  # DeepSeek
    "[/INST]",  # Llama 2, Mistral
)
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<eos>",
                "<|end|>", "<｜end▁of▁sentence｜>", "<|eom_id|>")


def _strip_end(text: str) -> str:
    """``text`` without the end-of-turn markers and whitespace it ends with, in any mix.

    Stripped from the right, one marker or run of whitespace at a time: no marker
    ends with another marker or with whitespace, so at most one thing can be
    stripped at each step, and this removes the longest such tail (what a
    ``(?:marker|\\s)+\\Z`` regex removes, without its search trying every start position).

    >>> _strip_end("{} <|im_end|>\\n<|endoftext|></s>  ")
    '{}'
    """
    while True:
        text = text.rstrip()
        if not text.endswith(_END_CHARS):
            return text
        for marker in _END_MARKERS:
            if text.endswith(marker):
                text = text[: len(text) - len(marker)]
                break
        else:
            return text


_END_CHARS = tuple(sorted({m[-1] for m in _END_MARKERS}))


def response_from_query(query: str, prompt: str) -> str:
    """The response inside an OpenRLHF query (prompt and response decoded with template markup).

    The rule: (1) when the prompt occurs in the query, the response is what
    follows its first occurrence (left padding before it is skipped); (2)
    otherwise (the tokenizer's round trip changed the prompt text), it is what
    follows the last assistant-turn opener of a known chat template (ChatML,
    Llama 3, Gemma, Phi, DeepSeek, Llama 2); (3) failing both, the whole query.
    End-of-turn and padding tokens (``<|im_end|>``, ``<|eot_id|>``, ``</s>``...)
    and whitespace are then stripped from the end.

    >>> response_from_query("<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n{}<|im_end|><|endoftext|>",
    ...                     "<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n")
    '{}'
    >>> response_from_query("<|im_start|>user\\nhi <|im_end|>\\n<|im_start|>assistant\\n{}<|im_end|>", "changed")
    '{}'
    """
    start = query.find(prompt) if prompt else -1
    if start >= 0:
        text = query[start + len(prompt):]
    else:
        cut = max(((query.rfind(o), o) for o in _ASSISTANT_OPENERS), key=lambda p: p[0])
        text = query[cut[0] + len(cut[1]):] if cut[0] >= 0 else query
    return _strip_end(text).lstrip("\n")


def _tensor_or_list(values: list[float]) -> Any:
    """A float tensor where torch is installed (what OpenRLHF's reward_func template returns), else the list."""
    try:
        import torch
    except ImportError:
        return values
    return torch.tensor(values, dtype=torch.float32)


def openrlhf_rewards(grader: AnyGrader, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], *,
                     declared: list[str] | None = None) -> dict[str, Any]:
    """OpenRLHF's ``{"rewards", "scores", "extra_logs"}`` for one batch, as plain lists.

    Row i's response is recovered from ``queries[i]`` by :func:`response_from_query`
    and graded against ``labels[i]``; an OpenAI-type grader reads the item
    :func:`label_item` builds (``{"prompt", "reference"}`` and, when the label is
    an object or its JSON text, the object's keys). A label the grader cannot grade raises
    :class:`UserError` with the pointer ``/labels/<i>``. ``declared`` is
    :func:`field_names` of the grader, when the caller has it already.
    """
    fields_declared = field_names(grader) if declared is None else declared
    grades = []
    structured = isinstance(grader, StructuredGrader)
    for i, (q, p, label) in enumerate(zip(queries, prompts, labels)):
        try:
            text = response_from_query(q, p)
            grades.append(grader.grade(text, label) if structured else grader.grade(text, label_item(label, {"prompt": p})))
        except UserError as exc:
            raise type(exc)(exc.message, code=exc.code, pointer=f"/labels/{i}{exc.pointer}", hint=exc.hint) from None
    scores = [x.score for x in grades]
    if fields_declared and grades:  # every row has every declared field (see _field_scores): one column each
        extra = {f"reward/{grader.name}/{f}": [x.sub_scores.get(f, 0.0) for x in grades] for f in fields_declared}
    else:
        rows = [_field_scores(x, fields_declared) for x in grades]
        fields = list(dict.fromkeys(f for r in rows for f in r))
        extra = {f"reward/{grader.name}/{f}": [r.get(f, 0.0) for r in rows] for f in fields}
    return {"rewards": scores, "scores": list(scores), "extra_logs": extra}


def openrlhf_reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], *,
                         grader: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's ``reward_func(queries, prompts, labels)``, grading with ``$RFTKIT_GRADER`` (cached).

    Returns ``{"rewards", "scores", "extra_logs"}`` (see :func:`openrlhf_rewards`):
    the rewards and the scores (both the grade, in [0, 1]) and, in ``extra_logs``,
    one per-sample series per field under ``reward/<name>/<field>``. Each is a
    float tensor where torch is installed (as OpenRLHF's template returns), else a list.
    """
    scorer = _from_env(grader)
    out = openrlhf_rewards(scorer.grader, queries, prompts, labels, declared=scorer._declared)
    return {"rewards": _tensor_or_list(out["rewards"]), "scores": _tensor_or_list(out["scores"]),
            "extra_logs": {k: _tensor_or_list(v) for k, v in out["extra_logs"].items()}}
