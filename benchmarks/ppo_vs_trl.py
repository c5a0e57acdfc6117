"""RL at equal wall clock: rftkit's PPO (``gae`` and ``grpo``) vs TRL's ``GRPOTrainer`` on the demo's tiny model.

In execution order:

1. **warm start, once** -- the demo's data, byte-level BPE tokenizer, 0.9M-parameter GPT-2 and
   supervised warm start (``rl/_demo.py``, ``--seed``); the weights, tokenizer and data go to
   ``OUTPUT/base`` (``--reuse-base`` skips this step when they are there from an earlier run);
2. **the contenders**, each in a fresh process that loads those weights, on one torch thread,
   trained on the demo's 32 PPO prompts for the same budget of training seconds (``--budget-s``):

   * ``rftkit-gae``: ``rl.PPOTrainer``, ``advantage="gae"`` (a value head);
   * ``rftkit-grpo``: ``rl.PPOTrainer``, ``advantage="grpo"`` (critic-free);
   * ``trl-grpo``: TRL's ``GRPOTrainer`` (CPU, no vLLM), rewarded by ``graders.adapters.trl_reward`` of
     the same résumé grader config;

   A process each, so each peak RSS is its own. They take turns of :data:`TURN_S` training
   seconds, round-robin, each turn ending at a rollout boundary; the others wait on a pipe,
   idle. So when other jobs load the shared machine, every contender is slowed alike, as the
   chunk-by-chunk alternation of the other benchmarks does;
3. **report** -- tables, ``OUTPUT/results.json`` (every point) and ``OUTPUT/ppo_vs_trl.png``
   (held-out reward and samples against training seconds); ``--docs`` also writes the plot to
   ``docs/img/ppo_vs_trl.png`` (``docs/img/ppo_vs_trl_lr<rate>.png`` at a ``--learning-rate``
   other than the default).

Shared settings, the demo's PPO config: 8 prompts x 8 samples = 64 completions per rollout,
2 passes of minibatches of 32 (4 optimizer steps per rollout), AdamW at 1e-4 (``--learning-rate``
sets another rate for every contender alike; weight decay 0.01, betas 0.9/0.999, no schedule), the KL to the initial policy as ``0.05 * k3`` in the loss
(the demo puts ``k1`` in the reward; TRL has only the loss form, so rftkit uses its ``k3``
option here), ratio clip 0.2, temperature 1 with top-k and top-p off, at most 24 new tokens,
gradient norm clipped to 1, fp32, no dropout, no gradient checkpointing. The settings that
cannot be matched are listed in docs/benchmarks.md.

Measured:

* **samples/s** -- completions generated *and trained on* (whole rollouts: a rollout counts once
  its 4 optimizer steps are done) per second of training wall clock. The clock stops for
  held-out evaluations and between turns, and leaves out loading the model and building the
  trainer. Also per CPU second of the process (``time.process_time``), which other jobs disturb less.
* **held-out reward** -- greedy completions of the first ``--heldout`` of the demo's held-out
  prompts graded by the résumé grader, with the same code for every contender (``rl``'s
  ``generate_completions``, then ``grade_batch``), at training time 0, at the first rollout
  boundary after every ``--eval-every-s`` training seconds, and at the end; the training
  time at which it first reaches 0.9; and its time average over the budget -- the area under
  the held-out curve, each evaluation's reward held until the next one, up to ``--budget-s``,
  divided by ``--budget-s`` -- which compares the contenders at equal wall clock over the
  whole budget rather than at one point.
* **peak memory** -- the contender process's high-water RSS (``VmHWM``: imports, model,
  reference copy, optimizer state, rollouts, autograd), and its growth from just after the
  model was loaded (TRL's imports of ``trl``, ``datasets`` and ``accelerate`` come before that point).
* **where the time goes** -- generation (tokenise, sample, decode; rftkit's ``sample_rollout`` also keeps
  the old policy's log-probs), log-probs without grad (rftkit: the reference; TRL: the old policy and
  the reference), grading, the update's forward with grad, and the rest
  (backward, AdamW, advantages, bookkeeping), timed by wrapping those calls from outside:
  neither trainer is edited.

Run:     .venv/bin/python benchmarks/ppo_vs_trl.py [--budget-s 90] [--learning-rate 1e-4] [--output runs/ppo_vs_trl] [--docs]
         (about 8 minutes on 2 cores: a 90 s warm start, then 3 x (the budget + evaluations))
Targets: rftkit >= 2x TRL's samples/s, and a higher held-out reward at equal wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path
from typing import Any

CONTENDERS = ("rftkit-gae", "rftkit-grpo", "trl-grpo")
BASELINE = "trl-grpo"
DOCS_PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "ppo_vs_trl.png"
DEFAULT_LEARNING_RATE = 1e-4
"""The demo's PPO learning rate, and ``--learning-rate``'s default."""
PHASES = ("generate", "logprobs, no grad", "grade", "update forward", "update rest")
TURN_S = 5.0
"""Training seconds a contender runs before the next one takes its turn (ended at a rollout boundary)."""


def ppo_config(seed: int, learning_rate: float) -> Any:
    """The demo's PPO config with the KL as ``k3`` in the loss (TRL's only form) and ``learning_rate``.

    ``advantage`` is set per contender. TRL's ``GRPOConfig`` takes its rate from this config too.
    """
    from rl._demo import DemoSettings  # the demo's settings are the benchmark's; private, but this is the same repository

    return replace(DemoSettings().ppo, kl_estimator="k3", seed=seed, learning_rate=learning_rate)


def docs_plot(learning_rate: float) -> Path:
    """Where ``--docs`` writes the plot: ``docs/img/ppo_vs_trl.png``, or ``..._lr<rate>.png`` at another rate."""
    if learning_rate == DEFAULT_LEARNING_RATE:
        return DOCS_PLOT
    return DOCS_PLOT.with_name(f"{DOCS_PLOT.stem}_lr{learning_rate:g}{DOCS_PLOT.suffix}")


# --------------------------------------------------------------------------- measuring


class Clock:
    """Training time only: wall and CPU seconds accumulate between ``start()`` and ``pause()``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._since: tuple[float, float] | None = None

    def start(self) -> None:
        self._since = (time.perf_counter(), time.process_time())

    def pause(self) -> None:
        assert self._since is not None, "pause() without start()"
        wall, cpu = self._since
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self._since = None


