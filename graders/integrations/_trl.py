"""TRL: a grader as a GRPOTrainer reward function."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import GraderConfigError
from .._result import Grade
from ._common import _NOT_COLUMNS, GraderSource, _field_scores, _Hook, build_grader, completion_text, field_names

# --------------------------------------------------------------------------- TRL


class TrlReward:
    """A grader as a TRL reward function (``GRPOTrainer`` / ``RLOOTrainer``, 1.x); build it with :func:`trl_reward`.

    Called with keyword arguments only, as TRL calls reward functions. Row i is
    graded from ``completions[i]`` against ``kwargs[reference_column][i]``; a row
    whose reference is None gets None (TRL's "this reward does not apply here").
    When TRL passes its hooks, each field's batch mean goes to
    ``log_metric("reward/<name>/<field>", mean)`` with the share of flagged rows
    as ``reward/<name>/error_rate``, and the per-row field scores and reasons go to
    ``log_extra("reward/<name>/<field>", values)`` (the completions table).

    It pickles as its config (TRL's async trainer grades in another process).

    >>> reward = trl_reward({"type": "structured", "name": "city"})
    >>> reward(prompts=["p"], completions=['{"city": "Paris"}'], reference=[{"city": "Paris"}])
    [1.0]
    """

    def __init__(self, grader: GraderSource, *, reference_column: str = "reference", name: str | None = None) -> None:
        self.grader = build_grader(grader)
        self.reference_column = reference_column
        self.__name__ = name or self.grader.name
        """TRL logs this function's rewards as ``rewards/<__name__>/mean``."""
        self._declared = field_names(self.grader)

    def __call__(self, *, completions: Sequence[str | Sequence[Mapping[str, Any]]], log_extra: _Hook | None = None,
                 log_metric: _Hook | None = None, **kwargs: Any) -> list[float | None]:
        n = len(completions)
        has_reference = self.reference_column in kwargs
        if not has_reference and self.grader.needs_reference:
            names = sorted(k for k in kwargs if k not in _NOT_COLUMNS)
            raise GraderConfigError(f"the dataset has no {self.reference_column!r} column", code="missing_column",
                                    hint=f"columns TRL passed: {names}; give trl_reward(reference_column=...)")
        columns = {k: v for k, v in kwargs.items() if k not in _NOT_COLUMNS and isinstance(v, Sequence)
                   and not isinstance(v, str) and len(v) == n}
        refs: Sequence[Any] = kwargs[self.reference_column] if has_reference else [None] * n
        grades: list[Grade | None] = []
        for i, completion in enumerate(completions):
            if has_reference and refs[i] is None:
                grades.append(None)  # not this grader's row
                continue
            item = {k: v[i] for k, v in columns.items()}
            grades.append(self.grader.grade_row(completion_text(completion), {**item, "reference": refs[i]}))
        if log_metric is not None or log_extra is not None:
            self._log(grades, log_metric, log_extra)
        return [None if g is None else g.score for g in grades]

    def _log(self, grades: list[Grade | None], log_metric: _Hook | None, log_extra: _Hook | None) -> None:
        rows = [None if g is None else _field_scores(g, self._declared) for g in grades]
        fields = list(dict.fromkeys(f for r in rows if r is not None for f in r))
        prefix = f"reward/{self.__name__}"
        graded = [g for g in grades if g is not None]
        if log_metric is not None and graded:
            for f in fields:
                values = [r.get(f, 0.0) for r in rows if r is not None]
                log_metric(f"{prefix}/{f}", sum(values) / len(values))
            log_metric(f"{prefix}/error_rate", sum(not g.ok for g in graded) / len(graded))
        if log_extra is not None:
            for f in fields:
                log_extra(f"{prefix}/{f}", [None if r is None else r.get(f, 0.0) for r in rows])
            log_extra(f"{prefix}/reason", [None if g is None else g.reason for g in grades])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_trl, (self.grader.config(), self.reference_column, self.__name__))

    def __repr__(self) -> str:
        return f"TrlReward({self.__name__!r}, reference_column={self.reference_column!r})"


def _rebuild_trl(config: dict[str, Any], reference_column: str, name: str) -> TrlReward:
    return TrlReward(config, reference_column=reference_column, name=name)


def trl_reward(grader: GraderSource, *, reference_column: str = "reference", name: str | None = None) -> TrlReward:
    """A TRL reward function that grades with ``grader``: pass it in ``GRPOTrainer(reward_funcs=[...])``.

    ``reference_column`` names the dataset column holding each row's reference;
    ``name`` (default: the grader's name) is the function's ``__name__``, which
    TRL and the ``reward/<name>/<field>`` log keys use.
    """
    return TrlReward(grader, reference_column=reference_column, name=name)




