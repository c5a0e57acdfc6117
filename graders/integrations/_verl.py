"""verl: a grader as a compute_score function."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._config import AnyGrader
from .._errors import GraderConfigError
from ._common import GRADER_ENV, GraderSource, _field_scores, build_grader, field_names, row_item

# --------------------------------------------------------------------------- verl


def _verl_key(field: str) -> str:
    return "score_field" if field == "score" else field


def _verl_result(grader: AnyGrader, declared: list[str], solution_str: str, ground_truth: Any,
                 data_source: Any, extra_info: Mapping[str, Any] | None) -> dict[str, float]:
    if ground_truth is None:
        raise GraderConfigError("ground_truth is None: every verl row needs reward_model.ground_truth",
                                code="missing_reference", hint="store the reference in each row's reward_model.ground_truth")
    base = {"data_source": data_source, "extra_info": dict(extra_info or {})}
    grade = grader.grade_row(solution_str, row_item(grader, ground_truth, base))
    out = {"score": grade.score}
    out.update({_verl_key(f): v for f, v in _field_scores(grade, declared).items()})
    return out


class VerlComputeScore:
    """A grader as verl's ``compute_score``; build it with :func:`verl_compute_score`.

    Returns ``{"score": s, <field>: ...}``: verl rewards with ``score`` and logs
    the other keys. verl needs the same keys on every row, which a schema (or a
    ``multi``) guarantees; a field named ``score`` is reported as ``score_field``.
    :meth:`score_async` is the same as a coroutine, for verl's async reward loop.

    >>> compute_score = verl_compute_score({"type": "structured", "schema": {"type": "object",
    ...     "properties": {"city": {"type": "string"}}}})
    >>> compute_score(data_source="d", solution_str='{"city": "Paris"}', ground_truth='{"city": "Paris"}')
    {'score': 1.0, 'city': 1.0}
    """

    def __init__(self, grader: GraderSource) -> None:
        self.grader = build_grader(grader)
        self._declared = field_names(self.grader)
        self.__name__ = "compute_score"

    def __call__(self, data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                 extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
        return _verl_result(self.grader, self._declared, solution_str, ground_truth, data_source, extra_info)

    async def score_async(self, data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                          extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
        """The async variant (grading is CPU work of microseconds, so it runs inline)."""
        return _verl_result(self.grader, self._declared, solution_str, ground_truth, data_source, extra_info)

    def __reduce__(self) -> tuple[Any, ...]:
        return (VerlComputeScore, (self.grader.config(),))


def verl_compute_score(grader: GraderSource) -> VerlComputeScore:
    """A verl ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`` for ``grader``.

    In the file that ``custom_reward_function.path`` names:
    ``compute_score = verl_compute_score("grader.json")`` (or
    ``compute_score = verl_compute_score(...).score_async`` for the async loop).
    """
    return VerlComputeScore(grader)


@lru_cache(maxsize=8)
def _cached(path: str) -> VerlComputeScore:
    return VerlComputeScore(path)


def _from_env(grader: str | None) -> VerlComputeScore:
    source = grader or os.environ.get(GRADER_ENV)
    if not source:
        raise GraderConfigError("no grader config: the adapter reads the file named by $RFTKIT_GRADER", code="no_grader",
                                hint="export RFTKIT_GRADER=/path/to/grader.json (verl: or reward_kwargs.grader=...)")
    return _cached(str(Path(source).resolve()))


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                  extra_info: Mapping[str, Any] | None = None, *, grader: str | None = None,
                  **kwargs: Any) -> dict[str, float]:
    """verl's ``compute_score``, grading with the config named by ``grader=`` or ``$RFTKIT_GRADER`` (cached)."""
    return _from_env(grader)(data_source, solution_str, ground_truth, extra_info)


async def compute_score_async(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                              extra_info: Mapping[str, Any] | None = None, *, grader: str | None = None,
                              **kwargs: Any) -> dict[str, float]:
    """The async :func:`compute_score` (verl picks async reward functions by ``inspect.iscoroutinefunction``)."""
    return await _from_env(grader).score_async(data_source, solution_str, ground_truth, extra_info)




