"""The audit hook of the template and its grade children: friendly ``PermissionError``\\ s for what the sandbox forbids.

It sees Python-level calls only (``open``, ``os.*``, ``socket.*``, ``subprocess``),
so it confines nothing by itself: what the kernel enforces is in :mod:`._confine`
(mounts, seccomp, Landlock). It makes the common cases fail early, with a message
that says why.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol


class Harness(Protocol):
    """The template (or a grade child): while ``harness`` is set, its own forks and socket sends pass the hook."""

    harness: bool


def install_hook(tmp: str, allow_subprocess: bool, template: Harness) -> None:
    """Install the hook in this process (the template; its grade children inherit it): the network, writes outside
    ``tmp``, processes (unless ``allow_subprocess``) and signals to any process but the caller's own children raise
    ``PermissionError``, except the template's own forks and sends while ``template.harness`` is set."""
    from os import path as osp

    real_tmp = osp.realpath(tmp)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    network = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
               "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname"}
    processes = {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
                 "os.startfile"}
    # event -> (path index, dir_fd index or None) of each path it changes
    paths = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
             "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
             "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.setxattr": ((0, None),),
             "os.removexattr": ((0, None),), "os.chflags": ((0, None),), "os.lchflags": ((0, None),),
             "shutil.rmtree": ((0, 1),)}

    def inside(path: object, dir_fd: object = None) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: it was checked when opened
        try:
            name = os.fsdecode(path)  # type: ignore[arg-type]  # anything else raises, and is outside
            if isinstance(dir_fd, int) and dir_fd >= 0 and not osp.isabs(name):
                name = osp.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
            full = osp.realpath(name)
        except Exception:
            return False
        return full == real_tmp or full.startswith(real_tmp + os.sep) or full == os.devnull

    def own_child(pid: int) -> bool:
        if pid == os.getpid():
            return True
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return int(f.read().rsplit(b")", 1)[1].split()[1]) == os.getpid()
        except (OSError, ValueError, IndexError):
            return False

    def deny(what: str) -> None:
        raise PermissionError(f"python grader sandbox: {what} is not allowed")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            if isinstance(args[2], int) and args[2] & write_flags and not inside(args[0]):
                deny(f"writing {args[0]!r} (only the temp dir {tmp} is writable)")
        elif event in paths:
            for at, dir_at in paths[event]:
                if len(args) > at and not inside(args[at], args[dir_at] if dir_at is not None and len(args) > dir_at
                                                 else None):
                    deny(f"{event}({args[at]!r}) outside the temp dir {tmp}")
        elif event == "sqlite3.connect":
            if args[0] not in (":memory:", "", b":memory:", b"") and not inside(args[0]):
                deny(f"sqlite3.connect({args[0]!r}) outside the temp dir {tmp}")
        elif event in network:
            if not template.harness:
                deny(f"network access ({event})")
        elif event in processes:
            if not allow_subprocess and not template.harness:
                deny(f"starting a process ({event}); build the grader with allow_subprocess=True to allow it")
        elif event == "os.kill":
            if args[0] <= 0 or not own_child(args[0]):
                deny(f"os.kill({args[0]!r}) (only the grader's own child processes)")
        elif event == "os.killpg":
            if args[0] <= 1 or args[0] == os.getpgrp() or not own_child(args[0]):
                deny(f"os.killpg({args[0]!r}) (only the grader's own child process groups)")

    sys.addaudithook(hook)

