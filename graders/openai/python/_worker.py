

"""The python grader's sandbox, seen from inside. Run by path: ``python -I -B _worker.py REQ CTL LIFE SOCK MODE``.

Standard library only (it must not import :mod:`graders`: the sandbox sees none
of the grading process). Three kinds of process, each with one job:

* the **supervisor** (this program as started) enters new user, network, PID
  and IPC namespaces (``MODE`` ``auto``/``namespaces``; else none), forks the
  template, reports the template's exit on ``CTL``, and kills everything if the
  grading process dies (``LIFE`` closes);
* the **template** (the namespace's PID 1), in a mount namespace of its own,
  makes every mount read-only but its
  private temp dir, gives itself a fresh ``/proc`` and a minimal ``/dev``, drops
  every capability, becomes non-dumpable (so no process it forks can read or
  write its memory), installs the audit hook and the resource limits, and then
  runs the source's top level once. It never grades: it keeps one grade child
  forked and confined ahead, and hands each request that comes on ``SOCK`` (a
  unix socket carrying two pipe ends) to that child, then forks the next;
* a **grade child** takes a fresh private temp dir (a tmpfs in a user and mount
  namespace of its own), forbids new processes and ``exec`` with a seccomp filter
  unless subprocesses are allowed, reads its samples from its request pipe,
  writes one reply frame per sample on its reply pipe, and exits. The template
  kills it (and whatever it started) when the grading process says so, and
  writes its exit status on the reply pipe after it.

The reply pipe of a grade is held by that grade's child alone (the template
keeps a copy only to report the exit status), so whatever user code does to its
own process (replacing ``float``, ``json.dumps``, this module's functions, or
writing frames on the pipe) reaches that grade's replies and no other; the
grading process validates every frame. See docs/graders/python.md for what is
and is not confined.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

FILENAME = "<python grader>"

# Linux constants (include/uapi/linux/*.h); the same on every architecture this uses them on.
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_THREAD = 0x20000, 0x10000000, 0x20000000, 0x40000000, 0x10000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_NOATIME, MS_NODIRATIME, MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 16384, 1 << 18, 1 << 21, 1 << 24
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_SECUREBITS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 22, 28, 36, 38
SECBITS_LOCKED_NOROOT = 0x2F  # NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each locked: uid 0 gains no capability on exec
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# seccomp: per architecture, its audit id and the system calls that start a process or run a program
# and the calls that send a signal (allowed only to the grade's own process: no grade signals another)
SECCOMP_ARCH: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone3": 435,
                            "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
                            "pidfd_send_signal": 424}),
    "aarch64": (0xC00000B7, {"clone": 220, "execve": 221, "execveat": 281, "clone3": 435, "kill": 129, "tkill": 130,
                             "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_send_signal": 424}),
}
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
MOUNT_OPTIONS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                 "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}


# Landlock (Linux 5.13+): system calls, and the filesystem and network rights handled (each ABI adds some)
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_WRITE_V1 = 2 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048 | 4096  # write a file, remove, make anything
LANDLOCK_REFER, LANDLOCK_TRUNCATE, LANDLOCK_FILE_WRITE = 8192, 16384, 2  # ABI 2, ABI 3; the rights a file rule takes
LANDLOCK_NET_BIND_TCP, LANDLOCK_NET_CONNECT_TCP = 1, 2  # ABI 4


class Refused(Exception):
    """A confinement step Linux refused (the message says which)."""


# -- frames: a 4-byte big-endian length, then JSON -------------------------------------------


def send(fd: int, obj: object) -> None:
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv(fd: int) -> Any:
    head = read_exact(fd, 4)
    body = None if head is None else read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


# -- system calls the os module lacks -----------------------------------------------------------

LIBC = ctypes.CDLL(None, use_errno=True)


def checked(result: int, what: str) -> None:
    if result != 0:
        raise Refused(f"{what}: {os.strerror(ctypes.get_errno())}")


def unshare(flags: int, what: str) -> None:
    checked(LIBC.unshare(ctypes.c_int(flags)), what)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def arg(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    result = LIBC.mount(arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags), arg(data))
    checked(result, f"mount {target}")


def prctl(option: int, value: int) -> int:
    result: int = LIBC.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                             ctypes.c_ulong(0))
    return result


def write_proc(name: str, text: str) -> None:
    """Write ``/proc/self/<name>`` with raw system calls (Python's ``open`` would go through the audit hook)."""
    fd = LIBC.open(f"/proc/self/{name}".encode(), ctypes.c_int(os.O_WRONLY))
    if fd < 0:
        raise Refused(f"open /proc/self/{name}: {os.strerror(ctypes.get_errno())}")
    data = text.encode()
    written = LIBC.write(fd, data, ctypes.c_size_t(len(data)))
    error = ctypes.get_errno()
    LIBC.close(fd)
    if written != len(data):
        raise Refused(f"write /proc/self/{name}: {os.strerror(error)}")


def map_ids(uid: int, gid: int) -> None:
    """The calling process's new user namespace maps its own uid and gid, and nothing else.

    Root (0) is seen inside as ``nobody`` (65534): a namespace created without
    ``CAP_SETFCAP`` (a grade's) may not map root, and the grade's maps repeat these."""
    write_proc("setgroups", "deny")
    write_proc("uid_map", f"{uid or 65534} {uid} 1")
    write_proc("gid_map", f"{gid or 65534} {gid} 1")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_privileges(check: bool = True) -> bool:
    """No capability now or after any ``exec``, even as uid 0; True when the process holds none afterwards
    (read from ``/proc`` with ``check``, else from the system calls' results)."""
    locked = prctl(PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT) == 0  # fails without CAP_SETPCAP: nothing to lock then
    dropped = LIBC.capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), (_CapData * 2)()) == 0
    if not check:
        return locked and dropped
    try:
        with open("/proc/self/status") as f:
            effective = next(line for line in f if line.startswith("CapEff:"))
        return int(effective.split()[1], 16) == 0
    except (OSError, StopIteration, ValueError):
        return False


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(tmp: str) -> str | None:
    """Without namespaces: the kernel refuses writes (of any kind: files, removals, FIFOs, links) outside ``tmp`` and
    the harmless devices, and TCP ``bind``/``connect`` where Landlock's ABI has them. None once applied, else why not."""
    syscall = LIBC.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return "Landlock is not available: " + os.strerror(ctypes.get_errno())
    handled = LANDLOCK_WRITE_V1 | (LANDLOCK_REFER if abi >= 2 else 0) | (LANDLOCK_TRUNCATE if abi >= 3 else 0)
    file_rights = LANDLOCK_FILE_WRITE | (LANDLOCK_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled, LANDLOCK_NET_BIND_TCP | LANDLOCK_NET_CONNECT_TCP if abi >= 4 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 4 else 8
    ruleset = syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))
    if ruleset < 0:
        return "landlock_create_ruleset: " + os.strerror(ctypes.get_errno())
    try:
        for path, rights in ((tmp, handled), *((f"/dev/{d}", file_rights) for d in ("null", "zero", "full", "tty"))):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rule = _PathBeneathAttr(rights, fd)
                if syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(1),
                           ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    return f"landlock_add_rule {path}: " + os.strerror(ctypes.get_errno())
            finally:
                os.close(fd)
        if syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return "landlock_restrict_self: " + os.strerror(ctypes.get_errno())
    finally:
        os.close(ruleset)
    return None


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class ProcessFilter:
    """A seccomp program to install in a grade child, with the slots where that child's pid goes."""

    def __init__(self, code: list[tuple[int, int, int, int]], pid_slots: list[int]) -> None:
        self.program = (_SockFilter * len(code))(*(_SockFilter(*ins) for ins in code))
        self.fprog = _SockFprog(len(code), ctypes.cast(self.program, ctypes.POINTER(_SockFilter)))
        self.pid_slots = pid_slots


