"""The PPO update's losses and diagnostics, as small pure functions.

Shapes: ``(B, T)`` per-token tensors and a ``(B, T)`` mask of real completion tokens.

* :func:`clipped_policy_loss` -- ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``
  averaged over real tokens, with ``ratio = exp(logp - logp_old)``; also returns
  the fraction of tokens where clipping was active.
* the recipe's variants (``PPOConfig``'s ``ratio_level``, ``clip_low``/``clip_high``, ``loss_aggregation``,
  ``overlong``), one small function each: :func:`token_ratio` / :func:`sequence_ratio` (GSPO's
  ``exp(mean_t (logp - logp_old))`` per completion), :func:`clipped_surrogate` (per token, with an asymmetric
  range ``[low, high]``), :data:`AGGREGATIONS` (``token``: ``sum / n_tokens``; ``sequence``: the mean of each
  row's token mean; ``constant``: ``sum / (n_rows * max_new_tokens)``) as per-token weights, so micro-batches
  add up exactly, and :func:`overlong_penalty` (DAPO's soft length penalty);
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
from collections.abc import Callable

import torch

from ._advantages import masked_mean


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, token ratios, symmetric clip, token mean; returns ``(loss, clipfrac)``."""
    per_token, clipped = clipped_surrogate(token_ratio(logprobs, old_logprobs, mask), advantages, 1.0 - clip, 1.0 + clip)
    return masked_mean(per_token, mask), masked_mean(clipped, mask)


def token_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token importance ratios ``exp(logp - logp_old)``: (B, T) -> (B, T)."""
    return torch.exp(logprobs - old_logprobs)


def sequence_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's ratio (Zheng et al. 2025, arXiv:2507.18071): ``s_i = exp(mean over row i's real tokens of (logp - logp_old))``,
    the geometric mean of the token ratios, broadcast to every token of the row: (B, T) -> (B, T).

    Gradients flow through the mean, so each token of a row gets ``s_i / |y_i|`` times its own log-prob gradient.

    >>> lp = torch.tensor([[0.1, 0.3, 0.0]]); m = torch.tensor([[1.0, 1.0, 0.0]])
    >>> [round(v, 4) for v in sequence_ratio(lp, torch.zeros(1, 3), m)[0].tolist()]
    [1.2214, 1.2214, 1.2214]
    """
    log_ratio = ((logprobs - old_logprobs) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B,)
    return torch.exp(log_ratio)[:, None].expand_as(logprobs)  # (B, T)


RATIOS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "token": token_ratio,
    "sequence": sequence_ratio,
}
"""``PPOConfig.ratio_level`` -> ``ratio(logprobs, old_logprobs, mask)``, (B, T)."""


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``-min(ratio * A, clip(ratio, low, high) * A)`` and where clipping was active (1.0/0.0), both (B, T).

    ``low = 1 - clip_low``, ``high = 1 + clip_high`` (``PPOConfig.clip_range``); DAPO's clip-higher is ``high > 2 - low``.

    >>> loss, clipped = clipped_surrogate(torch.tensor([[1.5, 0.5]]), torch.tensor([[1.0, 1.0]]), 0.8, 1.28)
    >>> [round(v, 4) for v in loss[0].tolist()], clipped[0].tolist()
    ([-1.28, -0.5], [1.0, 0.0])
    """
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, low, high) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).float()


def token_weights(mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """``token`` aggregation (DAPO; TRL's ``dapo``/``bnpo``): each real token of the minibatch weighs ``1 / n_tokens``."""
    return mask / mask.sum().clamp(min=1)


def sequence_weights(mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """``sequence`` aggregation (GRPO): a row's tokens weigh ``1 / (|y_i| * n_rows)``, rows without tokens not counted."""
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    rows = (lengths > 0).sum().clamp(min=1)
    return mask / (lengths.clamp(min=1) * rows)


def constant_weights(mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """``constant`` aggregation (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783): every token weighs ``1 / (n_rows * max_new_tokens)``,
    so a token's weight depends on neither its completion's length nor the others'; rows without tokens not counted."""
    rows = (mask.sum(dim=1) > 0).sum().clamp(min=1)
    return mask / (rows * max_new_tokens)


AGGREGATIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "token": token_weights,
    "sequence": sequence_weights,
    "constant": constant_weights,
}
"""``PPOConfig.loss_aggregation`` -> ``weights(mask, max_new_tokens)`` (B, T): the policy loss is ``(per_token * weights).sum()``
over the whole minibatch, so summing the micro-batches' ``(per_token * weights[micro]).sum()`` gives the same loss and gradient."""


def aggregation_weights(kind: str, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The per-token weights of ``kind`` (a :data:`AGGREGATIONS` key) for a minibatch's ``mask``, (B, T).

    >>> m = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    >>> [round(aggregation_weights(k, m, 4)[1, 0].item(), 6) for k in ("token", "sequence", "constant")]
    [0.2, 0.5, 0.125]
    """
    return AGGREGATIONS[kind](mask, max_new_tokens)


def overlong_penalty(lengths: torch.Tensor, *, max_new_tokens: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476), per completion, (B,) -> (B,), in [0, 1]:
    0 up to ``max_new_tokens - buffer`` tokens, then rising linearly to 1 at ``max_new_tokens``; subtracted from the score.

    >>> overlong_penalty(torch.tensor([10, 12, 14, 16]), max_new_tokens=16, buffer=4).tolist()
    [0.0, 0.0, 0.5, 1.0]
    """
    return ((lengths.float() - (max_new_tokens - buffer)) / buffer).clamp(0.0, 1.0)


def overlong_keep(scores: torch.Tensor, lengths: torch.Tensor, has_eos: torch.Tensor, *, max_new_tokens: int,
                  buffer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``overlong="keep"``: scores unchanged, every row trained on. Returns ``(scores, trained)``, (B,) each."""
    return scores, torch.ones_like(has_eos, dtype=torch.bool)


def overlong_mask(scores: torch.Tensor, lengths: torch.Tensor, has_eos: torch.Tensor, *, max_new_tokens: int,
                  buffer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``overlong="mask"``: a completion cut at ``max_new_tokens`` (no EOS) is left out of the loss; its score still
    counts in its group's baseline (as TRL's ``mask_truncated_completions``)."""
    return scores, has_eos.bool()


def overlong_soft(scores: torch.Tensor, lengths: torch.Tensor, has_eos: torch.Tensor, *, max_new_tokens: int,
                  buffer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``overlong="soft"``: :func:`overlong_penalty` subtracted from each score; every row trained on."""
    penalty = overlong_penalty(lengths, max_new_tokens=max_new_tokens, buffer=buffer).to(scores.dtype)
    return scores - penalty, torch.ones_like(has_eos, dtype=torch.bool)


OVERLONG: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "keep": overlong_keep,
    "mask": overlong_mask,
    "soft": overlong_soft,
}
"""``PPOConfig.overlong`` -> ``f(scores, lengths, has_eos, max_new_tokens=, buffer=) -> (scores, trained rows)``."""


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
