"""One eval run: sample every row, grade every sample, write ``samples.jsonl`` and ``summary.json``; resume a killed run.

The output folder holds::

    run.json        the settings of the run (model source, sampling, graders, a digest of the rows)
    samples.jsonl   one line per sample, appended and flushed as each is graded
    summary.json    the summary (:func:`summarize`), written at the end
    report.html     the offline report (``graders/eval/_report.py``)

**Resuming.** Run the same command again on the same folder: the finished samples are read back
from ``samples.jsonl`` (a line cut short by a kill, a duplicate, and a sample whose request failed
are dropped: the file is rewritten without them, atomically), and only the missing samples are
drawn. Resuming with other settings is refused (``--overwrite`` starts afresh). The summary is
computed from the file, in row order, so a resumed run's summary equals an uninterrupted one's
(apart from its ``perf`` part: timings).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schemas import UserError

from .._run import run_response
from ._sampling import Completion, Request, Sampler
from ._spec import EvalRow, NamedGrader, SamplingParams

SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
SETTINGS = "run.json"


def _dump(record: Mapping[str, Any]) -> str:
    try:
        return json.dumps(record, ensure_ascii=False)
    except UnicodeEncodeError:  # pragma: no cover  # a lone surrogate: written as its \u escape
        return json.dumps(record)


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The usable records of a ``samples.jsonl``: complete lines, no failed request, the first record of each (row, sample)."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    if not path.exists():
        return []
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # cut short by a kill while it was written
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("error") is not None or "grades" not in record:
                continue
            out.setdefault((record["row"], record["sample"]), record)
    return [out[k] for k in sorted(out)]


def prepare_folder(output: Path, settings: Mapping[str, Any], *, overwrite: bool) -> list[dict[str, Any]]:
    """Make ``output`` ready; returns the finished records to keep (resume), after rewriting the file without the rest."""
    samples, stored = output / SAMPLES, output / SETTINGS
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} is a file, not a folder", code="bad_output", pointer="/output")
    if overwrite:
        for name in (SAMPLES, SUMMARY, SETTINGS, "report.html"):
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    if stored.exists():
        before = json.loads(stored.read_text(encoding="utf-8"))
        if before != json.loads(json.dumps(settings)):
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != json.loads(json.dumps(settings.get(k))))
            raise UserError(f"{output} holds a run with other settings ({', '.join(changed)} differ), so it cannot be resumed",
                            code="resume_mismatch", pointer="/output",
                            hint="pass --overwrite to start afresh in it, or choose another --output")
    elif samples.exists():
        raise UserError(f"{output} has {SAMPLES} but no {SETTINGS}: not a run this command can resume", code="resume_mismatch",
                        pointer="/output", hint="pass --overwrite, or choose another --output")
    kept = read_samples(samples)
    tmp = samples.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in kept:
            fh.write(_dump(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, samples)
    stored.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return kept


def grade_sample(graders: Sequence[NamedGrader], row: EvalRow, text: str) -> dict[str, Any]:
    """Every grader's result for one sample, each in the ``graders/run`` shape plus ``reason`` and per-field ``details``."""
    out: dict[str, Any] = {}
    for g in graders:
        start = time.perf_counter()
        grade = g.grader.grade_row(text, row.item)
        took = time.perf_counter() - start
        out[g.name] = {**run_response(g.name, g.grader.type, grade, took), "reason": grade.reason,
                       "details": {k: v.to_dict() for k, v in grade.details.items()}}
    return out


def record_of(row: EvalRow, request: Request, completion: Completion, grades: dict[str, Any] | None) -> dict[str, Any]:
    return {"row": row.index, "sample": request.sample, "line": row.line, "id": row.id,
            "input": {"prompt": row.prompt} if row.prompt is not None else {"messages": row.messages}, "item": dict(row.item),
            "output_text": completion.text, "finish_reason": completion.finish_reason,
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
            "latency_s": completion.latency_s, "attempts": completion.attempts, "error": completion.error, "grades": grades}


