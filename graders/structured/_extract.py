"""Turning a model response into a typed object, in three explicit pure stages.

::

    model output (str | OpenAI-style sample dict)
      -> extract_json   find the JSON text: bare, a ```json fence, or the last
                        balanced object/array among prose        -> Extraction
      -> decode_json    strict JSON; lenient repairs only on request, and
                        always recorded by name                  -> Decoded
      -> validate_value the schema's issues, as records          -> tuple[Issue, ...]
    parse_response runs the three and answers with one Parsed record.

A bad model output is data: :func:`parse_response` never raises on it. It
answers with a :class:`Parsed` whose ``status`` says what went wrong (``empty``,
``no_json``, ``invalid_json``, ``truncated``, ``schema_invalid``), a one-line
``reason`` and one :class:`~schemas.Issue` record (``code`` = the status). Only
misuse raises (a schema that is not a loaded :class:`~schemas.Schema`).

Extraction policy
-----------------

1. **Fast path.** When the stripped text starts with ``{``/``[`` and ends with
   ``}``/``]`` it goes straight to the decoder without any scan (the common case,
   and the one the benchmark runs 100k times). If it does not decode, the text is
   scanned as below.
2. **Code fences.** A fence is a line of three or more backticks (CommonMark:
   the closing line has at least as many backticks and no info string), so
   backticks *inside* a JSON string never open or close one. Fences tagged
   ``json*`` or untagged whose content starts with ``{``/``[`` are candidates,
   the last one first: "the last one that contains JSON" wins.
3. **Balanced scan.** A linear, iterative scanner that understands JSON strings
   and escapes finds top-level balanced ``{...}``/``[...]`` spans. A bracket
   opens a span only when the next non-space character can start JSON there
   (``{`` then ``"``, ``'`` or ``}``; ``[`` then a value or ``]``), so prose like
   "{see below}" or "[citation needed]" is not mistaken for an unclosed object.
   **The last span wins**: models reason first and answer last, and a model
   that corrects itself writes the correction after the mistake. Objects are
   preferred to arrays (a trailing "[1]" citation must not replace the answer);
   an array is used when no object decodes. Candidates that do not decode are
   skipped in that order (at most :data:`MAX_CANDIDATES` of each kind).

Truncation policy
-----------------

The output is *truncated* when the text ends inside an opened, never-closed
object or array and no complete one precedes it, or when ``finish_reason`` is
``"length"``. ``status == "truncated"`` is given only when nothing decodes:
if a complete object was written before the cut, the status is ``"ok"`` and the
reason says ``finish_reason`` was ``"length"``. With ``"length"``, a text that
ends inside JSON is truncated even when an earlier complete object exists (the
answer being written was cut), and a cut output with no JSON at all is
``"truncated"`` rather than ``"no_json"``. Empty output stays ``"empty"``.

Decoding policy
---------------

Strict :func:`json.loads` semantics, with ``NaN``/``Infinity`` rejected (they
are not JSON). ``lenient=True`` allows exactly three repairs, each recorded in
``Decoded.repairs`` so a grader can penalise it: ``trailing_comma``,
``single_quotes`` and ``python_literals`` (``True``/``False``/``None``).

The repair is one left-to-right pass of a four-alternative regex lexer
(double-quoted string, single-quoted string, Python literal, trailing comma)
that rewrites only those three constructs, and the result goes back to the
strict JSON decoder, which stays the judge of everything else: any other
deviation from JSON is still an error, and ``repairs`` is exact (a name is
listed only if that construct occurred and was rewritten, and the strict decoder
is tried first, so ``repairs == ()`` whenever the text is already JSON).

Why not a ready-made parser: ``ast.literal_eval`` (which accepts all three
constructs) differs from JSON in ways that silently change values:
``"\\uD83D\\uDE00"`` stays two lone surrogates instead of one emoji, ``"\\/"``
keeps its backslash (and warns), ``0x10``, ``1_000`` and ``1j`` are accepted,
and it yields tuples and sets. The stdlib :mod:`tokenize` lexer has JSON-
compatible string tokens but is pure Python (seconds on a few MB) and changed
behaviour in 3.12. The JSON decoder keeps JSON's exact semantics for strings
and numbers; the lexer only has to find the three constructs. The repair runs
only when the strict error points at a repairable character.

Size policy
-----------

A model output longer than :func:`max_output_chars` characters (1,000,000 by
default; set ``RFTKIT_MAX_OUTPUT_CHARS`` before the process starts, or call
:func:`set_max_output_chars`) is not read: :func:`parse_response` answers
``truncated`` at once, saying so, and graders flag it ``truncated_output_error``.
No real answer is that long, and the stages above, while linear, cost about half
a microsecond per character on hostile text (a 30 MB run of ``{``); the bound
keeps every grade's cost bounded. Text graders grade the first
:func:`max_output_chars` characters and raise the same flag.

Nesting deeper than the JSON decoder's recursion limit (about 1000 levels, less
the caller's stack) gives ``invalid_json`` with a reason, never a
:class:`RecursionError`; the scanner itself is iterative and has no depth limit.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from schemas import Issue

ParseStatus = Literal["ok", "empty", "no_json", "invalid_json", "truncated", "schema_invalid"]
"""The outcome of :func:`parse_response`; every value but ``"ok"`` is a failure."""

ExtractionMethod = Literal["bare", "fence", "balanced", "none"]
"""How :func:`extract_json` found the JSON (``none``: it did not)."""

MAX_CANDIDATES = 16
"""How many balanced objects (and, separately, arrays) and fences are tried, the last first."""

REPAIRS = ("trailing_comma", "single_quotes", "python_literals")
"""The only lenient repairs, in the order they are reported."""

# --------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Extraction:
    """Where the JSON is in a model output (the result of :func:`extract_json`)."""

    fragment: str | None
    """The JSON text found (possibly cut short when ``truncated``), or None."""
    method: ExtractionMethod
    """How it was found: the whole text (``bare``), a code ``fence``, a ``balanced`` scan, or ``none``."""
    truncated: bool
    """The text ends inside an unclosed object/array and no complete one precedes it, or ``finish_reason == "length"``."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """The result of :func:`decode_json`. JSON ``null`` is a value: test ``ok``, not ``value``."""

    value: Any
    """The decoded JSON value; None when not ``ok``."""
    ok: bool
    """True when the fragment decoded."""
    repairs: tuple[str, ...]
    """Names of the lenient repairs applied (see :data:`REPAIRS`); ``()`` when strict JSON."""
    error: str | None
    """One-line reason when not ``ok``."""


@dataclass(slots=True)  # not frozen: a frozen dataclass costs more to build, on the hot path
class Parsed:
    """The result of :func:`parse_response`."""

    status: ParseStatus
    """``"ok"`` or the kind of failure."""
    value: Any
    """The decoded value when ``status`` is ``"ok"`` or ``"schema_invalid"``, else None."""
    repairs: tuple[str, ...]
    """Lenient repairs that were needed (empty in strict mode)."""
    issues: tuple[Issue, ...]
    """Schema violations, or one record for a parse failure (``code`` = the status, pointer ``""``)."""
    method: str
    """How the JSON was found: ``bare``, ``fence``, ``balanced``, ``output_json`` or ``none``."""
    reason: str
    """One line a person can read."""

    @property
    def ok(self) -> bool:
        """True when the output parsed and satisfied the schema."""
        return self.status == "ok"


# --------------------------------------------------------------------------------------
# Extract

# A bracket that can open JSON where it stands: "{" when the next non-space character is '"', "'" or "}" (or
# there is none: an object cut right after it opened); "[" when it is one that can start a value, or "]", or
# none. One C-level search skips a run of brackets that cannot (a run of "{"), instead of a search per bracket.
_JSON_OPENER = re.compile(r"""\{(?=[ \t\r\n]*(?:["'}]|\Z))|\[(?=[ \t\r\n]*(?:["'\-0-9\[{\]tfnTFN]|\Z))""")
# A whole JSON string (unrolled loop: linear, no backtracking), a bracket, or a lone quote.
_SPAN_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]"]', re.DOTALL)
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,})([^`\n]*)$", re.MULTILINE)
_CLOSER = {"{": "}", "[": "]"}


@dataclass(frozen=True, slots=True)
class _Candidate:
    fragment: str
    method: Literal["bare", "fence", "balanced"]
    ends_open: bool  # the text ends inside this unclosed object/array
    label: str  # for the reason: "a ```json fence", "prose" ...


@dataclass(slots=True)
class _Scan:
    objects: deque[tuple[int, int]]
    arrays: deque[tuple[int, int]]
    open_at: int | None  # start of an object/array still open at the end


def _scan(text: str, start: int = 0, end: int | None = None) -> _Scan:
    """Find top-level balanced spans in ``text[start:end]``; iterative and linear.

    Outside a span, one regex search jumps to the next bracket, so prose without
    brackets costs one C-level search. Inside a span, one ``finditer`` walks the
    tokens that matter: a whole JSON string (escapes honoured) or a bracket. A
    lone ``"`` means a string that never closes. A closer that does not match
    its opener ends the span there: the span is kept as a candidate and fails to
    decode, which reports the error.
    """
    stop = len(text) if end is None else end
    result = _Scan(deque(maxlen=MAX_CANDIDATES), deque(maxlen=MAX_CANDIDATES), None)
    pos = start
    while True:
        m = _JSON_OPENER.search(text, pos, stop)
        if m is None:
            return result
        first = m.start()
        stack = [text[first]]
        for tok in _SPAN_TOKEN.finditer(text, first + 1, stop):
            at = tok.start()
            char = text[at]
            if char == '"':
                if tok.end() == at + 1:  # the string alternative failed: it never closes
                    break
            elif char in "{[":
                stack.append(char)
            else:
                if char == _CLOSER[stack[-1]]:
                    stack.pop()
                else:  # mismatched closer
                    stack.clear()
                if not stack:
                    pos = tok.end()
                    break
        if stack:
            result.open_at = first
            return result
        (result.objects if text[first] == "{" else result.arrays).append((first, pos))


def _fences(text: str) -> list[tuple[str, int, int, bool]]:
    """Code blocks as (language, content start, content end, closed), in order."""
    if "```" not in text:
        return []
    blocks: list[tuple[str, int, int, bool]] = []
    opened: tuple[int, str, int] | None = None  # (backticks, language, content start)
    for m in _FENCE_LINE.finditer(text):
        ticks, info = len(m.group(1)), m.group(2).strip()
        if opened is None:
            opened = (ticks, info.split()[0].lower() if info else "", m.end() + 1)
        elif not info and ticks >= opened[0]:
            blocks.append((opened[1], opened[2], m.start(), True))
            opened = None
    if opened is not None:
        blocks.append((opened[1], opened[2], len(text), False))
    return blocks


def _ends_open(scan: _Scan, finish_reason: str | None) -> bool:
    return scan.open_at is not None and (finish_reason == "length" or not (scan.objects or scan.arrays))


def _candidates(text: str, finish_reason: str | None) -> list[_Candidate]:
    """Every place JSON may be, in the order it is tried (fast path excluded)."""
    return list(_each_candidate(text, finish_reason))


def _each_candidate(text: str, finish_reason: str | None) -> Iterator[_Candidate]:
    """:func:`_candidates` one at a time: the fences first, so a caller that stops at a fence skips the scan of the text."""
    for lang, start, end, closed in reversed(_fences(text)[-MAX_CANDIDATES:]):
        if lang and not lang.startswith("json"):
            continue
        content = text[start:end].strip()
        if not content or content[0] not in "{[":
            continue
        cut = not closed and _ends_open(_scan(text, start, end), finish_reason)
        yield _Candidate(content, "fence", cut, f"a ```{lang} fence")
    scan = _scan(text)
    if _ends_open(scan, finish_reason):
        assert scan.open_at is not None  # for mypy: _ends_open checked it
        yield _Candidate(text[scan.open_at:].rstrip(), "balanced", True, "prose")
        return
    for first, last in reversed(scan.objects):
        yield _Candidate(text[first:last], "balanced", False, "prose")
    for first, last in reversed(scan.arrays):
        yield _Candidate(text[first:last], "balanced", False, "prose")


def _bare(text: str) -> str | None:
    stripped = text.strip()
    if stripped and stripped[0] in "{[" and stripped[-1] in "}]":
        return stripped
    return None


def extract_json(text: str, *, finish_reason: str | None = None) -> Extraction:
    """Find the JSON text in a model output (stage 1; see the module docstring for the policy).

    >>> extract_json('  {"a": 1} ')
    Extraction(fragment='{"a": 1}', method='bare', truncated=False)
    >>> extract_json('Sure!\\n```json\\n{"a": 1}\\n```\\nDone.')
    Extraction(fragment='{"a": 1}', method='fence', truncated=False)
    >>> extract_json('First {"a": 1}, no wait: {"a": 2}.').fragment
    '{"a": 2}'
    >>> extract_json('Result: {"a": 1, "b": [1,')
    Extraction(fragment='{"a": 1, "b": [1,', method='balanced', truncated=True)
    >>> extract_json("no JSON here")
    Extraction(fragment=None, method='none', truncated=False)
    """
    length = finish_reason == "length"
    bare = _bare(text)
    if bare is not None:
        return Extraction(bare, "bare", length)
    found = _candidates(text, finish_reason)
    if not found:
        return Extraction(None, "none", length)
    best = found[0]
    return Extraction(best.fragment, best.method, best.ends_open or length)



