"""Advantage estimators: how a scalar reward becomes a per-token learning signal.

Each estimator is its own pure function, chosen by name, and has a
test against a plain Python loop. Shapes: ``B`` sequences, ``T`` completion
tokens, ``G`` samples per prompt (sequences of one prompt are contiguous, so
``B = P * G``).

* :func:`gae` -- PPO with a value head: generalised advantage estimation,
  ``delta_t = r_t + gamma * V_{t+1} - V_t``, ``A_t = delta_t + gamma * lambda * A_{t+1}``,
  returns ``R_t = A_t + V_t``; ``V`` after the last real token is 0.
* :func:`grpo` -- critic-free: each sample's score minus its group's mean,
  divided by the group's standard deviation (+ eps); :func:`group_centred` and the
  scalers of :data:`ADVANTAGE_SCALES` (``group``, ``batch``, ``none``) are its two halves,
  so ``PPOConfig.scale_advantages`` can swap the divisor (Dr. GRPO divides by nothing).
* :func:`rloo` -- critic-free, leave-one-out: each sample's score minus the
  mean of the *other* samples of its prompt, ``k/(k-1) * (s_i - mean)``.
* :func:`reinforce_pp` -- critic-free REINFORCE++: scores normalised across the
  whole batch (no per-prompt baseline), which keeps the estimate unbiased by
  group size.

:func:`whiten` normalises advantages over the real (masked-in) tokens. :func:`uniform_groups`
finds the groups whose scores do not vary (within a tolerance), which carry no group-relative signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

AdvantageEstimator = Literal["gae", "grpo", "rloo", "reinforce++"]
AdvantageScale = Literal["group", "batch", "none"]
"""What ``grpo`` divides a centred score by: its group's std, the whole batch's, or nothing."""


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) over the masked-in positions; padding stays 0.

    >>> x = torch.tensor([[1.0, 2.0, 3.0, 0.0]]); m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    >>> [round(v, 4) + 0.0 for v in whiten(x, m)[0].tolist()]
    [-1.2247, 0.0, 1.2247, 0.0]
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over completion tokens.

    ``rewards``, ``values`` and ``mask`` are (B, T); padding (mask 0) comes after
    each sequence's last real token. Returns ``(advantages, returns)``, both (B, T),
    zero on padding.
    """
    values = values * mask  # (B, T): V beyond the last real token is 0
    rewards = rewards * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(steps)):  # trailing padding is all zeros, so it adds nothing to `running`
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    if scores.ndim != 1 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size}")
    return scores.view(-1, group_size)  # (P, G)


def grpo(scores: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """Per-sequence advantages ``(s - mean_group) / (std_group + eps)``, shape (B,).

    >>> [round(v, 4) for v in grpo(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2).tolist()]
    [0.7071, -0.7071, 0.0, 0.0]
    """
    g = _groups(scores, group_size)
    return ((g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + eps)).reshape(-1)


def group_centred(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each score minus its group's mean, shape (B,).

    >>> group_centred(torch.tensor([1.0, 0.0, 0.25, 0.75]), 2).tolist()
    [0.5, -0.5, -0.25, 0.25]
    """
    g = _groups(scores, group_size)
    return (g - g.mean(dim=1, keepdim=True)).reshape(-1)


def scale_by_group_std(centred: torch.Tensor, scores: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """``centred / (std of the sample's group's scores + eps)`` (GRPO), shape (B,)."""
    std = _groups(scores, group_size).std(dim=1).repeat_interleave(group_size)  # (B,)
    return centred / (std + eps)


def scale_by_batch_std(centred: torch.Tensor, scores: torch.Tensor, group_size: int, *, eps: float = 1e-6) -> torch.Tensor:
    """``centred / (std of all the batch's scores + eps)``: one divisor, so a group's spread is kept, shape (B,)."""
    _groups(scores, group_size)
    return centred / (scores.std() + eps) if scores.numel() > 1 else centred


def scale_none(centred: torch.Tensor, scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """No division (Dr. GRPO: a std divisor favours prompts that are too easy or too hard), shape (B,)."""
    _groups(scores, group_size)
    return centred


ADVANTAGE_SCALES: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "group": scale_by_group_std,
    "batch": scale_by_batch_std,
    "none": scale_none,
}
"""``PPOConfig.scale_advantages`` -> ``scale(centred, scores, group_size)``."""


def uniform_groups(scores: torch.Tensor, group_size: int, tolerance: float) -> torch.Tensor:
    """(P,) True for each group whose scores all lie within ``tolerance`` of each other (``max - min <= tolerance``).

    Such a group's group-relative advantages are 0 (or float noise divided by a tiny std), so it carries no
    GRPO/RLOO signal. A tolerance, not equality: continuous scores computed along different paths differ in
    their last bits. A group with a NaN score is not uniform (the NaN rule of the trainer handles it).

    >>> uniform_groups(torch.tensor([0.7, 0.7 + 1e-9, 0.7, 0.7, 0.71, 0.7]), 3, 1e-6).tolist()
    [True, False]
    """
    g = _groups(scores, group_size)
    return (g.amax(dim=1) - g.amin(dim=1)) <= tolerance


def rloo(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out baseline: ``s_i - mean(s_j, j != i)`` within each group, shape (B,).

    >>> rloo(torch.tensor([1.0, 0.0, 0.5]), 3).tolist()
    [0.75, -0.75, 0.0]
    """
    if group_size < 2:
        raise ValueError("rloo needs at least 2 samples per prompt")
    g = _groups(scores, group_size)
    others = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)


def reinforce_pp(scores: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++: scores normalised over the whole batch, shape (B,).

    >>> [round(v, 4) for v in reinforce_pp(torch.tensor([1.0, 0.0, 0.5, 0.5])).tolist()]
    [1.4142, -1.4142, 0.0, 0.0]
    """
    centred = scores - scores.mean()
    return centred / (centred.pow(2).mean().sqrt() + eps)
