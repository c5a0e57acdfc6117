"""The PPO update's losses and diagnostics, as small pure functions.

Shapes: ``(B, T)`` per-token tensors and a ``(B, T)`` mask of real completion tokens.

* :func:`clipped_policy_loss` -- ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``
  averaged over real tokens, with ``ratio = exp(logp - logp_old)``; also returns
  the fraction of tokens where clipping was active.
* :func:`clipped_value_loss` -- ``0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2)``.
* :func:`kl_k1` / :func:`kl_k3` -- per-token estimators of KL(policy || reference):
  ``k1 = logp - logp_ref`` (unbiased, used inside the reward) and
  ``k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1`` (non-negative, low variance, used as a loss).
* :func:`approx_kl` -- ``mean(0.5 * (logp - logp_old)^2)``, the update-size diagnostic.
* :func:`entropy_from_logits` -- ``H = logsumexp(z) - sum softmax(z) * z``, per token.
"""

from __future__ import annotations

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


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(0.5 * (logp - logp_old)^2)`` over real tokens: how far one update moved the policy."""
    return masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension, per position: (B, T, V) -> (B, T)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