class Profile:
    """Seconds spent inside wrapped calls, by phase; a call with grad enabled can count under another phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, fn: Callable[..., Any], *, with_grad: str | None = None) -> Callable[..., Any]:
        import torch

        def timed(*args: Any, **kwargs: Any) -> Any:
            name = with_grad if with_grad is not None and torch.is_grad_enabled() else phase
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed

    def report(self, train_s: float) -> dict[str, float]:
        """Every phase in :data:`PHASES`; ``update rest`` is the training time no wrapped call accounts for."""
        out = {name: self.seconds.get(name, 0.0) for name in PHASES[:-1]}
        out["update rest"] = train_s - sum(out.values())
        return out


def peak_rss_mib() -> float:
    """This process's high-water resident set size, in MiB.

    Linux's ``VmHWM`` (``/proc/self/status``), the peak of this address space. Not ``ru_maxrss``:
    Linux carries that over ``fork`` and ``exec``, so a contender would start at the parent's
    peak (the warm start's, ~800 MiB). ``ru_maxrss`` only where there is no ``/proc``.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def heldout_reward(model: Any, tokenizer: Any, grader: Any, rows: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """Greedy completions of ``rows`` graded: the mean score and each field's mean (the same code for every contender)."""
    from rl import generate_completions

    was_training = model.training
    grades: list[Any] = []
    for first in range(0, len(rows), 64):
        part = rows[first:first + 64]
        roll = generate_completions(model, tokenizer, [r["prompt"] for r in part], samples_per_prompt=1,
                                    max_new_tokens=max_new_tokens, temperature=None)
        grades += grader.grade_batch(roll.texts, [r["reference"] for r in part])
    model.train(was_training)
    fields: dict[str, float] = defaultdict(float)
    for grade in grades:
        for name, value in grade.sub_scores.items():
            fields[name] += value / len(grades)
    return {"reward": sum(g.score for g in grades) / len(grades), "fields": dict(fields)}


class Run:
    """One contender's clock, profile, held-out points and turns.

    The parent process runs the contenders in turns of :data:`TURN_S` training seconds,
    round-robin, so a change in the machine's load hits every contender alike (the other
    contenders wait, blocked on a pipe, using no CPU). A turn ends at a rollout boundary:
    the child writes ``ready`` on its control pipe and waits for ``go``, with its clock paused.
    """

    def __init__(self, name: str, args: argparse.Namespace, model: Any, tokenizer: Any, grader: Any,
                 heldout: list[dict[str, Any]], max_new_tokens: int) -> None:
        self.name, self.args, self.model, self.tokenizer, self.grader = name, args, model, tokenizer, grader
        self.heldout, self.max_new_tokens = heldout, max_new_tokens
        self.clock, self.profile = Clock(), Profile()
        self.rollouts = self.samples = 0
        self.points: list[dict[str, Any]] = []
        self.eval_s = 0.0
        self._next_eval = args.eval_every_s
        self._turn_started = 0.0
        read, write = (int(fd) for fd in args.control.split(","))
        self._control_in, self._control_out = os.fdopen(read, "r"), os.fdopen(write, "w")

    def begin(self) -> None:
        """Evaluate the starting weights, wait for the first turn, start the clock."""
        self.record()
        self._wait_turn()
        self.clock.start()

    def rollout_done(self, batch_size: int) -> bool:
        """Count a finished rollout, evaluate if due, yield the turn if it is over; True once the budget is spent."""
        self.clock.pause()
        self.rollouts += 1
        self.samples += batch_size
        done = self.clock.wall >= self.args.budget_s
        if done or self.clock.wall >= self._next_eval:
            self.record()
            while self._next_eval <= self.clock.wall:
                self._next_eval += self.args.eval_every_s
        if done:
            return True
        if self.clock.wall - self._turn_started >= TURN_S:
            self._wait_turn()
        self.clock.start()
        return False

    def record(self) -> None:
        """Evaluate now (the clock is paused)."""
        start = time.perf_counter()
        self.points.append({"train_s": self.clock.wall, "cpu_s": self.clock.cpu, "rollouts": self.rollouts,
                            "samples": self.samples,
                            **heldout_reward(self.model, self.tokenizer, self.grader, self.heldout, self.max_new_tokens)})
        self.eval_s += time.perf_counter() - start
        print(f"  {self.name:<12} {self.clock.wall:6.1f} s  {self.samples:6d} samples  "
              f"held-out reward {self.points[-1]['reward']:.3f}", flush=True)

    def _wait_turn(self) -> None:
        self._control_out.write("ready\n")
        self._control_out.flush()
        if self._control_in.readline().strip() != "go":
            raise SystemExit(f"{self.name}: the parent closed the control pipe")
        self._turn_started = self.clock.wall

    def finish(self, extra: dict[str, Any], rss_after_load: float) -> None:
        """Write ``OUTPUT/<name>.json`` and tell the parent this contender is done."""
        import torch

        result = {"contender": self.name, "rollouts": self.rollouts, "samples": self.samples, "train_s": self.clock.wall,
                  "cpu_s": self.clock.cpu, "samples_per_s": self.samples / self.clock.wall,
                  "samples_per_cpu_s": self.samples / self.clock.cpu, "eval_s": self.eval_s, "points": self.points,
                  "profile_s": self.profile.report(self.clock.wall), "rss_after_load_mib": rss_after_load,
                  "rss_peak_mib": peak_rss_mib(), "torch_threads": torch.get_num_threads(), **extra}
        (self.args.output / f"{self.name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        self._control_out.write("done\n")
        self._control_out.flush()


# --------------------------------------------------------------------------- the contenders (each in its own process)


def load_base(base: Path) -> tuple[Any, Any, Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The warm-started model and tokenizer, the grader, the training rows and the held-out rows, from ``base``."""
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    from graders import from_config

    model = GPT2LMHeadModel.from_pretrained(base / "model")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base / "model")
    grader = from_config(grader_config())
    return model, tokenizer, grader, read_rows(base / "data" / "train.jsonl"), read_rows(base / "data" / "heldout.jsonl")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """``{"prompt", "reference"}`` of each line of a split written by ``rl._demo_data.write_splits``."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{"prompt": r["prompt"], "reference": r["reference"]} for r in rows]


def grader_config() -> dict[str, Any]:
    """The bundled résumé grader's config (``graders/data/resume_grader.json``), as the demo loads it."""
    return json.loads((resources.files("graders") / "data" / "resume_grader.json").read_text(encoding="utf-8"))


