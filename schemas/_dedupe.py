"""Finding repeated prompts in a stream of rows, in 16 bytes per row.

A duplicate check needs to remember what it has seen, so it cannot be constant
memory; it can be small. Each prompt is reduced to a 64-bit hash (collisions
among a million prompts: about 1 in 30 million) and kept with its line number in
two sorted numpy arrays, 16 bytes a row (16 MB for a million rows), instead of a
dict of Python objects (about 100 bytes a row). Rows arrive in chunks: inside a
chunk a plain dict finds repeats at once; at the end of a chunk its new hashes are
looked up in the sorted arrays in one vectorised ``searchsorted`` and merged in.

Hashes come from Python's ``hash``, which is salted per process: fine, since an
index lives and dies within one validation run.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

_Int64 = npt.NDArray[np.int64]


def prompt_hash(value: Any) -> int:
    """A 64-bit hash of a prompt: a string, or a list of messages (compared by role and content).

    >>> prompt_hash("hi") == prompt_hash("hi"), prompt_hash([{"role": "user", "content": "hi"}]) == prompt_hash("hi")
    (True, False)
    """
    if isinstance(value, str):
        return hash(value)
    if isinstance(value, list):
        try:
            return hash(tuple((m.get("role"), m.get("content")) if isinstance(m, dict) else m for m in value))
        except TypeError:  # multi-part content (lists of parts) is not hashable: hash its canonical JSON
            pass
    return hash(json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr))


class PromptIndex:
    """Hashes seen so far, each with the first line it was seen on.

    Repeats are reported when a chunk is merged (:meth:`flush` returns them all),
    always naming the first line of the whole stream, not of the chunk.

    >>> idx = PromptIndex(chunk=3)
    >>> for line, h in enumerate([7, 8, 7, 9, 8, 9], 1):
    ...     idx.add(h, line)
    >>> idx.flush()
    [(3, 1), (5, 2), (6, 4)]
    >>> idx.lookup_many([(10, 9), (11, 42)])
    [(10, 4)]
    """

    __slots__ = ("_chunk", "_pending", "_repeats", "_late", "_keys", "_lines")

    def __init__(self, *, chunk: int = 65536) -> None:
        self._chunk = chunk
        self._pending: dict[int, int] = {}  # hash -> first line, for the current chunk
        self._repeats: list[tuple[int, int]] = []  # (line, hash) of repeats within the current chunk
        self._late: list[tuple[int, int]] = []  # repeats found so far: (line, first line)
        self._keys: _Int64 = np.empty(0, dtype=np.int64)  # sorted
        self._lines: _Int64 = np.empty(0, dtype=np.int64)  # first line of each key

    def __len__(self) -> int:
        return len(self._keys) + len(self._pending)

    def add(self, h: int, line: int) -> None:
        """Remember ``h`` seen on ``line`` (lines must increase)."""
        if h in self._pending:
            self._repeats.append((line, h))
        else:
            self._pending[h] = line
        if len(self._pending) + len(self._repeats) >= self._chunk:
            self._merge()

    def flush(self) -> list[tuple[int, int]]:
        """Merge what is pending; return the (line, first line) repeats found since the last flush, by line."""
        self._merge()
        late, self._late = sorted(self._late), []
        return late

    def lookup_many(self, items: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """For (line, hash) pairs, return (line, line in this index) for the hashes it holds (call after :meth:`flush`)."""
        if not items or not len(self._keys):
            return []
        hashes = np.fromiter((h for _, h in items), dtype=np.int64, count=len(items))
        pos = np.searchsorted(self._keys, hashes)
        pos[pos == len(self._keys)] = 0
        hit = np.nonzero(self._keys[pos] == hashes)[0]
        return [(items[i][0], int(self._lines[pos[i]])) for i in hit.tolist()]

    def _merge(self) -> None:
        if not self._pending:
            return
        pending, repeats = self._pending, self._repeats
        self._pending, self._repeats = {}, []
        keys = np.fromiter(pending.keys(), dtype=np.int64, count=len(pending))
        lines = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
        first = pending  # hash -> first line overall; overwritten below for hashes seen in earlier chunks
        if len(self._keys):
            pos = np.searchsorted(self._keys, keys)
            pos_c = np.where(pos == len(self._keys), 0, pos)
            seen = self._keys[pos_c] == keys
            idx = np.nonzero(seen)[0]
            if len(idx):
                first = dict(pending)
                for h, ln, old in zip(keys[idx].tolist(), lines[idx].tolist(), self._lines[pos_c[idx]].tolist()):
                    self._late.append((ln, old))
                    first[h] = old
                keys, lines = keys[~seen], lines[~seen]
        self._late.extend((line, first[h]) for line, h in repeats)
        order = np.argsort(keys, kind="stable")
        keys, lines = keys[order], lines[order]
        at = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, at, keys)
        self._lines = np.insert(self._lines, at, lines)
