"""Batch grading: many rows at once, in this process, in worker processes, or on Ray.

:func:`grade_batch` is the one entry point for grades (the trainer, Python users):
``backend`` is ``local``, ``processes`` or ``ray``, and ``errors`` says whether a
row whose grading raised propagates (``raise``) or becomes a flagged zero
(``flag``). :func:`grade_rows` answers with a :class:`RowResult` per row (the
grade, the seconds it took, whether it raised), and ``rftkit grade`` has its
workers write each row's output line (:class:`JsonLines`); all three run on one
engine (:func:`each_chunk`), which takes what is done with a chunk
(:class:`ChunkWork`) and picks where it runs.

The package owns the engine (``_engine``: argument checks, the adaptive worker
count), the works (``_work``, ``_lines``), grading here (``_local``), the pool of
started workers (``_pool``), Ray (``_ray``) and the fenced speed layer
(``_forked``: workers forked with the batch in memory, and :class:`GradeList`,
whose fast-path grades are made here when read).
"""

from ._engine import STARTUP_S, Backend, Costs, choose_workers, each_chunk, grade_batch, grade_rows, run_chunks
from ._forked import GradeList, fork_is_safe
from ._lines import JsonLines, Tally
from ._local import gc_paused
from ._pool import worker_grader, worker_pool
from ._ray import start_ray
from ._work import ChunkWork, ErrorMode, RowResult

__all__ = [
    "STARTUP_S",
    "Backend",
    "ChunkWork",
    "Costs",
    "ErrorMode",
    "GradeList",
    "JsonLines",
    "RowResult",
    "Tally",
    "choose_workers",
    "each_chunk",
    "fork_is_safe",
    "gc_paused",
    "grade_batch",
    "grade_rows",
    "run_chunks",
    "start_ray",
    "worker_grader",
    "worker_pool",
]
