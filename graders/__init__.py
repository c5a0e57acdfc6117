"""rftkit.graders: turn a model's response into a typed object, compare it with a
reference field by field, and combine the comparisons into one scalar reward.

>>> from graders import StructuredGrader
>>> StructuredGrader().grade('{"city": "Los Angeles"}', {"city": "Los Angeles"}).score
1.0
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import comparators
from ._adapters import TrlReward, VerlComputeScore, openrlhf_reward_func, trl_reward, verl_compute_score
from ._batch import GradeList, grade_batch
from ._comparators import Comparator, ComparatorName, make_comparator, normalize_text, parse_date, parse_number
from ._config import AnyGrader, from_config
from ._errors import GraderConfigError
from ._formula import Formula
from ._gold import GoldCheck
from ._matching import Pair, assign, prf
from ._openai import MultiGrader, SampleGrader, StringCheckGrader
from ._parsing import Decoded, Extraction, Parsed, decode_json, extract_json, parse_response
from ._result import ERROR_FLAGS, FieldDetail, Grade
from ._run import run_grader, validate_grader
from ._similarity import EvaluationMetric, TextSimilarityGrader
from ._structured import Aggregation, FieldSpec, ListMode, StructuredGrader
from ._templates import MissingVariable, Sample, Template

if _TYPE_CHECKING:
    from ._endpoint_grader import EndpointGrader
    from ._model_grader import LabelModelGrader, ScoreModelGrader
    from ._python_grader import PythonGrader

_ON_FIRST_USE = {"PythonGrader": "_python_grader", "ScoreModelGrader": "_model_grader",
                 "LabelModelGrader": "_model_grader", "EndpointGrader": "_endpoint_grader"}


def __getattr__(name: str) -> _Any:
    """The python, model and endpoint grader classes, imported when first named.

    They bring subprocess and HTTP client code (httpx adds about 0.15 s) that
    ``import graders`` -- paid by every CLI command and every ``grade_batch``
    worker -- does not need; ``from_config`` loads them the same way.
    """
    if name in _ON_FIRST_USE:
        import importlib

        value = getattr(importlib.import_module(f"graders.{_ON_FIRST_USE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graders' has no attribute {name!r}")

__all__ = [
    "ERROR_FLAGS",
    "Aggregation",
    "AnyGrader",
    "Comparator",
    "ComparatorName",
    "Decoded",
    "EndpointGrader",
    "EvaluationMetric",
    "Extraction",
    "FieldDetail",
    "FieldSpec",
    "Formula",
    "GoldCheck",
    "Grade",
    "GradeList",
    "GraderConfigError",
    "LabelModelGrader",
    "ListMode",
    "MissingVariable",
    "MultiGrader",
    "Pair",
    "Parsed",
    "PythonGrader",
    "Sample",
    "SampleGrader",
    "ScoreModelGrader",
    "StringCheckGrader",
    "StructuredGrader",
    "Template",
    "TextSimilarityGrader",
    "TrlReward",
    "VerlComputeScore",
    "assign",
    "comparators",
    "decode_json",
    "extract_json",
    "from_config",
    "grade_batch",
    "make_comparator",
    "normalize_text",
    "openrlhf_reward_func",
    "parse_date",
    "parse_number",
    "parse_response",
    "prf",
    "run_grader",
    "trl_reward",
    "validate_grader",
    "verl_compute_score",
]
