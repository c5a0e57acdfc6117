"""Multi-process training under ``torchrun``: which process this is, and the few collectives the trainer needs.

``torchrun --nproc_per_node N`` starts N copies of one program with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`join_process_group` turns them
into a :class:`Ranks`, initialising ``torch.distributed`` (gloo for a model on CPU, nccl on CUDA)
unless the caller already has. Without them it returns ``Ranks()``, one process, whose every
method hands its input back untouched: a single-process run executes the arithmetic it always did.

How :class:`rl.PPOTrainer` uses it:

* every rank walks the same prompt queue (same seed) and takes its :func:`shard` of each batch's
  prompts, so the ranks roll out disjoint prompts; each rank samples with its own seed (``seed + rank``);
* after each ``backward()``, :meth:`Ranks.average_gradients` replaces every gradient with its mean
  over the ranks, so every rank takes the same optimizer step from the same weights
  (:meth:`Ranks.broadcast_weights` gives every rank rank 0's weights at the start);
* every rank must reach each collective equally often, so the two choices that gate an update
  (skip an exploded minibatch, how many minibatches to run) are agreed with :meth:`Ranks.any` and
  :meth:`Ranks.max`;
* logged figures describe the whole batch: the grades are gathered (:meth:`Ranks.gather`) and the
  other metrics averaged over the ranks (:meth:`Ranks.mean`);
* only rank 0 (:attr:`Ranks.is_main`) writes the log, the plots, the checkpoints and the final model.

Why the gradients are averaged here rather than by wrapping the model in ``DistributedDataParallel``:
the synchronisation point is one visible line of the PPO loop; a skipped minibatch (a forward pass
with no backward) and a rank with nothing to train on need no workarounds; parameters that get no
gradient count as zeros instead of failing DDP's unused-parameter check; and, on torch 2.13 with gloo,
a DDP wrapper that outlives ``destroy_process_group()`` can deadlock the process at exit (its reducer
drops the last reference to the process group while holding the GIL, and gloo's worker thread
waits for the GIL). The price is DDP's overlap of communication with the backward pass, which
matters for large models on many GPUs; in PPO the rollout dominates the step.

>>> shard(list("abcdefg"), rank=1, world_size=3)
['c', 'd']
>>> Ranks().gather([1, 2]), Ranks().any(False), Ranks().max(3)
([1, 2], False, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from schemas import UserError

from ._config import PPOConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Score:
    """What the metrics read from a grade, small and picklable, to gather grades across ranks."""

    score: float
    sub_scores: dict[str, float]


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s contiguous share of ``items``: the shares of ranks 0..N-1, concatenated, are ``items``, each one
    element at most longer than another."""
    return list(items[rank * len(items) // world_size:(rank + 1) * len(items) // world_size])


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes that train together; ``Ranks()`` is the single-process run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where the tensors of collectives live: the CPU for gloo, this rank's GPU for nccl."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (see :func:`shard`); all of them in a single process."""
        return shard(items, self.rank, self.world_size)

    def broadcast_weights(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every rank."""
        if self.distributed:
            for tensor in (*module.parameters(), *module.buffers()):
                dist.broadcast(tensor.detach(), src=0)

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient with its mean over the ranks (a missing gradient counts as zeros)."""
        if not self.distributed:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        pending = [dist.all_reduce(grad, async_op=True) for grad in grads]  # sums, all in flight at once
        for work in pending:
            work.wait()
        for grad in grads:
            grad.div_(self.world_size)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        return bool(self._all_reduce_max(float(flag)))

    def max(self, value: int) -> int:
        """The largest ``value`` of all ranks, on every rank."""
        return int(self._all_reduce_max(float(value)))

    def gather(self, items: list[T]) -> list[T]:
        """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
        if not self.distributed:
            return items
        parts: list[list[T] | None] = [None] * self.world_size
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part or []]

    def gather_grades(self, grades: Sequence[Any]) -> list[Any]:
        """Every rank's grades in rank order: their ``score`` and ``sub_scores`` (:class:`Score`) under torchrun, the
        grades themselves in a single process."""
        if not self.distributed:
            return list(grades)
        return self.gather([Score(float(g.score), dict(g.sub_scores)) for g in grades])

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks that report it, on every rank."""
        if not self.distributed:
            return metrics
        parts = self.gather([metrics])
        keys = dict.fromkeys(key for part in parts for key in part)  # ordered, as the first rank to report them lists them
        return {key: sum(part[key] for part in parts if key in part) / sum(key in part for part in parts) for key in keys}

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier()

    def _all_reduce_max(self, value: float) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())


def join_process_group(device: torch.device) -> Ranks:
    """The :class:`Ranks` of this process: the initialised process group's, one started from torchrun's environment
    (gloo for a model on ``device`` CPU, nccl on CUDA), or ``Ranks()`` outside torchrun."""
    if not dist.is_available():
        return Ranks()
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Ranks()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() <= 1:
        return Ranks()
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(), device=on)


def leave_process_group() -> None:
    """Destroy the default process group, if there is one (the end of ``rftkit train``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0, read from torchrun's ``RANK`` (true outside torchrun); usable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def rank_device(device: str) -> str:
    """``cuda`` under torchrun becomes ``cuda:<LOCAL_RANK>``, one GPU per process; any other device is kept."""
    if device == "cuda" and "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def check_batch_split(config: PPOConfig, world_size: int) -> None:
    """Raise :class:`schemas.UserError` unless each rank gets an equal share of the prompts and of each minibatch."""
    for name in ("prompts_per_batch", "minibatch_size"):
        value = getattr(config, name)
        if value % world_size:
            raise UserError(f"{name} {value} does not split evenly over {world_size} processes", code="bad_config",
                            pointer=f"/{name}", hint=f"with torchrun --nproc_per_node {world_size}, use a multiple of {world_size}")
