"""``rftkit demo``: reinforcement fine-tuning end to end, offline, on a CPU in under three minutes.

Run it: ``rftkit demo [--output runs/demo] [--seed 0] [--threads 1] [--quick]`` (``--quick``: every
stage at a toy scale, in seconds). In execution order (:func:`run_demo`):

0. **how the reward is computed** -- ``graders._cli.grading_demo``: the seed example graded field by field;
1. **data** -- synthetic résumé rows from a seed (``rl/_demo_data.py``): 3000 warm-start rows, 32 PPO
   prompts and 128 held-out prompts, disjoint;
2. **tokenizer** -- :func:`build_tokenizer`: a byte-level BPE trained in code on the warm-start
   text. Words and the runs of punctuation between them are split apart before BPE, so
   ``Austin`` is the same token in the prompt and in the answer (copying is then copying a
   token), and each fixed piece of the answer's JSON (``", "city": "``) is one added token;
3. **model** -- :func:`build_model`: a GPT-2 with 4 layers of width 128 (0.9M parameters), random init;
4. **warm start** -- :func:`supervised_warmup`: 350 steps of next-token loss on the answers,
   about 4 passes over the warm-start rows. Stopped there on purpose: the model has learned the
   format and to copy values, and it has picked up the *legacy* label style of 70% of its
   training rows (``"city": "Austin, TX", "state": "TX"``), which the grader scores 0. Greedy
   decoding follows the majority, so the held-out reward starts near 0.5;
5. **RFT** -- :class:`rl.PPOTrainer` (critic-free ``grpo``, 8 samples per prompt) on the 32 training
   prompts for 40 steps (10 passes over them), rewarded by the résumé grader; the sampled
   completions that use the current style score higher, and PPO moves the policy towards them;
6. **results** -- greedy held-out reward before and after, overall and per field, the KL of the
   trained policy to the warm-started one (:func:`kl_to_reference`), and the files in ``--output``:
   ``summary.json``, ``metrics.jsonl``, ``plots/{reward,kl,entropy}.png``, ``model/`` (weights and
   tokenizer, ``from_pretrained``-ready) and ``data/{sft,train,heldout}.jsonl``.

Why a label-style mismatch rather than only an early stop: with 32 prompts, RL teaches a tiny
model nothing it cannot already sample (tried: from a warm start stopped before it could copy
the languages, PPO raised the training prompts' reward and left the held-out reward flat). It
does reliably move a choice the model already makes sometimes, and that carries over to prompts
it never saw: exactly the job of a grader that encodes what the labels got wrong.

Torch runs on one thread by default: the matrices are tiny, a second thread gains at most
1.7x on an idle machine and loses 5-10x when another process wants the core (``--threads``).

Left out on purpose: downloads of any kind (no pretrained model or tokenizer), a GPU, a
learning-rate schedule beyond the warm-up, and checkpoints (the run is short; ``rftkit train``
has them).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ._config import PPOConfig
from ._demo_data import ANSWER_SKELETON, demo_splits, write_splits
from ._logging import MetricsLogger
from ._losses import kl_from_logits
from ._rollout import completion_forward, generate_completions

FIELDS = ("university", "programming_languages", "city", "state")
PAD, EOS = "<|pad|>", "<|endoftext|>"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and settings of one demo run; the defaults are the full run, :data:`QUICK` a seconds-long smoke run."""

    seed: int = 0
    """Seeds the data, the model's initialisation, the warm start, PPO (``ppo.seed`` follows it on the command line)."""
    sft_rows: int = 3000
    """Warm-start rows generated."""
    legacy_share: float = 0.7
    """Share of warm-start rows labelled in the legacy style (see ``rl/_demo_data.py``)."""
    sft_steps: int = 350
    """Warm-start optimizer steps: enough to learn the format and copying, not enough to be done."""
    sft_batch_size: int = 32
    """Rows per warm-start step."""
    sft_learning_rate: float = 2e-3
    """Warm-start AdamW learning rate (after a linear warm-up over the first 10% of steps)."""
    n_embd: int = 128
    """The GPT-2's width."""
    n_layer: int = 4
    """The GPT-2's layers (copying a value needs at least two)."""
    n_head: int = 4
    """Attention heads per layer."""
    train_prompts: int = 32
    """PPO prompts."""
    heldout_prompts: int = 128
    """Held-out prompts, evaluated greedily before, during and after PPO."""
    ppo_steps: int = 40
    """PPO steps (each ``ppo.prompts_per_batch`` prompts, ``ppo.samples_per_prompt`` samples each)."""
    eval_every: int = 10
    """Held-out evaluation every this many PPO steps (and in ``metrics.jsonl``)."""
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(
        advantage="grpo", samples_per_prompt=8, prompts_per_batch=8, minibatch_size=32, ppo_epochs=2, learning_rate=1e-4,
        kl_coef=0.05, max_new_tokens=24, temperature=1.0, seed=0))
    """The PPO trainer's config (an answer is about 14 tokens, hence ``max_new_tokens=24``)."""
    threads: int = 1
    """torch intra-op threads during the run (restored afterwards)."""


