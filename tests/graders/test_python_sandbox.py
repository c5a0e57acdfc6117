"""The python grader's sandbox against code written to get out (issue 11): each case was a way out before.

A grade must not write outside its temp dir by any route (``dir_fd``, FIFOs,
raw system calls), start a process when subprocesses are not allowed (also
below the audit hook), reach the template or the grading process, or change any
other grade's score (forged reply frames, a replaced ``float``, ``json.dumps``
or harness function, a thread left running, a file left behind). A hung grade
holds one slot, never the grader, and a caller's deadline kills it.

Each case is bounded (short timeouts; every wait ends within seconds where the
defect was a hang), and checks what happened outside the sandbox itself.
"""

from __future__ import annotations

import ast
import ctypes
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from graders.openai.python._grader import PythonGrader, _deadline, grading_deadline

ECHO = "def grade(sample, item):\n    return item['value']\n"


def namespaces_available() -> bool:
    with PythonGrader(name="probe", source=ECHO, isolation="namespaces") as g:
        return g.grade("x", {"value": 1.0}).ok


NAMESPACES = pytest.mark.skipif(not namespaces_available(), reason="no user namespaces here (isolation='basic' does not "
                                                                  "confine these: see docs/graders/python.md)")
ISOLATIONS = [pytest.param("namespaces", marks=NAMESPACES), "basic"]


def landlock_abi() -> int:
    syscall = ctypes.CDLL(None).syscall
    syscall.restype = ctypes.c_long
    return max(int(syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))), 0)  # its version


LANDLOCK = pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock here: without namespaces, writes are "
                                                         "refused by the audit hook only")
LANDLOCK_NET = pytest.mark.skipif(landlock_abi() < 4, reason="no Landlock network rules here (ABI 4, Linux 6.7)")


def flagged(grade: Any, flag: str = "python_grader_runtime_error") -> bool:
    return grade.score == 0.0 and [k for k, v in grade.errors.items() if v] == [flag]


def sandbox_pids(g: PythonGrader) -> set[int]:
    """Live processes of the grader's sandbox, found from outside by the private TMPDIR in their environment."""
    sandbox = g._pool.sandbox  # white box: the running sandbox's temp dir
    assert sandbox is not None
    marker = b"\0TMPDIR=" + sandbox.tmp.encode() + b"\0"
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                env = Path(f"/proc/{name}/environ").read_bytes()
                state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in b"\0" + env and state not in (b"Z", b"X"):
                found.add(int(name))
    return found


IDLE = 3
"""Processes of a sandbox while no grade runs: the supervisor, the template and the child it forked ahead."""


def idle_pids(g: PythonGrader) -> set[int]:
    """The sandbox's processes once no grade runs (a finished grade's process may take a moment to be reaped)."""
    assert wait_until(lambda: len(sandbox_pids(g)) == IDLE), sandbox_pids(g)
    return sandbox_pids(g)


