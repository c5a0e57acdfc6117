"""``rftkit grade`` on many résumé rows: one process, N workers pinned, and the adaptive choice.

Writes N rows of the seed example's shape (the corpus of ``grader_throughput.py``:
``output`` a model's JSON text, ``reference`` the answer) to a JSONL file once,
then runs the ``grade`` command in this process (``graders._cli.app``, as the
console command does after its imports) with ``examples/resume/grader.json``,
once per entry of ``--order``: ``1`` (``--workers 1``), ``2`` (``--workers N``
with the count pinned to N) and ``a`` (``--workers N``, the count chosen by the
adaptive probe, which is printed). Each run prints its CPU time too: this process's, the forked workers' (a
``forkserver`` pool's workers are not this process's children and are not
counted), and the critical path, this process's plus one worker's share (the
chunks are handed out as workers ask): on a shared machine the wall clock
measures the other jobs, and the critical path what idle cores would give.
Each run's clock covers the whole command:
reading the file, grading, writing every row's output line (to ``--output``,
``/dev/null`` by default, so a disk's speed does not count) and the summary.
The outputs of the runs are checked to be the same, ``execution_time`` aside.

The pinning works on any tree: a tree whose ``rftkit grade`` has no adaptive
choice (the ``graders.batch._engine.choose_workers`` it would call is absent or
not called) runs ``--workers N`` as it is, and says so. To compare two trees,
run this script under ``benchmarks/side_by_side.py`` (it alternates the trees).

Run:    .venv/bin/python benchmarks/cli_grade.py --n 200000 --order 1,2,a
        .venv/bin/python benchmarks/side_by_side.py --rounds 3 --tree main=/tmp/main-ref --tree now=. \\
            --figure 'w1=workers=1: ([\\d.]+) s' --figure 'w2=workers=2 pinned: ([\\d.]+) s' \\
            --figure 'wa=workers=2 adaptive[^:]*: ([\\d.]+) s' -- $PWD/benchmarks/cli_grade.py --n 200000 --order 1,2,a
Target: --workers 2's critical path at least 1.5x shorter than --workers 1's (what 2 idle cores give; the JSONL
        reading stays in this process and bounds it); adaptive never slower than the faster pinned run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_scaling import children_cpu
from grader_throughput import make_pairs

import graders
from graders._cli import app

GRADER = Path(__file__).resolve().parents[1] / "examples" / "resume" / "grader.json"


def corpus(n: int) -> Path:
    """The N-row JSONL file (written once per N, in the temp directory)."""
    path = Path(tempfile.gettempdir()) / f"rftkit-cli-grade-{n}.jsonl"
    if not path.exists():
        part = path.with_suffix(".part")
        with part.open("w", encoding="utf-8") as fh:
            for k, (output, reference) in enumerate(make_pairs(n)):
                fh.write(json.dumps({"id": k, "output": output, "reference": reference}) + "\n")
        part.rename(path)
    return path


def run(data: Path, output: str, workers: int, pin: bool) -> tuple[float, str, list[int]]:
    """One ``rftkit grade`` run: its seconds, its printed summary, and the worker counts the adaptive probe chose."""
    chosen: list[int] = []
    engine: Any = getattr(getattr(graders, "batch", None), "_engine", None)
    choose = getattr(engine, "choose_workers", None)
    if choose is not None:
        def recorded(*args: Any, **kwargs: Any) -> int:
            chosen.append(args[2] if pin else choose(*args, **kwargs))  # pinned: every worker asked for
            return chosen[-1]
        engine.choose_workers = recorded
    printed = io.StringIO()
    cpu, children = time.process_time(), children_cpu()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(printed):
            app(["grade", str(data), "-g", str(GRADER), "-o", output, "--workers", str(workers)], standalone_mode=False)
    finally:
        if choose is not None:
            engine.choose_workers = choose
    took = time.perf_counter() - start
    cpu, children = time.process_time() - cpu, children_cpu() - children
    used = chosen[0] if chosen else workers
    path = cpu + children / used  # this process, plus one worker's share: the chunks are handed out as workers ask
    print(f"  CPU: this process {cpu:.2f} s, forked workers {children:.2f} s; critical path {path:.2f} s", flush=True)
    return took, printed.getvalue(), chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="rows (default 200,000)")
    parser.add_argument("--workers", type=int, default=2, help="N for the runs '2' and 'a' (default 2)")
    parser.add_argument("--order", default="1,2,a", help="runs in order: 1, 2 (N pinned), a (N, adaptive)")
    parser.add_argument("--output", default=os.devnull, help="where the output lines go (default: the null device)")
    args = parser.parse_args()
    data = corpus(args.n)
    print(f"{args.n:,} rows in {data}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    summaries: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for key in args.order.split(","):
        workers = 1 if key == "1" else args.workers
        output = args.output if args.output == os.devnull else f"{args.output}.{key}"
        took, printed, chosen = run(data, output, workers, pin=key != "a")
        summaries[key] = printed
        label = {"1": "workers=1", "2": f"workers={workers} pinned", "a": f"workers={workers} adaptive"}[key]
        if key == "a":
            label += f" (chose {chosen[0]})" if chosen else " (no adaptive choice in this tree)"
        print(f"{label}: {took:.2f} s, {args.n / took:,.0f} rows/s", flush=True)
        if output != os.devnull:
            outputs[key] = re.sub(r'"execution_time": [^,]+,', "", Path(output).read_text(encoding="utf-8"))
    first = next(iter(summaries))
    assert all(s == summaries[first] for s in summaries.values()), "the runs printed different summaries"
    assert all(o == outputs[first] for o in outputs.values()), "the runs wrote different outputs"
    print("summaries" + (" and outputs" if outputs else "") + " identical across runs")


if __name__ == "__main__":
    main()
