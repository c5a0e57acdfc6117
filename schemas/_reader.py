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

Numbers beyond a double's range (``1e400``) are valid JSON, but Python reads
them as infinity, which no grader can compare: such a row is reported
(``number_out_of_range``, with the pointer of the first one) instead of passing
validation and scoring 0 in training.

Compressed JSONL (gzip, bzip2, xz; recognised by their magic bytes, whatever the
file is called) is decompressed as it is read; zip and zstd are refused with a
message saying so. A named pipe (``<(zcat train.jsonl.gz)``) is read as a
stream. Parquet (the verl layout) is read with pyarrow one record batch at a
time; its "line" is the 1-based row number; a file pyarrow cannot read is a
:class:`UserError` (``invalid_parquet``), not a traceback.

The file is opened read-only and never written: validation must not be able to
damage the data it checks.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import json
import lzma
import math
import os
import stat
import zlib
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from ._errors import DatasetIssueCode, UserError, json_pointer, shorten

DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
"""Lines longer than this (64 MiB) are reported as ``line_too_long`` and skipped unread."""

_BOM = b"\xef\xbb\xbf"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (Python writes it; JSON has no such number)")


class _OutOfRange(ValueError):
    """A JSON number too large for a double (``1e400``): it would read as infinity."""


class NumberOutOfRange(ValueError):
    """Raised by :func:`decode_json` for a number beyond a double's range; the message says which and where."""


_INFINITIES = (math.inf, -math.inf)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in _INFINITIES:
        raise _OutOfRange(text)
    return value


class _Huge:
    """Stands for an out-of-range number while its place in the row is looked for."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _huge_or_float(text: str) -> Any:
    value = float(text)
    return _Huge(text) if value in _INFINITIES else value


# One decoder, built once: json.loads(text, parse_constant=...) would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_LOCATOR = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_huge_or_float)


def find_non_finite(value: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], Any] | None:
    """The path and value of the first infinite or NaN float in ``value`` (a decoded row), or None.

    >>> find_non_finite({"a": [1.0, {"b": float("inf")}]})
    (('a', 1, 'b'), inf)
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, _Huge):
        return path, value.text
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_non_finite(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_non_finite(item, (*path, i))
            if found is not None:
                return found
    return None


def decode_json(text: str) -> Any:
    """``json.loads`` as the reader decodes: ``NaN``/``Infinity`` raise ValueError, numbers beyond a double's range
    :class:`NumberOutOfRange`.

    The out-of-range error's message names the number and where it is (``/total``).

    >>> decode_json('{"n": [1, 2.5]}')
    {'n': [1, 2.5]}
    >>> decode_json('{"total": 1e400}')
    Traceback (most recent call last):
    ...
    schemas._reader.NumberOutOfRange: 1e400 at /total is beyond the range of a double: it reads as infinity, which no grader can compare
    """
    try:
        return _DECODER.decode(text)
    except _OutOfRange as exc:
        raise NumberOutOfRange(_out_of_range_message(text, str(exc))[0]) from None


def _out_of_range_message(text: str, number: str) -> tuple[str, str]:
    """(message, pointer) for the first out-of-range number of ``text``."""
    found = find_non_finite(_LOCATOR.decode(text))
    pointer = json_pointer(found[0]) if found is not None else ""
    where = f" at {pointer}" if pointer else ""
    return (f"{number}{where} is beyond the range of a double: it reads as infinity, which no grader can compare",
            pointer)


@dataclass(frozen=True, slots=True)
class RawProblem:
    """A row that could not be read as a JSON object (code, message, offending text)."""

    code: DatasetIssueCode
    message: str
    input: Any
    severity: str = "error"
    pointer: str = ""
    """Where in the row, when the row decoded but holds something unusable (``number_out_of_range``)."""


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
    except _OutOfRange as exc:
        message, pointer = _out_of_range_message(text, str(exc))
        return RawRow(line, None, RawProblem("number_out_of_range", message, str(exc), pointer=pointer))
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


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"PAR1", "parquet"),
          (b"PK\x03\x04", "zip"), (b"\x28\xb5\x2f\xfd", "zstd"))
"""Magic bytes of what a dataset file may be, other than plain JSONL."""

