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

Options are checked by :func:`make_comparator`; a bad one raises
:class:`graders._errors.GraderConfigError` with code ``unknown_comparator`` or
``bad_comparator_option``, the JSON pointer of the offending option and a hint.
The public functions take the same options as keyword arguments and validate
them the same way (through a small cache of built comparators).

>>> compare = make_comparator("fuzzy", scorer="token_sort_ratio", threshold=0.8)
>>> compare("Berkeley University of California", "University of California Berkeley")
1.0
>>> compare(None, "Berkeley")
0.0
"""

from __future__ import annotations

import datetime as _dt
import difflib
import logging
import math as _math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal, get_args

from rapidfuzz import fuzz
from rapidfuzz.distance import Indel, JaroWinkler, Levenshtein

from graders._errors import GraderConfigError


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns that its timeouts are off; they are off on purpose (they rely on
    signals, which break outside the main thread) and inputs are bounded instead (see math)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger).addFilter(_DropTimeoutNotice())

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


# --------------------------------------------------------------------------- text


def _is_punctuation(char: str) -> bool:
    # Connector punctuation ("_") belongs to words; every other P* category is punctuation.
    category = unicodedata.category(char)
    return category[0] == "P" and category != "Pc"


_KEEP_LEADING: Final = ".-#@"
"""Leading marks that carry meaning: ".NET", "-5", "#1", "@handle"."""
_KEEP_TRAILING: Final = "#%"
"""Trailing marks that carry meaning: "C#", "F#", "12%" ("+" is a symbol, never stripped)."""

_ASCII_STRIP_LEADING: Final = "".join(c for c in map(chr, range(128)) if _is_punctuation(c) and c not in _KEEP_LEADING)
_ASCII_STRIP_TRAILING: Final = "".join(
    c for c in map(chr, range(128)) if _is_punctuation(c) and c not in _KEEP_TRAILING
)


def _strip_ascii_token(token: str) -> str:
    return token.rstrip(_ASCII_STRIP_TRAILING).lstrip(_ASCII_STRIP_LEADING)


def _strip_token(token: str) -> str:
    end = len(token)
    while end and token[end - 1] not in _KEEP_TRAILING and _is_punctuation(token[end - 1]):
        end -= 1
    start = 0
    while start < end and token[start] not in _KEEP_LEADING and _is_punctuation(token[start]):
        start += 1
    return token[start:end]


def _normalize(text: str, strip_punctuation: bool) -> str:
    if text.isascii():  # ASCII is already NFKC, and casefold() == lower() on it
        tokens = text.lower().split()
        strip = _strip_ascii_token
    else:
        tokens = unicodedata.normalize("NFKC", text).casefold().split()
        strip = _strip_token
    if strip_punctuation:
        tokens = [t for t in map(strip, tokens) if t]
    return " ".join(tokens)


_NORMALIZED: Final[tuple[dict[str, str], dict[str, str]]] = ({}, {})
"""normalize_text results, indexed by strip_punctuation. A plain dict emptied when
full: a hit costs ~40 ns against ~100 ns for an lru_cache keyed on two arguments,
and an uncached call costs 0.8-2.3 us (measured on short names)."""
_NORMALIZED_MAX_ENTRIES: Final = 1 << 16


def normalize_text(text: str, *, strip_punctuation: bool = False) -> str:
    """NFKC, casefold, collapse whitespace runs to one space, strip the ends.

    Why: two spellings of the same answer ("Los  Angeles", "LOS ANGELES", a
    full-width "Ｌｏｓ") should compare equal, without merging values a user
    cares about.

    With ``strip_punctuation``, punctuation (Unicode category P*, except the
    connector ``_``) is removed **only at the edges of whitespace-separated
    tokens**, never inside one, and marks that carry meaning stay:

    * trailing ``#`` and ``%`` stay ("C#", "F#", "12%"); ``+`` is a symbol,
      not punctuation, so "C++" is never touched;
    * leading ``.``, ``-``, ``#``, ``@`` stay (".NET", "-5", "#1", "@user");
    * inside a token everything stays ("Node.js", "U.S.A", "don't").

    So "C++", "C#", "C", "F#", ".NET" and "Node.js" stay pairwise distinct,
    while "Los Angeles," and "(los angeles)" both become "los angeles". A token
    made only of punctuation ("-", "...") disappears.

    >>> normalize_text("  Los\\tANGELES, ")
    'los angeles,'
    >>> normalize_text("Los Angeles,", strip_punctuation=True)
    'los angeles'
    >>> [normalize_text(s, strip_punctuation=True) for s in ["C++,", "(C#)", "C.", ".NET", "Node.js!"]]
    ['c++', 'c#', 'c', '.net', 'node.js']
    """
    return _norm(text, strip_punctuation)


def _norm(text: str, strip_punctuation: bool) -> str:
    """:func:`normalize_text` without the keyword-argument overhead, for the hot paths."""
    cache = _NORMALIZED[strip_punctuation]
    result = cache.get(text)
    if result is None:
        result = _normalize(text, strip_punctuation)
        if len(text) <= _CACHE_MAX_CHARS:
            if len(cache) >= _NORMALIZED_MAX_ENTRIES:
                cache.clear()
            cache[text] = result
    return result


def _only_strings(items: list[Any]) -> bool:
    """True when every item is a ``str`` (the comparator matrices handle nothing else)."""
    for x in items:
        if type(x) is not str:
            return False
    return True


def _make_normalized(*, strip_punctuation: bool = False) -> Comparator:
    cache = _NORMALIZED[strip_punctuation]

    def compare_normalized(prediction: Any, reference: Any) -> float:
        if type(prediction) is str and type(reference) is str:
            if prediction == reference:
                return 1.0
            a = cache.get(prediction) or _norm(prediction, strip_punctuation)
            b = cache.get(reference) or _norm(reference, strip_punctuation)
            return 1.0 if a == b else 0.0
        return exact(prediction, reference)

    def matrix(predictions: list[Any], references: list[Any]) -> list[list[float]] | None:
        """``compare_normalized`` for every pair, shape (P, R), normalising each string once.

        None unless every item is a non-blank string (the caller then goes pair by pair).
        """
        if not (_only_strings(predictions) and _only_strings(references)):
            return None
        left = [cache.get(x) or _norm(x, strip_punctuation) for x in predictions]
        right = [cache.get(x) or _norm(x, strip_punctuation) for x in references]
        if not all(left) or not all(right):
            return None
        return [[1.0 if a == b else 0.0 for b in right] for a in left]

    def key(text: str) -> str:
        """Two strings score 1 exactly when their keys are equal (and 0 otherwise)."""
        return cache.get(text) or _norm(text, strip_punctuation)

    cached = cache.get

    def keys(texts: list[str]) -> list[str]:
        """``[key(t) for t in texts]``, with the cache looked up in one C-level pass."""
        found: list[str | None] = list(map(cached, texts))
        if all(found):  # every one cached (and not empty): a truth test is cheaper than `None in found`
            return found  # type: ignore[return-value]  # no None in it
        return [k if k is not None else _norm(t, strip_punctuation) for k, t in zip(found, texts)]

    compare_normalized.matrix = matrix  # type: ignore[attr-defined]  # read by the structured grader's list pairing
    compare_normalized.key = key  # type: ignore[attr-defined]  # lets list pairing match equal keys in O(P + R)
    compare_normalized.keys = keys  # type: ignore[attr-defined]  # the same, for a whole list at once
    return compare_normalized


def normalized(prediction: Any, reference: Any, *, strip_punctuation: bool = False) -> float:
    """1.0 iff both are strings with equal :func:`normalize_text`; other values fall back to :func:`exact`.

    Formula: ``score = 1[normalize_text(p) == normalize_text(r)]`` for two
    strings, else ``exact(p, r)``.

    >>> normalized("Los Angeles", "  los   ANGELES ")
    1.0
    >>> normalized("Los Angeles,", "los angeles", strip_punctuation=True), normalized("C++", "C", strip_punctuation=True)
    (1.0, 0.0)
    >>> normalized(3, 3), normalized("3", 3)
    (1.0, 0.0)
    """
    return _built("normalized", strip_punctuation=strip_punctuation)(prediction, reference)


# --------------------------------------------------------------------------- fuzzy

_Scorer = Callable[..., float]

_FUZZY_SCORERS: Final[dict[str, tuple[_Scorer, float]]] = {
    # name: (rapidfuzz scorer, the score it gives identical strings)
    "ratio": (fuzz.ratio, 100.0),
    "partial_ratio": (fuzz.partial_ratio, 100.0),
    "token_sort_ratio": (fuzz.token_sort_ratio, 100.0),
    "token_set_ratio": (fuzz.token_set_ratio, 100.0),
    "WRatio": (fuzz.WRatio, 100.0),
    "jaro_winkler": (JaroWinkler.normalized_similarity, 1.0),
    "levenshtein": (Levenshtein.normalized_similarity, 1.0),
    "indel": (Indel.normalized_similarity, 1.0),
}


def _as_text(value: Any) -> str | None:
    """The text fuzzy matching and math compare: a string as is, a number as JSON writes it."""
    if type(value) is str:
        return value
    kind = _kind(value)
    if kind == _STR:
        return str(value)
    if kind == _NUMBER:
        if isinstance(value, float):
            text = repr(value)
            return text.removesuffix(".0")  # 5.0 reads as "5"
        try:
            return str(value)
        except ValueError:  # an int past Python's int-to-str digit limit
            return None
    return None


_FUZZY_MAX_CHARS: Final[dict[str, int]] = {"partial_ratio": 1_000, "WRatio": 1_000}
"""The characters of each text a fuzzy scorer looks at, by default: ``partial_ratio`` and ``WRatio``
slide the shorter text along the longer (about 1 s on two 4,000-character texts, minutes on 20,000)."""
_FUZZY_DEFAULT_MAX_CHARS: Final = 10_000
"""The same for every other scorer (``ratio`` on two 10,000-character texts: about 3 ms)."""


def fuzzy_max_chars(scorer: str, max_chars: int | None = None) -> int:
    """How many characters of each text the ``fuzzy`` comparator with ``scorer`` compares (``max_chars`` when given)."""
    return max_chars if max_chars is not None else _FUZZY_MAX_CHARS.get(scorer, _FUZZY_DEFAULT_MAX_CHARS)


def _make_fuzzy(
    *,
    scorer: FuzzyScorer = "ratio",
    threshold: float = 0.0,
    partial_credit: bool = True,
    normalize: bool = True,
    max_chars: int | None = None,
) -> Comparator:
    score_fn, scale = _FUZZY_SCORERS[scorer]
    threshold = float(threshold)
    cap = fuzzy_max_chars(scorer, max_chars)
    cached_cut = normalize and cap >= _CACHE_MAX_CHARS
    # rapidfuzz returns 0 below score_cutoff, which skips work; the epsilon keeps a
    # score exactly at the threshold from being cut by float rounding of threshold * scale.
    cutoff = max(0.0, threshold * scale - 1e-9)
    cache = _NORMALIZED[False]

    def compare_fuzzy(prediction: Any, reference: Any) -> float:
        if type(prediction) is str and type(reference) is str:
            a, b = prediction, reference
        else:
            a_text = _as_text(prediction)
            b_text = _as_text(reference)
            if a_text is None or b_text is None:
                return exact(prediction, reference)
            a, b = a_text, b_text
        # Only the first `cap` characters are compared (the grader notes a cut in the field's detail). The cache
        # holds texts of at most _CACHE_MAX_CHARS characters, so with a cap at least that large a hit needs no cut.
        if cached_cut:
            a = cache.get(a) or _norm(a[:cap], False)
            b = cache.get(b) or _norm(b[:cap], False)
        else:
            a = a[:cap]
            b = b[:cap]
            if normalize:
                a = cache.get(a) or _norm(a, False)
                b = cache.get(b) or _norm(b, False)
        if a == b:
            return 1.0
        if not a or not b:
            return 0.0
        s = score_fn(a, b, score_cutoff=cutoff) / scale
        if s > 1.0:  # not min(s, 1.0): a builtin call costs more than the comparison (~150 ns of ~400)
            s = 1.0
        if s < threshold:
            return 0.0
        return s if partial_credit else 1.0

    def matrix(predictions: list[Any], references: list[Any]) -> list[list[float]] | None:
        """``compare_fuzzy`` for every pair, shape (P, R), normalising each string once.

        Answers None unless every item is a non-blank string; the caller then
        compares pair by pair. Each entry equals ``compare_fuzzy(p, r)``.
        """
        if not (_only_strings(predictions) and _only_strings(references)):
            return None
        if cached_cut:
            left = [cache.get(x) or _norm(x[:cap], False) for x in predictions]
            right = [cache.get(x) or _norm(x[:cap], False) for x in references]
        elif normalize:
            left = [_norm(x[:cap], False) for x in predictions]
            right = [_norm(x[:cap], False) for x in references]
        else:
            left, right = [x[:cap] for x in predictions], [x[:cap] for x in references]
        if not all(left) or not all(right):
            return None
        rows = []
        for a in left:
            row = []
            for b in right:
                if a == b:
                    row.append(1.0)
                    continue
                s = score_fn(a, b, score_cutoff=cutoff) / scale
                if s > 1.0:
                    s = 1.0
                row.append(0.0 if s < threshold else (s if partial_credit else 1.0))
            rows.append(row)
        return rows

    compare_fuzzy.matrix = matrix  # type: ignore[attr-defined]  # read by the structured grader's list pairing
    # partial_ratio and WRatio slide the shorter text along the longer: minutes on two 20k-character texts
    compare_fuzzy.slow_on_long_texts = scorer in ("partial_ratio", "WRatio")  # type: ignore[attr-defined]
    compare_fuzzy.max_chars = cap  # type: ignore[attr-defined]  # read by the structured grader, which notes a cut text
    return compare_fuzzy


def fuzzy(
    prediction: Any,
    reference: Any,
    *,
    scorer: FuzzyScorer = "ratio",
    threshold: float = 0.0,
    partial_credit: bool = True,
    normalize: bool = True,
    max_chars: int | None = None,
) -> float:
    """Similarity of two texts under a named rapidfuzz scorer, with a threshold.

    Formula: ``s = scorer(norm(p), norm(r))`` scaled to [0, 1] (rapidfuzz's
    0-100 ratios are divided by 100; ``jaro_winkler``, ``levenshtein`` and
    ``indel`` are rapidfuzz's ``normalized_similarity``), where ``norm`` is
    :func:`normalize_text` when ``normalize`` is true and the identity
    otherwise. Then ``score = 0`` if ``s < threshold``, else ``s`` with
    ``partial_credit`` and ``1`` without it (pass/fail). Equal texts (two empty
    ones included) score 1; one empty text against a non-empty one scores 0.

    Only the first ``max_chars`` characters of each text are compared (before
    normalisation): 1,000 for ``partial_ratio`` and ``WRatio``, whose cost grows
    with the product of the lengths and more, and 10,000 for the other scorers,
    so a megabyte-long output costs milliseconds, not minutes. Two texts that
    agree on their first ``max_chars`` characters score 1; the structured grader
    notes the cut in the field's detail.

    Numbers are compared as the text JSON writes them (``5.0`` as ``"5"``), so
    a number can match a string; any other value (null, bool, list, object)
    falls back to :func:`exact`.

    >>> round(fuzzy("Berkeley", "Berkley"), 3)
    0.933
    >>> fuzzy("Berkeley", "Berkley", threshold=0.9, partial_credit=False)
    1.0
    >>> fuzzy("Berkeley", "Stanford", threshold=0.5)
    0.0
    >>> fuzzy("UC Berkeley", "University of California Berkeley", scorer="partial_ratio") > 0.8
    True
    """
    return _built("fuzzy", scorer=scorer, threshold=threshold, partial_credit=partial_credit, normalize=normalize,
                  max_chars=max_chars)(prediction, reference)


# --------------------------------------------------------------------------- numbers

DecimalMark = Literal[".", ","]
"""The decimal mark :func:`parse_number` reads: ``"."`` (``"1,234.50"``) or a declared ``","`` (``"1.234,50"``)."""

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
        _check_choice(_DECIMAL_MARKS)(decimal, "/decimal")
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


def _make_number(*, abs_tol: float = 0.0, rel_tol: float = 0.0, decimal: DecimalMark = ".") -> Comparator:
    abs_tol = float(abs_tol)
    rel_tol = float(rel_tol)
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
        _check_choice(_DATE_ORDERS)(order, "/order")
    return _date_of(value, order)


def _date_of(value: Any, order: DateOrder) -> _dt.date | None:
    if type(value) is not str:
        if _kind(value) != _STR:
            return None
        value = str(value)
    return None if len(value) > _DATE_MAX_CHARS else _parse_date_text(value, order)


def _make_date(*, order: DateOrder = "iso") -> Comparator:
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


def _make_datetime(*, tolerance: float = 0.0) -> Comparator:
    tolerance = float(tolerance)

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


def _make_enum(*, case_sensitive: bool = True) -> Comparator:
    if case_sensitive:
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


# --------------------------------------------------------------------------- math

_MATH_MAX_CHARS: Final = 256
"""Longer answers are not parsed: math-verify runs here without a timeout."""


_MATH_MAGNITUDE_LIMIT: Final = 10_000.0
"""Largest exponent, exp() argument or factorial argument a math answer may hold."""
_MATH_MAX_DEPTH: Final = 100


def _is_tame(expr: Any, depth: int = 0) -> bool:
    """False when sympy could spend minutes evaluating ``expr`` ("9^9^9^9", "(10^{10})!").

    Without math-verify's timeouts this guard is what keeps a hostile answer
    from hanging the grader: every numeric exponent, ``exp`` argument and
    factorial-like argument must be at most 10,000 in absolute value. Children
    are checked first, so evaluating an argument is always cheap.
    """
    import sympy  # here, not at module level: with math-verify it is a third of `import graders`
    from sympy.functions.combinatorial.factorials import CombinatorialFunction

    if depth > _MATH_MAX_DEPTH:
        return False
    if isinstance(expr, sympy.MatrixBase):
        return all(_is_tame(element, depth + 1) for element in expr)
    if not isinstance(expr, sympy.Basic):
        return True
    if not all(_is_tame(arg, depth + 1) for arg in expr.args):
        return False
    if isinstance(expr, sympy.Pow):
        limited: tuple[Any, ...] = (expr.exp,)
    elif isinstance(expr, (sympy.exp, sympy.gamma, CombinatorialFunction)):
        limited = expr.args
    else:
        return True
    for arg in limited:
        if arg.is_number:
            try:
                size = abs(complex(arg.evalf(15)))
            except (TypeError, ValueError):  # zoo, nan: not a complex number
                return False
            if not size <= _MATH_MAGNITUDE_LIMIT:
                return False
    return True


@lru_cache(maxsize=1 << 12)
def _parse_math(text: str) -> tuple[Any, ...]:
    # parsing_timeout=0 turns off math-verify's SIGALRM timeout, which raises
    # outside the main thread (graders run in worker threads and Ray actors).
    import math_verify  # here, not at module level: only the math comparator needs it (~0.3 s to import)

    parsed = math_verify.parse(text, parsing_timeout=0)
    if not parsed and "$" not in text:
        # A bare answer such as "x^2+2x+1" is only read as LaTeX inside math mode.
        parsed = math_verify.parse(f"${text}$", parsing_timeout=0)
    if not all(_is_tame(item) for item in parsed):
        return ()
    return tuple(parsed)


def math(prediction: Any, reference: Any) -> float:
    """1.0 iff the prediction is mathematically equivalent to the reference, via math-verify.

    Formula: ``score = 1[verify(parse(r), parse(p))]`` where ``parse`` reads
    LaTeX or a plain expression (a bare one is retried inside ``$...$``) and
    ``verify`` checks symbolic or numeric equality (rounded to 6 decimals).
    Numbers are read as the text JSON writes them. Equal strings score 1
    without parsing; an unparseable answer scores 0; values that are neither
    strings nor numbers fall back to :func:`exact`.

    math-verify's signal-based timeouts are turned off (they fail outside the
    main thread), so two guards stand in for them: answers longer than 256
    characters score 0 unparsed, and so do answers holding an exponent, an
    ``exp`` argument or a factorial argument above 10,000 ("9^9^9^9" would
    otherwise keep sympy busy for hours). Keep a process-level time limit on
    graders that see adversarial outputs all the same.

    >>> math("1/2", "0.5"), math("\\\\frac{1}{2}", 0.5), math("(x+1)^2", "x^2+2x+1"), math("3", "4")
    (1.0, 1.0, 1.0, 0.0)
    """
    a = _as_text(prediction)
    b = _as_text(reference)
    if a is None or b is None:
        return exact(prediction, reference)
    a = a.strip()
    b = b.strip()
    if a == b:
        return 1.0
    if not a or not b or len(a) > _MATH_MAX_CHARS or len(b) > _MATH_MAX_CHARS:
        return 0.0
    return 1.0 if _math_equal(a, b) else 0.0


@lru_cache(maxsize=1 << 14)
def _math_equal(prediction: str, reference: str) -> bool:
    # Cached on the pair: verify() costs ~0.25 ms even on parsed answers, and
    # RL samples of one prompt repeat the same few answers.
    gold = _parse_math(reference)
    target = _parse_math(prediction)
    if not gold or not target:
        return False
    import math_verify  # imported by _parse_math already; a module-cache lookup

    return bool(math_verify.verify(list(gold), list(target), timeout_seconds=None))


# --------------------------------------------------------------------------- construction

_OptionCheck = Callable[[object, str], None]
"""Raises GraderConfigError when a value is wrong for an option; gets the option's pointer."""


