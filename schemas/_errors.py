"""rftkit's exceptions, and the one record type for bad data.

Two kinds of failure are never mixed:

* **Misuse** -- a bad schema, grader config, option or weight -- raises at once,
  with a stable ``code``, the JSON ``pointer`` of the offending part and a
  ``hint`` that says how to fix it.
* **Bad data** -- a model output that is not JSON, an object that violates the
  schema -- never raises. It becomes an :class:`Issue` record (code, pointer,
  message, input) inside a result.

Both kinds carry a code from a closed set: :data:`MisuseCode` for a
:class:`UserError`, :data:`IssueCode` for an :class:`Issue` (docs/errors.md has
one row per code, with what it means and how to fix it).

The exception tree (callers catch these names; they are never renamed)::

    RftkitError                      base of everything rftkit raises on purpose
     └── UserError (also ValueError) misuse, raised at construction
          ├── SchemaError            a schema that cannot be loaded or is invalid
          └── GraderConfigError      a grader config, field option or weight
                                     (defined in ``graders``)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# -- the closed sets of codes (every one is listed, with its meaning and hint, in docs/errors.md) -----------------

MisuseCode = Literal[
    "bad_adapter", "bad_aggregation", "bad_comparator_option", "bad_config",
    "bad_config_file", "bad_dataset", "bad_field_option", "bad_grade_signature",
    "bad_jsonl_row", "bad_messages", "bad_model", "bad_model_spec",
    "bad_option", "bad_output", "bad_reference", "bad_resume",
    "bad_rows", "bad_sample", "bad_schedule", "bad_schema",
    "bad_setting", "bad_template", "bad_tokenizer", "bad_value",
    "config_not_found", "config_not_json", "config_not_object", "config_too_deep",
    "dataset_not_a_file", "dataset_not_found", "dataset_unreadable", "duplicate_name",
    "embedding_model_missing", "empty_dataset", "formula_parse_error", "formula_too_complex",
    "formula_unknown_name", "invalid_parquet", "invalid_schema", "invalid_variable",
    "length_mismatch", "missing_column", "missing_dataset", "missing_extra", "missing_grade_function",
    "missing_key", "missing_model", "missing_prompt", "missing_reference",
    "missing_setting", "model_load_failed", "model_not_found", "nested_multi",
    "no_grader", "no_reference_field", "not_a_run", "not_json",
    "not_jsonl", "nothing_shared", "out_of_memory", "output_not_empty",
    "payload_not_json", "resume_mismatch", "schema_missing", "schema_not_found",
    "schema_not_json", "schema_not_loaded", "schema_not_object", "schema_source",
    "source_syntax_error", "source_too_large", "tracker_failed", "unknown_comparator",
    "unknown_field", "unknown_format", "unknown_grader_type", "unknown_key",
    "unmatched_row", "unresolvable_ref", "unsupported", "unsupported_compression",
    "unsupported_content", "wordnet_missing", "write_failed", "wrong_type",
]
"""Every :attr:`UserError.code`: what a caller got wrong (a test checks each is raised somewhere, and nothing else is)."""

SchemaIssueCode = Literal[
    "additionalItems", "additionalProperties", "anyOf", "const", "contains",
    "dependencies", "dependentRequired", "enum", "exclusiveMaximum",
    "exclusiveMinimum", "format", "items", "maximum", "maxItems",
    "maxLength", "maxProperties", "minimum", "minItems", "minLength",
    "minProperties", "multipleOf", "not", "oneOf", "pattern",
    "required", "type", "unevaluatedItems", "unevaluatedProperties", "uniqueItems",
    "false_schema", "invalid",
]
"""An :class:`Issue` from validating an object against a JSON Schema: the keyword it violates (``false_schema``: a
``false`` subschema allows nothing; ``invalid``: a keyword this list lacks)."""

ParseIssueCode = Literal["empty", "no_json", "invalid_json", "truncated", "max_depth"]
"""An :class:`Issue` from reading a model's output (the failed statuses of ``graders``' ``parse_response``): no text, no
JSON found, JSON that does not decode, output cut off, or nesting too deep to validate. (An output that violates the
schema carries the schema's own issues, :data:`SchemaIssueCode`.)"""

DatasetIssueCode = Literal[
    "blank_line", "duplicate_prompt", "empty_content", "empty_dataset",
    "empty_prompt", "gold_below_max", "gold_error", "invalid_compression",
    "invalid_json", "invalid_role", "invalid_utf8", "last_message_not_user",
    "leaked_prompt", "line_too_long", "messages_not_text", "missing_field",
    "missing_reference", "not_an_object", "number_out_of_range", "prompt_and_messages",
    "prompt_not_text", "reference_invalid", "reference_not_json", "truncated_line",
    "unresolved_variable", "wrong_type",
]
"""An :class:`Issue` found in a dataset file: a line that cannot be read, a row that does not fit its layout, a
reference the grader cannot grade or that does not reach the maximum, a duplicate or leaked prompt."""

IssueCode = Literal[SchemaIssueCode, ParseIssueCode, DatasetIssueCode]
"""Every :attr:`Issue.code`."""


class RftkitError(Exception):
    """Base class of every exception rftkit raises on purpose."""


class UserError(RftkitError, ValueError):
    """A mistake in what the caller passed: fix the input, not the data.

    >>> err = UserError("weight must be >= 0", code="bad_weight", pointer="/fields/city/weight", hint="use 0 to ignore a field")
    >>> str(err)
    'weight must be >= 0 [bad_weight at /fields/city/weight] (hint: use 0 to ignore a field)'
    """

    def __init__(self, message: str, *, code: MisuseCode, pointer: str = "", hint: str = "") -> None:
        self.message = message
        self.code = code
        self.pointer = pointer
        self.hint = hint
        where = f" at {pointer}" if pointer else ""
        tail = f" (hint: {hint})" if hint else ""
        super().__init__(f"{message} [{code}{where}]{tail}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: rebuild explicitly, so the error survives a trip between processes.
        return (_rebuild_user_error, (type(self), self.message, self.code, self.pointer, self.hint))


def _rebuild_user_error(cls: type[UserError], message: str, code: MisuseCode, pointer: str, hint: str) -> UserError:
    return cls(message, code=code, pointer=pointer, hint=hint)


class SchemaError(UserError):
    """A schema that cannot be loaded, or that is not a valid JSON Schema."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in data: a record, never an exception.

    ``pointer`` is an RFC 6901 JSON pointer into the object that was checked
    (``""`` is the whole object); ``input`` is the offending value, shortened
    when it is long.
    """

    code: IssueCode
    """Stable, machine-readable name of the problem (``type``, ``required``, ``invalid_json`` ...; see :data:`IssueCode`)."""
    pointer: str
    """JSON pointer to the offending part; ``""`` for the whole object."""
    message: str
    """One sentence a person can read."""
    input: Any = None
    """The offending value, shortened to at most 200 characters of text when large."""

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "pointer": self.pointer, "message": self.message, "input": self.input}


def json_pointer(path: Sequence[str | int]) -> str:
    """Build an RFC 6901 pointer from a path of keys and indexes.

    >>> json_pointer(("a/b", 0, "c~d"))
    '/a~1b/0/c~0d'
    >>> json_pointer(())
    ''
    """
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def shorten(value: Any, limit: int = 200) -> Any:
    """Keep small values as they are; cut long text (or the ``repr`` of a large value).

    >>> shorten("x" * 300)[-16:]
    'x... (300 chars)'
    >>> shorten(5)
    5
    """
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return value
    return text[:limit] + f"... ({len(text)} chars)"
