"""The trainer adapters, called exactly as TRL, verl and OpenRLHF call them (no trainer installed or run)."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import graders.adapters as adapters
from graders import GraderConfigError, StructuredGrader, from_config
from graders.adapters import compute_score, compute_score_async, openrlhf_reward_func, trl_reward, verl_compute_score
from graders.openai import OpenAIGrader

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "year": {"type": "integer"}}}
CONFIG = {"type": "structured", "name": "place", "schema": SCHEMA}
GOOD = '{"city": "Paris", "year": 1889}'
HALF = '{"city": "Paris", "year": 1900}'
REF = {"city": "Paris", "year": 1889}


class Hooks:
    """Captures TRL's log_metric(name, value) and log_extra(column, values) calls."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.extra: dict[str, list[Any]] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name] = value

    def log_extra(self, column: str, values: list[Any]) -> None:
        self.extra[column] = values


def trl_call(reward: Any, completions: list[Any], references: list[Any], hooks: Hooks | None = None) -> Any:
    """The keyword arguments GRPOTrainer passes: prompts, completions, completion_ids, columns, trainer_state, hooks."""
    n = len(completions)
    kwargs: dict[str, Any] = {"prompts": ["Where is the tower?"] * n, "completions": completions,
                              "completion_ids": [[1, 2, 3]] * n, "reference": references, "difficulty": ["easy"] * n,
                              "trainer_state": object()}
    if hooks is not None:
        kwargs.update(log_metric=hooks.log_metric, log_extra=hooks.log_extra)
    return reward(**kwargs)


# --------------------------------------------------------------------------- TRL


def test_trl_string_and_chat_completions() -> None:
    reward = trl_reward(CONFIG)
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": HALF}]
    assert trl_call(reward, [GOOD, chat, "not json"], [REF, REF, json.dumps(REF)]) == [1.0, 0.5, 0.0]
    assert reward.__name__ == "place"
    assert trl_reward(CONFIG, name="other").__name__ == "other"


def test_trl_none_only_where_the_reference_is_none() -> None:
    assert trl_call(trl_reward(CONFIG), [GOOD, GOOD], [None, REF]) == [None, 1.0]


def test_trl_hooks_receive_field_means_and_per_row_breakdown() -> None:
    hooks = Hooks()
    rewards = trl_call(trl_reward(CONFIG), [GOOD, HALF, "oops", GOOD], [REF, REF, REF, None], hooks)
    assert rewards == [1.0, 0.5, 0.0, None]
    assert hooks.metrics == {"reward/place/city": pytest.approx(2 / 3), "reward/place/year": pytest.approx(1 / 3),
                             "reward/place/error_rate": pytest.approx(1 / 3)}
    assert hooks.extra["reward/place/city"] == [1.0, 1.0, 0.0, None]
    assert hooks.extra["reward/place/year"] == [1.0, 0.0, 0.0, None]
    assert len(hooks.extra["reward/place/reason"]) == 4 and hooks.extra["reward/place/reason"][3] is None


def test_trl_without_hooks_logs_nothing_and_still_grades() -> None:
    assert trl_call(trl_reward(CONFIG), [GOOD], [REF]) == [1.0]


def test_trl_other_reference_column_and_missing_column() -> None:
    reward = trl_reward(CONFIG, reference_column="answer")
    assert reward(prompts=["p"], completions=[GOOD], answer=[REF]) == [1.0]
    with pytest.raises(GraderConfigError, match="no 'answer' column"):
        reward(prompts=["p"], completions=[GOOD], reference=[REF])


def test_trl_sample_grader_reads_the_row_as_item() -> None:
    reward = trl_reward({"type": "string_check", "name": "lvl", "input": "{{ sample.output_text }}",
                         "reference": "{{ item.difficulty }}", "operation": "like"})
    assert trl_call(reward, ["this was easy", "hard"], ["x", "y"]) == [1.0, 0.0]


def test_trl_reward_pickles_and_still_works() -> None:
    for source in (CONFIG, StructuredGrader(SCHEMA, name="place")):
        reward = pickle.loads(pickle.dumps(trl_reward(source, name="renamed")))
        assert reward.__name__ == "renamed"
        hooks = Hooks()
        assert trl_call(reward, [GOOD, HALF], [REF, REF], hooks) == [1.0, 0.5]
        assert "reward/renamed/year" in hooks.metrics


