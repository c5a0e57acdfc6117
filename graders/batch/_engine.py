

"""Grading many responses at once, in worker processes.

Where ``fork`` is safe (:func:`fork_is_safe`), :func:`grade_batch` forks its
workers with the batch already in memory, so no response or reference is
pickled: each worker takes chunks of row numbers from a counter in shared
memory, grades them with its own copy of the grader (rebuilt from its pickle,
so a grader's connections and sandboxes are never shared with this process),
and sends back per chunk the scores as one array. A structured fast-path grade
(whose details are not built yet) goes no further: it is made again in this
process, by grading that pair, when the caller first reads it (the grader is
deterministic; the score is checked). Any other grade travels whole, pickled.
The result is a :class:`GradeList`, a list whose Grade objects are made as
they are read. The exchange was the cost: pickling a fast-path grade and its
pair costs more than the grade itself (``benchmarks/batch_scaling.py``).

Elsewhere the workers are started with ``forkserver`` (``spawn`` where that is
missing), the grader is sent once per worker and chunks of (response,
reference) pairs go out pickled.

:func:`grade_batch` starts workers only where they pay (``adaptive``, the
default): it grades the first rows here, measures what a row costs to grade and
to send back, and :func:`choose_workers` picks the count from that.

Either way results come back in input order, and a worker never swallows a
grader bug: the exception of the first row (in input order) whose grading
raised propagates to the caller, as with ``workers=1``. Bad *responses* are not
exceptions -- they come back as flagged zero grades, like any other.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import GraderConfigError
from .._lazy_grade import details_unbuilt
from .._result import Grade
from ._forked import GradeList, _grade_forked, _joined, fork_is_safe
from ._local import _grade_all, _Grades, gc_paused
from ._pool import _grade_pooled
from ._rows import Backend, ErrorMode, grade_rows

# --------------------------------------------------------------------------- the entry point


@dataclass(frozen=True, slots=True)
class Costs:
    """What one row costs, measured on the first rows of a batch (see :func:`choose_workers`)."""

    grade_s: float
    """Seconds to grade one row."""
    send_s: float
    """Seconds a worker spends pickling one row's grade for the trip back (0 for a fast-path grade, sent as its score)."""
    receive_s: float
    """Seconds this process spends unpickling one row's grade (it does them all, one after another)."""
    out_s: float = 0.0
    """Seconds this process spends pickling one row's response and reference for a worker (``forkserver`` and
    ``spawn`` workers only: forked ones find the batch in memory)."""


STARTUP_S = {"fork": 0.02, "pool": 0.5}
"""Seconds to start one worker: a fork of this process, or a ``forkserver``/``spawn`` process that imports graders."""


def choose_workers(costs: Costs, rows: int, workers: int, start: str = "fork") -> int:
    """How many of ``workers`` processes grade ``rows`` rows fastest, by a model of the costs; 1 means here.

    One process takes ``rows * grade_s``. ``w`` workers take
    ``w * startup + rows * (grade_s + send_s) / w + rows * (receive_s + out_s)``:
    the workers share the grading and the pickling of grades, and this process
    unpickles every grade that comes back and, for workers that are not forked
    (``start="pool"``), pickles every row it sends (counted in full, though they
    overlap the workers' grading). Workers are used only when that is under 80 %
    of one process's time, so that a close call stays in this process.

    >>> choose_workers(Costs(grade_s=7e-6, send_s=0.0, receive_s=0.0), 1_000_000, 2)   # fast path, a million rows
    2
    >>> choose_workers(Costs(grade_s=70e-6, send_s=50e-6, receive_s=40e-6), 20_000, 2)  # nested grades sent whole
    1
    >>> choose_workers(Costs(grade_s=7e-6, send_s=0.0, receive_s=0.0), 1_000, 8)        # too few rows to start one
    1
    """
    alone = rows * costs.grade_s
    best, best_s = 1, 0.8 * alone
    for w in range(2, workers + 1):
        serial = costs.receive_s + (costs.out_s if start == "pool" else 0.0)
        took = w * STARTUP_S[start] + rows * (costs.grade_s + costs.send_s) / w + rows * serial
        if took < best_s:
            best, best_s = w, took
    return best


_PROBE_ROWS = 64
_PROBE_S = 0.05


def _probe(grader: _Grades, responses: list[Any], references: list[Any]) -> tuple[list[Grade], Costs]:
    """Grade the first rows here (at least 8, at most 64, for about 50 ms) and measure what a row costs."""
    done: list[Grade] = []
    started = time.perf_counter()
    with gc_paused():
        while len(done) < min(_PROBE_ROWS, len(responses)):
            k = len(done)
            done.append(grader.grade(responses[k], references[k]))
            if len(done) >= 8 and time.perf_counter() - started > _PROBE_S:
                break
    grade_s = (time.perf_counter() - started) / len(done)
    whole = [g for g in done if not details_unbuilt(g)]  # fast-path grades travel as scores
    try:
        started = time.perf_counter()
        sent = pickle.dumps(whole, pickle.HIGHEST_PROTOCOL)
        send_s = (time.perf_counter() - started) / len(done)
        started = time.perf_counter()
        pickle.loads(sent)
        receive_s = (time.perf_counter() - started) / len(done)
    except RecursionError:  # a grade too deep to pickle is graded again here: count it as grading twice
        send_s, receive_s = 0.0, grade_s
    try:
        started = time.perf_counter()
        pickle.dumps(list(zip(responses[:len(done)], references[:len(done)])), pickle.HIGHEST_PROTOCOL)
        out_s = (time.perf_counter() - started) / len(done)
    except RecursionError:  # rows that cannot travel: a pool cannot grade them
        out_s = grade_s
    return done, Costs(grade_s, send_s, receive_s, out_s)


