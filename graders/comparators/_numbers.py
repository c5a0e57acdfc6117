"""Number, date, datetime, enum and boolean comparators, and the parsers behind them."""

from __future__ import annotations

import datetime as _dt
import math as _math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Final

from .._validation import validate_config
from ._base import (
    _CACHE_MAX_CHARS,
    _DATE_ORDERS,
    _DECIMAL_MARKS,
    _NUMBER,
    _STR,
    Comparator,
    ComparatorOptions,
    DateOrder,
    DecimalMark,
    Flag,
    Tolerance,
    _built,
    _kind,
    _one_of,
    exact,
)

# --------------------------------------------------------------------------- numbers


_SIGNS: Final = "+\\-\u2212"  # a regex class body; "\u2212" is the Unicode minus sign
_CURRENCIES: Final = "$\u20ac\u00a3\u00a5\u20b9\u20a9\u20bd\u20ba\u20aa\u20ab\u0e3f\u20b4\u20a6\u20b1\u00a2"
_CURRENCY_CODES: Final = frozenset(
    # ISO 4217 codes of the currencies in circulation (and the precious metals and SDR, which invoices also quote).
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF
    CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF
    IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK
    MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES
    VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG XAU XAG XPT XPD XDR""".split()
)
"""Three-letter codes :func:`parse_number` reads beside a number (upper case only: "10 all" is not ten Albanian lek)."""


def _number_re(body: str) -> re.Pattern[str]:
    """The number grammar of :func:`parse_number` around ``body`` (the digits for one decimal mark)."""
    return re.compile(
        rf"""
        (?P<open>\()?\s*
        (?:(?P<code1>[A-Z]{{3}})\s?)?
        (?P<sign1>[{_SIGNS}])?
        (?:(?P<cur1>[{_CURRENCIES}])\s?)?
        (?P<sign2>[{_SIGNS}])?
        (?P<body>{body})
        (?:\s?(?P<cur2>[{_CURRENCIES}]))?
        (?:\s?(?P<code2>[A-Z]{{3}}))?
        (?:\s?%)?
        \s*(?P<close>\))?
        """,
        re.VERBOSE,
    )


_NUMBER_RE: Final = _number_re(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)? | \.\d+(?:[eE][+-]?\d+)?")
_GROUPS_WITH_COMMA: Final = "\u00a0\u202f ."
"""Thousands separators beside a decimal comma: a dot or a (no-break, narrow no-break) space, one kind per number."""
_COMMA_NUMBER_RE: Final = _number_re(
    rf"(?:\d{{1,3}}(?P<group>[{_GROUPS_WITH_COMMA}])\d{{3}}(?:(?P=group)\d{{3}})*|\d+)(?:,\d*)?(?:[eE][+-]?\d+)?"
    r" | ,\d+(?:[eE][+-]?\d+)?"
)


def _parse_number_text(text: str, decimal: DecimalMark = ".") -> float | None:
    if decimal == "." and "_" not in text:  # fast path: a plain decimal; float() would also read "1_000"
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            return value if _math.isfinite(value) else None
    match = (_NUMBER_RE if decimal == "." else _COMMA_NUMBER_RE).fullmatch(text.strip())
    if match is None:
        return None
    sign1, sign2 = match["sign1"], match["sign2"]
    code = match["code1"] or match["code2"]
    parenthesised = match["open"] is not None
    if (
        parenthesised != (match["close"] is not None)
        or (parenthesised and (sign1 or sign2))
        or (sign1 and sign2)
        or sum(1 for marker in (match["cur1"], match["cur2"], match["code1"], match["code2"]) if marker) > 1
        or (code is not None and code not in _CURRENCY_CODES)
    ):
        return None
    body = match["body"]
    if decimal == ".":
        body = body.replace(",", "")
    else:
        group = match["group"]
        body = (body.replace(group, "") if group else body).replace(",", ".")
    value = float(body)
    if not _math.isfinite(value):
        return None
    if parenthesised or (sign1 or sign2 or "+") in "-\u2212":
        value = -value
    return value


_parse_number_cached = lru_cache(maxsize=1 << 14)(_parse_number_text)


def parse_number(value: Any, *, decimal: DecimalMark = ".") -> float | None:
    """Read a number from a JSON value, or None when it is not one.

    Accepted: an int or float (not a bool; NaN, infinities and ints too large
    for a float give None), or a string with this grammar, surrounded by
    optional whitespace::

        number   := "(" unsigned ")"          accounting negative: "(123)" -> -123
                  | [sign] unsigned
        unsigned := [code [" "]] [sign] [currency [" "]] [sign] digits [[" "] currency] [[" "] code] [[" "] "%"]
        digits   := (d{1,3} ("," d{3})+ | d+) ["." d*] [exponent]
                  | "." d+ [exponent]
        sign     := "+" | "-" | "\u2212" (Unicode minus)     at most one
        currency := one of $ € £ ¥ ₹ ₩ ₽ ₺ ₪ ₫ ฿ ₴ ₦ ₱ ¢
        code     := an ISO 4217 code in upper case: EUR, USD, GBP, CHF, JPY ...

    with at most one currency (a symbol or a code). ``d`` is a Unicode decimal
    digit. A trailing ``%`` is dropped and the number is kept as written:
    ``"12%"`` is ``12.0``, not ``0.12``. Commas are only thousands separators in
    groups of three, so ``"1,000"`` is 1000 while ``"1,5"``, ``"187,50"``,
    ``"1,2,3"`` and ``"1 000"`` (space-grouped) are rejected rather than guessed
    at. Words, lower-case or unknown codes (``"5 eur"``, ``"5 XYZ"``), ``"nan"``
    and ``"inf"`` are rejected.

    With ``decimal=","`` (declared, never guessed) the comma is the decimal mark
    and the thousands separator is a dot or a space (plain, no-break or narrow
    no-break), in groups of three: ``"187,50"`` is 187.5, ``"1.234,50"`` and
    ``"1 234,50"`` are 1234.5, and ``"1.5"`` is rejected.

    >>> [parse_number(s) for s in ["1,000", "$500", "€1.5", "12%", "(123)", "-4.5e3", " 7 ", "\u22123", "187.50 EUR", "USD 5"]]
    [1000.0, 500.0, 1.5, 12.0, -123.0, -4500.0, 7.0, -3.0, 187.5, 5.0]
    >>> [parse_number(v) for v in ["abc", "", "1,2,3", "1 000", "187,50", "nan", True, None, 10**400]]
    [None, None, None, None, None, None, None, None, None]
    >>> [parse_number(s, decimal=",") for s in ["187,50", "1.234,50", "1 234,50 €", "1.5"]]
    [187.5, 1234.5, 1234.5, None]
    """
    if decimal == ".":
        if type(value) is str and len(value) <= _CACHE_MAX_CHARS:
            return _parse_number_cached(value)
    elif decimal != ",":
        validate_config(NumberOptions, {"decimal": decimal})  # raises: not a decimal mark
    kind = _kind(value)
    if kind == _NUMBER:
        try:
            number_value = float(value)
        except OverflowError:  # an int beyond the float range
            return None
        return number_value if _math.isfinite(number_value) else None
    if kind == _STR:
        text = str(value)
        return _parse_number_cached(text, decimal) if len(text) <= _CACHE_MAX_CHARS else _parse_number_text(text, decimal)
    return None


class NumberOptions(ComparatorOptions):
    """The options of :func:`number`."""

    comparator = "number"
    abs_tol: Tolerance = 0.0
    """Absolute tolerance: ``|a - b| <= abs_tol`` passes."""
    rel_tol: Tolerance = 0.0
    """Relative tolerance: ``|a - b| <= rel_tol * max(|a|, |b|)`` passes (0.01 is 1%)."""
    decimal: Annotated[DecimalMark, _one_of(_DECIMAL_MARKS)] = "."
    """The decimal mark numbers in text use: ``"."`` (``"1,234.50"``) or ``","`` (``"1.234,50"``)."""


def _make_number(options: NumberOptions) -> Comparator:
    abs_tol, rel_tol, decimal = options.abs_tol, options.rel_tol, options.decimal
    read: Callable[[Any], float | None] = parse_number if decimal == "." else (lambda v: parse_number(v, decimal=","))

    def compare_number(prediction: Any, reference: Any) -> float:
        a = read(prediction)
        b = read(reference)
        if a is None or b is None:
            return exact(prediction, reference)
        if a == b:
            return 1.0
        # inf - x is inf, never <= a finite tolerance, so overflow scores 0.0
        size = abs(a) if abs(a) >= abs(b) else abs(b)  # max(|a|, |b|), without the builtin's call cost
        scaled = rel_tol * size
        return 1.0 if abs(a - b) <= (abs_tol if abs_tol >= scaled else scaled) else 0.0

    return compare_number


def number(prediction: Any, reference: Any, *, abs_tol: float = 0.0, rel_tol: float = 0.0, decimal: DecimalMark = ".") -> float:
    """1.0 iff both read as numbers (see :func:`parse_number`) within tolerance, else 0.0.

    Formula: ``score = 1[|a - b| <= max(abs_tol, rel_tol * max(|a|, |b|))]``
    with ``a = parse_number(p, decimal=decimal)``, ``b = parse_number(r, decimal=decimal)``:
    symmetric, like :func:`math.isclose`, so swapping prediction and reference
    never changes the score. Values that do not read as numbers fall back to
    :func:`exact`: 0, unless both are the same value.

    >>> number("$1,000", 1000), number("12%", 12), number("(5)", -5), number("187.50 EUR", 187.5)
    (1.0, 1.0, 1.0, 1.0)
    >>> number(101, 100, rel_tol=0.01), number(100, 101, rel_tol=0.01), number(102, 100, rel_tol=0.01)
    (1.0, 1.0, 0.0)
    >>> number("1.234,50", 1234.5, decimal=","), number(True, 1), number("N/A", "N/A"), number("N/A", 5)
    (1.0, 0.0, 1.0, 0.0)
    """
    return _built("number", abs_tol=abs_tol, rel_tol=rel_tol, decimal=decimal)(prediction, reference)


# --------------------------------------------------------------------------- dates

_ISO_DATE_RE: Final = re.compile(
    r"""
    (?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})
    (?:[T\ ](?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,]\d+)?)?)?
       (?:Z|[+-]\d{2}(?::?\d{2})?)?
    )?
    """,
    re.VERBOSE | re.ASCII | re.IGNORECASE,
)
_YEAR_FIRST_RE: Final = re.compile(r"(?P<y>\d{4})([/.])(?P<m>\d{1,2})\2(?P<d>\d{1,2})", re.ASCII)
_NUMERIC_DATE_RE: Final = re.compile(r"(?P<a>\d{1,2})([/.\-])(?P<b>\d{1,2})\2(?P<y>\d{4})", re.ASCII)
_ORDINAL: Final = r"(?:st|nd|rd|th)?"
_DAY_MONTH_YEAR_RE: Final = re.compile(
    rf"(?P<d>\d{{1,2}}){_ORDINAL}(?:\s+of)?[\s\-]+(?P<month>[a-z]+)\.?,?[\s\-]+(?P<y>\d{{4}})",
    re.ASCII | re.IGNORECASE,
)
_MONTH_DAY_YEAR_RE: Final = re.compile(
    rf"(?P<month>[a-z]+)\.?\s+(?P<d>\d{{1,2}}){_ORDINAL},?\s+(?P<y>\d{{4}})",
    re.ASCII | re.IGNORECASE,
)
_MONTHS: Final[dict[str, int]] = {
    name: index
    for index, full in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        start=1,
    )
    for name in (full, full[:3])
} | {"sept": 9}
_DATE_MAX_CHARS: Final = 64
"""No accepted date is longer; longer strings are rejected before any regex runs."""


def _to_date(year: str, month: int | str, day: str) -> _dt.date | None:
    try:
        return _dt.date(int(year), int(month), int(day))
    except ValueError:  # month 13, February 30, year 0
        return None


@lru_cache(maxsize=1 << 14)
def _parse_date_text(text: str, order: DateOrder) -> _dt.date | None:
    text = text.strip()
    match = _ISO_DATE_RE.fullmatch(text)
    if match is not None:
        if match["H"] is not None:
            try:
                _dt.time(int(match["H"]), int(match["M"] or 0), int(match["S"] or 0))
            except ValueError:  # 25:00, 12:61
                return None
        return _to_date(match["y"], match["m"], match["d"])
    if order == "iso":
        return None
    match = _YEAR_FIRST_RE.fullmatch(text)
    if match is not None:
        return _to_date(match["y"], match["m"], match["d"])
    match = _NUMERIC_DATE_RE.fullmatch(text)
    if match is not None:
        day, month = (match["a"], match["b"]) if order == "day_first" else (match["b"], match["a"])
        return _to_date(match["y"], month, day)
    match = _DAY_MONTH_YEAR_RE.fullmatch(text) or _MONTH_DAY_YEAR_RE.fullmatch(text)
    if match is not None:
        month_number = _MONTHS.get(match["month"].lower())
        return None if month_number is None else _to_date(match["y"], month_number, match["d"])
    return None


def parse_date(value: Any, *, order: DateOrder = "iso") -> _dt.date | None:
    """Read a calendar date from a string, or None; never guesses an ambiguous one.

    Why: "03/04/2020" is March 4th in the US and April 3rd in Europe. A grader
    that guesses rewards the wrong answer half the time, so the order of a
    numeric date must be declared, and without a declaration only ISO 8601 is
    read.

    Accepted, in this order:

    1. ISO 8601 whatever ``order`` says: ``YYYY-MM-DD``, optionally followed
       by ``T`` (or a space) and a time ``HH[:MM[:SS[.fff]]]`` with an optional
       ``Z`` or ``±HH[:MM]`` offset; the date is the calendar date as written
       (the offset is not applied). A bare ``YYYY-MM`` is a month, not a date:
       None.
    2. With ``order="iso"``, nothing else.
    3. With ``"day_first"`` or ``"month_first"``:

       * numeric ``D/M/YYYY`` (or ``M/D/YYYY``) with one separator among
         ``/ - .`` used twice, read in the declared order; four-digit years
         only (a two-digit year would need a guessed century);
       * year first ``YYYY/MM/DD`` or ``YYYY.MM.DD`` (no convention puts the
         day second);
       * an English month name or three-letter abbreviation (and "Sept") in
         either position, since those are unambiguous: "5 March 2021",
         "5th of March 2021", "05-Mar-2021", "March 5, 2021", "Mar. 5 2021".

    Non-strings are not dates: None. Impossible dates (February 30) are None.

    >>> parse_date("2021-03-05T10:00:00Z"), parse_date("03/04/2020")
    (datetime.date(2021, 3, 5), None)
    >>> parse_date("03/04/2020", order="day_first"), parse_date("03/04/2020", order="month_first")
    (datetime.date(2020, 4, 3), datetime.date(2020, 3, 4))
    >>> parse_date("March 5, 2021", order="day_first") == parse_date("5 Mar 2021", order="month_first")
    True
    """
    if order not in _DATE_ORDERS:
        validate_config(DateOptions, {"order": order})  # raises: not a date order
    return _date_of(value, order)


def _date_of(value: Any, order: DateOrder) -> _dt.date | None:
    if type(value) is not str:
        if _kind(value) != _STR:
            return None
        value = str(value)
    return None if len(value) > _DATE_MAX_CHARS else _parse_date_text(value, order)


class DateOptions(ComparatorOptions):
    """The options of :func:`date`."""

    comparator = "date"
    order: Annotated[DateOrder, _one_of(_DATE_ORDERS)] = "iso"
    """How a numeric date that is not ISO 8601 is read: ``iso`` (it is not), ``day_first`` or ``month_first``."""


def _make_date(options: DateOptions) -> Comparator:
    order = options.order

    def compare_date(prediction: Any, reference: Any) -> float:
        a = _date_of(prediction, order)
        b = _date_of(reference, order)
        if a is None or b is None:
            return exact(prediction, reference)
        return 1.0 if a == b else 0.0

    return compare_date


def date(prediction: Any, reference: Any, *, order: DateOrder = "iso") -> float:
    """1.0 iff both read as the same calendar date (see :func:`parse_date`), else 0.0.

    Formula: ``score = 1[parse_date(p) == parse_date(r)]`` when both parse;
    values that do not parse fall back to :func:`exact`.

    >>> date("2021-03-05", "2021-03-05T23:59:00+02:00"), date("5 March 2021", "2021-03-05", order="day_first")
    (1.0, 1.0)
    >>> date("05/03/2021", "2021-03-05"), date("05/03/2021", "2021-03-05", order="day_first")
    (0.0, 1.0)
    """
    return _built("date", order=order)(prediction, reference)


# --------------------------------------------------------------------------- date-times

_INSTANT_RE: Final = re.compile(r"\d{4}-?\d{2}-?\d{2}[T ]\d{2}", re.ASCII | re.IGNORECASE)
"""What an ISO 8601 date-time starts with: a date, then ``T`` (or a space) and an hour. A bare date is not an instant."""


@lru_cache(maxsize=1 << 14)
def _parse_instant_text(text: str) -> _dt.datetime | None:
    text = text.strip()
    if _INSTANT_RE.match(text) is None:
        return None
    try:
        value = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:  # 25:00, February 30, anything fromisoformat does not read
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)


def parse_datetime(value: Any) -> _dt.datetime | None:
    """Read an instant from an ISO 8601 date-time string, or None.

    ``YYYY-MM-DD`` then ``T`` (or a space) and a time ``HH[:MM[:SS[.ffffff]]]``
    with an optional ``Z`` or ``±HH[:MM]`` offset (what Python's
    ``datetime.fromisoformat`` reads). A date-time without an offset is read as
    UTC. A bare date is a day, not an instant: None (use :func:`parse_date`).

    >>> parse_datetime("2024-03-15T12:00:00+02:00") == parse_datetime("2024-03-15 10:00Z")
    True
    >>> parse_datetime("2024-03-15"), parse_datetime("soon"), parse_datetime(5)
    (None, None, None)
    """
    if type(value) is not str:
        if _kind(value) != _STR:
            return None
        value = str(value)
    return None if len(value) > _DATE_MAX_CHARS else _parse_instant_text(value)


class DatetimeOptions(ComparatorOptions):
    """The options of :func:`datetime`."""

    comparator = "datetime"
    tolerance: Tolerance = 0.0
    """Seconds two instants may be apart and still match."""


def _make_datetime(options: DatetimeOptions) -> Comparator:
    tolerance = options.tolerance

    def compare_datetime(prediction: Any, reference: Any) -> float:
        a = parse_datetime(prediction)
        b = parse_datetime(reference)
        if a is None or b is None:
            return exact(prediction, reference)
        return 1.0 if abs((a - b).total_seconds()) <= tolerance else 0.0

    return compare_datetime


def datetime(prediction: Any, reference: Any, *, tolerance: float = 0.0) -> float:
    """1.0 iff both read as instants (see :func:`parse_datetime`) at most ``tolerance`` seconds apart, else 0.0.

    Formula: ``score = 1[|t(p) - t(r)| <= tolerance]`` where ``t`` is the
    instant in UTC, so ``10:00Z`` and ``12:00+02:00`` are the same instant and
    ``10:00Z`` and ``23:59Z`` are not. Values that do not read as instants fall
    back to :func:`exact`.

    >>> datetime("2024-03-15T10:00:00Z", "2024-03-15T12:00:00+02:00"), datetime("2024-03-15T10:00Z", "2024-03-15T23:59Z")
    (1.0, 0.0)
    >>> datetime("2024-03-15T10:01:00Z", "2024-03-15T10:00:00Z", tolerance=60)
    1.0
    """
    return _built("datetime", tolerance=tolerance)(prediction, reference)


# --------------------------------------------------------------------------- enum, bool


class EnumOptions(ComparatorOptions):
    """The options of :func:`enum`."""

    comparator = "enum"
    case_sensitive: Flag = True
    """False: two strings match when their casefolds are equal."""


def _make_enum(options: EnumOptions) -> Comparator:
    if options.case_sensitive:
        return exact

    def compare_enum(prediction: Any, reference: Any) -> float:
        if type(prediction) is str and type(reference) is str:
            return 1.0 if prediction == reference or prediction.casefold() == reference.casefold() else 0.0
        return exact(prediction, reference)

    return compare_enum


def enum(prediction: Any, reference: Any, *, case_sensitive: bool = True) -> float:
    """1.0 iff the prediction is the reference label, else 0.0.

    Formula: ``score = exact(p, r)``; with ``case_sensitive=False`` two
    strings are compared as ``p.casefold() == r.casefold()``. Labels are
    labels: no whitespace trimming, and ``"1"`` is not ``1``.

    >>> enum("red", "red"), enum("Red", "red"), enum("Red", "red", case_sensitive=False), enum(2, 2.0)
    (1.0, 0.0, 1.0, 1.0)
    """
    return _built("enum", case_sensitive=case_sensitive)(prediction, reference)


_BOOL_WORDS: Final[dict[str, bool]] = {"true": True, "false": False, "yes": True, "no": False}


def _as_bool(value: Any) -> bool | None:
    if value is True or value is False:
        return bool(value)
    if type(value) is str and len(value) <= 16:
        return _BOOL_WORDS.get(value.strip().lower())
    return None


class BoolOptions(ComparatorOptions):
    """:func:`boolean` takes no options."""

    comparator = "bool"


def boolean(prediction: Any, reference: Any) -> float:
    """1.0 iff both read as the same truth value, else 0.0.

    Formula: ``score = 1[b(p) == b(r)]`` where ``b`` reads ``true``/``false``
    and the strings "true", "false", "yes", "no" (any case, surrounding
    whitespace ignored). The coercion applies to both sides alike, so the
    score is symmetric; a dataset exported through CSV often carries
    "true" as text. Numbers are not truth values (``1`` is not ``true``);
    unreadable values fall back to :func:`exact`.

    >>> boolean(True, True), boolean("Yes", True), boolean(" FALSE ", "no"), boolean(1, True)
    (1.0, 1.0, 1.0, 0.0)
    """
    a = _as_bool(prediction)
    b = _as_bool(reference)
    if a is None or b is None:
        return exact(prediction, reference)
    return 1.0 if a == b else 0.0




