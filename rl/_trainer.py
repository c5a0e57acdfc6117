"""A compact PPO trainer that learns from grader rewards, readable top to bottom.

One :meth:`PPOTrainer.step` is one iteration, in execution order:

1. **rollout** -- ``prompts_per_batch`` prompts, ``samples_per_prompt`` sampled completions
   each (KV cache, temperature, ``top_k``, ``top_p``), with the per-token log-probs of the
   distribution that sampled them (``logits / temperature``, cut and renormalised; every later
   log-prob is cut the same way, ``gather_logprobs``); then the log-probs under a frozen copy
   of the initial policy (with LoRA: the policy with its adapters switched off). Each prompt is run once per group and its keys and values are shared
   by the group's samples, when sampling and in every forward after (``rl/_shared_prefix.py``);
2. **grade** -- ``grader.grade_batch(completions, references)`` (with ``grade_timeout_s``: in a worker process
   stopped at the deadline, ``rl/_grading.py``); a non-finite score is skipped and counted
   (``rollout/skipped_nan``), never trained on. With ``drop_uniform_groups``, groups whose scores do not vary
   are dropped and more prompts sampled until the batch is full (``rl/_resample.py``). ``overlong`` masks or
   penalises completions cut at ``max_new_tokens``;
3. **rewards** -- :func:`token_rewards`: the score (minus ``no_eos_penalty`` when the
   completion never emitted EOS) on the last real token, and ``-kl_coef * k1`` on
   every token when ``kl_estimator="k1"``;
4. **advantages** -- ``gae`` over the token rewards with a value head (a ``Linear`` on
   the policy's last hidden state), or a critic-free estimator (``grpo``, ``rloo``,
   ``reinforce++``) over each completion's return (the sum of its token rewards);
   then whitened;
5. **update** -- ``ppo_epochs`` passes of minibatches of whole groups, shuffled: clipped policy loss (token or
   sequence ratios, clip range ``[1 - clip_low, 1 + clip_high]``, per-token weights of ``loss_aggregation``),
   clipped value loss (``gae``), ``kl_coef * k3`` (``kl_estimator="k3"``), accumulated over the
   minibatch's micro-batches (``micro_batch_size``), gradient clipping, AdamW; a minibatch whose mean importance ratio exceeds
   ``ratio_skip_threshold`` is skipped and counted (``update/skipped_ratio``);
6. **log** -- a dict of namespaced metrics; then the adaptive KL coefficient, if any, moves.

Every forward runs in the compute dtype under ``torch.autocast`` while the trained weights and AdamW's
states stay float32 (mixed precision); LoRA adapters, gradient checkpointing and the reference are
set up by ``rl/_model.py`` (:class:`rl.ModelConfig`, :class:`rl.LoRAConfig`).

The model stays in ``eval()`` mode throughout: dropout would make the policy that
sampled differ from the one being scored, and the ratio would start away from 1.

:meth:`PPOTrainer.train` runs ``step()`` on a schedule with ``evaluate()`` and
:meth:`PPOTrainer.save_checkpoint` (atomic: a temp directory renamed into place, see
``rl/_checkpoint.py``), logging every step to ``metrics.jsonl`` through
:class:`MetricsLogger`. ``PPOTrainer(..., resume_from=dir)`` restores weights,
optimizer, learning-rate scheduler, RNG states, prompt queue and step, so the resumed run takes exactly the
steps the killed one would have.

The KL weight is ``config.kl_coef``, or, with ``config.kl_target``, Ziegler et al.'s adaptive
coefficient, updated after each step from that step's ``kl/to_init`` (:func:`rl.adaptive_kl_coef`)
and saved in checkpoints. The learning rate follows ``config.warmup_steps`` and ``config.lr_schedule``
(:func:`rl.lr_factor`, stepped once per trainer step, saved in checkpoints).

Under ``torchrun`` (``rl/_distributed.py``) every process runs this same loop on its shard of each
batch's prompts and averages its gradients with the other ranks' before each optimizer step, so the
weights stay equal; the logged figures cover all ranks; only rank 0 writes files.

Run it::

    trainer = PPOTrainer(model, tokenizer, StructuredGrader(), train_rows, eval_rows, PPOConfig(advantage="grpo"))
    trainer.train(100, log_dir="runs/a", eval_every=10, checkpoint_every=20)
    # killed? the same two lines with resume_from="runs/a/checkpoints" continue from the last checkpoint

where each row is ``{"prompt": str, "reference": <the answer object>}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import Progress
from safetensors.torch import load_file, save_file

from schemas import UserError

from ._advantages import ADVANTAGE_SCALES, gae, group_centred, masked_mean, reinforce_pp, rloo, uniform_groups, whiten
from ._checkpoint import (
    checkpoint_name,
    load_policy,
    load_rng,
    resolve_checkpoint,
    rng_tensors,
    save_policy,
    save_rng,
    write_atomically,
    write_json,
)
from ._config import LoRAConfig, ModelConfig, PPOConfig
from ._distributed import check_batch_split, join_process_group
from ._grading import grade_within, on_backend
from ._logging import MetricsLogger
from ._losses import (
    OVERLONG,
    RATIOS,
    adaptive_kl_coef,
    aggregation_weights,
    approx_kl,
    clipped_surrogate,
    clipped_value_loss,
    entropy_from_logits,
    kl_k1,
    kl_k3,
    lr_factor,
)
from ._model import checkpointing, prepare_policy
from ._plots import plot_metrics
from ._resample import Part, merge_parts, select_groups
from ._rollout import check_tokenizer, gather_logprobs, generate_completions
from ._shared_prefix import sample_rollout, score_completions, shares_prefix


class Scored(Protocol):
    """What the trainer reads from a grade (``graders.Grade`` has both)."""

    @property
    def score(self) -> float: ...

    @property
    def sub_scores(self) -> Mapping[str, float]: ...


class BatchGrader(Protocol):
    """Anything that grades completions against references in order, as ``graders.StructuredGrader`` does."""

    def grade_batch(self, responses: list[str], references: list[Any]) -> Sequence[Scored]: ...


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, has_eos: torch.Tensor, *, kl_coef: float,
                  no_eos_penalty: float) -> torch.Tensor:
    """Per-token rewards (B, T): ``-kl_coef * kl`` on every real token, plus ``score - no_eos_penalty * (no EOS)`` on the last one.

    ``mask`` is a prefix of ones per row (the completion up to its first EOS).

    >>> r = token_rewards(torch.tensor([1.0, 1.0]), torch.full((2, 3), 0.5), torch.tensor([[1, 1, 0], [1, 1, 1]]),
    ...                   torch.tensor([True, False]), kl_coef=0.5, no_eos_penalty=0.5)
    >>> r.tolist()
    [[-0.25, 0.75, 0.0], [-0.25, -0.25, 0.25]]
    """
    rewards = torch.where(mask.bool(), -kl_coef * kl, 0.0)  # (B, T)
    last = mask.sum(dim=1).long() - 1  # (B,) index of the last real token
    final = scores - no_eos_penalty * (~has_eos).to(scores.dtype)  # (B,)
    rewards[torch.arange(rewards.shape[0]), last] += final
    return rewards


# Critic-free estimators: one return per completion -> one advantage per completion, (B,) -> (B,). The third argument,
# PPOConfig.scale_advantages, is grpo's divisor (the config allows only its default with the others).
CRITIC_FREE: dict[str, Callable[[torch.Tensor, int, str], torch.Tensor]] = {
    "grpo": lambda returns, group_size, scale: ADVANTAGE_SCALES[scale](group_centred(returns, group_size), returns, group_size),
    "rloo": lambda returns, group_size, _scale: rloo(returns, group_size),
    "reinforce++": lambda returns, _group_size, _scale: reinforce_pp(returns),
}


class PPOTrainer:
    """PPO (or a critic-free variant) on a causal LM, rewarded by a grader; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, grader: BatchGrader, train_rows: Sequence[Mapping[str, Any]],
                 eval_rows: Sequence[Mapping[str, Any]], config: PPOConfig | None = None, *,
                 resume_from: str | os.PathLike[str] | None = None, model_config: ModelConfig | None = None,
                 lora: LoRAConfig | None = None) -> None:
        """``resume_from``: a checkpoint directory, or a directory of them (the newest is used). Pass the same
        *initial* model as the original run (it becomes the frozen reference) and ``config=None`` or the same config.

        ``model_config``: precision (float32 master weights, autocast in the model's dtype by default) and gradient
        checkpointing; ``lora``: train peft LoRA adapters instead of every weight (``rl/_model.py``). The model is
        prepared in place (upcast, or wrapped by peft: ``trainer.model`` is then the ``PeftModel``)."""
        checkpoint, saved = _read_checkpoint(resume_from, config) if resume_from is not None else (None, None)
        if saved is not None:  # the checkpoint's config; where rollouts are graded is this run's to choose
            placement = {k: getattr(config, k) for k in _PLACEMENT} if config is not None else {}
            config = dataclasses.replace(PPOConfig(**saved["config"]), **placement)
            saved_lora = LoRAConfig(**saved["lora"]) if saved.get("lora") else None
            if saved_lora != lora:
                raise UserError(f"the checkpoint was written with {saved_lora or 'full fine-tuning'}, not {lora or 'full fine-tuning'}",
                                code="bad_resume", pointer="/lora", hint="resume with the [lora] section the run started with")
        self.config = config = config if config is not None else PPOConfig()
        check_tokenizer(tokenizer)
        _check_rows(train_rows, "train_rows", allow_empty=False)
        _check_rows(eval_rows, "eval_rows", allow_empty=True)
        self.ranks = join_process_group(next(model.parameters()).device)
        """This process's place among the torchrun processes (``Ranks()``: a single process)."""
        check_batch_split(config, self.ranks.world_size)
        torch.manual_seed(config.seed + self.ranks.rank)  # each rank samples with its own seed
        self.ranks.broadcast_weights(model)  # every rank starts from rank 0's weights, and keeps them as its reference
        self.model_config, self.lora = model_config if model_config is not None else ModelConfig(), lora
        self.policy = prepare_policy(model, self.model_config, lora)
        """The model as trained: its compute dtype (autocast), adapters, checkpointing, and the frozen reference."""
        model = self.policy.model
        if lora is not None:
            self.ranks.broadcast_weights(model)  # the adapters were drawn with each rank's seed: rank 0's for all
        if config.grade_backend != "local":  # graded on graders' batch engine: worker processes or Ray tasks
            grader = on_backend(grader, config.grade_backend, config.grade_workers)
        self.model, self.tokenizer, self.grader = model, tokenizer, grader
        self.train_rows, self.eval_rows = list(train_rows), list(eval_rows)
        self.ref_model = self.policy.reference
        """The frozen initial policy (KL penalty, ``kl/to_init``): a copy in the compute dtype; None with LoRA, whose
        reference is ``model`` with its adapters disabled (``self.policy.reference_model()``)."""
        with self.policy.compute():
            tolerance = max(1e-3, 8 * torch.finfo(self.policy.dtype).eps)  # a 16-bit forward differs from itself by its rounding
            self.shared_prefix = shares_prefix(model, tolerance)
        """Each prompt is run once per group (checked once on a probe; else every sequence is run whole, with the same results)."""
        self.shared_prefix_update = self.shared_prefix and not self.policy.gradient_checkpointing
        """The update shares prompts too; not with gradient checkpointing (a layer that checkpoints writes no cache)."""
        self.value_head: torch.nn.Linear | None = None
        """``gae`` only: the value of each state, read from the policy's last hidden state."""
        if config.advantage == "gae":
            device = next(model.parameters()).device
            self.value_head = torch.nn.Linear(model.config.hidden_size, 1, device=device)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if self.value_head is not None:
            self.params += list(self.value_head.parameters())
        fused = all(p.device.type in ("cpu", "cuda") for p in self.params)  # AdamW in one kernel per step, not a few per tensor
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, fused=fused, foreach=not fused)
        device_type = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler(device_type, enabled=self.policy.autocast and self.policy.dtype == torch.float16)
        """float16 autocast only: the loss is scaled so small gradients do not underflow (bf16 has float32's range)."""
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(
            step, warmup_steps=config.warmup_steps, schedule=config.lr_schedule, decay_steps=config.lr_decay_steps))
        self.kl_coef = config.kl_coef
        """The KL penalty's current weight: ``config.kl_coef``, moved after every step when ``config.kl_target`` is set."""
        self.step_count = 0
        self._rng = random.Random(config.seed)
        self._generator = torch.Generator().manual_seed(config.seed)
        self._queue: list[int] = []
        if checkpoint is not None and saved is not None:
            self._restore(checkpoint, saved)

    def _next_rows(self) -> list[Mapping[str, Any]]:
        """The next ``prompts_per_batch`` training rows, walking through a fresh shuffle of the set each epoch."""
        rows = []
        for _ in range(self.config.prompts_per_batch):
            if not self._queue:
                self._queue = list(range(len(self.train_rows)))
                self._rng.shuffle(self._queue)
            rows.append(self.train_rows[self._queue.pop()])
        return rows

    def _rollout(self, rows: list[Mapping[str, Any]]) -> Part:
        """Sample ``samples_per_prompt`` completions of each row's prompt, score them under the reference, grade them."""
        cfg = self.config
        with self.policy.compute():  # every forward in the compute dtype (autocast), the weights staying float32
            roll, old_logprobs, hidden = sample_rollout(
                self.model, self.tokenizer, [str(r["prompt"]) for r in rows], samples_per_prompt=cfg.samples_per_prompt,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, hidden=self.value_head is not None,
                shared=self.shared_prefix, top_k=cfg.top_k, top_p=cfg.top_p)  # (B, T), (B, T, H)
        tokens, real = roll.completion_ids, roll.completion_mask.float()  # (B, T) each
        with torch.no_grad(), self.policy.compute(), self.policy.reference_model() as reference:
            old_values = self.value_head(hidden.float()).squeeze(-1).float() * real if self.value_head is not None and hidden is not None else None
            ref_logits, _ = score_completions(reference, roll, torch.arange(len(real), device=real.device), cfg.temperature)
            ref_logprobs = gather_logprobs(ref_logits, tokens, top_k=cfg.top_k, top_p=cfg.top_p) * real  # (B, T)
        del ref_logits, hidden
        references = [r["reference"] for r in rows for _ in range(cfg.samples_per_prompt)]
        if cfg.grade_timeout_s is None:
            grades: list[Any] = list(self.grader.grade_batch(roll.texts, references))
        else:  # in a worker process stopped at the deadline; what it did not grade by then scores NaN
            grades = list(grade_within(self.grader, roll.texts, references, timeout_s=cfg.grade_timeout_s))
        return Part(roll, old_logprobs, ref_logprobs, old_values, grades, rows)

    def _fill_batch(self, part: Part) -> tuple[Part, list[Any], int, int, bool]:
        """Dynamic sampling: keep ``part``'s groups whose scores vary (beyond ``uniform_tolerance``), sample more rollouts
        (at most ``max_resample_rounds``) until this rank has as many such groups as prompts, and merge them.

        Returns the merged part, every grade sampled, the groups dropped as uniform, the extra rollouts sampled and
        whether any group has a signal (if none has, the first rollout comes back, to be logged, not trained on).
        Under torchrun every rank samples as many rollouts as the rank that needs the most, so the prompt queues agree.
        """
        cfg, group, target = self.config, self.config.samples_per_prompt, len(part.rows)
        first, sampled, kept, n_kept, dropped, rounds = part, list(part.grades), [], 0, 0, 0
        while True:
            scores = torch.tensor([float(g.score) for g in part.grades])  # (B,)
            uniform = uniform_groups(scores, group, cfg.uniform_tolerance)  # (P,); a group with a NaN is not uniform
            dropped += int(uniform.sum())
            chosen = (~uniform).nonzero().squeeze(1)[:target - n_kept]
            if len(chosen):
                kept.append(select_groups(part, chosen, group))
                n_kept += len(chosen)
            if rounds >= cfg.max_resample_rounds or not self.ranks.any(n_kept < target):
                break
            rounds += 1
            part = self._rollout(self.ranks.shard(self._next_rows()))
            sampled += part.grades
        if not kept:
            return first, sampled, dropped, rounds, False
        return merge_parts(kept, self.tokenizer.pad_token_id), sampled, dropped, rounds, True

    def step(self) -> dict[str, float]:
        """One PPO iteration: rollout -> grade -> rewards -> advantages -> update; returns the metrics."""
        cfg, start = self.config, time.perf_counter()
        group, minibatch_size = cfg.samples_per_prompt, cfg.minibatch_size // self.ranks.world_size

        # 1-2. Rollout and grade (self._rollout); with drop_uniform_groups, groups whose scores do not vary are dropped
        # and more prompts sampled until the batch is full (self._fill_batch).
        part = self._rollout(self.ranks.shard(self._next_rows()))
        sampled, uniform_dropped, resample_rounds, signal = list(part.grades), 0, 0, True
        if cfg.drop_uniform_groups:
            part, sampled, uniform_dropped, resample_rounds, signal = self._fill_batch(part)
        roll, old_logprobs, ref_logprobs, old_values, grades = part.roll, part.old_logprobs, part.ref_logprobs, part.old_values, part.grades
        tokens, real = roll.completion_ids, roll.completion_mask.float()  # (B, T) each

        # A non-finite score is skipped: its completion (for grpo/rloo: its whole group) gets no gradient.
        scores = torch.tensor([float(g.score) for g in grades])  # (B,)
        finite = torch.isfinite(scores)
        keep = finite.view(-1, group).all(dim=1).repeat_interleave(group) if cfg.advantage in ("grpo", "rloo") else finite
        keep = keep & signal  # dynamic sampling found no group with a signal: nothing to train on
        mask = real * keep[:, None].to(real.device)  # (B, T): the tokens whose rewards count
        # Overlong completions (no EOS by max_new_tokens): kept, left out of the loss, or softly penalised.
        shaped, trained = OVERLONG[cfg.overlong](torch.where(finite, scores, 0.0), real.sum(dim=1).cpu(), roll.has_eos.cpu(),
                                                 max_new_tokens=cfg.max_new_tokens, buffer=cfg.overlong_buffer)
        loss_mask = mask * trained[:, None].to(real.device)  # (B, T): the tokens trained on

        # 3. Rewards: the score on the last real token, the k1 KL penalty on every token.
        kl = kl_k1(old_logprobs, ref_logprobs) * real  # (B, T)
        rewards = token_rewards(shaped.to(real.device), kl, real, roll.has_eos,
                                kl_coef=self.kl_coef if cfg.kl_estimator == "k1" else 0.0, no_eos_penalty=cfg.no_eos_penalty)
        rewards = rewards * mask  # skipped completions carry no reward

        # 4. Advantages.
        returns = None
        if old_values is not None:
            advantages, returns = gae(rewards, old_values, mask, gamma=cfg.gamma, lam=cfg.lam)  # (B, T) each
        else:
            per_sequence = torch.zeros_like(scores).to(mask.device)  # (B,)
            kept = keep.to(mask.device)
            if bool(kept.any()):
                per_sequence[kept] = CRITIC_FREE[cfg.advantage](rewards.sum(dim=1)[kept], group, cfg.scale_advantages)
            advantages = per_sequence[:, None] * mask  # (B, T)
        advantages = advantages * loss_mask
        if cfg.whiten_advantages:
            advantages = whiten(advantages, loss_mask)
        mask = loss_mask  # from here on: the tokens trained on

        # 5. Update: several epochs over the groups with a kept completion, shuffled, a group's samples side by side so
        # that a minibatch runs each prompt once. Under torchrun every update averages gradients over the ranks, so all
        # ranks run as many minibatches as the one with the most such rows (the others fill up with dropped groups,
        # masked out) and skip a minibatch together.
        stats: dict[str, list[float]] = defaultdict(list)
        skipped_ratio = 0
        kept_group = keep.view(-1, group).any(dim=1)  # (B / group,)
        kept_groups, dropped_groups = kept_group.nonzero().squeeze(1), (~kept_group).nonzero().squeeze(1)
        n_rows = self.ranks.max(len(kept_groups) * group)
        micro_size = cfg.micro_batch_size or minibatch_size
        scored = roll if self.shared_prefix_update else dataclasses.replace(roll, prompt_ids=None, prompt_mask=None, rows=None)
        for _ in range(cfg.ppo_epochs if n_rows else 0):
            groups = torch.cat([kept_groups[torch.randperm(len(kept_groups), generator=self._generator)], dropped_groups])
            order = (groups[:, None] * group + torch.arange(group)).flatten()[:n_rows]  # (n_rows,) row indices
            for first in range(0, n_rows, minibatch_size):
                mb = order[first:first + minibatch_size].to(mask.device)
                mb_mask = mask[mb]
                if not self.ranks.any(bool(mb_mask.any())):  # only skipped (NaN) rows on every rank: no step, not even decay
                    continue
                weights = aggregation_weights(cfg.loss_aggregation, mb_mask, cfg.max_new_tokens)  # (M, T): the policy loss's
                # Micro-batches: each one's losses are token means over the whole minibatch (its mean times its share of
                # the minibatch's tokens), so the accumulated gradient is the one a single pass would give.
                n_tokens = mb_mask.sum().clamp(min=1)
                self.optimizer.zero_grad(set_to_none=True)
                mb_stats: dict[str, float] = defaultdict(float)
                for micro_first in range(0, len(mb), micro_size):
                    micro = mb[micro_first:micro_first + micro_size]
                    micro_mask = mask[micro]  # (m, T)
                    micro_weights = weights[micro_first:micro_first + micro_size]  # (m, T)
                    share = micro_mask.sum() / n_tokens
                    with self.policy.compute(), checkpointing(self.model, self.policy.gradient_checkpointing):
                        logits, hidden = score_completions(self.model, scored, micro, cfg.temperature)  # (m, T, V), (m, T, H)
                        logprobs = gather_logprobs(logits, tokens[micro], top_k=cfg.top_k, top_p=cfg.top_p) * micro_mask  # (m, T)
                        ratio = RATIOS[cfg.ratio_level](logprobs, old_logprobs[micro], micro_mask)  # (m, T)
                        per_token, clipped = clipped_surrogate(ratio, advantages[micro], *cfg.clip_range)  # (m, T) each
                        policy_loss = (per_token * micro_weights).sum()  # already this micro-batch's part of the minibatch's loss
                        clipfrac = masked_mean(clipped, micro_mask)
                        loss = torch.zeros((), device=policy_loss.device)  # the token-mean terms, weighted by `share` below
                        if self.value_head is not None and old_values is not None and returns is not None:
                            values = self.value_head(hidden.float()).squeeze(-1).float()  # (m, T)
                            value_loss = clipped_value_loss(values, old_values[micro], returns[micro], micro_mask, cfg.value_clip)
                            loss = loss + cfg.value_coef * value_loss
                            mb_stats["loss/value"] += (value_loss * share).item()
                        if cfg.kl_estimator == "k3" and self.kl_coef > 0:
                            kl_loss = masked_mean(kl_k3(logprobs, ref_logprobs[micro]), micro_mask)
                            loss = loss + self.kl_coef * kl_loss
                            mb_stats["loss/kl"] += (kl_loss * share).item()
                    self.scaler.scale(policy_loss + loss * share).backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
                    with torch.no_grad():
                        mb_stats["ratio"] += (masked_mean(ratio, micro_mask) * share).item()
                        mb_stats["loss/policy"] += policy_loss.item()
                        mb_stats["policy/clipfrac"] += (clipfrac * share).item()
                        mb_stats["policy/approx_kl"] += (approx_kl(logprobs, old_logprobs[micro], micro_mask) * share).item()
                        mb_stats["policy/entropy"] += (masked_mean(entropy_from_logits(logits.float()), micro_mask) * share).item()
                    del logits, hidden, loss
                if self.ranks.any(not mb_stats.pop("ratio") <= cfg.ratio_skip_threshold):  # the minibatch's mean ratio; NaN too
                    skipped_ratio += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                self.ranks.average_gradients(self.params)  # under torchrun: every rank takes the same step
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                for name, value in mb_stats.items():
                    stats[name].append(value)
        self.step_count += 1
        lr = float(self.scheduler.get_last_lr()[0])  # the rate this step ran at
        with warnings.catch_warnings():  # a first step with no update (nothing to train on) still advances the schedule
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before", category=UserWarning)
            self.scheduler.step()

        # 6. Log, then let the adaptive controller (if any) set the KL weight of the next step. Under torchrun the
        # figures are global: the grades of all ranks, the other metrics averaged over the ranks.
        all_grades = self.ranks.gather_grades(grades)
        metrics = {
            **_reward_metrics(self.ranks.gather_grades(sampled) if cfg.drop_uniform_groups else all_grades, "reward"),
            **self.ranks.mean({"kl/to_init": kl.sum(dim=1).mean().item(),
                               **{name: sum(values) / len(values) for name, values in stats.items()},
                               "rollout/completion_len": real.sum(dim=1).mean().item(),
                               "rollout/eos_frac": roll.has_eos.float().mean().item()}),
            "kl/coef": self.kl_coef,
            "update/lr": lr,
            "rollout/skipped_nan": float(sum(not math.isfinite(g.score) for g in all_grades)),
            "rollout/grade_timeouts": float(sum(self.ranks.gather([sum(bool(getattr(g, "timed_out", False)) for g in sampled)]))),
            "rollout/dropped_groups": float(sum(self.ranks.gather([uniform_dropped]))),
            "rollout/resample_rounds": float(resample_rounds),
            "update/skipped_ratio": float(skipped_ratio),
            "perf/samples_per_s": len(all_grades) / (time.perf_counter() - start),
        }
        if cfg.kl_target is not None:
            self.kl_coef = adaptive_kl_coef(self.kl_coef, metrics["kl/to_init"], target=cfg.kl_target, horizon=cfg.kl_horizon,
                                            n_samples=len(all_grades))
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Greedy completions of every eval row, graded: ``eval/reward/mean`` and ``eval/reward/<field>``.

        Without eval rows there is nothing to measure, so nothing is returned (rather than a NaN mean
        that a log, a plot or a summary would show as a reading)."""
        if not self.eval_rows:
            return {}
        grades: list[Scored] = []
        size, eval_rows = self.config.batch_size, self.ranks.shard(self.eval_rows)  # under torchrun, each rank grades a share
        for first in range(0, len(eval_rows), size):
            rows = eval_rows[first:first + size]
            with self.policy.compute():
                roll = generate_completions(self.model, self.tokenizer, [str(r["prompt"]) for r in rows], samples_per_prompt=1,
                                                max_new_tokens=self.config.max_new_tokens, temperature=None)
            grades += self.grader.grade_batch(roll.texts, [r["reference"] for r in rows])
        grades = self.ranks.gather_grades(grades)
        return {**_reward_metrics(grades, "eval/reward"),
                "eval/skipped_nan": float(sum(not math.isfinite(g.score) for g in grades))}

    # ----------------------------------------------------------------------- checkpoints and the training loop

    def save_checkpoint(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/step-<step>/`` atomically and keep the newest ``config.keep_last``; returns its path.

        Holds the policy and value-head weights (safetensors), the optimizer and scheduler states, the
        RNG states (torch CPU and CUDA, the minibatch generator, python ``random``), the
        prompt queue, the step and the config. numpy's RNG is not saved: nothing here uses it.
        Under torchrun every rank must call it: rank 0 writes, with every rank's RNG states, while the others wait.
        """
        rng = self.ranks.gather([rng_tensors(self._generator)])  # every rank's, rank 0's first

        def write(tmp: Path) -> None:
            save_policy(self.model, self.tokenizer, tmp)  # a model from_pretrained loads, or a peft adapter
            if self.value_head is not None:
                save_file(self.value_head.state_dict(), str(tmp / "value_head.safetensors"))
            states = [("optimizer.pt", self.optimizer.state_dict()), ("scheduler.pt", self.scheduler.state_dict())]
            if self.scaler.is_enabled():
                states.append(("scaler.pt", self.scaler.state_dict()))
            for name, state in states:
                with open(tmp / name, "wb") as file:  # through Python's file: a full disk raises OSError(ENOSPC), not a bare RuntimeError
                    torch.save(state, file)
            write_json(tmp / "trainer_state.json", {
                "step": self.step_count, "queue": self._queue, "kl_coef": self.kl_coef, "config": dataclasses.asdict(self.config),
                "lora": dataclasses.asdict(self.lora) if self.lora is not None else None,
                **save_rng(tmp, self._generator, self._rng, other_ranks=rng[1:])})

        if self.ranks.is_main:
            path = write_atomically(directory, self.step_count, write, keep_last=self.config.keep_last)
        self.ranks.barrier()  # no rank reads a checkpoint, or goes on, before it is complete
        return path if self.ranks.is_main else Path(directory) / checkpoint_name(self.step_count)

    def _restore(self, checkpoint: Path, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        load_policy(self.model, checkpoint, device)
        if self.scaler.is_enabled() and (checkpoint / "scaler.pt").is_file():
            self.scaler.load_state_dict(torch.load(checkpoint / "scaler.pt", weights_only=True))
        if self.value_head is not None:
            self.value_head.load_state_dict(load_file(str(checkpoint / "value_head.safetensors"), device=str(device)))
        self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
        if (checkpoint / "scheduler.pt").is_file():
            self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        else:  # written before the scheduler existed (at a constant rate): the schedule goes on from the checkpoint's step
            step = int(state["step"])
            for group in self.optimizer.param_groups:  # such an optimizer state has no "initial_lr" either
                group["initial_lr"] = self.config.learning_rate
                group["lr"] = self.config.learning_rate * self.scheduler.lr_lambdas[0](step)
            self.scheduler.load_state_dict({**self.scheduler.state_dict(), "last_epoch": step,
                                            "_last_lr": [group["lr"] for group in self.optimizer.param_groups]})
        self.step_count, self._queue = int(state["step"]), [int(i) for i in state["queue"]]
        self.kl_coef = float(state.get("kl_coef", self.config.kl_coef))
        if not load_rng(checkpoint, state, self._generator, self._rng, rank=self.ranks.rank):  # last: nothing after it may draw
            torch.manual_seed(self.config.seed + self.ranks.rank + self.ranks.world_size * self.step_count)  # saved by fewer ranks
            self._generator.manual_seed(self.config.seed + self.ranks.rank)

    def train(self, steps: int, *, log_dir: str | os.PathLike[str] | None = None, eval_every: int | None = None,
              checkpoint_every: int | None = None, console_every: int | None = 10,
              report_to: Sequence[str] = (), on_checkpoint: Callable[[int], None] | None = None) -> list[dict[str, float]]:
        """Run ``step()`` until ``step_count == steps`` (a total, so a resumed run stops where the original would).

        Every ``eval_every`` steps, and at every checkpoint, ``evaluate()``'s held-out greedy reward
        (``eval/reward/mean``, ``eval/reward/<field>``; nothing without eval rows) joins that step's metrics, which always hold
        ``kl/to_init``. With ``log_dir``: each step's metrics are appended to ``log_dir/metrics.jsonl``
        (lines after the current step, left by a killed run, are dropped first) and every
        ``checkpoint_every`` steps, and at the last, a checkpoint goes to ``log_dir/checkpoints``; at the end
        :func:`plot_metrics` draws ``log_dir/plots/{reward,kl,entropy}.png`` from the whole log. ``report_to``: trackers
        (``tensorboard``, ``wandb``, ``mlflow``; see ``rl/_logging.py``) that get every step's metrics too; they need ``log_dir``.
        A progress bar is drawn on stderr when it is a terminal. ``on_checkpoint(step)`` runs on the main process after each
        checkpoint is written (``rftkit train``'s ``eval_report``: an ``rftkit eval`` run of the eval rows). Returns the metrics of
        the steps run.
        """
        for name, value in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{name} must be an integer >= 1 or None, got {value!r}", code="bad_schedule", pointer=f"/{name}")
        if checkpoint_every is not None and log_dir is None:
            raise UserError("checkpoint_every needs a log_dir to write checkpoints into", code="bad_schedule",
                            pointer="/checkpoint_every", hint="pass log_dir=... or checkpoint_every=None")
        if report_to and log_dir is None:
            raise UserError("report_to needs a log_dir (metrics.jsonl is always written beside the trackers)", code="bad_schedule",
                            pointer="/report_to", hint="pass log_dir=... or report_to=()")
        main = self.ranks.is_main  # under torchrun, only rank 0 logs, draws and prints
        logger = (MetricsLogger(Path(log_dir) / "metrics.jsonl", start_step=self.step_count, console_every=console_every,
                                report_to=report_to, run_config=dataclasses.asdict(self.config))
                  if log_dir is not None and main else None)
        history = []
        stderr = Console(stderr=True)
        try:
            with Progress(console=stderr, transient=True, disable=not (main and sys.stderr.isatty())) as progress:
                task = progress.add_task("PPO", total=steps, completed=self.step_count)
                while self.step_count < steps:
                    metrics = self.step()
                    step = self.step_count
                    checkpoint = checkpoint_every is not None and (step % checkpoint_every == 0 or step == steps)
                    if checkpoint or (eval_every is not None and step % eval_every == 0):
                        metrics.update(self.evaluate())
                    if checkpoint and log_dir is not None:
                        self.save_checkpoint(Path(log_dir) / "checkpoints")
                        if on_checkpoint is not None and main:
                            on_checkpoint(step)
                    if logger is not None:
                        logger.log(step, metrics)
                    history.append(metrics)
                    progress.update(task, completed=step,
                                    description=f"PPO reward {metrics.get('reward/mean', math.nan):.3f}")
        finally:
            if logger is not None:
                logger.close()
        if log_dir is not None and main:
            plot_metrics(Path(log_dir) / "metrics.jsonl", Path(log_dir) / "plots")
        return history


def _reward_metrics(grades: Sequence[Scored], prefix: str) -> dict[str, float]:
    """``<prefix>/mean`` and ``<prefix>/<field>`` over the grades with a finite score (NaN when there are none).

    A field absent from a grade's ``sub_scores`` (an answer that did not parse) counts as 0 for that field.
    """
    finite = [g for g in grades if math.isfinite(g.score)]
    out = {f"{prefix}/mean": sum(g.score for g in finite) / len(finite) if finite else math.nan}
    totals: dict[str, float] = defaultdict(float)
    for g in finite:
        for name, value in g.sub_scores.items():
            totals[name] += value
    out.update({f"{prefix}/{name}": total / len(finite) for name, total in totals.items()})
    return out


def _check_rows(rows: Sequence[Mapping[str, Any]], name: str, *, allow_empty: bool) -> None:
    if not rows and not allow_empty:
        raise UserError(f"{name} is empty", code="bad_rows", pointer=f"/{name}", hint="pass at least one {'prompt', 'reference'} row")
    for i, row in enumerate(rows):
        for key in ("prompt", "reference"):
            if not isinstance(row, Mapping) or key not in row:
                raise UserError(f"{name}[{i}] has no {key!r}", code="bad_rows", pointer=f"/{name}/{i}/{key}",
                                hint="each row is a dict with 'prompt' (str) and 'reference' (the expected answer)")


_PLACEMENT = ("grade_backend", "grade_workers")
"""PPOConfig fields that say where work runs, not what it computes: a resumed run may change them."""


def _read_checkpoint(path: str | os.PathLike[str], config: PPOConfig | None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint at (or newest under) ``path`` and its ``trainer_state.json``; the config must match if given."""
    checkpoint = resolve_checkpoint(path)
    if checkpoint is None:
        raise UserError(f"no checkpoint at {os.fspath(path)!r}", code="bad_resume", pointer="/resume_from",
                        hint="pass a step-* directory written by save_checkpoint, or the directory holding them")
    state: dict[str, Any] = json.loads((checkpoint / "trainer_state.json").read_text())
    saved = dataclasses.asdict(PPOConfig(**state["config"]))  # fields added since the checkpoint was written take their defaults
    changed = sorted(k for k, v in dataclasses.asdict(config).items() if saved.get(k) != v and k not in _PLACEMENT) if config else []
    if changed:
        raise UserError(f"the checkpoint was written with a different config ({', '.join(changed)})", code="bad_resume",
                        pointer="/resume_from", hint="pass config=None to resume with the checkpoint's own config")
    return checkpoint, state
