"""OpenAI's grader types, run locally, and what they share.

Owns the shared config checks and error helpers (``_common``), templates
(``_templates``: ``{{ item.x }}``, ``{{ sample.output_json.y }}``), the ``multi``
formula language (``_formula``), and one module per grader type: ``string_check``
(``_string_check``), ``text_similarity`` (``_similarity``, ``_wordnet``),
``multi`` (``_multi``), ``score_model``/``label_model`` (``_model_grader`` with
``_model_io`` and ``_model_backends``), ``endpoint`` (``_endpoint``) and ``python``
(the :mod:`graders.openai.python` sandbox subpackage).

The python, model and endpoint graders are not imported here (they bring
subprocess and HTTP client code); ``graders.PythonGrader`` and ``from_config``
load them on first use.
"""

from ._common import OpenAIGrader, SampleGrader
from ._configs import EvaluationMetric
from ._formula import Formula
from ._multi import MultiGrader, build_sample_grader
from ._similarity import TextSimilarityGrader
from ._string_check import StringCheckGrader
from ._templates import MissingVariable, Sample, Template

__all__ = [
    "EvaluationMetric",
    "Formula",
    "MissingVariable",
    "MultiGrader",
    "OpenAIGrader",
    "Sample",
    "SampleGrader",
    "StringCheckGrader",
    "Template",
    "TextSimilarityGrader",
    "build_sample_grader",
]
