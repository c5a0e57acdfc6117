"""``rftkit validate``: check every row of a dataset before training.

Exit codes: 0 clean; 1 problems found (errors, or warnings under ``--strict``);
2 could not run (a missing file, a schema or grader config that cannot be loaded).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from schemas import Schema, UserError
from schemas._cli import TEXT_LIMIT, command_error, load_schema_arg

from ._checks import FORMATS
from ._records import Report
from ._validate import validate_dataset


def render_text(report: Report, console: Console, *, limit: int = TEXT_LIMIT) -> None:
    """The human report: ``path:line: severity code pointer: message (input)``, then counts per code."""
    console.print(escape(report.summary()))
    console.print(f"checks: {', '.join(report.checks) or '-'}; reference: {escape(report.reference_field or '-')}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    for issue in report.issues[:limit]:
        colour = "red" if issue.severity == "error" else "yellow"
        value = "" if issue.input is None else f"  (input: {json.dumps(issue.input, ensure_ascii=False, default=repr)})"
        console.print(f"{escape(report.path)}:{issue.line}: [{colour}]{issue.severity}[/{colour}] {issue.code} "
                      f"{escape(issue.pointer or '/')}: {escape(issue.message)}{escape(value)}", soft_wrap=True)
    hidden = len(report.issues) - limit + report.dropped
    if hidden > 0:
        console.print(f"... {hidden:,} more issue(s); --format json lists them all")
    if report.counts:
        table = Table(title="issues per code")
        table.add_column("code")
        table.add_column("count", justify="right")
        for code, n in sorted(report.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(code, f"{n:,}")
        console.print(table)



def register(app: typer.Typer, load_grader: Callable[..., Any]) -> None:
    """Add ``validate`` to ``app``; ``load_grader`` builds the grader of the gold self-check from a config path.

    ``load_grader(path)`` gets ``gold_calls=True`` as well when ``--gold-calls`` is given.
    """
    err = Console(stderr=True)
    out = Console()

    @app.command()
    def validate(
        dataset: Annotated[Path, typer.Argument(help="JSONL file (or Parquet, verl layout) to check.")],
        schema: Annotated[str | None, typer.Option("--schema", "-s", help="Response schema: JSON Schema or response_format file, MODULE:Model or path/to/file.py:Model.")] = None,
        grader: Annotated[Path | None, typer.Option("--grader", "-g", help="Grader config (JSON): gold self-check and {{ item.x }} variables.")] = None,
        reference: Annotated[str | None, typer.Option("--reference", "-r", help="Column of the reference answer (dotted path).")] = None,
        output_format: Annotated[str, typer.Option("--format", "-f", help="Report as text or json.")] = "text",
        layout: Annotated[str, typer.Option("--layout", help="Dataset layout: auto, " + ", ".join(FORMATS) + ".")] = "auto",
        against: Annotated[Path | None, typer.Option("--against", help="Validation file: prompts in both are reported as leakage.")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Warnings (duplicates, leakage) fail the run too.")] = False,
        gold_calls: Annotated[bool, typer.Option("--gold-calls", help=(
            "Run the gold self-check through score_model, label_model and endpoint graders too: "
            "every row calls the model or server (time and money)."))] = False,
    ) -> None:
        """Check every row of a dataset before training; exit 0 clean, 1 problems, 2 could not run.

        Example: rftkit validate train.jsonl --grader grader.json --against valid.jsonl
        """
        as_json = output_format == "json"
        if output_format not in ("text", "json"):
            raise command_error(err, UserError(f"--format must be text or json, got {output_format!r}", code="bad_option"), False)
        try:
            if layout != "auto" and layout not in FORMATS:
                raise UserError(f"--layout must be auto or one of {', '.join(FORMATS)}, got {layout!r}", code="unknown_format")
            response_schema = load_schema_arg(schema) if schema is not None else None
            grader_obj, config = None, None
            if grader is not None:
                grader_obj = load_grader(grader, gold_calls=True) if gold_calls else load_grader(grader)
                config = json.loads(grader.read_text(encoding="utf-8-sig"))
            report = _run_with_progress(dataset, response_schema, grader_obj, config, reference, layout, against, err)
        except UserError as exc:
            raise command_error(err if not as_json else out, exc, as_json) from None
        if as_json:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, default=repr))
        else:
            render_text(report, out)
            verdict = "ok" if report.ok(strict) else "FAILED"
            out.print(f"{verdict}{' (strict: warnings count)' if strict and report.warnings else ''}")
        raise typer.Exit(report.exit_code(strict))


def _run_with_progress(dataset: Path, response_schema: Schema | None, grader: Any, config: Any, reference: str | None,
                       layout: str, against: Path | None, err: Console) -> Report:
    kwargs: dict[str, Any] = {"response_schema": response_schema, "grader": grader, "grader_config": config,
                              "reference": reference, "format": layout, "against": against}
    if not err.is_terminal:
        return validate_dataset(dataset, **kwargs)
    with Progress(TextColumn("validating"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("validate", total=None)
        return validate_dataset(dataset, progress=lambda done, total: bar.update(task, completed=done, total=total), **kwargs)
