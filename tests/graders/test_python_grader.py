"""OpenAI's ``python`` grader: config checks, the sample/item contract, flagged failures, and a sandbox that survives hostile code.

Every hostile case is bounded (a 1-3 s timeout, a 512 MiB memory limit, 64
processes, 100 MB of output), so a broken sandbox cannot harm the machine
running the tests; each must end in a flagged 0 and leave the grader usable.
Processes are identified from outside by the sandbox's private ``TMPDIR`` in
their environment, so a leftover is found whatever session it moved to.
Code written to escape, and the grader's liveness, are tested in
``test_python_sandbox.py``.
"""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from rapidfuzz import fuzz, utils

from graders import GraderConfigError, from_config, run_grader
from graders.openai.python._grader import SOURCE_LIMIT, PythonGrader, sample_dict

ONE = "def grade(sample, item):\n    return 1.0\n"
ECHO = "def grade(sample, item):\n    return item['value']\n"


def namespaces_available() -> bool:
    with PythonGrader(name="probe", source=ONE, isolation="namespaces") as g:
        return g.grade("x").ok


ISOLATIONS = [pytest.param("namespaces", marks=pytest.mark.skipif(not namespaces_available(), reason="no user namespaces here")),
              "basic"]


def runtime_error(grade: Any) -> bool:
    flagged = [k for k, v in grade.errors.items() if v]
    return grade.score == 0.0 and flagged == ["python_grader_runtime_error"]


def sandbox_pids(tmp: str) -> set[int]:
    """Live (not zombie) processes whose environment holds the sandbox's TMPDIR."""
    marker = b"\0TMPDIR=" + tmp.encode() + b"\0"
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in b"\0" + env and state not in (b"Z", b"X"):
            found.add(int(name))
    return found


def parent_pid(pid: int) -> int:
    """``pid``'s parent, as this process sees it (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def wait_until(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def sandbox_tmp(g: PythonGrader) -> str:
    g.grade("warm up", {"value": 1.0})
    assert g._pool.sandbox is not None
    tmp = g._pool.sandbox.tmp  # white box: the sandbox's private directory, to find its processes from outside
    assert tmp and sandbox_pids(tmp)
    return tmp


def template_pid(g: PythonGrader) -> int:
    """The template: the supervisor's one child (white box)."""
    assert g._pool.sandbox is not None and g._pool.sandbox.proc is not None
    supervisor = g._pool.sandbox.proc.pid
    (child,) = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return int(child)


# -- the config -----------------------------------------------------------------------------


def test_from_config_round_trips_and_grades() -> None:
    config = {"type": "python", "name": "exact", "image_tag": "2025-05-08", "pass_threshold": 0.5,
              "source": "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n"}
    g = from_config(config)
    assert isinstance(g, PythonGrader) and g.type == "python" and g.name == "exact"
    assert g.config() == config and PythonGrader.from_config(g.config()).config() == config
    try:
        good, bad = g.grade("42", {"answer": "42"}), g.grade("41", {"answer": "42"})
    finally:
        g.close()
    assert (good.score, good.ok, good.reason) == (1.0, True, "1.000 from grade() >= 0.5: passes")
    assert (bad.score, bad.ok, bad.reason) == (0.0, True, "0.000 from grade() < 0.5: fails")
    assert good.details["exact"].prediction == 1.0


