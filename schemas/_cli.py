"""``rftkit validate`` and ``rftkit schema export|check``: the schemas package's commands.

They live here, next to the code they run, and join the one ``rftkit`` app via
:func:`register`. ``schemas`` never imports ``graders``, so the app's owner passes
in how to turn ``--grader G.json`` into a grader (``graders.from_config``).

Exit codes: 0 clean; 1 problems found (errors, or warnings under ``--strict``; an
invalid schema for ``schema check``); 2 could not run (a missing file, a schema or
grader config that cannot be loaded).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from ._dataset import FORMATS, Report, validate_dataset
from ._errors import SchemaError, UserError
from ._loading import Schema, load_schema

TEXT_LIMIT = 200
"""Issues printed by the text report; ``--format json`` has them all."""

_GAVE_UP_CODES = frozenset({"schema_not_found"})


_OWN_PACKAGES = ("schemas", "graders", "rl")
"""rftkit's import packages: a user's module of the same name is shadowed by them (or shadows them)."""


def load_model(spec: str) -> type:
    """Return the pydantic model class that ``MODULE:Model`` or ``path/to/file.py:Model`` names.

    ``MODULE`` is imported (the current directory is importable). A file path is
    loaded under a private module name, so a user's own ``schemas.py`` (the name of
    rftkit's package) neither shadows ours nor is shadowed by it; its directory is
    importable (at the end of ``sys.path``) for the file's own imports.
    """
    source, _, attr = spec.rpartition(":")  # rpartition: a Windows path has a colon of its own
    if not source or not attr:
        raise UserError(f"expected MODULE:Model or path/to/file.py:Model, got {spec!r}", code="bad_model_spec",
                        hint="e.g. myproject.models:Profile or ./models.py:Profile")
    module = _import_file(source) if _is_file_spec(source) else _import_module(source, attr)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and hasattr(obj, "model_json_schema")):
        raise UserError(f"{spec} is not a pydantic model class", code="model_not_found",
                        hint="name a class that derives from pydantic.BaseModel")
    return obj


def _is_file_spec(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source or Path(source).is_file()


def _import_module(module_name: str, attr: str) -> ModuleType:
    top = module_name.split(".", 1)[0]
    if top in _OWN_PACKAGES:
        local = next((p for p in (Path(f"{top}.py"), Path(top)) if p.exists()), None)
        where = f"; the {local} here is not imported under that name" if local is not None else ""
        raise UserError(f"{module_name!r} is rftkit's own package, not a module of yours{where}",
                        code="model_not_found", hint=f"name the file instead: --schema ./{top}.py:{attr}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r}: {exc}", code="model_not_found",
                        hint="a module of the current directory or an installed package; or give the file: path/to/file.py:Model") from None


def _import_file(source: str) -> ModuleType:
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"model file not found: {source}", code="model_not_found", hint="path/to/file.py:Model")
    # One private name per file, so loading the same file twice gives the same classes.
    name = "_rftkit_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {source} as Python", code="model_not_found", hint="path/to/file.py:Model")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[name] = module  # pydantic resolves the module's annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed while being imported: say which and why
        del sys.modules[name]
        raise UserError(f"importing {source} failed: {type(exc).__name__}: {exc}", code="model_not_found") from None
    return module


def load_schema_arg(spec: str) -> Schema:
    """A ``--schema`` value: a JSON Schema / response_format file, ``MODULE:Model`` or ``path/to/file.py:Model``."""
    if ":" in spec and not Path(spec).exists():
        return load_schema(load_model(spec))
    return load_schema(Path(spec))


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


def _fail(console: Console, exc: UserError, as_json: bool) -> typer.Exit:
    if as_json:
        typer.echo(json.dumps({"error": {"code": exc.code, "pointer": exc.pointer, "message": exc.message, "hint": exc.hint}}))
    else:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(2)


def register(app: typer.Typer, load_grader: Callable[..., Any]) -> None:
    """Add ``validate`` and ``schema export|check`` to ``app``; ``load_grader`` builds a grader from a config path.

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
            raise _fail(err, UserError(f"--format must be text or json, got {output_format!r}", code="bad_option"), False)
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
            raise _fail(err if not as_json else out, exc, as_json) from None
        if as_json:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, default=repr))
        else:
            render_text(report, out)
            verdict = "ok" if report.ok(strict) else "FAILED"
            out.print(f"{verdict}{' (strict: warnings count)' if strict and report.warnings else ''}")
        raise typer.Exit(report.exit_code(strict))

    schema_app = typer.Typer(help="Export a pydantic model's JSON Schema, or check a schema file.", no_args_is_help=True)
    app.add_typer(schema_app, name="schema")

    @schema_app.command("export")
    def export(model: Annotated[str, typer.Argument(help="MODULE:Model or path/to/file.py:Model, e.g. myproject.models:Profile.")]) -> None:
        """Print the JSON Schema of a pydantic model."""
        try:
            cls = load_model(model)
        except UserError as exc:
            raise _fail(err, exc, False) from None
        typer.echo(json.dumps(cls.model_json_schema(), indent=2, ensure_ascii=False))  # type: ignore[attr-defined]  # checked in load_model

    @schema_app.command("check")
    def check(schema: Annotated[str, typer.Argument(help="JSON Schema or response_format file, MODULE:Model or path/to/file.py:Model.")]) -> None:
        """Check a schema itself: the meta-schema and every $ref; exit 0 valid, 1 invalid, 2 not found."""
        try:
            loaded = load_schema_arg(schema)
        except SchemaError as exc:
            err.print(f"[red]invalid schema:[/red] {escape(str(exc))}")
            raise typer.Exit(2 if exc.code in _GAVE_UP_CODES else 1) from None
        except UserError as exc:
            raise _fail(err, exc, False) from None
        draft = loaded.json_schema.get("$schema", "draft 2020-12 (no $schema given)")
        out.print(f"ok: {escape(loaded.name or schema)} is a valid JSON Schema ({escape(str(draft))}); every $ref resolves")


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
