"""Workers started with ``forkserver`` (``spawn`` where missing) and sent pickled chunks: the portable path.

Where fork is not safe (:func:`graders.batch.fork_is_safe`), :func:`pooled` sends
each worker the grader and the work once, then every chunk's rows pickled; the
answers come back pickled, in order. A chunk that cannot travel either way (a row
or an answer nested past pickle's recursion limit) is run here instead, so it
costs its own time, not the batch.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from ._forked import GradeList, scored_list
from ._local import _Grades
from ._work import ChunkWork

T = TypeVar("T")

_WORKER_GRADER: Any = None
_WORKER_WORK: Any = None


def _init_worker(grader: Any, work: Any = None) -> None:
    global _WORKER_GRADER, _WORKER_WORK
    _WORKER_GRADER, _WORKER_WORK = grader, work


def worker_grader() -> Any:
    """In a process of :func:`worker_pool`: the grader it was started with."""
    return _WORKER_GRADER


def worker_pool(grader: Any, workers: int, work: ChunkWork[Any] | None = None) -> ProcessPoolExecutor:
    """``workers`` processes (``forkserver`` on POSIX, ``spawn`` elsewhere, so safe in threaded programs),
    each holding ``grader`` (sent once, pickled as its config) for :func:`worker_grader`, and ``work``."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(grader, work))


def _pooled_chunk(samples: Sequence[Any], items: Sequence[Any], first: int) -> Any:
    return _WORKER_WORK(_WORKER_GRADER, samples, items, first)


@contextmanager
def pooled(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], bounds: list[tuple[int, int]],
           workers: int) -> Iterator[Iterator[T]]:
    """Run ``work`` on the chunks ``bounds`` in a pool of ``workers`` processes; yields the answers, in order.

    The exception of the first chunk (in input order) whose work raised propagates when its turn comes."""
    with worker_pool(grader, workers, work) as pool:
        futures = [pool.submit(_pooled_chunk, samples[a:b], items[a:b], a) for a, b in bounds]
        try:
            yield _answers(grader, samples, items, work, bounds, futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _answers(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], bounds: list[tuple[int, int]],
             futures: list[Future[T]]) -> Iterator[T]:
    for (a, b), future in zip(bounds, futures):
        try:
            answer = future.result()
        except RecursionError:  # the chunk or its answer nested too deeply to pickle: run here
            answer = work(grader, samples[a:b], items[a:b], a)
        yield answer


def _grade_pooled(grader: _Grades, responses: list[Any], references: list[Any], workers: int, progress: bool,
                  size: int) -> GradeList:
    """Every row graded by a pool of ``workers`` processes in chunks of ``size`` (``grade_batch``'s portable path)."""
    from ._engine import run_chunks
    from ._work import Scores

    parts = run_chunks(grader, responses, references, Scores(flag=False), workers=workers, transport="pooled",
                       size=size, progress=progress)
    return scored_list(grader, responses, references, parts)