BAD_CONFIGS = [
    ({"source": ONE}, "missing_key", "/name"),
    ({"name": "p"}, "missing_key", "/source"),
    ({"name": "p", "source": ONE, "timeout": 3}, "unknown_key", "/timeout"),
    ({"name": "p", "source": 5}, "wrong_type", "/source"),
    ({"name": "p", "source": ONE + "#" * SOURCE_LIMIT}, "source_too_large", "/source"),
    ({"name": "p", "source": "def grade(sample, item)\n    return 1\n"}, "source_syntax_error", "/source"),
    ({"name": "p", "source": "x = 'a\0b'\n"}, "source_syntax_error", "/source"),
    ({"name": "p", "source": "def score(sample, item):\n    return 1\n"}, "missing_grade_function", "/source"),
    ({"name": "p", "source": "import math\n"}, "missing_grade_function", "/source"),
    ({"name": "p", "source": "async def grade(sample, item):\n    return 1\n"}, "bad_grade_signature", "/source"),
    ({"name": "p", "source": "def grade(sample):\n    return 1\n"}, "bad_grade_signature", "/source"),
    ({"name": "p", "source": "def grade(a, b, c):\n    return 1\n"}, "bad_grade_signature", "/source"),
    ({"name": "p", "source": "def grade(a, b, *, c):\n    return 1\n"}, "bad_grade_signature", "/source"),
    ({"name": "p", "source": ONE, "image_tag": 2025}, "wrong_type", "/image_tag"),
    ({"name": "p", "source": ONE, "pass_threshold": "high"}, "wrong_type", "/pass_threshold"),
    ({"name": "", "source": ONE}, "wrong_type", "/name"),
]


@pytest.mark.parametrize(("fields", "code", "pointer"), BAD_CONFIGS, ids=lambda x: repr(x)[:50])
def test_bad_configs_raise_at_construction_with_a_pointer(fields: dict[str, Any], code: str, pointer: str) -> None:
    with pytest.raises(GraderConfigError) as info:
        from_config({"type": "python", **fields})
    assert (info.value.code, info.value.pointer) == (code, pointer)


def test_the_size_limit_is_just_under_256_kib() -> None:
    padding = "#" * (SOURCE_LIMIT - 1 - len(ONE) - 1)
    PythonGrader(name="p", source=ONE + padding + "\n")  # SOURCE_LIMIT - 1 bytes: accepted
    with pytest.raises(GraderConfigError, match="source_too_large"):
        PythonGrader(name="p", source=ONE + padding + "#\n")


@pytest.mark.parametrize("source", [
    "def grade(sample, item, extra=None):\n    return 1\n",
    "def grade(*args):\n    return 1\n",
    "grade = lambda sample, item: 1\n",
    "try:\n    import numpy\nexcept ImportError:\n    pass\nelse:\n    def grade(s, i):\n        return 1\n",
    "class Grader:\n    def __call__(self, s, i):\n        return 1\ngrade = Grader()\n",
])
def test_any_binding_of_grade_is_accepted(source: str) -> None:
    assert PythonGrader(name="p", source=source).config()["source"] == source


@pytest.mark.parametrize(("option", "value"), [("timeout", 0), ("timeout", math.inf), ("memory_limit", 1024),
                                               ("isolation", "docker")])
def test_bad_local_options_raise(option: str, value: Any) -> None:
    with pytest.raises(GraderConfigError) as info:
        PythonGrader(name="p", source=ONE, **{option: value})
    assert (info.value.code, info.value.pointer) == ("bad_option", f"/{option}")


# -- what grade receives and returns ----------------------------------------------------------


def test_sample_has_openai_keys_and_item_is_the_row() -> None:
    source = ("def grade(sample, item):\n"
              "    assert set(sample) >= {'output_text', 'output_json', 'output_tools', 'choices'}, sorted(sample)\n"
              "    assert sample['output_json'] == item['expect_json'], sample['output_json']\n"
              "    assert sample['output_text'] == item['expect_text']\n"
              "    assert sample['output_tools'] == item.get('expect_tools', [])\n"
              "    return 1.0\n")
    with PythonGrader(name="shape", source=source) as g:
        assert g.grade('{"city": "Paris"}', {"expect_json": {"city": "Paris"}, "expect_text": '{"city": "Paris"}'}).ok
        assert g.grade("no json", {"expect_json": None, "expect_text": "no json"}).ok
        tools = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        chat = {"choices": [{"message": {"content": "hi", "tool_calls": tools}}]}
        assert g.grade(chat, {"expect_json": None, "expect_text": "hi", "expect_tools": tools}).ok
        missing = g.grade("x", None)
    assert runtime_error(missing) and "KeyError: 'expect_json'" in missing.reason
    assert sample_dict({"output_text": "a", "output_audio": {"data": ""}})["output_audio"] == {"data": ""}


