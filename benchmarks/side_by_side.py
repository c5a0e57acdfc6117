"""Run one benchmark script against several source trees, alternating, and print medians and ratios.

Each tree is a checkout of rftkit (for example ``git worktree add --detach
/tmp/base f68cab2``, or a copy with one piece of code switched off). In every
round the script runs the benchmark once per tree, in a rotated order, with
that tree first on ``PYTHONPATH`` and as the working directory (so the
benchmark and the server it starts import that tree's ``graders`` and
``schemas``), and reads the figures named by ``--figure`` from its output.
The first tree is the reference: for every other tree it prints, per figure,
the median over the rounds and the median of the per-round ratios to the
reference. Alternating rounds let a change in the machine's load hit every tree
alike, so the ratio holds on a shared machine where the absolute figures do not.

Run (the ratios of issue 14's speed-layer table)::

    .venv/bin/python benchmarks/side_by_side.py --rounds 3 \\
        --tree base=/tmp/base --tree now=. \\
        --figure 'batch/minimal=rftkit grade_batch / minimal\\s+=\\s+([\\d.]+)' \\
        -- benchmarks/grader_throughput.py --n 50000 --anls-n 500

A figure is ``name=regex``: the regex's first group, read as a number (commas
removed), from the first line that matches. A run whose output lacks a figure
stops the script with that output.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_once(name: str, tree: Path, command: list[str], figures: dict[str, re.Pattern[str]]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *command], cwd=tree, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    out = done.stdout + done.stderr
    found: dict[str, float] = {}
    for figure, pattern in figures.items():
        match = pattern.search(out)
        if match is None or done.returncode != 0:
            raise SystemExit(f"{name} ({tree}): no figure {figure!r} (exit {done.returncode}) in:\n{out[-4000:]}")
        found[figure] = float(match.group(1).replace(",", ""))
    print(f"  {name}: " + ", ".join(f"{k} {v:g}" for k, v in found.items()) + f"  ({took:.0f} s)", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="name=path of a source tree; the first is the reference")
    parser.add_argument("--figure", action="append", required=True, help="name=regex whose first group is a number")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("command", nargs="+", help="the benchmark script and its arguments (after --)")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    paths = {name: Path(path).resolve() for name, path in trees.items()}
    figures = {name: re.compile(regex) for name, regex in (f.split("=", 1) for f in args.figure)}
    names = list(paths)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {' '.join(args.command)}", flush=True)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        print(f"round {r + 1}: {', '.join(order)}", flush=True)
        for name in order:
            results[name].append(run_once(name, paths[name], args.command, figures))
    print(f"load average {os.getloadavg()[0]:.2f}")
    reference = names[0]
    width = max(len(n) for n in names)
    for figure in figures:
        print(f"{figure}:")
        for name in names:
            values = [run[figure] for run in results[name]]
            ratios = [run[figure] / ref[figure] for run, ref in zip(results[name], results[reference])]
            print(f"  {name:<{width}}  median {statistics.median(values):12,.2f}  (runs {', '.join(f'{v:g}' for v in values)})"
                  + ("" if name == reference else f"  ratio to {reference} {statistics.median(ratios):.3f}"
                     f" (per round {', '.join(f'{x:.3f}' for x in ratios)})"))


if __name__ == "__main__":
    main()
