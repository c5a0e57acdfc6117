"""``rftkit train CONFIG``: PPO from a TOML or YAML file, registered into the one ``rftkit`` app.

``graders`` owns the app but never imports ``rl``; it finds this module through the
``rftkit.commands`` entry-point group (``pyproject.toml``) and calls :func:`register`.

The config has five sections, and a sixth for LoRA (relative paths are read relative to the config file)::

    [model]    name_or_path = "gpt2"   (a local Hugging Face directory or a hub id), device = "auto", and any
               ModelConfig field (dtype, master_dtype, gradient_checkpointing, attn_implementation, ...)
    [lora]     any LoRAConfig field    (present: LoRA adapters through peft; absent: full fine-tuning)
    [dataset]  train = "train.jsonl"   (rows with "prompt" or "messages"; see row_problem), eval = "eval.jsonl" or eval_count = 8,
               skip_bad_rows = false
    [grader]   config = "grader.json"  (any grader config graders.from_config reads: structured or OpenAI's types)
    [ppo]      any PPOConfig field
    [train]    steps = 100, eval_every, checkpoint_every, console_every, output = "runs/resume",
               report_to = ["tensorboard", "wandb", "mlflow"] (any of them; rl/_logging.py),
               eval_report = true (at each checkpoint, ``rftkit eval`` of the eval rows into OUTPUT/eval/step-<n>/)

A mistake is a :class:`schemas.UserError` whose pointer names the key (``/ppo/learning_rate``);
the command prints it and exits 2.

Before the model is loaded, :func:`run_training` checks what it can without it: the device
(:func:`resolve_device`), the dataset rows as ``rftkit validate`` checks them (:func:`load_dataset`;
``--skip-bad-rows`` trains without the bad ones), and the output folder (:func:`prepare_output`:
a used folder needs ``--resume`` or ``--overwrite``, and it must be writable). A failed write
says which path and why (:func:`write_error`). ``OUTPUT/model`` is written atomically, and
``--resume`` writes it from the last checkpoint when a kill left it missing.

Several processes train together under torchrun (``rl/_distributed.py``)::

    torchrun --nproc_per_node 2 -m rl train config.toml

every rank loads the model and data and trains its shard of each batch; only rank 0 prints and
writes (``metrics.jsonl``, plots, checkpoints, ``model/``); with ``device = "auto"`` or ``"cuda"``
each rank takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from schemas import UserError, load_jsonl
from schemas._errors import DatasetIssueCode

from ._config import LoRAConfig, ModelConfig, PPOConfig
from ._distributed import is_main_process, leave_process_group, rank_device
from ._grading import EngineGrader
from ._logging import check_report_to

SECTIONS: dict[str, frozenset[str]] = {
    "model": frozenset({"name_or_path", "device"} | {f.name for f in fields(ModelConfig)}),
    "lora": frozenset(f.name for f in fields(LoRAConfig)),
    "dataset": frozenset({"train", "eval", "eval_count", "skip_bad_rows"}),
    "grader": frozenset({"config"}),
    "ppo": frozenset(f.name for f in fields(PPOConfig)),
    "train": frozenset({"steps", "eval_every", "checkpoint_every", "console_every", "output", "report_to", "eval_report"}),
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
    skip_bad_rows: bool = False
    """Train without the rows the dataset check finds errors in (each listed), instead of stopping."""
    model_config: ModelConfig = ModelConfig()
    """The ``[model]`` section's precision, checkpointing and loading knobs."""
    lora: LoRAConfig | None = None
    """The ``[lora]`` section; None: full fine-tuning."""
    report_to: tuple[str, ...] = ()
    """Trackers that get every step's metrics besides metrics.jsonl (``rl._logging.TRACKERS``), their libraries checked."""
    eval_report: bool = False
    """At each checkpoint, run ``rftkit eval``'s evaluation of the eval rows (greedy) into ``OUTPUT/eval/step-<n>/``."""


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
                raise UserError("reading TOML on Python 3.10 needs the tomli package", code="missing_extra",
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


def _section_config(cls: Any, section: Mapping[str, Any], name: str, skip: frozenset[str] = frozenset()) -> Any:
    """``cls(**section)`` (less the ``skip`` keys), its errors' pointers prefixed with ``/<name>``; TOML lists become tuples."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k not in skip}
    try:
        return cls(**kwargs)
    except UserError as exc:
        raise UserError(exc.message, code=exc.code, pointer=f"/{name}" + exc.pointer, hint=exc.hint) from None


def parse_config(data: Mapping[str, Any], base: Path, *, output: Path | None = None, steps: int | None = None,
                 skip_bad_rows: bool = False, grade_backend: str | None = None) -> TrainSpec:
    """Check a parsed config; relative paths resolve against ``base`` (the config file's folder).

    ``output``, ``steps`` and ``grade_backend`` override ``train.output``, ``train.steps`` and ``ppo.grade_backend``
    (``--output``, ``--steps``, ``--grade-backend``); ``skip_bad_rows`` (``--skip-bad-rows``) turns
    ``dataset.skip_bad_rows`` on.
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
    skip = dataset.get("skip_bad_rows", False)
    if not isinstance(skip, bool):
        raise _bad("/dataset/skip_bad_rows", f"skip_bad_rows must be true or false, got {skip!r}")
    eval_every = _int(train.get("eval_every"), "/train/eval_every", optional=True)
    if eval_every is not None and eval_path is None and not eval_count:
        raise _bad("/train/eval_every", "eval_every needs held-out rows to evaluate",
                   "give dataset.eval (a file) or dataset.eval_count, or drop eval_every")

    run_steps = steps if steps is not None else _int(train["steps"], "/train/steps")
    return TrainSpec(
        model=name_or_path, device=device,
        train_path=path(dataset["train"], "/dataset/train"), eval_path=eval_path, eval_count=eval_count,
        grader_path=path(data["grader"]["config"], "/grader/config"),
        ppo=_ppo_config({**data.get("ppo", {}), **({"grade_backend": grade_backend} if grade_backend is not None else {})}),
        steps=run_steps,
        eval_every=eval_every,
        # no checkpoint_every: one checkpoint at the last step, so --resume can always extend a finished run
        checkpoint_every=_int(train.get("checkpoint_every", run_steps), "/train/checkpoint_every"),
        console_every=_int(train.get("console_every", 10), "/train/console_every", optional=True),
        output=output if output is not None else path(train.get("output", "runs/train"), "/train/output", must_exist=False),
        skip_bad_rows=skip or skip_bad_rows,
        model_config=_section_config(ModelConfig, model, "model", skip=frozenset({"name_or_path", "device"})),
        lora=_section_config(LoRAConfig, data["lora"], "lora") if "lora" in data else None,
        report_to=tuple(check_report_to(train.get("report_to", []), "/train/report_to")),  # a missing library: before the model loads
        eval_report=_eval_report(train.get("eval_report", False), eval_path is not None or bool(eval_count)),
    )


def _eval_report(value: Any, has_eval_rows: bool) -> bool:
    if not isinstance(value, bool):
        raise _bad("/train/eval_report", f"eval_report must be true or false, got {value!r}")
    if value and not has_eval_rows:
        raise _bad("/train/eval_report", "eval_report needs held-out rows to evaluate", "give dataset.eval (a file) or dataset.eval_count")
    return value


def row_problem(row: Mapping[str, Any], *, needs_reference: bool) -> tuple[DatasetIssueCode, str, str, str] | None:
    """What keeps ``rftkit train`` from using a row, as (code, pointer, message, hint); None when it can.

    ``rftkit validate`` accepts more than the trainer renders (a chat under ``prompt``, content
    parts), so these checks run after it, on the rows it passed.
    """
    messages = row.get("messages")
    if "prompt" in row and messages is not None:
        return "prompt_and_messages", "/messages", "give 'prompt' or 'messages', not both", ""
    if messages is not None:
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                           for m in messages)
                or messages[-1]["role"] != "user"):
            return ("messages_not_text", "/messages", "'messages' must be a list of {role, content} strings ending in a user turn",
                    "rftkit train renders string contents with the chat template")
    elif not isinstance(row.get("prompt"), str):
        return ("prompt_not_text", "/prompt", "a row needs 'prompt' (a string) or 'messages' (a chat)",
                "put a chat under 'messages', not 'prompt'")
    if needs_reference and "reference" not in row:
        return ("missing_reference", "/reference", "a structured grader needs each row's 'reference'",
                "or use an OpenAI-type grader config that reads {{ item.<key> }} from the row")
    return None


