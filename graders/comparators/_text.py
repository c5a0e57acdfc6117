"""Text comparators: exact-after-normalisation (normalized) and rapidfuzz similarity (fuzzy)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from rapidfuzz import fuzz
from rapidfuzz.distance import Indel, JaroWinkler, Levenshtein

from .._errors import GraderConfigError
from .._validation import Explained
from ._base import (
    _CACHE_MAX_CHARS,
    _FUZZY_SCORER_NAMES,
    _NUMBER,
    _STR,
    Comparator,
    ComparatorOptions,
    Flag,
    FuzzyScorer,
    UnitInterval,
    _built,
    _kind,
    _one_of,
    exact,
)

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
full: a hit is cheaper than an lru_cache keyed on two arguments."""
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


class NormalizedOptions(ComparatorOptions):
    """The options of :func:`normalized`."""

    comparator = "normalized"
    strip_punctuation: Flag = False
    """Also strip punctuation at the edges of each token (meaningful marks stay: ``C++``, ``C#``, ``.NET``)."""


def _make_normalized(options: NormalizedOptions) -> Comparator:
    strip_punctuation = options.strip_punctuation
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


_PASS_FAIL_NEEDS_A_THRESHOLD: Final[JsonDict] = {
    "if": {"properties": {"partial_credit": {"const": False}}, "required": ["partial_credit"]},
    "then": {"properties": {"threshold": {"exclusiveMinimum": 0}}, "required": ["threshold"]},
}
"""FuzzyOptions' own check, as JSON Schema says it (the field-option schema carries it)."""


class FuzzyOptions(ComparatorOptions):
    """The options of :func:`fuzzy`."""

    model_config = ConfigDict(json_schema_extra=_PASS_FAIL_NEEDS_A_THRESHOLD)
    comparator = "fuzzy"

    scorer: Annotated[FuzzyScorer, _one_of(_FUZZY_SCORER_NAMES)] = "ratio"
    """The rapidfuzz scorer: ratio, partial_ratio, token_sort_ratio, token_set_ratio, WRatio, jaro_winkler,
    levenshtein (normalised similarity) or indel."""
    threshold: UnitInterval = 0.0
    """A similarity below it scores 0."""
    partial_credit: Flag = True
    """True: the similarity is the score; false: pass/fail (1 at or above threshold, which must then be above 0)."""
    normalize: Flag = True
    """Compare normalize_text of both texts (case, width and whitespace folded)."""
    max_chars: Annotated[int, Field(ge=1), Explained(
        "expected a whole number of characters >= 1",
        "the default is 1000 for partial_ratio and WRatio, 10000 for the other scorers")] | None = None
    """How many characters of each text are compared (none: 1000 for partial_ratio and WRatio, 10000 otherwise)."""

    @model_validator(mode="after")
    def _pass_fail_needs_a_threshold(self) -> FuzzyOptions:
        if not self.partial_credit and not self.threshold:
            raise GraderConfigError("pass/fail fuzzy matching (partial_credit=false) needs a threshold above 0",
                                    code="bad_comparator_option", pointer="/threshold",
                                    hint="set threshold, e.g. 0.9, or keep partial_credit=true")
        return self


def _make_fuzzy(options: FuzzyOptions) -> Comparator:
    scorer, threshold, partial_credit = options.scorer, options.threshold, options.partial_credit
    normalize = options.normalize
    score_fn, scale = _FUZZY_SCORERS[scorer]
    cap = fuzzy_max_chars(scorer, options.max_chars)
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
        if s > 1.0:  # not min(s, 1.0): a builtin call costs more than the comparison
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