def test_items_that_are_not_json_are_the_callers_mistake() -> None:
    with PythonGrader(name="p", source=ONE) as g, pytest.raises(GraderConfigError) as info:
        g.grade("x", {"when": object()})
    assert info.value.code == "not_json"


def test_numbers_are_accepted_and_clamped_into_0_1() -> None:
    with PythonGrader(name="n", source=ECHO) as g:
        assert [g.grade("x", {"value": v}).score for v in (True, False, 0, 1, 0.25)] == [1.0, 0.0, 0.0, 1.0, 0.25]
        high, low = g.grade("x", {"value": 87}), g.grade("x", {"value": -0.5})
    assert (high.score, high.ok, high.reason) == (1.0, True, "1.000 from grade() (returned 87, clamped)")
    assert high.details["n"].prediction == 87.0
    assert (low.score, low.ok) == (0.0, True)
    numeric = ("import numpy as np\nfrom fractions import Fraction\nfrom decimal import Decimal\n"
               "def grade(sample, item):\n"
               "    kind = item['kind']\n"
               "    return {'np': np.float32(0.5), 'npint': np.int64(1), 'frac': Fraction(1, 4), 'dec': Decimal('0.75')}[kind]\n")
    with PythonGrader(name="n", source=numeric) as g:  # OpenAI's sandbox had numpy; so does ours
        assert [g.grade("x", {"kind": k}).score for k in ("np", "npint", "frac", "dec")] == [0.5, 1.0, float(Fraction(1, 4)), 0.75]


@pytest.mark.parametrize(("value", "why"), [
    (None, "grade returned None, not a number"),
    ("0.5", "grade returned a str, not a number"),
    ([1.0], "grade returned a list, not a number"),
    (float("nan"), "grade returned nan, not a finite number"),
    (float("inf"), "grade returned inf, not a finite number"),
])
def test_non_numbers_and_non_finite_values_are_flagged(value: Any, why: str) -> None:
    source = f"import math\ndef grade(sample, item):\n    return {value!r}\n".replace("nan", "math.nan").replace("inf", "math.inf")
    with PythonGrader(name="p", source=source) as g:
        grade = g.grade("x")
    assert runtime_error(grade) and grade.reason == f"{why}; scored 0"


# -- OpenAI's own example ---------------------------------------------------------------------

# The python-grader example of OpenAI's graders guide scores with rapidfuzz's WRatio on
# default-processed strings, divided by 100, and runs it on these two texts:
# https://platform.openai.com/docs/guides/graders#python-graders
# (also https://developers.openai.com/api/docs/guides/graders). The same logic, run locally:
WRATIO = """from rapidfuzz import fuzz, utils

def grade(sample, item):
    answer, reference = sample["output_text"], item["reference_answer"]
    return fuzz.WRatio(answer, reference, processor=utils.default_process) / 100.0
"""


def test_openai_rapidfuzz_example_conforms() -> None:
    item, sample = {"reference_answer": "fuzzy wuzzy had no hair"}, "fuzzy wuzzy was a bear"
    expected = fuzz.WRatio(sample, item["reference_answer"], processor=utils.default_process) / 100.0
    result = run_grader({"type": "python", "name": "fuzzy", "source": WRATIO}, sample, item)
    assert 0.0 < expected < 1.0 and result["reward"] == pytest.approx(expected)
    assert result["metadata"]["type"] == "python" and not any(result["metadata"]["errors"][k] for k in (
        "python_grader_runtime_error", "python_grader_server_error"))


