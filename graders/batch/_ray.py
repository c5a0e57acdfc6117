"""Ray tasks, one per chunk: grading on a Ray cluster (or a local Ray started for the batch).

The grader and the work are put in Ray's object store once; each chunk's rows go
out with its task and its answer comes back, in order. ``address=None`` joins the
cluster ``RAY_ADDRESS`` names, else starts a local Ray with ``workers`` CPUs for
the batch and stops it after; where Ray is already running (``ray.init`` called
by the program, as a trainer does once), it is used as it is and left running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from .._errors import GraderConfigError
from ._work import ChunkWork

T = TypeVar("T")


def _ray_chunk(grader: Any, work: ChunkWork[T], samples: Sequence[Any], items: Sequence[Any], first: int) -> T:
    return work(grader, samples, items, first)


def ray_module() -> Any:
    """The ``ray`` module, or a :class:`GraderConfigError` saying which extra to install."""
    try:
        import ray
    except ImportError:
        raise GraderConfigError("backend 'ray' needs Ray: pip install 'rftkit[ray]'", code="missing_extra",
                                pointer="/backend", hint="install the ray extra, or use backend local or processes") from None
    return ray


def start_ray(workers: int, address: str | None = None) -> bool:
    """Start Ray for this program unless it runs: join ``address`` (else ``RAY_ADDRESS``), else a local Ray with
    ``workers`` CPUs. Returns whether it was started here. A program that grades many batches (a trainer) calls it
    once, so that no batch pays for the start; Ray stops when the program ends (or at ``ray.shutdown()``)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return True


@contextmanager
def on_ray(grader: Any, samples: Sequence[Any], items: Sequence[Any], work: ChunkWork[T], bounds: list[tuple[int, int]],
           workers: int, address: str | None = None) -> Iterator[Iterator[T]]:
    """Run ``work`` on the chunks ``bounds`` as Ray tasks; yields the answers, in order."""
    ray = ray_module()
    started = start_ray(workers, address)
    try:
        remote = ray.remote(_ray_chunk)
        grader_ref, work_ref = ray.put(grader), ray.put(work)
        pending: list[Any] = []
        for a, b in bounds:
            try:
                pending.append(remote.remote(grader_ref, work_ref, samples[a:b], items[a:b], a))
            except RecursionError:  # rows nested too deeply to send: this chunk is run here
                pending.append(None)

        def answers() -> Iterator[T]:
            for (a, b), ref in zip(bounds, pending):
                if ref is None:
                    yield work(grader, samples[a:b], items[a:b], a)
                    continue
                try:
                    yield ray.get(ref)
                except RecursionError:  # an answer nested too deeply to send back: run here
                    yield work(grader, samples[a:b], items[a:b], a)

        yield answers()
    finally:
        if started:
            ray.shutdown()
