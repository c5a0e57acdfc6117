"""rftkit.schemas: load schemas from pydantic models, JSON Schema or OpenAI
``response_format`` blocks, validate one object against them, and read dataset files
(:mod:`schemas.reading`; whole datasets are validated by :mod:`graders.datasets`).

Problems in data come back as :class:`Issue` records; misuse raises
:class:`UserError` subclasses (the tree is drawn in ``schemas._errors``). Their
codes are closed sets, :data:`IssueCode` and :data:`MisuseCode` (docs/errors.md).
"""

from ._errors import Issue, IssueCode, MisuseCode, RftkitError, SchemaError, UserError, json_pointer
from ._loading import Schema, SchemaSource, load_schema, validate
from ._reader import load_jsonl

__all__ = [
    "Issue",
    "IssueCode",
    "MisuseCode",
    "RftkitError",
    "Schema",
    "SchemaError",
    "SchemaSource",
    "UserError",
    "json_pointer",
    "load_jsonl",
    "load_schema",
    "validate",
]
