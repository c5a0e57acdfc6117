"""Validating a whole dataset before anything trains (:func:`validate_dataset`, ``rftkit validate``).

A bad row found after two hours of training is the most expensive bug in RFT, so
this pass reads every row once, up front, and reports every problem with its line
number, JSON pointer, stable code, message and the offending value (shortened).
It never raises on bad data and never writes to the file.

What is checked, in order, per row (each check is skipped when an earlier one
already failed for the same part, so one defect is reported once):

1. the line is UTF-8 and JSON and an object (:mod:`schemas.reading`);
2. the structure its format expects (:data:`FORMATS`): messages well-formed, the
   last one from the user, no empty prompt;
3. the reference answer validates against the response schema;
4. every ``{{ item.x }}`` template variable of the grader config resolves (read by
   :class:`graders.openai.Template`, the grammar the graders render with);
5. the gold self-check: the reference, graded as if the model had written it,
   reaches the grader's maximum (a row that fails it shows a misconfigured grader
   or a bad reference; it runs only on rows whose reference passed check 3). A
   grader of (response, reference) pairs grades ``json.dumps(reference)`` against
   the reference; a grader of (sample, item) pairs -- every OpenAI type, wrapped by
   :class:`graders.GoldCheck` -- grades the reference as the
   sample with the row as the item;
6. duplicates (the same prompt twice) and leakage (a prompt also in the
   ``against`` file) -- warnings, which fail a run only under ``--strict``.

Memory: the reader holds one line at a time; the duplicate and leakage indexes
live in a temporary on-disk SQLite table (:class:`schemas.reading.PromptIndex`); at most
``max_issues`` issue records are kept (the counts stay exact). So memory is flat
in the file's size.

The grader is a structured grader (``grade(response, reference)``) or a
:class:`graders.GoldCheck` around any other (``gold_check(reference, row)``
returning a :class:`GoldVerdict`).
"""



import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from schemas import Schema, SchemaSource, UserError, json_pointer
from schemas.reading import (
    DEFAULT_MAX_LINE_BYTES,
    NumberOutOfRange,
    PromptIndex,
    RawRow,
    check_path,
    decode_json,
    prompt_hash,
    read_dataset,
    shorten,
)

from ._checks import (
    _DEFAULT_REFERENCE,
    _MISSING,
    FORMATS,
    _covered,
    _issue,
    _Out,
    detect_format,
    parse_path,
    resolve,
    template_variables,
)
from ._records import _EPS, REFERENCE_CANDIDATES, DatasetFormat, DatasetIssue, GoldVerdict, Report

# -- the pass -------------------------------------------------------------------------------


def validate_dataset(
    path: str | Path,
    *,
    response_schema: SchemaSource | None = None,
    grader: Any = None,
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
            A :class:`graders.GoldCheck` (around an OpenAI-type grader) grades it with the row
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
    grader_schema = getattr(grader, "schema", None)  # a structured grader has one
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

    def __init__(self, src: Path, *, schema: Schema | None, grader: Any, reference: str | None,
                 format: str, templates: list[tuple[str, tuple[str | int, ...]]], max_issues: int) -> None:
        self.src = src
        self.schema = schema
        # A grader of (sample, item) pairs brings its own gold check; one that cannot run it says why.
        self._item_check: Callable[[Any, Mapping[str, Any]], GoldVerdict] | None = getattr(grader, "gold_check", None)
        skipped: str | None = getattr(grader, "gold_skipped", None) if self._item_check is not None else None
        self.notes = [f"gold self-check not run: {skipped}"] if skipped else []
        self.grader: Any = None if skipped else grader
        self.max_score = float(getattr(grader, "max_score", 1.0))
        # A grader's optional compare(prediction, reference) stage grades an already-decoded object.
        self._compare: Callable[[Any, Any], Any] | None = getattr(grader, "compare", None)
        grader_schema = getattr(grader, "schema", None)
        self._grader_schema: Schema | None = grader_schema if isinstance(grader_schema, Schema) else None
        self.reference = reference
        self.reference_given = reference is not None
        self.format = format
        self.templates = templates
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


