"""The template: the pristine process every grade child is forked from.

It is the PID namespace's init (with namespaces). It confines itself once
(:mod:`._confine`), runs the source's top level once (:meth:`Template.load`), and
then only serves: it keeps one grade child forked and confined ahead
(:meth:`Template.fork_spare`), hands the two pipes of each request that comes on its
socket to that child, kills a grade when the grading process says so, reaps the
children and writes each one's exit status after its replies. It never grades:
what a grade does happens in the child (:mod:`._grade`).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from ._audit import install_hook
from ._confine import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    Refused,
    confine_mounts,
    drop_privileges,
    landlock,
    prctl,
    probe_private_tmp,
    process_filter,
)
from ._frames import recv, send
from ._grade import FILENAME, Tail, describe, grade_child
from ._procs import kill_tree


class Template:
    """The template's state, and its steps from start-up to serving (see the module docstring)."""

    def __init__(self, req: int, ctl: int, sock: int, isolation: str, refused: str | None, mode: str) -> None:
        self.req, self.ctl, self.isolation, self.refused, self.mode = req, ctl, isolation, refused, mode
        self.sock = socket.socket(fileno=sock)
        self.grade: Callable[..., Any] | None = None
        self.broken: str | None = None
        self.harness = False  # while set, the audit hook lets the template fork its children and hand them pipes
        self.children: dict[int, tuple[int, int]] = {}  # grade child pid -> (request key, reply pipe)
        self.keys: dict[int, int] = {}  # request key -> grade child pid
        self.out = Tail()

    def run(self) -> None:
        init = recv(self.req)
        if init is None:
            os._exit(0)
        os.close(self.req)
        self.tmp, self.memory, self.file_size = init["tmp"], init["memory"], init["file_size"]
        self.allow_subprocess = bool(init["allow_subprocess"])
        with open(init["source_file"], encoding="utf-8", errors="surrogatepass") as f:
            source = f.read()
        os.remove(init["source_file"])
        if self.isolation == "namespaces":
            try:
                confine_mounts(self.tmp)
                if not drop_privileges():
                    raise Refused("capabilities could not be dropped")
                probe_private_tmp(self.tmp, self.file_size)
            except (Refused, OSError) as exc:
                why = str(exc)
                send(self.ctl, {"refused": why} if self.mode == "auto" else {"error": "namespaces unavailable: " + why})
                os._exit(0)
        else:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
            drop_privileges()  # as root without namespaces: no capabilities (files are still root's)
        os.chdir(self.tmp)
        prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid or file capabilities on exec; needed by seccomp and Landlock
        self.landlocked = self.isolation == "basic" and landlock(self.tmp) is None  # namespaces: the mounts do it
        prctl(PR_SET_DUMPABLE, 0)  # no process of the sandbox can read or write this one's memory or descriptors
        self.limit_resources()
        self.filter = process_filter()  # built once; each grade child installs it
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        sys.stdout = sys.stderr = self.out  # a text sink with the methods print needs
        sys.argv = ["grader"]
        install_hook(self.tmp, self.allow_subprocess, self)
        send(self.ctl, {"isolation": self.isolation, "refused": self.refused, "landlock": self.landlocked})
        os.close(self.ctl)  # the supervisor's copy reports our end; no grade may write there
        self.load(source)
        self.sock.send(json.dumps({"ready": True} if self.broken is None else {"broken": self.broken}).encode())
        gc.collect()
        gc.freeze()  # a collection in a grade child then leaves the template's objects (and their pages) untouched
        self.serve()

    def limit_resources(self) -> None:
        import resource

        for limit, value in ((resource.RLIMIT_AS, self.memory), (resource.RLIMIT_FSIZE, self.file_size),
                             (resource.RLIMIT_CORE, 0)):
            hard = resource.getrlimit(limit)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            try:
                resource.setrlimit(limit, (value, value))
            except (ValueError, OSError):
                pass  # a platform without this limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing

    def load(self, source: str) -> None:
        import builtins
        import linecache

        linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
        scope: dict[str, Any] = {"__name__": "grader", "__builtins__": builtins}
        try:
            exec(compile(source, FILENAME, "exec", dont_inherit=True), scope)
            grade = scope.get("grade")
            if callable(grade):
                self.grade = grade
            else:
                self.broken = f"the source's grade is a {type(grade).__name__}, not a function"
        except BaseException as exc:
            self.broken = "the source's top level raised " + describe(exc, self.memory)
        self.out.text = ""

    # -- serving: fork a child per request, reap it, report its end -------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake = (wake_r, wake_w)
        self.spare: tuple[int, socket.socket] | None = None  # a child forked and confined ahead, waiting for its pipes
        self.fork_spare()
        while True:
            ready = select.select([self.sock.fileno(), wake_r], [], [])[0]
            if wake_r in ready:
                os.read(wake_r, 512)
                self.reap()
            if self.sock.fileno() in ready:
                try:
                    data, fds, _, _ = socket.recv_fds(self.sock, 64, 2)
                except OSError:
                    os._exit(0)
                if not data:
                    os._exit(0)  # the grading process closed the socket: the sandbox stops (its children with it)
                key = int.from_bytes(data[1:9], "big")
                if data[:1] == b"G" and len(fds) == 2:
                    self.start_grade(key, fds[0], fds[1])
                else:
                    for fd in fds:
                        os.close(fd)
                    if data[:1] == b"K" and key in self.keys:
                        self.kill(self.keys[key])

    def fork_spare(self) -> None:
        """Fork and confine the next grade's child now, so that a request finds it ready (its pipes come later)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.harness = True
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return
        finally:
            self.harness = False
        if pid == 0:
            try:
                ours.close()
                grade_child(self, theirs)
            finally:
                os._exit(70)
        theirs.close()
        self.spare = (pid, ours)

    def start_grade(self, key: int, request: int, reply: int) -> None:
        """Hand the pipes of one request to the spare child, and fork the next spare."""
        sent = False
        if self.spare is not None:
            pid, channel = self.spare
            self.spare = None
            sent = self.hand(channel, request, reply)
            if not sent:
                self.kill(pid)  # it died or broke: the request gets a fresh child below
            channel.close()
        if not sent:
            self.fork_spare()
            if self.spare is None:
                try:
                    send(reply, {"i": 0, "error": "the sandbox could not fork", "server": True})
                except OSError:
                    pass
                os.close(request)
                os.close(reply)
                return
            pid, channel = self.spare
            self.spare = None
            self.hand(channel, request, reply)  # a child that cannot take them fails this grade alone
            channel.close()
        os.close(request)
        self.children[pid] = (key, reply)
        self.keys[key] = pid
        self.fork_spare()

    def hand(self, channel: socket.socket, request: int, reply: int) -> bool:
        self.harness = True
        try:
            socket.send_fds(channel, [b"G"], [request, reply])
            return True
        except OSError:
            return False
        finally:
            self.harness = False

    def kill(self, pid: int) -> None:
        if self.allow_subprocess:
            kill_tree(pid)
        else:
            try:
                os.kill(pid, signal.SIGKILL)  # the seccomp filter let it start no process
            except OSError:
                pass

    def reap(self) -> None:
        ended = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if self.spare is not None and pid == self.spare[0]:
                self.spare[1].close()
                self.spare = None  # killed from outside while waiting: the next request forks afresh
            if pid in self.children:
                key, reply = self.children.pop(pid)
                del self.keys[key]
                ended = True
                try:  # the exit status follows the child's replies; never block on a pipe the child filled
                    if select.select([], [reply], [], 0)[1]:
                        send(reply, {"exit": os.waitstatus_to_exitcode(status)})
                except OSError:
                    pass
                os.close(reply)
        if ended and self.allow_subprocess:  # processes a finished grade left behind came to us: kill them
            alive = {*self.children, *([self.spare[0]] if self.spare else [])}
            kill_tree(os.getpid(), spare_root=True, spare=frozenset(alive))