def run_rftkit(name: str, args: argparse.Namespace, config: Any = None) -> None:
    """``rl.PPOTrainer`` with ``config`` (default: ``advantage`` taken from the contender's name), until the budget is spent."""
    import rl._trainer as trainer_module  # its module globals are wrapped for the profile; nothing in rl is edited
    from rl import PPOTrainer

    model, tokenizer, grader, rows, heldout = load_base(args.output / "base")
    rss_after_load = peak_rss_mib()
    if config is None:
        config = replace(ppo_config(args.seed, args.learning_rate), advantage=name.removeprefix("rftkit-"))
    trainer = PPOTrainer(model, tokenizer, grader, rows, [], config)  # held-out rows are graded by heldout_reward()
    run = Run(name, args, model, tokenizer, grader, heldout[:args.heldout], config.max_new_tokens)
    trainer_module.sample_rollout = run.profile.wrap("generate", trainer_module.sample_rollout)  # with the old policy's log-probs
    trainer_module.score_completions = run.profile.wrap("logprobs, no grad", trainer_module.score_completions,
                                                        with_grad="update forward")
    grader.grade_batch = run.profile.wrap("grade", grader.grade_batch)  # the instance attribute shadows the method
    run.begin()
    while True:
        trainer.step()
        if run.rollout_done(config.batch_size):
            break
    run.finish({"config": asdict(config)}, rss_after_load)


