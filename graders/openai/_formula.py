

"""The safe formula language that combines named scores into one number.

Used by ``multi`` graders (OpenAI's ``calculate_output``) and by the structured
grader's ``formula`` aggregation. A formula is parsed once, at construction,
with Python's ``ast`` module and a whitelist; nothing is ever ``eval``-ed.

Grammar: numbers, names (the sub-score names), parentheses, ``+ - * /``, ``^``
(power, as in OpenAI's formulas; ``**`` is accepted too), unary minus, and the
functions ``min max abs floor ceil exp sqrt log``. Anything else -- attributes,
subscripts, comparisons, lambdas, strings -- is rejected with the position of
the offending part.

**Limits.** A formula is at most :data:`MAX_FORMULA_CHARS` characters and nests
at most :data:`MAX_FORMULA_DEPTH` operations deep (``a + b + c`` is two deep:
``(a + b) + c``); a longer or deeper one raises :class:`GraderConfigError`
(``formula_too_complex``) at construction. Real formulas are a few dozen
characters; the limits keep a hostile config from exhausting the parser's or
the evaluator's stack.

Evaluation never raises: a math domain error (``log(0)``, ``sqrt(-1)``, a
division by zero, an overflow) yields ``nan``, which callers turn into a flagged
zero.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping

from .._errors import GraderConfigError

_Eval = Callable[[Mapping[str, float]], float]

MAX_FORMULA_CHARS = 2_000
"""The longest formula accepted, in characters."""
MAX_FORMULA_DEPTH = 100
"""The deepest nesting of operations accepted (each operator, function call or unary sign is one level)."""
_HINT = "use numbers, names, + - * / ^ and min max abs floor ceil exp sqrt log"

_FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    "min": (min, None),  # None: two or more arguments
    "max": (max, None),
    "abs": (abs, 1),
    "floor": (lambda x: float(math.floor(x)), 1),
    "ceil": (lambda x: float(math.ceil(x)), 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class Formula:
    """A compiled formula over named scores.

    >>> f = Formula("0.5 * a + 0.5 * min(b, 1) ^ 2")
    >>> sorted(f.names)
    ['a', 'b']
    >>> f({"a": 1.0, "b": 0.5})
    0.625
    >>> Formula("log(a)")({"a": 0.0})
    nan
    """

    __slots__ = ("source", "names", "_fn")

    def __init__(self, source: str, *, allowed_names: frozenset[str] | None = None, pointer: str = "/calculate_output") -> None:
        self.source = source
        names: set[str] = set()
        if not isinstance(source, str):
            raise GraderConfigError(f"a formula is a string, got {type(source).__name__}", code="wrong_type", pointer=pointer,
                                    hint=_HINT)
        if len(source) > MAX_FORMULA_CHARS:
            raise _too_complex(f"formula of {len(source):,} characters is longer than the limit of {MAX_FORMULA_CHARS:,}",
                               pointer)
        try:
            # ``^`` is power with power's precedence; formulas hold no strings, so a text swap is exact.
            tree = ast.parse(source.replace("^", "**"), mode="eval")
        except SyntaxError as exc:
            raise GraderConfigError(
                f"formula {_quoted(source)} does not parse: {exc.msg} at column {exc.offset}",
                code="formula_parse_error", pointer=pointer, hint=_HINT,
            ) from None
        except (MemoryError, RecursionError):  # the parser's own stack: too deeply nested
            raise _too_complex(f"formula {_quoted(source)} nests too deeply to parse", pointer) from None
        depth = _depth(tree.body)
        if depth > MAX_FORMULA_DEPTH:
            raise _too_complex(f"formula {_quoted(source)} nests {depth} operations deep, more than the limit of "
                               f"{MAX_FORMULA_DEPTH}", pointer)
        self._fn: _Eval = self._compile(tree.body, names, pointer)
        if allowed_names is not None and not names <= allowed_names:
            unknown = sorted(names - allowed_names)
            raise GraderConfigError(
                f"formula {_quoted(source)} names {unknown}, which are not sub-scores",
                code="formula_unknown_name", pointer=pointer, hint=f"known names: {sorted(allowed_names)}",
            )
        self.names = frozenset(names)

    def _reject(self, node: ast.AST, pointer: str) -> GraderConfigError:
        return GraderConfigError(
            f"formula {_quoted(self.source)}: {type(node).__name__} at column {getattr(node, 'col_offset', 0) + 1} is not allowed",
            code="formula_parse_error", pointer=pointer, hint=_HINT,
        )

    def _compile(self, node: ast.expr, names: set[str], pointer: str) -> _Eval:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            value = float(node.value)
            return lambda env: value
        if isinstance(node, ast.Name):
            name = node.id
            names.add(name)
            return lambda env: float(env[name])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self._compile(node.operand, names, pointer)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return lambda env: sign * inner(env)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op = _BINARY[type(node.op)]
            left, right = self._compile(node.left, names, pointer), self._compile(node.right, names, pointer)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
            fn, arity = _FUNCTIONS[node.func.id]
            if (arity is not None and len(node.args) != arity) or (arity is None and len(node.args) < 2):
                raise GraderConfigError(
                    f"formula {_quoted(self.source)}: {node.func.id}() takes {arity or 'two or more'} argument(s), got {len(node.args)}",
                    code="formula_parse_error", pointer=pointer,
                )
            args = [self._compile(a, names, pointer) for a in node.args]
            return lambda env: float(fn(*(a(env) for a in args)))
        raise self._reject(node, pointer)

    def __call__(self, values: Mapping[str, float]) -> float:
        """Evaluate with ``values``; math errors give ``nan`` (a missing name is the caller's bug and raises KeyError)."""
        try:
            result = self._fn(values)
        except (ZeroDivisionError, ValueError, OverflowError):
            return math.nan
        if isinstance(result, complex):  # e.g. (-8) ^ 0.5
            return math.nan
        return float(result)

    def __repr__(self) -> str:
        return f"Formula({self.source!r})"


def _quoted(source: str, limit: int = 120) -> str:
    """The formula for an error message: whole when short, else its start (the limit allows 2,000 characters)."""
    return repr(source) if len(source) <= limit else repr(source[:limit]) + f"... ({len(source):,} characters)"


def _too_complex(message: str, pointer: str) -> GraderConfigError:
    return GraderConfigError(message, code="formula_too_complex", pointer=pointer,
                             hint=f"keep a formula under {MAX_FORMULA_CHARS:,} characters and {MAX_FORMULA_DEPTH} levels of "
                                  "nesting; combine many sub-scores with fewer, wider terms (e.g. a structured grader's "
                                  "weights)")


def _depth(root: ast.AST) -> int:
    """How deeply operations nest under ``root`` (iterative: a hostile tree may be deeper than Python's stack)."""
    deepest = 0
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Call)):
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return deepest