def wait_until(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- writes outside the temp dir, by routes the audit hook does not see ------------------------

ESCAPES = """import ctypes, os
def grade(sample, item):
    out = item['outside']
    if item['how'] == 'dir_fd':
        d = os.open(out, os.O_RDONLY)
        os.open('dir_fd.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d)
    elif item['how'] == 'mkfifo':
        os.mkfifo(os.path.join(out, 'fifo'))
    elif item['how'] == 'libc':
        if ctypes.CDLL(None).open(os.path.join(out, 'libc.txt').encode(), os.O_WRONLY | os.O_CREAT, 0o644) < 0:
            raise OSError(ctypes.get_errno(), 'libc open refused')
    return 1.0
"""


@pytest.mark.parametrize("isolation", [pytest.param("namespaces", marks=NAMESPACES), pytest.param("basic", marks=LANDLOCK)])
@pytest.mark.parametrize("how", ["dir_fd", "mkfifo", "libc"])
def test_no_route_writes_outside_the_temp_dir(tmp_path: Path, how: str, isolation: str) -> None:
    with PythonGrader(name="escape", source=ESCAPES, timeout=5, isolation=isolation) as g:  # type: ignore[arg-type]
        grade = g.grade("x", {"outside": str(tmp_path), "how": how})
    assert flagged(grade), grade.reason
    assert list(tmp_path.iterdir()) == []


FORK_EXEC = """import ctypes, os, sys, _posixsubprocess
def grade(sample, item):
    command = b'id > ' + item['target'].encode()
    if item['how'] == 'fork_exec':
        if sys.version_info[:2] != (3, 11):
            return 0.5  # the 3.11 signature below; libc covers the same route on other versions
        args = [[b'/bin/sh', b'-c', command], [b'/bin/sh'], True, (), None, None,
                -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None]
        try:
            _posixsubprocess.fork_exec(*args, False)  # 3.11.x with allow_vfork
        except TypeError:
            _posixsubprocess.fork_exec(*args)
    elif item['how'] == 'libc':
        status = ctypes.CDLL(None).system(command)
        if status != 0:
            raise OSError('system() failed: %d' % status)
    return 1.0
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("how", ["fork_exec", "libc"])
def test_processes_are_refused_below_the_audit_hook(tmp_path: Path, isolation: str, how: str) -> None:
    target = tmp_path / "o"
    with PythonGrader(name="spawn", source=FORK_EXEC, timeout=5, isolation=isolation) as g:  # type: ignore[arg-type]
        grade = g.grade("x", {"target": str(target), "how": how})
    if grade.score == 0.5:
        pytest.skip("fork_exec's signature is written for Python 3.11")
    assert flagged(grade), grade.reason
    assert not target.exists()


CONNECT = """import ctypes, socket, struct
def grade(sample, item):
    s = socket.socket()
    address = struct.pack('=HH4s8x', socket.AF_INET, socket.htons(item['port']), socket.inet_aton('127.0.0.1'))
    if ctypes.CDLL(None).connect(s.fileno(), address, len(address)) != 0:
        raise OSError(ctypes.get_errno(), 'connect refused')
    return 1.0
"""


@pytest.mark.parametrize("isolation", [pytest.param("namespaces", marks=NAMESPACES),
                                       pytest.param("basic", marks=LANDLOCK_NET)])
def test_tcp_below_the_audit_hook_is_refused(isolation: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        with PythonGrader(name="net", source=CONNECT, timeout=5, isolation=isolation) as g:  # type: ignore[arg-type]
            grade = g.grade("x", {"port": listener.getsockname()[1]})
        assert flagged(grade), grade.reason
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected


# -- one grade cannot change another's score ---------------------------------------------------

FORGER = """import json, os, stat, struct
def forge(value):
    frames = [json.dumps(f).encode() for f in ({'value': value}, *({'i': n, 'value': value} for n in range(4)))]
    for fd in range(3, 256):
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            for data in frames:
                os.write(fd, struct.pack('>I', len(data)) + data)
        except OSError:
            pass
def grade(sample, item):
    if item.get('forge'):
        forge(0.99)
    return item['value']
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_forged_reply_frame_shifts_no_other_grade(isolation: str) -> None:
    items = [{"value": 0.1}, {"value": 0.2, "forge": True}, {"value": 0.3}, {"value": 0.4}, {"value": 0.5}]
    with PythonGrader(name="forger", source=FORGER, timeout=5, isolation=isolation) as g:  # type: ignore[arg-type]
        scores = [g.grade("x", item).score for item in items]
        batch = g.grade_batch(["x"] * 5, items, chunk_size=1)
    assert [scores[i] for i in (0, 2, 3, 4)] == [0.1, 0.3, 0.4, 0.5]  # the forger's own score is its own business
    assert [batch[i].score for i in (0, 2, 3, 4)] == [0.1, 0.3, 0.4, 0.5]


TAMPER = """import builtins, json, sys
def grade(sample, item):
    how = item.get('tamper')
    if how == 'float':
        builtins.float = lambda *a: 1.0
    elif how == 'json':
        json.dumps = lambda *a, **k: '{"value": 1.0, "i": 0}'
    elif how == 'harness':
        sys.modules['graders.openai.python._worker._grade'].call = lambda *a, **k: {'value': 1.0}  # the harness's grade call
    if item.get('raise'):
        raise ValueError('bad item')
    return item['value']
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("how", ["float", "json", "harness"])
def test_tampering_with_the_process_changes_no_later_grade(isolation: str, how: str) -> None:
    with PythonGrader(name="tamper", source=TAMPER, timeout=5, isolation=isolation) as g:  # type: ignore[arg-type]
        g.grade("x", {"value": 0.5, "tamper": how})
        later = [g.grade("x", {"value": 0.3}), g.grade("x", {"value": 0.3, "raise": True})]
    assert later[0].score == 0.3 and later[0].ok
    assert flagged(later[1]) and "ValueError: bad item" in later[1].reason


THREAD = """import _thread, os, time
def spin():
    while True:
        time.sleep(0.001)
def grade(sample, item):
    if item.get('start'):
        _thread.start_new_thread(spin, ())
        return 1.0
    return len(os.listdir('/proc/self/task')) / 10
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_thread_left_running_dies_with_its_grade(isolation: str) -> None:
    with PythonGrader(name="thread", source=THREAD, timeout=5, isolation=isolation) as g:  # type: ignore[arg-type]
        assert g.grade("x", {"start": True}).score == 1.0
        assert g.grade("x", {}).score == 0.1  # one thread: the spinner did not survive into this grade


@NAMESPACES
def test_files_a_grade_writes_are_gone_for_the_next() -> None:
    source = ("import os\ndef grade(sample, item):\n    seen = os.path.exists('note.txt')\n"
              "    open('note.txt', 'w').write('left for the next grade')\n    return 0.0 if seen else 1.0\n")
    with PythonGrader(name="notes", source=source, timeout=5) as g:
        assert [g.grade("x").score for _ in range(3)] == [1.0, 1.0, 1.0]


@NAMESPACES
def test_a_grade_cannot_reach_the_template_or_the_grading_process() -> None:
    source = """import os
def grade(sample, item):
    assert os.getppid() == 1, os.getppid()  # the template, PID 1 of the sandbox's PID namespace
    reached = []
    fds = ['/proc/1/fd/%s' % n for n in os.listdir('/proc/1/fd')]  # the numbers show; the pipes behind them must not
    assert fds
    for path in ('/proc/1/mem', '/proc/1/environ', *fds):
        try:
            os.close(os.open(path, os.O_RDONLY if path.endswith(('mem', 'environ')) else os.O_WRONLY))
            reached.append(path)
        except PermissionError:
            pass
    assert not reached, reached
    assert str(item['grader_pid']) not in os.listdir('/proc'), 'the grading process is visible'
    assert set(os.listdir('/dev')) <= {'null', 'zero', 'full', 'random', 'urandom', 'tty', 'fd', 'stdin', 'stdout',
                                       'stderr', 'shm'}, os.listdir('/dev')
    return 1.0
"""
    with PythonGrader(name="reach", source=source, timeout=5) as g:
        grade = g.grade("x", {"grader_pid": os.getpid()})
    assert grade.score == 1.0, grade.reason


@NAMESPACES
def test_the_hosts_system_v_shared_memory_is_out_of_reach() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x5EED0000 + os.getpid() % 0xFFFF
    segment = libc.shmget(key, 4096, 0o1600)  # IPC_CREAT | 0600
    assert segment >= 0, os.strerror(ctypes.get_errno())
    try:
        source = ("import ctypes\ndef grade(sample, item):\n"
                  "    return 1.0 if ctypes.CDLL(None).shmget(item['key'], 0, 0) < 0 else 0.0\n")
        with PythonGrader(name="ipc", source=source, timeout=5) as g:
            assert g.grade("x", {"key": key}).score == 1.0  # another IPC namespace: the segment does not exist there
    finally:
        libc.shmctl(segment, 0, None)  # IPC_RMID


# -- liveness: a hung grade holds one slot; deadlines and close() kill it --------------------------

HANG = "def grade(sample, item):\n    while item.get('hang'):\n        pass\n    return item['value']\n"


def test_a_hung_grade_holds_one_slot_and_close_ends_it() -> None:
    with PythonGrader(name="hang", source=HANG, timeout=60, concurrency=2) as g:
        g.grade("x", {"value": 1.0})
        idle = idle_pids(g)
        hung: list[Any] = []
        thread = threading.Thread(target=lambda: hung.append(g.grade("x", {"hang": True})))
        thread.start()
        # The hung grade took the child forked ahead; the template forked the next one.
        assert wait_until(lambda: len(sandbox_pids(g) - idle) == 1), "the hung grade never started"
        started = time.monotonic()
        assert g.grade("x", {"value": 0.5}).score == 0.5  # graded beside the hung one, not after its 60 s
        assert time.monotonic() - started < 30
        g.close()  # from this thread, while the other is in flight
        thread.join(10)
        assert not thread.is_alive()
    (grade,) = hung
    assert flagged(grade, "python_grader_server_error") and "closed" in grade.reason


@NAMESPACES
def test_a_program_a_grade_runs_cannot_signal_other_grades() -> None:
    source = ("import subprocess\ndef grade(sample, item):\n    while item.get('hang'):\n        pass\n"
              "    if item.get('kill'):\n        subprocess.run(['sh', '-c', 'kill -9 -1'])\n    return 1.0\n")
    with PythonGrader(name="killer", source=source, timeout=60, allow_subprocess=True, concurrency=2) as g:
        g.grade("x", {})
        assert wait_until(lambda: len(sandbox_pids(g)) == IDLE + 1)  # + the init of the spare child's PID namespace
        hung: list[Any] = []
        thread = threading.Thread(target=lambda: hung.append(g.grade("x", {"hang": True})))
        thread.start()
        # The hung grade took the spare child (and its init); the template forked the next pair.
        assert wait_until(lambda: len(sandbox_pids(g)) == IDLE + 3), "the hung grade never started"
        assert g.grade("x", {"kill": True}).score == 1.0  # its shell sent SIGKILL to every process it could see
        assert not wait_until(lambda: not thread.is_alive(), 5)  # the hung grade was not among them
        g.close()
        thread.join(10)
    (grade,) = hung
    assert flagged(grade, "python_grader_server_error") and "closed" in grade.reason, grade.reason


def test_a_grading_deadline_kills_the_grade() -> None:
    with PythonGrader(name="hang", source=HANG, timeout=60) as g:
        g.grade("x", {"value": 1.0})
        idle_pids(g)
        started = time.monotonic()
        with grading_deadline(0.5):
            grade = g.grade("x", {"hang": True})
            batch = g.grade_batch(["x"] * 3, [{"value": 0.2}, {"hang": True}, {"value": 0.3}], chunk_size=1)
        assert time.monotonic() - started < 30  # the deadline, not the 60 s timeout
        assert flagged(grade, "python_grader_server_error") and "deadline passed" in grade.reason
        assert flagged(batch[1], "python_grader_server_error")
        assert wait_until(lambda: len(sandbox_pids(g)) == IDLE), sandbox_pids(g)  # the hung grades killed, not abandoned
        assert g.grade("x", {"value": 0.25}).score == 0.25  # outside the block: no deadline


def test_nested_deadlines_keep_the_earlier() -> None:
    assert _deadline.get() is None
    with grading_deadline(5):
        outer = _deadline.get()
        with grading_deadline(100):
            assert _deadline.get() == outer
        with grading_deadline(1):
            inner = _deadline.get()
            assert inner is not None and outer is not None and inner < outer
        assert _deadline.get() == outer
    assert _deadline.get() is None


def test_close_ends_a_slow_top_level_at_once() -> None:
    source = "import time\ntime.sleep(60)\ndef grade(sample, item):\n    return 1.0\n"
    g = PythonGrader(name="slow_import", source=source, timeout=60)
    loading: list[Any] = []
    thread = threading.Thread(target=lambda: loading.append(g.grade("x")))
    thread.start()
    assert wait_until(lambda: g._pool.starting is not None and g._pool.starting.isolation is not None)  # white box
    closed = threading.Thread(target=g.close)
    closed.start()
    closed.join(10)
    thread.join(10)
    assert not closed.is_alive() and not thread.is_alive()  # where close() waited for the 60 s top level
    (grade,) = loading
    assert flagged(grade, "python_grader_server_error") and "closed" in grade.reason


def test_a_deadline_bounds_the_wait_for_another_threads_start() -> None:
    source = "import time\ntime.sleep(60)\ndef grade(sample, item):\n    return 1.0\n"
    with PythonGrader(name="slow_import", source=source, timeout=60) as g:
        first = threading.Thread(target=g.grade, args=("x",))
        first.start()
        assert wait_until(lambda: g._pool.starting is not None)  # white box: the first call is loading the source
        started = time.monotonic()
        with grading_deadline(0.5):
            waited = g.grade("x")
        assert time.monotonic() - started < 30  # the deadline, not the other call's 60 s top level
        assert flagged(waited, "python_grader_server_error") and "deadline passed" in waited.reason
    first.join(10)
    assert not first.is_alive()


WORKER = Path(__file__).resolve().parents[2] / "graders" / "openai" / "python" / "_worker"


def test_the_sandbox_program_imports_the_standard_library_only() -> None:
    """Every module of the program run inside the sandbox imports the standard library or its own package, nothing else."""
    modules = sorted(WORKER.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "__main__.py", "_supervisor.py", "_template.py", "_grade.py"}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # a module of this package
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__" or \
                    name.startswith("graders.openai.python._worker."), f"{module.name} imports {name}"


SYS_MODULES = """import sys
def grade(sample, item):
    ours = sorted(m for m in sys.modules if m.split('.')[0] in ('graders', 'schemas', 'rl'))
    assert all(m.startswith('graders.openai.python._worker') for m in ours), ours
    assert 'graders' not in sys.modules and 'graders.openai.python' not in sys.modules
    assert not any(p.endswith('_worker') or p in ('', '.') for p in sys.path), sys.path
    return 1.0
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_sandbox_loads_its_own_package_and_none_of_graders(isolation: str) -> None:
    with PythonGrader(name="modules", source=SYS_MODULES, timeout=10, isolation=isolation) as g:  # type: ignore[arg-type]
        grade = g.grade("x")
    assert grade.score == 1.0, grade.reason