def run_trl(name: str, args: argparse.Namespace, *, loss_type: str = "bnpo", beta: float | None = None) -> None:
    """TRL's ``GRPOTrainer`` with the settings matched to rftkit's (see the module docstring), until the budget is spent.

    ``loss_type`` and ``beta`` (None: the shared ``kl_coef``) are for other benchmarks (``benchmarks/recipes.py``
    runs TRL's own defaults, ``dapo`` and 0)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from graders.adapters import trl_reward

    model, tokenizer, grader, rows, heldout = load_base(args.output / "base")
    rss_after_load = peak_rss_mib()
    ppo = ppo_config(args.seed, args.learning_rate)
    steps_per_rollout = ppo.batch_size // ppo.minibatch_size * ppo.ppo_epochs  # optimizer steps per rollout: 4
    run = Run(name, args, model, tokenizer, grader, heldout[:args.heldout], ppo.max_new_tokens)

    class Budget(TrainerCallback):
        """Starts the clock when training starts; at each rollout boundary, counts, evaluates, yields and stops as due."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            run.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % steps_per_rollout == 0 and run.rollout_done(ppo.batch_size):
                control.should_training_stop = True

    dataset = Dataset.from_list(rows)
    with warnings.catch_warnings():
        silence_trl_defaults()
        config = GRPOConfig(
            output_dir=str(args.output / "trl"), report_to=[], save_strategy="no", eval_strategy="no", use_cpu=True,
            disable_tqdm=True, dataloader_num_workers=0, seed=ppo.seed, max_steps=1_000_000,  # the callback stops it
            # one rollout: 8 prompts x 8 samples, split into 2 minibatches of 32, each an optimizer step, for 2 passes
            num_generations=ppo.samples_per_prompt, per_device_train_batch_size=ppo.minibatch_size, gradient_accumulation_steps=1,
            steps_per_generation=ppo.batch_size // ppo.minibatch_size, num_iterations=ppo.ppo_epochs,
            max_completion_length=ppo.max_new_tokens, temperature=ppo.temperature, top_k=0, top_p=1.0,
            learning_rate=ppo.learning_rate, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
            weight_decay=0.01,  # torch.optim.AdamW's default, which rftkit uses; transformers' own default is 0
            max_grad_norm=ppo.max_grad_norm, beta=ppo.kl_coef if beta is None else beta, epsilon=ppo.clip,
            loss_type=loss_type,  # bnpo: token-level mean over the minibatch, as rftkit's masked_mean
            scale_rewards="group", mask_truncated_completions=False, disable_dropout=True,
            gradient_checkpointing=False, bf16=False,  # TRL's defaults (True, and bf16 autocast on CPU); rftkit does neither
            logging_steps=steps_per_rollout,  # TRL's metrics once per rollout, as rftkit computes them once per step()
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[trl_reward(grader_config())], args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Budget()])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        trainer._generate = run.profile.wrap("generate", trainer._generate)  # tokenise, generate, decode: as rftkit's
        trainer._get_per_token_logps_and_entropies = run.profile.wrap(
            "logprobs, no grad", trainer._get_per_token_logps_and_entropies, with_grad="update forward")
        trainer._calculate_rewards = run.profile.wrap("grade", trainer._calculate_rewards)
        trainer.train()
    matched = {k: getattr(trainer.args, k) for k in (
        "num_generations", "per_device_train_batch_size", "generation_batch_size", "steps_per_generation", "num_iterations",
        "gradient_accumulation_steps", "max_completion_length", "temperature", "top_k", "top_p", "learning_rate",
        "lr_scheduler_type", "weight_decay", "optim", "max_grad_norm", "beta", "epsilon", "loss_type", "scale_rewards",
        "gradient_checkpointing", "bf16")}
    run.finish({"config": {k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in matched.items()}}, rss_after_load)


