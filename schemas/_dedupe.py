"""Finding repeated prompts in a stream of rows, in constant memory.

A duplicate check must remember every prompt it has seen. Held in memory that
grows with the file (16 bytes a row even as packed numpy arrays), so the index
lives in a temporary SQLite database on disk instead (the standard library's
``sqlite3``): memory stays flat whatever the file's size, bounded by SQLite's
page cache (2 MB here), and the file is removed when the index is closed or
garbage-collected.

Each prompt is reduced to a 64-bit hash (collisions among a million prompts:
about 1 in 30 million, and a collision only yields a spurious *warning*). Rows
arrive in chunks: inside a chunk a plain dict finds repeats at once; at the end
of a chunk its new hashes are joined against the table in one query and inserted.

Hashes come from Python's ``hash``, which is salted per process: fine, since an
index lives and dies within one validation run.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import weakref
from pathlib import Path
from typing import Any


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
    """Hashes seen so far, each with the first line it was seen on, kept on disk.

    Repeats are reported when a chunk is merged (:meth:`flush` returns them all),
    always naming the first line of the whole stream, not of the chunk.

    >>> idx = PromptIndex(chunk=3)
    >>> for line, h in enumerate([7, 8, 7, 9, 8, 9], 1):
    ...     idx.add(h, line)
    >>> idx.flush()
    [(3, 1), (5, 2), (6, 4)]
    >>> idx.lookup_many([(10, 9), (11, 42)])
    [(10, 4)]
    >>> len(idx)
    3
    >>> idx.close()
    """

    def __init__(self, *, chunk: int = 16384) -> None:
        self._chunk = chunk
        self._pending: dict[int, int] = {}  # hash -> first line, for the current chunk
        self._repeats: list[tuple[int, int]] = []  # (line, hash) of repeats within the current chunk
        self._late: list[tuple[int, int]] = []  # repeats found so far: (line, first line)
        self._stored = 0
        self._dir = tempfile.TemporaryDirectory(prefix="rftkit-index-")
        self._db = sqlite3.connect(str(Path(self._dir.name) / "index.sqlite"))
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-2048"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE seen (h INTEGER PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        self._db.execute("CREATE TABLE batch (h INTEGER PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        self._finalizer = weakref.finalize(self, _close, self._db, self._dir)

    def __len__(self) -> int:
        return self._stored + len(self._pending)

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
        if not items or not self._stored:
            return []
        by_hash: dict[int, list[int]] = {}
        for line, h in items:
            by_hash.setdefault(h, []).append(line)
        hits = self._join(list(by_hash.items()), keep=False)
        return sorted((line, first) for h, first in hits for line in by_hash[h])

    def close(self) -> None:
        """Drop the on-disk index now (otherwise it goes when the index is garbage-collected)."""
        self._finalizer()

    def _join(self, rows: list[tuple[int, Any]], *, keep: bool) -> list[tuple[int, int]]:
        """(hash, first line) for the hashes of ``rows`` already stored; with ``keep``, store the new ones."""
        db = self._db
        db.executemany("INSERT INTO batch VALUES (?, ?)", [(h, line if keep else 0) for h, line in rows])
        found = db.execute("SELECT b.h, s.line FROM batch AS b JOIN seen AS s ON s.h = b.h").fetchall()
        if keep:
            self._stored += db.execute("INSERT OR IGNORE INTO seen SELECT h, line FROM batch").rowcount
        db.execute("DELETE FROM batch")
        return found

    def _merge(self) -> None:
        if not self._pending:
            return
        pending, repeats = self._pending, self._repeats
        self._pending, self._repeats = {}, []
        first = dict(pending)  # hash -> first line overall
        for h, old in self._join(list(pending.items()), keep=True):
            self._late.append((pending[h], old))
            first[h] = old
        self._late.extend((line, first[h]) for line, h in repeats)


def _close(db: sqlite3.Connection, folder: tempfile.TemporaryDirectory[str]) -> None:
    db.close()
    folder.cleanup()
