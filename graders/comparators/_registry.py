"""The comparator registry: each name, its options model and its builder; and make_comparator."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from .._errors import GraderConfigError
from .._validation import validate_config
from ._base import _COMPARATOR_NAMES, Comparator, ComparatorOptions, ExactOptions, _choices, exact
from ._math import MathOptions, math
from ._numbers import (
    BoolOptions,
    DateOptions,
    DatetimeOptions,
    EnumOptions,
    NumberOptions,
    _make_date,
    _make_datetime,
    _make_enum,
    _make_number,
    boolean,
)
from ._text import FuzzyOptions, NormalizedOptions, _make_fuzzy, _make_normalized

# --------------------------------------------------------------------------- construction


@dataclass(frozen=True, slots=True)
class _Entry:
    options: type[ComparatorOptions]
    """The options model: their checks, defaults, docs and JSON Schema."""
    build: Callable[[Any], Comparator]
    """Validated options -> the fast callable."""
    default: ComparatorOptions
    """The options when none are given."""


def _entry(options: type[ComparatorOptions], build: Callable[[Any], Comparator]) -> _Entry:
    return _Entry(options, build, options())


def _always(comparator: Comparator) -> Callable[[ComparatorOptions], Comparator]:
    return lambda _options: comparator


COMPARATORS: Final[dict[str, _Entry]] = {
    entry.options.comparator: entry
    for entry in (
        _entry(ExactOptions, _always(exact)),
        _entry(NormalizedOptions, _make_normalized),
        _entry(FuzzyOptions, _make_fuzzy),
        _entry(NumberOptions, _make_number),
        _entry(DateOptions, _make_date),
        _entry(DatetimeOptions, _make_datetime),
        _entry(EnumOptions, _make_enum),
        _entry(BoolOptions, _always(boolean)),
        _entry(MathOptions, _always(math)),
    )
}
"""Every comparator, by name (:data:`ComparatorName`, in its order): its options model and its builder."""

_TAKERS: Final[dict[str, tuple[str, ...]]] = {}
for _name, _spec in COMPARATORS.items():
    for _option in _spec.options.model_fields:
        _TAKERS[_option] = (*_TAKERS.get(_option, ()), _name)


def comparator_models() -> dict[str, type[ComparatorOptions]]:
    """Each comparator's name -> its options model, in :data:`ComparatorName` order."""
    return {name: entry.options for name, entry in COMPARATORS.items()}


def closest(name: object, valid: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the valid name closest to a misspelt ``name`` (difflib's ratio >= 0.6), else ``""``.

    >>> closest("numbr", ["number", "date"]), closest("zzz", ["number"])
    ("did you mean 'number'? ", '')
    """
    if type(name) is not str:
        return ""
    found = difflib.get_close_matches(name, list(valid), n=1)
    return f"did you mean {found[0]!r}? " if found else ""


def comparators_taking(option: str) -> tuple[str, ...]:
    """The comparators that take ``option``, in :data:`ComparatorName` order.

    >>> comparators_taking("abs_tol"), comparators_taking("nope")
    (('number',), ())
    """
    return _TAKERS.get(option, ())


def comparator_options() -> tuple[str, ...]:
    """Every option name some comparator takes."""
    return tuple(_TAKERS)


def make_comparator(name: str, *, pointer: str = "", **options: Any) -> Comparator:
    """Build the comparator ``name`` with ``options``, validated once, as a fast callable.

    ``pointer`` is the JSON pointer of the field config (``"/fields/city"``);
    errors point at ``pointer + "/comparator"`` for an unknown name and at
    ``pointer + "/<option>"`` for a bad option. Raises
    :class:`~graders._errors.GraderConfigError` with code
    ``unknown_comparator`` or ``bad_comparator_option`` and a hint listing the
    valid choices. The options are checked by the comparator's options model
    (``FuzzyOptions`` ...): option names belong to the comparator; thresholds
    are in [0, 1]; tolerances are finite and >= 0; ``scorer`` is a
    :data:`FuzzyScorer`; ``order`` is a :data:`DateOrder`; flags are booleans;
    ``fuzzy`` without ``partial_credit`` needs a threshold above 0 (else every
    pair would pass).

    >>> make_comparator("number", rel_tol=0.05)("$1,020", 1000)
    1.0
    >>> make_comparator("fuzzy", pointer="/fields/city", threshold=1.5)
    Traceback (most recent call last):
    ...
    graders._errors.GraderConfigError: expected a number in [0, 1], got 1.5 [bad_comparator_option at /fields/city/threshold] (hint: 0.8 means 80% similar)
    """
    entry = COMPARATORS.get(name) if type(name) is str else None
    if entry is None:
        raise GraderConfigError(
            f"unknown comparator {name!r}",
            code="unknown_comparator",
            pointer=f"{pointer}/comparator",
            hint=closest(name, _COMPARATOR_NAMES) + f"use one of {_choices(_COMPARATOR_NAMES)}",
        )
    return entry.build(validate_config(entry.options, options, pointer=pointer) if options else entry.default)


# typed=True: partial_credit=1 must not hit the entry cached for partial_credit=True.
