"""rftkit.graders: turn a model's response into a typed object, compare it with a
reference field by field, and combine the comparisons into one scalar reward.

>>> from graders import StructuredGrader
>>> StructuredGrader().grade('{"city": "Los Angeles"}', {"city": "Los Angeles"}).score
1.0

The names here are the ones a user needs; the rest live in the subpackage that
owns them (``docs/architecture.md`` has the map): :mod:`graders.structured`
(parsing stages, field options, list pairing), :mod:`graders.comparators`,
:mod:`graders.openai` (templates, the formula, each OpenAI grader type),
:mod:`graders.adapters` (TRL, verl, OpenRLHF), :mod:`graders.serve` and
:mod:`graders.batch`.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import comparators
from ._config import AnyGrader, from_config
from ._errors import GraderConfigError
from ._gold import GoldCheck
from ._result import ERROR_FLAGS, FieldDetail, Grade
from ._run import run_grader, validate_grader
from .batch import grade_batch
from .openai._multi import MultiGrader
from .openai._similarity import TextSimilarityGrader
from .openai._string_check import StringCheckGrader
from .structured._grader import StructuredGrader
from .structured._options import FieldSpec

if _TYPE_CHECKING:
    from .openai._endpoint import EndpointGrader
    from .openai._model_grader import LabelModelGrader, ScoreModelGrader
    from .openai.python._grader import PythonGrader

_ON_FIRST_USE = {"PythonGrader": "graders.openai.python._grader", "ScoreModelGrader": "graders.openai._model_grader",
                 "LabelModelGrader": "graders.openai._model_grader", "EndpointGrader": "graders.openai._endpoint"}
"""Grader classes imported when first named: they bring subprocess and HTTP client code (httpx adds about
0.15 s) that ``import graders`` -- paid by every CLI command and every ``grade_batch`` worker -- does not need."""

_MOVED = {
    **dict.fromkeys(["Aggregation", "ListMode", "Decoded", "Extraction", "Parsed", "decode_json", "extract_json",
                     "parse_response", "Pair", "assign", "prf"], "graders.structured"),
    **dict.fromkeys(["Comparator", "ComparatorName", "make_comparator", "normalize_text", "parse_date", "parse_number"],
                    "graders.comparators"),
    **dict.fromkeys(["TrlReward", "VerlComputeScore", "openrlhf_reward_func", "trl_reward", "verl_compute_score"],
                    "graders.adapters"),
    **dict.fromkeys(["EvaluationMetric", "Formula", "MissingVariable", "Sample", "SampleGrader", "Template"], "graders.openai"),
    "GradeList": "graders.batch",
}
"""Names this package exported before its subpackages existed, and the subpackage that has them now. They still
import from here, for code written against the flat layout; new code imports them from the subpackage."""


def __getattr__(name: str) -> _Any:
    """The grader classes of :data:`_ON_FIRST_USE` on first use, and the names of :data:`_MOVED` from their home."""
    import importlib

    if name in _ON_FIRST_USE:
        value = getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'graders' has no attribute {name!r}")


__all__ = [
    "ERROR_FLAGS",
    "AnyGrader",
    "EndpointGrader",
    "FieldDetail",
    "FieldSpec",
    "GoldCheck",
    "Grade",
    "GraderConfigError",
    "LabelModelGrader",
    "MultiGrader",
    "PythonGrader",
    "ScoreModelGrader",
    "StringCheckGrader",
    "StructuredGrader",
    "TextSimilarityGrader",
    "comparators",
    "from_config",
    "grade_batch",
    "run_grader",
    "validate_grader",
]
