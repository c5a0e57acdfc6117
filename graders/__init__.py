"""rftkit.graders: turn a model's response into a typed object, compare it with a
reference field by field, and combine the comparisons into one scalar reward.

>>> from graders import StructuredGrader
>>> StructuredGrader().grade('{"city": "Los Angeles"}', {"city": "Los Angeles"}).score
1.0
"""

from . import comparators
from ._adapters import TrlReward, VerlComputeScore, openrlhf_reward_func, trl_reward, verl_compute_score
from ._batch import grade_batch
from ._comparators import Comparator, ComparatorName, make_comparator, normalize_text, parse_date, parse_number
from ._config import AnyGrader, from_config
from ._errors import GraderConfigError
from ._formula import Formula
from ._matching import Pair, assign, prf
from ._openai import MultiGrader, SampleGrader, StringCheckGrader
from ._parsing import Decoded, Extraction, Parsed, decode_json, extract_json, parse_response
from ._result import ERROR_FLAGS, FieldDetail, Grade
from ._run import run_grader, validate_grader
from ._similarity import EvaluationMetric, TextSimilarityGrader
from ._structured import Aggregation, FieldSpec, ListMode, StructuredGrader
from ._templates import MissingVariable, Sample, Template

__all__ = [
    "ERROR_FLAGS",
    "Aggregation",
    "AnyGrader",
    "Comparator",
    "ComparatorName",
    "Decoded",
    "EvaluationMetric",
    "Extraction",
    "FieldDetail",
    "FieldSpec",
    "Formula",
    "Grade",
    "GraderConfigError",
    "ListMode",
    "MissingVariable",
    "MultiGrader",
    "Pair",
    "Parsed",
    "Sample",
    "SampleGrader",
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