class _Readable(Protocol):
    """What the line reader needs of a (possibly decompressing) binary stream."""

    def readline(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


_OPENERS: dict[str, Callable[[IO[bytes]], _Readable]] = {
    "gzip": lambda fh: gzip.GzipFile(fileobj=fh, mode="rb"),
    "bzip2": lambda fh: bz2.BZ2File(fh, mode="rb"),
    "xz": lambda fh: lzma.LZMAFile(fh, mode="rb"),
}
_DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def check_path(path: Path, what: str = "dataset") -> None:
    """Raise :class:`UserError` unless rows can be read from ``path``: a file, or a named pipe (read as a stream).

    The message says what the path is instead (a directory, a symbolic link loop
    or to nothing, a socket), since "not found" would send the user looking for a
    typo in a path that exists.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise UserError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist",
                            code="dataset_not_found", hint="point the link at the dataset file") from None
        raise UserError(f"{what} not found: {path}", code="dataset_not_found",
                        hint="pass the path of a .jsonl (or .jsonl.gz) or .parquet file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{what} {path} is a symbolic link loop: following it never reaches a file",
                            code="dataset_not_a_file", hint="point the link at the dataset file") from None
        raise UserError(f"cannot read {what} {path}: {exc.strerror}", code="dataset_unreadable") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{what} {path} is a directory, not a file", code="dataset_not_a_file",
                        hint="name one .jsonl or .parquet file inside it")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) else "not a regular file"
        raise UserError(f"{what} {path} is {kind}", code="dataset_not_a_file", hint="pass the path of a .jsonl or .parquet file")


def _open(path: Path, what: str) -> IO[bytes]:
    check_path(path, what)
    try:
        return path.open("rb")
    except OSError as exc:  # permission denied, or gone since the check
        raise UserError(f"cannot read {what} {path}: {exc.strerror}", code="dataset_unreadable") from None


def _kind(fh: IO[bytes]) -> str | None:
    """What the stream holds, from its first bytes (without consuming them, so a pipe can be read on)."""
    head = fh.peek(8)[:8]  # type: ignore[attr-defined]  # a BufferedReader, as path.open("rb") returns
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def read_dataset(path: Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 progress: Callable[[int, int], None] | None = None, what: str = "dataset") -> Generator[RawRow, None, None]:
    """Every row of a dataset file, whatever it holds: JSONL (plain, gzip, bzip2 or xz) or Parquet.

    The file is opened and recognised at once, so a path that cannot be read, a
    zip or zstd archive and a Parquet file pyarrow cannot open raise
    :class:`UserError` here, before any row; the rows are then read lazily. Close
    the generator when stopping early (``contextlib.closing``): that closes the file.
    ``progress`` is told (done, total) now and then: bytes of the file on disk
    for JSONL (total 0 for a pipe), rows for Parquet.
    """
    fh = _open(path, what)
    try:
        kind = _kind(fh)
        if kind == "parquet":
            fh.close()
            if not path.is_file():
                raise UserError(f"{what} {path} is a Parquet stream: Parquet is read from its end, so it needs a regular file",
                                code="dataset_not_a_file", hint="write it to a file first")
            return read_parquet(path, on_rows=progress)
        if kind in ("zip", "zstd"):
            raise UserError(f"{what} {path} is a {kind} archive, which rftkit does not decompress",
                            code="unsupported_compression",
                            hint="decompress it first (gzip, bzip2 and xz are read as they are)")
    except BaseException:
        fh.close()
        raise
    total = os.fstat(fh.fileno()).st_size if fh.seekable() else 0
    on_bytes = None if progress is None else (lambda _: progress(fh.tell() if total else 0, total))
    return _lines(fh, kind, max_line_bytes, on_bytes)


def _lines(fh: IO[bytes], kind: str | None, max_line_bytes: int,
           on_bytes: Callable[[int], None] | None) -> Generator[RawRow, None, None]:
    with fh:
        if kind is None:
            yield from _read_lines(fh, max_line_bytes, on_bytes)
        else:
            with closing(_OPENERS[kind](fh)) as stream:
                yield from _read_lines(stream, max_line_bytes, on_bytes, compression=kind)


def read_jsonl(path: Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               on_bytes: Callable[[int], None] | None = None) -> Generator[RawRow, None, None]:
    """Yield every line of a JSONL file (plain, gzip, bzip2 or xz) as a :class:`RawRow`, in order, in constant memory.

    ``on_bytes`` (if given) is told the byte offset reached (of the decompressed text), about every 4096 lines.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d, "x.jsonl")
    ...     _ = p.write_bytes(b'\\xef\\xbb\\xbf{"a": 1}\\r\\n[2]\\n{"b": ')
    ...     [(r.line, r.value, r.problem and r.problem.code) for r in read_jsonl(p)]
    [(1, {'a': 1}, None), (2, None, 'not_an_object'), (3, None, 'truncated_line')]
    """
    fh = _open(path, "file")
    kind = _kind(fh)
    if kind not in (None, *_OPENERS):
        fh.close()
        raise UserError(f"{path} is {'a Parquet file' if kind == 'parquet' else f'a {kind} archive'}, not JSONL",
                        code="not_jsonl", hint="give a .jsonl file (gzip, bzip2 and xz are read as they are)")
    return _lines(fh, kind, max_line_bytes, on_bytes)


def _read_lines(fh: _Readable, max_line_bytes: int, on_bytes: Callable[[int], None] | None,
                compression: str | None = None) -> Iterator[RawRow]:
    line = 0
    offset = 0
    while True:
        try:
            raw = fh.readline(max_line_bytes + 1)
        except _DECOMPRESSION_ERRORS as exc:  # a cut-off or damaged archive: report where, and stop
            yield RawRow(line + 1, None, RawProblem(
                "invalid_compression", f"the {compression} data stops being readable after line {line}: {exc}", None))
            return
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
                 on_rows: Callable[[int, int], None] | None = None) -> Generator[RawRow, None, None]:
    """Yield every row of a Parquet file as a :class:`RawRow` (``line`` = 1-based row number), one batch at a time.

    ``on_rows`` (if given) is told (rows read, total rows) after every batch. A
    file pyarrow cannot open raises :class:`UserError` (``invalid_parquet``) at
    once; one that breaks part way raises it when reached, naming the last good row.
    A float that is not finite (Parquet stores infinities and NaN; JSON cannot) is
    reported as ``number_out_of_range`` with its pointer.
    """
    import pyarrow as pa  # only Parquet users pay for importing pyarrow
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path} is not a readable Parquet file: {exc}", code="invalid_parquet",
                        hint="the file may be cut off or damaged; write it again") from None
    return _parquet_rows(path, pf, batch_size, on_rows, pa.ArrowException)


def _parquet_rows(path: Path, pf: Any, batch_size: int, on_rows: Callable[[int, int], None] | None,
                  arrow_error: type[Exception]) -> Generator[RawRow, None, None]:
    total = pf.metadata.num_rows
    line = 0
    batches = pf.iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches, None)
        except (arrow_error, OSError) as exc:
            raise UserError(f"{path} stops being readable Parquet after row {line}: {exc}", code="invalid_parquet",
                            hint="the file may be cut off or damaged; write it again") from None
        if batch is None:
            return
        for value in batch.to_pylist():
            line += 1
            bad = find_non_finite(value)
            if bad is not None:
                where = json_pointer(bad[0])
                yield RawRow(line, None, RawProblem(
                    "number_out_of_range", f"{bad[1]} at {where} is not a finite number: no grader can compare it",
                    str(bad[1]), pointer=where))
                continue
            yield RawRow(line, value)
        if on_rows is not None:
            on_rows(line, total)


def load_jsonl(path: Path, *, pointer: str = "") -> list[dict[str, Any]]:
    """Every row of a JSONL file as a dict, for commands that need the rows in memory.

    Blank lines are skipped; the first bad row raises :class:`UserError` naming its
    line (``rftkit validate`` lists every problem at once).
    """
    rows: list[dict[str, Any]] = []
    with closing(read_jsonl(path)) as lines:
        for raw in lines:
            if raw.problem is not None and raw.problem.code != "blank_line":
                raise UserError(f"{path}:{raw.line}: {raw.problem.message}", code="bad_jsonl_row", pointer=pointer,
                                hint="run `rftkit validate` on the file to see every bad row")
            if raw.value is not None:
                rows.append(raw.value)
    return rows
