"""Tests for graders.comparators: per-comparator tables, and the properties every comparator keeps.

The properties: a value scores 1.0 against itself; no JSON value makes a
comparator raise or leave [0, 1]; the number tolerance is symmetric; a date is
never guessed; normalisation never merges "C++", "C#" and "C"; a bad option
raises GraderConfigError with a code and a pointer.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math as pymath
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graders import comparators
from graders._errors import GraderConfigError
from graders.comparators._base import Comparator, ComparatorName, exact
from graders.comparators._math import math as math_cmp
from graders.comparators._numbers import boolean, date, enum, number, parse_date, parse_number
from graders.comparators._registry import comparator_models, make_comparator
from graders.comparators._text import fuzzy, normalize_text, normalized

ROOT = Path(__file__).resolve().parents[2]

# One build of every comparator and of the option variants worth covering.
CONFIGS: dict[str, dict[str, Any]] = {
    "exact": {},
    "normalized": {},
    "normalized_strip": {"strip_punctuation": True},
    "fuzzy": {},
    "fuzzy_pass_fail": {"threshold": 0.8, "partial_credit": False},
    "fuzzy_partial_ratio": {"scorer": "partial_ratio"},
    "fuzzy_token_set_raw": {"scorer": "token_set_ratio", "normalize": False},
    "fuzzy_WRatio": {"scorer": "WRatio", "threshold": 0.5},
    "fuzzy_jaro_winkler": {"scorer": "jaro_winkler"},
    "fuzzy_levenshtein": {"scorer": "levenshtein"},
    "fuzzy_indel": {"scorer": "indel"},
    "fuzzy_token_sort_ratio": {"scorer": "token_sort_ratio"},
    "number": {},
    "number_tol": {"abs_tol": 0.5, "rel_tol": 0.01},
    "date": {},
    "date_day_first": {"order": "day_first"},
    "date_month_first": {"order": "month_first"},
    "enum": {},
    "enum_ci": {"case_sensitive": False},
    "bool": {},
    "math": {},
}
BUILT: dict[str, Comparator] = {key: make_comparator(key.split("_")[0], **opts) for key, opts in CONFIGS.items()}
CHEAP = {key: fn for key, fn in BUILT.items() if key != "math"}  # math-verify costs milliseconds a pair


def _check_score(score: object) -> None:
    assert type(score) is float
    assert pymath.isfinite(score)
    assert 0.0 <= score <= 1.0


# --------------------------------------------------------------------------- surface


def test_all_lists_the_public_names() -> None:
    assert sorted(comparators.__all__) == [
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
    for name in comparators.__all__:
        assert hasattr(comparators, name)


@pytest.mark.parametrize("name", get_args(ComparatorName))
def test_every_comparator_name_builds(name: str) -> None:
    assert make_comparator(name)("x", "x") == 1.0


@pytest.mark.parametrize("fn", [exact, normalized, fuzzy, number, date, enum, boolean, math_cmp])
def test_public_comparators_state_formula_and_example(fn: Any) -> None:
    assert "ormula" in fn.__doc__
    assert ">>>" in fn.__doc__


# --------------------------------------------------------------------------- exact

EXACT_CASES: list[tuple[Any, Any, float]] = [
    ("a", "a", 1.0),
    ("a", "A", 0.0),
    ("a", " a", 0.0),
    (1, 1.0, 1.0),
    (1, 2, 0.0),
    (True, 1, 0.0),
    (1, True, 0.0),
    (False, 0, 0.0),
    (False, False, 1.0),
    (None, None, 1.0),
    (None, "null", 0.0),
    ("1", 1, 0.0),
    ([], [], 1.0),
    ({}, {}, 1.0),
    ([], {}, 0.0),
    ([1, 2], [2, 1], 0.0),
    ([1, [True]], [1, [1]], 0.0),
    ({"a": 1, "b": [None]}, {"b": [None], "a": 1.0}, 1.0),
    ({"a": 1}, {"a": 1, "b": 2}, 0.0),
    ({"a": True}, {"a": 1}, 0.0),
    (float("nan"), float("nan"), 0.0),
    ([float("nan")], [float("nan")], 0.0),
    (10**400, 1e308, 0.0),
]


@pytest.mark.parametrize(("pred", "ref", "expected"), EXACT_CASES)
def test_exact(pred: Any, ref: Any, expected: float) -> None:
    assert exact(pred, ref) == expected
    assert exact(ref, pred) == expected


def test_exact_handles_deep_nesting_without_recursion() -> None:
    deep: Any = []
    for _ in range(50_000):
        deep = [deep]
    other: Any = []
    for _ in range(50_000):
        other = [other]
    assert exact(deep, other) == 1.0
    assert exact(deep, [[[1]]]) == 0.0


# --------------------------------------------------------------------------- text

NORMALIZE_CASES: list[tuple[str, bool, str]] = [
    ("  Los\t\nANGELES  ", False, "los angeles"),
    ("Los Angeles,", False, "los angeles,"),
    ("Los Angeles,", True, "los angeles"),
    ("(los angeles)", True, "los angeles"),
    ('"Los Angeles."', True, "los angeles"),
    ("Ｌｏｓ\u3000Ａｎｇｅｌｅｓ", False, "los angeles"),  # full-width letters and space (NFKC)
    ("STRASSE", False, "strasse"),
    ("Straße", False, "strasse"),  # casefold, not lower
    ("C++,", True, "c++"),
    ("(C#)", True, "c#"),
    ("F#.", True, "f#"),
    ("C.", True, "c"),
    (".NET", True, ".net"),
    ("Node.js!", True, "node.js"),
    ("don't stop", True, "don't stop"),
    ("U.S.A.", True, "u.s.a"),
    ("-5 degrees", True, "-5 degrees"),
    ("12%", True, "12%"),
    ("__init__", True, "__init__"),
    ("New York - NY", True, "new york ny"),
    ("¿Qué?", True, "qué"),
    ("«Paris»", True, "paris"),
    ("...", True, ""),
    ("", False, ""),
    ("   ", True, ""),
]


@pytest.mark.parametrize(("text", "strip", "expected"), NORMALIZE_CASES)
def test_normalize_text(text: str, strip: bool, expected: str) -> None:
    assert normalize_text(text, strip_punctuation=strip) == expected


def test_normalize_text_is_idempotent() -> None:
    for text, strip, _ in NORMALIZE_CASES:
        once = normalize_text(text, strip_punctuation=strip)
        assert normalize_text(once, strip_punctuation=strip) == once


def test_normalize_text_long_strings_bypass_the_cache() -> None:
    text = "Word, " * 10_000
    assert normalize_text(text, strip_punctuation=True) == " ".join(["word"] * 10_000)


LANGUAGES = ["C++", "C#", "C", "F#", ".NET", "Node.js", "c", "C+", "J#", "Go", "R"]


@pytest.mark.parametrize("strip", [False, True])
def test_normalization_never_merges_distinct_languages(strip: bool) -> None:
    distinct = ["C++", "C#", "C", "F#", ".NET", "Node.js"]
    keys = [normalize_text(s, strip_punctuation=strip) for s in distinct]
    assert len(set(keys)) == len(distinct)
    for a, b in itertools.combinations(distinct, 2):
        assert normalized(a, b, strip_punctuation=strip) == 0.0
        assert normalized(f" {a}, ", b.lower(), strip_punctuation=True) == 0.0
    assert fuzzy("C++", "C", threshold=0.9) == 0.0
    assert fuzzy("C#", "C", threshold=0.9) == 0.0


NORMALIZED_CASES: list[tuple[Any, Any, dict[str, Any], float]] = [
    ("Los Angeles", "los angeles", {}, 1.0),
    ("Los  Angeles ", " los angeles", {}, 1.0),
    ("Los Angeles,", "los angeles", {}, 0.0),
    ("Los Angeles,", "los angeles", {"strip_punctuation": True}, 1.0),
    ("python", "Python", {}, 1.0),
    ("c++", "C++", {"strip_punctuation": True}, 1.0),
    ("c++", "C", {"strip_punctuation": True}, 0.0),
    ("Berkeley", "Berkley", {}, 0.0),
    (3, 3, {}, 1.0),
    ("3", 3, {}, 0.0),
    (None, "", {}, 0.0),
    (None, None, {}, 1.0),
    (["a"], ["A"], {}, 0.0),  # not a string: exact
]


@pytest.mark.parametrize(("pred", "ref", "opts", "expected"), NORMALIZED_CASES)
def test_normalized(pred: Any, ref: Any, opts: dict[str, Any], expected: float) -> None:
    assert normalized(pred, ref, **opts) == expected
    assert make_comparator("normalized", **opts)(pred, ref) == expected


# --------------------------------------------------------------------------- fuzzy

FUZZY_CASES: list[tuple[Any, Any, dict[str, Any], float]] = [
    ("Berkeley", "Berkley", {}, 14 / 15),
    ("Berkeley", "berkley", {"normalize": False}, 12 / 15),
    ("Berkeley", "Berkley", {"threshold": 0.9}, 14 / 15),
    ("Berkeley", "Berkley", {"threshold": 0.95}, 0.0),
    ("Berkeley", "Berkley", {"threshold": 0.9, "partial_credit": False}, 1.0),
    ("Berkeley", "Stanford", {"threshold": 0.5, "partial_credit": False}, 0.0),
    ("abc", "abd", {"threshold": 2 / 3}, 2 / 3),  # at the threshold passes
    ("python java", "java python", {"scorer": "token_sort_ratio"}, 1.0),
    ("python java", "java python c++", {"scorer": "token_set_ratio"}, 1.0),
    ("Berkeley", "UC Berkeley campus", {"scorer": "partial_ratio"}, 1.0),
    ("abc", "abd", {"scorer": "levenshtein"}, 2 / 3),
    ("abc", "abd", {"scorer": "indel"}, 2 / 3),
    ("MARTHA", "MARHTA", {"scorer": "jaro_winkler"}, 0.9611111111111111),
    ("", "", {}, 1.0),
    ("   ", "", {}, 1.0),  # both empty once normalised
    ("", "a", {}, 0.0),
    ("a", "", {"scorer": "WRatio"}, 0.0),
    (1000, "1000", {}, 1.0),  # numbers compare as their JSON text
    (5.0, "5", {}, 1.0),
    (5.5, 5.5, {}, 1.0),
    (True, "true", {}, 0.0),  # bools are not text
    (None, None, {}, 1.0),  # neither is text: exact
    (None, "None", {}, 0.0),
    (["abc"], "abc", {}, 0.0),
]


@pytest.mark.parametrize(("pred", "ref", "opts", "expected"), FUZZY_CASES)
def test_fuzzy(pred: Any, ref: Any, opts: dict[str, Any], expected: float) -> None:
    assert fuzzy(pred, ref, **opts) == pytest.approx(expected)
    assert make_comparator("fuzzy", **opts)(pred, ref) == pytest.approx(expected)


@pytest.mark.parametrize("scorer", get_args(comparators.FuzzyScorer))
def test_fuzzy_every_scorer_is_in_unit_interval(scorer: str) -> None:
    for a, b in [("Los Angeles", "Las Vegas"), ("x", "y"), ("a b c", "c b a"), ("Los Angeles", "los angeles")]:
        _check_score(fuzzy(a, b, scorer=scorer))  # type: ignore[arg-type]  # scorer is a FuzzyScorer
    assert fuzzy("Los Angeles", "los angeles", scorer=scorer) == 1.0  # type: ignore[arg-type]  # as above


# --------------------------------------------------------------------------- numbers

PARSE_NUMBER_CASES: list[tuple[Any, float | None]] = [
    (7, 7.0),
    (-2.5, -2.5),
    ("7", 7.0),
    (" 7 ", 7.0),
    ("1,000", 1000.0),
    ("1,234,567.89", 1234567.89),
    ("$500", 500.0),
    ("$ 500", 500.0),
    ("500$", 500.0),
    ("€1.5", 1.5),
    ("1.5 €", 1.5),
    ("£1,000", 1000.0),
    ("-$5", -5.0),
    ("$-5", -5.0),
    ("12%", 12.0),
    ("12 %", 12.0),
    ("-0.5%", -0.5),
    ("(123)", -123.0),
    ("($1,234.50)", -1234.5),
    ("( 12% )", -12.0),
    ("-4.5e3", -4500.0),
    ("1E-2", 0.01),
    ("+5", 5.0),
    ("\u22123", -3.0),  # Unicode minus
    ("\u2212$3", -3.0),
    (".5", 0.5),
    ("5.", 5.0),
    ("١٢٣", 123.0),  # Arabic-Indic digits are decimal digits
    # rejected
    (True, None),
    (False, None),
    (None, None),
    ([1], None),
    ({"a": 1}, None),
    (float("nan"), None),
    (float("inf"), None),
    (10**400, None),
    ("", None),
    ("   ", None),
    ("abc", None),
    ("12abc", None),
    ("1,2,3", None),
    ("1,5", None),
    ("1000,000", None),
    ("1 000", None),
    ("1_000", None),
    ("nan", None),
    ("NaN", None),
    ("inf", None),
    ("-Infinity", None),
    ("1e999", None),
    ("(123", None),
    ("123)", None),
    ("(-123)", None),
    ("--5", None),
    ("-$-5", None),
    ("$5€", None),
    ("USD 5", 5.0),
    ("usd 5", None),
    ("5 5", None),
    ("0x10", None),
    ("$", None),
    ("%", None),
    ("()", None),
    ("-", None),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_NUMBER_CASES)
def test_parse_number(value: Any, expected: float | None) -> None:
    assert parse_number(value) == expected


NUMBER_CASES: list[tuple[Any, Any, dict[str, Any], float]] = [
    ("$1,000", 1000, {}, 1.0),
    ("1000.0", 1000, {}, 1.0),
    ("12%", "12", {}, 1.0),
    ("(5)", -5, {}, 1.0),
    (100, 101, {}, 0.0),
    (100, 101, {"abs_tol": 1}, 1.0),
    (100, 101.5, {"abs_tol": 1}, 0.0),
    (101, 100, {"rel_tol": 0.01}, 1.0),
    (100, 102, {"rel_tol": 0.01}, 0.0),
    (0.0, 1e-12, {}, 0.0),
    (0.0, 1e-12, {"rel_tol": 0.5}, 0.0),  # relative tolerance never rescues zero
    (0.0, 1e-12, {"abs_tol": 1e-9}, 1.0),
    (1e308, -1e308, {"rel_tol": 1.0}, 0.0),  # difference overflows to inf: no match, no raise
    (True, 1, {}, 0.0),
    ("N/A", "N/A", {}, 1.0),  # neither is a number: exact
    ("N/A", 0, {}, 0.0),
    (None, 0, {}, 0.0),
]


@pytest.mark.parametrize(("pred", "ref", "opts", "expected"), NUMBER_CASES)
def test_number(pred: Any, ref: Any, opts: dict[str, Any], expected: float) -> None:
    assert number(pred, ref, **opts) == expected
    assert number(ref, pred, **opts) == expected
    assert make_comparator("number", **opts)(pred, ref) == expected


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
tolerance = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


@settings(max_examples=300, database=None, derandomize=True, deadline=None)
@given(a=finite, b=finite, abs_tol=tolerance, rel_tol=st.floats(min_value=0.0, max_value=1.0))
def test_number_tolerance_is_symmetric(a: float, b: float, abs_tol: float, rel_tol: float) -> None:
    compare = make_comparator("number", abs_tol=abs_tol, rel_tol=rel_tol)
    assert compare(a, b) == compare(b, a)
    assert compare(a, b) == (1.0 if pymath.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol) else 0.0)


def test_number_relative_tolerance_holds_both_ways() -> None:
    compare = make_comparator("number", rel_tol=0.05)
    assert compare(100, 104.9) == compare(104.9, 100) == 1.0
    assert compare(100, 95.5) == compare(95.5, 100) == 1.0
    assert compare(100, 106) == compare(106, 100) == 0.0


# --------------------------------------------------------------------------- dates

D = dt.date
PARSE_DATE_CASES: list[tuple[Any, str, D | None]] = [
    ("2021-03-05", "iso", D(2021, 3, 5)),
    (" 2021-03-05 ", "iso", D(2021, 3, 5)),
    ("2021-03-05T10:20:30Z", "iso", D(2021, 3, 5)),
    ("2021-03-05T10:20:30.123+02:00", "iso", D(2021, 3, 5)),
    ("2021-03-05 10:20", "iso", D(2021, 3, 5)),
    ("2021-03-05t23:59:59z", "iso", D(2021, 3, 5)),
    ("2021-03-05T25:00", "iso", None),
    ("2021-03-05T", "iso", None),
    ("2021-02-29", "iso", None),
    ("2020-02-29", "iso", D(2020, 2, 29)),
    ("0000-01-01", "iso", None),
    ("2021-13-01", "iso", None),
    ("2021-03", "iso", None),  # a month, not a date
    ("2021-3-5", "iso", None),
    ("20210305", "iso", None),
    ("03/04/2020", "iso", None),
    ("5 March 2021", "iso", None),
    ("March 5, 2021", "iso", None),
    ("2021/03/05", "iso", None),
    # declared orders
    ("03/04/2020", "day_first", D(2020, 4, 3)),
    ("03/04/2020", "month_first", D(2020, 3, 4)),
    ("3-4-2020", "day_first", D(2020, 4, 3)),
    ("03.04.2020", "month_first", D(2020, 3, 4)),
    ("2020-03-04", "day_first", D(2020, 3, 4)),  # ISO always wins
    ("2021/03/05", "day_first", D(2021, 3, 5)),
    ("2021.03.05", "month_first", D(2021, 3, 5)),
    ("13/04/2020", "month_first", None),  # no month 13: not swapped behind the user's back
    ("13/04/2020", "day_first", D(2020, 4, 13)),
    ("03/04/20", "day_first", None),  # two-digit year: would need a guessed century
    ("03/04-2020", "day_first", None),  # mixed separators
    ("5 March 2021", "day_first", D(2021, 3, 5)),
    ("5 March 2021", "month_first", D(2021, 3, 5)),
    ("5th of March 2021", "day_first", D(2021, 3, 5)),
    ("05-Mar-2021", "month_first", D(2021, 3, 5)),
    ("March 5, 2021", "day_first", D(2021, 3, 5)),
    ("Mar 5 2021", "day_first", D(2021, 3, 5)),
    ("mar. 5th, 2021", "month_first", D(2021, 3, 5)),
    ("Sept 1, 2021", "month_first", D(2021, 9, 1)),
    ("31 February 2021", "day_first", None),
    ("5 Marchember 2021", "day_first", None),
    ("Friday", "day_first", None),
    ("", "day_first", None),
    (20210305, "day_first", None),
    (None, "iso", None),
    (["2021-03-05"], "iso", None),
    ("2021-03-05" + " " * 100, "iso", None),  # over the length limit
]


@pytest.mark.parametrize(("value", "order", "expected"), PARSE_DATE_CASES)
def test_parse_date(value: Any, order: Any, expected: D | None) -> None:
    assert parse_date(value, order=order) == expected


@pytest.mark.parametrize("text", ["03/04/2020", "3/4/2020", "12.11.2020", "01-02-2003", "5 March 2021", "Mar 5, 2021"])
def test_date_never_guesses_without_a_declared_order(text: str) -> None:
    assert parse_date(text) is None
    assert date(text, "2020-04-03") == 0.0
    assert date(text, "2020-03-04") == 0.0


@pytest.mark.parametrize("text", ["03/04/20", "3/4/20", "04/03", "2020"])
def test_date_never_guesses_a_century_or_a_missing_part(text: str) -> None:
    for order in get_args(comparators.DateOrder):
        assert parse_date(text, order=order) is None


DATE_CASES: list[tuple[Any, Any, dict[str, Any], float]] = [
    ("2021-03-05", "2021-03-05", {}, 1.0),
    ("2021-03-05T23:59:59+05:00", "2021-03-05", {}, 1.0),
    ("2021-03-06", "2021-03-05", {}, 0.0),
    ("05/03/2021", "2021-03-05", {}, 0.0),
    ("05/03/2021", "2021-03-05", {"order": "day_first"}, 1.0),
    ("05/03/2021", "2021-03-05", {"order": "month_first"}, 0.0),
    ("March 5, 2021", "5 Mar 2021", {"order": "month_first"}, 1.0),
    ("garbage", "2021-03-05", {}, 0.0),
    ("garbage", "garbage", {}, 1.0),  # neither is a date: exact
    (None, "2021-03-05", {}, 0.0),
]


@pytest.mark.parametrize(("pred", "ref", "opts", "expected"), DATE_CASES)
def test_date(pred: Any, ref: Any, opts: dict[str, Any], expected: float) -> None:
    assert date(pred, ref, **opts) == expected
    assert date(ref, pred, **opts) == expected
    assert make_comparator("date", **opts)(pred, ref) == expected


# --------------------------------------------------------------------------- enum, bool, math

ENUM_CASES: list[tuple[Any, Any, dict[str, Any], float]] = [
    ("red", "red", {}, 1.0),
    ("Red", "red", {}, 0.0),
    ("Red", "red", {"case_sensitive": False}, 1.0),
    ("STRASSE", "straße", {"case_sensitive": False}, 1.0),
    (" red", "red", {"case_sensitive": False}, 0.0),
    (2, 2.0, {}, 1.0),
    (2, "2", {}, 0.0),
    (True, 1, {}, 0.0),
    (None, None, {"case_sensitive": False}, 1.0),
    (["red"], "red", {"case_sensitive": False}, 0.0),
]


@pytest.mark.parametrize(("pred", "ref", "opts", "expected"), ENUM_CASES)
def test_enum(pred: Any, ref: Any, opts: dict[str, Any], expected: float) -> None:
    assert enum(pred, ref, **opts) == expected
    assert make_comparator("enum", **opts)(pred, ref) == expected


BOOL_CASES: list[tuple[Any, Any, float]] = [
    (True, True, 1.0),
    (False, False, 1.0),
    (True, False, 0.0),
    ("true", True, 1.0),
    ("Yes", True, 1.0),
    (" FALSE ", False, 1.0),
    ("no", "false", 1.0),
    ("no", True, 0.0),
    ("y", True, 0.0),
    ("1", True, 0.0),
    (1, True, 0.0),
    (0, False, 0.0),
    (None, False, 0.0),
    (None, None, 1.0),
    ("maybe", "maybe", 1.0),  # neither reads as a truth value: exact
    ("true" + " " * 100, True, 0.0),
]


@pytest.mark.parametrize(("pred", "ref", "expected"), BOOL_CASES)
def test_boolean(pred: Any, ref: Any, expected: float) -> None:
    assert boolean(pred, ref) == expected
    assert boolean(ref, pred) == expected  # the coercion is symmetric


MATH_CASES: list[tuple[Any, Any, float]] = [
    ("1/2", "0.5", 1.0),
    ("\\frac{1}{2}", "0.5", 1.0),
    ("$\\frac{1}{2}$", 0.5, 1.0),
    ("(x+1)^2", "x^2+2x+1", 1.0),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", 1.0),
    ("3", 3, 1.0),
    (3.0, "3", 1.0),
    ("3", "4", 0.0),
    ("x+1", "x+2", 0.0),
    ("", "1", 0.0),
    ("not math at all ???", "1", 0.0),
    (True, "1", 0.0),
    (None, None, 1.0),
    ("1" * 300, "1" * 299 + "2", 0.0),  # over the length limit: not parsed
]


@pytest.mark.parametrize(("pred", "ref", "expected"), MATH_CASES)
def test_math(pred: Any, ref: Any, expected: float) -> None:
    assert math_cmp(pred, ref) == expected


def test_math_runs_outside_the_main_thread() -> None:
    # math-verify's default SIGALRM timeout raises ValueError in a worker thread.
    with ThreadPoolExecutor(max_workers=2) as pool:
        scores = list(pool.map(lambda pair: math_cmp(*pair), [("2/4", "0.5"), ("\\frac{3}{6}", "1/2"), ("1", "2")]))
    assert scores == [1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- properties

SELF_VALUES: list[Any] = [
    "Los Angeles",
    "C++",
    "",
    "  padded  ",
    "University of California, Berkeley",
    "2021-03-05",
    "1,000",
    "$500",
    "12%",
    "true",
    "x^2+1",
    "\\frac{1}{2}",
    "日本語",
    0,
    -3,
    2.5,
    10**30,
    True,
    False,
    None,
    [],
    {},
    ["python", "c++"],
    {"a": [1, {"b": None}]},
]


@pytest.mark.parametrize("key", list(BUILT))
def test_every_comparator_scores_a_value_against_itself_one(key: str) -> None:
    compare = BUILT[key]
    for value in SELF_VALUES:
        assert compare(value, value) == 1.0, (key, value)


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    return value


HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    10**400,
    10**5000,  # str() refuses it (int digit limit)
    "",
    " ",
    "\x00",
    "\ud800",  # lone surrogate
    "nan",
    "NaN",
    "-inf",
    "Infinity",
    "1e999",
    "1,2,3",
    "()",
    "($)",
    "%",
    "-",
    "\u2212",
    "١٢٣",
    "𝟙𝟚𝟛",
    "true",
    "False",
    "2021-02-30",
    "9999-12-31T23:59:59Z",
    "0000-00-00",
    "99/99/9999",
    "1/0",
    "\\frac{1}{0}",
    "9^9^9^9",
    "$$",
    "\\boxed{}",
    "x" * 20_000,
    "1" * 5_000,
    "ab " * 3_000,
    [],
    {},
    [[[]]],
    [1, "1", True, None],
    {"a": {"b": [1, None, {"c": float("nan")}]}},
    _deep(2_000),
]


@pytest.mark.parametrize("key", list(CHEAP))
def test_cheap_comparators_never_raise_on_hostile_pairs(key: str) -> None:
    compare = CHEAP[key]
    for pred in HOSTILE:
        for ref in HOSTILE:
            if (
                key == "fuzzy_partial_ratio"
                and isinstance(pred, str)
                and isinstance(ref, str)
                and len(pred) > 1000
                and len(ref) > 1000
            ):
                continue  # partial_ratio is super-quadratic on two long texts; covered once below
            _check_score(compare(pred, ref))


def test_partial_ratio_on_a_long_prediction_against_a_short_reference() -> None:
    _check_score(fuzzy("Berkeley " * 20_000, "UC Berkeley", scorer="partial_ratio"))


def test_math_never_raises_on_hostile_values() -> None:
    references: list[Any] = ["1/2", "x^2", 3, None, "", "\\frac{1}{2}"]
    for value in HOSTILE:
        for ref in references:
            _check_score(math_cmp(value, ref))
            _check_score(math_cmp(ref, value))


def test_parsers_never_raise_on_hostile_values() -> None:
    for value in HOSTILE:
        parsed = parse_number(value)
        assert parsed is None or pymath.isfinite(parsed)
        for order in get_args(comparators.DateOrder):
            assert parse_date(value, order=order) is None or isinstance(parse_date(value, order=order), dt.date)


interesting_text = st.sampled_from(
    [
        "",
        " ",
        "1,000",
        "$5",
        "(3)",
        "12%",
        "2021-03-05",
        "05/03/2021",
        "5 March 2021",
        "true",
        "No",
        "C++",
        "C#",
        "Los Angeles,",
        "nan",
        "1e999",
        "\u22121",
        "1/2",
        "x^2",
    ]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: Python's json module emits them
    | st.text(max_size=30)
    | interesting_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=150, database=None, derandomize=True, deadline=None)
@given(pred=json_values, ref=json_values)
def test_cheap_comparators_never_raise_on_any_json(pred: Any, ref: Any) -> None:
    for compare in CHEAP.values():
        _check_score(compare(pred, ref))
        _check_score(compare(pred, pred))


@settings(max_examples=40, database=None, derandomize=True, deadline=None)
@given(pred=json_values, ref=st.sampled_from(["1/2", "x+1", "3", "\\frac{2}{3}"]) | json_scalars)
def test_math_never_raises_on_any_json(pred: Any, ref: Any) -> None:
    _check_score(math_cmp(pred, ref))


@settings(max_examples=150, database=None, derandomize=True, deadline=None)
@given(value=json_values)
def test_self_score_is_one_for_any_json_without_nan(value: Any) -> None:
    if "nan" in repr(value):  # NaN equals nothing, itself included
        return
    for key, compare in CHEAP.items():
        assert compare(value, value) == 1.0, key


# --------------------------------------------------------------------------- construction errors

ERROR_CASES: list[tuple[str, dict[str, Any], str, str, str]] = [
    # name, options, code, pointer suffix, text the hint must contain
    ("fuzzyy", {}, "unknown_comparator", "/comparator", "'fuzzy'"),
    ("boolean", {}, "unknown_comparator", "/comparator", "'bool'"),
    ("fuzzy", {"threshold": 1.5}, "bad_comparator_option", "/threshold", ""),
    ("fuzzy", {"threshold": -0.1}, "bad_comparator_option", "/threshold", ""),
    ("fuzzy", {"threshold": float("nan")}, "bad_comparator_option", "/threshold", ""),
    ("fuzzy", {"threshold": True}, "bad_comparator_option", "/threshold", ""),
    ("fuzzy", {"threshold": "0.8"}, "bad_comparator_option", "/threshold", ""),
    ("fuzzy", {"scorer": "ratio2"}, "bad_comparator_option", "/scorer", "'token_set_ratio'"),
    ("fuzzy", {"scorer": ["ratio"]}, "bad_comparator_option", "/scorer", "'jaro_winkler'"),
    ("fuzzy", {"partial_credit": 1}, "bad_comparator_option", "/partial_credit", ""),
    ("fuzzy", {"partial_credit": False}, "bad_comparator_option", "/threshold", "threshold"),
    ("fuzzy", {"partial_credit": False, "threshold": 0}, "bad_comparator_option", "/threshold", "threshold"),
    ("fuzzy", {"normalize": "yes"}, "bad_comparator_option", "/normalize", ""),
    ("number", {"abs_tol": -1}, "bad_comparator_option", "/abs_tol", ""),
    ("number", {"rel_tol": float("inf")}, "bad_comparator_option", "/rel_tol", ""),
    ("number", {"rel_tol": None}, "bad_comparator_option", "/rel_tol", ""),
    ("number", {"tolerance": 0.1}, "bad_comparator_option", "/tolerance", "'abs_tol', 'rel_tol'"),
    ("date", {"order": "dmy"}, "bad_comparator_option", "/order", "'day_first'"),
    ("enum", {"case_sensitive": "no"}, "bad_comparator_option", "/case_sensitive", ""),
    ("normalized", {"strip_punct": True}, "bad_comparator_option", "/strip_punct", "'strip_punctuation'"),
    ("exact", {"threshold": 0.5}, "bad_comparator_option", "/threshold", "no options"),
    ("bool", {"a/b~c": 1}, "bad_comparator_option", "/a~1b~0c", "no options"),
]


@pytest.mark.parametrize(("name", "opts", "code", "suffix", "hint"), ERROR_CASES)
def test_make_comparator_errors_carry_code_pointer_and_hint(
    name: str, opts: dict[str, Any], code: str, suffix: str, hint: str
) -> None:
    with pytest.raises(GraderConfigError) as info:
        make_comparator(name, pointer="/fields/city", **opts)
    assert info.value.code == code
    assert info.value.pointer == "/fields/city" + suffix
    assert info.value.hint
    assert hint in info.value.hint
    assert isinstance(info.value, ValueError)  # UserError is also a ValueError


def test_make_comparator_rejects_a_non_string_name() -> None:
    with pytest.raises(GraderConfigError) as info:
        make_comparator(None)  # type: ignore[arg-type]  # the point of the test
    assert info.value.code == "unknown_comparator"
    assert info.value.pointer == "/comparator"


def test_public_functions_validate_their_options() -> None:
    with pytest.raises(GraderConfigError, match="scorer"):
        fuzzy("a", "b", scorer="nope")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(GraderConfigError):
        fuzzy("a", "b", partial_credit=1)  # type: ignore[arg-type]  # must not reuse the True entry
    with pytest.raises(GraderConfigError):
        number(1, 1, abs_tol=-1)
    with pytest.raises(GraderConfigError) as info:
        parse_date("2021-03-05", order="ymd")  # type: ignore[arg-type]  # the point of the test
    assert info.value.pointer == "/order"


def test_make_comparator_accepts_int_options() -> None:
    assert make_comparator("fuzzy", threshold=1, partial_credit=False)("abc", "abc") == 1.0
    assert make_comparator("number", abs_tol=1)(1, 2) == 1.0


# --------------------------------------------------------------------------- options models


def test_each_comparator_has_one_options_model_whose_defaults_are_its_own() -> None:
    models = comparator_models()
    assert list(models) == list(get_args(ComparatorName))
    for name, model in models.items():
        assert model.comparator == name and model.model_config["extra"] == "forbid"
        # the model's defaults given explicitly build the same comparator as no options at all
        explicit = make_comparator(name, **model().model_dump())
        default = make_comparator(name)
        for a, b in [("Los Angeles", "los angeles"), ("1,000", 1000.0), ("2021-03-05", "2021-03-05T10:00:00Z"), (1, True)]:
            assert explicit(a, b) == default(a, b), (name, a, b)


def test_the_comparator_table_in_the_docs_lists_each_model_s_options() -> None:
    text = (ROOT / "docs" / "grading.md").read_text(encoding="utf-8")
    table = text[text.index("| name | formula | options |"):]
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `(\w+)` \|[^\n]*\| ([^|\n]*) \|$", table, re.M)}
    for name, model in comparator_models().items():
        options = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", rows[name]))
        assert options == list(model.model_fields), name