# --------------------------------------------------------------------------- verl


def naive_manager_call(fn: Any, solution_str: str, row: dict[str, Any]) -> Any:
    """How verl's naive reward manager calls compute_score: keywords, response only, ground truth from reward_model."""
    extra_info = dict(row.get("extra_info", {}))
    extra_info["num_turns"] = None
    return fn(data_source=row["data_source"], solution_str=solution_str,
              ground_truth=row["reward_model"]["ground_truth"], extra_info=extra_info)


ROW = {"data_source": "places", "reward_model": {"style": "rule", "ground_truth": json.dumps(REF)}, "extra_info": {"index": 0}}


def test_verl_factory_as_the_naive_manager_calls_it() -> None:
    fn = verl_compute_score(CONFIG)
    assert naive_manager_call(fn, GOOD, ROW) == {"score": 1.0, "city": 1.0, "year": 1.0}
    assert naive_manager_call(fn, "not json", ROW) == {"score": 0.0, "city": 0.0, "year": 0.0}  # same keys every row
    dict_row = {**ROW, "reward_model": {"ground_truth": REF}}
    assert naive_manager_call(pickle.loads(pickle.dumps(fn)), HALF, dict_row)["score"] == 0.5


def test_verl_env_config_and_async_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(CONFIG))
    monkeypatch.setenv("RFTKIT_GRADER", str(path))
    assert naive_manager_call(compute_score, HALF, ROW) == {"score": 0.5, "city": 1.0, "year": 0.0}
    assert inspect.iscoroutinefunction(compute_score_async)
    assert inspect.iscoroutinefunction(verl_compute_score(CONFIG).score_async)
    assert asyncio.run(naive_manager_call(compute_score_async, GOOD, ROW))["score"] == 1.0
    monkeypatch.delenv("RFTKIT_GRADER")
    assert compute_score(solution_str=GOOD, ground_truth=REF, grader=str(path))["score"] == 1.0  # reward_kwargs.grader
    with pytest.raises(GraderConfigError, match="RFTKIT_GRADER"):
        compute_score(solution_str=GOOD, ground_truth=REF)


def test_verl_missing_ground_truth_is_misuse() -> None:
    with pytest.raises(GraderConfigError, match="ground_truth"):
        verl_compute_score(CONFIG)(data_source="d", solution_str=GOOD, ground_truth=None)


def test_verl_loads_the_public_module_as_a_file() -> None:
    """verl and OpenRLHF load the reward file outside any package, as importlib does here."""
    spec = importlib.util.spec_from_file_location("custom_module", adapters.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.compute_score) and module.reward_func is openrlhf_reward_func


# --------------------------------------------------------------------------- OpenRLHF

PROMPT = "<|im_start|>user\nWhere is the tower?<|im_end|>\n<|im_start|>assistant\n"


def test_openrlhf_called_positionally_with_lists_of_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(CONFIG))
    monkeypatch.setenv("RFTKIT_GRADER", str(path))
    out = adapters.reward_func(["<|endoftext|>" + PROMPT + HALF + "<|im_end|><|endoftext|>"], [PROMPT], [json.dumps(REF)])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert [float(x) for x in out["rewards"]] == [0.5] and [float(x) for x in out["scores"]] == [0.5]
    assert {k: [float(x) for x in v] for k, v in out["extra_logs"].items()} == {"reward/place/city": [1.0],
                                                                               "reward/place/year": [0.0]}


@pytest.mark.parametrize(("query", "prompt", "response"), [
    (PROMPT + GOOD + "<|im_end|>", PROMPT, GOOD),
    ("<pad><pad>" + PROMPT + GOOD, PROMPT, GOOD),
    (PROMPT + GOOD + "<|im_end|>", "a prompt the round trip changed", GOOD),
    ("<|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" + GOOD
     + "<|eot_id|>", "nope", GOOD),
    ("[INST] q [/INST] " + GOOD + "</s>", "nope", GOOD),
    ("plain text without markup", "nope", "plain text without markup"),
])
def test_response_recovery(query: str, prompt: str, response: str) -> None:
    assert adapters.response_from_query(query, prompt).strip() == response


