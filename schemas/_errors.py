"""rftkit's exceptions, and the one record type for bad data.

Two kinds of failure are never mixed:

* **Misuse** -- a bad schema, grader config, option or weight -- raises at once,
  with a stable ``code``, the JSON ``pointer`` of the offending part and a
  ``hint`` that says how to fix it.
* **Bad data** -- a model output that is not JSON, an object that violates the
  schema -- never raises. It becomes an :class:`Issue` record (code, pointer,
  message, input) inside a result.

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
from typing import Any


class RftkitError(Exception):
    """Base class of every exception rftkit raises on purpose."""


class UserError(RftkitError, ValueError):
    """A mistake in what the caller passed: fix the input, not the data.

    >>> err = UserError("weight must be >= 0", code="bad_weight", pointer="/fields/city/weight", hint="use 0 to ignore a field")
    >>> str(err)
    'weight must be >= 0 [bad_weight at /fields/city/weight] (hint: use 0 to ignore a field)'
    """

    def __init__(self, message: str, *, code: str, pointer: str = "", hint: str = "") -> None:
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


def _rebuild_user_error(cls: type[UserError], message: str, code: str, pointer: str, hint: str) -> UserError:
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

    code: str
    """Stable, machine-readable name of the problem (``type``, ``required``, ``invalid_json`` ...)."""
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
