"""Grading a rollout: on graders' batch engine (``PPOConfig.grade_backend``), or under a deadline (``grade_timeout_s``).

:class:`EngineGrader` grades the trainer's batches with ``graders.grade_batch``: in this process, in worker
processes on this machine, or as Ray tasks (:func:`on_backend` wraps the trainer's grader in one).

:func:`grade_within` grades the completions in order in one forked worker process, which sends each
grade back through a pipe as soon as it is made. When every grade is in, or when ``timeout_s``
seconds have passed, whichever comes first, the worker's whole process group is killed (a python
grader's sandbox or any program a grader started goes with it), and every completion not graded by
then scores NaN, which the trainer skips and counts as ``rollout/grade_timeouts``. One hung or slow
grade therefore costs its own sample and those after it in that rollout, never the run.

A forked worker, not a thread: a thread cannot be stopped, so a grader stuck in a loop would keep a
core (and its memory) for the rest of the run. The grader object is inherited, not pickled; only
``(score, sub_scores)`` pairs come back. Where ``fork`` is missing, ``spawn`` is used and the grader
must pickle.

What it leaves out: grades are made one by one (a grader's own batching is not used), and the
worker starts afresh for each rollout, so a grader that loads something heavy on first use pays
for it every step; without ``grade_timeout_s`` the trainer grades in its own process as before.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, SpawnContext
from typing import Any

from schemas import UserError

monotonic = time.monotonic
"""The deadline's clock (a module attribute, so a test can decide when the deadline passes without racing the machine)."""


@dataclass(frozen=True)
class GradeResult:
    """A grade as the trainer reads it: ``score`` (NaN when the deadline passed first) and ``sub_scores``."""

    score: float
    sub_scores: Mapping[str, float] = field(default_factory=dict)
    timed_out: bool = False
    """True when the deadline passed before this completion was graded."""


class GraderCrashed(RuntimeError):
    """The grader raised inside the grading worker; the message holds the worker's traceback."""


def _worker(grader: Any, responses: Sequence[str], references: Sequence[Any], conn: Connection) -> None:
    """In the child: grade each completion in order and send ``(score, sub_scores)`` at once (``send`` returns once written)."""
    os.setpgrp()  # its own process group, so that killing the group stops whatever a grader started too
    try:
        for response, reference in zip(responses, references):
            grade = grader.grade_batch([response], [reference])[0]
            conn.send(("grade", float(grade.score), {str(k): float(v) for k, v in grade.sub_scores.items()}))
    except BaseException:  # a grader's bug is the caller's to see, not a NaN: its traceback goes back and is raised there
        conn.send(("error", traceback.format_exc(), {}))
    conn.close()


def grade_within(grader: Any, responses: Sequence[str], references: Sequence[Any], *, timeout_s: float) -> list[GradeResult]:
    """Grade ``responses[i]`` against ``references[i]`` in a worker process for at most ``timeout_s`` seconds.

    Returns one :class:`GradeResult` per response, in order; those not graded in time have score NaN and
    ``timed_out``. The worker is stopped before this returns. A grader that raises in the worker raises
    :class:`GraderCrashed` here, with the worker's traceback (a bug is not a slow grade).
    """
    if not responses:
        return []
    context: ForkContext | SpawnContext = (multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods()
                                           else multiprocessing.get_context("spawn"))
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_worker, args=(grader, list(responses), list(references), send), daemon=True)
    deadline = monotonic() + timeout_s
    worker.start()
    send.close()  # the child holds the only write end: its exit closes the pipe
    results: list[tuple[float, dict[str, float]]] = []

    def take() -> bool:
        """Read one message into ``results``; False when the worker has closed the pipe."""
        try:
            kind, value, subs = receive.recv()
        except EOFError:  # the worker is gone (killed from outside): the rest stay ungraded
            return False
        if kind == "error":
            raise GraderCrashed(f"the grader raised while grading completion {len(results)}:\n{value}")
        results.append((value, subs))
        return True

    try:
        while len(results) < len(responses):
            remaining = deadline - monotonic()
            if remaining <= 0:
                break
            if wait([receive], timeout=min(remaining, 0.1)) and not take():  # wakes often enough to see a clock that is not time's
                break
        while len(results) < len(responses) and receive.poll(0) and take():  # grades written before the deadline passed
            pass
    finally:
        _stop(worker)
        receive.close()
    return ([GradeResult(score, subs) for score, subs in results]
            + [GradeResult(math.nan, {}, timed_out=True) for _ in range(len(responses) - len(results))])


def _stop(worker: Any) -> None:
    """Kill the worker's process group (itself and whatever it started), then reap the worker."""
    if worker.pid is not None and worker.is_alive():
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not yet its own group leader: kill the worker alone
            worker.kill()
    worker.join()


class EngineGrader:
    """A grader of ``graders`` (``grade(response_or_sample, reference_or_item)``) in the trainer's ``grade_batch``
    shape, graded on graders' batch engine: ``backend`` ``local``, ``processes`` or ``ray``, with up to ``workers``
    processes (see ``graders.grade_batch``; a grader bug raises, as in this process)."""

    def __init__(self, grader: Any, *, backend: str = "local", workers: int = 1) -> None:
        self.grader, self.backend, self.workers = grader, backend, workers

    def grade_batch(self, responses: Sequence[str], references: Sequence[Any]) -> Any:
        from graders import grade_batch

        return grade_batch(self.grader, list(responses), list(references), workers=self.workers,
                           backend=self.backend)  # type: ignore[arg-type]  # PPOConfig checked the name


def on_backend(grader: Any, backend: str, workers: int | None) -> EngineGrader:
    """``grader`` graded on ``backend`` with up to ``workers`` processes (None: every CPU); Ray is started here once
    (joining ``RAY_ADDRESS``, else a local one) when it is not running yet, so no rollout pays for its start.

    A grader that has only ``grade_batch`` (not a grader of ``graders``) cannot be spread over workers: that is
    misuse, and raises here with the pointer of the option."""
    inner = grader.grader if isinstance(grader, EngineGrader) else grader
    if not callable(getattr(inner, "grade", None)):
        raise UserError(f"grade_backend={backend!r} needs a grader with grade(response, reference), as the graders of "
                        f"graders have; {type(grader).__name__} has only grade_batch", code="bad_config",
                        pointer="/grade_backend", hint="pass a graders grader (StructuredGrader, graders.from_config(...)), "
                        "or keep grade_backend='local'")
    count = workers if workers is not None else os.cpu_count() or 1
    if backend == "ray":
        from graders.batch import start_ray

        start_ray(count)
    return EngineGrader(inner, backend=backend, workers=count)
