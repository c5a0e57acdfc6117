"""The supervisor: the sandbox's first process, as the grading process starts it.

It enters new user, network, PID and IPC namespaces (``MODE`` ``auto`` or
``namespaces``; else none), forks the template (:mod:`._template`), reports the
template's exit on ``CTL``, and, if the grading process dies (``LIFE`` closes),
kills every process of the sandbox and removes its temp dir.
"""

from __future__ import annotations

import os
import select
import signal

from ._confine import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    PR_SET_CHILD_SUBREAPER,
    Refused,
    map_ids,
    prctl,
    unshare,
)
from ._frames import send
from ._procs import kill_tree
from ._template import Template


def supervise(req: int, ctl: int, life: int, sock: int, mode: str) -> None:
    isolation, refused = "basic", None
    if mode != "basic":
        try:
            uid, gid = os.getuid(), os.getgid()
            # (System V shared memory, semaphores and queues of the host are out of reach in a new IPC namespace; the
            # template takes its own mount namespace.)
            unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC, "unshare")
            try:
                map_ids(uid, gid)
            except Refused as exc:  # half-entered: this process is unusable
                send(ctl, {"refused": str(exc)} if mode == "auto" else {"error": "namespaces unavailable: " + str(exc)})
                os._exit(0)
            isolation = "namespaces"
        except Refused as exc:
            if mode == "namespaces":
                send(ctl, {"error": "namespaces unavailable: " + str(exc)})
                os._exit(0)
            refused = str(exc)
    if isolation == "basic":
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the tree stay in it, where a stop finds them
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pid = os.fork()
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w, life):
                os.close(fd)
            Template(req, ctl, sock, isolation, refused, mode).run()
        finally:
            os._exit(70)
    for fd in (req, sock):
        os.close(fd)
    reported = False
    while True:
        ready = select.select([life, wake_r], [], [])[0]
        if life in ready:
            orphaned(pid, isolation)
        if wake_r in ready:
            os.read(wake_r, 512)
        while True:
            try:
                child, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if child == 0:
                break
            if child == pid and not reported:
                reported = True
                send(ctl, {"exit": os.waitstatus_to_exitcode(status)})


def orphaned(pid: int, isolation: str) -> None:
    """The grading process died without stopping us: kill the template and every process under it, remove the temp dir."""
    import shutil

    tmp = os.getcwd()  # the grading process started us in the sandbox's temp dir
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    if isolation == "namespaces":  # the template is the namespace's init: the kernel kills every process in it
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    else:
        kill_tree(os.getpid(), spare_root=True)  # orphans came to us (a subreaper): the whole tree is ours to kill
    shutil.rmtree(tmp, ignore_errors=True)
    if isolation != "namespaces":
        os.killpg(0, signal.SIGKILL)
    os._exit(0)
