"""Structured grading: a response turned into a typed object and compared with a reference field by field.

Owns the parsing stages (``_extract``: find the JSON text; ``_decode``: strict or
recorded-lenient JSON, schema validation, :func:`parse_response`), the grader's
options (``_options``), the node classes of a compiled schema and list pairing
(``_nodes``, ``_matching``), the planner (``_planner``), reference handling
(``_references``), the grader itself (``_grader``) and the fenced fast path
(``_fastpath``: generated code for flat schemas, checked against the plain path).
"""

from ._decode import (
    DEFAULT_MAX_OUTPUT_CHARS,
    MAX_OUTPUT_CHARS_ENV,
    decode_json,
    max_output_chars,
    parse_response,
    set_max_output_chars,
    validate_value,
)
from ._extract import MAX_CANDIDATES, REPAIRS, Decoded, Extraction, ExtractionMethod, Parsed, ParseStatus, extract_json
from ._grader import StructuredGrader
from ._matching import Pair, assign, prf
from ._options import Aggregation, ExtraFields, FieldSpec, ListMode, OnSchemaViolation, StructuredOptions

__all__ = [
    "DEFAULT_MAX_OUTPUT_CHARS",
    "MAX_CANDIDATES",
    "MAX_OUTPUT_CHARS_ENV",
    "REPAIRS",
    "ExtractionMethod",
    "ParseStatus",
    "Aggregation",
    "Decoded",
    "ExtraFields",
    "Extraction",
    "FieldSpec",
    "ListMode",
    "OnSchemaViolation",
    "Pair",
    "Parsed",
    "StructuredGrader",
    "StructuredOptions",
    "assign",
    "decode_json",
    "extract_json",
    "max_output_chars",
    "parse_response",
    "prf",
    "set_max_output_chars",
    "validate_value",
]
