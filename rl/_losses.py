"""The PPO update's losses and diagnostics, as small pure functions.

Shapes: ``(B, T)`` per-token tensors and a ``(B, T)`` mask of real completion tokens.

* :func:`clipped_policy_loss` -- ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``
  averaged over real tokens, with ``ratio = exp(logp - logp_old)``; also returns
  the fraction of tokens where clipping was active.
* :func:`clipped_value_loss` -- ``0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2)``.
* :func:`kl_k1` / :func:`kl_k3` -- per-token estimators of KL(policy || reference):
  ``k1 = logp - logp_ref`` (unbiased, used inside the reward) and
  ``k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1`` (non-negative, low variance, used as a loss).
* :func:`kl_from_logits` -- the exact per-token ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` over the
  vocabulary, for measuring (not training): no sampling noise, never negative.
* :func:`approx_kl` -- ``mean(0.5 * (logp - logp_old)^2)``, the update-size diagnostic.
* :func:`entropy_from_logits` -- ``H = logsumexp(z) - sum softmax(z) * z``, per token.
* :func:`adaptive_kl_coef` -- Ziegler et al.'s (2019) proportional controller for the KL
  coefficient: ``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)``.
"""

from __future__ import annotations

import math

import torch

from ._advantages import masked_mean


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate; returns ``(loss, clipfrac)``."""
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped < unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss (half the larger squared error)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)  # (B, T)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token ``logp - logp_ref``."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token ``exp(logp_ref - logp) - (logp_ref - logp) - 1`` (always >= 0)."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def kl_from_logits(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact per-position ``KL(softmax(logits) || softmax(ref_logits))``: (B, T, V), (B, T, V) -> (B, T).

    >>> z = torch.tensor([[[0.0, 1.0, 2.0]]])
    >>> float(kl_from_logits(z, z))
    0.0
    >>> round(float(kl_from_logits(z, torch.zeros(1, 1, 3))), 4)  # vs uniform: log 3 - H(p)
    0.2662
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * (logp - torch.log_softmax(ref_logits.float(), dim=-1))).sum(dim=-1)


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(0.5 * (logp - logp_old)^2)`` over real tokens: how far one update moved the policy."""
    return masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension, per position: (B, T, V) -> (B, T)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def adaptive_kl_coef(coef: float, kl: float, *, target: float, horizon: int, n_samples: int) -> float:
    """The next KL coefficient after a batch of ``n_samples`` completions whose mean KL was ``kl``.

    Ziegler et al. (2019, "Fine-Tuning Language Models from Human Preferences", section 2.2):
    ``e = clip(kl / target - 1, -0.2, 0.2)`` and ``coef * (1 + e * n_samples / horizon)``. Above
    the target the penalty grows, below it shrinks, by at most 20% per ``horizon`` completions;
    the clip keeps one odd batch from swinging it. ``kl`` is per completion (summed over its
    tokens), as ``kl/to_init`` is logged. A NaN ``kl`` leaves the coefficient unchanged.

    >>> round(adaptive_kl_coef(0.1, kl=12.0, target=6.0, horizon=1000, n_samples=100), 6)  # error +1 clipped to +0.2: x1.02
    0.102
    >>> round(adaptive_kl_coef(0.1, kl=5.4, target=6.0, horizon=1000, n_samples=100), 6)  # error -0.1: x0.99
    0.099
    """
    if not math.isfinite(kl):
        return coef
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_samples / horizon)


def lr_factor(step: int, *, warmup_steps: int, schedule: str, decay_steps: int | None) -> float:
    """The learning-rate multiplier for trainer step ``step`` (0 for the first step).

    Warm-up: ``(step + 1) / warmup_steps`` while ``step < warmup_steps``, so the first step
    already moves and the last warm-up step runs at the full rate. Then, with
    ``p = (step - warmup_steps) / (decay_steps - warmup_steps)`` clipped to [0, 1]:
    ``constant`` 1, ``linear`` ``1 - p``, ``cosine`` ``(1 + cos(pi p)) / 2``. From
    ``decay_steps`` on the rate is 0.

    >>> [round(lr_factor(s, warmup_steps=2, schedule="linear", decay_steps=6), 2) for s in range(7)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    >>> round(lr_factor(3, warmup_steps=0, schedule="cosine", decay_steps=6), 4)   # halfway: (1 + cos(pi / 2)) / 2
    0.5
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or decay_steps is None:
        return 1.0
    progress = min(max((step - warmup_steps) / (decay_steps - warmup_steps), 0.0), 1.0)
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
