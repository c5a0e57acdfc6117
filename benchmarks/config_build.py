"""The cost of building a grader from its config: ``from_config`` of the résumé grader and of a ``multi``.

Config validation runs once per grader build (a CLI command, a server start, each
batch worker, each unpickled grader), so it must stay cheap. Two configs are built
many times and the median per build is printed:

* resume: ``examples/resume/grader.json`` (structured, inline schema, four field options);
* multi: a ``multi`` of a ``string_check``, a ``text_similarity`` (fuzzy_match) and a
  ``structured`` sub-grader with a reference template, combined by a formula;
* options: a schema-free ``structured`` config whose five fields give comparator options
  (fuzzy, number, date, normalized, enum), so what it measures is mostly their validation.

Run:  .venv/bin/python benchmarks/config_build.py [--n 2000] [--repeats 7]

To compare two checkouts, run it from each in alternating processes (the machine
may be shared, so compare figures taken side by side):

    for i in 1 2 3; do PYTHONPATH=/path/to/other .venv/bin/python benchmarks/config_build.py; \
                       .venv/bin/python benchmarks/config_build.py; done
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import graders

RESUME = json.loads((Path(__file__).resolve().parents[1] / "examples" / "resume" / "grader.json").read_text(encoding="utf-8"))
MULTI: dict[str, Any] = {
    "type": "multi", "name": "contact", "calculate_output": "0.4 * name + 0.2 * bio + 0.4 * fields",
    "graders": {
        "name": {"type": "string_check", "name": "name", "operation": "eq",
                 "input": "{{ sample.output_json.name }}", "reference": "{{ item.name }}"},
        "bio": {"type": "text_similarity", "name": "bio", "evaluation_metric": "fuzzy_match",
                "input": "{{ sample.output_json.bio }}", "reference": "{{ item.bio }}", "pass_threshold": 0.8},
        "fields": {"type": "structured", "name": "fields", "reference": "{{ item.answer }}",
                   "fields": {"city": {"comparator": "normalized"}}},
    },
}

OPTIONS: dict[str, Any] = {
    "type": "structured", "name": "options",
    "fields": {"name": {"comparator": "fuzzy", "scorer": "token_set_ratio", "threshold": 0.8},
               "total": {"comparator": "number", "rel_tol": 0.01, "decimal": ","},
               "when": {"comparator": "date", "order": "day_first"},
               "tags": {"comparator": "normalized", "strip_punctuation": True, "mode": "set"},
               "status": {"comparator": "enum", "case_sensitive": False}},
}


def per_build_us(config: dict[str, Any], n: int, repeats: int) -> float:
    """The median over ``repeats`` runs of the mean microseconds one ``from_config(config)`` takes."""
    graders.from_config(config)  # warm: imports and caches
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            graders.from_config(config)
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    where = Path(graders.__file__).resolve().parents[1]
    resume = per_build_us(RESUME, args.n, args.repeats)
    multi = per_build_us(MULTI, args.n, args.repeats)
    options = per_build_us(OPTIONS, args.n, args.repeats)
    print(f"{where}: from_config resume {resume:.1f} us, multi {multi:.1f} us, options {options:.1f} us")


if __name__ == "__main__":
    main()
