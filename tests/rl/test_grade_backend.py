"""The trainer grades on graders' batch engine when asked: ``PPOConfig.grade_backend`` (local | processes | ray)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from test_trainer import ROWS, NaNEveryThird, small_config, tiny_model, tiny_tokenizer

import graders.batch._engine
from graders import StructuredGrader
from graders.batch import Costs
from rl import PPOConfig, PPOTrainer
from rl._cli import _ppo_config, parse_config
from rl._grading import EngineGrader, on_backend
from schemas import UserError

BATCH = {"samples_per_prompt": 8, "minibatch_size": 8}  # 16 completions a rollout: more than the engine probes here


@pytest.mark.parametrize(("overrides", "pointer"), [
    ({"grade_backend": "gpu"}, "/grade_backend"),
    ({"grade_workers": 0}, "/grade_workers"),
    ({"grade_workers": True}, "/grade_workers"),
    ({"grade_backend": "processes", "grade_timeout_s": 5.0}, "/grade_backend"),  # one forked worker, or the engine
])
def test_config_rejects_bad_grading_options_with_a_pointer(overrides: dict[str, Any], pointer: str) -> None:
    with pytest.raises(UserError) as info:
        PPOConfig(**overrides)
    assert info.value.code == "bad_config" and info.value.pointer == pointer


def test_a_grader_with_only_grade_batch_cannot_be_spread_over_workers() -> None:
    with pytest.raises(UserError) as info:
        on_backend(NaNEveryThird(), "processes", 2)
    assert info.value.pointer == "/grade_backend" and "grade(response, reference)" in str(info.value)
    assert on_backend(EngineGrader(StructuredGrader()), "processes", None).workers >= 1  # None: every CPU


def test_the_train_command_reads_the_backend_from_the_config_or_the_flag(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "grader.json").write_text('{"type": "structured"}', encoding="utf-8")
    data = {"model": {"name_or_path": "some/model"}, "dataset": {"train": "data.jsonl"}, "grader": {"config": "grader.json"},
            "train": {"steps": 1}, "ppo": {"grade_backend": "processes", "grade_workers": 4}}
    spec = parse_config(data, tmp_path)
    assert (spec.ppo.grade_backend, spec.ppo.grade_workers) == ("processes", 4)
    assert parse_config(data, tmp_path, grade_backend="ray").ppo.grade_backend == "ray"  # --grade-backend wins
    with pytest.raises(UserError) as info:
        parse_config(data, tmp_path, grade_backend="gpu")
    assert info.value.pointer == "/ppo/grade_backend"
    assert _ppo_config({"grade_workers": None}).grade_workers is None  # YAML's null


def one_step(**overrides: Any) -> dict[str, float]:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config(**BATCH, **overrides))
    return trainer.step()


def test_processes_grade_the_rollout_in_forked_workers_with_the_rewards_of_this_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    here = one_step()
    taken: list[str] = []
    forked = graders.batch._engine._TRANSPORTS["forked"]

    def recorded(*args: Any, **kwargs: Any) -> Any:
        taken.append("forked")
        return forked(*args, **kwargs)

    def every_worker(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
        return workers  # the adaptive choice pinned: the test does not depend on how fast this machine is

    monkeypatch.setitem(graders.batch._engine._TRANSPORTS, "forked", recorded)
    monkeypatch.setattr(graders.batch._engine, "choose_workers", every_worker)
    if threading.active_count() > 1:
        pytest.skip("an earlier test left a Python thread running, so fork is rightly not used in this process")
    there = one_step(grade_backend="processes", grade_workers=2)
    assert taken == ["forked"]
    assert there["reward/mean"] == here["reward/mean"] and there["reward/city"] == here["reward/city"]


@pytest.mark.slow
def test_ray_grades_the_rollout_on_a_local_ray_with_the_rewards_of_this_process() -> None:
    ray = pytest.importorskip("ray")
    here = one_step()
    try:
        there = one_step(grade_backend="ray", grade_workers=1)
        assert ray.is_initialized()  # started once for the run, not per rollout
    finally:
        ray.shutdown()
    assert there["reward/mean"] == here["reward/mean"] and there["reward/city"] == here["reward/city"]


def test_a_resumed_run_may_grade_elsewhere(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config(**BATCH))
    trainer.step()
    saved = trainer.save_checkpoint(tmp_path)
    again = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS,
                       small_config(**BATCH, grade_backend="processes", grade_workers=2), resume_from=saved)
    assert (again.config.grade_backend, again.config.grade_workers) == ("processes", 2)
    assert isinstance(again.grader, EngineGrader) and again.grader.backend == "processes"
    with pytest.raises(UserError, match="different config"):  # what it computes must still match
        PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config(**BATCH, clip=0.3), resume_from=saved)
