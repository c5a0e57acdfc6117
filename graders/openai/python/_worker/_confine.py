"""Confinement, the Linux side: namespaces, mounts, capabilities, the seccomp filter and Landlock.

Every step here is a system call (through :mod:`ctypes` where the :mod:`os` module
lacks it) that the kernel enforces whatever the code in the process does later.
A step Linux refuses raises :class:`Refused` (the supervisor and the template turn
that into the sandbox's isolation report) or, for the optional ones, returns why
it was not applied. The audit hook, which only gives friendly errors, is in
:mod:`._audit`.
"""

from __future__ import annotations

import ctypes
import os
import re

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


# -- the mounts of the template and of a grade child ---------------------------------------------


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

