"""Decoding and validating the extracted JSON, and parse_response, which runs the three stages."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from schemas import Issue, Schema, UserError
from schemas._errors import shorten

from ._extract import REPAIRS, Decoded, Parsed, _bare, _Candidate, _candidates, _each_candidate

# --------------------------------------------------------------------------------------
# Decode


# -- the per-sample bound

DEFAULT_MAX_OUTPUT_CHARS = 1_000_000
"""The per-sample bound on the text a grader looks at, unless configured (see :func:`max_output_chars`)."""
MAX_OUTPUT_CHARS_ENV = "RFTKIT_MAX_OUTPUT_CHARS"
"""Environment variable that sets the bound (a positive integer), read when ``graders`` is imported."""


def _checked_limit(value: object, where: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.replace("_", "").strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} must be a positive integer (characters), got {value!r}", code="bad_setting",
                        hint=f"e.g. {DEFAULT_MAX_OUTPUT_CHARS} (the default)")
    return value


_max_output_chars = _checked_limit(os.environ.get(MAX_OUTPUT_CHARS_ENV, DEFAULT_MAX_OUTPUT_CHARS), MAX_OUTPUT_CHARS_ENV)


def max_output_chars() -> int:
    """The per-sample bound, in characters: a longer model output is graded as truncated (see the size policy).

    >>> max_output_chars() >= 1
    True
    """
    return _max_output_chars


def set_max_output_chars(limit: int | None) -> None:
    """Set the per-sample bound for this process (``None``: back to ``$RFTKIT_MAX_OUTPUT_CHARS`` or the default).

    Worker processes started by ``fork`` inherit it; others read the environment variable, so set that
    to reach them all.
    """
    global _max_output_chars
    _max_output_chars = _checked_limit(os.environ.get(MAX_OUTPUT_CHARS_ENV, DEFAULT_MAX_OUTPUT_CHARS)
                                       if limit is None else limit, "the output bound")


def over_bound_reason(chars: int) -> str:
    """The reason given for an output over the bound."""
    return (f"the output has {chars:,} characters, more than the per-sample bound of {_max_output_chars:,} "
            f"({MAX_OUTPUT_CHARS_ENV}); graded as truncated")



class _NotJsonConstant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJsonConstant(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_BARE_REASON = "parsed a JSON object (the whole output)"
_REPAIRABLE_AT = frozenset("'TFN}],")  # where a strict error points when a repair applies
_TOO_DEEP = "JSON nested too deeply to decode (beyond Python's recursion limit)"
_SINGLE_QUOTED_BODY = re.compile(r'\\(.)|"', re.DOTALL)
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}
# The lexer of the lenient pass. Strings follow JSON's rules (no raw newline; a
# backslash escapes one character); both use the unrolled-loop form, so matching
# is linear with no catastrophic backtracking.
_LENIENT_TOKEN = re.compile(
    r'(?P<double>"[^"\\\n]*(?:\\.[^"\\\n]*)*")'
    r"|(?P<single>'[^'\\\n]*(?:\\.[^'\\\n]*)*')"
    r"|(?P<literal>(?<![\w.])(?:True|False|None)(?![\w.]))"
    r"|(?P<comma>,(?=[ \t\r\n]*[}\]]))"
    r"|(?P<unclosed>[\"'])"  # a quote whose string never closes on its line: not repairable
)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _loads(fragment: str) -> tuple[Decoded, int | None]:
    """Strict JSON; every failure the decoder can raise on data becomes ``ok=False``.

    The second item is where a syntax error was found (None otherwise), so the
    lenient path can tell whether a repair could help at all.
    """
    try:
        return Decoded(_DECODER.decode(fragment), True, (), None), None
    except _NotJsonConstant as exc:
        return Decoded(None, False, (), f"{exc} is not JSON (a JavaScript/Python constant)"), None
    except json.JSONDecodeError as exc:
        return Decoded(None, False, (), f"{exc.msg} at line {exc.lineno} column {exc.colno}"), exc.pos
    except ValueError as exc:  # e.g. an integer longer than sys.get_int_max_str_digits()
        return Decoded(None, False, (), _one_line(str(exc))), None
    except RecursionError:
        return Decoded(None, False, (), _TOO_DEEP), None


def _json_string(single_quoted: str) -> str:
    """``'it\\'s "x"'`` -> ``"it's \\"x\\""``; other escapes are left for the JSON decoder to judge."""

    def fix(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return '\\"'
        return "'" if m.group(1) == "'" else m.group(0)

    return '"' + _SINGLE_QUOTED_BODY.sub(fix, single_quoted[1:-1]) + '"'


def _repair(fragment: str) -> tuple[str, tuple[str, ...]]:
    """Rewrite the three allowed non-JSON constructs into JSON; return (text, repairs applied).

    One left-to-right pass of :data:`_LENIENT_TOKEN`: double-quoted strings are
    consumed whole (so nothing inside a string is touched), single-quoted strings
    are re-quoted, ``True``/``False``/``None`` become JSON literals, and a comma
    that follows a value and precedes ``}``/``]`` is dropped. Everything else is
    left for the strict decoder to judge.
    """
    pieces: list[str] = []
    applied: set[str] = set()
    done = 0
    for m in _LENIENT_TOKEN.finditer(fragment):
        kind = m.lastgroup
        if kind == "double":
            continue
        if kind == "unclosed":  # stop at once: JSON rejects it anyway, and rescanning would be quadratic
            return fragment, ()
        if kind == "comma":
            before = m.start() - 1
            while before >= 0 and fragment[before] in " \t\r\n":
                before -= 1
            if before < 0 or fragment[before] in "[{,:":  # "[,]" is not a trailing comma
                continue
            replacement, name = "", "trailing_comma"
        elif kind == "single":
            replacement, name = _json_string(m.group()), "single_quotes"
        else:
            replacement, name = _PYTHON_LITERALS[m.group()], "python_literals"
        pieces += (fragment[done : m.start()], replacement)
        done = m.end()
        applied.add(name)
    if not applied:
        return fragment, ()
    pieces.append(fragment[done:])
    return "".join(pieces), tuple(name for name in REPAIRS if name in applied)


def decode_json(fragment: str, *, lenient: bool = False) -> Decoded:
    """Decode one JSON fragment (stage 2): strict, or with recorded lenient repairs.

    >>> decode_json('{"a": [1, 2]}')
    Decoded(value={'a': [1, 2]}, ok=True, repairs=(), error=None)
    >>> decode_json('{"a": 1,}').ok
    False
    >>> decode_json("{'a': True, 'b': [1, None,],}", lenient=True)
    Decoded(value={'a': True, 'b': [1, None]}, ok=True, repairs=('trailing_comma', 'single_quotes', 'python_literals'), error=None)
    >>> decode_json('[NaN]', lenient=True).error
    'NaN is not JSON (a JavaScript/Python constant)'
    >>> decode_json('null')
    Decoded(value=None, ok=True, repairs=(), error=None)
    """
    strict, at = _loads(fragment)
    # The text before a syntax error is valid JSON, so a repair can only help if
    # the error sits on a repairable construct (this skips a full lexing pass on
    # text that no repair could save, such as "Extra data" after a value).
    if strict.ok or not lenient or at is None or fragment[at : at + 1] not in _REPAIRABLE_AT:
        return strict
    rewritten, repairs = _repair(fragment)
    if not repairs:
        return strict
    repaired, _ = _loads(rewritten)
    if not repaired.ok:
        return strict  # report the error against the text the model wrote
    return Decoded(repaired.value, True, repairs, None)


# --------------------------------------------------------------------------------------
# Validate


def validate_value(value: Any, schema: Schema) -> tuple[Issue, ...]:
    """Every way ``value`` violates ``schema`` (stage 3), as records; ``()`` when valid.

    A value nested too deeply for the validator gives one ``max_depth`` issue.

    >>> from schemas import load_schema
    >>> s = load_schema({"type": "object", "required": ["a"]})
    >>> validate_value({"a": 1}, s)
    ()
    >>> [(i.code, i.pointer) for i in validate_value({}, s)]
    [('required', '')]
    """
    try:
        return tuple(schema.validate(value))
    except RecursionError:
        return (Issue("max_depth", "", "the value is nested too deeply to validate"),)


# --------------------------------------------------------------------------------------
# The whole pipeline

_MISSING: Any = object()


def _read_output(output: object) -> tuple[str | None, Any, str | None, str | None]:
    """(text, output_json or _MISSING, finish_reason found in the sample, problem)."""
    if isinstance(output, str):
        return output, _MISSING, None, None
    if not isinstance(output, Mapping):
        return None, _MISSING, None, f"cannot read a model output from a {type(output).__name__}"
    choice: Any = None
    choices = output.get("choices")
    if isinstance(choices, (list, tuple)) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
    reason = output.get("finish_reason")
    if reason is None and choice is not None:
        reason = choice.get("finish_reason")
    finish = reason if isinstance(reason, str) else None
    if output.get("output_json") is not None:
        return None, output["output_json"], finish, None
    if "output_text" in output:
        text = output["output_text"]
        if isinstance(text, str):
            return text, _MISSING, finish, None
        return None, _MISSING, finish, f"the sample's output_text is a {type(text).__name__}, not text"
    if choice is not None:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            return content, _MISSING, finish, None
        return None, _MISSING, finish, "the sample's choices[0].message.content is not text"
    keys = ", ".join(sorted(str(k) for k in output)[:8]) or "none"
    return None, _MISSING, finish, f"a sample needs output_json, output_text or choices[0].message.content (keys: {keys})"


_Failure = Literal["empty", "no_json", "invalid_json", "truncated"]
"""The statuses :func:`_failure` reports; each is also its issue's code (a ``schemas.ParseIssueCode``)."""


def _failure(status: _Failure, reason: str, method: str, text: Any) -> Parsed:
    issue = Issue(code=status, pointer="", message=reason, input=shorten(text))
    return Parsed(status, None, (), (issue,), method, reason)


def _kind(value: Any) -> str:
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else "value"


def _success(value: Any, repairs: tuple[str, ...], method: str, found: str, schema: Schema | None,
             finish_reason: str | None) -> Parsed:
    reason = f"parsed a JSON {_kind(value)} {found}"
    if repairs:
        reason += f" after lenient repairs ({', '.join(repairs)})"
    if finish_reason == "length":
        reason += "; finish_reason was 'length' but the JSON is complete"
    issues = validate_value(value, schema) if schema is not None else ()
    if not issues:
        return Parsed("ok", value, repairs, (), method, reason)
    first = issues[0]
    where = first.pointer or "the top level"
    name = f" {schema.name}" if schema is not None and schema.name else ""
    reason = (f"{reason}, but it does not match the schema{name}: {len(issues)} issue(s), "
              f"first at {where}: {_one_line(first.message)}")
    return Parsed("schema_invalid", value, repairs, issues, method, reason)


_NOT_BARE: Any = object()
"""What :func:`_bare_object` answers when its fast path does not apply."""


def _bare_object(text: str, schema: Schema | None) -> Any:
    """The hot path of :func:`parse_response`: the decoded value of a text that is one bare,
    strict-JSON object which satisfies ``schema``, else :data:`_NOT_BARE`.

    No scan and no formatting: a bare object is the common case under RL. Anything
    unusual answers _NOT_BARE and goes through the full stages, which give the same
    value for such a text (and say what is wrong with any other).
    """
    stripped = text.strip()
    if stripped[:1] == "{" and stripped[-1:] == "}":
        try:  # raw_decode: `stripped` has no surrounding whitespace for decode() to skip
            value, end = _DECODER.raw_decode(stripped)
        except (ValueError, RecursionError):
            return _NOT_BARE
        if end == len(stripped) and (schema is None or (isinstance(schema, Schema) and schema.is_valid(value))):
            return value
    return _NOT_BARE


_UNDECODED: Any = object()
"""What :func:`_strict_value` answers when no candidate decodes: :func:`parse_response` fails on that text."""


def _strict_value(text: str, *, lenient: bool = False) -> Any:
    """The value :func:`parse_response` finds in ``text`` (a ``finish_reason`` other than ``"length"``) when
    strict decoding finds it, without the reason, the issues or the schema check; for graders that only
    need the value (or that there is none) and re-run :func:`parse_response` when the rest is read.

    It tries the same candidates in the same order (the whole text when it is bare, then
    :func:`_candidates`, a fragment once) and answers the first that decodes as strict JSON; it
    answers :data:`_UNDECODED` when none does (or there is no text) and ``lenient`` is False, since
    parse_response then fails (``no_json``, ``invalid_json``, ``truncated`` or ``empty``), and
    :data:`_NOT_BARE` when only parse_response can tell: with ``lenient``, once a candidate fails strict
    decoding (a repair might save it, and it would be chosen).

    >>> _strict_value('Sure:\\n```json\\n{"a": 1}\\n```')
    {'a': 1}
    >>> _strict_value('{"a": 1, "b": [1,') is _UNDECODED
    True
    """
    if len(text) > _max_output_chars or not text.strip():  # parse_response fails: truncated, or empty
        return _UNDECODED
    tried: set[str] = set()
    bare = _bare(text)
    if bare is not None:
        try:
            return _DECODER.decode(bare)
        except (ValueError, RecursionError):  # what _loads counts as failing to decode
            if lenient:
                return _NOT_BARE
        tried.add(bare)
    for candidate in _each_candidate(text, None):
        fragment = candidate.fragment
        if fragment in tried:
            continue
        tried.add(fragment)
        try:
            return _DECODER.decode(fragment)
        except (ValueError, RecursionError):
            if lenient:
                return _NOT_BARE
    return _UNDECODED


def parse_response(
    output: str | Mapping[str, Any],
    schema: Schema | None = None,
    *,
    lenient: bool = False,
    finish_reason: str | None = None,
) -> Parsed:
    """Extract, decode and validate one model output; never raises on bad output.

    ``output`` is the text, or an OpenAI-style sample dict: ``output_json`` (used
    as is when not None), else ``output_text``, else
    ``choices[0].message.content``; a ``finish_reason`` found in the sample
    applies when none is given. ``schema`` is a :class:`~schemas.Schema`: load
    it once with :func:`schemas.load_schema`, not per call.

    >>> parse_response('Here you go:\\n```json\\n{"city": "Paris"}\\n```').value
    {'city': 'Paris'}
    >>> p = parse_response("The answer is 42.")
    >>> p.status, p.reason
    ('no_json', 'no JSON object or array found in 17 chars of text')
    >>> parse_response('{"a": 1, "b": [1,').status
    'truncated'
    >>> parse_response("{'a': True,}", lenient=True).repairs
    ('trailing_comma', 'single_quotes', 'python_literals')
    >>> parse_response({"choices": [{"message": {"content": '{"a": 1}'}, "finish_reason": "stop"}]}).ok
    True
    """
    if type(output) is str and finish_reason != "length" and len(output) <= _max_output_chars:
        value = _bare_object(output, schema)
        if value is not _NOT_BARE:
            return Parsed("ok", value, (), (), "bare", _BARE_REASON)
    if schema is not None and not isinstance(schema, Schema):
        raise UserError(
            f"schema must be a loaded schemas.Schema, not {type(schema).__name__}",
            code="schema_not_loaded", hint="load it once with schemas.load_schema(...) and pass the result",
        )
    text, direct, found_reason, problem = _read_output(output)
    if finish_reason is None:
        finish_reason = found_reason
    length = finish_reason == "length"
    if direct is not _MISSING:
        return _success(direct, (), "output_json", "from the sample's output_json", schema, None)
    if text is not None and len(text) > _max_output_chars:
        return _failure("truncated", over_bound_reason(len(text)), "none", text)
    if text is None:
        assert problem is not None  # for mypy: _read_output gives one or the other
        keys = sorted(str(k) for k in output)[:8] if isinstance(output, Mapping) else type(output).__name__
        return _failure("no_json", problem, "none", keys)
    if not text.strip():
        reason = "the output is empty" if not text else f"the output is only whitespace ({len(text)} chars)"
        return _failure("empty", reason, "none", text)

    tried: set[str] = set()
    failed: tuple[_Candidate, Decoded] | None = None
    bare = _bare(text)
    if bare is not None:
        decoded = decode_json(bare, lenient=lenient)
        if decoded.ok:
            return _success(decoded.value, decoded.repairs, "bare", "(the whole output)", schema, finish_reason)
        tried.add(bare)
        failed = (_Candidate(bare, "bare", False, "the whole output"), decoded)
    skipped = 0
    cut: tuple[_Candidate, Decoded] | None = None
    for candidate in _candidates(text, finish_reason):
        if candidate.fragment in tried:
            continue
        tried.add(candidate.fragment)
        decoded = decode_json(candidate.fragment, lenient=lenient)
        if decoded.ok:
            if candidate.method == "fence":
                found = f"from {candidate.label}"
            else:
                later = f" ({skipped} later candidate(s) did not decode)" if skipped else ""
                found = f"found in {len(text)} chars of text{later}"
            return _success(decoded.value, decoded.repairs, candidate.method, found, schema, finish_reason)
        if candidate.method == "balanced" and candidate.ends_open is False:
            skipped += 1
        if failed is None or failed[0].method == "bare":
            failed = (candidate, decoded)
        if candidate.ends_open:
            cut = (candidate, decoded)
            if length:
                break

    if cut is not None:
        chars = len(cut[0].fragment)
        reason = f"the output ends inside an unclosed JSON object or array ({chars} chars from its opening)"
        if length:
            reason += "; finish_reason was 'length'"
        return _failure("truncated", reason, cut[0].method, text)
    if failed is None:
        if length:
            return _failure("truncated", f"the output was cut (finish_reason 'length') after {len(text)} chars, "
                                         "before any JSON object or array", "none", text)
        return _failure("no_json", f"no JSON object or array found in {len(text)} chars of text", "none", text)
    candidate, decoded = failed
    where = candidate.label if candidate.method != "balanced" else "text"
    if length:
        reason = f"the output was cut (finish_reason 'length') and the JSON in {where} does not decode: {decoded.error}"
        return _failure("truncated", reason, candidate.method, text)
    return _failure("invalid_json", f"the JSON in {where} does not decode: {decoded.error}", candidate.method, text)