def silence_trl_defaults() -> None:
    """Ignore the two FutureWarnings TRL 1.16 triggers in transformers 5.23, and nothing else.

    transformers 5.23 renamed gradient checkpointing to activation checkpointing and warns
    whenever the old name is used: TRL's ``GRPOConfig`` still declares ``gradient_checkpointing``
    (``TrainingArguments.__post_init__`` reads it) and ``GRPOTrainer`` calls
    ``model.is_gradient_checkpointing``. Both happen with checkpointing off, as here, and
    neither is this benchmark's to fix.
    """
    warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)


# --------------------------------------------------------------------------- the parent: warm start, contenders, report


def warm_start(args: argparse.Namespace) -> dict[str, Any]:
    """The demo's data, tokenizer, model and warm start, once; saved to ``OUTPUT/base`` for every contender."""
    import torch
    from transformers.utils import logging as hf_logging

    from rl._demo import DemoSettings, build_model, build_tokenizer, supervised_warmup  # the demo's own functions
    from rl._demo_data import ANSWER_SKELETON, demo_splits, write_splits

    base = args.output / "base"
    meta_path = base / "meta.json"
    demo = DemoSettings(seed=args.seed)
    sft_steps = getattr(args, "sft_steps", None)  # another benchmark's shorter warm start (benchmarks/recipes.py)
    if sft_steps is not None:
        demo = replace(demo, sft_steps=sft_steps)
    if (args.reuse_base and meta_path.exists() and json.loads(meta_path.read_text())["seed"] == args.seed
            and json.loads(meta_path.read_text()).get("sft_steps", DemoSettings().sft_steps) == demo.sft_steps):
        print(f"warm start: reusing {base}")
        return dict(json.loads(meta_path.read_text()))
    torch.set_num_threads(demo.threads)
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    data = demo_splits(seed=demo.seed, sft=demo.sft_rows, train=demo.train_prompts, heldout=demo.heldout_prompts,
                       legacy_share=demo.legacy_share)
    tokenizer = build_tokenizer((r["prompt"] + r["completion"] for r in data.sft), added_tokens=ANSWER_SKELETON)
    model = build_model(tokenizer, n_embd=demo.n_embd, n_layer=demo.n_layer, n_head=demo.n_head, seed=demo.seed)
    losses = supervised_warmup(model, tokenizer, data.sft, steps=demo.sft_steps, batch_size=demo.sft_batch_size,
                               learning_rate=demo.sft_learning_rate, seed=demo.seed)
    if base.exists():
        shutil.rmtree(base)
    write_splits(data, base / "data")
    model.save_pretrained(base / "model")
    tokenizer.save_pretrained(base / "model")
    meta = {"seed": args.seed, "sft_steps": demo.sft_steps, "warm_start_s": time.perf_counter() - start, "final_loss": losses[-1],
            "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
            "train_prompts": len(data.train), "heldout_prompts_available": len(data.heldout)}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"warm start: {demo.sft_steps} steps in {meta['warm_start_s']:.0f} s, final loss {losses[-1]:.3f} -> {base}")
    return meta