def read_rows(path: Path, pointer: str, *, needs_reference: bool) -> list[dict[str, Any]]:
    """JSONL rows, each with ``prompt`` (a string) or ``messages`` (OpenAI's chat rows, ending in a user turn).

    A ``structured`` grader (``needs_reference``) also needs each row's ``reference``; OpenAI's
    grader types read ``{{ item.* }}`` from the row's other keys instead. The first bad row raises,
    naming the file and line (``rftkit train`` itself checks with :func:`load_dataset`, which lists them all).
    """
    rows = load_jsonl(path, pointer=pointer)
    for lineno, row in enumerate(rows, 1):
        problem = row_problem(row, needs_reference=needs_reference)
        if problem is not None:
            _, _, message, hint = problem
            raise UserError(f"{path}: row {lineno}: {message}", code="bad_jsonl_row", pointer=pointer, hint=hint)
    return rows


def load_dataset(path: Path, pointer: str, *, grader_path: Path, structured: bool, skip_bad_rows: bool,
                 console: Console) -> list[dict[str, Any]]:
    """The rows of a dataset file, checked first as ``rftkit validate --grader`` checks them, then for what the trainer renders.

    Runs before the model is loaded, so a bad row costs seconds, not a model load (or a run). With
    errors, the report is printed as ``rftkit validate`` prints it and :class:`UserError`
    (``bad_dataset``) is raised, unless ``skip_bad_rows``: then every row with an error is left
    out and listed by line. Warnings (duplicate prompts) are printed and train. A problem with the
    file as a whole (unreadable, no row) always stops.
    """
    from graders._cli import _gold_grader  # what `rftkit validate --grader` self-checks with
    from graders._config import load_config
    from graders.datasets import DatasetIssue, validate_dataset
    from graders.datasets._command import render_text
    from schemas._reader import read_dataset

    report = validate_dataset(path, grader=_gold_grader(grader_path), grader_config=dict(load_config(grader_path)),
                              reference="reference" if structured else None, max_issues=sys.maxsize)
    bad = {i.line for i in report.issues if i.severity == "error"}
    rows: list[tuple[int, dict[str, Any]]] = []
    for raw in read_dataset(path):
        if raw.value is None or raw.line in bad:
            continue
        problem = row_problem(raw.value, needs_reference=structured)
        if problem is None:
            rows.append((raw.line, raw.value))
            continue
        code, row_pointer, message, _ = problem  # one more error for the report, counted as the validator counts
        report.issues.append(DatasetIssue(code, row_pointer, message, None, raw.line, "error"))
        report.counts[code] = report.counts.get(code, 0) + 1
        report.errors += 1
        report.rows_with_errors += 1
        bad.add(raw.line)
    report.issues.sort(key=lambda i: i.line)
    if report.issues:
        render_text(report, console)
    else:
        console.print(escape(report.summary()), soft_wrap=True)
    if not report.errors:
        return [row for _, row in rows]
    if 0 in bad or not skip_bad_rows:
        what = "the file cannot be used" if 0 in bad else f"{report.rows_with_errors:,} row(s) with errors, listed above"
        raise UserError(f"{path}: {what}; nothing was trained", code="bad_dataset", pointer=pointer,
                        hint="fix them, or pass --skip-bad-rows (dataset.skip_bad_rows = true) to train on the other rows"
                        if 0 not in bad else "")
    console.print(f"skipped {len(bad):,} bad row(s) of {escape(str(path))}: lines {', '.join(map(str, sorted(bad)))}",
                  soft_wrap=True)
    if not rows:
        raise UserError(f"{path}: every row has an error; nothing to train on", code="bad_dataset", pointer=pointer)
    return [row for _, row in rows]


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


