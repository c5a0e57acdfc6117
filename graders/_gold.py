"""The gold self-check of an OpenAI-type grader: the reference, written by the model, must score the maximum.

``rftkit validate --grader G --reference COL`` grades every row's reference as
if the model had written it. A ``structured`` grader compares
``(response, reference)``, so the reference is graded against itself
(``graders.datasets.validate_dataset`` does that directly). Every other type grades a
sample and an item; :class:`GoldCheck` gives ``validate_dataset`` the same check
for them: the sample is the reference (``output_json`` = the reference,
``output_text`` = its JSON; a string reference is the output text itself, and its
``output_json`` is parsed from it as for any answer), the item is the row. A row
whose reference cannot reach the maximum shows a template that reads the wrong
field, an operation the wrong way round, or a bad reference, before anything trains.

What "the maximum" is, per type (:func:`maximum`):

==================  ===========================================================
``string_check``    1
``text_similarity`` ``pass_threshold`` when set (the grade must pass), else the
                    metric's score of the rendered reference against itself: 1,
                    except ``meteor`` (``1 - 0.5 / n ** 3`` for n words) and
                    ``rouge_n`` on fewer than n words (0)
``python``          ``pass_threshold`` when set, else 1 (scores are clamped to [0, 1])
``score_model``     ``pass_threshold`` when set, else the top of ``range``
``label_model``     1 (a passing label)
``endpoint``        ``pass_threshold`` when set, else 1
``structured``      1 (inside a ``multi``)
``multi``           ``calculate_output`` over its sub-graders' maxima, clamped to
                    [0, 1]; and every sub-grader must reach its own maximum
==================  ===========================================================

A ``python`` grader runs the user's own code on every row, as training will.
``score_model``, ``label_model`` and ``endpoint`` call a model or a server for
every row, which costs time and money: the check is left out for a grader that
holds one (the report says so) unless ``call_models=True`` (``--gold-calls``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ._registry import GRADER_TYPES
from ._result import Grade
from .datasets._records import GoldVerdict
from .openai._common import SampleGrader, render_pair
from .openai._multi import MultiGrader
from .openai._similarity import TextSimilarityGrader
from .openai._templates import Sample

CALLING_TYPES = frozenset(name for name, kind in GRADER_TYPES.items() if kind.calls_out)
"""Grader types whose grade calls a model or a server: the gold check skips them unless asked."""

_EPS = 1e-9


def gold_sample(reference: Any) -> Sample:
    """The reference as the model's answer: ``output_json`` is the reference, ``output_text`` its JSON.

    >>> s = gold_sample({"city": "Paris"})
    >>> s.output_text, s.output_json
    ('{"city": "Paris"}', {'city': 'Paris'})
    >>> gold_sample("Paris").output_text
    'Paris'
    """
    if isinstance(reference, str):
        return Sample(reference)
    return Sample({"output_text": json.dumps(reference, ensure_ascii=False), "output_json": reference})


def maximum(grader: SampleGrader, sample: Sample, item: Mapping[str, Any]) -> float | None:
    """The most ``grader`` can score on this row (see the module docstring); None when it cannot be known.

    >>> from graders import from_config
    >>> check = {"type": "string_check", "name": "c", "operation": "eq", "input": "x", "reference": "x"}
    >>> maximum(from_config({"type": "multi", "name": "m", "calculate_output": "0.5 * a + 0.4 * b",
    ...                      "graders": {"a": check, "b": check}}), gold_sample("x"), {})
    0.9
    """
    threshold = getattr(grader, "pass_threshold", None)
    if isinstance(grader, MultiGrader):
        maxima = {key: maximum(sub, sample, item) for key, sub in grader.graders.items()}
        if any(m is None for m in maxima.values()):
            return None
        value = grader.calculate_output({k: float(m) for k, m in maxima.items() if m is not None})
        return min(max(value, 0.0), 1.0) if math.isfinite(value) else None
    if threshold is not None:
        return float(threshold)
    if isinstance(grader, TextSimilarityGrader):
        rendered = render_pair(grader.reference, grader.reference, sample, item)
        return 1.0 if isinstance(rendered, Grade) else grader.similarity(rendered[1], rendered[1])
    if grader.type == "score_model":
        return float(getattr(grader, "high", 1.0))
    return 1.0


def _types(grader: SampleGrader) -> list[tuple[str, str]]:
    """(name, type) of the grader and, for a ``multi``, of every sub-grader."""
    if isinstance(grader, MultiGrader):
        return [(key, sub.type) for key, sub in grader.graders.items()]
    return [(grader.name, grader.type)]


class GoldCheck:
    """An OpenAI-type grader wrapped for the gold self-check of :func:`graders.datasets.validate_dataset`.

    >>> from graders import from_config
    >>> check = GoldCheck(from_config({"type": "string_check", "name": "city", "operation": "eq",
    ...                                "input": "{{ sample.output_json.city }}", "reference": "{{ item.answer.city }}"}))
    >>> check.gold_check({"city": "Paris"}, {"answer": {"city": "Paris"}}).passed
    True
    >>> check.gold_check({"city": "Paris"}, {"answer": {"city": "Lima"}}).short
    {'city': (0.0, 1.0)}
    """

    def __init__(self, grader: SampleGrader, *, call_models: bool = False) -> None:
        self.grader = grader
        calling = [f"{t} {name!r}" for name, t in _types(grader) if t in CALLING_TYPES]
        self.gold_skipped: str | None = None
        """Why the check does not run (None: it runs)."""
        if calling and not call_models:
            self.gold_skipped = (f"{', '.join(calling)} calls a model or a server for every row; "
                                 "pass --gold-calls (call_models=True) to run it anyway")

    def gold_check(self, reference: Any, row: Mapping[str, Any]) -> GoldVerdict:
        """Grade ``reference`` as the model's answer with ``row`` as the item; what fell short of its maximum."""
        sample = gold_sample(reference)
        grade = self.grader.grade(sample, row)
        top = maximum(self.grader, sample, row)
        short: dict[str, tuple[float, float]] = {}
        if isinstance(self.grader, MultiGrader):
            for key, sub in self.grader.graders.items():
                best = maximum(sub, sample, row)
                got = grade.sub_scores.get(key, 0.0)
                if best is not None and got < best - _EPS:
                    short[key] = (got, best)
        elif top is not None and grade.score < top - _EPS:
            short[self.grader.name] = (grade.score, top)
        return GoldVerdict(grade.score, grade.score if top is None else top, short, grade.reason)

    def __repr__(self) -> str:
        return f"GoldCheck({self.grader!r})"