def test_python_grader_inside_multi() -> None:
    config: dict[str, Any] = {"type": "multi", "name": "both", "calculate_output": "0.5 * fuzzy + 0.5 * exact", "graders": {
        "fuzzy": {"type": "python", "name": "fuzzy", "source": WRATIO},
        "exact": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                  "reference": "{{ item.reference_answer }}", "operation": "eq"}}}
    grade = from_config(config).grade("fuzzy wuzzy had no hair", {"reference_answer": "fuzzy wuzzy had no hair"})
    assert grade.score == 1.0 and grade.sub_scores == {"fuzzy": 1.0, "exact": 1.0}
    broken = {**config, "graders": {**config["graders"], "fuzzy": {"type": "python", "name": "fuzzy",
                                                                    "source": "def grade(s, i):\n    return 1 / 0\n"}}}
    grade = from_config(broken).grade("a", {"reference_answer": "a"})
    assert grade.score == 0.5 and grade.errors["python_grader_runtime_error"] and "ZeroDivisionError" in grade.reason


# -- failures of the user's code ---------------------------------------------------------------

COUNTER = "calls = 0\ndef grade(sample, item):\n    global calls\n    calls += 1\n    {body}\n    return calls / 100\n"


def test_every_grade_starts_from_the_template_and_a_timeout_kills_it() -> None:
    body = "if item.get('raise'): raise ValueError('bad item')\n    if item.get('hang'):\n        while True: pass"
    with PythonGrader(name="c", source=COUNTER.format(body=body), timeout=1) as g:
        assert g.grade("x", {}).score == 0.01
        failed = g.grade("x", {"raise": True})
        assert runtime_error(failed)
        assert failed.reason == "grade raised ValueError: bad item (line 5, in grade); scored 0"
        assert g.grade("x", {}).score == 0.01  # module state as the top level left it: no grade's change survives
        start = time.monotonic()
        hung = g.grade("x", {"hang": True})
        assert time.monotonic() - start < 15
        assert runtime_error(hung) and "did not return within 1 s" in hung.reason
        assert g.grade("x", {}).score == 0.01


def test_a_failing_top_level_flags_every_grade() -> None:
    with PythonGrader(name="p", source="import not_a_module_rftkit\ndef grade(s, i):\n    return 1\n") as g:
        grades = [g.grade("x"), g.grade("y")]
    assert all(runtime_error(x) for x in grades)
    assert grades[0].reason.startswith("the source's top level raised ModuleNotFoundError: No module named")


def test_printed_output_is_kept_only_as_a_short_tail() -> None:
    source = "def grade(sample, item):\n    print('step', 1)\n    print('nearly done')\n    raise KeyError('boom')\n"
    with PythonGrader(name="p", source=source) as g:
        grade = g.grade("x")
    assert runtime_error(grade) and grade.reason.endswith("(printed: 'step 1\\nnearly done\\n'); scored 0")


def test_the_worker_environment() -> None:
    source = ("import os, resource, tempfile\n"
              "def grade(sample, item):\n"
              "    tmp = os.environ['TMPDIR']\n"
              "    assert os.getcwd() == tmp == os.environ['HOME'] and tempfile.gettempdir() == tmp\n"
              "    assert 'RFTKIT_TEST_SECRET' not in os.environ\n"
              "    assert resource.getrlimit(resource.RLIMIT_AS)[0] == item['memory']\n"
              "    with open('scratch.txt', 'w') as f:\n"
              "        f.write('ok')\n"
              "    os.rename('scratch.txt', 'kept.txt')\n"
              "    return float(open('kept.txt').read() == 'ok')\n")
    os.environ["RFTKIT_TEST_SECRET"] = "sk-not-for-the-sandbox"
    try:
        with PythonGrader(name="env", source=source, memory_limit=768 << 20) as g:
            grade = g.grade("x", {"memory": 768 << 20})
            assert g._pool.sandbox is not None
            tmp = g._pool.sandbox.tmp
            assert grade.score == 1.0, grade.reason
        assert not os.path.exists(tmp)  # the private directory goes with the worker
    finally:
        del os.environ["RFTKIT_TEST_SECRET"]


