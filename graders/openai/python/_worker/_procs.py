"""Process trees from ``/proc``: find a process's descendants, freeze and kill them, and check for children.

Also imported by the grading process (``_sandbox`` kills a sandbox with
:func:`kill_tree`), so this module defines functions only and imports nothing
outside the standard library.
"""

from __future__ import annotations

import os
import signal


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants, from the parent pids in ``/proc`` (just ``root`` where there is no ``/proc``)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {root}
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    tree, todo = {root}, [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in tree:
                tree.add(pid)
                todo.append(pid)
    return tree


def kill_tree(root: int, spare_root: bool = False, spare: frozenset[int] = frozenset()) -> set[int]:
    """Freeze ``root``'s descendants (so none can fork any more), then kill them all; ``spare`` and their trees live.

    Returns the pids signalled (SIGKILL is asynchronous: they may still be dying).
    """
    stopped: set[int] = set()
    keep = {root} if spare_root else set()
    for _ in range(20):
        fresh = process_tree(root) - stopped - keep
        for pid in spare:
            fresh -= process_tree(pid)
        if not fresh:
            break
        for pid in fresh:
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
        stopped |= fresh
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return stopped


def has_children(ignore: int = 0) -> bool:
    """Whether this process has a child other than ``ignore``."""
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                if any(int(pid) != ignore for pid in f.read().split()):
                    return True
    except OSError:
        pass
    return False