class Contender:
    """A contender's process and the two pipes its turns are passed through."""

    def __init__(self, name: str, args: argparse.Namespace, script: Path | None = None) -> None:
        """``script``: the benchmark whose ``--child`` runs the contender (default: this one)."""
        self.name = name
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()
        command = [sys.executable, str(script or Path(__file__).resolve()), "--child", name, "--control", f"{to_child},{from_child}",
                   "--output", str(args.output), "--budget-s", str(args.budget_s), "--eval-every-s", str(args.eval_every_s),
                   "--heldout", str(args.heldout), "--seed", str(args.seed), "--learning-rate", repr(args.learning_rate)]
        self.process = subprocess.Popen(command, pass_fds=(to_child, from_child))
        os.close(to_child)
        os.close(from_child)
        self._out, self._in = os.fdopen(self._to_child, "w"), os.fdopen(self._from_child, "r")

    def wait(self) -> str:
        """The child's next message: ``ready`` (its turn may start) or ``done``."""
        message = self._in.readline().strip()
        if message not in ("ready", "done"):
            raise SystemExit(f"{self.name} exited with status {self.process.wait()} before finishing")
        return message

    def go(self) -> str:
        """Give the child one turn; returns its next message."""
        self._out.write("go\n")
        self._out.flush()
        return self.wait()


def run_contenders(args: argparse.Namespace, script: Path | None = None) -> tuple[dict[str, dict[str, Any]], list[list[float]]]:
    """Start each contender (one at a time, so their set-ups do not compete), then give them turns round-robin.

    Returns each contender's result and the load average sampled at the start of every round. ``script``: as
    :class:`Contender`'s.
    """
    contenders = []
    for name in args.contenders:
        contender = Contender(name, args, script)
        if contender.wait() != "ready":
            raise SystemExit(f"{name} finished before training")
        contenders.append(contender)
    active, loads = list(contenders), []
    while active:
        loads.append(list(os.getloadavg()))
        for contender in list(active):
            if contender.go() == "done":
                if contender.process.wait() != 0:
                    raise SystemExit(f"{contender.name} exited with status {contender.process.returncode}")
                active.remove(contender)
    results = {c.name: dict(json.loads((args.output / f"{c.name}.json").read_text(encoding="utf-8"))) for c in contenders}
    return results, loads


def reward_at(points: list[dict[str, Any]], seconds: float) -> tuple[float, float]:
    """The held-out reward of the first evaluation at or after ``seconds`` of training (the last one if none is)."""
    point = next((p for p in points if p["train_s"] >= seconds - 1e-9), points[-1])
    return point["reward"], point["train_s"]


def time_averaged_reward(points: list[dict[str, Any]], budget_s: float) -> float:
    """The held-out reward averaged over ``[0, budget_s]`` training seconds: each evaluation's reward held until the next.

    The area under the step-wise held-out curve divided by ``budget_s``; an evaluation past the
    budget (the last one ends at a rollout boundary) counts only up to ``budget_s``.
    """
    area = 0.0
    for point, following in zip(points, points[1:]):
        start, end = min(point["train_s"], budget_s), min(following["train_s"], budget_s)
        area += point["reward"] * (end - start)
    last = points[-1]
    area += last["reward"] * max(0.0, budget_s - last["train_s"])  # only if training stopped short of the budget
    return area / budget_s


