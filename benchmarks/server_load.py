"""Load on ``rftkit serve``'s ``/get_reward``: OpenRLHF's one-sample-per-request pattern, then batches of 256.

The script starts ``rftkit serve`` itself (the résumé grader,
``graders/data/resume_grader.json``, on an ephemeral 127.0.0.1 port), sends a
fixed number of requests, prints what it measured and stops the server. Nothing
leaves the loopback interface.

* **single**: ``--concurrency`` clients, each on one keep-alive connection
  (``--reconnect``: a new connection per request), send one-sample requests
  back to back: ``{"query": [q], "prompts": [p], "labels": [l]}``. This is
  OpenRLHF's pattern from 0.10 on, where each rollout posts its own sample as
  it finishes (and opens a new aiohttp session, so a new connection, per post).
* **batch**: ``--batch-concurrency`` clients send ``--batch-size`` samples per
  request.

Each row is a résumé prompt in ChatML with the model's answer after it (the
rows of ``graders/data/resume_demo.jsonl``, cycled), so the server also cuts
the response out of the query, as it does for OpenRLHF. Every reward is checked
against the grader run in-process: a wrong reward counts as an error.

The load generator is deliberately light: pre-encoded HTTP/1.1 requests on a
bare asyncio protocol (uvloop when installed; responses decoded with orjson when
installed), not an HTTP client library, because it
shares the machine's cores with the server and every microsecond it spends is
one the server does not get. Latency is measured per request, from the first
byte sent to the last byte read. Besides wall-clock rates, which swing with
whatever else runs on the machine, it prints the CPU time the server and the
load generator spent per request (read with psutil), a steadier figure.

Run:  .venv/bin/python benchmarks/server_load.py [--requests 20000] [--concurrency 16] [--workers 2]
Targets (2-core machine): single >= 2,000 requests/s with p99 < 10 ms; batch >= 50,000 rewards/s; 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # the server needs orjson, but the load generator does not
    loads = json.loads

ROOT = Path(__file__).resolve().parent.parent
GRADER = ROOT / "graders" / "data" / "resume_grader.json"
ROWS = ROOT / "graders" / "data" / "resume_demo.jsonl"
SERVE = "import sys; from graders._cli import main; sys.argv[0] = 'rftkit'; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(port: int, workers: int, threads: int, max_concurrency: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", SERVE, "serve", "--grader", str(GRADER), "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--threads", str(threads), "--max-concurrency", str(max_concurrency)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}): {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /health within 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rows() -> list[dict[str, Any]]:
    out = []
    for line in ROWS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            prompt = f"<|im_start|>user\nExtract the profile as JSON.\n{r['prompt']}<|im_end|>\n<|im_start|>assistant\n"
            out.append({"query": prompt + r["output"] + "<|im_end|>", "prompt": prompt, "label": json.dumps(r["reference"]),
                        "output": r["output"], "reference": r["reference"]})
    return out


def request_bytes(port: int, samples: list[dict[str, Any]]) -> bytes:
    body = json.dumps({"query": [s["query"] for s in samples], "prompts": [s["prompt"] for s in samples],
                       "labels": [s["label"] for s in samples]}).encode()
    head = (f"POST /get_reward HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class _Exchange(asyncio.Protocol):
    """One client connection: a request written whole, its response read whole (by its Content-Length).

    A protocol, not asyncio streams: no reader, writer and stream protocol per
    connection, which the new-connection pattern would pay on every request.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiting: asyncio.Future[tuple[bytes, bytes]] | None = None
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiting is None:
            return
        head = bytes(self.buffer[:end])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(self.buffer) >= end + 4 + length:
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            waiting, self.waiting = self.waiting, None
            if not waiting.done():
                waiting.set_result((head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(ConnectionError(f"the server closed the connection ({exc!r})"))

    def exchange(self, payload: bytes) -> asyncio.Future[tuple[bytes, bytes]]:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiting


async def client(port: int, payloads: list[tuple[bytes, list[float]]], latencies: list[float], errors: list[str],
                 reconnect: bool) -> None:
    loop = asyncio.get_running_loop()
    transport, conn = await loop.create_connection(_Exchange, "127.0.0.1", port)
    try:
        for n, (payload, expected) in enumerate(payloads):
            start = time.perf_counter()
            if reconnect and n:  # a new connection per request, as OpenRLHF's aiohttp session per request does
                transport.close()
                transport, conn = await loop.create_connection(_Exchange, "127.0.0.1", port)
            head, body = await conn.exchange(payload)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode() + " " + body[:200].decode(errors="replace"))
                continue
            rewards = loads(body)["rewards"]
            if len(rewards) != len(expected) or any(abs(a - b) > 1e-9 for a, b in zip(rewards, expected)):
                errors.append(f"wrong rewards: {rewards[:4]} != {expected[:4]}")
    except OSError as exc:
        errors.append(f"connection: {exc!r}")
    finally:
        transport.close()


async def load(port: int, n_requests: int, batch: int, concurrency: int, data: list[dict[str, Any]],
               expected: list[float], reconnect: bool = False) -> dict[str, float]:
    payloads = []
    for i in range(n_requests):
        idx = [(i * batch + j) % len(data) for j in range(batch)]
        payloads.append((request_bytes(port, [data[k] for k in idx]), [expected[k] for k in idx]))
    shares = [payloads[c::concurrency] for c in range(concurrency)]
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(client(port, share, latencies, errors, reconnect) for share in shares))
    elapsed = time.perf_counter() - start
    latencies.sort()
    if errors:
        print(f"  first error: {errors[0]}")
    return {"requests": len(latencies), "seconds": elapsed, "requests_per_s": len(latencies) / elapsed,
            "rewards_per_s": len(latencies) * batch / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "errors": len(errors)}


