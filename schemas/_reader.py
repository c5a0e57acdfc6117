"""Reading a dataset one row at a time, without ever holding the whole file.

JSONL is read in binary, one line per ``readline(limit)`` call, so memory is
bounded by the longest line the caller allows (``max_line_bytes``), not by the
file: a 50 MB line costs a few copies of 50 MB (bytes, text, parsed object), and
a line longer than the limit is reported and skipped in limit-sized pieces,
never read whole. Line numbers are 1-based and count every newline, so an editor
jumps to the right place.

What is tolerated, because every JSONL writer produces it: a UTF-8 byte-order
mark at the start, ``\\r\\n`` line ends, a missing final newline. What is
reported (never raised): invalid UTF-8 (with the byte offset), invalid JSON
(with the column), ``NaN``/``Infinity`` (Python writes them, JSON has no such
thing), a last line that stops mid-object (``truncated_line``: the file was cut
off while being written or copied), a row that is not an object, a blank line.

Parquet (the verl layout) is read with pyarrow one record batch at a time; its
"line" is the 1-based row number.

The file is opened read-only and never written: validation must not be able to
damage the data it checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import UserError, shorten

DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
"""Lines longer than this (64 MiB) are reported as ``line_too_long`` and skipped unread."""

_BOM = b"\xef\xbb\xbf"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (Python writes it; JSON has no such number)")


# One decoder, built once: json.loads(text, parse_constant=...) would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True, slots=True)
class RawProblem:
    """A row that could not be read as a JSON object (code, message, offending text)."""

    code: str
    message: str
    input: Any
    severity: str = "error"


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as read: its line (or Parquet row) number, the object, or why there is none."""

    line: int
    value: dict[str, Any] | None
    problem: RawProblem | None = None


def _decode_line(line: int, raw: bytes, *, last_without_newline: bool) -> RawRow:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRow(line, None, RawProblem(
            "invalid_utf8", f"not valid UTF-8 at byte {exc.start + 1} of the line ({exc.reason})",
            shorten(raw[max(0, exc.start - 20): exc.start + 20])))
    if not text.strip():
        return RawRow(line, None, RawProblem("blank_line", "blank line (JSONL readers differ on skipping it)", "", "warning"))
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        if last_without_newline and (exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")):
            return RawRow(line, None, RawProblem(
                "truncated_line", f"the last line stops mid-value ({exc.msg} at column {exc.colno}): the file looks cut off",
                shorten(text[-60:])))
        return RawRow(line, None, RawProblem(
            "invalid_json", f"not valid JSON: {exc.msg} at column {exc.colno}", shorten(text[max(0, exc.pos - 40): exc.pos + 40])))
    except (ValueError, RecursionError) as exc:
        return RawRow(line, None, RawProblem("invalid_json", f"not valid JSON: {exc}", shorten(text)))
    if not isinstance(value, dict):
        return RawRow(line, None, RawProblem("not_an_object", f"a row must be a JSON object, got {type(value).__name__}",
                                             shorten(value)))
    return RawRow(line, value)


def read_jsonl(path: Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               on_bytes: Callable[[int], None] | None = None) -> Iterator[RawRow]:
    """Yield every line of a JSONL file as a :class:`RawRow`, in order, in constant memory.

    ``on_bytes`` (if given) is told the byte offset reached, about every 4096 lines.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d, "x.jsonl")
    ...     _ = p.write_bytes(b'\\xef\\xbb\\xbf{"a": 1}\\r\\n[2]\\n{"b": ')
    ...     [(r.line, r.value, r.problem and r.problem.code) for r in read_jsonl(p)]
    [(1, {'a': 1}, None), (2, None, 'not_an_object'), (3, None, 'truncated_line')]
    """
    with path.open("rb") as fh:
        line = 0
        offset = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                return
            line += 1
            offset += len(raw)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                # Too long: skip the rest of this line in bounded pieces, never holding it whole.
                total = len(raw)
                del raw
                while True:
                    piece = fh.readline(max_line_bytes)
                    total += len(piece)
                    if not piece or piece.endswith(b"\n"):
                        break
                offset += total - (max_line_bytes + 1)
                yield RawRow(line, None, RawProblem(
                    "line_too_long", f"line is {total:,} bytes, over the {max_line_bytes:,}-byte limit; skipped unread", None))
                continue
            ends = raw.endswith(b"\n")
            body = raw[:-1] if ends else raw
            del raw
            if body.endswith(b"\r"):
                body = body[:-1]
            if line == 1 and body.startswith(_BOM):
                body = body[3:]
            yield _decode_line(line, body, last_without_newline=not ends)
            if on_bytes is not None and line % 4096 == 0:
                on_bytes(offset)


def read_parquet(path: Path, *, batch_size: int = 4096,
                 on_rows: Callable[[int, int], None] | None = None) -> Iterator[RawRow]:
    """Yield every row of a Parquet file as a :class:`RawRow` (``line`` = 1-based row number), one batch at a time.

    ``on_rows`` (if given) is told (rows read, total rows) after every batch.
    """
    import pyarrow.parquet as pq  # only Parquet users pay for importing pyarrow

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    line = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for value in batch.to_pylist():
            line += 1
            yield RawRow(line, value)
        if on_rows is not None:
            on_rows(line, total)


def load_jsonl(path: Path, *, pointer: str = "") -> list[dict[str, Any]]:
    """Every row of a JSONL file as a dict, for commands that need the rows in memory.

    Blank lines are skipped; the first bad row raises :class:`UserError` naming its
    line (``rftkit validate`` lists every problem at once).
    """
    rows: list[dict[str, Any]] = []
    for raw in read_jsonl(path):
        if raw.problem is not None and raw.problem.code != "blank_line":
            raise UserError(f"{path}:{raw.line}: {raw.problem.message}", code="bad_jsonl_row", pointer=pointer,
                            hint="run `rftkit validate` on the file to see every bad row")
        if raw.value is not None:
            rows.append(raw.value)
    return rows
