"""``rftkit train CONFIG``: PPO from a TOML or YAML file, registered into the one ``rftkit`` app.

``graders`` owns the app but never imports ``rl``; it finds this module through the
``rftkit.commands`` entry-point group (``pyproject.toml``) and calls :func:`register`.

The config has five sections (relative paths are read relative to the config file)::

    [model]    name_or_path = "gpt2"   (a local Hugging Face directory or a hub id), device = "auto"
    [dataset]  train = "train.jsonl"   (rows with "prompt" or "messages"; see read_rows), eval = "eval.jsonl" or eval_count = 8
    [grader]   config = "grader.json"  (any grader config graders.from_config reads: structured or OpenAI's types)
    [ppo]      any PPOConfig field
    [train]    steps = 100, eval_every, checkpoint_every, console_every, output = "runs/resume"

A mistake is a :class:`schemas.UserError` whose pointer names the key (``/ppo/learning_rate``);
the command prints it and exits 2.

Several processes train together under torchrun (``rl/_distributed.py``)::

    torchrun --nproc_per_node 2 -m rl train config.toml

every rank loads the model and data and trains its shard of each batch; only rank 0 prints and
writes (``metrics.jsonl``, plots, checkpoints, ``model/``); with ``device = "auto"`` or ``"cuda"``
each rank takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from schemas import UserError, load_jsonl

from ._config import PPOConfig
from ._distributed import is_main_process, leave_process_group, rank_device

SECTIONS: dict[str, frozenset[str]] = {
    "model": frozenset({"name_or_path", "device"}),
    "dataset": frozenset({"train", "eval", "eval_count"}),
    "grader": frozenset({"config"}),
    "ppo": frozenset(f.name for f in fields(PPOConfig)),
    "train": frozenset({"steps", "eval_every", "checkpoint_every", "console_every", "output"}),
}
"""Every section and the keys it accepts; anything else is rejected with its pointer."""

_REQUIRED = {"model": ("name_or_path",), "dataset": ("train",), "grader": ("config",), "train": ("steps",)}


@dataclass(frozen=True)
class TrainSpec:
    """A checked ``rftkit train`` config: paths resolved, PPOConfig built, schedule validated."""

    model: str
    """A local directory (resolved) or a hub id, passed to ``from_pretrained`` as is."""
    device: str
    train_path: Path
    eval_path: Path | None
    eval_count: int
    grader_path: Path
    ppo: PPOConfig
    steps: int
    eval_every: int | None
    checkpoint_every: int
    console_every: int | None
    output: Path


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a ``.toml`` or ``.yaml``/``.yml`` file into a dict (no validation)."""
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found", code="config_not_found")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10 only
            try:
                import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
            except ImportError:
                raise UserError("reading TOML on Python 3.10 needs the tomli package", code="missing_dependency",
                                hint="pip install tomli, or write the config as YAML") from None
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: not valid TOML ({exc})", code="bad_config_file") from None
    elif suffix in (".yaml", ".yml"):
        import yaml  # type: ignore[import-untyped, unused-ignore]  # PyYAML: installed with transformers

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({exc})", code="bad_config_file") from None
    else:
        raise UserError(f"{path}: unknown config format {suffix!r}", code="bad_config_file", hint="use a .toml, .yaml or .yml file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of sections", code="bad_config_file")
    return data


def _bad(pointer: str, message: str, hint: str = "") -> UserError:
    return UserError(message, code="bad_config", pointer=pointer, hint=hint)