def cpu_seconds(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """CPU time (user + system) used so far by the server (its process and its workers) and by this process."""
    import psutil  # type: ignore[import-untyped]  # (psutil ships no type stubs)

    server = 0.0
    root = psutil.Process(proc.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        server += t.user + t.system
    mine = psutil.Process().cpu_times()
    return server, mine.user + mine.system


def measured(run: Any, proc: subprocess.Popen[bytes], work: Any) -> dict[str, float]:
    before = cpu_seconds(proc)
    r: dict[str, float] = run(work)
    after = cpu_seconds(proc)
    r["server_cpu_us"] = 1e6 * (after[0] - before[0]) / r["requests"]
    r["client_cpu_us"] = 1e6 * (after[1] - before[1]) / r["requests"]
    return r


def report(name: str, r: dict[str, float]) -> None:
    print(f"{name:>7}: {r['requests']:.0f} requests in {r['seconds']:.2f} s: {r['requests_per_s']:,.0f} requests/s, "
          f"{r['rewards_per_s']:,.0f} rewards/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors {r['errors']:.0f}")
    cores = os.cpu_count() or 1
    print(f"{'':>9}CPU per request: server {r['server_cpu_us']:,.0f} us, load generator {r['client_cpu_us']:,.0f} us "
          f"(so {cores} idle cores could serve at most ~{cores * 1e6 / r['server_cpu_us']:,.0f} requests/s with the "
          f"load generator elsewhere)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="single-sample requests (after --warmup more)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent single-sample clients")
    parser.add_argument("--reconnect", action="store_true",
                        help="single-sample clients open a new connection per request (OpenRLHF >= 0.10 does)")
    parser.add_argument("--batch-requests", type=int, default=400, help="batch requests")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000, help="single-sample requests sent first and not counted")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--threads", type=int, default=4, help="grading threads per worker")
    parser.add_argument("--max-concurrency", type=int, default=64, help="the server's per-worker in-flight limit")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from graders import from_config
    from graders.integrations._common import field_names
    from graders.serve._pool import _openrlhf

    data = rows()
    grader = from_config(GRADER)
    expected = [grader.grade(r["output"], r["reference"]).score for r in data]
    batch = [data[i % len(data)] for i in range(args.batch_size)]
    columns = [[r["query"] for r in batch], [r["prompt"] for r in batch], [r["label"] for r in batch]]
    _openrlhf(grader, field_names(grader), *columns)
    start = time.process_time()
    for _ in range(40):
        _openrlhf(grader, field_names(grader), *columns)
    per_row = (time.process_time() - start) / (40 * args.batch_size)
    print(f"grading alone, no server (the /get_reward work on {args.batch_size}-row batches): {1e6 * per_row:.1f} us of CPU "
          f"per row, so at most {(os.cpu_count() or 1) / per_row:,.0f} rewards/s on all {os.cpu_count()} cores")
    try:
        import uvloop
        run: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        run, loop_name = asyncio.run, "asyncio"
    port = free_port()
    print(f"rftkit serve: {args.workers} worker(s), {args.threads} grading thread(s) each; load generator: raw HTTP/1.1 "
          f"on {loop_name}, in this process; {os.cpu_count()} CPUs shared by both")
    proc = start_server(port, args.workers, args.threads, args.max_concurrency)
    try:
        run(load(port, args.warmup, 1, args.concurrency, data, expected))
        report("single", measured(run, proc, load(port, args.requests, 1, args.concurrency, data, expected, args.reconnect)))
        run(load(port, 2 * args.batch_concurrency, args.batch_size, args.batch_concurrency, data, expected))
        report("batch", measured(run, proc, load(port, args.batch_requests, args.batch_size, args.batch_concurrency, data,
                                                 expected)))
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
