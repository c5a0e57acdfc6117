"""The math comparator: symbolic equivalence through math-verify, on bounded inputs."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from ._base import ComparatorOptions, exact
from ._text import _as_text

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


class MathOptions(ComparatorOptions):
    """:func:`math` takes no options."""

    comparator = "math"


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