def time_to(points: list[dict[str, Any]], reward: float) -> str:
    """The training time of the first evaluation at or above ``reward``, as text."""
    return next((f"at {p['train_s']:5.1f} s" for p in points if p["reward"] >= reward), "never")


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any],
           loads: list[list[float]]) -> None:
    """Print the tables and write ``results.json`` and the plot."""
    base = results.get(BASELINE)
    for r in results.values():
        r["reward_time_averaged"] = time_averaged_reward(r["points"], args.budget_s)
    print()
    print(f"{'contender':<12} {'rollouts':>8} {'samples':>8} {'train s':>8} {'samples/s':>10} {'vs TRL':>7} "
          f"{'per CPU s':>10} {'vs TRL':>7} {'peak RSS':>9} {'growth':>7} {'reward t=0':>11} {'reward end':>11}")
    for name, r in results.items():
        ratio = f"{r['samples_per_s'] / base['samples_per_s']:6.2f}x" if base else "      -"
        cpu_ratio = f"{r['samples_per_cpu_s'] / base['samples_per_cpu_s']:6.2f}x" if base else "      -"
        print(f"{name:<12} {r['rollouts']:>8} {r['samples']:>8} {r['train_s']:>8.1f} {r['samples_per_s']:>10.1f} {ratio:>7} "
              f"{r['samples_per_cpu_s']:>10.1f} {cpu_ratio:>7} {r['rss_peak_mib']:>6.0f} MiB "
              f"{r['rss_peak_mib'] - r['rss_after_load_mib']:>4.0f} MiB {r['points'][0]['reward']:>11.3f} "
              f"{r['points'][-1]['reward']:>11.3f}")
    marks = sorted({*(k * args.eval_every_s for k in range(5)), *(k * args.budget_s / 6 for k in range(1, 7))})
    print(f"\nheld-out reward ({args.heldout} prompts, greedy) at the first rollout boundary after t training seconds")
    print(f"{'t (s)':>6} " + " ".join(f"{name:>20}" for name in results))
    for mark in marks:
        cells = [f"{reward:.3f} (at {at:5.1f} s)" for reward, at in (reward_at(r["points"], mark) for r in results.values())]
        print(f"{mark:>6.0f} " + " ".join(f"{c:>20}" for c in cells))
    print(f"{'>= 0.9':>6} " + " ".join(f"{time_to(r['points'], 0.9):>20}" for r in results.values()))
    print(f"{'mean':>6} " + " ".join(f"{r['reward_time_averaged']:>20.3f}" for r in results.values())
          + f"   (time-averaged over the {args.budget_s:.0f} s: area under the step-wise curve / budget)")
    print(f"{'end':>6} " + " ".join(f"{r['points'][-1]['reward']:>20.3f}" for r in results.values()))
    print("\nwhere the training time goes (s, and share of training time)")
    print(f"{'phase':<18} " + " ".join(f"{name:>16}" for name in results))
    for phase in PHASES:
        print(f"{phase:<18} " + " ".join(f"{r['profile_s'][phase]:7.1f} ({r['profile_s'][phase] / r['train_s']:4.0%})"
                                         f"{'':>2}" for r in results.values()))
    print(f"{'ms per rollout':<18} " + " ".join(f"{1000 * r['train_s'] / r['rollouts']:>16.0f}" for r in results.values()))
    one_minute = [load[0] for load in loads]
    print(f"\nload average (1 min) at the start of each of the {len(loads)} rounds: mean {sum(one_minute) / len(one_minute):.2f}, "
          f"min {min(one_minute):.2f}, max {max(one_minute):.2f} ({os.cpu_count()} CPUs)")
    summary = {"budget_s": args.budget_s, "learning_rate": args.learning_rate, "eval_every_s": args.eval_every_s, "turn_s": TURN_S, "heldout": args.heldout,
               "seed": args.seed, "warm_start": meta, "python": sys.version.split()[0], "cpus": os.cpu_count(),
               "loadavg_per_round": loads, "contenders": results,
               "reward_summary": {name: {"time_averaged": r["reward_time_averaged"], "end": r["points"][-1]["reward"],
                                         "end_train_s": r["points"][-1]["train_s"]} for name, r in results.items()}}
    (args.output / "results.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot(results, args.output / "ppo_vs_trl.png", args)
    docs = docs_plot(args.learning_rate)
    if args.docs:
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.output / "ppo_vs_trl.png", docs)
    print(f"\nwrote {args.output / 'results.json'} and {args.output / 'ppo_vs_trl.png'}" + (f", {docs}" if args.docs else ""))


