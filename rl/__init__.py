"""rftkit.rl: the compact PPO trainer (the only package that imports torch and transformers).

Built so far:

* the maths, each a pure function tested against a plain loop: the advantage
  estimators (``gae``, ``grpo``, ``rloo``, ``reinforce_pp``, ``whiten``), the
  losses (``clipped_policy_loss``, ``clipped_value_loss``, ``kl_k1``, ``kl_k3``,
  ``kl_from_logits``, ``approx_kl``, ``entropy_from_logits``), the adaptive KL controller
  (``adaptive_kl_coef``), the learning-rate schedule (``lr_factor``) and the per-token
  rewards (``token_rewards``);
* the recipe's variants for graded rewards, each a small function chosen by a ``PPOConfig``
  ``Literal``: ``clipped_surrogate`` with an asymmetric clip range, ``sequence_ratio`` (GSPO),
  ``aggregation_weights`` (token / sequence / constant), ``group_centred`` with a group, batch or no
  std divisor, ``uniform_groups`` (dynamic sampling's tolerance test), ``overlong_penalty`` (DAPO);
  the trainer drops uniform groups and samples more (``rl._resample``) and grades under a deadline
  (``rl._grading``);
* ``PPOConfig`` (every knob, checked at construction; a fixed or adaptive KL coefficient;
  micro-batches), ``ModelConfig`` (mixed precision: float32 master weights, autocast in the
  model's dtype; gradient checkpointing; loading knobs) and ``LoRAConfig`` (peft adapters, the
  reference being the base with them off), applied by ``rl._model``;
* rollouts: ``generate_completions`` (batched, left-padded, KV-cached sampling)
  and ``sequence_logprobs`` (log-probs under the sampling temperature); the trainer
  itself samples and scores with each prompt run once per group (``rl._shared_prefix``);
* ``PPOTrainer``: one ``step()`` is rollout -> grade -> rewards -> advantages ->
  clipped update -> metrics; ``evaluate()`` grades greedy completions;
  ``save_checkpoint()`` writes an atomic checkpoint (safetensors weights, optimizer,
  RNG states, step, config) and ``PPOTrainer(..., resume_from=dir)`` continues from
  it; ``train()`` runs steps, evaluations and checkpoints on a schedule;
* ``MetricsLogger`` (one JSON line per step plus a rich console table),
  ``read_metrics`` and ``plot_metrics`` (PNG plots of reward per field, KL and
  entropy; ``train()`` draws them at the end of a logged run);
* the ``rftkit train CONFIG`` command (``rl._cli``) and the ``rftkit demo`` command
  (``rl._demo``: warm start and PPO of a tiny GPT-2 on résumé extraction, offline),
  both registered through the ``rftkit.commands`` entry point and imported only when
  they run;
* data-parallel training under ``torchrun`` (``rl._distributed``; gloo on CPU, nccl on
  CUDA): ``torchrun --nproc_per_node 2 -m rl train CONFIG``, or any script that builds a
  ``PPOTrainer``; each rank trains on its shard of each batch, gradients are averaged,
  rank 0 alone writes.
"""

from ._advantages import (
    AdvantageEstimator,
    AdvantageScale,
    gae,
    group_centred,
    grpo,
    masked_mean,
    reinforce_pp,
    rloo,
    uniform_groups,
    whiten,
)
from ._config import DType, KLEstimator, LoRAConfig, LossAggregation, LRSchedule, ModelConfig, Overlong, PPOConfig, RatioLevel
from ._logging import MetricsLogger, read_metrics
from ._losses import (
    adaptive_kl_coef,
    aggregation_weights,
    approx_kl,
    clipped_policy_loss,
    clipped_surrogate,
    clipped_value_loss,
    entropy_from_logits,
    kl_from_logits,
    kl_k1,
    kl_k3,
    lr_factor,
    overlong_penalty,
    sequence_ratio,
)
from ._plots import plot_metrics
from ._rollout import Rollout, generate_completions, sequence_logprobs
from ._trainer import BatchGrader, PPOTrainer, Scored, token_rewards

__all__ = [
    "AdvantageEstimator",
    "AdvantageScale",
    "BatchGrader",
    "DType",
    "KLEstimator",
    "LRSchedule",
    "LoRAConfig",
    "LossAggregation",
    "MetricsLogger",
    "ModelConfig",
    "Overlong",
    "PPOConfig",
    "PPOTrainer",
    "RatioLevel",
    "Rollout",
    "Scored",
    "adaptive_kl_coef",
    "aggregation_weights",
    "approx_kl",
    "clipped_policy_loss",
    "clipped_surrogate",
    "clipped_value_loss",
    "entropy_from_logits",
    "gae",
    "generate_completions",
    "group_centred",
    "grpo",
    "kl_from_logits",
    "kl_k1",
    "kl_k3",
    "lr_factor",
    "masked_mean",
    "overlong_penalty",
    "plot_metrics",
    "read_metrics",
    "reinforce_pp",
    "rloo",
    "sequence_logprobs",
    "sequence_ratio",
    "token_rewards",
    "uniform_groups",
    "whiten",
]