QUICK = DemoSettings(sft_rows=64, sft_steps=4, sft_batch_size=8, n_embd=32, n_layer=2, n_head=2, train_prompts=4,
                     heldout_prompts=8, ppo_steps=2, eval_every=1,
                     ppo=PPOConfig(advantage="grpo", samples_per_prompt=2, prompts_per_batch=2, minibatch_size=4, ppo_epochs=1,
                                   learning_rate=1e-3, max_new_tokens=8, seed=0))
"""A smoke run of the whole pipeline in seconds (``rftkit demo --quick``); its numbers mean nothing."""


# --------------------------------------------------------------------------- tokenizer and model


def build_tokenizer(texts: Iterable[str], *, vocab_size: int = 1024, added_tokens: Sequence[str] = ()) -> Any:
    """A byte-level BPE trained on ``texts``, as a ``transformers.PreTrainedTokenizerFast``.

    Pre-tokenisation splits text into runs of word characters (``+`` and ``#`` included, so
    ``C++`` and ``C#`` stay whole) and runs of everything else, so a word never carries the
    space before it and is the same token wherever it appears. ``added_tokens`` are matched
    first, longest first, as single tokens. The pad token (``<|pad|>``, id 0) differs from EOS
    (``<|endoftext|>``, id 1); padding is on the left, as generation needs.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\w+#]+|[^\w+#]+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in added_tokens])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # untyped in transformers
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left")


def build_model(tokenizer: Any, *, n_embd: int = 128, n_layer: int = 4, n_head: int = 4, seed: int = 0) -> Any:
    """A randomly initialised GPT-2 sized for ``tokenizer`` (dropout off: the trainer samples in eval mode anyway)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


# --------------------------------------------------------------------------- the warm start


