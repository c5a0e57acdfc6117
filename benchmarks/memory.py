"""Peak memory and speed of rftkit's training modes on one random-init model of real architecture (Qwen2 layout).

    python benchmarks/memory.py                                # CPU, the ~135M model, peak RSS growth after loading
    python benchmarks/memory.py --device cuda --size 0.5b      # one GPU: peak allocated CUDA memory, Qwen2.5-0.5B's layout
    python benchmarks/memory.py --modes lora,trl-lora --phases # and CPU seconds per step in each phase of each contender

Modes (each one ``PPOTrainer`` on the same bf16 model, the same batch and completion length):

* ``full-fp32``  -- every weight trained, computed in float32 (``ModelConfig(dtype="float32")``);
* ``full-mixed`` -- every weight trained, float32 master weights and AdamW states, bf16 autocast (the default);
* ``lora``       -- peft LoRA adapters (r=16, all linear layers), the base frozen in bf16, the reference = adapters off;
* ``lora-ckpt``  -- LoRA plus gradient checkpointing;
* ``trl-lora``   -- TRL's ``GRPOTrainer`` with the same peft LoRA config, batch (one rollout = one optimizer step of
  ``--micro-batch-size`` completions per forward/backward, accumulated), completion length, KL weight and bf16
  autocast (``GRPOConfig(bf16=True)``).

Memory: on CUDA ``torch.cuda.max_memory_allocated`` over the trainer's construction and its steps, minus what
the loaded model held before; on CPU the peak resident set (``ru_maxrss``) minus the resident set after loading,
each mode in a process of its own (a peak only grows). Speed: completions per second over the timed steps
(after one untimed step), by the wall clock and by the process's CPU time (``time.process_time``: on a machine
shared with other jobs the wall clock measures them too; with one torch thread, a quiet core's wall time is
about the CPU time). ``completion tokens`` is the mean number of tokens (EOS left out) each completion had, so
that both contenders are seen to sample as many. Nothing is downloaded: the model is built from a config, the tokenizer is a word-level
one made in code, and completions are scored by their length.

Each mode in a fresh process; a failed mode prints its last error line and the others go on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

MODES = ("full-fp32", "full-mixed", "lora", "lora-ckpt", "trl-lora")

SIZES: dict[str, dict[str, int]] = {  # Qwen2 layouts: a ~135M model, and Qwen2.5-0.5B's and 1.5B's shapes
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=1000),
    "135m": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 vocab_size=32000),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 vocab_size=151936),
}


@dataclasses.dataclass
class Scored:
    score: float
    sub_scores: dict[str, float]


COMPLETION_WORDS: list[int] = []
"""The words (tokens, EOS left out) of every completion graded in this process: both contenders must sample as many."""


def length_rewards(responses: list[str]) -> list[float]:
    """A reward that differs between completions (their length, folded into [0, 1]), so every step updates."""
    COMPLETION_WORDS.extend(len(r.split()) for r in responses)
    return [(len(r) % 7) / 6 for r in responses]


class LengthGrader:
    """:func:`length_rewards` as rftkit's grader."""

    def grade_batch(self, responses: list[str], references: list[Any]) -> list[Scored]:
        return [Scored(score, {}) for score in length_rewards(responses)]


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer over ``w0 .. wN`` plus <pad> and <eos>: real vocabulary size, no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(vocab_size - 2)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


PHASES: dict[str, float] = {}
"""With ``--phases``: CPU seconds per phase over the timed steps (each contender's own functions wrapped, see
:func:`time_phases`)."""
TIMING: list[bool] = [False]
"""Whether the timed steps have begun (the untimed first step is not counted)."""


