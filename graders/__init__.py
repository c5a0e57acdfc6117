"""rftkit.graders: turn a model's response into a typed object, compare it with a
reference field by field, and combine the comparisons into one scalar reward.

>>> from graders import StructuredGrader
>>> StructuredGrader().grade('{"city": "Los Angeles"}', {"city": "Los Angeles"}).score
1.0
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import comparators
from ._config import AnyGrader, from_config
from ._errors import GraderConfigError
from ._gold import GoldCheck
from ._result import ERROR_FLAGS, FieldDetail, Grade
from ._run import run_grader, validate_grader
from .batch import GradeList, grade_batch
from .comparators._base import Comparator, ComparatorName
from .comparators._numbers import parse_date, parse_number
from .comparators._registry import make_comparator
from .comparators._text import normalize_text
from .integrations._openrlhf import openrlhf_reward_func
from .integrations._trl import TrlReward, trl_reward
from .integrations._verl import VerlComputeScore, verl_compute_score
from .openai._common import SampleGrader
from .openai._formula import Formula
from .openai._multi import MultiGrader
from .openai._similarity import EvaluationMetric, TextSimilarityGrader
from .openai._string_check import StringCheckGrader
from .openai._templates import MissingVariable, Sample, Template
from .structured._decode import decode_json, parse_response
from .structured._extract import Decoded, Extraction, Parsed, extract_json
from .structured._grader import StructuredGrader
from .structured._matching import Pair, assign, prf
from .structured._options import Aggregation, FieldSpec, ListMode

if _TYPE_CHECKING:
    from .openai._endpoint import EndpointGrader
    from .openai._model_grader import LabelModelGrader, ScoreModelGrader
    from .openai.python._grader import PythonGrader

_ON_FIRST_USE = {"PythonGrader": "openai.python._grader", "ScoreModelGrader": "openai._model_grader",
                 "LabelModelGrader": "openai._model_grader", "EndpointGrader": "openai._endpoint"}


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
