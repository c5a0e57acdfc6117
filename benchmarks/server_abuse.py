"""Hostile clients against ``rftkit serve`` (issue 11): does a normal request still answer, and does the server let go?

The script starts ``rftkit serve`` itself (the résumé grader, one worker, the
default limits unless given after ``--``), runs four phases against it and
prints what it measured; nothing leaves the loopback interface.

* **slow**: 200 connections that send half a request head (slowloris) and 100
  that send a chunked body and never end it; meanwhile 20 normal ``/score``
  requests. Then how many of the 300 the server closed, and when (the default
  ``--read-timeout`` is 10 s).
* **heads**: 1,100 connections with half-sent heads: the server's open files
  (the cap is ``--max-connections``, 512), what a new connection gets, and a
  normal request once they are gone.
* **big**: 8 concurrent ``/grade`` requests, each one 10 MB output of ``{``,
  while a client sends normal ``/score`` requests back to back.
* **python**: with ``--allow-graders python``, 8 distinct request-borne python
  configs (each imports numpy) through ``graders/run``: the server's process
  tree and its resident memory after each (``--max-python-graders`` keeps 4).

Run:  .venv/bin/python benchmarks/server_abuse.py [--phases slow,heads,big,python] [-- extra rftkit serve options]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
GRADER = ROOT / "graders" / "data" / "resume_grader.json"
ROWS = [json.loads(line) for line in (ROOT / "graders" / "data" / "resume_demo.jsonl").read_text().splitlines() if line.strip()]
SERVE = "import sys; from graders._cli import main; sys.argv[0] = 'rftkit'; main()"
NORMAL = {"sample": ROWS[0]["output"], "item": {"reference": ROWS[0]["reference"]}}
RUN_PATH = "/v1/fine_tuning/alpha/graders/run"


@contextmanager
def server(options: list[str]) -> Iterator[tuple[str, int]]:
    """``rftkit serve`` on an ephemeral loopback port: its URL and pid; stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--grader", str(GRADER), "--port", str(port), *options],
                            cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                httpx.get(url + "/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def connect(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    return s


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {values[len(values) // 2] * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms (n={len(values)})"


def normal_requests(c: httpx.Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.monotonic()
        r = c.post("/score", json=NORMAL)
        assert r.status_code == 200, r.text
        out.append(time.monotonic() - t)
    return out


def slow(options: list[str]) -> None:
    with server(options) as (url, pid), httpx.Client(base_url=url, timeout=60) as c:
        port = int(url.rsplit(":", 1)[1])
        t0 = time.monotonic()
        held = [connect(port, b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(200)]
        held += [connect(port, b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"sam\r\n")
                 for _ in range(100)]
        latencies = normal_requests(c, 20)
        print(f"slow: 300 slow clients held, server open files {open_files(pid)}; normal /score meanwhile: {ms(latencies)}")
        pending, closed_at = list(held), []
        while pending and time.monotonic() - t0 < 60:
            for s in select.select(pending, [], [], 0.2)[0]:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    pending.remove(s)
                    closed_at.append(time.monotonic() - t0)
        last = f", the last {max(closed_at):.1f} s after they connected" if closed_at else ""
        print(f"slow: the server closed {len(closed_at)} of 300{last}")
        for s in held:
            s.close()


def heads(options: list[str]) -> None:
    with server(options) as (url, pid):
        port = int(url.rsplit(":", 1)[1])
        held = [connect(port, b"GET /health HTTP/1.1\r\nHost: x\r\n") for _ in range(1100)]
        time.sleep(1.0)  # let the server accept (and shed) them
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.get("/health")
            print(f"heads: 1,100 half-sent heads, server open files {open_files(pid)}; a new connection gets {r.status_code}")
        for s in held:
            s.close()
        time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=60) as c:
            print(f"heads: once they left, normal /score: {ms(normal_requests(c, 20))}")


def big(options: list[str]) -> None:
    body = json.dumps({"responses": ["{" * (10 << 20)], "references": [ROWS[0]["reference"]]}).encode()
    with server(options) as (url, _), httpx.Client(base_url=url, timeout=300) as c:
        normal_requests(c, 3)
        done: list[tuple[int, float]] = []

        def post() -> None:
            t = time.monotonic()
            r = httpx.post(url + "/grade", content=body, timeout=300)
            done.append((r.status_code, time.monotonic() - t))

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        latencies: list[float] = []
        while any(t.is_alive() for t in threads):
            latencies += normal_requests(c, 1)
        for t in threads:
            t.join()
        print(f"big: 8 x 10 MB /grade: statuses {sorted({s for s, _ in done})}, each {min(d for _, d in done):.1f}-"
              f"{max(d for _, d in done):.1f} s; normal /score meanwhile: {ms(latencies)}")


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def resident_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def python(options: list[str]) -> None:
    with server(["--allow-graders", "python", *options]) as (url, pid), httpx.Client(base_url=url, timeout=120) as c:
        print(f"python: at start {len(tree(pid))} process(es), {resident_mb(tree(pid)):.0f} MB resident")
        for i in range(8):
            source = f"import numpy\ndef grade(sample, item):\n    return {i} / 10\n"
            r = c.post(RUN_PATH, json={"grader": {"type": "python", "name": f"p{i}", "source": source}, "model_sample": "x"})
            assert r.status_code == 200, r.text
            pids = tree(pid)
            print(f"python: after config {i + 1}: reward {r.json()['reward']}, {len(pids)} processes, "
                  f"{resident_mb(pids):.0f} MB resident")


PHASES: dict[str, Any] = {"slow": slow, "heads": heads, "big": big, "python": python}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="slow,heads,big,python", help="comma-separated, from: " + ", ".join(PHASES))
    parser.add_argument("serve", nargs="*", help="extra rftkit serve options, after --")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))  # this client holds 1,100 sockets
    for phase in args.phases.split(","):
        PHASES[phase](args.serve)


if __name__ == "__main__":
    main()
