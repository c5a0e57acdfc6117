"""Field comparators: how one predicted JSON value scores against its reference.

A comparator is a small pure function ``(prediction, reference) -> float``. The
structured grader calls one per field, so two properties matter more than
anything else:

* **Model output is untrusted.** Both arguments may be any JSON value (``str``,
  ``int``, ``float``, ``bool``, ``None``, ``list``, ``dict``, nested). A
  comparator never raises on one, and always returns a finite float in [0, 1].
* **Speed.** A benchmark grades 100k samples. Options are validated and
  resolved once, in :func:`make_comparator`, which returns a specialised closure;
  regexes are compiled at import; the same reference strings repeat across
  samples, so text normalisation and parsing are cached (short strings only, so
  a hostile megabyte-long output is never kept alive by a cache).

One rule covers every value a comparator cannot read (a ``date`` comparator given
a list, a ``number`` comparator given ``"N/A"``): the pair falls back to
:func:`exact`. So a wrong type scores 0.0, and every comparator scores any value
against itself 1.0 (NaN aside, which is equal to nothing).

Options are checked by :func:`make_comparator`, with the comparator's options model
(:class:`ComparatorOptions`); a bad one raises
:class:`graders._errors.GraderConfigError` with code ``unknown_comparator`` or
``bad_comparator_option``, the JSON pointer of the offending option and a hint.
The public functions take the same options as keyword arguments and validate
them the same way (through a small cache of built comparators).

>>> from graders.comparators import make_comparator
>>> compare = make_comparator("fuzzy", scorer="token_sort_ratio", threshold=0.8)
>>> compare("Berkeley University of California", "University of California Berkeley")
1.0
>>> compare(None, "Berkeley")
0.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Final, Literal, get_args

from pydantic import Field

from schemas import MisuseCode

from .._errors import GraderConfigError
from .._validation import ConfigModel, Explained


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns that its timeouts are off; they are off on purpose (they rely on
    signals, which break outside the main thread) and inputs are bounded instead (see math)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger).addFilter(_DropTimeoutNotice())




Comparator = Callable[[Any, Any], float]
"""``(prediction, reference) -> score``: a finite float in [0, 1], never raising."""

ComparatorName = Literal["exact", "normalized", "fuzzy", "number", "date", "datetime", "enum", "bool", "math"]
"""The names a field config may give as its ``comparator``."""

FuzzyScorer = Literal[
    "ratio",
    "partial_ratio",
    "token_sort_ratio",
    "token_set_ratio",
    "WRatio",
    "jaro_winkler",
    "levenshtein",
    "indel",
]
"""The rapidfuzz scorers :func:`fuzzy` can use (``levenshtein`` is the normalised similarity)."""

DateOrder = Literal["iso", "day_first", "month_first"]
"""How :func:`parse_date` reads a numeric date that is not ISO 8601."""

_CACHE_MAX_CHARS: Final = 256
"""Strings longer than this are normalised or parsed without touching the caches."""


# --------------------------------------------------------------------------- exact


def _kind(value: object) -> int:
    """The JSON type of ``value`` as a small int; bool is not a number; -1 for non-JSON."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUMBER
    if isinstance(value, str):
        return _STR
    if isinstance(value, (list, tuple)):
        return _LIST
    if isinstance(value, Mapping):
        return _DICT
    return -1


_STR, _NUMBER, _BOOL, _NULL, _LIST, _DICT = range(6)
_KINDS: Final[dict[type, int]] = {
    str: _STR,
    int: _NUMBER,
    float: _NUMBER,
    bool: _BOOL,
    type(None): _NULL,
    list: _LIST,
    tuple: _LIST,
    dict: _DICT,
}


def _json_equal(a: object, b: object) -> bool:
    """Deep equality where the JSON type must match too (iterative: no recursion limit)."""
    stack: list[tuple[Any, Any]] = [(a, b)]
    while stack:
        x, y = stack.pop()
        kind = _kind(x)
        if kind != _kind(y) or kind < 0:
            return False
        if kind == _LIST:
            if x is y:
                continue
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif kind == _DICT:
            if x is y:
                continue
            if len(x) != len(y) or x.keys() != y.keys():
                return False
            stack.extend((x[key], y[key]) for key in x)
        elif x != y:  # str, number (1 == 1.0, NaN != NaN), bool, null
            return False
    return True