def run_eval(rows: Sequence[EvalRow], graders: Sequence[NamedGrader], sampler: Sampler, params: SamplingParams, output: Path, *,
             samples_per_row: int = 1, settings: Mapping[str, Any] | None = None, overwrite: bool = False,
             on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Sample, grade and write everything under ``output``; returns the summary (also in ``summary.json``).

    ``settings`` is what must match for a later run to resume this one (the CLI passes the
    model source, sampling, graders and the rows' digest). ``on_progress(done, total)`` is told
    after each sample.
    """
    if samples_per_row < 1:
        raise UserError(f"samples per row must be >= 1, got {samples_per_row}", code="bad_option", pointer="/samples")
    kept = prepare_folder(output, settings or {}, overwrite=overwrite)
    done = {(r["row"], r["sample"]) for r in kept}
    todo = [Request(row.index, k, row.prompt, row.messages) for row in rows for k in range(samples_per_row)
            if (row.index, k) not in done]
    total = len(rows) * samples_per_row
    count, failed, grade_s = len(done), 0, 0.0
    if on_progress is not None:
        on_progress(count, total)
    start = time.perf_counter()
    with (output / SAMPLES).open("a", encoding="utf-8") as fh:
        try:
            for request, completion in sampler.sample(todo, params):
                row = rows[request.row]
                grades = None
                if completion.error is None:
                    mark = time.perf_counter()
                    grades = grade_sample(graders, row, completion.text)
                    grade_s += time.perf_counter() - mark
                else:
                    failed += 1
                fh.write(_dump(record_of(row, request, completion, grades)) + "\n")
                fh.flush()
                count += completion.error is None
                if on_progress is not None:
                    on_progress(count, total)
        finally:
            sampler.close()
    wall = time.perf_counter() - start
    records = read_samples(output / SAMPLES)
    drawn = len(todo) - failed
    perf = {"wall_s": wall, "samples_drawn": drawn, "samples_per_s": drawn / wall if wall > 0 else None,
            "grade_s_per_sample": grade_s / drawn if drawn else None, "failed_requests": failed}
    summary = summarize(records, graders, rows=len(rows), samples_per_row=samples_per_row, perf=perf)
    (output / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


# --------------------------------------------------------------------------- the summary


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples of which ``c`` pass: ``1 - C(n-c, k) / C(n, k)``.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _ks(n: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k < n]
    return [*ks, n]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(records: Sequence[Mapping[str, Any]], graders: Sequence[NamedGrader], *, rows: int, samples_per_row: int,
              perf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per grader and per field: mean, pass rate at the grader's ``pass_threshold`` and pass@k, error-flag counts,
    the parse-error rate; token usage and finish reasons over the samples; ``perf`` as given."""
    out: dict[str, Any] = {"rows": rows, "samples_per_row": samples_per_row, "samples": len(records),
                           "missing_samples": rows * samples_per_row - len(records), "graders": {}}
    for g in graders:
        rewards = [r["grades"][g.name]["reward"] for r in records]
        names: dict[str, None] = {}
        errors: dict[str, int] = {}
        for r in records:
            result = r["grades"][g.name]
            names.update(dict.fromkeys(result["sub_rewards"]))
            for flag, raised in result["metadata"]["errors"].items():
                if raised is True:
                    errors[flag] = errors.get(flag, 0) + 1
        # a field a sample's grade lacks (its output did not parse) counts 0, as in `rftkit grade`'s table
        fields = {k: _mean([r["grades"][g.name]["sub_rewards"].get(k, 0.0) for r in records]) for k in names}
        entry: dict[str, Any] = {"type": g.grader.type, "mean": _mean(rewards), "pass_threshold": g.pass_threshold,
                                 "fields": {k: {"mean": v} for k, v in fields.items()},
                                 "errors": dict(sorted(errors.items())),
                                 "parse_error_rate": errors.get("sample_parse_error", 0) / len(records) if records else None}
        if g.pass_threshold is not None:
            threshold = g.pass_threshold
            entry["pass_rate"] = _mean([float(x >= threshold) for x in rewards])
            per_row: dict[int, list[bool]] = {}
            for r in records:
                per_row.setdefault(r["row"], []).append(r["grades"][g.name]["reward"] >= threshold)
            entry["pass_at_k"] = {str(k): _mean([pass_at_k(len(v), sum(v), k) for v in per_row.values() if len(v) >= k])
                                  for k in _ks(samples_per_row)}
        out["graders"][g.name] = entry
    prompt = [r["usage"]["prompt_tokens"] for r in records if r["usage"]["prompt_tokens"] is not None]
    completion = [r["usage"]["completion_tokens"] for r in records if r["usage"]["completion_tokens"] is not None]
    out["tokens"] = {"prompt": sum(prompt), "completion": sum(completion), "mean_completion": _mean(completion),
                     "samples_without_usage": len(records) - len(completion)}
    reasons: dict[str, int] = {}
    for r in records:
        key = str(r["finish_reason"])
        reasons[key] = reasons.get(key, 0) + 1
    out["finish_reasons"] = dict(sorted(reasons.items()))
    latency = sorted(r["latency_s"] for r in records)
    out["perf"] = {**(perf or {}), "latency_s": {"mean": _mean(latency), "p50": latency[len(latency) // 2] if latency else None,
                                                 "p95": latency[min(len(latency) - 1, int(len(latency) * 0.95))] if latency else None}}
    return out


@contextmanager
def progress_bar(total_label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (shown only on a terminal), as an ``on_progress`` callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(total_label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                  console=Console(stderr=True), disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(total_label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
