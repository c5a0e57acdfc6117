"""Graders as trainers' reward functions: TRL, verl and OpenRLHF (the adapters are in ``graders.integrations``).

This file can also be handed to the trainers as it is, since it imports by
absolute names (verl and OpenRLHF load reward files outside any package):

* verl: ``custom_reward_function.path=<this file>``, ``name=compute_score`` (or
  ``compute_score_async``), with ``RFTKIT_GRADER=/path/to/grader.json`` in the
  environment or ``custom_reward_function.reward_kwargs.grader=/path/to/grader.json``;
* OpenRLHF: ``--reward.remote_url <this file>`` (0.10.2 and later; before, ``--remote_rm_url``;
  it loads ``reward_func``), with ``RFTKIT_GRADER`` set.

Its path: ``python -c "import graders.adapters as a; print(a.__file__)"``.
"""

from graders.integrations._common import GRADER_ENV, completion_text, field_names, label_item
from graders.integrations._openrlhf import openrlhf_reward_func, openrlhf_rewards, response_from_query
from graders.integrations._trl import TrlReward, trl_reward
from graders.integrations._verl import VerlComputeScore, compute_score, compute_score_async, verl_compute_score

reward_func = openrlhf_reward_func
"""The name OpenRLHF loads from a ``--reward.remote_url`` file."""

__all__ = [
    "GRADER_ENV",
    "TrlReward",
    "VerlComputeScore",
    "completion_text",
    "compute_score",
    "compute_score_async",
    "field_names",
    "label_item",
    "openrlhf_reward_func",
    "openrlhf_rewards",
    "response_from_query",
    "reward_func",
    "trl_reward",
    "verl_compute_score",
]
