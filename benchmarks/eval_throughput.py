"""``rftkit eval`` against a server: samples/s at a given concurrency, against the ideal, and grading cost per sample.

The script starts a fake OpenAI-compatible ``/chat/completions`` server in its own process, on an
ephemeral 127.0.0.1 port, that answers every request after ``--latency`` seconds (20 ms) with a
résumé answer, then runs :func:`graders.eval.run_eval` with :class:`graders.eval.ServerSampler` at
each ``--concurrency`` (1, 8, 64), grading every sample with the résumé grader
(``graders/data/resume_grader.json``). Nothing leaves the loopback interface.

The fake server stands in for a remote vLLM, whose CPU is not the client's: it is a bare asyncio
protocol (it reads a request's headers and body, and writes one canned answer ``--latency`` s
later, on a keep-alive connection), as cheap as an honest HTTP/1.1 server can be, so that on a
small machine it takes as little as possible of the CPU the client being measured needs. It
checks nothing and is not an HTTP implementation to reuse.

With ``c`` requests in flight and a server that takes ``L`` seconds, the ideal is ``c / L``
samples/s; ``eval/ideal`` is measured / ideal (target: >= 0.9 up to 64). Next to each eval run,
the candidate clients are measured bare (the same requests, the answer read and decoded, nothing
graded or written): threads on one sync ``httpx.Client`` (the design before aiohttp), one
``httpx.AsyncClient`` on an event loop, and one ``aiohttp.ClientSession`` on an event loop (what
:class:`~graders.eval.ServerSampler` uses); each as requests/s and CPU microseconds per request
in this process. ``CPU us/sample`` is the eval run's CPU time (this process: requests, grading, writing)
over its samples: ``1e6 / it`` is the most samples/s one free core allows. The grading cost per
sample is the time the run spent grading, over the samples.

Run:  .venv/bin/python benchmarks/eval_throughput.py [--latency 0.02] [--concurrency 1 8 64] [--waves 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "resume"}]}).encode()
HEADERS = {"Content-Type": "application/json"}


def serve(port: int, latency: float) -> None:
    """The fake server (run in a child process): every request is answered ``latency`` seconds after it is read."""
    rows = [json.loads(line) for line in (ROOT / "graders" / "data" / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": rows[0]["output"]}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 50, "completion_tokens": 40}}).encode()
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    loop = asyncio.new_event_loop()

    class Answerer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                length = 0
                for line in self.buffer[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(self.buffer) < end + 4 + length:
                    return  # the body is still coming
                self.buffer = self.buffer[end + 4 + length:]
                loop.call_later(latency, self.answer)

        def answer(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(answer)

    loop.run_until_complete(loop.create_server(Answerer, "127.0.0.1", port, backlog=4096))
    loop.run_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(client: Callable[[str, int, int], None], url: str, c: int, n: int) -> tuple[float, float]:
    """(requests/s, CPU microseconds per request in this process) of ``client`` sending ``n`` requests, ``c`` in flight."""
    wall, cpu = time.perf_counter(), time.process_time()
    client(url, c, n)
    return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n * 1e6


def httpx_threads(url: str, c: int, n: int) -> None:
    """The previous design's client: ``c`` threads on one pooled sync httpx client."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with httpx.Client(limits=httpx.Limits(max_connections=c, max_keepalive_connections=c)) as client, ThreadPoolExecutor(c) as pool:
        list(pool.map(lambda _: client.post(url, content=BODY, headers=HEADERS).json(), range(n)))


def httpx_async(url: str, c: int, n: int) -> None:
    import httpx

    async def run() -> None:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=c, max_keepalive_connections=c)) as client:
            async def send() -> None:
                (await client.post(url, content=BODY, headers=HEADERS)).json()

            await in_flight(send, c, n)

    asyncio.run(run())


async def in_flight(send: Callable[[], Awaitable[None]], c: int, n: int) -> None:
    """Make ``n`` calls of ``send`` with ``c`` in flight at a time."""
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await send()

    await asyncio.gather(*(worker() for _ in range(c)))


def aiohttp_bare(url: str, c: int, n: int) -> None:
    import aiohttp

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
            async def send() -> None:
                async with session.post(url, data=BODY, headers=HEADERS) as response:
                    json.loads(await response.read())

            await in_flight(send, c, n)

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--waves", type=int, default=30, help="samples per run = concurrency x waves (at least 100)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return

    from graders import from_config
    from graders.eval import EvalRow, NamedGrader, SamplingParams, ServerSampler, run_eval

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(args.latency)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/chat/completions"
        config = json.loads((ROOT / "graders" / "data" / "resume_grader.json").read_text(encoding="utf-8"))
        grader = NamedGrader("resume", from_config(config), config, None, True)
        reference = json.loads((ROOT / "graders" / "data" / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()[0])["reference"]
        print(f"fake server: {args.latency * 1000:.0f} ms per request; résumé grader on every sample")
        print("bare clients: requests/s (CPU us per request in this process)")
        print(f"{'concurrency':>11} {'samples':>8} {'ideal/s':>8} {'eval/s':>8} {'eval/ideal':>10} {'CPU us/sample':>13} {'grading us/sample':>17}  "
              f"{'httpx threads':>15} {'httpx async':>15} {'aiohttp':>15}")
        for c in args.concurrency:
            n = max(100, c * args.waves)
            bare = {name: timed(f, url, c, n)
                    for name, f in (("httpx threads", httpx_threads), ("httpx async", httpx_async), ("aiohttp", aiohttp_bare))}
            rows = [EvalRow(i, i + 1, {"reference": reference}, messages=[{"role": "user", "content": f"resume {i}"}]) for i in range(n)]
            with tempfile.TemporaryDirectory() as tmp:
                sampler = ServerSampler(f"http://127.0.0.1:{port}", "fake", concurrency=c, timeout=30)
                cpu = time.process_time()
                summary = run_eval(rows, [grader], sampler, SamplingParams(), Path(tmp))
                cpu = (time.process_time() - cpu) / n * 1e6
            perf = summary["perf"]
            ideal = c / args.latency
            cells = "".join(f"{f'{rate:.0f} ({cpu:.0f})':>16}" for rate, cpu in bare.values())
            print(f"{c:>11} {n:>8} {ideal:>8.0f} {perf['samples_per_s']:>8.1f} {perf['samples_per_s'] / ideal:>10.2f} {cpu:>13.0f} "
                  f"{perf['grade_s_per_sample'] * 1e6:>17.0f} {cells}", flush=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
