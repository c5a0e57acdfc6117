"""Graders as trainers' reward functions: TRL, verl and OpenRLHF, and verifiers environments (the adapters are in ``graders.integrations``).

This file can also be handed to the trainers as it is, since it imports by
absolute names (verl and OpenRLHF load reward files outside any package):

* verl: ``custom_reward_function.path=<this file>``, ``name=compute_score`` (or
  ``compute_score_async``), with ``RFTKIT_GRADER=/path/to/grader.json`` in the
  environment or ``custom_reward_function.reward_kwargs.grader=/path/to/grader.json``;
* OpenRLHF: ``--reward.remote_url <this file>`` (0.10.2 and later; before, ``--remote_rm_url``;
  it loads ``reward_func``), with ``RFTKIT_GRADER`` set.

Its path: ``python -c "import graders.adapters as a; print(a.__file__)"``.

The verifiers adapter (``graders.integrations._verifiers``) needs the ``rftkit[verifiers]`` extra; its
names are imported when first used, so this file loads without verifiers installed.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from graders.integrations._common import GRADER_ENV, completion_text, field_names, label_item
from graders.integrations._openrlhf import openrlhf_reward_func, openrlhf_rewards, response_from_query
from graders.integrations._trl import TrlReward, trl_reward
from graders.integrations._verl import VerlComputeScore, compute_score, compute_score_async, verl_compute_score

if _TYPE_CHECKING:
    from graders.integrations._verifiers import (
        SingleTurnEnv,
        SingleTurnEnvConfig,
        SingleTurnHarness,
        VerifiersGrader,
        VerifiersTask,
        VerifiersTaskConfig,
        VerifiersTaskData,
        VerifiersTaskset,
        VerifiersTasksetConfig,
        verifiers_grader,
        verifiers_metrics,
        verifiers_reward,
        verifiers_taskset,
    )

_VERIFIERS = frozenset({"SingleTurnEnv", "SingleTurnEnvConfig", "SingleTurnHarness", "VerifiersGrader", "VerifiersTask", "VerifiersTaskConfig", "VerifiersTaskData", "VerifiersTaskset",
                        "VerifiersTasksetConfig", "verifiers_grader", "verifiers_metrics", "verifiers_reward", "verifiers_taskset"})


def __getattr__(name: str) -> _Any:
    """The verifiers adapter's names, imported when first used (they need the ``rftkit[verifiers]`` extra)."""
    if name in _VERIFIERS:
        try:
            import graders.integrations._verifiers as module
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith("verifiers"):
                raise
            raise ImportError(f"graders.adapters.{name} needs the verifiers package: pip install 'rftkit[verifiers]'",
                              name=exc.name) from exc
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graders.adapters' has no attribute {name!r}")


reward_func = openrlhf_reward_func
"""The name OpenRLHF loads from a ``--reward.remote_url`` file."""

__all__ = [
    "GRADER_ENV",
    "SingleTurnEnv",
    "SingleTurnEnvConfig",
    "SingleTurnHarness",
    "TrlReward",
    "VerifiersGrader",
    "VerifiersTask",
    "VerifiersTaskConfig",
    "VerifiersTaskData",
    "VerifiersTaskset",
    "VerifiersTasksetConfig",
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
    "verifiers_grader",
    "verifiers_metrics",
    "verifiers_reward",
    "verifiers_taskset",
    "verl_compute_score",
]
