"""What the ``python`` grader's sandbox costs a grade: the process-per-grade design against the persistent worker it replaced.

A trivial grader (``return item['v']``), warm (its sandbox started and the source
loaded), graded in this process:

* ``grade``: N calls one at a time, each waiting for its answer (an RL loop that
  grades a sample as it comes); the figure is the wall clock per call;
* ``batch``: ``grade_batch`` of N samples, per sample; the new design with its
  default chunks of 16 samples a process and with ``chunk_size=1`` (every sample
  in its own process: no sample can change another's grade).

The old design is the module as it was before issue 11 (``git show REV:graders/_python_grader.py``,
a persistent worker that answered every grade over one pipe), loaded beside the
new one, so both run in the same process on the same machine. The rounds
alternate old and new, and the table keeps each figure's best and median
rounds: other work on the machine only ever adds time.

Run:  .venv/bin/python benchmarks/python_grader.py [--n 200] [--rounds 5] [--old-rev 9f9bcde]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "def grade(sample, item):\n    return item['v']\n"


def old_module(rev: str) -> ModuleType:
    """The python grader module as of ``rev``, importable beside the current one (as ``graders._python_grader_old``)."""
    text = subprocess.run(["git", "show", f"{rev}:graders/_python_grader.py"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="rftkit-bench-")) / "_python_grader_old.py"
    path.write_text(text)
    import graders  # the package its relative imports resolve in

    spec = importlib.util.spec_from_file_location("graders._python_grader_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert graders is not None
    return module


def per_grade_us(grader: Any, n: int) -> float:
    items = [{"v": (i % 100) / 100} for i in range(n)]
    started = time.perf_counter()
    for item in items:
        grade = grader.grade("x", item)
        assert grade.ok, grade.reason
    return (time.perf_counter() - started) / n * 1e6


def per_sample_us(grader: Any, n: int, **options: Any) -> float:
    items = [{"v": (i % 100) / 100} for i in range(n)]
    started = time.perf_counter()
    grades = grader.grade_batch(["x"] * n, items, **options)
    elapsed = time.perf_counter() - started
    assert all(g.ok for g in grades), [g.reason for g in grades if not g.ok][:3]
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="grades per figure per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--old-rev", default="9f9bcde", help="a commit from before the redesign")
    args = parser.parse_args()

    from graders._python_grader import PythonGrader

    old = old_module(args.old_rev)
    contenders: dict[str, Any] = {
        "old: persistent worker (namespaces)": old.PythonGrader(name="old", source=SOURCE),
        "new: fork per grade (namespaces)": PythonGrader(name="new", source=SOURCE, isolation="namespaces"),
        "new: fork per grade (basic)": PythonGrader(name="basic", source=SOURCE, isolation="basic"),
    }
    figures: dict[tuple[str, str], list[float]] = {}
    try:
        for grader in contenders.values():  # warm: sandbox started, source loaded
            assert grader.grade("x", {"v": 0.5}).ok
        for _ in range(args.rounds):
            for label, grader in contenders.items():
                figures.setdefault((label, "grade, one at a time"), []).append(per_grade_us(grader, args.n))
                if label.startswith("old"):
                    figures.setdefault((label, "grade_batch"), []).append(per_sample_us(grader, args.n))
                else:
                    figures.setdefault((label, "grade_batch"), []).append(per_sample_us(grader, args.n))
                    figures.setdefault((label, "grade_batch, chunk_size=1"), []).append(
                        per_sample_us(grader, args.n, chunk_size=1))
    finally:
        for grader in contenders.values():
            grader.close()
    print(f"| design | call | best µs per sample | median µs per sample |  ({args.n} samples, {args.rounds} rounds)")
    print("|---|---|---:|---:|")
    for (label, call), values in figures.items():
        print(f"| {label} | {call} | {min(values):,.0f} | {statistics.median(values):,.0f} |")


if __name__ == "__main__":
    main()
