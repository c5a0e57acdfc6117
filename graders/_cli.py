"""The ``rftkit`` command line: ``rftkit grade`` here, the other commands wired in.

Each subcommand's code lives in the package it belongs to; this module only
wires them together. ``validate`` comes from :mod:`graders.datasets`, ``schema`` from ``schemas`` (:func:`register_schema_commands`);
``train`` and ``demo`` from ``rl``, and ``serve`` from ``graders.serve`` (it needs the
serve extra), through the ``rftkit.commands`` entry points (:func:`load_plugins`): each is
imported only when its command runs, and graders never imports rl.
"""

from __future__ import annotations

import json
import statistics
import sys
import weakref
from contextlib import nullcontext
from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from schemas import UserError, load_jsonl
from schemas._cli import register as register_schema_commands

from ._config import AnyGrader, from_config
from ._gold import GoldCheck
from .batch import JsonLines, Tally, each_chunk
from .datasets._command import register as register_validate
from .openai._common import SampleGrader
from .structured._grader import StructuredGrader

app = typer.Typer(
    name="rftkit",
    help="Reinforcement fine-tuning for structured outputs: grade, validate, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def field_report(tally: Tally, title: str) -> Table:
    """A table of mean score per field, with mean precision/recall for list fields (from :class:`graders.batch.Tally`)."""
    table = Table(title=title)
    for col in ("field", "mean score", "precision", "recall", "n"):
        table.add_column(col, justify="left" if col == "field" else "right")
    for name in tally.sub_scores:
        ps, rs = tally.precision.get(name), tally.recall.get(name)
        table.add_row(escape(name), f"{tally.mean(name):.3f}", f"{statistics.fmean(ps):.3f}" if ps else "-",
                      f"{statistics.fmean(rs):.3f}" if rs else "-", str(tally.rows))
    table.add_row("[bold]overall[/bold]", f"[bold]{tally.mean():.3f}[/bold]" if tally.rows else "-", "", "", str(tally.rows))
    return table


def error_report(tally: Tally) -> Table | None:
    """How many rows raised each error flag (None when no row is flagged)."""
    if not tally.flags:
        return None
    table = Table(title="flagged rows by error")
    table.add_column("error flag")
    table.add_column("rows", justify="right")
    for flag, n in sorted(tally.flags.items(), key=lambda kv: -kv[1]):
        table.add_row(flag, str(n))
    return table


def _pick_sample_key(rows: list[dict[str, Any]], sample_key: str | None) -> str:
    if sample_key is not None:
        return sample_key
    first = rows[0] if rows else {}
    return "sample" if "sample" in first else "output"


def _join_items(rows: list[dict[str, Any]], items_path: Path, join_key: str | None) -> list[Any]:
    """The item of each row from a separate dataset file: by line (same count), or by a shared key."""
    items = load_jsonl(items_path)
    if join_key is None:
        if len(items) != len(rows):
            raise UserError(f"{items_path} has {len(items)} items for {len(rows)} sample rows", code="length_mismatch",
                            hint="give one item per sample row, in the same order, or match them with --join-key")
        return list(items)
    index: dict[str, dict[str, Any]] = {}
    for n, item in enumerate(items, 1):
        if join_key not in item:
            raise UserError(f"{items_path} line {n} has no {join_key!r}", code="missing_column")
        index[json.dumps(item[join_key], sort_keys=True)] = item
    out: list[Any] = []
    for n, row in enumerate(rows, 1):
        key = json.dumps(row.get(join_key), sort_keys=True)
        if key not in index:
            raise UserError(f"sample row {n}: no item in {items_path} has {join_key} = {key}", code="unmatched_row")
        out.append(index[key])
    return out


@app.command()
def grade(
    input: Annotated[Path, typer.Argument(help="JSONL file of samples: one row per model output.")],
    grader: Annotated[Path, typer.Option("--grader", "-g", help="Grader config (JSON): structured or any OpenAI grader type.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help=(
        "Write one JSON result per input row here, in the shape of OpenAI's graders/run response "
        "(reward, sub_rewards, metadata with the error flags) plus id, reason and per-field details."))] = None,
    items: Annotated[Path | None, typer.Option("--items", help=(
        "Dataset file (JSONL) holding the items, when they are not in the sample rows; matched by line, or by --join-key."))] = None,
    join_key: Annotated[str | None, typer.Option(help="Column that matches a sample row to its item in --items.")] = None,
    sample_key: Annotated[str | None, typer.Option("--sample-key", "--response-key", help=(
        "Column holding the model's output (a string or an OpenAI-style sample dict); default: 'sample' if the rows have it, "
        "else 'output'."))] = None,
    item_key: Annotated[str, typer.Option(help=(
        "Column holding the item that templates read as {{ item.x }}; a row without it is its own item."))] = "item",
    reference_key: Annotated[str, typer.Option(help="Structured graders: the column (of the row or item) holding the reference.")
                             ] = "reference",
    workers: Annotated[int, typer.Option(help=(
        "Parallel workers: up to this many processes (or Ray CPUs), started only where they pay (a measured probe of the "
        "first rows decides); 1 grades in this process."), min=1)] = 1,
    backend: Annotated[str | None, typer.Option(help=(
        "local, processes (default when --workers > 1: forked with the rows in memory where that is safe, else a "
        "forkserver pool) or ray (Ray tasks; joins RAY_ADDRESS or starts a local Ray)."))] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join with --backend ray (default: RAY_ADDRESS, "
                                                    "else a local Ray with --workers CPUs).")] = None,
) -> None:
    """Grade every row of a JSONL file and print a summary: mean reward, the mean per field or sub-grader, error counts.

    Structured graders compare each row's output with its reference column.
    OpenAI grader types (string_check, text_similarity, multi, python, score_model,
    label_model, endpoint) grade each row's sample with its item: the row's item
    column, the row itself, or the matching row of --items. Nothing is dropped: a
    row that fails is a flagged row in --output. Exit 0 when every row was graded
    (flagged outputs included), 1 when grading raised on some rows, 2 when it could
    not run (a bad config, a missing file, or grading raised on every row).

    Example: rftkit grade graders/data/resume_demo.jsonl --grader examples/resume/grader.json -o grades.jsonl
    """
    try:
        g = from_config(grader)
        rows = load_jsonl(input)
        key = _pick_sample_key(rows, sample_key)
        lacking = [n for n, r in enumerate(rows, 1) if key not in r]
        if lacking:
            raise UserError(f"{len(lacking)} row(s) lack the sample column {key!r} (first: line {lacking[0]})",
                            code="missing_column", hint="choose the column with --sample-key")
        samples = [r[key] for r in rows]
        joined = _join_items(rows, items, join_key) if items is not None else [r.get(item_key, r) for r in rows]
        if g.needs_reference:
            lacking = [n for n, (r, it) in enumerate(zip(rows, joined), 1) if reference_key not in r and reference_key not in it]
            if lacking:
                raise UserError(f"{len(lacking)} row(s) have no {reference_key!r} column (first: line {lacking[0]})",
                                code="missing_column", hint="choose the column with --reference-key")
            joined = [r[reference_key] if reference_key in r else it[reference_key] for r, it in zip(rows, joined)]
        if backend not in (None, "local", "processes", "ray"):
            raise UserError(f"unknown backend {backend!r}", code="bad_option", hint="local, processes or ray")
        tally = _grade_to(output, g, rows, samples, joined, workers, backend, ray_address)
    except (UserError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(field_report(tally, f"{g.name} ({g.type}): {tally.rows} rows"))
    errors = error_report(tally)
    if errors is not None:
        console.print(errors)
        console.print("flagged rows score 0" + (" (see --output for each reason)" if output is None else f"; each reason is in {output}"))
    if tally.raised:
        console.print(f"[red]grading raised on {len(tally.raised)} row(s)[/red] (first: line {tally.raised[0] + 1}: "
                      f"{escape(tally.first_reason)}); they are flagged with other_error")
        raise typer.Exit(2 if len(tally.raised) == tally.rows else 1)


def _grade_to(output: Path | None, g: AnyGrader, rows: list[dict[str, Any]], samples: list[Any], items: list[Any],
              workers: int, backend: str | None, ray_address: str | None) -> Tally:
    """Grade every row on the batch engine, each row's output line made where it is graded, and write the lines
    to ``output`` in input order as their chunks arrive; the summary's tally of every row."""
    work = JsonLines([r.get("id") for r in rows], g.name, g.type, lines=output is not None)
    bar = Progress(transient=True, console=Console(stderr=True), disable=not sys.stderr.isatty())
    task: list[Any] = []

    def advance(n: int) -> None:  # the bar (a thread) starts with the first chunk: after any worker is forked
        if not task:
            bar.start()
            task.append(bar.add_task("grading", total=len(rows)))
        bar.advance(task[0], n)

    tally = Tally()
    with (output.open("wb") if output is not None else nullcontext()) as fh:
        try:
            for _, (lines, part) in each_chunk(g, samples, items, work, workers=workers, backend=backend,  # type: ignore[arg-type]  # checked by the caller
                                                ray_address=ray_address, on_progress=advance):
                if fh is not None:
                    fh.write(lines)
                tally.merge(part)
        finally:
            bar.stop()
    return tally


def grading_demo(console: Console) -> None:
    """Print how the résumé grader scores the bundled examples: the seed example's per-field
    breakdown (with matched, missing and extra list items), then every example's reason."""
    data = resources.files("graders") / "data"
    g = from_config(json.loads((data / "resume_grader.json").read_text(encoding="utf-8")))
    assert isinstance(g, StructuredGrader)  # the bundled config is structured
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
    console.print(field_report(Tally.of(grades), "mean per field"))


def _gold_grader(path: Path, *, gold_calls: bool = False) -> AnyGrader | GoldCheck:
    """The grader ``rftkit validate --grader`` runs the gold self-check with.

    A structured grader grades a (response, reference) pair, so a reference is graded
    as its own answer. An OpenAI-type grader grades a (sample, item) pair: wrapped in
    :class:`~graders._gold.GoldCheck`, it grades the reference as the sample with the
    row as the item (graders that call a model or a server only with ``--gold-calls``).
    """
    grader = from_config(path)
    if grader.needs_reference:
        return grader
    return GoldCheck(cast(SampleGrader, grader), call_models=gold_calls)  # a grader that reads its item is a SampleGrader


register_validate(app, _gold_grader)
register_schema_commands(app)


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
                "demo": "The built-in demo: how the résumé grader scores the seed example, then RL fine-tuning of a tiny "
                        "model built in code, with held-out reward before and after (needs the rl extra; about 2.5 min).",
                "eval": "Sample a model (a local directory, or an OpenAI-compatible server) on a dataset, grade it, report; "
                        "`rftkit eval compare RUN_A RUN_B` compares two runs.",
                "serve": "Serve a grader over HTTP: OpenRLHF's /get_reward, OpenAI's graders run/validate, /grade (needs the serve extra)."}
_PLUGIN_EXTRA = {"train": "rl", "demo": "rl", "serve": "serve"}


def main() -> None:
    """Console entry point (``rftkit``)."""
    load_plugins(app)
    app()