def timed(fn: Any, phase: Any) -> Any:
    """``fn`` with its CPU time added to ``PHASES[phase()]`` (the phase is named when the call starts) while ``TIMING``."""
    def wrapper(*a: Any, **k: Any) -> Any:
        name, start = phase(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            if TIMING[0]:
                PHASES[name] = PHASES.get(name, 0.0) + time.process_time() - start
    return wrapper


def time_phases(mode: str) -> None:
    """Wrap the functions each contender runs a phase in: sampling, the reference's forward (no grad), the update's
    forward (grad on) and its backward. What they leave out (log-softmax, losses, grading, the optimizer) is ``rest``."""
    import torch

    def forward() -> str:
        return "update forward" if torch.is_grad_enabled() else "reference forward"

    torch.Tensor.backward = timed(torch.Tensor.backward, lambda: "backward")
    if mode == "trl-lora":
        from trl import GRPOTrainer

        GRPOTrainer._generate = timed(GRPOTrainer._generate, lambda: "sampling")
        GRPOTrainer._get_per_token_logps_and_entropies = timed(
            GRPOTrainer._get_per_token_logps_and_entropies, forward)
    else:
        import rl._trainer

        rl._trainer.sample_rollout = timed(rl._trainer.sample_rollout, lambda: "sampling")
        rl._trainer.score_completions = timed(rl._trainer.score_completions, forward)


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    import peft  # noqa: F401  # imported in every mode before the baseline, so no figure is an import
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import trl  # noqa: F401

    from rl import LoRAConfig, ModelConfig, PPOConfig, PPOTrainer

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.phases:
        time_phases(mode)
    shape = SIZES[args.size]
    config = Qwen2Config(**shape, max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                         bos_token_id=1)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)  # as a bf16 checkpoint loads
    tokenizer = word_tokenizer(shape["vocab_size"])
    n_params = sum(p.numel() for p in model.parameters())
    rows = [{"prompt": " ".join(f"w{(i * 97 + j * 13) % min(5000, shape['vocab_size'] - 2) + 2}" for j in range(args.prompt_tokens)),
             "reference": None} for i in range(16)]
    ppo = PPOConfig(advantage="grpo", samples_per_prompt=args.samples, prompts_per_batch=args.prompts,
                    minibatch_size=args.samples * args.prompts,
                    micro_batch_size=args.micro_batch_size, ppo_epochs=1, max_new_tokens=args.new_tokens, learning_rate=1e-5,
                    kl_coef=0.02, seed=0)
    model_config = ModelConfig(dtype="float32" if mode == "full-fp32" else "auto", gradient_checkpointing=mode == "lora-ckpt")
    lora = LoRAConfig(r=16, alpha=32) if mode.startswith("lora") else None
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    if mode == "trl-lora":
        elapsed, cpu, trained = run_trl(model, tokenizer, rows, ppo, args)
    else:
        trainer = PPOTrainer(model, tokenizer, LengthGrader(), rows, [], ppo, model_config=model_config, lora=lora)
        trainer.step()  # untimed: allocations, kernels' first calls
        TIMING[0] = True
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            trainer.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        trained = sum(p.numel() for p in trainer.params)
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
    return {"mode": mode, "size": args.size, "params": n_params, "device": args.device,
            "trained_params": trained,
            "peak_gib": round(peak / 2**30, 3), "samples_per_s": round(args.steps * ppo.batch_size / elapsed, 2),
            "samples_per_cpu_s": round(args.steps * ppo.batch_size / cpu, 2),
            "completion_tokens": round(sum(COMPLETION_WORDS) / max(1, len(COMPLETION_WORDS)), 2),
            "batch": ppo.batch_size,
            **({"cpu_s_per_step": {**{k: round(v / args.steps, 2) for k, v in sorted(PHASES.items())},
                                   "rest": round((cpu - sum(PHASES.values())) / args.steps, 2)}} if args.phases else {}), "new_tokens": args.new_tokens, "micro_batch_size": args.micro_batch_size}


def run_trl(model: Any, tokenizer: Any, rows: list[dict[str, Any]], ppo: Any, args: argparse.Namespace) -> tuple[float, float, int]:
    """TRL's GRPOTrainer + peft on the same model and batch: one untimed optimizer step, then ``args.steps`` timed ones."""
    import warnings

    import peft
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    marks: list[tuple[float, float]] = []  # (wall, process CPU) at the end of each optimizer step

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if args.use_cpu is False:
                import torch

                torch.cuda.synchronize()
            marks.append((time.perf_counter(), time.process_time()))
            TIMING[0] = True  # the first optimizer step is untimed

    def reward(completions: list[str], **_: Any) -> list[float]:
        return length_rewards(completions)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # TRL 1.16 reads transformers 5.23's deprecated names
        config = GRPOConfig(
            output_dir="/tmp/rftkit-memory-trl", report_to=[], save_strategy="no", eval_strategy="no",
            use_cpu=args.device == "cpu", disable_tqdm=True, dataloader_num_workers=0, seed=0, max_steps=1 + args.steps,
            num_generations=ppo.samples_per_prompt, per_device_train_batch_size=args.micro_batch_size,
            gradient_accumulation_steps=ppo.batch_size // args.micro_batch_size, num_iterations=1,
            max_completion_length=ppo.max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, learning_rate=ppo.learning_rate,
            beta=ppo.kl_coef, loss_type="bnpo", scale_rewards="group", mask_truncated_completions=False, disable_dropout=True,
            bf16=True, gradient_checkpointing=False, logging_steps=1_000_000)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer, callbacks=[Clock()],
                              peft_config=peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1], trained


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="135m")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode (after one untimed)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rollout")
    parser.add_argument("--samples", type=int, default=8, help="completions per prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phases", action="store_true", help="also report CPU seconds per step in each phase")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one mode here and print its JSON (CPU: a process per mode)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_mode(args.one, args)))
        return
    results = []
    for mode in args.modes.split(","):  # a fresh process each: its peak is this mode's alone
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", mode]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(json.dumps({"mode": mode, "size": args.size, "error": done.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result), flush=True)
    full = next((r for r in results if r["mode"] == "full-fp32"), None)
    trl = next((r for r in results if r["mode"] == "trl-lora"), None)
    print("\n| mode | trained params | peak memory (GiB) | vs full-fp32 peak | vs trl-lora peak | completion tokens "
          "| samples/s | vs trl-lora | samples/CPU-s | vs trl-lora |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def ratio(r: dict[str, Any], other: dict[str, Any] | None, key: str) -> str:
        return f"{r[key] / other[key]:.2f}x" if other else "-"

    for r in results:
        print(f"| {r['mode']} | {r['trained_params']:,} | {r['peak_gib']:.2f} | {ratio(r, full, 'peak_gib')} | {ratio(r, trl, 'peak_gib')} "
              f"| {r['completion_tokens']:.1f} | {r['samples_per_s']:.2f} | {ratio(r, trl, 'samples_per_s')} "
              f"| {r['samples_per_cpu_s']:.2f} | {ratio(r, trl, 'samples_per_cpu_s')} |")

if __name__ == "__main__":
    main()
