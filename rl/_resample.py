"""Dynamic sampling (``PPOConfig.drop_uniform_groups``): keep the groups with a signal, sample more, merge.

A step samples a rollout, grades it, keeps the groups whose scores vary (:func:`rl.uniform_groups`)
and, while fewer than ``prompts_per_batch`` such groups are in hand, samples further rollouts (at
most ``max_resample_rounds``), as DAPO does. The pieces are then merged into one rollout, so the
rest of the step (rewards, advantages, the update) runs as on a single rollout:

* :class:`Part` -- one rollout with what the step computed for it (log-probs, values, grades, rows);
* :func:`select_groups` -- a part's rows of the chosen groups;
* :func:`merge_parts` -- parts of different widths in one: prompts left-padded, completions
  right-padded (mask 0), shared prompts renumbered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._rollout import Rollout


@dataclass
class Part:
    """One sampled and graded rollout of a step."""

    roll: Rollout
    old_logprobs: torch.Tensor
    """(B, T) the sampling policy's log-probs of the tokens."""
    ref_logprobs: torch.Tensor
    """(B, T) the reference policy's."""
    old_values: torch.Tensor | None
    """(B, T) the value head's (``gae`` only)."""
    grades: list[Any]
    """(B,) the grades, in row order."""
    rows: list[Mapping[str, Any]]
    """(P,) the training rows sampled, one per group."""


def select_groups(part: Part, groups: torch.Tensor, group_size: int) -> Part:
    """The rows of ``groups`` (indices of groups, in order) of ``part``; shared prompts keep their numbering."""
    index = (groups[:, None] * group_size + torch.arange(group_size, device=groups.device)).flatten()  # (b,)
    roll = part.roll
    device_index = index.to(roll.input_ids.device)
    picked = Rollout(roll.input_ids[device_index], roll.attention_mask[device_index], roll.completion_mask[device_index],
                     roll.has_eos[device_index], [roll.texts[i] for i in index.tolist()], prompt_ids=roll.prompt_ids,
                     prompt_mask=roll.prompt_mask, rows=roll.rows[device_index] if roll.rows is not None else None)
    return Part(picked, part.old_logprobs[device_index], part.ref_logprobs[device_index],
                part.old_values[device_index] if part.old_values is not None else None,
                [part.grades[i] for i in index.tolist()], [part.rows[g] for g in groups.tolist()])


def _pad_right(x: torch.Tensor, width: int, value: float | int = 0) -> torch.Tensor:
    """``x`` (B, T, ...) padded with ``value`` on the right of dim 1 to ``width``."""
    if x.shape[1] == width:
        return x
    pad = x.new_full((x.shape[0], width - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)


def _pad_left(x: torch.Tensor, width: int, value: int = 0) -> torch.Tensor:
    """``x`` (B, L) padded with ``value`` on the left to ``width``."""
    if x.shape[1] == width:
        return x
    return torch.cat([x.new_full((x.shape[0], width - x.shape[1]), value), x], dim=1)


def merge_parts(parts: Sequence[Part], pad_id: int) -> Part:
    """One part holding every row of ``parts`` in order (each row's tokens, masks and log-probs unchanged).

    ``input_ids`` is ``[left-padded prompt | right-padded completion]``: each part's prompt section is
    left-padded to the widest, its completion section right-padded to the longest (mask 0 there).
    """
    if len(parts) == 1:
        return parts[0]
    steps = max(p.roll.completion_mask.shape[1] for p in parts)
    prompt_width = max(p.roll.input_ids.shape[1] - p.roll.completion_mask.shape[1] for p in parts)
    ids, attention = [], []
    for p in parts:
        t = p.roll.completion_mask.shape[1]
        ids.append(torch.cat([_pad_left(p.roll.input_ids[:, :-t], prompt_width, pad_id),
                              _pad_right(p.roll.input_ids[:, -t:], steps, pad_id)], dim=1))
        attention.append(torch.cat([_pad_left(p.roll.attention_mask[:, :-t], prompt_width),
                                    _pad_right(p.roll.attention_mask[:, -t:], steps)], dim=1))
    shared = all(p.roll.prompt_ids is not None and p.roll.prompt_mask is not None and p.roll.rows is not None for p in parts)
    prompt_ids = prompt_mask = rows = None
    if shared:
        width = max(p.roll.prompt_ids.shape[1] for p in parts if p.roll.prompt_ids is not None)
        prompt_ids = torch.cat([_pad_left(p.roll.prompt_ids, width, pad_id) for p in parts if p.roll.prompt_ids is not None])
        prompt_mask = torch.cat([_pad_left(p.roll.prompt_mask, width) for p in parts if p.roll.prompt_mask is not None])
        offsets, total = [], 0
        for p in parts:
            offsets.append(total)
            total += p.roll.prompt_ids.shape[0] if p.roll.prompt_ids is not None else 0
        rows = torch.cat([p.roll.rows + offset for p, offset in zip(parts, offsets) if p.roll.rows is not None])
    roll = Rollout(torch.cat(ids), torch.cat(attention), torch.cat([_pad_right(p.roll.completion_mask, steps) for p in parts]),
                   torch.cat([p.roll.has_eos for p in parts]), [t for p in parts for t in p.roll.texts],
                   prompt_ids=prompt_ids, prompt_mask=prompt_mask, rows=rows)
    values = [p.old_values for p in parts]
    return Part(roll, torch.cat([_pad_right(p.old_logprobs, steps) for p in parts]),
                torch.cat([_pad_right(p.ref_logprobs, steps) for p in parts]),
                torch.cat([_pad_right(v, steps) for v in values if v is not None]) if all(v is not None for v in values) else None,
                [g for p in parts for g in p.grades], [r for p in parts for r in p.rows])
