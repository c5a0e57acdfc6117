"""The local model source of ``rftkit eval``: a Hugging Face causal LM sampled with batched ``generate``.

Registered as the ``local`` entry of the ``rftkit.samplers`` entry-point group, which
``graders.eval`` looks up (graders never imports rl, and a ``--base-url`` run never imports torch).

Rows are rendered as ``rftkit train`` renders them (``rl._cli.trainer_rows``): a ``prompt`` string
as is, a chat through the tokenizer's chat template with the generation prompt. Sampling is
:func:`rl.generate_completions`, the trainer's own (left padding, KV cache, greedy at temperature
0), ``batch_size`` prompts per call. A stop sequence cuts the text after generation (``generate``
runs to EOS or ``max_tokens``). ``finish_reason`` is ``stop`` (EOS or a stop sequence) or ``length``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from graders.eval import Completion, Request, SamplingParams
from schemas import UserError

from ._rollout import generate_completions


class LocalSampler:
    """A model directory or hub id (``--model``), optionally with a LoRA adapter (``--adapter``), on ``device``."""

    model: Any
    tokenizer: Any
    batch_size: int
    """Prompts per ``generate`` call."""
    compute: Callable[[], AbstractContextManager[Any]]
    """The context each ``generate`` runs in (the trainer's autocast; none by default)."""

    def __init__(self, model: str, *, adapter: Path | None = None, device: str = "auto", batch_size: int = 16) -> None:
        from transformers.utils import logging as hf_logging

        from ._cli import resolve_device
        from ._config import ModelConfig
        from ._model import load_pretrained

        device = resolve_device(device)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers; hides "Loading weights"
        try:
            net, tokenizer = _load(model, adapter, device, load_pretrained, ModelConfig())
        finally:
            if bars:
                hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers
        self.__dict__.update(self.from_model(net.to(device), tokenizer, batch_size=batch_size).__dict__)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, batch_size: int = 16,
                   compute: Callable[[], AbstractContextManager[Any]] = nullcontext) -> LocalSampler:
        """A sampler over a model already in memory (the trainer's evaluation, tests); ``compute()`` wraps each ``generate``
        (the trainer's autocast)."""
        self = cls.__new__(cls)
        self.compute = compute
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # left padding is masked; only EOS ends a completion
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}", code="bad_option", pointer="/batch_size")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        return self

    def close(self) -> None:
        pass

    def render(self, request: Request) -> str:
        """The prompt text of a request: its string, or its chat through the chat template."""
        if request.prompt is not None:
            return request.prompt
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise UserError("chat rows need a tokenizer with a chat template", code="bad_tokenizer", pointer="/model",
                            hint="use a chat model, or give rows a 'prompt' string")
        text = str(tok.apply_chat_template(list(request.messages or []), add_generation_prompt=True, tokenize=False))
        if tok.bos_token is not None and text.startswith(tok.bos_token) and tok("x")["input_ids"][:1] == [tok.bos_token_id]:
            text = text[len(tok.bos_token):]  # the tokenizer call adds BOS again
        return text

    def sample(self, requests: Iterable[Request], params: SamplingParams) -> Iterator[tuple[Request, Completion]]:
        """``batch_size`` requests per ``generate`` call; greedy at temperature 0, else seeded sampling per batch."""
        it = iter(requests)
        while batch := list(islice(it, self.batch_size)):
            if params.seed is not None:
                torch.manual_seed(params.seed + batch[0].row * 1000 + batch[0].sample)
            start = time.perf_counter()
            with self.compute():
                roll = generate_completions(self.model, self.tokenizer, [self.render(r) for r in batch], samples_per_prompt=1,
                                            max_new_tokens=params.max_tokens,
                                            temperature=params.temperature if params.temperature > 0 else None, top_p=params.top_p)
            took = time.perf_counter() - start
            prompt_tokens = roll.attention_mask[:, :-roll.completion_mask.shape[1]].sum(dim=1).tolist()  # (B,)
            completion_tokens = roll.completion_mask.sum(dim=1).tolist()  # (B,)
            for i, request in enumerate(batch):
                text, finish = cut_at_stop(roll.texts[i], params.stop, "stop" if bool(roll.has_eos[i]) else "length")
                yield request, Completion(text, finish, int(prompt_tokens[i]), int(completion_tokens[i]), took)


def _load(model: str, adapter: Path | None, device: str, load_pretrained: Any, config: Any) -> tuple[Any, Any]:
    try:  # lora=True: the weights stay in the checkpoint's dtype (nothing is trained here)
        net, tokenizer, _ = load_pretrained(model, config, lora=True, device=device)
    except OSError as exc:
        raise UserError(f"cannot load {model!r}: {exc}", code="bad_model", pointer="/model",
                        hint="a directory with config.json and weights (an `rftkit train` OUTPUT/model or checkpoint), or a hub id") from None
    if adapter is not None:
        from peft import PeftModel

        try:
            with warnings.catch_warnings():  # peft reads transformers' deprecated alias (is_gradient_checkpointing): not the user's
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
                net = PeftModel.from_pretrained(net, str(adapter))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the adapter {str(adapter)!r}: {exc}", code="bad_adapter", pointer="/adapter") from None
    return net, tokenizer


def cut_at_stop(text: str, stop: Sequence[str], finish: str) -> tuple[str, str]:
    """``text`` up to its first stop sequence (finish ``stop``), or as it is.

    >>> cut_at_stop("a}\\nb", ["\\n"], "length")
    ('a}', 'stop')
    """
    cuts = [i for s in stop if (i := text.find(s)) >= 0]
    return (text[:min(cuts)], "stop") if cuts else (text, finish)


def checkpoint_evaluator(trainer: Any, grader_path: Path, output: Path, *, console: Any = None) -> Any:
    """``rftkit train``'s ``eval_report``: a callback that runs ``rftkit eval``'s evaluation of the trainer's eval rows.

    The same code as ``rftkit eval --model``: :func:`graders.eval.run_eval` over a :class:`LocalSampler` on the model being
    trained (greedy, the trainer's ``max_new_tokens`` and batch size, under its compute dtype), writing
    ``output/step-<n>/`` with ``samples.jsonl``, ``summary.json`` and ``report.html``.
    """
    from graders.eval import EvalRow, read_definition, read_samples, run_eval, write_report

    definition = read_definition(grader_path)
    rows = [EvalRow(i, i + 1, {"reference": r["reference"]} if definition.graders[0].needs_reference else r["reference"], prompt=r["prompt"])
            for i, r in enumerate(trainer.eval_rows)]
    params = SamplingParams(max_tokens=trainer.config.max_new_tokens)

    def evaluate(step: int) -> None:
        folder = output / f"step-{step}"
        sampler = LocalSampler.from_model(trainer.model, trainer.tokenizer, batch_size=trainer.config.batch_size,
                                          compute=trainer.policy.compute)
        summary = run_eval(rows, definition.graders, sampler, params, folder, settings={"step": step}, overwrite=True)
        write_report(folder / "report.html", summary, read_samples(folder / "samples.jsonl"), title=f"step {step}: eval rows")
        if console is not None:
            means = ", ".join(f"{name} {g['mean']:.4f}" for name, g in summary["graders"].items() if g["mean"] is not None)
            console.print(f"step {step}: eval report in {folder} ({means})", soft_wrap=True)

    return evaluate