NO_NAMESPACES = """
import json
from graders.openai.python import PythonGrader
source = "import socket\\ndef grade(sample, item):\\n    if item: socket.socket().connect(('127.0.0.1', 9))\\n    return 0.5\\n"
out = {}
with PythonGrader(name="p", source=source, isolation="namespaces") as g:
    grade = g.grade("x")
    out["namespaces"] = [grade.score, grade.errors["python_grader_server_error"], grade.reason]
with PythonGrader(name="p", source=source) as g:
    out["auto"] = [g.grade("x").score, g.isolation_in_use, g.grade("x", {"net": 1}).reason]
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("unshare") is None, reason="needs util-linux unshare")
@pytest.mark.parametrize(("limit", "why"), [("0", "namespaces unavailable: unshare"),
                                            ("1", "namespaces unavailable: a grade could not get")])
def test_without_user_namespaces_auto_falls_back_to_basic(limit: str, why: str) -> None:
    # Inside a user namespace whose limit of nested user namespaces is 0, the sandbox cannot create its own; with 1,
    # it can, but its grades cannot create theirs.
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no user namespaces here: the fallback is what every other test exercises")
    script = f'echo {limit} > /proc/sys/user/max_user_namespaces && exec "$0" -c "$1"'
    run = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, sys.executable, NO_NAMESPACES],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    score, server_error, reason = out["namespaces"]
    assert (score, server_error) == (0.0, True) and why in reason, reason
    score, isolation, reason = out["auto"]
    assert (score, isolation) == (0.5, "basic") and "network access (socket.connect)" in reason


def test_a_worker_that_cannot_start_is_a_server_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with PythonGrader(name="p", source=ONE) as g:
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")
        grade = g.grade("x")
        assert grade.score == 0.0 and [k for k, v in grade.errors.items() if v] == ["python_grader_server_error"]
        assert grade.reason.startswith("the python grader's sandbox could not start")
        monkeypatch.undo()
        assert g.grade("x").score == 1.0


# -- hostile code: each case is bounded, ends in a flagged 0, and the next grade works ----------------


def check_survives(g: PythonGrader, grade: Any, started: float, why: str) -> None:
    assert time.monotonic() - started < 15
    assert runtime_error(grade), grade.reason
    assert why in grade.reason, grade.reason
    assert len(grade.reason) < 2500
    assert g.grade("fine", {"value": 0.5}).score == 0.5


HOSTILE = {
    "infinite loop": ("def grade(sample, item):\n    if item: return item['value']\n    while True:\n        pass\n",
                      "did not return within 1 s"),
    "memory hog": ("def grade(sample, item):\n    if item: return item['value']\n    hoard = []\n"
                   "    for _ in range(80):  # up to 8 GB, in 100 MB steps\n        hoard.append(b'x' * (100 << 20))\n",
                   "MemoryError"),
    "sys.exit": ("import sys\ndef grade(sample, item):\n    if item: return item['value']\n    sys.exit(3)\n",
                 "grade called sys.exit(3)"),
    "os._exit": ("import os\ndef grade(sample, item):\n    if item: return item['value']\n    os._exit(7)\n",
                 "the process died during grade (exit status 7"),
    "fork refused": ("import os\ndef grade(sample, item):\n    if item: return item['value']\n    os.fork()\n",
                     "PermissionError: python grader sandbox: starting a process (os.fork)"),
    "subprocess refused": ("import subprocess\ndef grade(sample, item):\n    if item: return item['value']\n"
                           "    subprocess.run(['true'])\n", "starting a process (subprocess.Popen)"),
    "100 MB printed": ("import sys\ndef grade(sample, item):\n    if item: return item['value']\n"
                       "    print('x' * (100 << 20))\n    for _ in range(100):\n        sys.stdout.write('y' * (1 << 20))\n"
                       "    raise RuntimeError('after printing')\n", "RuntimeError: after printing"),
    "100 MB to fd 1": ("import os\ndef grade(sample, item):\n    if item: return item['value']\n"
                       "    for _ in range(100):\n        os.write(1, b'z' * (1 << 20))\n    raise RuntimeError('after writing')\n",
                       "RuntimeError: after writing"),
    "segfault": ("import ctypes\ndef grade(sample, item):\n    if item: return item['value']\n    ctypes.string_at(0)\n",
                 "the process died during grade (killed by SIGSEGV)"),
    "kill everything": ("import os\ndef grade(sample, item):\n    if item: return item['value']\n    os.kill(-1, 0)\n",
                        "os.kill(-1) (only the grader's own child processes) is not allowed"),
    "kill the parent": ("import os, signal\ndef grade(sample, item):\n    if item: return item['value']\n"
                        "    os.kill(os.getppid(), 0)\n", "is not allowed"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_code_is_contained(case: str) -> None:
    source, why = HOSTILE[case]
    # Only the loop needs the 1 s limit; the others end on their own (the memory hog in ~0.5 s on a busy 2-core
    # machine), and must not race a limit a machine 3x slower would hit first.
    timeout = 1 if case == "infinite loop" else 10
    with PythonGrader(name="hostile", source=source, timeout=timeout, memory_limit=512 << 20) as g:
        started = time.monotonic()
        check_survives(g, g.grade("x", {}), started, why)


def test_writes_outside_the_temp_dir_fail(tmp_path: Path) -> None:
    target, victim = tmp_path / "written.txt", tmp_path / "victim.txt"
    victim.write_text("keep me")
    attempts = {
        "open": f"open({str(target)!r}, 'w').write('x')",
        "os.open": f"os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)",
        "pathlib": f"pathlib.Path({str(target)!r}).write_text('x')",
        "relative": f"open(os.path.relpath({str(target)!r}), 'a')",
        "symlink": f"os.symlink({str(target)!r}, 'link'); open('link', 'w')",
        "remove": f"os.remove({str(victim)!r})",
        "rename": f"os.rename({str(victim)!r}, 'stolen.txt')",
        "rmtree": f"shutil.rmtree({str(tmp_path)!r})",
        "chmod": f"os.chmod({str(victim)!r}, 0)",
        "sqlite": f"import sqlite3; sqlite3.connect({str(target)!r}).execute('create table t (x)')",
    }
    lines = "\n".join(f"    if item['how'] == {how!r}:\n        {code}" for how, code in attempts.items())
    source = f"import os, pathlib, shutil\ndef grade(sample, item):\n    if 'value' in item: return item['value']\n{lines}\n    return 1.0\n"
    with PythonGrader(name="writer", source=source, timeout=3) as g:
        for how in attempts:
            started = time.monotonic()
            grade = g.grade("x", {"how": how})
            check_survives(g, grade, started, "PermissionError: python grader sandbox")
    assert not target.exists() and victim.read_text() == "keep me" and os.stat(victim).st_mode & 0o600


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_network_calls_fail(isolation: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        source = ("import socket, urllib.request\n"
                  "def grade(sample, item):\n"
                  "    if 'value' in item: return item['value']\n"
                  "    if item['how'] == 'connect':\n"
                  "        socket.socket().connect(('127.0.0.1', item['port']))\n"
                  "    if item['how'] == 'create_connection':\n"
                  "        socket.create_connection(('localhost', item['port']), timeout=1)\n"
                  "    if item['how'] == 'udp':\n"
                  "        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', item['port']))\n"
                  "    if item['how'] == 'urllib':\n"
                  "        urllib.request.urlopen('http://127.0.0.1:%d/' % item['port'], timeout=1)\n"
                  "    return 1.0\n")
        with PythonGrader(name="net", source=source, timeout=3, isolation=isolation) as g:  # type: ignore[arg-type]
            for how in ("connect", "create_connection", "udp", "urllib"):
                started = time.monotonic()
                check_survives(g, g.grade("x", {"how": how, "port": port}), started, "network access")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected


# -- processes: all gone afterwards, checked by pid -------------------------------------------

FLOOD = """import os, time
def grade(sample, item):
    if 'value' in item:
        return item['value']
    for n in range(item['children']):
        if os.fork() == 0:
            if n % 2:
                os.setsid()  # half of them leave the process group
            time.sleep(60)
            os._exit(0)
    deadline = time.monotonic() + 10
    while not os.path.exists(item['release']) and time.monotonic() < deadline:
        time.sleep(0.01)
    if item['then'] == 'hang':
        while True:
            pass
    return 1.0
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("then", ["hang", "return"])
def test_a_process_flood_is_killed_to_the_last_pid(isolation: str, then: str, tmp_path: Path) -> None:
    release = tmp_path / "release"  # the grade reads it (reading is not confined); it cannot write outside its temp dir
    with PythonGrader(name="flood", source=FLOOD, timeout=2, allow_subprocess=True, isolation=isolation) as g:  # type: ignore[arg-type]
        tmp = sandbox_tmp(g)
        # supervisor, template, the child forked ahead (and with namespaces, the init of its own PID namespace)
        idle = 4 if isolation == "namespaces" else 3
        assert wait_until(lambda: len(sandbox_pids(tmp)) == idle), sandbox_pids(tmp)
        result: list[Any] = []
        item = {"children": 64, "then": then, "release": str(release)}
        worker = threading.Thread(target=lambda: result.append(g.grade("x", item)))
        started = time.monotonic()
        worker.start()
        parents: dict[int, int] = {}  # every sandbox pid seen -> its parent pid

        def most_children() -> int:  # the grade's 64 children share one parent, the grade
            return max(Counter(parents.values()).values(), default=0)

        # Until all 64 are seen (the next child forked ahead may or may not show up before: it is not counted)
        while most_children() < 64 and worker.is_alive() and time.monotonic() - started < 10:
            for pid in sandbox_pids(tmp) - parents.keys():
                parents[pid] = parent_pid(pid)
            time.sleep(0.01)
        seen = set(parents)
        release.touch()
        worker.join(15)
        assert not worker.is_alive() and time.monotonic() - started < 15
        assert most_children() >= 64, f"saw {most_children()} of the grade's children"
        assert wait_until(lambda: len(sandbox_pids(tmp)) == idle), sandbox_pids(tmp)  # the template kills asynchronously
        assert len(seen - sandbox_pids(tmp)) >= 65  # the grade and its 64 children, to the last pid
        (grade,) = result
        if then == "hang":
            assert runtime_error(grade) and "did not return within 2 s" in grade.reason
        else:
            assert (grade.score, grade.ok) == (1.0, True)  # a clean result; the leftover processes still died with the grade
        assert g.grade("x", {"value": 0.5}).score == 0.5


