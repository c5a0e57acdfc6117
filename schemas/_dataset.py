"""Validating a whole dataset before anything trains (``schemas.validate_dataset``).

A bad row found after two hours of training is the most expensive bug in RFT, so
this pass reads every row once, up front, and reports every problem with its line
number, JSON pointer, stable code, message and the offending value (shortened).
It never raises on bad data and never writes to the file.

What is checked, in order, per row (each check is skipped when an earlier one
already failed for the same part, so one defect is reported once):

1. the line is UTF-8 and JSON and an object (``schemas._reader``);
2. the structure its format expects (:data:`FORMATS`): messages well-formed, the
   last one from the user, no empty prompt;
3. the reference answer validates against the response schema;
4. every ``{{ item.x }}`` template variable of the grader config resolves;
5. the gold self-check: the reference, graded as if the model had written it,
   reaches the grader's maximum (a row that fails it shows a misconfigured grader
   or a bad reference; it runs only on rows whose reference passed check 3). A
   grader of (response, reference) pairs grades ``json.dumps(reference)`` against
   the reference; a grader of (sample, item) pairs -- every OpenAI type, wrapped by
   ``graders.GoldCheck`` (:class:`GoldCheckLike`) -- grades the reference as the
   sample with the row as the item;
6. duplicates (the same prompt twice) and leakage (a prompt also in the
   ``against`` file) -- warnings, which fail a run only under ``--strict``.

Memory: the reader holds one line at a time; the duplicate and leakage indexes
live in a temporary on-disk SQLite table (``schemas._dedupe``); at most
``max_issues`` issue records are kept (the counts stay exact). So memory is flat
in the file's size.

``schemas`` never imports ``graders`` (the dependency runs schemas <- graders), so
the grader is any object with ``grade(response, reference)`` returning something
with ``score``, ``sub_scores``, ``details`` and ``reason`` (:class:`GraderLike`),
or with ``gold_check(reference, row)`` returning a :class:`GoldVerdict`
(:class:`GoldCheckLike`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ._dedupe import PromptIndex, prompt_hash
from ._errors import Issue, UserError, json_pointer, shorten
from ._loading import Schema, SchemaSource
from ._reader import DEFAULT_MAX_LINE_BYTES, NumberOutOfRange, RawRow, check_path, decode_json, read_dataset

DatasetFormat = Literal["auto", "openai_rft", "prompt_reference", "trl", "verl"]
"""A dataset layout; ``auto`` detects it from the first readable row."""

Severity = Literal["error", "warning"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""Message roles the chat formats accept."""

REFERENCE_CANDIDATES = ("reference", "reference_answer", "ground_truth", "answer", "solution")
"""Columns tried, in order, for the reference answer when none is named (openai_rft and trl)."""

WARNING_CODES = frozenset({"blank_line", "duplicate_prompt", "leaked_prompt"})
"""Codes that are warnings: reported, but they fail a run only under ``strict``."""

_TEMPLATE = re.compile(r"{{\s*item\.([\w.\[\]]+)\s*}}")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_EPS = 1e-9


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetIssue(Issue):
    """An :class:`Issue` found in a dataset file: where (line, pointer), what (code, message, input), how bad.

    ``pointer`` points into the row (``/messages/2/role``); ``line`` is the 1-based
    line of a JSONL file, or the 1-based row of a Parquet file.
    """

    line: int = 0
    """1-based line (JSONL) or row (Parquet) number; 0 for the file as a whole."""
    severity: Severity = "error"
    """``warning`` for duplicates, leakage and blank lines; ``error`` otherwise."""

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "severity": self.severity, "code": self.code, "pointer": self.pointer,
                "message": self.message, "input": self.input}


class GradeLike(Protocol):
    """What the gold self-check reads from a grade (``graders.Grade`` has it)."""

    @property
    def score(self) -> float: ...
    @property
    def sub_scores(self) -> Mapping[str, float]: ...
    @property
    def reason(self) -> str: ...


