"""One rank of ``test_distributed.py``'s torchrun job: PPO on the tiny GPT-2 of ``test_trainer.py``, then a record.

Run as ``torchrun --standalone --nproc_per_node 2 tests/rl/ddp_worker.py OUT`` (with ``tests/rl`` and the
repository root on ``PYTHONPATH``). Each rank writes ``OUT/rank<r>.json``: digests of its weights at each
stage, its metrics, and the answers of a few collectives; ``OUT/run/`` is the (shared) log directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from test_trainer import ROWS, small_config, tiny_model, tiny_tokenizer

from graders import StructuredGrader
from rl import PPOTrainer
from rl._distributed import leave_process_group

TRAIN_ROWS = [*ROWS, {"prompt": "capital of rome?", "reference": {"city": "Rome"}}]  # 4 rows: two batches of 2 prompts


def digest(trainer: PPOTrainer) -> str:
    """SHA-256 of the policy's and the value head's weights, in state-dict order."""
    sha = hashlib.sha256()
    modules: list[Any] = [trainer.model, trainer.value_head] if trainer.value_head is not None else [trainer.model]
    for module in modules:
        for name, tensor in module.state_dict().items():
            sha.update(name.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def without_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    tok, grader = tiny_tokenizer(), StructuredGrader()
    record: dict[str, Any] = {}

    # Each rank builds a different model: the trainer must start every rank from rank 0's weights.
    model = tiny_model(tok, seed=rank)
    record["own_initial"] = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    trainer = PPOTrainer(model, tok, grader, TRAIN_ROWS, ROWS, small_config(advantage="gae"))
    record["start"] = digest(trainer)
    record["reference"] = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.ref_model.parameters())).hexdigest()
    history = trainer.train(2, log_dir=out / "run", eval_every=1, checkpoint_every=1, console_every=None)
    record["after_train"] = digest(trainer)
    record["metrics"] = [without_timing(m) for m in history]

    # Resume from the step-1 checkpoint in a fresh trainer: step 2 must come out as it did, on every rank.
    resumed = PPOTrainer(tiny_model(tok, seed=rank), tok, grader, TRAIN_ROWS, ROWS,
                         resume_from=out / "run" / "checkpoints" / "step-00000001")
    record["resumed_step"] = resumed.step_count
    record["resumed_metrics"] = without_timing(resumed.step())
    record["after_resume"] = digest(resumed)

    # GRPO with a ratio threshold that trips: minibatches are skipped on both ranks together, and the weights still agree.
    skipper = PPOTrainer(tiny_model(tok), tok, grader, TRAIN_ROWS, ROWS,
                         small_config(advantage="grpo", learning_rate=0.5, ppo_epochs=4, ratio_skip_threshold=1.05,
                                      whiten_advantages=False))
    record["skipped_ratio"] = skipper.step()["update/skipped_ratio"]
    record["after_skips"] = digest(skipper)

    ranks = trainer.ranks
    record["collectives"] = {"rank": ranks.rank, "world_size": ranks.world_size, "any": ranks.any(rank == 1),
                             "max": ranks.max(10 * rank), "gather": ranks.gather([rank]), "mean": ranks.mean({"x": float(rank)})}
    (out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))
    leave_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
