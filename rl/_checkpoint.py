"""Checkpoint files: an atomic directory write, pruning to the last K, finding the latest, and RNG capture.

A checkpoint is one directory, ``<root>/step-00000012/``, and a model :func:`save_policy` wrote: full
fine-tuning's loads with ``AutoModelForCausalLM.from_pretrained(step_dir)``, LoRA's is a peft adapter
(``PeftModel.from_pretrained(base, step_dir)``), so any checkpoint can be evaluated. It holds::

    model.safetensors        full fine-tuning: the policy's weights (``safetensors.torch.save_model``: tied weights
                             are stored once), with config.json and generation_config.json beside it
    adapter_model.safetensors, adapter_config.json   LoRA: the adapters (peft's format), instead of the above
    tokenizer files          the tokenizer's ``save_pretrained``
    value_head.safetensors   the value head (``gae`` only)
    optimizer.pt             ``optimizer.state_dict()`` (read back with ``torch.load(weights_only=True)``)
    scaler.pt                float16 autocast only: the gradient scaler's state
    rng.safetensors          torch's CPU RNG, the trainer's minibatch generator, each CUDA device's RNG
                             (under torchrun: every rank's, ``rank1/torch_cpu``, ...)
    trainer_state.json       step, the prompt queue, python ``random`` states, the config, the LoRA settings

**Atomicity.** Everything is written into ``<root>/.tmp-step-00000012-<pid>/`` (same
filesystem, each file fsynced) and only then renamed to ``step-00000012`` with
:func:`os.replace`, a single atomic rename. A reader lists ``step-*`` directories
only, so it sees a complete checkpoint or none: a writer killed half-way leaves a
``.tmp-*`` directory that nothing reads and the next save deletes. Re-saving an
existing step renames the old directory aside first, then deletes it.
Afterwards all but the newest ``keep_last`` ``step-*`` directories are deleted.
:func:`replace_directory` is that write for any directory; :func:`write_model` uses it for
``rftkit train``'s final ``OUTPUT/model/`` (and with LoRA ``OUTPUT/adapter/``, :func:`write_final`), marked with the step of its weights
(:data:`MODEL_MARKER`, read back by :func:`model_step`), so a resumed run can tell a complete
final model from a missing or stale one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    """``step-00000012``: zero-padded, so names sort like steps."""
    return f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """The complete checkpoints under ``root``, oldest first (``.tmp-*`` directories are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """``path`` itself when it is a checkpoint, else the newest checkpoint under it (None when there is none)."""
    path = Path(path)
    if (path / "trainer_state.json").is_file():
        return path
    found = list_checkpoints(path)
    return found[-1] if found else None


def write_atomically(root: str | os.PathLike[str], step: int, write: Callable[[Path], None], *, keep_last: int) -> Path:
    """Call ``write(tmp_dir)``, then rename ``tmp_dir`` to ``root/step-<step>`` and prune to ``keep_last``; returns the final path."""
    root = Path(root)
    for stale in root.glob(".tmp-step-*"):  # left by a writer that was killed, at any step
        shutil.rmtree(stale, ignore_errors=True)
    final = replace_directory(root / checkpoint_name(step), write)
    for old_checkpoint in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old_checkpoint)
    return final