ORPHANED = """
import os, sys, threading, time
from graders.openai.python import PythonGrader
source = ("import os, time\\ndef grade(sample, item):\\n    for _ in range(4):\\n        if os.fork() == 0:\\n"
          "            time.sleep(60)\\n            os._exit(0)\\n    while True:\\n        pass\\n")
g = PythonGrader(name="p", source=source, timeout=60, allow_subprocess=True, isolation=sys.argv[1])
threading.Thread(target=g.grade, args=("x",), daemon=True).start()
while g._pool.sandbox is None:
    time.sleep(0.01)
print(g._pool.sandbox.tmp, flush=True)
sys.stdin.readline()  # the test waits for the grade's 4 children meanwhile
os._exit(0)  # dies mid-grade, without closing anything
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_sandbox_dies_with_the_grading_process(isolation: str) -> None:
    with subprocess.Popen([sys.executable, "-c", ORPHANED, isolation], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, cwd=Path(__file__).resolve().parents[2]) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        tmp = proc.stdout.readline().strip()
        assert os.path.basename(tmp).startswith("rftkit-python-grader-")
        try:
            # supervisor, template, grade, next child, 4 more (with namespaces, each child has its PID namespace's init)
            assert wait_until(lambda: len(sandbox_pids(tmp)) == (10 if isolation == "namespaces" else 8))
            proc.stdin.write("die\n")
            proc.stdin.flush()
            assert proc.wait(30) == 0
            deadline = time.monotonic() + 10
            while (sandbox_pids(tmp) or os.path.exists(tmp)) and time.monotonic() < deadline:
                time.sleep(0.01)
            # The supervisor saw its lifeline close: it killed the template's tree and removed the temp dir.
            assert sandbox_pids(tmp) == set() and not os.path.exists(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def test_close_and_garbage_collection_kill_the_sandbox() -> None:
    g = PythonGrader(name="p", source=ECHO)
    tmp = sandbox_tmp(g)
    g.close()
    assert sandbox_pids(tmp) == set() and not os.path.exists(tmp)
    assert g.grade("x", {"value": 0.25}).score == 0.25  # a later grade starts a new sandbox
    tmp = sandbox_tmp(g)
    del g
    gc.collect()
    assert sandbox_pids(tmp) == set() and not os.path.exists(tmp)


def test_a_template_killed_while_idle_is_replaced_without_blame() -> None:
    with PythonGrader(name="p", source=ECHO) as g:
        tmp = sandbox_tmp(g)
        before = template_pid(g)
        os.kill(before, signal.SIGKILL)
        assert wait_until(lambda: before not in sandbox_pids(tmp))
        grade = g.grade("x", {"value": 0.5})
        assert (grade.score, grade.ok) == (0.5, True) and template_pid(g) != before, grade.reason


# -- many grades -------------------------------------------------------------------------------


def test_threads_share_one_grader() -> None:
    with PythonGrader(name="p", source=ECHO) as g:
        scores: list[float] = []

        def work(offset: int) -> None:
            scores.extend(g.grade("x", {"value": (offset + i) / 100}).score for i in range(20))

        threads = [threading.Thread(target=work, args=(k * 20,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(scores) == [i / 100 for i in range(80)]


def test_pickles_as_its_settings_and_grades_a_batch() -> None:
    with PythonGrader(name="p", source=ECHO, timeout=7, memory_limit=700 << 20, allow_subprocess=True) as g:
        clone = pickle.loads(pickle.dumps(g))
        assert (clone.config(), clone.timeout, clone.memory_limit, clone.allow_subprocess) == (g.config(), 7, 700 << 20, True)
        with clone:
            grades = clone.grade_batch(["a", "b", "c"], [{"value": 0.1}, {"value": "oops"}, {"value": 0.3}])
    assert [x.score for x in grades] == [0.1, 0.0, 0.3] and runtime_error(grades[1])


def test_a_batch_chunk_shares_one_process_and_recovers_from_failures() -> None:
    body = ("if item.get('raise'): raise ValueError('bad item')\n    if item.get('hang'):\n        while True: pass\n"
            "    if item.get('exit'): raise SystemExit(4)")
    items = [{}, {"raise": 1}, {}, {"hang": 1}, {}, {"exit": 1}, {}, {}]
    with PythonGrader(name="c", source=COUNTER.format(body=body), timeout=1) as g:
        started = time.monotonic()
        grades = g.grade_batch(["x"] * len(items), items)
        assert time.monotonic() - started < 15
        assert [x.score for x in grades] == [0.01, 0.0, 0.03, 0.0, 0.01, 0.0, 0.01, 0.02]
        assert [x.ok for x in grades] == [True, False, True, False, True, False, True, True]
        assert "ValueError: bad item" in grades[1].reason and "did not return within 1 s" in grades[3].reason
        assert "sys.exit(4)" in grades[5].reason
        assert g.grade_batch([], []) == []
        with pytest.raises(GraderConfigError, match="length_mismatch"):
            g.grade_batch(["x"], [])


def test_a_forked_process_gets_its_own_sandbox() -> None:
    with PythonGrader(name="p", source=ECHO) as g:
        sandbox_tmp(g)
        parent_template = template_pid(g)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                score = g.grade("x", {"value": 0.75}).score
                g.close()
                os.write(write, str(score).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        assert os.read(read, 64) == b"0.75"
        os.close(read)
        assert template_pid(g) == parent_template and g.grade("x", {"value": 0.5}).score == 0.5
