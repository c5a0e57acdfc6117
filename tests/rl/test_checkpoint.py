"""Checkpoints, resume and the metrics log, on the tiny GPT-2 of ``test_trainer.py``.

The central property: a run checkpointed at step 2 and resumed in a fresh trainer
takes the same step 3 as the run that never stopped, bit for bit (CPU, fixed seeds).
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from test_trainer import ROWS, small_config, snapshot, tiny_model, tiny_tokenizer

from graders import StructuredGrader
from rl import MetricsLogger, PPOTrainer, plot_metrics, read_metrics
from rl._checkpoint import list_checkpoints
from schemas import UserError


def make_trainer(resume_from: Path | None = None, **overrides: Any) -> PPOTrainer:
    tok = tiny_tokenizer()
    config = small_config(**overrides) if resume_from is None or overrides else None
    return PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, config, resume_from=resume_from)


def weights(trainer: PPOTrainer) -> dict[str, torch.Tensor]:
    out = snapshot(trainer.model)
    if trainer.value_head is not None:
        out.update({f"value_head.{k}": v for k, v in snapshot(trainer.value_head).items()})
    return out


def without_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(("advantage", "kl_target", "schedule"), [("gae", None, {}), ("grpo", 0.01, {}),
                                                                   ("grpo", None, {"warmup_steps": 1, "lr_schedule": "linear",
                                                                                   "lr_decay_steps": 5})])
def test_a_resumed_run_takes_the_same_step_as_the_uninterrupted_one(tmp_path: Path, advantage: str, kl_target: float | None,
                                                                    schedule: dict[str, Any]) -> None:
    original = make_trainer(advantage=advantage, kl_target=kl_target, kl_horizon=8, **schedule)
    original.step()
    original.step()
    saved = original.save_checkpoint(tmp_path)
    assert saved == tmp_path / "step-00000002"
    expected_metrics, expected_weights = original.step(), weights(original)
    if schedule:  # the resumed step must run at the decayed rate, not at the schedule's start
        assert expected_metrics["update/lr"] == pytest.approx(original.config.learning_rate * 0.75)

    resumed = make_trainer(resume_from=tmp_path)  # the newest checkpoint under the folder, with its own config
    assert resumed.step_count == 2 and resumed.config == original.config
    assert resumed.kl_coef == json.loads((saved / "trainer_state.json").read_text())["kl_coef"]  # moved by the controller, if any
    metrics = resumed.step()
    assert resumed.step_count == 3
    got = weights(resumed)
    assert got.keys() == expected_weights.keys()
    assert all(torch.equal(got[k], expected_weights[k]) for k in got), [k for k in got if not torch.equal(got[k], expected_weights[k])]
    assert without_timing(metrics) == without_timing(expected_metrics)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(resumed.ref_model).values(), snapshot(original.ref_model).values()))


def test_a_checkpoint_without_scheduler_state_continues_the_schedule_from_its_step(tmp_path: Path) -> None:
    original = make_trainer(warmup_steps=1, lr_schedule="linear", lr_decay_steps=5)
    original.step()
    original.step()
    saved = original.save_checkpoint(tmp_path)
    (saved / "scheduler.pt").unlink()  # as written before the scheduler existed, whose optimizer state had no initial_lr
    optimizer = torch.load(saved / "optimizer.pt", weights_only=True)
    for group in optimizer["param_groups"]:
        del group["initial_lr"]
    torch.save(optimizer, saved / "optimizer.pt")
    resumed = make_trainer(resume_from=tmp_path)
    assert resumed.step()["update/lr"] == pytest.approx(resumed.config.learning_rate * 0.75)  # step 2 of warm-up 1, decay 5


def test_the_checkpoint_holds_weights_optimizer_rng_step_and_config(tmp_path: Path) -> None:
    trainer = make_trainer()
    trainer.step()
    saved = trainer.save_checkpoint(tmp_path)
    names = {p.name for p in saved.iterdir()}
    assert {"model.safetensors", "config.json", "optimizer.pt", "rng.safetensors", "scheduler.pt", "trainer_state.json",
            "value_head.safetensors", "tokenizer_config.json"} <= names  # a model from_pretrained loads, and the trainer's state
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["config"]["learning_rate"] == trainer.config.learning_rate
    assert {"python_random", "trainer_random", "queue", "kl_coef"} <= set(state)


def test_a_killed_writer_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer()
    trainer.step()
    trainer.save_checkpoint(tmp_path)
    at_step_1 = weights(trainer)
    trainer.step()

    def killed(*args: object, **kwargs: object) -> None:  # model.safetensors is already written when the optimizer is saved
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(tmp_path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]  # no half-written step-00000002, no temp left

    # A SIGKILL gives no chance to clean up: its temp directory must be ignored by readers and removed by the next save.
    stray = tmp_path / ".tmp-step-00000002-99999"
    stray.mkdir()
    (stray / "model.safetensors").write_bytes(b"half")
    resumed = make_trainer(resume_from=tmp_path)
    assert resumed.step_count == 1
    assert all(torch.equal(v, at_step_1[k]) for k, v in weights(resumed).items())
    resumed.save_checkpoint(tmp_path)
    assert not stray.exists()


def test_only_the_last_keep_last_checkpoints_are_kept(tmp_path: Path) -> None:
    trainer = make_trainer(keep_last=2)
    for step in (1, 2, 3):
        trainer.step_count = step  # the file mechanics do not need real steps
        trainer.save_checkpoint(tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    trainer.save_checkpoint(tmp_path)  # re-saving a step replaces it
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]


def test_resume_rejects_a_missing_checkpoint_and_a_different_config(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        make_trainer(resume_from=tmp_path)
    assert info.value.code == "bad_resume" and info.value.pointer == "/resume_from"
    make_trainer().save_checkpoint(tmp_path)
    with pytest.raises(UserError) as info:
        make_trainer(resume_from=tmp_path, learning_rate=0.5)
    assert info.value.code == "bad_resume" and "learning_rate" in str(info.value)


# --------------------------------------------------------------------------- logging and train()


def test_metrics_logger_appends_flushes_and_truncates_on_resume(tmp_path: Path) -> None:
    path, out = tmp_path / "metrics.jsonl", io.StringIO()
    logger = MetricsLogger(path, console_every=2, console=Console(file=out, width=80))
    for step in (1, 2, 3):
        logger.log(step, {"reward/mean": step / 10, "kl/to_init": math.nan})
        assert len(read_metrics(path)) == step  # flushed at once, before close
    logger.close()
    assert read_metrics(path)[0] == {"step": 1, "reward/mean": 0.1, "kl/to_init": None}
    assert "step 2" in out.getvalue() and "reward/mean" in out.getvalue() and "step 1" not in out.getvalue()

    with path.open("a") as f:
        f.write('{"step": 4, "rew')  # a line cut short by a kill
    with MetricsLogger(path, start_step=2, console_every=None) as logger:
        logger.log(3, {"reward/mean": 0.9})
    assert [(r["step"], r["reward/mean"]) for r in read_metrics(path)] == [(1, 0.1), (2, 0.2), (3, 0.9)]


def test_plot_metrics_writes_three_pngs_and_nothing_for_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path, console_every=None) as logger:
        logger.log(0, {"eval/reward/mean": 0.4, "eval/reward/city": 0.0})
        for step in (1, 2, 3):
            logger.log(step, {"reward/mean": step / 4, "reward/city": step / 3, "kl/to_init": step / 10, "kl/coef": 0.05,
                              "policy/entropy": 1 / step, "loss/policy": math.nan})
    written = plot_metrics(path, tmp_path / "plots")
    assert [p.name for p in written] == ["reward.png", "kl.png", "entropy.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and p.stat().st_size > 1000 for p in written)
    (tmp_path / "empty.jsonl").write_text("")
    assert plot_metrics(tmp_path / "empty.jsonl", tmp_path / "none") == [] and not (tmp_path / "none").exists()


def test_train_logs_evaluates_checkpoints_and_resumes_without_duplicate_steps(tmp_path: Path) -> None:
    trainer = make_trainer()
    history = trainer.train(3, log_dir=tmp_path, eval_every=2, checkpoint_every=2, console_every=None)
    assert len(history) == 3 and trainer.step_count == 3
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002", "step-00000003"]  # every 2, and the last
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("kl/to_init" in r for r in rows)
    assert ["eval/reward/mean" in r for r in rows] == [False, True, True]  # per-field keys appear once a greedy answer parses
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["entropy.png", "kl.png", "reward.png"]
    final = weights(trainer)

    # Killed after the step-2 checkpoint: resume from it, run to the same total, get the same run and log.
    resumed = make_trainer(resume_from=tmp_path / "checkpoints" / "step-00000002")
    resumed.train(3, log_dir=tmp_path, eval_every=2, checkpoint_every=2, console_every=None)
    assert resumed.step_count == 3
    again = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3]
    assert without_timing(again[2]) == without_timing(rows[2])
    assert all(torch.equal(v, final[k]) for k, v in weights(resumed).items())


def test_train_rejects_checkpoints_without_a_log_dir() -> None:
    with pytest.raises(UserError) as info:
        make_trainer().train(1, checkpoint_every=1)
    assert info.value.code == "bad_schedule" and info.value.pointer == "/checkpoint_every"


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from test_trainer import ROWS, small_config, tiny_model, tiny_tokenizer
    from graders import StructuredGrader
    from rl import PPOTrainer

    class DiesInStep4(StructuredGrader):
        calls = 0
        def grade_batch(self, responses, references):
            DiesInStep4.calls += 1
            if DiesInStep4.calls == 4:  # after the step-2 checkpoint and the logged step 3
                os.kill(os.getpid(), signal.SIGKILL)
            return super().grade_batch(responses, references)

    tok = tiny_tokenizer()
    PPOTrainer(tiny_model(tok), tok, DiesInStep4(), ROWS, [], small_config()).train(
        4, log_dir=sys.argv[1], checkpoint_every=2, console_every=None)
""")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread here and in the child: the same float reduction order in both, and no thread pool idling
    on this process's cores while the child runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_sigkilled_run_resumes_from_its_last_checkpoint_and_finishes_like_an_uninterrupted_one(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(Path(__file__).parent)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002"]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]  # step 3 ran, was logged, never saved

    tok = tiny_tokenizer()
    resumed = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, [], resume_from=tmp_path / "checkpoints")
    resumed.train(4, log_dir=tmp_path, checkpoint_every=2, console_every=None)
    assert resumed.step_count == 4
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]  # step 3 redone, not duplicated
    uninterrupted = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, [], small_config())
    uninterrupted.train(4, console_every=None)
    expected = weights(uninterrupted)
    assert all(torch.equal(v, expected[k]) for k, v in weights(resumed).items())