def process_filter() -> ProcessFilter | str:
    """A seccomp filter: ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD`` and ``exec*`` fail with EPERM
    (``clone3`` with ENOSYS, so that the C library falls back to ``clone`` for threads), and so does a signal to any
    process but the caller (``pidfd_send_signal`` to any); or why there is none."""
    arch = SECCOMP_ARCH.get(os.uname().machine)
    if arch is None:
        return f"no seccomp filter for {os.uname().machine}"
    audit_arch, calls = arch
    eperm, allow = SECCOMP_RET_ERRNO | 1, SECCOMP_RET_ALLOW
    code: list[tuple[int, int, int, int]] = [
        (BPF_LD_W_ABS, 0, 0, 4), (BPF_JEQ_K, 1, 0, audit_arch), (BPF_RET_K, 0, 0, eperm),  # another ABI: refuse all
        (BPF_LD_W_ABS, 0, 0, 0)]
    if audit_arch == SECCOMP_ARCH["x86_64"][0]:
        code += [(BPF_JGE_K, 0, 1, 0x40000000), (BPF_RET_K, 0, 0, eperm)]  # the x32 ABI
    code += [(BPF_JEQ_K, 0, 1, calls["clone3"]), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | 38)]  # ENOSYS
    for name in ("fork", "vfork", "execve", "execveat", "pidfd_send_signal"):
        if name in calls:
            code += [(BPF_JEQ_K, 0, 1, calls[name]), (BPF_RET_K, 0, 0, eperm)]
    pid_slots = []
    for name in SIGNAL_CALLS:  # the target (args[0]) must be this process: its pid is written in when it starts
        pid_slots.append(len(code) + 2)
        code += [(BPF_JEQ_K, 0, 4, calls[name]), (BPF_LD_W_ABS, 0, 0, 16), (BPF_JEQ_K, 0, 1, 0),
                 (BPF_RET_K, 0, 0, allow), (BPF_RET_K, 0, 0, eperm)]
    code += [(BPF_JEQ_K, 1, 0, calls["clone"]), (BPF_RET_K, 0, 0, allow),
             (BPF_LD_W_ABS, 0, 0, 16),  # the low half of clone's flags (args[0], little-endian)
             (BPF_JSET_K, 0, 1, CLONE_THREAD), (BPF_RET_K, 0, 0, allow), (BPF_RET_K, 0, 0, eperm)]
    return ProcessFilter(code, pid_slots)


