"""A grade child: it confines itself further, takes its pipes, runs the user's ``grade`` on each sample, and exits.

Forked by the template ahead of its request (:meth:`._template.Template.fork_spare`).
It gets a private temp dir (a tmpfs in user and mount namespaces of its own, with
namespaces), and a seccomp filter that forbids new processes unless subprocesses
are allowed; then it waits for its request and reply pipes, reads its samples and
writes one reply frame per sample: ``{"i", "value"}`` or ``{"i", "error"}``, with
``"output"`` (the printed tail) on an error and ``"restart"`` when the rest of the
batch must go to a fresh child. The reply pipe is this child's alone, so what user
code does to this process reaches this grade's replies and no other.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._confine import PR_SET_CHILD_SUBREAPER, Refused, forbid_processes, prctl, private_tmp
from ._frames import recv, send
from ._procs import has_children

if TYPE_CHECKING:
    from ._template import Template

FILENAME = "<python grader>"
"""The file name of the user's source in tracebacks and :mod:`linecache`."""


class Tail:
    """sys.stdout and sys.stderr of the sandbox: keeps the last 2,000 characters, drops the rest."""

    encoding, errors, text = "utf-8", "replace", ""

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        self.text = (self.text + s[-2000:])[-2000:]
        return len(s)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1


def grade_child(template: Template, channel: socket.socket) -> None:
    """Run in the child ``template`` just forked: confine it, wait for its pipes on ``channel``, grade the samples that
    come on them (the caller exits after)."""
    template.harness = False  # forked while the template had it set (the audit hook reads it)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in (*template.wake, *(r for _, r in template.children.values())):
        os.close(fd)
    template.sock.close()
    if template.spare is not None:
        template.spare[1].close()
    init_pid = 0
    try:
        if template.isolation == "namespaces":
            private_tmp(template.tmp, template.file_size, own_pids=template.allow_subprocess)
        if template.allow_subprocess:
            prctl(PR_SET_CHILD_SUBREAPER, 1)  # what the grade starts stays under this process until it ends
            if template.isolation == "namespaces":
                init_pid = pid_init(channel)
        else:
            why = forbid_processes(template.filter)
            if why is not None and template.isolation == "namespaces":
                raise Refused(why)
        failed = None
    except (Refused, OSError) as exc:
        failed = f"the sandbox could not isolate the grade: {exc}"
    try:
        _, fds, _, _ = socket.recv_fds(channel, 8, 2)
    except OSError:
        return
    channel.close()
    if len(fds) != 2:
        return
    request, reply = fds
    os.set_inheritable(reply, False)  # an exec'd program never holds the reply pipe
    os.set_inheritable(request, False)
    if failed is not None:
        send(reply, {"i": 0, "error": failed, "server": True})
        return
    message = recv(request)
    os.close(request)
    if message is None:
        return
    threads = threading.active_count()
    for n, sample in enumerate(message["batch"]):
        template.out.text = ""
        answer: dict[str, Any] = {"error": template.broken} if template.broken else call(template.grade, sample, template.memory)
        answer["i"] = n
        if "error" in answer and template.out.text:
            answer["output"] = template.out.text
        if has_children(ignore=init_pid) or threading.active_count() > threads:
            answer["restart"] = True  # a process or thread outlived the sample: the rest go to a fresh child
        send(reply, answer)
        if answer.get("restart"):
            break


def pid_init(channel: socket.socket) -> int:
    """Fork the init of the grade's PID namespace: it only reaps. The programs the grade runs live in that
    namespace, where no other grade's process exists to be signalled (``kill -9 -1`` reaches only their own)."""
    pid = os.fork()
    if pid == 0:
        try:
            channel.close()
            signal.signal(signal.SIGCHLD, lambda *_: None)
            while True:
                try:
                    os.wait()
                except ChildProcessError:
                    signal.pause()  # until the next child ends (a handled signal wakes it)
        finally:
            os._exit(0)
    return pid


def describe(exc: BaseException, memory: int) -> str:
    where = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable>"
    if len(text) > 300:
        text = text[:297] + "..."
    out = type(exc).__name__ + (": " + text if text else "")
    if where:
        out += f" (line {where[-1].lineno}, in {where[-1].name})"
    if isinstance(exc, MemoryError):
        out += f" (the memory limit is {memory >> 20} MiB)"
    return out


def call(grade: Callable[..., Any] | None, message: dict[str, Any], memory: int) -> dict[str, Any]:
    """One grade: ``{"value": float}`` or ``{"error": str}``, with ``"restart"`` when the child should not go on."""
    try:
        value = grade(message["sample"], message["item"])  # type: ignore[misc]  # None only with broken set
    except SystemExit as exc:
        return {"error": f"grade called sys.exit({exc.code!r})", "restart": True}
    except Exception as exc:
        return {"error": "grade raised " + describe(exc, memory), "restart": isinstance(exc, MemoryError)}
    except BaseException as exc:
        return {"error": "grade raised " + describe(exc, memory), "restart": True}
    kind = type(value).__name__
    if isinstance(value, (str, bytes, bytearray)) or not hasattr(type(value), "__float__"):
        return {"error": "grade returned {}, not a number".format("None" if value is None else "a " + kind)}
    try:
        return {"value": float(value)}
    except Exception as exc:
        return {"error": f"grade returned a {kind} that float() rejects ({type(exc).__name__}: {exc})"}

