"""What the ``python`` grader's sandbox costs a grade: the process-per-grade design against the persistent worker it replaced.

A trivial grader (``return item['v']``), warm (its sandbox started and the source
loaded), graded in this process:

* ``grade``: N calls one at a time, each waiting for its answer (an RL loop that
  grades a sample as it comes); the figure is the wall clock per call;
* ``batch``: ``grade_batch`` of N samples, per sample; the new design with its
  default chunks of 16 samples a process and with ``chunk_size=1`` (every sample
  in its own process: no sample can change another's grade).

Each figure is given as wall clock and as CPU time (this process plus every
process of the sandbox, read from ``/proc``): on a busy machine the wall clock
mostly measures the wait for a core at each hand-off between processes, the CPU
time what the design itself spends.

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
import os
import resource
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


def supervisor(grader: Any) -> int:
    """The pid at the root of the grader's sandbox (old design: ``_worker``; new: ``_pool.sandbox``)."""
    holder = grader._worker if hasattr(grader, "_worker") else grader._pool.sandbox
    return int(holder.proc.pid)


def cpu_s(root: int) -> float:
    """CPU seconds of this process and of every process under ``root`` (with their reaped children)."""
    from graders.openai.python._sandbox import _process_tree

    tick = os.sysconf("SC_CLK_TCK")
    total = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    for pid in _process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def measure(grader: Any, n: int, batch: bool, **options: Any) -> tuple[float, float]:
    """(wall µs, CPU µs) per sample."""
    items = [{"v": (i % 100) / 100} for i in range(n)]
    root = supervisor(grader)
    cpu, started = cpu_s(root), time.perf_counter()
    if batch:
        grades = grader.grade_batch(["x"] * n, items, **options)
    else:
        grades = [grader.grade("x", item) for item in items]
    wall, cpu = time.perf_counter() - started, cpu_s(root) - cpu
    assert all(g.ok for g in grades), [g.reason for g in grades if not g.ok][:3]
    return wall / n * 1e6, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="grades per figure per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--old-rev", default="9f9bcde", help="a commit from before the redesign")
    args = parser.parse_args()

    from graders.openai.python._grader import PythonGrader

    old = old_module(args.old_rev)
    contenders: dict[str, Any] = {
        "old: persistent worker (namespaces)": old.PythonGrader(name="old", source=SOURCE),
        "new: fork per grade (namespaces)": PythonGrader(name="new", source=SOURCE, isolation="namespaces"),
        "new: fork per grade (basic)": PythonGrader(name="basic", source=SOURCE, isolation="basic"),
    }
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for grader in contenders.values():  # warm: sandbox started, source loaded
            assert grader.grade("x", {"v": 0.5}).ok
        for _ in range(args.rounds):
            for label, grader in contenders.items():
                figures.setdefault((label, "grade, one at a time"), []).append(measure(grader, args.n, False))
                figures.setdefault((label, "grade_batch"), []).append(measure(grader, args.n, True))
                if not label.startswith("old"):
                    figures.setdefault((label, "grade_batch, chunk_size=1"), []).append(
                        measure(grader, args.n, True, chunk_size=1))
    finally:
        for grader in contenders.values():
            grader.close()
    print(f"load average before: {os.getloadavg()[0]:.1f}; {args.n} samples a figure, {args.rounds} rounds")
    print("| design | call | wall µs a sample, best | median | CPU µs a sample, median |")
    print("|---|---|---:|---:|---:|")
    for (label, call), values in figures.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"| {label} | {call} | {min(walls):,.0f} | {statistics.median(walls):,.0f} | {statistics.median(cpus):,.0f} |")


if __name__ == "__main__":
    main()