def test_adapters_import_and_run_without_torch(tmp_path: Path) -> None:
    """No torch at import or call time: OpenRLHF then gets lists."""
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(CONFIG))
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'trl', 'verl', 'openrlhf'):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
import graders.adapters as a
assert a.trl_reward({CONFIG!r})(prompts=['p'], completions=[{GOOD!r}], reference=[{REF!r}]) == [1.0]
out = a.reward_func([{PROMPT + HALF!r}], [{PROMPT!r}], [{json.dumps(REF)!r}], grader={str(path)!r})
assert out['rewards'] == [0.5] and out['extra_logs']['reward/place/year'] == [0.0], out
print('ok')
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_public_module_lists_its_names() -> None:
    public = {n for n in vars(adapters) if not n.startswith("_") and type(getattr(adapters, n)).__name__ != "module"}
    assert set(adapters.__all__) == (public | adapters._VERIFIERS) - {"annotations"}  # verifiers' names load on first use


# --------------------------------------------------------------------------- labels as items (issue 12, item 9)

MIGRATED = {  # an OpenAI RFT config: its templates read the row's own fields as {{ item.x }}
    "type": "multi", "name": "review", "calculate_output": "0.5 * sentiment + 0.5 * summary",
    "graders": {
        "sentiment": {"type": "string_check", "name": "sentiment", "operation": "eq",
                      "input": "{{ sample.output_json.sentiment }}", "reference": "{{ item.label }}"},
        "summary": {"type": "string_check", "name": "summary", "operation": "ilike",
                    "input": "{{ sample.output_json.summary }}", "reference": "{{ item.reference_answer }}"},
    },
}
ROW_FIELDS = {"label": "positive", "reference_answer": "great battery"}
ANSWER = '{"sentiment": "positive", "summary": "Great battery life"}'


@pytest.mark.parametrize("label", [ROW_FIELDS, json.dumps(ROW_FIELDS)], ids=["object", "json_text"])
def test_openrlhf_label_object_keys_are_the_item_keys(label: Any) -> None:
    """A config migrated from OpenAI reads {{ item.label }}: the label column's fields are the item's fields."""
    grader = from_config(MIGRATED)
    out = adapters.openrlhf_rewards(grader, [PROMPT + ANSWER + "<|im_end|>"], [PROMPT], [label])
    assert out["rewards"] == [1.0], out
    assert out["extra_logs"] == {"reward/review/sentiment": [1.0], "reward/review/summary": [1.0]}


def test_openrlhf_item_keeps_prompt_and_reference_and_the_labels_own_keys_win() -> None:
    seen: list[Any] = []

    class Spy(OpenAIGrader):
        name, type = "spy", "spy"

        def grade(self, sample: Any, item: Any = None) -> Any:
            seen.append(item)
            return StructuredGrader().grade("{}", {})

        def config(self) -> dict[str, Any]:
            return {"type": "spy"}

    adapters.openrlhf_rewards(Spy(), ["q a"], ["q"], [{"label": "x", "prompt": "the row's own"}])  # type: ignore[arg-type]
    adapters.openrlhf_rewards(Spy(), ["q a"], ["q"], ["plain text"])  # type: ignore[arg-type]
    assert seen == [{"prompt": "the row's own", "reference": {"label": "x", "prompt": "the row's own"}, "label": "x"},
                    {"prompt": "q", "reference": "plain text"}]


def test_get_reward_passes_label_objects_as_items() -> None:
    """The reward server's /get_reward grades the same way (it calls openrlhf_rewards)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from graders.serve._app import create_app

    with TestClient(create_app(MIGRATED)) as client:
        r = client.post("/get_reward", json={"query": [PROMPT + ANSWER], "prompts": [PROMPT], "labels": [ROW_FIELDS]})
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == [1.0]


def test_verl_ground_truth_object_keys_are_the_item_keys() -> None:
    score = verl_compute_score(MIGRATED)
    assert score(data_source="reviews", solution_str=ANSWER, ground_truth=json.dumps(ROW_FIELDS))["score"] == 1.0


def test_verifiers_names_need_the_extra_and_say_so() -> None:
    """Without the verifiers package, graders.adapters still imports; its verifiers names raise an ImportError naming the extra."""
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'verifiers':
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import graders.adapters as a
assert a.trl_reward({'type': 'structured', 'name': 'x'}).__name__ == 'x'
try:
    a.verifiers_grader
except ImportError as exc:
    assert "rftkit[verifiers]" in str(exc), exc
    print('ok')
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
