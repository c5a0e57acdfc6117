"""The ``rftkit`` command line: ``rftkit grade`` and ``rftkit demo``.

Each subcommand's code lives in the package it belongs to; this module only
wires them together. ``validate`` comes from ``schemas`` (:func:`register_schema_commands`);
``train`` from ``rl`` through the ``rftkit.commands`` entry points (:func:`load_plugins`), so
graders never imports rl. (``serve`` joins as its issue lands.)
"""

from __future__ import annotations

import json
import statistics
import sys
import weakref
from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas import UserError, load_jsonl
from schemas._cli import register as register_schema_commands

from ._config import AnyGrader, from_config
from ._result import Grade
from ._structured import StructuredGrader

app = typer.Typer(
    name="rftkit",
    help="Reinforcement fine-tuning for structured outputs: grade, validate, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _structured_only(grader: AnyGrader, path: Path) -> StructuredGrader:
    """``rftkit grade`` reads (response, reference) rows: structured graders only, until it learns (sample, item) rows."""
    if not isinstance(grader, StructuredGrader):
        raise UserError(f"{path}: rftkit grade runs structured graders so far, not {grader.type!r}", code="unsupported_grader_type",
                        hint="run OpenAI grader types from Python with graders.run_grader(config, sample, item)")
    return grader


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def field_report(grades: list[Grade], title: str) -> Table:
    """A table of mean score per field, with mean precision/recall for list fields."""
    table = Table(title=title)
    for col in ("field", "mean score", "precision", "recall", "n"):
        table.add_column(col, justify="left" if col == "field" else "right")
    names: dict[str, None] = {}
    for g in grades:
        names.update(dict.fromkeys(g.sub_scores))
    for name in names:
        scores = [g.sub_scores.get(name, 0.0) for g in grades]
        ps = [p for g in grades if name in g.details and (p := g.details[name].precision) is not None]
        rs = [r for g in grades if name in g.details and (r := g.details[name].recall) is not None]
        table.add_row(escape(name), f"{statistics.fmean(scores):.3f}", f"{statistics.fmean(ps):.3f}" if ps else "-",
                      f"{statistics.fmean(rs):.3f}" if rs else "-", str(len(scores)))
    overall = [g.score for g in grades]
    table.add_row("[bold]overall[/bold]", f"[bold]{statistics.fmean(overall):.3f}[/bold]" if overall else "-", "", "", str(len(overall)))
    return table


@app.command()
def grade(
    input: Annotated[Path, typer.Argument(help="JSONL file: one row per response, with the response and its reference.")],
    grader: Annotated[Path, typer.Option("--grader", "-g", help="Grader config (JSON), e.g. examples/resume/grader.json.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write one JSON result per input row here.")] = None,
    response_key: Annotated[str, typer.Option(help="Column holding the model's response.")] = "output",
    reference_key: Annotated[str, typer.Option(help="Column holding the reference answer.")] = "reference",
    workers: Annotated[int, typer.Option(help="Worker processes (1 grades in this process).", min=1)] = 1,
) -> None:
    """Grade every row of a JSONL file and print the per-field report.

    Example: rftkit grade graders/data/resume_demo.jsonl --grader examples/resume/grader.json
    """
    try:
        g = _structured_only(from_config(grader), grader)
        rows = load_jsonl(input)
        missing = [i for i, r in enumerate(rows, 1) if response_key not in r or reference_key not in r]
        if missing:
            raise UserError(f"{len(missing)} row(s) lack {response_key!r} or {reference_key!r} (first: row {missing[0]})",
                            code="missing_column", hint="choose the columns with --response-key / --reference-key")
        grades = g.grade_batch([r[response_key] for r in rows], [r[reference_key] for r in rows],
                               workers=workers, progress=sys.stderr.isatty())
    except (UserError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if output is not None:
        with output.open("w", encoding="utf-8") as fh:
            for row, result in zip(rows, grades):
                fh.write(json.dumps({"id": row.get("id"), **result.to_dict()}, ensure_ascii=False) + "\n")
    console.print(field_report(grades, f"{g.name}: {len(grades)} responses"))
    flagged = sum(1 for x in grades if not x.ok)
    if flagged:
        console.print(f"{flagged} response(s) flagged (parse or schema errors); see --output for each reason.")


@app.command()
def demo() -> None:
    """Grade the bundled résumé-extraction examples and print the per-field report.

    Until the RL trainer lands this is rftkit's main job on its built-in default:
    ten model outputs (clean, fenced, wrong, truncated, prose) graded field by
    field against their references.
    """
    grading_demo(console)


def grading_demo(console: Console) -> None:
    """Print how the résumé grader scores the bundled examples: the seed example's per-field
    breakdown (with matched, missing and extra list items), then every example's reason."""
    data = resources.files("graders") / "data"
    g = _structured_only(from_config(json.loads((data / "resume_grader.json").read_text(encoding="utf-8"))), Path("resume_grader.json"))
    rows = [json.loads(line) for line in (data / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    grades = g.grade_batch([r["output"] for r in rows], [r["reference"] for r in rows])

    seed, seed_grade = rows[0], grades[0]
    console.rule("[bold]Seed example[/bold]")
    console.print("reference :", json.dumps(seed["reference"]))
    console.print("prediction:", seed["output"])
    table = Table(title=f"per-field breakdown (score {seed_grade.score:.4f}; P/R/F1 = precision, recall, F1)")
    table.add_column("field", no_wrap=True)
    table.add_column("comparator", no_wrap=True)
    for col in ("score", "P", "R", "F1"):
        table.add_column(col, justify="right", no_wrap=True)

    for name, d in seed_grade.details.items():
        table.add_row(escape(name), d.comparator, f"{d.score:.4f}", _fmt(d.precision), _fmt(d.recall), _fmt(d.f1))
    console.print(table)
    for name, d in seed_grade.details.items():
        if d.matched is None:
            continue
        pairs = ", ".join(f"{d.prediction[i]} = {d.reference[j]}" for i, j, _ in d.matched)
        console.print(escape(f"{name}: matched {pairs}; missing (costs recall) {json.dumps(d.missing)}; "
                             f"extra (costs precision) {json.dumps(d.extra)}"))

    console.rule("[bold]All bundled examples[/bold]")
    each = Table()
    for col in ("id", "score", "reason"):
        each.add_column(col)
    for row, result in zip(rows, grades):
        each.add_row(escape(row["id"]), f"{result.score:.3f}", escape(result.reason))
    console.print(each)
    console.print(field_report(grades, "mean per field"))


def _gold_grader(path: Path) -> StructuredGrader | None:
    """The grader ``rftkit validate --grader`` runs the gold self-check with.

    Structured graders grade a (response, reference) pair, so a reference can be graded as its
    own answer. OpenAI-type graders grade a (sample, item) pair; for them only the config's
    template variables are checked (the config itself is still loaded, so a bad one fails here).
    """
    grader = from_config(path)
    return grader if isinstance(grader, StructuredGrader) else None


register_schema_commands(app, _gold_grader)


PLUGIN_GROUP = "rftkit.commands"
"""Entry-point group of the commands other packages add (``rl`` adds ``train``); graders never imports them."""

_plugged: weakref.WeakSet[typer.Typer] = weakref.WeakSet()


def load_plugins(target: typer.Typer = app) -> None:
    """Add every ``rftkit.commands`` entry point to ``target`` as a command, once per app.

    The plugin itself (``rl``, which imports torch and transformers: about 2 s) is imported
    only when its command runs, so ``rftkit grade`` and ``rftkit validate`` start as fast as
    before. A plugin that cannot be imported (``rl`` without torch) says which extra to
    install and exits 2.
    """
    if target in _plugged:
        return
    _plugged.add(target)
    seen: set[str] = set()
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        _register_lazy(target, ep)


def _register_lazy(target: typer.Typer, ep: EntryPoint) -> None:
    package = ep.value.split(".", 1)[0].split(":", 1)[0]

    @target.command(name=ep.name, add_help_option=False,
                    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                    help=f"{_PLUGIN_HELP.get(ep.name, 'A command of the ' + package + ' package.')} "
                         f"(`rftkit {ep.name} --help` lists its options.)")
    def proxy(ctx: typer.Context) -> None:
        try:
            register = ep.load()
        except ImportError as exc:
            extra = _PLUGIN_EXTRA.get(ep.name, package)
            message = f"rftkit {ep.name} needs the {extra} extra: install rftkit[{extra}] (pip install 'rftkit[{extra}]'); {exc}"
            console.print(f"[red]error:[/red] {escape(message)}")
            raise typer.Exit(2) from None
        real = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        register(real)
        command = typer.main.get_command(real)
        command.main(args=list(ctx.args), prog_name=f"rftkit {ep.name}", standalone_mode=True)


_PLUGIN_HELP = {"train": "Reinforcement fine-tuning with PPO from a TOML or YAML config (needs the rl extra).",
                "serve": "Serve a grader over HTTP: OpenRLHF's /get_reward, OpenAI's graders run/validate, /grade (needs the serve extra)."}
_PLUGIN_EXTRA = {"train": "rl", "serve": "serve"}


def main() -> None:
    """Console entry point (``rftkit``)."""
    load_plugins(app)
    app()
