"""The RL recipes for graded rewards at equal wall clock: rftkit's presets vs TRL's ``GRPOTrainer``, several seeds.

The machinery is ``benchmarks/ppo_vs_trl.py``'s, reused (not copied): the demo's data, tokenizer and
0.9M-parameter GPT-2 with a *shorter* supervised warm start (``--sft-steps``, 250 against the demo's
350), so that the held-out reward starts well below the demo's and does not saturate within seconds;
then, for each seed, every contender in its own process on one torch thread, taking turns of
``ppo_vs_trl.TURN_S`` training seconds round-robin (so a change in the shared machine's load hits
every contender alike), for ``--budget-s`` training seconds each; held-out greedy reward on the
first ``--heldout`` held-out prompts every ``--eval-every-s`` training seconds (the clock paused).

Contenders (the shared settings are the demo's PPO config as in ``ppo_vs_trl.py``: 8 prompts x 8
samples, 2 passes of minibatches of 32, AdamW at 1e-4, at most 24 new tokens, temperature 1):

* ``grpo``: rftkit as it was before the recipe options, ``advantage="grpo"``, KL ``0.05 * k3``;
* ``dapo``, ``dr_grpo``, ``gspo``: the presets of docs/rl.md (:data:`PRESETS`, the papers' settings);
* ``trl``: TRL's ``GRPOTrainer`` with its own defaults for the algorithm (``loss_type="dapo"``,
  ``beta=0``, ``scale_rewards="group"``, ``epsilon=0.2``) and the shared settings above.

Reported per contender: the held-out reward's time average over the budget in each seed (the area
under the step-wise curve divided by the budget), its mean and spread across seeds, the reward at
the end, and the training time to ``--target``; a plot of held-out reward against training seconds
(one panel per seed); ``OUTPUT/results.json`` with every point. Target of issue 15: the best preset's
time-averaged held-out reward above TRL's in every seed.

Run:     .venv/bin/python benchmarks/recipes.py [--budget-s 60] [--seeds 0 1 2] [--output runs/recipes] [--docs]
         (about 5 x 3 x (the budget + evaluations) plus a 40 s warm start: ~20 minutes at 60 s on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ppo_vs_trl  # the sibling benchmark whose machinery this one reuses

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"advantage": "grpo"},
    "dapo": {"advantage": "grpo", "loss_aggregation": "token", "clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.0,
             "whiten_advantages": False, "drop_uniform_groups": True, "overlong": "soft"},
    "dr_grpo": {"advantage": "grpo", "loss_aggregation": "constant", "scale_advantages": "none", "whiten_advantages": False},
    "gspo": {"advantage": "grpo", "ratio_level": "sequence", "loss_aggregation": "sequence", "clip_low": 3e-4,
             "clip_high": 4e-4, "kl_coef": 0.0, "whiten_advantages": False},
}
"""The presets of docs/rl.md as ``PPOConfig`` overrides on the shared config (``overlong_buffer`` for ``dapo`` is set
from ``max_new_tokens`` in :func:`preset_config`: a fifth of it, as DAPO's 4,096 of 20,480)."""
TRL = "trl"
CONTENDERS = (*PRESETS, TRL)
DOCS_PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "recipes.png"


def preset_config(name: str, seed: int, learning_rate: float) -> Any:
    """The shared config (``ppo_vs_trl.ppo_config``) with preset ``name``'s overrides."""
    base = ppo_vs_trl.ppo_config(seed, learning_rate)
    overrides = dict(PRESETS[name])
    if overrides.get("overlong") == "soft":
        overrides["overlong_buffer"] = max(1, base.max_new_tokens // 5)
    return replace(base, **overrides)


def child(args: argparse.Namespace) -> None:
    """One contender in this process (``ppo_vs_trl``'s turn protocol); TRL with its own algorithm defaults."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    if args.child == TRL:
        ppo_vs_trl.run_trl(args.child, args, loss_type="dapo", beta=0.0)
    else:
        ppo_vs_trl.run_rftkit(args.child, args, preset_config(args.child, args.seed, args.learning_rate))


def time_to(points: list[dict[str, Any]], reward: float) -> float | None:
    """Training seconds of the first evaluation at or above ``reward`` (None: never)."""
    return next((p["train_s"] for p in points if p["reward"] >= reward), None)


def report(runs: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace, meta: dict[str, Any],
           loads: list[list[float]]) -> dict[str, Any]:
    """Print the per-seed and across-seed tables; returns the summary written to ``results.json``."""
    names = [n for n in args.contenders if all(n in r for r in runs.values())]
    averaged = {n: [ppo_vs_trl.time_averaged_reward(runs[s][n]["points"], args.budget_s) for s in args.seeds] for n in names}
    print(f"\nheld-out reward ({args.heldout} prompts, greedy), time-averaged over {args.budget_s:.0f} training seconds")
    print(f"{'contender':<10} " + " ".join(f"{'seed ' + str(s):>9}" for s in args.seeds)
          + f" {'mean':>7} {'std':>6} {'min':>6} {'max':>6} {'t=0':>6} {'end':>6} {'samples/s':>10}  time to {args.target}")
    summary: dict[str, Any] = {}
    for n in names:
        values = averaged[n]
        starts = [runs[s][n]["points"][0]["reward"] for s in args.seeds]
        ends = [runs[s][n]["points"][-1]["reward"] for s in args.seeds]
        speed = [runs[s][n]["samples_per_s"] for s in args.seeds]
        reach = [time_to(runs[s][n]["points"], args.target) for s in args.seeds]
        summary[n] = {"time_averaged": values, "mean": statistics.mean(values),
                      "std": statistics.stdev(values) if len(values) > 1 else 0.0, "start": starts, "end": ends,
                      "samples_per_s": speed, "time_to_target_s": reach}
        print(f"{n:<10} " + " ".join(f"{v:>9.3f}" for v in values)
              + f" {statistics.mean(values):>7.3f} {summary[n]['std']:>6.3f} {min(values):>6.3f} {max(values):>6.3f}"
              f" {statistics.mean(starts):>6.3f} {statistics.mean(ends):>6.3f} {statistics.mean(speed):>10.1f}  "
              + ", ".join("never" if t is None else f"{t:.0f} s" for t in reach))
    presets = [n for n in names if n != TRL]
    if TRL in names and presets:
        best = max(presets, key=lambda n: statistics.mean(averaged[n]))
        wins = [a > b for a, b in zip(averaged[best], averaged[TRL])]
        margins = [a - b for a, b in zip(averaged[best], averaged[TRL])]
        print(f"\nbest preset by mean: {best}; above TRL's time-averaged reward in {sum(wins)} of {len(wins)} seeds "
              f"(margins {', '.join(f'{m:+.3f}' for m in margins)}) -> target {'met' if all(wins) else 'NOT met'}")
        summary["_verdict"] = {"best": best, "wins": wins, "margins": margins, "met": all(wins)}
    one_minute = [load[0] for load in loads]
    print(f"load average (1 min) at the start of each of the {len(loads)} rounds: mean {statistics.mean(one_minute):.2f}, "
          f"min {min(one_minute):.2f}, max {max(one_minute):.2f} ({os.cpu_count()} CPUs)")
    return {"budget_s": args.budget_s, "seeds": args.seeds, "learning_rate": args.learning_rate, "eval_every_s": args.eval_every_s,
            "heldout": args.heldout, "target": args.target, "turn_s": ppo_vs_trl.TURN_S, "warm_start": meta,
            "presets": {n: asdict(preset_config(n, 0, args.learning_rate)) for n in PRESETS}, "cpus": os.cpu_count(),
            "loadavg_per_round": loads, "summary": summary,
            "runs": {str(s): {n: runs[s][n] for n in names} for s in args.seeds}}


def plot(runs: dict[int, dict[str, dict[str, Any]]], path: Path, args: argparse.Namespace) -> None:
    """Held-out reward against training seconds, one panel per seed, every contender in each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(args.seeds), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(args.seeds), squeeze=False)[0]
    for ax, seed in zip(axes, args.seeds):
        for name, r in runs[seed].items():
            mean = ppo_vs_trl.time_averaged_reward(r["points"], args.budget_s)
            ax.plot([p["train_s"] for p in r["points"]], [p["reward"] for p in r["points"]], marker="o", markersize=3,
                    linestyle="--" if name == TRL else "-", label=f"{name} (mean {mean:.3f})")
        ax.set(xlabel="training seconds", ylabel=f"held-out reward ({args.heldout} prompts, greedy)", title=f"seed {seed}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=60.0, help="training seconds per contender and seed (evaluations excluded)")
    parser.add_argument("--eval-every-s", type=float, default=4.0, help="held-out evaluation every this many training seconds")
    parser.add_argument("--heldout", type=int, default=64, help="held-out prompts evaluated (the first N of the demo's 128)")
    parser.add_argument("--learning-rate", type=float, default=ppo_vs_trl.DEFAULT_LEARNING_RATE, help="AdamW's rate for every contender")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="trainer seeds (the warm start uses --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the model and the warm start")
    parser.add_argument("--sft-steps", type=int, default=250, help="supervised warm-start steps (the demo's: 350)")
    parser.add_argument("--target", type=float, default=0.7, help="the held-out reward whose time to reach is reported")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="which to run")
    parser.add_argument("--output", type=Path, default=Path("runs/recipes"), help="folder for base/, seed-*/, results.json, the plot")
    parser.add_argument("--reuse-base", action="store_true", help="reuse OUTPUT/base from an earlier run (skips the warm start)")
    parser.add_argument("--docs", action="store_true", help=f"also write the plot to {DOCS_PLOT.relative_to(DOCS_PLOT.parents[2])} "
                                                            "(..._lr<rate>.png at another --learning-rate)")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)  # internal: run one contender in this process
    parser.add_argument("--control", help=argparse.SUPPRESS)  # internal: the child's ends of its two control pipes
    args = parser.parse_args()
    if not 1 <= args.heldout <= 128:
        parser.error("--heldout must be between 1 and 128 (the demo's held-out prompts)")
    if args.child:
        child(args)
        return
    args.output.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    meta = ppo_vs_trl.warm_start(args)
    root, runs, loads = args.output, {}, []
    for seed in args.seeds:
        seed_dir = root / f"seed-{seed}"
        seed_dir.mkdir(exist_ok=True)
        if not (seed_dir / "base").exists():
            (seed_dir / "base").symlink_to((root / "base").resolve(), target_is_directory=True)
        seed_args = argparse.Namespace(**{**vars(args), "output": seed_dir, "seed": seed})
        print(f"seed {seed}: {', '.join(args.contenders)}, {args.budget_s:.0f} s of training each, in turns of {ppo_vs_trl.TURN_S:.0f} s")
        runs[seed], seed_loads = ppo_vs_trl.run_contenders(seed_args, Path(__file__).resolve())
        loads += seed_loads
    summary = report(runs, args, meta, loads)
    (root / "results.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot(runs, root / "recipes.png", args)
    docs = DOCS_PLOT if args.learning_rate == ppo_vs_trl.DEFAULT_LEARNING_RATE else DOCS_PLOT.with_name(
        f"{DOCS_PLOT.stem}_lr{args.learning_rate:g}{DOCS_PLOT.suffix}")
    if args.docs:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_bytes((root / "recipes.png").read_bytes())
    print(f"\nwrote {root / 'results.json'} and {root / 'recipes.png'}" + (f", {docs}" if args.docs else ""))


if __name__ == "__main__":
    main()
