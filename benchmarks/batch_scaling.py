"""Batch grading scale-out: the same structured grades with 1 and with N worker processes.

Grades N (prediction, reference) pairs of the seed example's shape (the corpus
of ``grader_throughput.py``) with ``graders.grade_batch(workers=1)`` and then
``workers=2`` (or ``--workers``), in one run (``--order`` picks which runs
first), and prints the wall-clock and CPU time of each, grades per second, and
the speed-up. Each run's clock stops when ``grade_batch`` has returned every
row's Grade to the caller, the caller holds every score (``grades.scores``), and
the garbage collection that grading left due has run (``gc.collect(1)``: it
scans every grade kept, and the caller's next allocations would otherwise pay
for it): the cost of starting the workers and of bringing results back is included.
``--pool`` measures the forkserver pool that serves platforms without a safe fork. On
a shared machine the wall clock says more about the other jobs than about the
code, so the CPU time of this process and of the workers is printed too, and a
CPU-time view of the speed-up: workers=1's CPU seconds over this process's plus
one worker's share of the workers' (the chunks are handed out as workers ask,
so on idle cores each grades about its share). The
script then checks that both runs gave the same scores, that 2,000 sampled rows
(and the first and last) read the same in full (``to_dict()``, ``counts``), and
times what the workers' lazily made grades cost when read: every Grade object
with its sub-scores, and per-field details (remade by grading the pair again).

``--corpus invoices`` grades nested invoices instead (``invoice_corpus.py``: a
vendor with an address, dates, money and 1-6 line items; every grade takes the
generic path and travels back whole). ``--order`` may name ``a`` for a third run,
``grade_batch(workers=N)`` with its default ``adaptive=True``, which measures the
first rows and chooses how many workers to use (the count chosen is printed);
the runs named ``1`` and ``2`` pin the count (``adaptive=False``).

Run:    .venv/bin/python benchmarks/batch_scaling.py [--n 1000000] [--workers 2] [--order 1,2,a] [--corpus invoices] [--pool]
Target: >= 1.8x speed-up with 2 workers on 2 cores (profiles); adaptive never slower than the faster pinned run.
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
from invoice_corpus import Invoice, make_invoices

import graders.batch._engine
from graders import StructuredGrader, grade_batch


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="pairs to grade (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the parallel run (default 2)")
    parser.add_argument("--order", default="1,2", help="'1,2' (default) runs workers=1 first, '2,1' the parallel run first; "
                                                        "'a' adds a run with adaptive=True")
    parser.add_argument("--corpus", choices=["profiles", "invoices"], default="profiles",
                        help="the seed example's profiles (default, the fast path) or nested invoices (the generic path)")
    parser.add_argument("--pool", action="store_true", help="workers from the forkserver pool that serves platforms "
                                                             "without a safe fork (fork_is_safe() reads False)")
    args = parser.parse_args()
    if args.pool:
        graders.batch._engine.fork_is_safe = lambda: False  # type: ignore[assignment]  # the portable path, measured here
    print(f"making {args.n:,} pairs ({args.corpus}) ...", flush=True)
    pairs = make_pairs(args.n) if args.corpus == "profiles" else make_invoices(args.n)
    responses = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    del pairs
    grader = (StructuredGrader(schema=Profile, fields={"programming_languages": {"comparator": "normalized"}})
              if args.corpus == "profiles" else StructuredGrader(schema=Invoice))
    chosen: list[int] = []
    choose = graders.batch._engine.choose_workers

    def recorded(*a: Any, **k: Any) -> int:
        chosen.append(choose(*a, **k))
        return chosen[-1]

    graders.batch._engine.choose_workers = recorded  # type: ignore[assignment]  # to print the count the adaptive run chose
    sample = sorted({0, args.n - 1, *random.Random(1).sample(range(args.n), min(args.n, 2000))})
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; workers forked: {graders.batch._engine.fork_is_safe()}", flush=True)
    timings: dict[Any, float] = {}
    cpu_spent: dict[Any, float] = {}  # CPU seconds of the critical path: this process, plus one worker's share
    scores: dict[Any, list[float]] = {}
    seen: dict[Any, list[Any]] = {}
    runs: list[Any] = [1 if w == "1" else "a" if w == "a" else args.workers for w in args.order.split(",")]
    for workers in runs:
        gc.collect()
        cpu, child_cpu, start = time.process_time(), children_cpu(), time.perf_counter()
        adaptive = workers == "a"
        grades = grade_batch(grader, responses, references, workers=args.workers if adaptive else workers, adaptive=adaptive)
        scores[workers] = grades.scores
        # The collection of the middle generation that grading left due (its survivors are every grade kept): the
        # caller's next allocations would run it, so it is counted here, in every run alike.
        gc.collect(1)
        timings[workers] = time.perf_counter() - start
        cpu, child_cpu = time.process_time() - cpu, children_cpu() - child_cpu
        assert len(grades) == args.n
        used = chosen[-1] if adaptive and chosen else args.workers if adaptive else workers
        cpu_spent[workers] = cpu + child_cpu / used  # the workers share the chunks out between them
        label = f"workers={args.workers} adaptive (chose {used})" if adaptive else f"workers={workers}"
        print(f"{label}: {timings[workers]:.2f} s, {args.n / timings[workers]:,.0f} grades/s "
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
    for run in runs:
        assert scores[run] == scores[runs[0]], f"run {run} gave different scores"
        assert seen[run] == seen[runs[0]], f"run {run} gave different grades"
    if "a" in timings:
        print(f"adaptive: {timings['a']:.2f} s against {timings.get(1, float('nan')):.2f} s (workers=1) and "
              f"{timings.get(args.workers, float('nan')):.2f} s (workers={args.workers} pinned)")
    if 1 not in timings or args.workers not in timings:
        return
    speedup = timings[1] / timings[args.workers]
    print(f"speed-up with {args.workers} workers: {speedup:.2f}x (target >= 1.8x; {os.cpu_count()} CPUs here; "
          f"load average now {os.getloadavg()[0]:.2f})")
    print(f"CPU-time view (what a machine with {args.workers} idle cores would give, the chunks shared evenly): "
          f"{cpu_spent[1]:.2f} s / ({cpu_spent[args.workers]:.2f} s) = {cpu_spent[1] / cpu_spent[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
