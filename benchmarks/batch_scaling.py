"""Batch grading scale-out: the same structured grades with 1 and with N worker processes.

Grades N (prediction, reference) pairs of the seed example's shape (the corpus
of ``grader_throughput.py``) with ``graders.grade_batch(workers=1)`` and then
``workers=2`` (or ``--workers``), in one run, and prints the wall-clock time of
each, grades per second, and the speed-up. Each run returns every Grade to the
caller (scores, per-field details, reasons on demand), so the cost of shipping
results back from the workers is included. Both runs must give the same scores;
the script checks that.

Run:    .venv/bin/python benchmarks/batch_scaling.py [--n 1000000] [--workers 2]
Target: >= 1.8x speed-up with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grader_throughput import Profile, make_pairs

from graders import StructuredGrader, grade_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="pairs to grade (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the parallel run (default 2)")
    args = parser.parse_args()
    print(f"making {args.n:,} pairs ...", flush=True)
    pairs = make_pairs(args.n)
    responses = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    grader = StructuredGrader(schema=Profile, fields={"programming_languages": {"comparator": "normalized"}})
    timings: dict[int, float] = {}
    scores: dict[int, list[float]] = {}
    for workers in (1, args.workers):
        start = time.perf_counter()
        grades = grade_batch(grader, responses, references, workers=workers)
        timings[workers] = time.perf_counter() - start
        scores[workers] = [g.score for g in grades]
        assert len(grades) == args.n and all(g.details for g in grades if g.ok)
        del grades
        print(f"workers={workers}: {timings[workers]:.2f} s, {args.n / timings[workers]:,.0f} grades/s", flush=True)
    assert scores[1] == scores[args.workers], "the parallel run gave different scores"
    speedup = timings[1] / timings[args.workers]
    print(f"speed-up with {args.workers} workers: {speedup:.2f}x (target >= 1.8x; {os.cpu_count()} CPUs here)")


if __name__ == "__main__":
    main()
