

"""Grading a whole dataset: in this process, in worker processes, or on a Ray cluster.

:func:`grade_rows` is what ``rftkit grade`` runs. Every row comes back, in input
order, as a :class:`RowResult` (the grade and the seconds it took), and nothing is
dropped: a row whose grading *raised* (a grader bug, or a structured grader
handed a reference that breaks its schema) becomes a zero grade with
``other_error`` and the exception in its reason, so one bad row never costs the
other 99,999. That catch sits here, at the dataset boundary, not in scoring code:
:meth:`grade` itself still raises, and :func:`graders.grade_batch` still
propagates.

Backends:

- ``local`` -- one process (the default for ``workers=1``);
- ``processes`` -- ``workers`` processes on this machine (``forkserver`` start),
  rows sent in chunks, the grader sent once per worker;
- ``ray`` -- Ray tasks, one per chunk, the grader put in Ray's object store once.
  ``ray_address=None`` joins the cluster named by ``RAY_ADDRESS`` or starts a
  local one with ``workers`` CPUs.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .._errors import GraderConfigError
from .._result import Grade, no_errors
from ._local import gc_paused
from ._pool import _pickled, worker_grader, worker_pool

Backend = Literal["local", "processes", "ray"]
"""Where rows are graded: this process, worker processes on this machine, or Ray tasks."""

ErrorMode = Literal["raise", "flag"]
"""What a row whose grading raised becomes: the exception, propagated (``raise``), or a zero grade flagged
``other_error`` with the exception in its reason (``flag``)."""


class RowGrader(Protocol):
    """Any grader: ``grade(sample_or_response, item_or_reference) -> Grade``."""

    def grade(self, sample: Any, item: Any, /) -> Grade: ...


@dataclass(frozen=True, slots=True)
class RowResult:
    """One graded row."""

    grade: Grade
    seconds: float
    """Wall-clock seconds this row's grading took."""
    raised: bool = False
    """True when grading raised and the grade is the flagged zero standing in for it."""


def _grade_one(grader: RowGrader, sample: Any, item: Any, flag: bool = True) -> RowResult:
    start = time.perf_counter()
    try:
        grade = grader.grade(sample, item)
    except Exception as exc:  # the dataset boundary: the row is reported, not lost (module docstring)
        if not flag:
            raise
        errors = no_errors()
        errors["other_error"] = True
        return RowResult(Grade(0.0, errors=errors, reason=f"grading raised {type(exc).__name__}: {exc}"),
                         time.perf_counter() - start, raised=True)
    return RowResult(grade, time.perf_counter() - start)


def _grade_chunk(grader: RowGrader, chunk: Sequence[tuple[Any, Any]], flag: bool = True) -> list[RowResult]:
    with gc_paused():
        return [_grade_one(grader, sample, item, flag) for sample, item in chunk]


def _sent_chunk(grader: RowGrader, chunk: Sequence[tuple[Any, Any]], flag: bool = True) -> bytes:
    """A chunk graded where it runs (a worker process, a Ray task), pickled for the trip back; a row whose
    grade nests too deeply to pickle is None, and :func:`_received` grades it again here."""
    return _pickled(_grade_chunk(grader, chunk, flag))


def _worker_chunk(chunk: Sequence[tuple[Any, Any]], flag: bool = True) -> bytes:
    return _sent_chunk(worker_grader(), chunk, flag)


def _received_from(grader: RowGrader, chunk: Sequence[tuple[Any, Any]], future: Future[bytes],
                   flag: bool = True) -> list[RowResult]:
    """A chunk's results from a worker; a chunk holding a row nested too deeply to send is graded here."""
    try:
        sent = future.result()
    except RecursionError:
        return _grade_chunk(grader, chunk, flag)
    return _received(grader, chunk, sent, flag)


def _received(grader: RowGrader, chunk: Sequence[tuple[Any, Any]], sent: bytes, flag: bool = True) -> list[RowResult]:
    """A chunk's results from :func:`_sent_chunk`, each row that could not travel graded again in this process."""
    results: list[RowResult | None] = pickle.loads(sent)
    return [_grade_one(grader, *pair, flag) if r is None else r for pair, r in zip(chunk, results)]


def grade_rows(grader: RowGrader, samples: Sequence[Any], items: Sequence[Any], *, workers: int = 1,
               backend: Backend | None = None, chunk_size: int | None = None, ray_address: str | None = None,
               on_progress: Callable[[int], None] | None = None, errors: ErrorMode = "flag") -> list[RowResult]:
    """Grade ``samples[i]`` against ``items[i]`` for every i; one :class:`RowResult` per row, in input order.

    ``backend`` defaults to ``local`` for one worker and ``processes`` for more.
    ``on_progress(n)`` is called as each chunk of ``n`` rows finishes. ``errors="flag"`` (the default here)
    turns a row whose grading raised into a flagged zero (``raised``); ``errors="raise"`` lets the exception
    of the first such row in input order propagate.

    >>> from graders import StructuredGrader
    >>> rows = grade_rows(StructuredGrader(), ['{"a": 1}', "not json"], [{"a": 1}, {"a": 1}])
    >>> [(r.grade.score, r.grade.ok) for r in rows]
    [(1.0, True), (0.0, False)]
    """
    if errors not in ("flag", "raise"):
        raise GraderConfigError(f"unknown errors mode {errors!r}", code="bad_option", pointer="/errors", hint="flag or raise")
    flag = errors == "flag"
    if len(samples) != len(items):
        raise GraderConfigError(f"{len(samples)} samples but {len(items)} items", code="length_mismatch")
    if workers < 1:
        raise GraderConfigError(f"workers must be >= 1, got {workers}", code="bad_option", pointer="/workers")
    backend = backend or ("local" if workers == 1 else "processes")
    pairs = list(zip(samples, items))
    size = chunk_size or max(1, min(1000, len(pairs) // (workers * 8) or 1))
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    if backend == "local":
        parts: Iterator[list[RowResult]] = (_grade_chunk(grader, c, flag) for c in chunks)
        return _collect(parts, on_progress)
    if backend == "processes":
        with worker_pool(grader, workers) as pool:
            futures = [pool.submit(_worker_chunk, c, flag) for c in chunks]
            return _collect((_received_from(grader, c, f, flag) for c, f in zip(chunks, futures)), on_progress)
    if backend == "ray":
        return _collect(_ray_chunks(grader, chunks, workers, ray_address, flag), on_progress)
    raise GraderConfigError(f"unknown backend {backend!r}", code="bad_option", pointer="/backend",
                            hint="local, processes or ray")


def _collect(parts: Iterator[list[RowResult]], on_progress: Callable[[int], None] | None) -> list[RowResult]:
    out: list[RowResult] = []
    for part in parts:
        out.extend(part)
        if on_progress is not None:
            on_progress(len(part))
    return out


def _ray_chunks(grader: RowGrader, chunks: list[list[tuple[Any, Any]]], workers: int,
                address: str | None, flag: bool = True) -> Iterator[list[RowResult]]:
    """Grade each chunk as a Ray task; yield results in input order as they are ready."""
    try:
        import ray
    except ImportError:
        raise GraderConfigError("backend 'ray' needs Ray: pip install 'rftkit[ray]'", code="missing_extra",
                                pointer="/backend") from None
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(_sent_chunk)
        grader_ref = ray.put(grader)
        pending = [remote.remote(grader_ref, chunk, flag) for chunk in chunks]
        for chunk, ref in zip(chunks, pending):
            yield _received(grader, chunk, ray.get(ref), flag)
    finally:
        if started:
            ray.shutdown()


