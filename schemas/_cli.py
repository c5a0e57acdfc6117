"""``rftkit schema export|check``: the schemas package's commands.

They live here, next to the code they run, and join the one ``rftkit`` app via
:func:`register` (``rftkit validate``, which reads grader configs, is in
:mod:`graders.datasets`).

Exit codes: 0 valid; 1 an invalid schema; 2 not found or not loadable.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

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


def command_error(console: Console, exc: UserError, as_json: bool) -> typer.Exit:
    """Print ``exc`` (as text, or as JSON under ``--format json``) and the exit to raise: 2, could not run."""
    if as_json:
        typer.echo(json.dumps({"error": {"code": exc.code, "pointer": exc.pointer, "message": exc.message, "hint": exc.hint}}))
    else:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add ``schema export|check`` to ``app``."""
    err = Console(stderr=True)
    out = Console()

    schema_app = typer.Typer(help="Export a pydantic model's JSON Schema, or check a schema file.", no_args_is_help=True)
    app.add_typer(schema_app, name="schema")

    @schema_app.command("export")
    def export(model: Annotated[str, typer.Argument(help="MODULE:Model or path/to/file.py:Model, e.g. myproject.models:Profile.")]) -> None:
        """Print the JSON Schema of a pydantic model."""
        try:
            cls = load_model(model)
        except UserError as exc:
            raise command_error(err, exc, False) from None
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
            raise command_error(err, exc, False) from None
        draft = loaded.json_schema.get("$schema", "draft 2020-12 (no $schema given)")
        out.print(f"ok: {escape(loaded.name or schema)} is a valid JSON Schema ({escape(str(draft))}); every $ref resolves")