def forbid_processes(built: ProcessFilter | str) -> str | None:
    """Install :func:`process_filter`'s filter on this process for good: None once done, else why not."""
    if isinstance(built, str):
        return built
    for slot in built.pid_slots:
        built.program[slot].k = os.getpid()
    if LIBC.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(2), ctypes.byref(built.fprog), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        return "seccomp: " + os.strerror(ctypes.get_errno())
    return None


# -- the supervisor --------------------------------------------------------------------------


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


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants, from the parent pids in ``/proc`` (just ``root`` where there is no ``/proc``).

    The harness's side kills with it too (``_sandbox``), so this module must stay importable without running.
    """
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


# -- the template ----------------------------------------------------------------------------


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


class Template:
    """The pristine process every grade is forked from (see the module docstring)."""

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
        self.install_hook()
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
                self.grade_child(theirs)
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

    # -- one grade child -------------------------------------------------------------------------

    def grade_child(self, channel: socket.socket) -> None:
        """A grade child: confine itself, wait for its pipes on ``channel``, grade the samples that come on them."""
        self.harness = False  # forked while the template had it set
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (*self.wake, *(r for _, r in self.children.values())):
            os.close(fd)
        self.sock.close()
        if self.spare is not None:
            self.spare[1].close()
        self.init_pid = 0
        try:
            if self.isolation == "namespaces":
                private_tmp(self.tmp, self.file_size, own_pids=self.allow_subprocess)
            if self.allow_subprocess:
                prctl(PR_SET_CHILD_SUBREAPER, 1)  # what the grade starts stays under this process until it ends
                if self.isolation == "namespaces":
                    self.init_pid = self.pid_init(channel)
            else:
                why = forbid_processes(self.filter)
                if why is not None and self.isolation == "namespaces":
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
            self.out.text = ""
            answer: dict[str, Any] = {"error": self.broken} if self.broken else call(self.grade, sample, self.memory)
            answer["i"] = n
            if "error" in answer and self.out.text:
                answer["output"] = self.out.text
            if has_children(ignore=self.init_pid) or threading.active_count() > threads:
                answer["restart"] = True  # a process or thread outlived the sample: the rest go to a fresh child
            send(reply, answer)
            if answer.get("restart"):
                break

    def pid_init(self, channel: socket.socket) -> int:
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

    def install_hook(self) -> None:
        """The audit hook: friendly ``PermissionError``\\ s for the network, writes outside the temp dir, processes and
        stray signals. It sees Python-level calls only; the mounts and the seccomp filter are what the kernel enforces."""
        from os import path as osp

        tmp, allow_subprocess, template = self.tmp, self.allow_subprocess, self
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


def confine_mounts(tmp: str) -> None:
    """Everything read-only but ``tmp``; a fresh ``/proc`` (this PID namespace's processes only, kernel settings
    read-only) and a ``/dev`` of harmless devices, in a mount namespace of its own (the supervisor keeps the host's
    view, to remove the temp dir). Raises :class:`Refused` when Linux refuses a step."""
    unshare(CLONE_NEWNS, "unshare the mount namespace")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in PROC_READ_ONLY:
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
    devices = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES if os.path.exists(f"/dev/{name}")}
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name, fd in devices.items():
        os.close(os.open(f"/dev/{name}", os.O_WRONLY | os.O_CREAT, 0o666))
        mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")
    mount(tmp, tmp, None, MS_BIND)
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = [line.split() for line in f]
    seen = set()
    for fields in mounts:  # mountinfo: id parent major:minor root mount-point options ...
        point = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4]))
        if point in (tmp, "/proc") or point in seen:  # /proc stays writable: a grade writes its own uid_map there
            continue
        seen.add(point)
        options = os.fsdecode(fields[5]).split(",")
        flags = sum(MOUNT_OPTIONS[o] for o in options if o in MOUNT_OPTIONS)
        if not flags & (MS_NOATIME | MS_RELATIME):
            flags |= MS_STRICTATIME
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except Refused:
            if os.path.ismount(point):
                raise
            # a mount hidden under one made above (the old /dev/shm under the new /dev): nothing reaches it
    if not os.statvfs("/").f_flag & os.ST_RDONLY or os.statvfs(tmp).f_flag & os.ST_RDONLY:
        raise Refused("the read-only mounts did not take")


def private_tmp(tmp: str, size: int, own_pids: bool = False) -> None:
    """A user and mount namespace of the grade's own, with a fresh tmpfs at ``tmp`` (what it writes dies with it);
    with ``own_pids``, a PID namespace for the processes the grade starts (see :meth:`Template.pid_init`)."""
    uid, gid = os.getuid(), os.getgid()
    unshare(CLONE_NEWUSER | CLONE_NEWNS | (CLONE_NEWPID if own_pids else 0), "unshare for the grade")
    map_ids(uid, gid)
    mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0700")
    os.chdir(tmp)
    if not drop_privileges(check=False):
        raise Refused("capabilities could not be dropped")


def probe_private_tmp(tmp: str, size: int) -> None:
    """Whether a grade child will get its own namespaces and tmpfs here (a child tries, once); else :class:`Refused`."""
    pid = os.fork()
    if pid == 0:
        try:
            private_tmp(tmp, size)
            os._exit(0)
        except BaseException:
            os._exit(1)
    if os.waitpid(pid, 0)[1] != 0:
        raise Refused("a grade could not get user and mount namespaces and a tmpfs of its own")


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


if __name__ == "__main__":
    supervise(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])