def grade_batch(grader: _Grades, responses: Iterable[str | Mapping[str, Any]], references: Iterable[Any], *,
                workers: int = 1, progress: bool = False, chunk_size: int | None = None,
                adaptive: bool = True, backend: Backend | None = None, errors: ErrorMode = "raise",
                ray_address: str | None = None) -> GradeList:
    """Grade ``responses[i]`` against ``references[i]`` for every i; results in input order, as a :class:`GradeList`.

    ``workers=1`` grades in this process; ``workers=N`` uses up to N processes: forked
    with the batch in memory where that is safe (see :func:`fork_is_safe`; the
    scores come back as arrays, and a structured fast-path grade is made again
    here when first read), else started with ``forkserver`` (``spawn`` where
    missing) and sent the pairs. Either way every grade reads the same as with
    ``workers=1``. ``progress=True`` shows a progress bar. From forked workers a
    grade is made when first read, from the same response and reference objects
    (the lists are copied, their items are not), so do not change those until then.

    With ``adaptive`` (the default) the first rows are graded here while what a
    row costs is measured (grading it, and pickling its grade both ways), and
    :func:`choose_workers` decides how many of the N processes grade the rest: a
    batch whose grades cost less than their trip back (nested grades sent whole),
    or too small to pay for starting a process, is graded here. ``adaptive=False``
    uses exactly N.

    ``backend`` picks where rows are graded: ``local`` (this process), ``processes``
    (the default for ``workers > 1``: the paths above) or ``ray`` (Ray tasks, one per
    chunk, on the cluster ``ray_address`` or ``RAY_ADDRESS`` names, else a local one
    with ``workers`` CPUs). ``errors`` says what a row whose grading raised becomes:
    ``raise`` (the default: the first such row's exception propagates) or ``flag``
    (a zero grade flagged ``other_error``, the exception in its reason; the dataset
    boundary of ``rftkit grade``).
    """
    responses = responses if type(responses) is list else list(responses)
    references = references if type(references) is list else list(references)
    if len(responses) != len(references):
        raise GraderConfigError(f"{len(responses)} responses but {len(references)} references", code="length_mismatch",
                                hint="pass one reference per response")
    if workers < 1:
        raise GraderConfigError(f"workers must be >= 1, got {workers}", code="bad_option", pointer="/workers")
    if backend not in (None, "local", "processes", "ray"):
        raise GraderConfigError(f"unknown backend {backend!r}", code="bad_option", pointer="/backend",
                                hint="local, processes or ray")
    if errors not in ("raise", "flag"):
        raise GraderConfigError(f"unknown errors mode {errors!r}", code="bad_option", pointer="/errors", hint="raise or flag")
    if backend == "ray" or errors == "flag":
        rows = grade_rows(grader, responses, references, workers=workers, backend=backend, chunk_size=chunk_size,
                          ray_address=ray_address, errors=errors)
        return GradeList([r.grade for r in rows])
    if backend == "local":
        workers = 1
    if workers == 1 or len(responses) < 2:
        return GradeList(_run_local(grader, responses, references, progress))
    forked = fork_is_safe()
    if adaptive:
        done, costs = _probe(grader, responses, references)
        rest = len(responses) - len(done)
        workers = choose_workers(costs, rest, workers, "fork" if forked else "pool")
        if workers == 1 or rest < 2:
            return GradeList(done + _run_local(grader, responses[len(done):], references[len(done):], progress))
        later = grade_batch(grader, responses[len(done):], references[len(done):], workers=workers, progress=progress,
                            chunk_size=chunk_size, adaptive=False, backend=backend)
        return _joined(done, later)
    # Chunks: at least 8 per worker, so that one slowed down (by other jobs on the machine) delays the end little;
    # at most 4,096 rows (2,000 when pickled), so that the parent's work per chunk is negligible.
    size = chunk_size or max(1, min(4096 if forked else 2000, len(responses) // (workers * 8) or 1))
    if forked:  # the grades may be made again from the inputs later: keep the lists as they are now
        return _grade_forked(grader, list(responses), list(references), workers, progress, size)
    return _grade_pooled(grader, responses, references, workers, progress, size)


def _run_local(grader: _Grades, responses: list[Any], references: list[Any], progress: bool) -> list[Grade]:
    pairs: Iterable[tuple[Any, Any]] = zip(responses, references)
    if progress:
        from rich.progress import track

        pairs = track(pairs, total=len(responses), description="grading", transient=True)
    return _grade_all(grader, pairs)




