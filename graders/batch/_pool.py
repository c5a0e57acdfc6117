"""Worker processes sent pickled chunks of rows (forkserver or spawn): the portable path, and the pool the row engine shares."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .._lazy_grade import packed, unpacked
from ._forked import GradeList
from ._local import _grade_all, _Grades, _progress_bar, _travels, gc_paused

_WORKER_GRADER: Any = None




# --------------------------------------------------------------------------- worker processes (pickled chunks)


def _init_worker(grader: Any) -> None:
    global _WORKER_GRADER
    _WORKER_GRADER = grader


def worker_grader() -> Any:
    """In a process of :func:`worker_pool`: the grader it was started with."""
    return _WORKER_GRADER


def worker_pool(grader: Any, workers: int) -> ProcessPoolExecutor:
    """``workers`` processes (``forkserver`` on POSIX, ``spawn`` elsewhere, so safe in threaded programs),
    each holding ``grader`` (sent once, pickled as its config) for :func:`worker_grader`."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(grader,))


def _grade_chunk(chunk: Sequence[tuple[Any, Any]]) -> bytes:
    """Grade a chunk in a worker; the grades pickled (see :func:`_pickled`)."""
    grades: list[Any] = _grade_all(_WORKER_GRADER, chunk)
    if getattr(_WORKER_GRADER, "_flat_build", None) is not None:
        # A structured fast-path grade travels back as its values (graders._lazy_grade.packed): pickling the
        # FieldDetail objects instead cost several times the grading itself.
        grades = [packed(g) for g in grades]
    return _pickled(grades)


def _pickled(grades: list[Any]) -> bytes:
    """``grades`` pickled, each grade too deep to pickle replaced by None (the parent grades that row again).

    A grade's details hold the model's output: one nested a few hundred levels deep (a 1 KB
    output can be) pickles past Python's recursion limit. Such a row must not cost the batch:
    the parent, which has the row, grades it again when it is read, as with ``workers=1``.
    """
    try:
        return pickle.dumps(grades, pickle.HIGHEST_PROTOCOL)
    except RecursionError:
        return pickle.dumps([g if _travels(g) else None for g in grades], pickle.HIGHEST_PROTOCOL)


def _grade_pooled(grader: _Grades, responses: list[Any], references: list[Any], workers: int, progress: bool,
                  size: int) -> GradeList:
    pairs = list(zip(responses, references))
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    out = GradeList()
    build = getattr(grader, "_flat_build", None)
    with worker_pool(grader, workers) as pool, gc_paused(), _progress_bar(progress, len(pairs)) as advance:
        futures = [pool.submit(_grade_chunk, chunk) for chunk in chunks]
        for chunk, future in zip(chunks, futures):
            try:
                part = pickle.loads(future.result())
            except RecursionError:  # a row nested too deeply to send to a worker: the chunk is graded here
                out.extend(_grade_all(grader, chunk))
                advance(len(chunk))
                continue
            part = [grader.grade(*pair) if p is None else p for pair, p in zip(chunk, part)]  # None: too deep to send
            out.extend(part if build is None else [unpacked(p, build) for p in part])
            advance(len(part))
    return out