class ItemGrader(EngineGrader):
    """An OpenAI-type grader (``grade(sample, item)``) in the trainer's ``grade_batch(responses, references)`` shape
    (graded in this process unless ``ppo.grade_backend`` says otherwise)."""

    def __init__(self, grader: Any) -> None:
        super().__init__(grader)


_PLOTS = frozenset({"reward.png", "kl.png", "entropy.png"})


def foreign_entries(output: Path) -> list[str]:
    """What in ``output`` ``rftkit train`` did not write, as relative names (``notes.txt``, ``checkpoints/best/``).

    Its own files are ``metrics.jsonl``, ``checkpoints/step-*``, ``plots/{reward,kl,entropy}.png``, ``tensorboard/events.out.tfevents.*``,
    ``model/`` and ``adapter/`` when they hold :data:`MODEL_MARKER`, and the ``.tmp-*`` folders and files of a writer
    that was killed (``.tmp-model-*``, ``checkpoints/.tmp-step-*``, ``metrics.jsonl.tmp``, ``.tmp-probe-*``). A symbolic link is never its own (deleting through it could reach anywhere).
    """
    from ._checkpoint import _STEP_DIR, MODEL_MARKER

    def own(entry: Path, inside: str) -> bool:
        if entry.is_symlink():
            return False
        if inside == "checkpoints":
            return entry.is_dir() and (_STEP_DIR.match(entry.name) is not None or entry.name.startswith(".tmp-step-"))
        if inside == "plots":
            return entry.is_file() and entry.name in _PLOTS
        if inside == "tensorboard":  # report_to = ["tensorboard"]
            return entry.is_file() and entry.name.startswith("events.out.tfevents.")
        if inside == "eval":  # eval_report = true
            return entry.is_dir() and _STEP_DIR.match(entry.name) is not None
        return ((entry.is_file() and (entry.name in ("metrics.jsonl", "metrics.jsonl.tmp") or entry.name.startswith(".tmp-probe-")))
                or (entry.name.startswith((".tmp-model-", ".tmp-adapter-")) and entry.is_dir())
                or (entry.name in ("model", "adapter") and entry.is_dir() and (entry / MODEL_MARKER).is_file()))

    foreign = []
    for entry in sorted(output.iterdir()):
        if entry.name in ("checkpoints", "plots", "tensorboard", "eval") and entry.is_dir() and not entry.is_symlink():
            foreign += [f"{entry.name}/{e.name}{'/' if e.is_dir() else ''}" for e in sorted(entry.iterdir()) if not own(e, entry.name)]
        elif not own(entry, ""):
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def prepare_output(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Apply the output-folder rules before anything is loaded, then make sure the folder can be written.

    A folder that holds anything is another run's (mixing two runs loses the first one's log and
    lets ``keep_last`` delete the second one's checkpoints), so it is refused unless ``resume``
    (continue it) or ``overwrite`` (replace it: only ``rftkit train``'s own files, see
    :func:`foreign_entries`, are removed, and only when nothing else is there).
    """
    try:
        if output.exists() and not output.is_dir():
            raise UserError(f"output {output} is a file, not a folder", code="bad_output", pointer="/train/output",
                            hint="point --output (train.output) at a folder")
        entries = sorted(output.iterdir()) if output.is_dir() else []
        if entries and not resume:
            names = [e.name + ("/" if e.is_dir() else "") for e in entries]
            listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            if not overwrite:
                raise UserError(f"output folder {output} is not empty (it holds {listed}): pass --resume to continue that run, "
                                "--overwrite to replace it, or --output a new folder", code="output_not_empty", pointer="/train/output")
            foreign = foreign_entries(output)
            if foreign:
                raise UserError(f"--overwrite: {output} holds files rftkit train did not write ({', '.join(foreign)}); "
                                "nothing was removed", code="output_not_empty", pointer="/train/output",
                                hint="move them out, or --output a new folder")
            for entry in entries:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        output.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=output)  # a read-only folder fails here, not after the model loads
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_error(exc, output) from None


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free space, lower ppo.keep_last, or --output onto another disk",
    errno.EDQUOT: "the disk quota is used up: free space, or --output onto another disk",
    errno.EROFS: "the file system is read-only: --output a folder you can write",
    errno.EACCES: "no permission to write there: --output a folder you can write",
    errno.EPERM: "no permission to write there: --output a folder you can write",
    errno.ENOTDIR: "a part of the path is a file, not a folder: --output another folder",
    errno.EEXIST: "a part of the path is a file, not a folder: --output another folder",
}


def write_error(exc: OSError, output: Path) -> UserError:
    """A failed write as one line: which path (the output folder when the error names none) and why."""
    path = exc.filename if exc.filename is not None else output
    reason = exc.strerror or str(exc)
    return UserError(f"cannot write {path}: {reason}", code="write_failed", pointer="/train/output",
                     hint=_WRITE_HINTS.get(exc.errno or 0, ""))


def resolve_device(name: str) -> str:
    """The device a ``[model] device`` value names on this machine (``auto``: CUDA when available); checked before the model loads."""
    import torch

    name = rank_device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise _bad("/model/device", f"unknown device {name!r}", 'use "auto", "cpu", "cuda" or "cuda:<index>"') from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _bad("/model/device", f"device {name!r}, but this torch ({torch.__version__}) sees no CUDA GPU",
                       'set device = "auto" or "cpu", or install a CUDA build of torch on a machine with a GPU')
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise _bad("/model/device", f"device {name!r}, but this machine has {count} CUDA GPU(s)",
                       "use cuda:0" if count == 1 else f"use one of cuda:0 .. cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise _bad("/model/device", f"device {name!r}, but this torch sees no Apple GPU", 'set device = "auto" or "cpu"')
    return name


def out_of_memory(what: str) -> UserError:
    """An out-of-memory error as one line naming the knobs that lower the peak."""
    return UserError(f"{what} (out of memory)", code="out_of_memory", pointer="/model",
                     hint="lower ppo.micro_batch_size (completions per forward/backward), set model.gradient_checkpointing = true, "
                          "train LoRA adapters ([lora] r = 16), or lower ppo.max_new_tokens")


def run_training(spec: TrainSpec, *, resume: bool, console: Console, overwrite: bool = False) -> list[dict[str, float]]:
    """Check the output folder, device and data, then load the model and train; returns the metrics of the steps run.

    Running out of device memory (loading, or training) is one line naming the knobs that help (:func:`out_of_memory`).

    Everything that can be checked without the model is checked first. A run whose last
    checkpoint is the final step but whose ``OUTPUT/model`` is missing or from an earlier step
    (killed while it was written) gets it written from that checkpoint on ``--resume``.
    """
    import torch

    from graders import from_config

    from ._checkpoint import checkpoint_name, model_step, resolve_checkpoint, write_final
    from ._model import load_pretrained
    from ._trainer import PPOTrainer

    if resume and overwrite:
        raise UserError("--resume continues the run in the output folder and --overwrite replaces it: give one, not both",
                        code="bad_option", pointer="/train/output")
    main = is_main_process()
    resume_from = None
    if resume:
        resume_from = spec.output / "checkpoints"
        if resolve_checkpoint(resume_from) is None:
            raise UserError(f"--resume: no checkpoint under {str(resume_from)!r}", code="bad_resume", pointer="/train/output",
                            hint="run without --resume first, or point --output at the earlier run")
    device = resolve_device(spec.device)
    grader: Any = from_config(spec.grader_path)
    structured = grader.needs_reference
    if not structured:
        grader = ItemGrader(grader)
    quiet = Console(quiet=True)  # the report is printed by rank 0 alone
    train_rows = load_dataset(spec.train_path, "/dataset/train", grader_path=spec.grader_path, structured=structured,
                              skip_bad_rows=spec.skip_bad_rows, console=console if main else quiet)
    eval_rows = (load_dataset(spec.eval_path, "/dataset/eval", grader_path=spec.grader_path, structured=structured,
                              skip_bad_rows=spec.skip_bad_rows, console=console if main else quiet)
                 if spec.eval_path is not None else [])
    if spec.eval_count:
        if spec.eval_count >= len(train_rows):
            raise _bad("/dataset/eval_count", f"eval_count {spec.eval_count} leaves no training rows (the file has {len(train_rows)})")
        train_rows, eval_rows = train_rows[:-spec.eval_count], train_rows[-spec.eval_count:]
    if main:  # last before the model, so a refused run leaves the folder as it was; rank 0 alone writes
        prepare_output(spec.output, resume=resume, overwrite=overwrite)
    try:
        model, tokenizer, model_config = load_pretrained(spec.model, spec.model_config, lora=spec.lora is not None, device=device)
    except OSError as exc:
        raise _bad("/model/name_or_path", f"cannot load {spec.model!r}: {exc}") from None
    except (ImportError, ValueError) as exc:  # a bad attn_implementation, remote code refused or missing its package
        raise _bad("/model", f"cannot load {spec.model!r}: {exc}") from None
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as exc:  # torch says "not compiled with CUDA" with an AssertionError
        if isinstance(exc, torch.OutOfMemoryError):
            raise out_of_memory(f"the model does not fit on {device}") from None
        raise _bad("/model/device", f"cannot move the model to {device!r}: {exc}") from None
    train_rows = trainer_rows(train_rows, tokenizer, structured=structured)
    eval_rows = trainer_rows(eval_rows, tokenizer, structured=structured)
    try:
        trainer = PPOTrainer(model, tokenizer, grader, train_rows, eval_rows, spec.ppo, resume_from=resume_from,
                             model_config=model_config, lora=spec.lora)
    except torch.OutOfMemoryError:
        raise out_of_memory(f"the model does not fit on {device} for training") from None
    if model_config.gradient_checkpointing and trainer.shared_prefix:
        console.print("gradient checkpointing: the update runs whole sequences (sampling and the reference keep the "
                      "shared-prompt cache)", soft_wrap=True)
    start = trainer.step_count
    model_dir = spec.output / "model"
    try:
        if start >= spec.steps:
            if trainer.ranks.is_main and model_step(model_dir) != start:
                write_final(spec.output, trainer.model, tokenizer, start)
                console.print(f"training had reached step {start}, but {escape(str(model_dir))} was missing or incomplete "
                              f"(killed while it was written): wrote it from checkpoint {checkpoint_name(start)}", soft_wrap=True)
            else:
                console.print(f"already at step {start} of {spec.steps}: nothing to do")
            return []
        console.print(f"training {spec.model} for steps {start + 1}..{spec.steps} on {len(train_rows)} prompts "
                      f"({len(eval_rows)} held out); writing to {spec.output}", soft_wrap=True)
        on_checkpoint = None
        if spec.eval_report:
            from ._eval_model import checkpoint_evaluator

            on_checkpoint = checkpoint_evaluator(trainer, spec.grader_path, spec.output / "eval", console=console)
        history = trainer.train(spec.steps, log_dir=spec.output, eval_every=spec.eval_every,
                                checkpoint_every=spec.checkpoint_every, console_every=spec.console_every, report_to=spec.report_to,
                                on_checkpoint=on_checkpoint)
        if trainer.ranks.is_main:
            write_final(spec.output, trainer.model, tokenizer, trainer.step_count)
    except torch.OutOfMemoryError:
        raise out_of_memory("out of memory while training") from None
    except OSError as exc:
        if exc.filename is None and exc.errno not in _WRITE_HINTS:  # not a file the run writes: someone's bug, keep its traceback
            raise
        raise write_error(exc, spec.output) from None
    return history


def register(app: typer.Typer) -> None:
    """Add ``rftkit train`` to ``app`` (called through the ``rftkit.commands`` entry point)."""

    @app.command()
    def train(
        config: Annotated[Path, typer.Argument(help="TOML or YAML config with the sections model, dataset, grader, ppo and train (see docs/rl.md).")],
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint under the output folder.")] = False,
        steps: Annotated[int | None, typer.Option("--steps", min=1, help="Total steps to reach (overrides train.steps).")] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (overrides train.output).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the earlier run in the output folder (only rftkit's own files; refused if anything else is there).")] = False,
        skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Train without the dataset rows that have errors (each listed), instead of stopping.")] = False,
        grade_backend: Annotated[str | None, typer.Option("--grade-backend", help=(
            "Where rollouts are graded (overrides ppo.grade_backend): local (this process), processes (up to "
            "ppo.grade_workers worker processes, where they pay) or ray (Ray tasks; RAY_ADDRESS or a local Ray)."))] = None,
    ) -> None:
        """Train a causal LM with PPO on graded prompts; see docs/rl.md.

        Writes OUTPUT/metrics.jsonl, OUTPUT/checkpoints/step-*, and the trained model to OUTPUT/model.
        Example: rftkit train train.toml --steps 200 (a full config is in docs/rl.md).
        On several processes: torchrun --nproc_per_node 2 -m rl train train.toml
        """
        console = Console(quiet=not is_main_process())  # under torchrun, rank 0 speaks for all
        try:
            spec = parse_config(read_config_file(config), config.resolve().parent, output=output, steps=steps,
                                skip_bad_rows=skip_bad_rows, grade_backend=grade_backend)
            history = run_training(spec, resume=resume, overwrite=overwrite, console=console)
        except (UserError, FileNotFoundError) as exc:
            Console().print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # from every rank: it may be this rank's alone
            raise typer.Exit(2) from None
        finally:
            leave_process_group()
        if history:
            last = history[-1]
            summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("reward/mean", "kl/to_init", "eval/reward/mean") if k in last)
            console.print(f"done: {len(history)} step(s); last step {summary}; model saved to {spec.output / 'model'}")
