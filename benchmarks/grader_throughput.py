"""Grader throughput: rftkit's StructuredGrader vs anls_star vs a minimal hand-written grader.

All three grade the same N (prediction, reference) pairs of the seed example's
shape (university, programming_languages, city, state), with varied values and
realistic mistakes (typos, dropped / extra / reordered languages, wrong city), in
one process. Each includes decoding the prediction's JSON text.

* rftkit: ``StructuredGrader(schema=Profile, fields={"programming_languages":
  {"comparator": "normalized"}})`` -- the same metric as the minimal grader
  (fuzzy ratio on the strings, set F1 on the languages; the run checks that
  every sample gets the same score), plus the extract/decode/validate stages,
  schema validation, optimal pairing and per-field details for every sample.
  This is the like-for-like row the targets refer to. Every number of the
  details (per-field scores, precision/recall/F1, matched pairs, missing and
  extra items, micro-F1 counts) is computed while grading; the ``FieldDetail``
  objects themselves are built when ``Grade.details`` is first read, which the
  run does for every grade, after the timed part. The row "details read" times
  that too, for callers that read every detail.
* rftkit-default: ``StructuredGrader(schema=Profile)`` with no options, which
  does more: list items are matched fuzzily (pairs at similarity >= 0.8).
* minimal: ``json.loads`` + rapidfuzz ratio on lower-cased strings + exact set
  F1 on the languages + mean. No validation, no details: the floor.
* anls_star: ``anls_score(reference, prediction_dict)`` from the anls_star package.

Run:  .venv/bin/python benchmarks/grader_throughput.py [--n 100000] [--anls-n 100000]
      (--n 20000 --anls-n 2000 for a quick run)
Targets: rftkit >= 100x faster than anls_star, <= 2x the minimal grader.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from rapidfuzz import fuzz

from graders import StructuredGrader


class Profile(BaseModel):
    university: str
    programming_languages: list[str]
    city: str
    state: str


UNIVERSITIES = ["University of California Berkeley", "Stanford University", "Massachusetts Institute of Technology",
                "Carnegie Mellon University", "University of Texas at Austin", "Georgia Institute of Technology",
                "University of Washington", "Cornell University", "University of Michigan", "Princeton University"]
LANGUAGES = ["python", "c++", "java", "rust", "go", "typescript", "javascript", "c#", "kotlin", "swift", "scala",
             "haskell", "ruby", "sql", "r", "c", "f#", "julia"]
PLACES = [("Los Angeles", "California"), ("Austin", "Texas"), ("Seattle", "Washington"), ("Boston", "Massachusetts"),
          ("Atlanta", "Georgia"), ("Ann Arbor", "Michigan"), ("Pittsburgh", "Pennsylvania"), ("New York", "New York")]


def typo(rng: random.Random, text: str) -> str:
    if len(text) < 3:
        return text
    i = rng.randrange(len(text) - 1)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        city, state = rng.choice(PLACES)
        ref = {"university": rng.choice(UNIVERSITIES), "programming_languages": rng.sample(LANGUAGES, rng.randint(1, 5)),
               "city": city, "state": state}
        pred = json.loads(json.dumps(ref))
        if rng.random() < 0.3:
            pred["university"] = typo(rng, pred["university"])
        if rng.random() < 0.4:
            langs = pred["programming_languages"]
            if langs and rng.random() < 0.5:
                langs.pop(rng.randrange(len(langs)))
            langs.append(rng.choice(LANGUAGES))
            rng.shuffle(langs)
        if rng.random() < 0.2:
            pred["city"], pred["state"] = rng.choice(PLACES)
        if rng.random() < 0.1:
            pred["state"] = pred["state"].lower()
        pairs.append((json.dumps(pred), ref))
    return pairs


def minimal_grade(output: str, ref: dict[str, Any]) -> dict[str, float]:
    """The floor: the same four fields, no validation, no details."""
    pred = json.loads(output)
    scores = {}
    for key in ("university", "city", "state"):
        scores[key] = fuzz.ratio(str(pred.get(key, "")).lower(), ref[key].lower()) / 100.0
    p = {x.lower() for x in pred.get("programming_languages", [])}
    r = {x.lower() for x in ref["programming_languages"]}
    hit = len(p & r)
    scores["programming_languages"] = 2 * hit / (len(p) + len(r)) if p or r else 1.0
    scores["score"] = sum(scores.values()) / 4
    return scores


Chunk = list[tuple[str, dict[str, Any]]]


def interleaved(graders: dict[str, tuple[Callable[[Chunk], list[Any]], int]], pairs: Chunk,
                chunk: int = 1000) -> dict[str, tuple[float, list[Any]]]:
    """Time each grader on the same chunks, alternating, so drift in machine speed hits all alike.

    Each grader gets ``(function over a chunk of pairs, how many pairs it grades)``;
    returns name -> (us per sample, results).
    """
    spent = dict.fromkeys(graders, 0.0)
    results: dict[str, list[Any]] = {name: [] for name in graders}
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        for name, (fn, limit) in graders.items():
            todo = part[: max(0, limit - start)]
            if not todo:
                continue
            gc.collect()
            t0 = time.perf_counter()
            graded = fn(todo)
            spent[name] += time.perf_counter() - t0
            results[name].extend(summary(g) for g in graded)  # keep scores only: a million Grade objects would
            del graded  # make every later gc.collect() (and the machine's memory) the bottleneck of the benchmark
    report = {}
    for name in graders:
        n = len(results[name])
        per = spent[name] / n * 1e6
        print(f"{name:<28} {n:>8} pairs  {spent[name]:8.2f} s  {per:9.2f} us/sample", flush=True)
        report[name] = (per, results[name])
    return report


def summary(result: Any) -> float:
    """The score of any grader's result; rftkit's must carry per-field details and no error flag."""
    if isinstance(result, dict):
        return float(result["score"])
    if hasattr(result, "details"):
        assert result.details and result.ok, "every sample must be graded with per-field details"
        return float(result.score)
    return float(result)


def each(fn: Callable[[str, dict[str, Any]], Any]) -> Callable[[Chunk], list[Any]]:
    """Grade a chunk one call at a time."""
    return lambda chunk: [fn(output, ref) for output, ref in chunk]


def batch(grader: StructuredGrader) -> Callable[[Chunk], list[Any]]:
    """Grade a chunk with the batch API (one process)."""
    return lambda chunk: grader.grade_batch([o for o, _ in chunk], [r for _, r in chunk])


def batch_read(grader: StructuredGrader) -> Callable[[Chunk], list[Any]]:
    """Grade a chunk with the batch API and read every grade's details (so their objects are built)."""
    def run(chunk: Chunk) -> list[Any]:
        grades = grader.grade_batch([o for o, _ in chunk], [r for _, r in chunk])
        for grade in grades:
            grade.details  # noqa: B018  # the read is the point: it builds the FieldDetail objects
        return grades

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="pairs graded by rftkit and the minimal grader")
    parser.add_argument("--anls-n", type=int, default=100_000, help="pairs graded by anls_star (slow: ~1 ms each)")
    args = parser.parse_args()
    pairs = make_pairs(args.n)
    grader = StructuredGrader(schema=Profile, fields={"programming_languages": {"comparator": "normalized"}})
    default = StructuredGrader(schema=Profile)
    print(f"python {sys.version.split()[0]}; {args.n} pairs of the seed example's shape")
    for output, ref in pairs[:2000]:  # warm caches and the comparators on a prefix, for all graders alike
        grader.grade(output, ref)
        default.grade(output, ref)
        minimal_grade(output, ref)
    contenders: dict[str, tuple[Callable[[Chunk], list[Any]], int]] = {
        "rftkit grade_batch": (batch(grader), args.n),
        "rftkit grade() loop": (each(grader.grade), args.n),
        "rftkit batch, details read": (batch_read(grader), args.n),
        "rftkit-default batch": (batch(default), args.n),
        "minimal": (each(minimal_grade), args.n),
    }
    try:
        from anls_star import anls_score

        contenders["anls_star"] = (each(lambda o, r: anls_score(r, json.loads(o))), args.anls_n)
    except ImportError:
        print("anls_star not installed (pip install anls-star): comparing with the minimal grader only")
    report = interleaved(contenders, pairs)
    rft_us, rft = report["rftkit grade_batch"]
    loop_us = report["rftkit grade() loop"][0]
    read_us = report["rftkit batch, details read"][0]
    default_us = report["rftkit-default batch"][0]
    min_us, mins = report["minimal"]
    worst = max(abs(g - m) for g, m in zip(rft, mins))
    assert worst < 1e-9, f"rftkit and the minimal grader disagree by {worst}: not the same metric"
    print(f"rftkit and minimal agree on every score (max difference {worst:.1e})")
    print()
    line = f"mean score   rftkit {statistics.fmean(rft):.4f}   minimal {statistics.fmean(mins):.4f}"
    if "anls_star" in report:
        anls_us, anls = report["anls_star"]
        print(line + f"   anls_star {statistics.fmean(anls):.4f}")
        print(f"anls_star / rftkit grade_batch   = {anls_us / rft_us:7.1f}x   (target >= 100x)")
        print(f"anls_star / rftkit grade() loop  = {anls_us / loop_us:7.1f}x")
        print(f"anls_star / rftkit details read  = {anls_us / read_us:7.1f}x")
        print(f"anls_star / rftkit-default batch = {anls_us / default_us:7.1f}x")
    else:
        print(line)
    print(f"rftkit grade_batch / minimal     = {rft_us / min_us:7.2f}x   (target <= 2x)")
    print(f"rftkit grade() loop / minimal    = {loop_us / min_us:7.2f}x")
    print(f"rftkit details read / minimal    = {read_us / min_us:7.2f}x")
    print(f"rftkit-default batch / minimal   = {default_us / min_us:7.2f}x")


if __name__ == "__main__":
    main()
