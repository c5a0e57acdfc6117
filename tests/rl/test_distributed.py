"""Data-parallel training on two processes with torchrun (gloo on CPU): the ranks agree on the weights; the pure helpers.

The two torchrun jobs run on this machine over loopback, one torch thread per process, each within a
bounded time; a job that hangs is stopped (SIGTERM to torchrun, which stops its workers), and any of
its workers still alive after that is killed by its process id, so no process outlives the test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train_cli import ROWS, toml_config
from test_trainer import tiny_model, tiny_tokenizer

from rl import PPOConfig, read_metrics
from rl._checkpoint import list_checkpoints, load_rng, rng_tensors, save_rng
from rl._distributed import Ranks, check_batch_split, rank_device, shard
from schemas import UserError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TIMEOUT_S = 120


def child_pids(pid: int) -> list[int]:
    """The ids of the processes whose parent is ``pid`` (read from Linux's /proc; none elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # "pid (name) state ppid ..."
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


def torchrun(args: list[str], *, module: bool = False) -> str:
    """Run ``torchrun --standalone --nproc_per_node 2 [-m] ARGS`` from the repository root; return its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error",  # warnings are errors in the workers too
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *(["-m"] if module else []), *args]
    job = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = job.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        workers = child_pids(job.pid)
        job.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers and waits for them
        try:
            output, _ = job.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            job.kill()
            output, _ = job.communicate()
        for pid in workers:  # normally gone already
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"torchrun did not finish within {TIMEOUT_S} s:\n{output[-5000:]}")
    assert job.returncode == 0, output[-5000:]
    return output


# --------------------------------------------------------------------------- two processes


def test_two_ranks_train_resume_and_agree_on_the_weights(tmp_path: Path) -> None:
    torchrun([str(HERE / "ddp_worker.py"), str(tmp_path)])
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # Different models went in; every rank started from rank 0's, and its reference is rank 0's initial model.
    assert rank0["own_initial"] != rank1["own_initial"]
    assert rank0["start"] == rank1["start"]
    assert rank0["reference"] == rank1["reference"] == rank0["own_initial"]
    # After two steps the weights moved, identically on both ranks.
    assert rank0["after_train"] == rank1["after_train"] != rank0["start"]
    # The metrics are global: both ranks computed the same figures, and rank 0 alone wrote them, once per step.
    assert rank0["metrics"] == rank1["metrics"]
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in logged] == [1, 2]
    assert all(row[k] == pytest.approx(m[k]) for row, m in zip(logged, rank0["metrics"]) for k in m)
    assert {"eval/reward/mean", "reward/mean", "kl/to_init"} <= set(logged[1])
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-00000001", "step-00000002"]
    assert sorted(p.name for p in (tmp_path / "run" / "plots").iterdir()) == ["entropy.png", "kl.png", "reward.png"]
    # Resumed from the step-1 checkpoint, each rank (with its own saved RNG state) retook step 2 exactly.
    assert rank0["resumed_step"] == rank1["resumed_step"] == 1
    assert rank0["after_resume"] == rank1["after_resume"] == rank0["after_train"]
    step2 = {k: v for k, v in rank0["metrics"][1].items() if not k.startswith("eval/")}
    assert rank0["resumed_metrics"] == rank1["resumed_metrics"] == step2
    # Exploded minibatches were skipped by both ranks together (a one-sided skip would hang the gradient all-reduce).
    assert rank0["skipped_ratio"] == rank1["skipped_ratio"] >= 1
    assert rank0["after_skips"] == rank1["after_skips"]
    assert rank0["collectives"] == {"rank": 0, "world_size": 2, "any": True, "max": 10, "gather": [0, 1], "mean": {"x": 0.5}}
    assert rank1["collectives"]["rank"] == 1 and rank1["collectives"]["gather"] == [0, 1]


def test_rftkit_train_runs_under_torchrun_with_rank_0_writing(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "model")
    tiny_model(tok).save_pretrained(tmp_path / "model")
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    grader = {"type": "structured", "name": "city", "fields": {"city": {"comparator": "normalized"}}}
    (tmp_path / "grader.json").write_text(json.dumps(grader), encoding="utf-8")
    (tmp_path / "train.toml").write_text(toml_config(steps=2), encoding="utf-8")  # 2 prompts x 2 samples, minibatches of 4
    out = tmp_path / "run"
    output = torchrun(["rl", "train", str(tmp_path / "train.toml"), "--output", str(out)], module=True)
    assert output.count("training ") == 1 and output.count("done: 2 step(s)") == 1, output  # rank 0 alone prints
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000001", "step-00000002"]
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_item_exactly_once(world_size: int) -> None:
    for n in range(10):
        items = list(range(n))
        shards = [shard(items, rank, world_size) for rank in range(world_size)]
        assert [x for s in shards for x in s] == items
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_single_process_ranks_returns_its_inputs() -> None:
    ranks, module = Ranks(), torch.nn.Linear(2, 2)
    metrics = {"reward/mean": 0.5}
    assert ranks.is_main and not ranks.distributed
    assert ranks.shard([1, 2, 3]) == [1, 2, 3] and ranks.gather([4]) == [4] and ranks.mean(metrics) is metrics
    assert ranks.any(True) and not ranks.any(False) and ranks.max(7) == 7
    module(torch.ones(1, 2)).sum().backward()
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    ranks.average_gradients(list(module.parameters()))
    assert all(torch.equal(p.grad, g) for p, g in zip(module.parameters(), grads))
    ranks.broadcast_weights(module)  # nothing to do
    grades: list[Any] = [object()]
    assert ranks.gather_grades(grades) == grades


def test_batches_must_split_evenly_over_the_processes() -> None:
    config = PPOConfig(prompts_per_batch=3, samples_per_prompt=2, minibatch_size=6)
    check_batch_split(config, 1)
    check_batch_split(config, 3)
    with pytest.raises(UserError) as info:
        check_batch_split(config, 2)
    assert info.value.code == "bad_config" and info.value.pointer == "/prompts_per_batch" and "multiple of 2" in str(info.value)
    with pytest.raises(UserError) as info:
        check_batch_split(PPOConfig(prompts_per_batch=4, samples_per_prompt=2, minibatch_size=3), 2)
    assert info.value.pointer == "/minibatch_size"


def test_each_rank_reads_back_its_own_rng_states(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    rank1 = rng_tensors(torch.Generator().manual_seed(2))
    state = save_rng(tmp_path, generator, random.Random(0), other_ranks=[rank1])
    restored = torch.Generator()
    assert load_rng(tmp_path, state, restored, random.Random(), rank=1)
    assert torch.equal(restored.get_state(), rank1["generator"])
    assert load_rng(tmp_path, state, restored, random.Random(), rank=0)
    assert torch.equal(restored.get_state(), generator.get_state())
    assert not load_rng(tmp_path, state, restored, random.Random(), rank=2)  # written by two processes: no rank 2


def test_cuda_means_the_local_rank_s_gpu_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rank_device("cuda") == "cuda" and rank_device("cpu") == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cuda") == "cuda:1" and rank_device("cuda:0") == "cuda:0" and rank_device("cpu") == "cpu"