class GraderLike(Protocol):
    """Anything with ``grade(response, reference)``; ``graders.StructuredGrader`` is one.

    An optional ``max_score`` attribute (default 1.0) is the score the gold
    self-check expects; an optional ``schema`` attribute (a :class:`Schema`) is
    used for the reference check when no ``response_schema`` is given.
    """

    def grade(self, response: Any, reference: Any) -> GradeLike: ...


@dataclass(frozen=True, slots=True)
class GoldVerdict:
    """What a :class:`GoldCheckLike` found for one row: the reference's score, the maximum, and what fell short.

    ``short`` maps each part (a ``multi``'s sub-grader, or the grader's name) that
    scored below its own maximum to ``(score, maximum)``; the row passes when it is
    empty and ``score`` reaches ``maximum``.
    """

    score: float
    maximum: float
    short: Mapping[str, tuple[float, float]]
    reason: str

    @property
    def passed(self) -> bool:
        """True when the reference reaches the maximum, every part included."""
        return not self.short and self.score >= self.maximum - _EPS


class GoldCheckLike(Protocol):
    """The gold self-check of a grader that reads a sample and an item (OpenAI's types); ``graders.GoldCheck`` is one.

    ``gold_check(reference, row)`` grades the reference as the model's answer with
    the row as the item. ``gold_skipped`` says why the check does not run (a grader
    that calls a model costs money per row), or is None.
    """

    @property
    def gold_skipped(self) -> str | None: ...

    def gold_check(self, reference: Any, row: Mapping[str, Any]) -> GoldVerdict: ...


