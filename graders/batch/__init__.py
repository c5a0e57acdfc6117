"""Batch grading: many rows at once, in this process, in worker processes, or on Ray.

:func:`grade_batch` is the one entry point (the trainer, ``rftkit grade``, the
benchmarks): ``backend`` is ``local``, ``processes`` or ``ray``, and ``errors``
says whether a row whose grading raised propagates (``raise``) or becomes a
flagged zero (``flag``). :func:`grade_rows` is the same engine answering with a
:class:`RowResult` per row (the grade, the seconds it took, whether it raised),
which ``rftkit grade`` writes out.

The package owns the engine (``_engine``: argument checks, the adaptive worker
count), grading here (``_local``: the collector paused), the pickled-chunk
worker pool (``_pool``), the rows path with Ray and error flagging (``_rows``),
and the fenced speed layer (``_forked``: workers forked with the batch in
memory, scores back as arrays, and :class:`GradeList`, whose grades are made
here when read).
"""

from ._engine import STARTUP_S, Costs, choose_workers, grade_batch
from ._forked import GradeList, fork_is_safe
from ._local import gc_paused
from ._pool import worker_grader, worker_pool
from ._rows import Backend, ErrorMode, RowResult, grade_rows

__all__ = [
    "STARTUP_S",
    "Backend",
    "Costs",
    "ErrorMode",
    "GradeList",
    "RowResult",
    "choose_workers",
    "fork_is_safe",
    "gc_paused",
    "grade_batch",
    "grade_rows",
    "worker_grader",
    "worker_pool",
]