def plot(results: dict[str, dict[str, Any]], path: Path, args: argparse.Namespace) -> None:
    """Held-out reward against training seconds (all of it, and the first 20 s), and samples trained on, per contender."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(figure)
    reward_ax, early_ax, samples_ax = figure.subplots(1, 3)
    for name, r in results.items():
        seconds = [p["train_s"] for p in r["points"]]
        for ax in (reward_ax, early_ax):
            ax.plot(seconds, [p["reward"] for p in r["points"]], marker="o", markersize=4, label=name)
        samples_ax.plot(seconds, [p["samples"] for p in r["points"]], marker="o", markersize=4,
                        label=f"{name} ({r['samples_per_s']:.0f}/s)")
        reward_ax.lines[-1].set_label(f"{name} (mean {time_averaged_reward(r['points'], args.budget_s):.3f})")
    ylabel = f"held-out reward ({args.heldout} prompts, greedy)"
    reward_ax.set(xlabel="training seconds", ylabel=ylabel, ylim=(0.4, 1),
                  title=f"held-out reward, {args.budget_s:.0f} s each, lr {args.learning_rate:g}, seed {args.seed}")
    early_ax.set(xlabel="training seconds", ylabel=ylabel, title="the first 20 s", xlim=(-0.5, 20), ylim=(0.4, 1))
    samples_ax.set(xlabel="training seconds", ylabel="completions generated and trained on", title="samples")
    for ax in (reward_ax, early_ax, samples_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    figure.savefig(path, dpi=100)


def child(args: argparse.Namespace) -> None:
    """One contender, in this process: train for the budget in the turns the parent gives, write ``OUTPUT/<name>.json``."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)  # as the demo: the matrices are tiny and the machine is shared
    hf_logging.disable_progress_bar()
    (run_trl if args.child.startswith("trl") else run_rftkit)(args.child, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=90.0, help="training seconds per contender (evaluations excluded)")
    parser.add_argument("--eval-every-s", type=float, default=2.0, help="held-out evaluation every this many training seconds")
    parser.add_argument("--heldout", type=int, default=64, help="held-out prompts evaluated (the first N of the demo's 128)")
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE,
                        help="AdamW's rate for every contender (rftkit's PPOConfig and TRL's GRPOConfig alike)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the model, the warm start and every trainer")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="which to run")
    parser.add_argument("--output", type=Path, default=Path("runs/ppo_vs_trl"), help="folder for base/, results.json, the plot")
    parser.add_argument("--reuse-base", action="store_true", help="reuse OUTPUT/base from an earlier run (skips the warm start)")
    parser.add_argument("--docs", action="store_true", help=f"also write the plot to {DOCS_PLOT.relative_to(DOCS_PLOT.parents[2])} "
                                                            "(..._lr<rate>.png at another --learning-rate)")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)  # internal: run one contender in this process
    parser.add_argument("--control", help=argparse.SUPPRESS)  # internal: the child's ends of its two control pipes, "read,write"
    args = parser.parse_args()
    if not 1 <= args.heldout <= 128:
        parser.error("--heldout must be between 1 and 128 (the demo's held-out prompts)")
    if not args.learning_rate > 0:
        parser.error("--learning-rate must be positive")
    if args.child:
        child(args)
        return
    args.output.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    meta = warm_start(args)
    print(f"contenders: {', '.join(args.contenders)}, {args.budget_s:.0f} s of training each, in turns of {TURN_S:.0f} s, "
          f"learning rate {args.learning_rate:g}")
    results, loads = run_contenders(args)
    report(results, args, meta, loads)


if __name__ == "__main__":
    main()
