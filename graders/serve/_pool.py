"""The grading pool: threads that grade requests with deadlines, one lane per grader kind."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from schemas import UserError

from .._config import AnyGrader
from ..integrations._openrlhf import openrlhf_rewards
from ._wire import Rejected, T, _data_error

# --------------------------------------------------------------------------- grading threads


class _Timeout(Exception):
    pass


def _python_deadline() -> Callable[[float], AbstractContextManager[Any]]:
    """:func:`graders.openai.python.grading_deadline` (python grades started inside are killed when it passes),
    imported only by a server that may run python: the module brings the sandbox's code."""
    from ..openai.python._grader import grading_deadline

    return grading_deadline


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any], float | None]
"""A grading job: the loop and future to answer on, the work, and its deadline (``time.monotonic``) when python work in
it is to be killed there."""


class _Lane:
    """Daemon threads that take jobs from one queue, started on first use."""

    def __init__(self, name: str, threads: int, finish: Callable[[asyncio.Future[Any], Any, BaseException | None], None],
                 deadline: Callable[[float], AbstractContextManager[Any]] | None) -> None:
        self.name, self.threads = name, threads
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._finish = finish
        self._deadline = deadline
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()

    def put(self, job: _Job) -> None:
        if len(self._started) < self.threads:
            with self._lock:
                while len(self._started) < self.threads:
                    t = threading.Thread(target=self._work, name=f"rftkit-{self.name}-{len(self._started)}", daemon=True)
                    t.start()
                    self._started.append(t)
        self.jobs.put(job)

    def close(self) -> None:
        with self._lock:
            for _ in self._started:
                self.jobs.put(None)
            self._started.clear()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            loop, future, fn, deadline = job
            result: Any = None
            error: BaseException | None = None
            if not future.done():  # done already: its deadline passed while it waited, so it is dropped unstarted
                try:
                    if deadline is not None and self._deadline is not None:
                        with self._deadline(max(deadline - time.monotonic(), 0.001)):  # python work is killed there
                            result = fn()
                        if time.monotonic() >= deadline:  # cut short (grades flagged as such): the request's answer is 504
                            result, error = None, _Timeout()
                    else:
                        result = fn()
                except BaseException as exc:  # delivered to the awaiting request, which answers 4xx or 500
                    error = exc
            try:
                loop.call_soon_threadsafe(self._finish, future, result, error)
            except RuntimeError:  # the loop closed (the server stopped) while this job ran
                pass


class GradingPool:
    """Runs grading jobs on daemon threads: at most ``limit`` jobs at once (running or waiting), each with a deadline.

    Two lanes of ``threads`` threads each: ``light`` for requests to the served
    grader, ``heavy`` for request-borne graders and bodies over
    :data:`_HEAVY_BYTES`, so eight clients posting 10 MB batches or hung
    request-borne python graders never hold the threads a normal ``/score``
    needs. The count of jobs is kept on the event loop's thread; a job's slot is
    given back only when its thread is done with it (or drops it unstarted after
    its deadline), so a server whose threads are all stuck refuses at once (503)
    instead of queueing. The threads are daemons: a stuck grader never keeps the
    process from exiting. With ``deadline`` (:func:`graders.openai.python.grading_deadline`),
    a job run with ``kill=True`` has its python work killed at its deadline, so
    its thread and its slot come back then.
    """

    def __init__(self, threads: int, limit: int, deadline: Callable[[float], AbstractContextManager[Any]] | None = None) -> None:
        self.threads = threads
        self.limit = limit
        self.in_flight = 0
        self.light = _Lane("grading", threads, self._finish, deadline)
        self.heavy = _Lane("heavy", threads, self._finish, deadline)

    def close(self) -> None:
        """Ask every thread to stop once its current job is done (a stuck one stops when its grader returns)."""
        self.light.close()
        self.heavy.close()

    def _finish(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        self.in_flight -= 1
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    async def run(self, fn: Callable[[], T], timeout_s: float, *, heavy: bool = False, kill: bool = False) -> T:
        """``fn()`` on a grading thread; 503 when ``limit`` jobs are already in flight, 504 after ``timeout_s``."""
        if self.in_flight >= self.limit:
            raise Rejected(503, "overloaded", f"the server is grading {self.in_flight} requests, its limit; try again shortly",
                           hint="retry after a short wait, send fewer concurrent requests, or start with more --workers",
                           headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.in_flight += 1
        (self.heavy if heavy else self.light).put((loop, future, fn, time.monotonic() + timeout_s if kill else None))
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        except _Timeout:
            raise Rejected(504, "grading_timeout", f"grading took longer than the {timeout_s:g} s limit", hint=(
                "send smaller batches or raise --timeout")) from None
        finally:
            timer.cancel()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_Timeout())


# --------------------------------------------------------------------------- the protocols


def _openrlhf(grader: AnyGrader, declared: list[str], queries: Sequence[str], prompts: Sequence[str],
              labels: Sequence[Any]) -> dict[str, Any]:
    """:func:`graders.adapters.openrlhf_rewards`, with a label it cannot grade as a 400 pointing at it."""
    try:
        return openrlhf_rewards(grader, queries, prompts, labels, declared=declared)
    except UserError as exc:
        raise _data_error(exc, exc.pointer) from None




