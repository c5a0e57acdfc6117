"""The field comparators, one function each: ``from graders.comparators import fuzzy``.

Each takes ``(prediction, reference, *, options)`` and returns a float in [0, 1];
none raises on any JSON value. The formulas are in each function's docstring.
"""

from ._comparators import (
    boolean,
    date,
    datetime,
    enum,
    exact,
    fuzzy,
    make_comparator,
    math,
    normalize_text,
    normalized,
    number,
    parse_date,
    parse_datetime,
    parse_number,
)

__all__ = [
    "boolean",
    "date",
    "datetime",
    "enum",
    "exact",
    "fuzzy",
    "make_comparator",
    "math",
    "normalize_text",
    "normalized",
    "number",
    "parse_date",
    "parse_datetime",
    "parse_number",
]