def _choices(values: tuple[object, ...]) -> str:
    return ", ".join(repr(v) for v in values)


def _bad_option(message: str, pointer: str, hint: str) -> GraderConfigError:
    return GraderConfigError(message, code="bad_comparator_option", pointer=pointer, hint=hint)


def _check_bool(value: object, pointer: str) -> None:
    if type(value) is not bool:
        raise _bad_option(f"expected true or false, got {value!r}", pointer, "use a JSON boolean")


def _real(value: object) -> float | None:
    """A finite int or float option as a float (bools are not numbers), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _math.isfinite(value):
        return float(value)
    return None


def _check_unit_interval(value: object, pointer: str) -> None:
    real = _real(value)
    if real is None or not 0.0 <= real <= 1.0:
        raise _bad_option(f"expected a number in [0, 1], got {value!r}", pointer, "0.8 means 80% similar")


def _check_tolerance(value: object, pointer: str) -> None:
    real = _real(value)
    if real is None or real < 0.0:
        raise _bad_option(
            f"expected a finite number >= 0, got {value!r}", pointer, "0 means exact; 0.01 in rel_tol means 1%"
        )


def _check_max_chars(value: object, pointer: str) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise _bad_option(f"expected a whole number of characters >= 1, got {value!r}", pointer,
                          "the default is 1000 for partial_ratio and WRatio, 10000 for the other scorers")


def _check_choice(choices: tuple[str, ...]) -> _OptionCheck:
    def check(value: object, pointer: str) -> None:
        if type(value) is not str or value not in choices:
            raise _bad_option(
                f"expected one of {_choices(choices)}, got {value!r}", pointer, f"use one of {_choices(choices)}"
            )

    return check


_FUZZY_SCORER_NAMES: Final = get_args(FuzzyScorer)
_DATE_ORDERS: Final = get_args(DateOrder)
_DECIMAL_MARKS: Final = get_args(DecimalMark)
_COMPARATOR_NAMES: Final = get_args(ComparatorName)


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


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


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
                f"{pointer}/{_escape(key)}",
                (closest(key, tuple(spec.options)) if not owners else "") + f"{name!r} takes {accepted}{elsewhere}",
            )
        check(value, f"{pointer}/{_escape(key)}")
    if name == "fuzzy" and options.get("partial_credit") is False and not options.get("threshold"):
        raise _bad_option(
            "pass/fail fuzzy matching (partial_credit=false) needs a threshold above 0",
            f"{pointer}/threshold",
            "set threshold, e.g. 0.9, or keep partial_credit=true",
        )
    return spec.build(**options)


# typed=True: partial_credit=1 must not hit the entry cached for partial_credit=True.
_built: Final = lru_cache(maxsize=256, typed=True)(make_comparator)
"""make_comparator with a small cache, for the public functions' keyword options."""