@dataclass(slots=True)
class Report:
    """The result of :func:`validate_dataset`: a summary and every problem, sorted by line.

    >>> r = Report(path="d.jsonl", format="trl", detected=True)
    >>> r.ok(), r.exit_code(), r.to_dict()["summary"]["rows"]
    (True, 0, 0)
    """

    path: str
    format: str
    """The layout the rows were checked against."""
    detected: bool
    """True when ``format`` was detected (``format="auto"``), False when it was given."""
    reference_field: str | None = None
    """The column holding the reference answer (dotted path), when one was needed or found."""
    checks: tuple[str, ...] = ()
    """The checks that ran (``json``, ``structure``, ``schema``, ``templates``, ``gold``, ``duplicates``, ``leakage``)."""
    rows: int = 0
    """Lines (or Parquet rows) read, blank lines included."""
    rows_with_errors: int = 0
    errors: int = 0
    warnings: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Issue count per code (exact, even when records were dropped)."""
    issues: list[DatasetIssue] = field(default_factory=list)
    """Every problem (up to ``max_issues``), sorted by line."""
    dropped: int = 0
    """Issue records not kept because ``max_issues`` was reached."""
    notes: list[str] = field(default_factory=list)
    """What was not checked, and why (a gold self-check that could not run)."""

    def ok(self, strict: bool = False) -> bool:
        """True when there is no error (and, with ``strict``, no warning either)."""
        return self.errors == 0 and (not strict or self.warnings == 0)

    def exit_code(self, strict: bool = False) -> int:
        """0 when :meth:`ok`, else 1 (2, "could not run", is the CLI's answer to an exception)."""
        return 0 if self.ok(strict) else 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``summary`` and ``issues``."""
        return {
            "path": self.path, "format": self.format, "detected": self.detected, "reference_field": self.reference_field,
            "checks": list(self.checks), "notes": list(self.notes),
            "summary": {"rows": self.rows, "rows_with_errors": self.rows_with_errors, "errors": self.errors,
                        "warnings": self.warnings, "counts": dict(sorted(self.counts.items())), "dropped": self.dropped},
            "issues": [i.to_dict() for i in self.issues],
        }

    def summary(self) -> str:
        """One line: what was read, as what, and how many problems."""
        how = "detected" if self.detected else "given"
        return (f"{self.path}: {self.format} ({how}), {self.rows:,} rows, {self.rows_with_errors:,} with errors, "
                f"{self.errors:,} error(s), {self.warnings:,} warning(s)")


# -- paths into a row ---------------------------------------------------------------------


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split a dotted path with ``[i]`` indexes into keys and indexes.

    >>> parse_path("reward_model.ground_truth"), parse_path("a.b[0].c")
    (('reward_model', 'ground_truth'), ('a', 'b', 0, 'c'))
    """
    return tuple(int(m.group(2)) if m.group(2) is not None else m.group(1) for m in _PATH_PART.finditer(path))


_MISSING = object()


def resolve(row: Any, path: tuple[str | int, ...]) -> tuple[Any, int]:
    """Follow ``path`` in ``row``: (value, len(path)) when it resolves, else (``_MISSING``, index of the first step that failed)."""
    node = row
    for depth, step in enumerate(path):
        if isinstance(step, int):
            if isinstance(node, list) and -len(node) <= step < len(node):
                node = node[step]
                continue
        elif isinstance(node, dict) and step in node:
            node = node[step]
            continue
        return _MISSING, depth
    return node, len(path)


def template_variables(config: Any) -> list[str]:
    """Every distinct ``{{ item.x }}`` path in a grader config's strings, in order of appearance.

    >>> template_variables({"input": [{"content": "{{ item.question }}"}], "reference": "{{item.answers[0].text}}"})
    ['question', 'answers[0].text']
    """
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.update(dict.fromkeys(_TEMPLATE.findall(node)))
        elif isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(found)


# -- structure checks per format --------------------------------------------------------------

_Out = list[DatasetIssue]


def _issue(out: _Out, line: int, code: str, pointer: str, message: str, value: Any = None) -> None:
    out.append(DatasetIssue(code, pointer, message, shorten(value), line, "warning" if code in WARNING_CODES else "error"))


def _covered(out: _Out, pointer: str) -> bool:
    """True when an issue already found in this row points at ``pointer`` or a part containing it (one defect, one report)."""
    return any(i.pointer and (pointer == i.pointer or pointer.startswith(i.pointer + "/")) for i in out)


def _check_messages(msgs: Any, base: str, line: int, out: _Out) -> bool:
    """Check a list of chat messages; True when it is a usable prompt (errors go to ``out``)."""
    if not isinstance(msgs, list):
        _issue(out, line, "wrong_type", base, f"{base[1:]} must be a list of messages, got {type(msgs).__name__}", msgs)
        return False
    if not msgs:
        _issue(out, line, "empty_prompt", base, f"{base[1:]} is an empty list: there is nothing to prompt with", msgs)
        return False
    fine = True
    for i, m in enumerate(msgs):
        ptr = f"{base}/{i}"
        if not isinstance(m, dict):
            _issue(out, line, "wrong_type", ptr, f"a message must be an object, got {type(m).__name__}", m)
            fine = False
            continue
        role = m.get("role")
        if role is None:
            _issue(out, line, "missing_field", ptr + "/role", "message has no 'role'", m)
            fine = False
        elif role not in ROLES:
            _issue(out, line, "invalid_role", ptr + "/role", f"unknown role {role!r}; expected one of {sorted(ROLES)}", role)
            fine = False
        content = m.get("content")
        if isinstance(content, str):
            if not content.strip():
                _issue(out, line, "empty_content", ptr + "/content", f"the {role} message has empty content", content)
                fine = False
        elif isinstance(content, list):
            if not content:
                _issue(out, line, "empty_content", ptr + "/content", f"the {role} message has no content parts", content)
                fine = False
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    _issue(out, line, "wrong_type", f"{ptr}/content/{j}",
                           'a content part must be an object with a "type" (e.g. {"type": "text", "text": ...})', part)
                    fine = False
        elif content is None:
            if not (role == "assistant" and m.get("tool_calls")):
                _issue(out, line, "missing_field", ptr + "/content", f"the {role} message has no 'content'", m)
                fine = False
        else:
            _issue(out, line, "wrong_type", ptr + "/content",
                   f"content must be a string or a list of parts, got {type(content).__name__}", content)
            fine = False
    last = msgs[-1]
    if isinstance(last, dict) and last.get("role") in ROLES and last.get("role") != "user":
        _issue(out, line, "last_message_not_user", f"{base}/{len(msgs) - 1}/role",
               f"the last message is from {last.get('role')!r}; the model answers the user, so the prompt must end with a user message",
               last.get("role"))
        fine = False
    return fine


def _check_prompt(row: dict[str, Any], line: int, out: _Out) -> Any:
    """A ``prompt`` column: a non-empty string or a list of messages. Returns the prompt, or None when unusable."""
    if "prompt" not in row or row["prompt"] is None:
        _issue(out, line, "missing_field", "/prompt", "row has no 'prompt'", None)
        return None
    prompt = row["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            _issue(out, line, "empty_prompt", "/prompt", "prompt is empty", prompt)
            return None
        return prompt
    if isinstance(prompt, list):
        return prompt if _check_messages(prompt, "/prompt", line, out) else None
    _issue(out, line, "wrong_type", "/prompt", f"prompt must be a string or a list of messages, got {type(prompt).__name__}", prompt)
    return None


def _check_openai_rft(row: dict[str, Any], line: int, out: _Out) -> Any:
    if "messages" not in row:
        _issue(out, line, "missing_field", "/messages", "row has no 'messages' (the OpenAI RFT format puts the prompt there)", None)
        return None
    if "tools" in row and not isinstance(row["tools"], list):
        _issue(out, line, "wrong_type", "/tools", f"tools must be a list, got {type(row['tools']).__name__}", row["tools"])
    msgs = row["messages"]
    return msgs if _check_messages(msgs, "/messages", line, out) else None


def _check_verl(row: dict[str, Any], line: int, out: _Out) -> Any:
    source = row.get("data_source")
    if source is None:
        _issue(out, line, "missing_field", "/data_source", "row has no 'data_source' (verl picks the reward function by it)", None)
    elif not isinstance(source, str):
        _issue(out, line, "wrong_type", "/data_source", f"data_source must be a string, got {type(source).__name__}", source)
    rm = row.get("reward_model")  # when absent, the reference check reports /reward_model/ground_truth as missing
    if rm is not None and not isinstance(rm, dict):
        _issue(out, line, "wrong_type", "/reward_model", f"reward_model must be an object, got {type(rm).__name__}", rm)
    info = row.get("extra_info")
    if info is not None and not isinstance(info, dict):
        _issue(out, line, "wrong_type", "/extra_info", f"extra_info must be an object, got {type(info).__name__}", info)
    return _check_prompt(row, line, out)


FORMATS: dict[str, Callable[[dict[str, Any], int, _Out], Any]] = {
    "openai_rft": _check_openai_rft,
    "prompt_reference": _check_prompt,
    "trl": _check_prompt,
    "verl": _check_verl,
}
"""Each layout's structure check: it appends issues and returns the prompt (None when unusable)."""

_DEFAULT_REFERENCE = {"prompt_reference": "reference", "verl": "reward_model.ground_truth"}


def detect_format(row: Mapping[str, Any]) -> str | None:
    """Name the layout of one row, or None.

    >>> detect_format({"messages": []}), detect_format({"prompt": "x", "reference": 1}), detect_format({"prompt": "x", "answer": 1})
    ('openai_rft', 'prompt_reference', 'trl')
    >>> detect_format({"data_source": "gsm8k", "prompt": [], "reward_model": {"ground_truth": "4"}})
    'verl'
    """
    if "messages" in row:
        return "openai_rft"
    rm = row.get("reward_model")
    if "data_source" in row and "prompt" in row and isinstance(rm, Mapping) and "ground_truth" in rm:
        return "verl"
    if "prompt" in row and "reference" in row:
        return "prompt_reference"
    if "prompt" in row:
        return "trl"
    return None


# -- the pass -------------------------------------------------------------------------------


def validate_dataset(
    path: str | Path,
    *,
    response_schema: SchemaSource | None = None,
    grader: GraderLike | GoldCheckLike | None = None,
    reference: str | None = None,
    format: DatasetFormat = "auto",
    grader_config: Mapping[str, Any] | None = None,
    against: str | Path | None = None,
    max_issues: int = 10_000,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check every row of a JSONL or Parquet dataset in one streaming pass; never modifies the file.

    Args:
        path: the dataset (JSONL, or Parquet for the verl layout; Parquet is recognised by its magic bytes).
        response_schema: what a reference must satisfy: a pydantic model, JSON Schema (dict or file), or an OpenAI
            ``response_format`` block. Defaults to the grader's own ``schema`` when it has one.
        grader: runs the gold self-check: each reference, graded as the answer, must score ``grader.max_score`` (1.0).
            A :class:`GoldCheckLike` (``graders.GoldCheck(grader)`` for an OpenAI-type grader) grades it with the row
            as the item, and only when ``reference`` names the column holding the answer the model should write
            (otherwise the check is left out, with a note in ``Report.notes``).
        reference: the column holding the reference answer, as a dotted path (``reward_model.ground_truth``);
            defaults to the layout's own (``reference``; verl: ``reward_model.ground_truth``; otherwise the first of
            :data:`REFERENCE_CANDIDATES` in the first row).
        format: the layout, or ``auto`` to detect it from the first readable row (the report says which).
        grader_config: the grader's config dict; every ``{{ item.x }}`` in it must resolve in every row.
        against: a validation file; prompts found in both files are reported as ``leaked_prompt`` warnings.
        max_issues: issue records to keep (the counts stay exact beyond it).
        max_line_bytes: a longer line is reported as ``line_too_long`` and skipped without being read whole.
        progress: called now and then with (done, total) -- bytes for JSONL, rows for Parquet.

    Raises:
        UserError: the file is missing or unreadable, the format is unknown, or no reference column can be found
            when a schema or grader needs one. ``SchemaError`` (a UserError): the schema cannot be loaded.

    >>> import json, tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "train.jsonl")
    ...     with open(p, "w") as fh:
    ...         _ = fh.write(json.dumps({"prompt": "2+2?", "reference": {"n": 4}}) + "\\n")
    ...         _ = fh.write(json.dumps({"prompt": "", "reference": {"n": "4"}}) + "\\n")
    ...     report = validate_dataset(p, response_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    >>> report.format, report.rows, report.rows_with_errors
    ('prompt_reference', 2, 1)
    >>> [(i.line, i.code, i.pointer) for i in report.issues]
    [(2, 'empty_prompt', '/prompt'), (2, 'reference_invalid', '/reference/n')]
    """
    src = Path(path)
    check_path(src)
    if format != "auto" and format not in FORMATS:
        raise UserError(f"unknown dataset format {format!r}", code="unknown_format", hint=f"use auto or one of {sorted(FORMATS)}")
    schema: Schema | None = None
    grader_schema = getattr(grader, "schema", None)  # optional on GraderLike: StructuredGrader has one
    if response_schema is not None:
        schema = Schema.load(response_schema)
    elif isinstance(grader_schema, Schema):
        schema = grader_schema
    run = _Run(src, schema=schema, grader=grader, reference=reference, format=format,
               templates=template_variables(grader_config) if grader_config is not None else [],
               max_issues=max_issues)
    try:
        if against is not None:
            run.load_against(Path(against), max_line_bytes)
        with closing(read_dataset(src, max_line_bytes=max_line_bytes, progress=progress)) as rows:
            run.validate(rows)
    finally:
        run.close()
    return run.report


class _Run:
    """The state of one validation pass (kept together so the per-row loop reads top to bottom)."""

    def __init__(self, src: Path, *, schema: Schema | None, grader: GraderLike | GoldCheckLike | None, reference: str | None,
                 format: str, templates: list[str], max_issues: int) -> None:
        self.src = src
        self.schema = schema
        # A grader of (sample, item) pairs brings its own gold check; one that cannot run it says why.
        self._item_check: Callable[[Any, Mapping[str, Any]], GoldVerdict] | None = getattr(grader, "gold_check", None)
        skipped: str | None = getattr(grader, "gold_skipped", None) if self._item_check is not None else None
        self.notes = [f"gold self-check not run: {skipped}"] if skipped else []
        self.grader: Any = None if skipped else grader
        self.max_score = float(getattr(grader, "max_score", 1.0))
        # A grader's optional compare(prediction, reference) stage grades an already-decoded object.
        self._compare: Callable[[Any, Any], GradeLike] | None = getattr(grader, "compare", None)
        grader_schema = getattr(grader, "schema", None)
        self._grader_schema: Schema | None = grader_schema if isinstance(grader_schema, Schema) else None
        self.reference = reference
        self.reference_given = reference is not None
        self.format = format
        self.templates = [(t, parse_path(t)) for t in templates]
        self.max_issues = max_issues
        self.dupes = PromptIndex()
        self.against: PromptIndex | None = None
        self.against_name = ""
        self.leak_queue: list[tuple[int, int]] = []
        self.report = Report(path=str(src), format=format, detected=format == "auto")
        self.kept: list[DatasetIssue] = []

    # -- leakage ----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the on-disk indexes (also when the pass stopped on an unreadable file)."""
        self.dupes.close()
        if self.against is not None:
            self.against.close()

    def load_against(self, other: Path, max_line_bytes: int) -> None:
        rows = read_dataset(other, max_line_bytes=max_line_bytes, what="--against file")
        index = PromptIndex()
        self.against, self.against_name = index, other.name
        fmt = self.format if self.format != "auto" else None
        with closing(rows):
            self._index_against(rows, index, fmt)

    def _index_against(self, rows: Iterator[RawRow], index: PromptIndex, fmt: str | None) -> None:
        for raw in rows:
            if raw.value is None:
                continue
            fmt = fmt or detect_format(raw.value)
            if fmt is None:
                continue
            prompt = _prompt_value(raw.value, fmt)
            if prompt is not None:
                index.add(prompt_hash(prompt), raw.line)
        index.flush()

    def _drain_leaks(self, pointer: str) -> None:
        if self.against is None or not self.leak_queue:
            return
        for line, other_line in self.against.lookup_many(self.leak_queue):
            self._add(DatasetIssue("leaked_prompt", pointer,
                                   f"the same prompt is in {self.against_name} line {other_line}: held-out scores would be inflated",
                                   None, line, "warning"))
        self.leak_queue.clear()

    # -- bookkeeping -------------------------------------------------------------------------

    def _add(self, issue: DatasetIssue) -> None:
        r = self.report
        r.counts[issue.code] = r.counts.get(issue.code, 0) + 1
        if issue.severity == "error":
            r.errors += 1
        else:
            r.warnings += 1
        if len(self.kept) < self.max_issues:
            self.kept.append(issue)
        else:
            r.dropped += 1

    def _start(self, first: dict[str, Any]) -> None:
        """Settle the format and the reference column from the first readable row."""
        r = self.report
        if self.format == "auto":
            fmt = detect_format(first)
            if fmt is None:
                raise UserError(f"cannot tell the layout of {self.src.name}: the first row has none of 'messages', 'prompt'",
                                code="unknown_format", hint="pass format= (--layout) or fix the first row")
            self.format = r.format = fmt
        if not self.reference_given and self._item_check is not None and self.grader is not None:
            # An OpenAI-type grader reads the row's own fields, and which column (if any) holds the answer the model
            # should write is the user's to say: a guessed column would fail every row of a correct dataset.
            self.notes.append("gold self-check not run: name the column holding the answer the model should write "
                              "with --reference (reference=) to run it")
            self.grader = None
        if self.reference is None:
            self.reference = _DEFAULT_REFERENCE.get(self.format) or next((c for c in REFERENCE_CANDIDATES if c in first), None)
        if self.reference is None and (self.schema is not None or self.grader is not None):
            raise UserError(f"no reference column in {self.src.name} (tried {', '.join(REFERENCE_CANDIDATES)})",
                            code="no_reference_field", hint="name it with reference= (--reference FIELD)")
        r.reference_field = self.reference
        r.notes = self.notes
        checks = ["json", "structure"]
        checks += ["schema"] if self.schema is not None else []
        checks += ["templates"] if self.templates else []
        checks += ["gold"] if self.grader is not None else []
        checks += ["duplicates"] + (["leakage"] if self.against is not None else [])
        r.checks = tuple(checks)

    # -- the loop ----------------------------------------------------------------------------

    def validate(self, rows: Iterator[RawRow]) -> None:
        r = self.report
        check = None
        ref_path: tuple[str | int, ...] = ()
        ref_pointer = ""
        prompt_pointer = ""
        out: _Out = []
        for raw in rows:
            r.rows += 1
            line = raw.line
            row = raw.value
            if row is None:
                assert raw.problem is not None
                p = raw.problem
                self._add(DatasetIssue(p.code, p.pointer, p.message, p.input, line, "warning" if p.severity == "warning" else "error"))
                if p.severity == "error":
                    r.rows_with_errors += 1
                continue
            if check is None:
                self._start(row)
                check = FORMATS[self.format]
                ref_path = parse_path(self.reference) if self.reference else ()
                ref_pointer = json_pointer(ref_path)
                prompt_pointer = "/messages" if self.format == "openai_rft" else "/prompt"
            # 2. structure
            prompt = check(row, line, out)
            # 3. the reference against the schema
            ref_ok = False
            ref: Any = _MISSING
            if ref_path:
                ref, depth = resolve(row, ref_path)
                if ref is _MISSING or ref is None:
                    needed = self.schema is not None or self.grader is not None or self.format in _DEFAULT_REFERENCE
                    if needed and not _covered(out, ref_pointer):
                        _issue(out, line, "missing_reference", ref_pointer, f"row has no reference at {self.reference!r}", None)
                    ref = _MISSING
                elif self.schema is not None:
                    ref_ok = self._check_reference(ref, ref_pointer, line, out)
                else:
                    ref_ok = True
            # 4. template variables
            for text, tpath in self.templates:
                value, depth = resolve(row, tpath)
                if value is _MISSING and not _covered(out, json_pointer(tpath)):
                    _issue(out, line, "unresolved_variable", json_pointer(tpath[:depth + 1]),
                           f"{{{{ item.{text} }}}} in the grader config does not resolve in this row", None)
            # 5. gold self-check
            if self.grader is not None and ref_ok:
                if self._item_check is not None:
                    self._gold_item(ref, row, ref_pointer, line, out)
                else:
                    self._gold(ref, ref_pointer, line, out)
            # 6. duplicates and leakage
            if prompt is not None:
                h = prompt_hash(prompt)
                self.dupes.add(h, line)  # repeats are reported from flush(), naming the first line overall
                if self.against is not None:
                    self.leak_queue.append((line, h))
                    if len(self.leak_queue) >= 65536:
                        self._drain_leaks(prompt_pointer)
            if out:
                if any(i.severity == "error" for i in out):
                    r.rows_with_errors += 1
                for issue in out:
                    self._add(issue)
                out.clear()
        for line, first in self.dupes.flush():
            self._add(DatasetIssue("duplicate_prompt", prompt_pointer, f"the same prompt as line {first}", None, line, "warning"))
        self._drain_leaks(prompt_pointer)
        if check is None:
            self._add(DatasetIssue("empty_dataset", "", "the file holds no readable row", None, 0, "error"))
            if self.format == "auto":
                r.format = "unknown"
        self.kept.sort(key=lambda i: i.line)
        r.issues = self.kept

    def _check_reference(self, ref: Any, ref_pointer: str, line: int, out: _Out) -> bool:
        assert self.schema is not None
        value = ref
        if isinstance(ref, str) and ref.lstrip()[:1] in ("{", "[") and self.schema.json_schema.get("type") != "string":
            try:
                value = decode_json(ref)
            except json.JSONDecodeError as exc:
                _issue(out, line, "reference_not_json", ref_pointer, f"the reference is a string that does not decode as JSON: {exc.msg}", ref)
                return False
            except NumberOutOfRange as exc:
                _issue(out, line, "number_out_of_range", ref_pointer, f"the reference (JSON text) holds {exc}", ref)
                return False
            except (ValueError, RecursionError) as exc:  # NaN or Infinity (Python writes them), or nested too deep
                _issue(out, line, "reference_not_json", ref_pointer, f"the reference is a string that does not decode as JSON: {exc}", ref)
                return False
        if self.schema.is_valid(value):
            return True
        for problem in self.schema.validate(value):
            _issue(out, line, "reference_invalid", ref_pointer + problem.pointer,
                   f"the reference violates the schema ({problem.code}): {problem.message}", problem.input)
        return False

    def _grader_schema_accepts(self, ref: Any) -> bool:
        """Whether the grader's own schema (if any) accepts ``ref``, as its parse stage would require."""
        return self._grader_schema is None or self._grader_schema.is_valid(ref)

    def _gold(self, ref: Any, ref_pointer: str, line: int, out: _Out) -> None:
        assert self.grader is not None
        try:
            if self._compare is not None and not isinstance(ref, str) and self._grader_schema_accepts(ref):
                # The reference is already a decoded, schema-valid object: decoding json.dumps(ref) would give it
                # back unchanged, so compare it directly (the same grade, without a JSON round trip per row).
                grade = self._compare(ref, ref)
            else:
                response = ref if isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)
                grade = self.grader.grade(response, ref)
        except UserError as exc:  # the grader refuses this reference (e.g. a JSON string that does not decode)
            _issue(out, line, "gold_error", ref_pointer, f"the grader cannot grade this reference: {exc}", ref)
            return
        if grade.score >= self.max_score - _EPS:
            return
        short = {k: round(v, 4) for k, v in grade.sub_scores.items() if v < 1.0 - _EPS}
        fields = ", ".join(f"{k or 'value'} {v:.2f}" for k, v in short.items()) or "no field below 1"
        # The input is the breakdown itself, not the (already reported elsewhere) reference: kept whole, not shortened.
        out.append(DatasetIssue("gold_below_max", ref_pointer,
                                f"the reference, graded as the answer, scores {grade.score:.4f} < {self.max_score:g} ({fields}): "
                                "the grader is misconfigured or the reference is wrong",
                                {"score": round(grade.score, 6), "sub_scores": short, "reason": shorten(grade.reason)}, line))


    def _gold_item(self, ref: Any, row: dict[str, Any], ref_pointer: str, line: int, out: _Out) -> None:
        assert self._item_check is not None
        try:
            verdict = self._item_check(ref, row)
        except UserError as exc:  # the grader refuses this reference or row
            _issue(out, line, "gold_error", ref_pointer, f"the grader cannot grade this reference: {exc}", ref)
            return
        if verdict.passed:
            return
        parts = ", ".join(f"{k} {v:.2f} < {m:g}" for k, (v, m) in verdict.short.items()) or "no part below its maximum"
        out.append(DatasetIssue(
            "gold_below_max", ref_pointer,
            f"the reference, graded as the answer with this row as the item, scores {verdict.score:.4f} < {verdict.maximum:g} "
            f"({parts}): the grader is misconfigured or the reference is wrong",
            {"score": round(verdict.score, 6), "maximum": verdict.maximum,
             "sub_scores": {k: round(v, 4) for k, (v, _) in verdict.short.items()}, "reason": shorten(verdict.reason)}, line))


def _prompt_value(row: dict[str, Any], fmt: str) -> Any:
    """The prompt of a row for duplicate and leakage checks (no structure check)."""
    value = row.get("messages") if fmt == "openai_rft" else row.get("prompt")
    if isinstance(value, str):
        return value if value.strip() else None
    return value if isinstance(value, list) and value else None