def answer_batch(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``prompt + completion + EOS`` right-padded: ``input_ids``, ``attention_mask`` and ``labels`` (-100 except on the answer).

    Prompt and completion are tokenised separately, exactly as the prompt is at generation time.
    """
    sequences, labels = [], []
    for row in rows:
        prompt = tokenizer(row["prompt"])["input_ids"]
        answer = tokenizer(row["completion"])["input_ids"] + [tokenizer.eos_token_id]
        sequences.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, sequences))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)  # (B, L)
    label_ids = torch.full((len(rows), width), -100)  # (B, L)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
    for i, (seq, lab) in enumerate(zip(sequences, labels)):
        input_ids[i, :len(seq)], label_ids[i, :len(lab)], mask[i, :len(seq)] = torch.tensor(seq), torch.tensor(lab), 1
    return input_ids, mask, label_ids


def supervised_warmup(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], *, steps: int, batch_size: int,
                      learning_rate: float, seed: int = 0, progress: Progress | None = None) -> list[float]:
    """Next-token cross-entropy on the answers (AdamW, linear warm-up over the first 10% of steps); returns the losses."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    rng, queue, losses = random.Random(seed), list[int](), list[float]()
    task = progress.add_task("warm start", total=steps) if progress is not None else None
    for step in range(1, steps + 1):
        batch = []
        for _ in range(batch_size):
            if not queue:
                queue = list(range(len(rows)))
                rng.shuffle(queue)
            batch.append(rows[queue.pop()])
        input_ids, mask, labels = answer_batch(tokenizer, batch)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]  # (B, L-1, V): position t predicts t+1
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, step / max(1, steps // 10))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None and task is not None:
            progress.update(task, completed=step, description=f"warm start, loss {loss.item():.3f}")
    model.eval()
    return losses


# --------------------------------------------------------------------------- measuring


@torch.no_grad()
def kl_to_reference(model: Any, ref_model: Any, tokenizer: Any, prompts: Sequence[str], *, samples_per_prompt: int = 4,
                    max_new_tokens: int = 24, temperature: float = 1.0, batch_size: int = 64) -> float:
    """``E_{y ~ policy}[sum_t KL(policy(.|y<t) || reference(.|y<t))]``: nats per completion, over sampled completions.

    Each token's KL is exact over the vocabulary (:func:`rl.kl_from_logits`), so the only noise is
    which completions were sampled; 0 for the reference itself.
    """
    total, count = 0.0, 0
    per_batch = max(1, batch_size // samples_per_prompt)
    for first in range(0, len(prompts), per_batch):
        roll = generate_completions(model, tokenizer, list(prompts[first:first + per_batch]), samples_per_prompt=samples_per_prompt,
                                    max_new_tokens=max_new_tokens, temperature=temperature)
        steps = roll.completion_mask.shape[1]
        logits, _ = completion_forward(model, roll.input_ids, roll.attention_mask, steps, temperature)
        ref_logits, _ = completion_forward(ref_model, roll.input_ids, roll.attention_mask, steps, temperature)
        per_token = kl_from_logits(logits, ref_logits) * roll.completion_mask  # (B, T)
        total += per_token.sum().item()
        count += per_token.shape[0]
    return total / max(1, count)


def field_scores(metrics: dict[str, float], prefix: str = "eval/reward") -> dict[str, float]:
    """``{"overall": ..., "<field>": ...}`` from ``evaluate()``'s keys (a field no answer had counts 0)."""
    return {"overall": metrics[f"{prefix}/mean"], **{name: metrics.get(f"{prefix}/{name}", 0.0) for name in FIELDS}}


def results_table(before: dict[str, float], after: dict[str, float], kl: float, heldout: int) -> Table:
    """Before/after held-out reward per field, the change, and the KL to the base model."""
    table = Table(title=f"held-out reward, greedy, {heldout} prompts never trained on")
    for name in ("", "before RFT", "after RFT", "change"):
        table.add_column(name, justify="left" if not name else "right")
    for name in ("overall", *FIELDS):
        delta = after[name] - before[name]
        style = "bold" if name == "overall" else ""
        table.add_row(f"[{style}]{name}[/{style}]" if style else name, f"{before[name]:.3f}", f"{after[name]:.3f}",
                      f"[green]{delta:+.3f}[/green]" if delta > 0.005 else f"{delta:+.3f}")
    table.add_row("KL to base (nats/answer)", "0", f"{kl:.2f}", "")
    return table


def trajectory_table(history: Sequence[dict[str, float]], every: int) -> Table:
    """A few rows of the PPO log: sampled reward, held-out reward, KL and entropy."""
    table = Table(title="PPO, every few steps (all steps: metrics.jsonl, plots/)")
    keys = ("reward/mean", "eval/reward/mean", "kl/to_init", "policy/entropy")
    for name in ("step", *keys):
        table.add_column(name, justify="right")
    for step, row in enumerate(history, 1):
        if step % every == 0 or step == len(history):
            table.add_row(str(step), *(f"{row[k]:.3f}" if k in row and math.isfinite(row[k]) else "-" for k in keys))
    return table


# --------------------------------------------------------------------------- the run


def run_demo(output: Path, settings: DemoSettings = DemoSettings(), *, console: Console | None = None) -> dict[str, Any]:
    """Run steps 1-6 of the module docstring, write everything into ``output``; returns the summary."""
    from transformers.utils import logging as hf_logging

    from graders import StructuredGrader, from_config

    from ._trainer import PPOTrainer

    console = console if console is not None else Console()
    start, cpu_start = time.perf_counter(), time.process_time()
    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(settings.threads)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers; hides "Writing model shards"
    timings: dict[str, float] = {}
    try:
        console.rule("[bold]Reinforcement fine-tuning a tiny model on résumé extraction[/bold]")
        data = demo_splits(seed=settings.seed, sft=settings.sft_rows, train=settings.train_prompts, heldout=settings.heldout_prompts,
                           legacy_share=settings.legacy_share)
        write_splits(data, output / "data")
        tokenizer = build_tokenizer((r["prompt"] + r["completion"] for r in data.sft), added_tokens=ANSWER_SKELETON)
        model = build_model(tokenizer, n_embd=settings.n_embd, n_layer=settings.n_layer, n_head=settings.n_head, seed=settings.seed)
        size = sum(p.numel() for p in model.parameters())
        console.print(f"data: {len(data.sft)} warm-start rows ({settings.legacy_share:.0%} legacy labels), {len(data.train)} PPO "
                      f"prompts, {len(data.heldout)} held-out prompts -> {output / 'data'}")
        console.print(f"model: GPT-2, {settings.n_layer} layers x {settings.n_embd}, {size / 1e6:.2f}M parameters; "
                      f"byte-level BPE, {len(tokenizer)} tokens; torch threads {settings.threads}")
        timings["setup"] = time.perf_counter() - start

        mark = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            losses = supervised_warmup(model, tokenizer, data.sft, steps=settings.sft_steps, batch_size=settings.sft_batch_size,
                                       learning_rate=settings.sft_learning_rate, seed=settings.seed, progress=progress)
        timings["warm_start"] = time.perf_counter() - mark
        console.print(f"warm start: {settings.sft_steps} steps of {settings.sft_batch_size} rows in {timings['warm_start']:.0f} s, "
                      f"final loss {losses[-1]:.3f}")

        grader = from_config(json.loads((resources.files("graders") / "data" / "resume_grader.json").read_text(encoding="utf-8")))
        assert isinstance(grader, StructuredGrader)  # the bundled résumé grader is a structured one
        rows = [{"prompt": r["prompt"], "reference": r["reference"]} for r in data.train]
        heldout = [{"prompt": r["prompt"], "reference": r["reference"]} for r in data.heldout]
        trainer = PPOTrainer(model, tokenizer, grader, rows, heldout, settings.ppo)
        mark = time.perf_counter()
        evaluation = trainer.evaluate()
        before = field_scores(evaluation)
        (output / "metrics.jsonl").unlink(missing_ok=True)  # a fresh log; train() keeps this step-0 line (steps <= 0)
        with MetricsLogger(output / "metrics.jsonl", console_every=None) as log:
            log.log(0, evaluation)  # so the held-out curve in plots/reward.png starts before RFT
        timings["eval_before"] = time.perf_counter() - mark
        console.print(f"held-out reward after the warm start: {before['overall']:.3f}; "
                      f"PPO ({settings.ppo.advantage}) for {settings.ppo_steps} steps on {len(rows)} prompts ...")

        mark = time.perf_counter()
        history = trainer.train(settings.ppo_steps, log_dir=output, eval_every=settings.eval_every, console_every=None)
        timings["ppo"] = time.perf_counter() - mark
        console.print(trajectory_table(history, settings.eval_every))

        mark = time.perf_counter()
        after = field_scores(trainer.evaluate())
        torch.manual_seed(settings.seed)
        kl = kl_to_reference(model, trainer.ref_model, tokenizer, [r["prompt"] for r in heldout],
                             max_new_tokens=settings.ppo.max_new_tokens, temperature=settings.ppo.temperature)
        timings["eval_after"] = time.perf_counter() - mark
        model.save_pretrained(output / "model")
        tokenizer.save_pretrained(output / "model")
        console.print(results_table(before, after, kl, len(heldout)))
        summary: dict[str, Any] = {
            "heldout_reward_before": before,
            "heldout_reward_after": after,
            "kl_to_base": kl,
            "wall_clock_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu_start,  # user + sys of this process, all threads
            "timings_s": timings,
            "heldout_prompts": len(heldout),
            "train_prompts": len(rows),
            "settings": asdict(settings),
        }
        (output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        console.print(f"wrote {output / 'summary.json'}, metrics.jsonl, plots/, model/ in {summary['wall_clock_s']:.0f} s "
                      f"({summary['cpu_s']:.0f} CPU s)")
        return summary
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers


def register(app: typer.Typer) -> None:
    """Add ``rftkit demo`` to ``app`` (called through the ``rftkit.commands`` entry point)."""

    @app.command()
    def demo(
        output: Annotated[Path, typer.Option("--output", "-o", help="Folder for summary.json, metrics.jsonl, plots/, model/, data/.")]
        = Path("runs/demo"),
        seed: Annotated[int, typer.Option(help="Seeds the data, the model and both trainings.")] = 0,
        quick: Annotated[bool, typer.Option("--quick", help="A seconds-long smoke run of every stage (its numbers mean nothing).")]
        = False,
        threads: Annotated[int, typer.Option(min=1, help="torch threads (1 is fastest on a busy 2-core machine).")] = 1,
    ) -> None:
        """Grade the seed example, then reinforcement fine-tune a tiny GPT-2 on résumé extraction and compare held-out rewards.

        Offline, about three minutes on two CPU cores; see docs/rl.md.
        """
        from graders._cli import grading_demo

        console = Console()
        grading_demo(console)
        base = QUICK if quick else DemoSettings()
        run_demo(output, replace(base, seed=seed, threads=threads, ppo=replace(base.ppo, seed=seed)), console=console)