def _int(value: Any, pointer: str, *, optional: bool = False, minimum: int = 1) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(pointer, f"{pointer.rsplit('/', 1)[-1]} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(value: Any, pointer: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(pointer, f"{pointer.rsplit('/', 1)[-1]} must be a non-empty string, got {value!r}")
    return value


def _ppo_config(section: Mapping[str, Any]) -> PPOConfig:
    """PPOConfig from the ``[ppo]`` section: types checked against each field's default, pointers prefixed with ``/ppo``."""
    kwargs: dict[str, Any] = {}
    for f in fields(PPOConfig):
        if f.name not in section:
            continue
        value, default, pointer = section[f.name], f.default, f"/ppo/{f.name}"
        if default is None:  # optional fields: `float | None` (kl_target), `int | None` (lr_decay_steps); YAML may say null
            if value is None:
                kwargs[f.name] = None
                continue
            default = 0 if str(f.type).startswith("int") else 0.0
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise _bad(pointer, f"{f.name} must be {'an' if type(default) is int else 'a'} {type(default).__name__}, got {section[f.name]!r}")
        kwargs[f.name] = value
    try:
        return PPOConfig(**kwargs)
    except UserError as exc:
        raise UserError(exc.message, code=exc.code, pointer="/ppo" + exc.pointer, hint=exc.hint) from None


def parse_config(data: Mapping[str, Any], base: Path, *, output: Path | None = None, steps: int | None = None) -> TrainSpec:
    """Check a parsed config; relative paths resolve against ``base`` (the config file's folder).

    ``output`` and ``steps`` override ``train.output`` and ``train.steps`` (``--output``, ``--steps``).
    """
    for name, section in data.items():
        if name not in SECTIONS:
            raise _bad(f"/{name}", f"unknown section {name!r}", "sections: " + ", ".join(SECTIONS))
        if not isinstance(section, Mapping):
            raise _bad(f"/{name}", f"section {name!r} must be a table of keys")
        for key in section:
            if key not in SECTIONS[name]:
                raise _bad(f"/{name}/{key}", f"unknown key {key!r} in [{name}]", "keys: " + ", ".join(sorted(SECTIONS[name])))
    for name, keys in _REQUIRED.items():
        for key in keys:
            if key in ("steps",) and steps is not None:
                continue
            if key not in data.get(name, {}):
                raise _bad(f"/{name}/{key}", f"missing {name}.{key}")
    model, dataset, train = data["model"], data["dataset"], data.get("train", {})

    def path(value: Any, pointer: str, *, must_exist: bool = True) -> Path:
        p = Path(_str(value, pointer)).expanduser()
        p = p if p.is_absolute() else base / p
        if must_exist and not p.exists():
            raise _bad(pointer, f"{str(p)!r} does not exist")
        return p

    name_or_path = _str(model["name_or_path"], "/model/name_or_path")
    local = Path(name_or_path).expanduser()
    local = local if local.is_absolute() else base / local
    if local.is_dir():
        name_or_path = str(local)
    elif name_or_path.startswith((".", "/", "~")):
        raise _bad("/model/name_or_path", f"model directory {str(local)!r} does not exist", "give a local directory or a hub id")
    device = _str(model.get("device", "auto"), "/model/device")

    if "eval" in dataset and "eval_count" in dataset:
        raise _bad("/dataset/eval_count", "give dataset.eval (a file) or dataset.eval_count (rows held out of train), not both")
    eval_path = path(dataset["eval"], "/dataset/eval") if "eval" in dataset else None
    eval_count = _int(dataset.get("eval_count", 0), "/dataset/eval_count", minimum=0)

    run_steps = steps if steps is not None else _int(train["steps"], "/train/steps")
    return TrainSpec(
        model=name_or_path, device=device,
        train_path=path(dataset["train"], "/dataset/train"), eval_path=eval_path, eval_count=eval_count,
        grader_path=path(data["grader"]["config"], "/grader/config"),
        ppo=_ppo_config(data.get("ppo", {})),
        steps=run_steps,
        eval_every=_int(train.get("eval_every"), "/train/eval_every", optional=True),
        # no checkpoint_every: one checkpoint at the last step, so --resume can always extend a finished run
        checkpoint_every=_int(train.get("checkpoint_every", run_steps), "/train/checkpoint_every"),
        console_every=_int(train.get("console_every", 10), "/train/console_every", optional=True),
        output=output if output is not None else path(train.get("output", "runs/train"), "/train/output", must_exist=False),
    )


def read_rows(path: Path, pointer: str, *, needs_reference: bool) -> list[dict[str, Any]]:
    """JSONL rows, each with ``prompt`` (a string) or ``messages`` (OpenAI's chat rows, ending in a user turn).

    A ``structured`` grader (``needs_reference``) also needs each row's ``reference``; OpenAI's
    grader types read ``{{ item.* }}`` from the row's other keys instead. Errors name the file and line.
    """
    rows = load_jsonl(path, pointer=pointer)
    for lineno, row in enumerate(rows, 1):
        where = f"{path}: row {lineno}"
        messages = row.get("messages")
        if "prompt" in row and messages is not None:
            raise UserError(f"{where}: give 'prompt' or 'messages', not both", code="bad_jsonl_row", pointer=pointer)
        if messages is not None:
            if (not isinstance(messages, list) or not messages
                    or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                               for m in messages)
                    or messages[-1]["role"] != "user"):
                raise UserError(f"{where}: 'messages' must be a list of {{role, content}} strings ending in a user turn",
                                code="bad_jsonl_row", pointer=pointer)
        elif not isinstance(row.get("prompt"), str):
            raise UserError(f"{where}: a row needs 'prompt' (a string) or 'messages' (a chat)", code="bad_jsonl_row", pointer=pointer)
        if needs_reference and "reference" not in row:
            raise UserError(f"{where}: a structured grader needs each row's 'reference'", code="bad_jsonl_row", pointer=pointer,
                            hint="or use an OpenAI-type grader config that reads {{ item.<key> }} from the row")
    return rows


def trainer_rows(rows: list[dict[str, Any]], tokenizer: Any, *, structured: bool) -> list[dict[str, Any]]:
    """The trainer's ``{"prompt", "reference"}`` rows: chats rendered with the model's chat template.

    The reference is the row's ``reference`` for a structured grader, and for OpenAI's types the
    item: every key of the row but ``prompt`` and ``messages``, as OpenAI's RFT datasets pass it.
    """
    adds_bos = tokenizer.bos_token is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    out = []
    for row in rows:
        prompt = row.get("prompt")
        if prompt is None:
            if not getattr(tokenizer, "chat_template", None):
                raise UserError("'messages' rows need a tokenizer with a chat template", code="bad_tokenizer",
                                pointer="/model/name_or_path", hint="use a chat model, or give rows a 'prompt' string")
            prompt = tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
            if adds_bos and prompt.startswith(tokenizer.bos_token):
                prompt = prompt[len(tokenizer.bos_token):]  # the rollout's tokenizer call adds BOS again
        item = {k: v for k, v in row.items() if k not in ("prompt", "messages")}
        out.append({"prompt": prompt, "reference": row["reference"] if structured else item})
    return out


