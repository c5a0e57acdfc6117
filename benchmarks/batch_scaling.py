"""Batch grading scale-out: the same structured grades with 1 and with N worker processes.

Grades N (prediction, reference) pairs of the seed example's shape (the corpus
of ``grader_throughput.py``) with ``graders.grade_batch(workers=1)`` and then
``workers=2`` (or ``--workers``), in one run (``--order`` picks which runs
first), and prints the wall-clock and CPU time of each, grades per second, and
the speed-up. Each run's clock stops when ``grade_batch`` has returned every
row's Grade to the caller and the caller holds every score (``grades.scores``):
the cost of starting the workers and of bringing results back is included. On
a shared machine the wall clock says more about the other jobs than about the
code, so the CPU time of this process and of the workers is printed too, and a
CPU-time view of the speed-up: workers=1's CPU seconds over this process's plus
one worker's share of the workers' (the chunks are handed out as workers ask,
so on idle cores each grades about its share). The
script then checks that both runs gave the same scores, that 2,000 sampled rows
(and the first and last) read the same in full (``to_dict()``, ``counts``), and
times what the workers' lazily made grades cost when read: every Grade object
with its sub-scores, and per-field details (remade by grading the pair again).

Run:    .venv/bin/python benchmarks/batch_scaling.py [--n 1000000] [--workers 2] [--order 1,2]
Target: >= 1.8x speed-up with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grader_throughput import Profile, make_pairs

from graders import StructuredGrader, grade_batch
from graders._batch import fork_is_safe


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="pairs to grade (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the parallel run (default 2)")
    parser.add_argument("--order", default="1,2", help="'1,2' (default) runs workers=1 first, '2,1' the parallel run first")
    args = parser.parse_args()
    print(f"making {args.n:,} pairs ...", flush=True)
    pairs = make_pairs(args.n)
    responses = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    del pairs
    grader = StructuredGrader(schema=Profile, fields={"programming_languages": {"comparator": "normalized"}})
    sample = sorted({0, args.n - 1, *random.Random(1).sample(range(args.n), min(args.n, 2000))})
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; workers forked: {fork_is_safe()}", flush=True)
    timings: dict[int, float] = {}
    cpu_spent: dict[int, float] = {}  # CPU seconds of the critical path: this process, plus one worker's share
    scores: dict[int, list[float]] = {}
    seen: dict[int, list[Any]] = {}
    runs = [1 if w == "1" else args.workers for w in args.order.split(",")]
    for workers in runs:
        gc.collect()
        cpu, child_cpu, start = time.process_time(), children_cpu(), time.perf_counter()
        grades = grade_batch(grader, responses, references, workers=workers)
        scores[workers] = grades.scores
        timings[workers] = time.perf_counter() - start
        cpu, child_cpu = time.process_time() - cpu, children_cpu() - child_cpu
        assert len(grades) == args.n
        cpu_spent[workers] = cpu + child_cpu / workers  # the workers share the chunks out between them
        print(f"workers={workers}: {timings[workers]:.2f} s, {args.n / timings[workers]:,.0f} grades/s "
              f"(CPU: this process {cpu:.2f} s, workers {child_cpu:.2f} s)", flush=True)
        seen[workers] = [(grades[i].to_dict(), grades[i].counts) for i in sample]
        if workers != 1:
            start = time.perf_counter()
            kept = sum(len(g.sub_scores) for g in grades)
            every = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(0, args.n, max(1, args.n // 10_000)):
                assert grades[i].details
            reads = len(range(0, args.n, max(1, args.n // 10_000)))
            print(f"  then reading every Grade and its sub-scores ({kept:,} in all): {every:.2f} s; "
                  f"details of {reads:,} rows, remade here: {(time.perf_counter() - start) / reads * 1e6:.1f} us a row",
                  flush=True)
        del grades
    assert scores[1] == scores[args.workers], "the parallel run gave different scores"
    assert seen[1] == seen[args.workers], "the parallel run gave different grades"
    speedup = timings[1] / timings[args.workers]
    print(f"speed-up with {args.workers} workers: {speedup:.2f}x (target >= 1.8x; {os.cpu_count()} CPUs here; "
          f"load average now {os.getloadavg()[0]:.2f})")
    print(f"CPU-time view (what a machine with {args.workers} idle cores would give, the chunks shared evenly): "
          f"{cpu_spent[1]:.2f} s / ({cpu_spent[args.workers]:.2f} s) = {cpu_spent[1] / cpu_spent[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
