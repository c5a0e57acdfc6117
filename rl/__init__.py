"""rftkit.rl: the maths of the compact PPO trainer (the only package that imports torch).

Built so far: the advantage estimators (``gae``, ``grpo``, ``rloo``,
``reinforce_pp``, ``whiten``) and the losses (``clipped_policy_loss``,
``clipped_value_loss``, ``kl_k1``, ``kl_k3``, ``approx_kl``,
``entropy_from_logits``), each a pure function tested against a plain loop.
Not built yet: the rollout/update loop (``PPOTrainer``), checkpoints, the
``train`` command and the RL demo.
"""

from ._advantages import AdvantageEstimator, gae, grpo, masked_mean, reinforce_pp, rloo, whiten
from ._losses import approx_kl, clipped_policy_loss, clipped_value_loss, entropy_from_logits, kl_k1, kl_k3

__all__ = [
    "AdvantageEstimator",
    "approx_kl",
    "clipped_policy_loss",
    "clipped_value_loss",
    "entropy_from_logits",
    "gae",
    "grpo",
    "kl_k1",
    "kl_k3",
    "masked_mean",
    "reinforce_pp",
    "rloo",
    "whiten",
]