def exact(prediction: Any, reference: Any) -> float:
    """1.0 iff the two JSON values are equal and of the same JSON type, else 0.0.

    Formula: ``score = 1[type(p) == type(r) and p == r]``, recursively through
    lists and objects, where the JSON types are string, number, boolean, null,
    array and object. ``1`` and ``1.0`` are the same number; ``True`` is not a
    number, so ``True`` does not equal ``1`` (Python says it does). NaN equals
    nothing, itself included.

    >>> exact("c++", "c++"), exact(1, 1.0), exact(True, 1), exact([1, {"a": None}], [1, {"a": None}])
    (1.0, 1.0, 0.0, 1.0)
    """
    if type(prediction) is str and type(reference) is str:
        return 1.0 if prediction == reference else 0.0
    return 1.0 if _json_equal(prediction, reference) else 0.0


DecimalMark = Literal[".", ","]
"""The decimal mark :func:`parse_number` reads: ``"."`` (``"1,234.50"``) or a declared ``","`` (``"1.234,50"``)."""

_FUZZY_SCORER_NAMES: Final = get_args(FuzzyScorer)
_DATE_ORDERS: Final = get_args(DateOrder)
_DECIMAL_MARKS: Final = get_args(DecimalMark)
_COMPARATOR_NAMES: Final = get_args(ComparatorName)


# -- options: one pydantic model per comparator (its checks, its JSON Schema, its docs)


def _choices(values: tuple[object, ...]) -> str:
    return ", ".join(repr(v) for v in values)


class ComparatorOptions(ConfigModel):
    """The options of one comparator. Each comparator's subclass (``FuzzyOptions`` ...) is their one definition:
    :func:`~graders.comparators.make_comparator` validates with it, its defaults are the comparator's, its
    attribute docstrings document the options, and the field-option part of the structured grader's JSON Schema
    is generated from it.

    Every error is ``bad_comparator_option``, pointing at the option, with a hint.
    """

    what = "comparator options"
    comparator: ClassVar[str] = ""
    """The comparator's name (``ComparatorName``)."""
    error_codes: ClassVar[Mapping[str, MisuseCode]] = {"*": "bad_comparator_option"}

    @classmethod
    def unknown_key_error(cls, key: str, pointer: str) -> GraderConfigError:
        """An option this comparator does not take: the closest one it does, or the comparators that take it."""
        from ._registry import closest, comparators_taking  # the registry imports every family module

        taken = tuple(cls.model_fields)
        accepted = _choices(taken) if taken else "no options"
        owners = comparators_taking(key)
        elsewhere = f"; {key!r} is an option of {_choices(owners)}: set \"comparator\" to it" if owners else ""
        return GraderConfigError(f"comparator {cls.comparator!r} has no option {key!r}", code="bad_comparator_option",
                                 pointer=pointer,
                                 hint=(closest(key, taken) if not owners else "") + f"{cls.comparator!r} takes {accepted}{elsewhere}")


def _one_of(values: tuple[str, ...]) -> Explained:
    return Explained(f"expected one of {_choices(values)}", f"use one of {_choices(values)}")


Flag = Annotated[bool, Explained("expected true or false", "use a JSON boolean")]
"""An on/off option: a JSON boolean (``1`` and ``"yes"`` are not)."""
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False),
                         Explained("expected a number in [0, 1]", "0.8 means 80% similar")]
"""A similarity threshold: a number in [0, 1]."""
Tolerance = Annotated[float, Field(ge=0.0, allow_inf_nan=False),
                      Explained("expected a finite number >= 0", "0 means exact; 0.01 in rel_tol means 1%")]
"""A tolerance: a finite number >= 0."""


class ExactOptions(ComparatorOptions):
    """:func:`exact` takes no options."""

    comparator = "exact"


@lru_cache(maxsize=256, typed=True)
def _built(name: str, **options: Any) -> Comparator:
    """:func:`~graders.comparators.make_comparator` with a small cache, for the public functions' keyword options."""
    from ._registry import make_comparator  # the registry imports every family module, which import this one

    return make_comparator(name, **options)
