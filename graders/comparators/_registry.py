"""The comparator registry: names, their options, their checks, and make_comparator."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._errors import GraderConfigError, pointer_token
from ._base import (
    _COMPARATOR_NAMES,
    _DATE_ORDERS,
    _DECIMAL_MARKS,
    _FUZZY_SCORER_NAMES,
    Comparator,
    _bad_option,
    _check_bool,
    _check_choice,
    _check_max_chars,
    _check_tolerance,
    _check_unit_interval,
    _choices,
    _OptionCheck,
    exact,
)
from ._math import math
from ._numbers import _make_date, _make_datetime, _make_enum, _make_number, boolean
from ._text import _make_fuzzy, _make_normalized

# --------------------------------------------------------------------------- construction

@dataclass(frozen=True, slots=True)
class _Spec:
    build: Callable[..., Comparator]
    options: Mapping[str, _OptionCheck]


def _no_options(comparator: Comparator) -> Callable[[], Comparator]:
    return lambda: comparator


_SPECS: Final[dict[str, _Spec]] = {
    "exact": _Spec(_no_options(exact), {}),
    "normalized": _Spec(_make_normalized, {"strip_punctuation": _check_bool}),
    "fuzzy": _Spec(
        _make_fuzzy,
        {
            "scorer": _check_choice(_FUZZY_SCORER_NAMES),
            "threshold": _check_unit_interval,
            "partial_credit": _check_bool,
            "normalize": _check_bool,
            "max_chars": _check_max_chars,
        },
    ),
    "number": _Spec(_make_number, {"abs_tol": _check_tolerance, "rel_tol": _check_tolerance,
                                   "decimal": _check_choice(_DECIMAL_MARKS)}),
    "date": _Spec(_make_date, {"order": _check_choice(_DATE_ORDERS)}),
    "datetime": _Spec(_make_datetime, {"tolerance": _check_tolerance}),
    "enum": _Spec(_make_enum, {"case_sensitive": _check_bool}),
    "bool": _Spec(_no_options(boolean), {}),
    "math": _Spec(_no_options(math), {}),
}



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
    return tuple(name for name in _COMPARATOR_NAMES if option in _SPECS[name].options)


def comparator_options() -> tuple[str, ...]:
    """Every option name some comparator takes."""
    return tuple(dict.fromkeys(key for spec in _SPECS.values() for key in spec.options))


def make_comparator(name: str, *, pointer: str = "", **options: Any) -> Comparator:
    """Build the comparator ``name`` with ``options``, validated once, as a fast callable.

    ``pointer`` is the JSON pointer of the field config (``"/fields/city"``);
    errors point at ``pointer + "/comparator"`` for an unknown name and at
    ``pointer + "/<option>"`` for a bad option. Raises
    :class:`~graders._errors.GraderConfigError` with code
    ``unknown_comparator`` or ``bad_comparator_option`` and a hint listing the
    valid choices. Checks: option names belong to the comparator; thresholds
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
    spec = _SPECS.get(name) if type(name) is str else None
    if spec is None:
        raise GraderConfigError(
            f"unknown comparator {name!r}",
            code="unknown_comparator",
            pointer=f"{pointer}/comparator",
            hint=closest(name, _COMPARATOR_NAMES) + f"use one of {_choices(_COMPARATOR_NAMES)}",
        )
    for key, value in options.items():
        check = spec.options.get(key)
        if check is None:
            accepted = _choices(tuple(spec.options)) if spec.options else "no options"
            owners = comparators_taking(key)
            elsewhere = f"; {key!r} is an option of {_choices(owners)}: set \"comparator\" to it" if owners else ""
            raise _bad_option(
                f"comparator {name!r} has no option {key!r}",
                f"{pointer}/{pointer_token(key)}",
                (closest(key, tuple(spec.options)) if not owners else "") + f"{name!r} takes {accepted}{elsewhere}",
            )
        check(value, f"{pointer}/{pointer_token(key)}")
    if name == "fuzzy" and options.get("partial_credit") is False and not options.get("threshold"):
        raise _bad_option(
            "pass/fail fuzzy matching (partial_credit=false) needs a threshold above 0",
            f"{pointer}/threshold",
            "set threshold, e.g. 0.9, or keep partial_credit=true",
        )
    return spec.build(**options)


# typed=True: partial_credit=1 must not hit the entry cached for partial_credit=True.