class ItemGrader:
    """An OpenAI-type grader (``grade(sample, item)``) in the trainer's ``grade_batch(responses, references)`` shape."""

    def __init__(self, grader: Any) -> None:
        self.grader = grader

    def grade_batch(self, responses: list[str], references: list[Any]) -> Any:
        from graders import grade_batch

        return grade_batch(self.grader, responses, references)


def run_training(spec: TrainSpec, *, resume: bool, console: Console) -> list[dict[str, float]]:
    """Load the model, data and grader named by ``spec`` and train; returns the metrics of the steps run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from graders import StructuredGrader, from_config

    from ._trainer import PPOTrainer

    grader: Any = from_config(spec.grader_path)
    structured = isinstance(grader, StructuredGrader)
    if not structured:
        grader = ItemGrader(grader)
    train_rows = read_rows(spec.train_path, "/dataset/train", needs_reference=structured)
    eval_rows = read_rows(spec.eval_path, "/dataset/eval", needs_reference=structured) if spec.eval_path is not None else []
    if spec.eval_count:
        if spec.eval_count >= len(train_rows):
            raise _bad("/dataset/eval_count", f"eval_count {spec.eval_count} leaves no training rows (the file has {len(train_rows)})")
        train_rows, eval_rows = train_rows[:-spec.eval_count], train_rows[-spec.eval_count:]
    resume_from = None
    if resume:
        resume_from = spec.output / "checkpoints"
        from ._checkpoint import resolve_checkpoint

        if resolve_checkpoint(resume_from) is None:
            raise UserError(f"--resume: no checkpoint under {str(resume_from)!r}", code="bad_resume", pointer="/train/output",
                            hint="run without --resume first, or point --output at the earlier run")
    device = rank_device(spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.model)
        model: Any = AutoModelForCausalLM.from_pretrained(spec.model)
        model = model.to(device)
    except OSError as exc:
        raise _bad("/model/name_or_path", f"cannot load {spec.model!r}: {exc}") from None
    train_rows = trainer_rows(train_rows, tokenizer, structured=structured)
    eval_rows = trainer_rows(eval_rows, tokenizer, structured=structured)
    trainer = PPOTrainer(model, tokenizer, grader, train_rows, eval_rows, spec.ppo, resume_from=resume_from)
    start = trainer.step_count
    if start >= spec.steps:
        console.print(f"already at step {start} of {spec.steps}: nothing to do")
        return []
    console.print(f"training {spec.model} for steps {start + 1}..{spec.steps} on {len(train_rows)} prompts "
                  f"({len(eval_rows)} held out); writing to {spec.output}")
    history = trainer.train(spec.steps, log_dir=spec.output, eval_every=spec.eval_every, checkpoint_every=spec.checkpoint_every,
                            console_every=spec.console_every)
    if trainer.ranks.is_main:
        model.save_pretrained(spec.output / "model")
        tokenizer.save_pretrained(spec.output / "model")
    return history


def register(app: typer.Typer) -> None:
    """Add ``rftkit train`` to ``app`` (called through the ``rftkit.commands`` entry point)."""

    @app.command()
    def train(
        config: Annotated[Path, typer.Argument(help="TOML or YAML config with the sections model, dataset, grader, ppo and train (see docs/rl.md).")],
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint under the output folder.")] = False,
        steps: Annotated[int | None, typer.Option("--steps", min=1, help="Total steps to reach (overrides train.steps).")] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (overrides train.output).")] = None,
    ) -> None:
        """Train a causal LM with PPO on graded prompts; see docs/rl.md.

        Writes OUTPUT/metrics.jsonl, OUTPUT/checkpoints/step-*, and the trained model to OUTPUT/model.
        Example: rftkit train train.toml --steps 200 (a full config is in docs/rl.md).
        On several processes: torchrun --nproc_per_node 2 -m rl train train.toml
        """
        console = Console(quiet=not is_main_process())  # under torchrun, rank 0 speaks for all
        try:
            spec = parse_config(read_config_file(config), config.resolve().parent, output=output, steps=steps)
            history = run_training(spec, resume=resume, console=console)
        except (UserError, FileNotFoundError) as exc:
            Console().print(f"[red]error:[/red] {escape(str(exc))}")  # from every rank: it may be this rank's alone
            raise typer.Exit(2) from None
        finally:
            leave_process_group()
        if history:
            last = history[-1]
            summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("reward/mean", "kl/to_init", "eval/reward/mean") if k in last)
            console.print(f"done: {len(history)} step(s); last step {summary}; model saved to {spec.output / 'model'}")
