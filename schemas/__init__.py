"""rftkit.schemas: load schemas from pydantic models, JSON Schema or OpenAI
``response_format`` blocks, and validate objects against them.

Problems in data come back as :class:`Issue` records; misuse raises
:class:`UserError` subclasses (the tree is drawn in ``schemas._errors``).
"""

from ._errors import Issue, RftkitError, SchemaError, UserError, json_pointer
from ._loading import Schema, SchemaSource, load_schema, validate

__all__ = [
    "Issue",
    "RftkitError",
    "Schema",
    "SchemaError",
    "SchemaSource",
    "UserError",
    "json_pointer",
    "load_schema",
    "validate",
]
