"""The field comparators, one function each: ``from graders.comparators import fuzzy``.

Each takes ``(prediction, reference, *, options)`` and returns a float in [0, 1];
none raises on any JSON value. The formulas are in each function's docstring.

The package owns the families (``_text``: exact-after-normalisation and fuzzy;
``_numbers``: numbers, dates, datetimes, enums, booleans; ``_math``: symbolic
equivalence), each comparator's options model next to its builder (``FuzzyOptions``
...: the options' checks, defaults, docs and JSON Schema), the shared kinds and
option types (``_base``) and the registry of names, models and builders that
:func:`make_comparator` builds from (``_registry``). A new comparator is a function,
its options model and its builder in its family's module, and one entry in the registry.
"""

from ._base import Comparator, ComparatorName, DateOrder, DecimalMark, FuzzyScorer, exact
from ._math import math
from ._numbers import boolean, date, datetime, enum, number, parse_date, parse_datetime, parse_number
from ._registry import make_comparator
from ._text import fuzzy, normalize_text, normalized

__all__ = [
    "Comparator",
    "ComparatorName",
    "DateOrder",
    "DecimalMark",
    "FuzzyScorer",
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
