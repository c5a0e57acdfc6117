"""Dataset validation throughput: ``graders.datasets.validate_dataset`` vs a plain ``jsonschema`` loop.

One generated OpenAI-RFT JSONL file (the résumé shape: messages plus a reference
with university, programming_languages, city, state) is read by:

* rftkit: ``validate_dataset(path, response_schema=Profile, grader=StructuredGrader(schema=Profile))``
  -- UTF-8 and JSON per line, message structure, the reference against the schema,
  the gold self-check (every reference graded as the answer by the structured
  grader), duplicate prompts. Everything the CLI does except printing.
* plain loop: ``for line in file: jsonschema validator.iter_errors(json.loads(line)["reference"])``
  with the validator built once -- the schema check alone, nothing else.

Each runs in its own fresh subprocess on the same file, so its peak memory (the
growth of ``ru_maxrss`` over the post-import baseline) is its own; validation is
run again on the first tenth of the file to show that memory stays flat in the
file size (the duplicate index adds 16 bytes a row).

Run:  .venv/bin/python benchmarks/validate_throughput.py [--rows 1000000]
Target: rftkit at least as fast as the plain loop while doing all its checks.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

UNIVERSITIES = ["University of California Berkeley", "Stanford University", "Massachusetts Institute of Technology",
                "Carnegie Mellon University", "University of Texas at Austin", "Georgia Institute of Technology"]
LANGUAGES = ["python", "c++", "java", "rust", "go", "typescript", "javascript", "c#", "kotlin", "swift", "sql", "r"]
PLACES = [("Los Angeles", "California"), ("Austin", "Texas"), ("Seattle", "Washington"), ("Boston", "Massachusetts")]


class Profile(BaseModel):
    university: str
    programming_languages: list[str]
    city: str
    state: str


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` distinct, valid rows (each prompt names its row number, so none repeats)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            uni = rng.choice(UNIVERSITIES)
            langs = rng.sample(LANGUAGES, rng.randint(1, 4))
            city, state = rng.choice(PLACES)
            prompt = f"Candidate {i}. Studied at {uni}. Skills: {', '.join(langs)}. Based in {city}, {state}."
            row = {"messages": [{"role": "system", "content": "Extract the profile as JSON."}, {"role": "user", "content": prompt}],
                   "reference": {"university": uni, "programming_languages": langs, "city": city, "state": state}}
            fh.write(json.dumps(row) + "\n")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(kind: str, path: Path) -> dict[str, Any]:
    """Run one side in this (fresh) process; return rows, seconds and peak memory growth."""
    if kind == "rftkit":
        from graders import StructuredGrader
        from graders.datasets import validate_dataset

        grader = StructuredGrader(schema=Profile)
        base = _maxrss_mb()
        start = time.perf_counter()
        report = validate_dataset(path, response_schema=Profile, grader=grader)
        seconds = time.perf_counter() - start
        assert report.errors == 0 and report.warnings == 0, report.to_dict()["summary"]
        assert report.checks == ("json", "structure", "schema", "gold", "duplicates"), report.checks
        rows, problems = report.rows, report.errors
    else:
        import jsonschema

        validator = jsonschema.Draft202012Validator(Profile.model_json_schema())
        base = _maxrss_mb()
        start = time.perf_counter()
        rows = problems = 0
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                rows += 1
                problems += len(list(validator.iter_errors(json.loads(line)["reference"])))
        seconds = time.perf_counter() - start
    return {"rows": rows, "problems": problems, "seconds": seconds, "peak_mb": _maxrss_mb() - base}


def run_worker(kind: str, path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--path", str(path)],
                         capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker", choices=["rftkit", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        full, tenth = Path(tmp, "train.jsonl"), Path(tmp, "train_tenth.jsonl")
        start = time.perf_counter()
        generate(full, args.rows)
        generate(tenth, max(1, args.rows // 10))
        size_mb = full.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size_mb:,.0f} MB) in {time.perf_counter() - start:.1f} s; python {sys.version.split()[0]}")
        ours = run_worker("rftkit", full)
        plain = run_worker("plain", full)
        small = run_worker("rftkit", tenth)
    assert ours["rows"] == plain["rows"] == args.rows and plain["problems"] == 0
    ours_rate, plain_rate = ours["rows"] / ours["seconds"], plain["rows"] / plain["seconds"]
    print(f"{'':34} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak MB':>8}")
    print(f"{'rftkit validate_dataset (all checks)':34} {ours['rows']:>10,} {ours['seconds']:>8.2f} {ours_rate:>10,.0f} {ours['peak_mb']:>8.1f}")
    print(f"{'plain jsonschema loop':34} {plain['rows']:>10,} {plain['seconds']:>8.2f} {plain_rate:>10,.0f} {plain['peak_mb']:>8.1f}")
    print(f"{'rftkit on a tenth of the file':34} {small['rows']:>10,} {small['seconds']:>8.2f} "
          f"{small['rows'] / small['seconds']:>10,.0f} {small['peak_mb']:>8.1f}")
    print(f"ratio rftkit / plain (rows/s): {ours_rate / plain_rate:.2f}x; "
          f"peak memory growth {small['peak_mb']:.1f} MB at {small['rows']:,} rows vs {ours['peak_mb']:.1f} MB at {ours['rows']:,}")


if __name__ == "__main__":
    main()
