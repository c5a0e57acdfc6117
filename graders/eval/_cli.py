"""``rftkit eval`` and ``rftkit eval compare``, registered through the ``rftkit.commands`` entry point.

``rftkit eval DATASET --grader G.json (--model DIR_OR_ID | --base-url URL --model NAME)`` samples,
grades and reports (``graders/eval/_run.py``); ``rftkit eval compare RUN_A RUN_B`` compares two
runs (``graders/eval/_compare.py``). The local-model source lives in ``rl`` and is found through the
``rftkit.samplers`` entry point, so a ``--base-url`` run never imports torch.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from schemas import UserError

SAMPLER_GROUP = "rftkit.samplers"
"""Entry-point group of model sources; ``rl`` adds ``local`` (a Hugging Face model, sampled with ``generate``)."""


def local_sampler(model: str, **options: Any) -> Any:
    """The ``local`` sampler of the ``rftkit.samplers`` entry point (``rl``), built for ``model``."""
    for ep in entry_points(group=SAMPLER_GROUP):
        if ep.name == "local":
            try:
                factory = ep.load()
            except ImportError as exc:
                raise UserError(f"--model with a local model needs the rl extra: {exc}", code="missing_extra", pointer="/model",
                                hint="pip install 'rftkit[rl]', or sample a server with --base-url") from None
            return factory(model, **options)
    raise UserError("no local model source is installed", code="missing_extra", pointer="/model",
                    hint="pip install 'rftkit[rl]', or sample a server with --base-url")


def _sampling(definition: Any, temperature: float | None, top_p: float | None, max_tokens: int | None, seed: int | None,
              stop: list[str] | None, response_format: Path | None) -> Any:
    from ._spec import SamplingParams

    sp = definition.sampling
    fmt = json.loads(response_format.read_text(encoding="utf-8")) if response_format is not None else sp.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise UserError("response_format must be a JSON object", code="wrong_type", pointer="/response_format")
    return SamplingParams(
        temperature=temperature if temperature is not None else float(sp.get("temperature", 0.0)),
        top_p=top_p if top_p is not None else float(sp.get("top_p", 1.0)),
        max_tokens=max_tokens if max_tokens is not None else int(sp.get("max_completion_tokens", sp.get("max_tokens", 256))),
        seed=seed if seed is not None else sp.get("seed"),
        stop=tuple(stop or ()), response_format=fmt)


def _run_command(app: typer.Typer) -> None:
    @app.command(name="eval")
    def run(
        grader: Annotated[Path, typer.Option("--grader", "-g", help=(
            "A grader config, or an OpenAI eval definition (testing_criteria; with a run's data_source: input_messages, "
            "sampling_params, model)."))],
        dataset: Annotated[Path | None, typer.Argument(help=(
            "JSONL rows: 'messages' chats, 'prompt' strings, or OpenAI eval items ({\"item\": ...}); optional when the eval "
            "definition's data_source has a file_content source."))] = None,
        model: Annotated[str | None, typer.Option(help="A local Hugging Face model directory or hub id; with --base-url, the served model's name.")] = None,
        base_url: Annotated[str | None, typer.Option(help="An OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")] = None,
        adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter directory to load onto --model (local models).")] = None,
        api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", show_envvar=True, help="Bearer token for --base-url.")] = None,
        api: Annotated[str, typer.Option(help="auto (chats to /chat/completions, prompt strings to /completions), chat or completions.")] = "auto",
        output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: samples.jsonl, summary.json, report.html, run.json.")] = Path("runs/eval"),
        samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Samples per row (pass@k for graders with a pass_threshold).")] = 1,
        temperature: Annotated[float | None, typer.Option(min=0.0, help="0 is greedy [default: 0, or the eval definition's]")] = None,
        top_p: Annotated[float | None, typer.Option(help="Nucleus sampling [default: 1]")] = None,
        max_tokens: Annotated[int | None, typer.Option(min=1, help="Most tokens per sample [default: 256]")] = None,
        seed: Annotated[int | None, typer.Option(help="Sample k of a row uses seed + k.")] = None,
        stop: Annotated[list[str] | None, typer.Option(help="A stop sequence (repeatable).")] = None,
        response_format: Annotated[Path | None, typer.Option(help="OpenAI response_format JSON, sent to servers that take it.")] = None,
        concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight (--base-url).")] = 8,
        rate_limit: Annotated[float | None, typer.Option(help="Most requests per second (--base-url).")] = None,
        timeout: Annotated[float, typer.Option(help="Seconds per request attempt (--base-url).")] = 120.0,
        max_retries: Annotated[int, typer.Option(min=0, help="Retries of a timed-out, 408, 429 or 5xx request.")] = 5,
        batch_size: Annotated[int, typer.Option(min=1, help="Prompts per generate call (local models).")] = 16,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda (local models).")] = "auto",
        limit: Annotated[int | None, typer.Option(min=1, help="Only the first N rows.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh in --output instead of resuming the run there.")] = False,
    ) -> None:
        """Sample a model on a dataset, grade every sample, write samples.jsonl, summary.json and report.html; resume a killed run.

        Also: `rftkit eval compare RUN_A RUN_B` (differences with 95% intervals; exit 1 when B is worse than A by more than --margin).
        Exit 0 when every sample was graded, 1 when some requests still failed (run again to retry them), 2 on a usage error.
        Example: rftkit eval heldout.jsonl -g grader.json --base-url http://127.0.0.1:8000/v1 --model my-model -o runs/base
        """
        from ._report import summary_tables, write_report
        from ._run import SAMPLES, progress_bar, read_samples, run_eval
        from ._sampling import ServerSampler
        from ._spec import read_definition, read_rows, row_digest

        console = Console()
        try:
            definition = read_definition(grader)
            model_name = model if model is not None else definition.model
            if model_name is None:
                raise UserError("name the model: --model DIR_OR_ID (local), or --base-url URL --model NAME", code="missing_model",
                                pointer="/model")
            params = _sampling(definition, temperature, top_p, max_tokens, seed, stop, response_format)
            rows = read_rows(dataset, definition, limit=limit)
            settings: dict[str, Any] = {"rows": row_digest(rows), "samples_per_row": samples,  # the rows' content, not their path
                                        "sampling": params.to_dict(), "graders": {g.name: dict(g.config) for g in definition.graders}}
            sampler: Any
            if base_url is not None:
                if adapter is not None:
                    raise UserError("--adapter loads a LoRA adapter onto a local model; a server serves its own", code="bad_option",
                                    pointer="/adapter")
                sampler = ServerSampler(base_url, model_name, api_key=api_key, api=api, concurrency=concurrency,  # type: ignore[arg-type]  # checked in ServerSampler
                                        timeout=timeout, max_retries=max_retries, rate_limit=rate_limit)
                settings["source"] = {"served_model": model_name, "api": api}  # not the URL: a restarted server may move
            else:
                path = Path(model_name)
                settings["source"] = {"model": str(path.resolve()) if path.exists() else model_name,
                                      "adapter": str(adapter.resolve()) if adapter is not None else None}
                with console.status(f"loading {escape(model_name)}"):
                    sampler = local_sampler(model_name, adapter=adapter, device=device, batch_size=batch_size)
            with progress_bar("sampling and grading") as bar:
                summary = run_eval(rows, definition.graders, sampler, params, output, samples_per_row=samples, settings=settings,
                                   overwrite=overwrite, on_progress=bar)
            records = read_samples(output / SAMPLES)
            write_report(output / "report.html", summary, records, title=f"rftkit eval: {model_name} on {dataset.name if dataset else 'the inline items'}")
        except (UserError, FileNotFoundError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        for table in summary_tables(summary):
            console.print(table)
        console.print(f"wrote {escape(str(output))}/: samples.jsonl, summary.json, report.html", soft_wrap=True)
        if summary["missing_samples"]:
            console.print(f"[red]{summary['missing_samples']} sample(s) failed[/red] (each error is in samples.jsonl); "
                          "run the same command again to retry them", soft_wrap=True)
            raise typer.Exit(1)


def _compare_command(app: typer.Typer) -> None:
    @app.command()
    def compare(
        run_a: Annotated[Path, typer.Argument(help="The baseline run folder (an `rftkit eval --output`).")],
        run_b: Annotated[Path, typer.Argument(help="The candidate run folder.")],
        margin: Annotated[float, typer.Option(min=0.0, help="B passes unless it is worse than A by more than this (95% lower bound).")] = 0.0,
        seed: Annotated[int, typer.Option(help="Seeds the bootstrap.")] = 0,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the comparison as JSON here.")] = None,
    ) -> None:
        """Per grader and per field: B - A over the shared rows with a paired-bootstrap 95% interval, and the rows that changed most.

        Exit 0 when B is not worse than A by more than --margin on any grader's reward, 1 when it is, 2 on a usage error.
        """
        from rich.table import Table

        from ._compare import compare_runs, gate

        console = Console()
        try:
            result = compare_runs(run_a, run_b, seed=seed)
        except (UserError, FileNotFoundError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        for name, g in result["graders"].items():
            table = Table(title=f"{name}: B - A over {g['overall']['rows']} shared rows (95% paired bootstrap)")
            for col in ("score", "A", "B", "B - A", "95% interval"):
                table.add_column(col, justify="left" if col == "score" else "right")
            for label, d in [("reward", g["overall"]), *g["fields"].items()]:
                style = "green" if d["ci95"][0] > 0 else "red" if d["ci95"][1] < 0 else ""
                diff = f"{d['diff']:+.4f}"
                table.add_row(escape(label), f"{d['mean_a']:.4f}", f"{d['mean_b']:.4f}", f"[{style}]{diff}[/{style}]" if style else diff,
                              f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
            console.print(table)
            for change in g["most_changed"]:
                console.print(f"  {change['diff']:+.3f}  {escape(json.dumps(change['item'], ensure_ascii=False)[:150])}", soft_wrap=True)
        if output is not None:
            output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        worse = gate(result, margin)
        if worse:
            console.print(f"[red]B is worse than A by more than {margin:g}[/red] on: {escape(', '.join(worse))}")
            raise typer.Exit(1)
        console.print(f"B is not worse than A by more than {margin:g} (95% lower bound) on any grader")


def register(app: typer.Typer) -> None:
    """Add ``rftkit eval`` (and its ``compare`` form) to ``app``, through the ``rftkit.commands`` entry point."""

    @app.command(name="eval", add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                 help="Sample a model on a dataset and grade it (`rftkit eval --help`), or compare two runs (`rftkit eval compare --help`).")
    def dispatch(ctx: typer.Context) -> None:
        args = list(ctx.args)
        sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        if args[:1] == ["compare"]:
            _compare_command(sub)
            args, prog = args[1:], "rftkit eval compare"
        else:
            _run_command(sub)
            prog = "rftkit eval"
        typer.main.get_command(sub).main(args=args, prog_name=prog, standalone_mode=True)