def replace_directory(final: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Fill ``final`` all at once: ``write(tmp)`` into ``.tmp-<name>-<pid>`` beside it, fsync, rename; returns ``final``.

    A reader sees the previous ``final`` (or none) until the rename, then the new one whole: a writer
    killed before it leaves a ``.tmp-<name>-*`` directory that the next call deletes. An existing
    ``final`` is renamed aside first and deleted after, never half-deleted in place. An ``OSError``
    that names no file (a full disk inside a library's writer) is given ``final``'s path, so the
    message says what could not be written.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".tmp-{final.name}-*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        try:
            write(tmp)
        except SafetensorError as exc:  # safetensors reports an I/O failure as its own error, with the OS's errno in the text
            found = re.search(r"os error (\d+)", str(exc))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(final)) from exc
        for file in sorted(tmp.rglob("*"), reverse=True):  # files before the directories holding them
            _fsync(file)
        _fsync(tmp)
        if final.exists():
            old = parent / f".tmp-{final.name}-old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        _fsync(parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.filename is None:
            exc.filename = str(final)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- RNG states


def rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """This process's tensor RNG states: torch's CPU RNG, the trainer's minibatch generator, each CUDA device's RNG."""
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return tensors


def save_rng(directory: Path, generator: torch.Generator, trainer_random: random.Random, *,
             other_ranks: Sequence[dict[str, torch.Tensor]] = ()) -> dict[str, Any]:
    """Write the tensor RNG states to ``rng.safetensors``; return the python ``random`` states for the JSON file.

    Under torchrun, ``other_ranks`` holds the :func:`rng_tensors` of ranks 1, 2, ..., stored as ``rank1/torch_cpu``, ...
    (rank 0's, this process's, keep the unprefixed names)."""
    tensors = rng_tensors(generator)
    for rank, states in enumerate(other_ranks, 1):
        tensors.update({f"rank{rank}/{name}": state for name, state in states.items()})
    save_file(tensors, str(directory / "rng.safetensors"))
    return {"python_random": _to_json(random.getstate()), "trainer_random": _to_json(trainer_random.getstate())}


def load_rng(directory: Path, state: dict[str, Any], generator: torch.Generator, trainer_random: random.Random, *,
             rank: int = 0) -> bool:
    """Restore what :func:`save_rng` wrote for ``rank`` (CUDA states only where CUDA is available now).

    The python ``random`` states are rank 0's on every rank. Returns False, the tensor RNGs untouched, when the
    checkpoint holds no states for ``rank`` (it was written by fewer processes)."""
    tensors = load_file(str(directory / "rng.safetensors"))
    prefix = f"rank{rank}/" if rank else ""
    found = prefix + "torch_cpu" in tensors
    if found:
        torch.set_rng_state(tensors[prefix + "torch_cpu"])
        generator.set_state(tensors[prefix + "generator"])
        cuda = [tensors[f"{prefix}cuda_{i}"] for i in range(len(tensors)) if f"{prefix}cuda_{i}" in tensors]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    random.setstate(_from_json(state["python_random"]))
    trainer_random.setstate(_from_json(state["trainer_random"]))
    return found


def _to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss_next = state  # random.getstate(): (int, tuple of 625 ints, float | None)
    return [version, list(internal), gauss_next]


def _from_json(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss_next = state
    return (version, tuple(internal), gauss_next)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


# --------------------------------------------------------------------------- the final model

MODEL_MARKER = "rftkit_model.json"
"""Written last into ``OUTPUT/model/``: the step whose weights it holds. A model folder without it was
not written (whole) by ``rftkit train``."""


def write_model(directory: str | os.PathLike[str], model: Any, tokenizer: Any, step: int) -> Path:
    """``save_pretrained`` the model and tokenizer into ``directory`` through :func:`replace_directory`, marked with ``step``.

    A kill during the write leaves the previous ``directory`` (or none) and a temp dir beside it,
    never a folder that looks loadable but is not.
    """
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MODEL_MARKER, {"step": step})

    return replace_directory(directory, write)


def model_step(directory: str | os.PathLike[str]) -> int | None:
    """The step of the model :func:`write_model` wrote in ``directory``; None when there is no complete one."""
    try:
        step = json.loads((Path(directory) / MODEL_MARKER).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


# --------------------------------------------------------------------------- the policy in a checkpoint, and the final model


def save_policy(model: Any, tokenizer: Any, directory: Path) -> None:
    """Write ``model`` into ``directory`` so that it loads as a model: peft's adapter files, or weights, config, tokenizer.

    Full fine-tuning writes the weights with ``save_model`` (exactly the tensors the trainer holds, tied ones once,
    read back by :func:`load_policy`), tagged ``format: pt`` as ``from_pretrained`` expects, and the config beside them.
    """
    from ._model import is_peft

    if is_peft(model):
        model.save_pretrained(directory)  # adapter_config.json, adapter_model.safetensors (the adapters alone)
    else:
        save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(directory)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def load_policy(model: Any, directory: Path, device: torch.device) -> None:
    """Load what :func:`save_policy` wrote back into ``model`` (the adapters alone for a peft model), exactly."""
    from ._model import is_peft

    if is_peft(model):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors"), device=str(device)))
        unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
        if unexpected:
            raise ValueError(f"{directory}: adapter weights this model has no place for: {unexpected[:3]}")
    else:
        load_model(model, str(directory / "model.safetensors"), device=str(device))


def write_final(output: str | os.PathLike[str], model: Any, tokenizer: Any, step: int) -> Path:
    """``rftkit train``'s end: ``output/model/`` (:func:`write_model`) and, with LoRA, ``output/adapter/`` first.

    A LoRA policy is written twice: its adapters (peft's format, loadable onto the base) into ``adapter/``,
    then merged into the base weights (``merge_and_unload``, in place: the trainer holding ``model`` is done)
    into ``model/``, which ``from_pretrained`` loads on its own. ``model/`` is written last, so its marker
    means both are whole.
    """
    from ._model import is_peft

    output = Path(output)
    if is_peft(model):
        def write_adapter(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / MODEL_MARKER, {"step": step})

        replace_directory(output / "adapter", write_adapter)
        model = model.merge_and_unload()
    return write_model(output / "model", model, tokenizer, step)
