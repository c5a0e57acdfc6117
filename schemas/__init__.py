"""rftkit.schemas: load schemas from pydantic models, JSON Schema or OpenAI
``response_format`` blocks, and validate objects -- or whole dataset files, before anything trains
(:func:`validate_dataset`) -- against them.

Problems in data come back as :class:`Issue` records; misuse raises
:class:`UserError` subclasses (the tree is drawn in ``schemas._errors``).
"""

from ._dataset import DatasetFormat, DatasetIssue, GoldCheckLike, GoldVerdict, GraderLike, Report, validate_dataset
from ._errors import Issue, RftkitError, SchemaError, UserError, json_pointer
from ._loading import Schema, SchemaSource, load_schema, validate
from ._reader import load_jsonl

__all__ = [
    "DatasetFormat",
    "DatasetIssue",
    "GoldCheckLike",
    "GoldVerdict",
    "GraderLike",
    "Issue",
    "Report",
    "RftkitError",
    "Schema",
    "SchemaError",
    "SchemaSource",
    "UserError",
    "json_pointer",
    "load_jsonl",
    "load_schema",
    "validate",
    "validate_dataset",
]
