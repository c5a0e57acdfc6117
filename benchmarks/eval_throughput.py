"""``rftkit eval`` against a server: samples/s at a given concurrency, against the ideal, and grading cost per sample.

The script starts a fake OpenAI-compatible ``/chat/completions`` server in its own process (a bare
ASGI app under uvicorn, on an ephemeral 127.0.0.1 port) that answers every request after
``--latency`` seconds (20 ms) with a résumé answer, then runs :func:`graders.eval.run_eval` with
:class:`graders.eval.ServerSampler` at each ``--concurrency`` (1, 8, 64), grading every sample with
the résumé grader (``graders/data/resume_grader.json``). Nothing leaves the loopback interface.

With ``c`` requests in flight and a server that takes ``L`` seconds, the ideal is ``c / L``
samples/s; the ratio printed is measured / ideal (target: >= 0.9 up to 64). Next to each run, a bare httpx
client (the same threads and pool, nothing graded or written) gives the ceiling of an httpx client on
this machine; ``eval/bare`` is the share of it the eval run reaches. The grading cost per sample is
the time the run spent grading, over the samples (it runs while requests are in flight).

Run:  .venv/bin/python benchmarks/eval_throughput.py [--latency 0.02] [--concurrency 1 8 64] [--waves 20]
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def serve(port: int, latency: float) -> None:
    """The fake server (run in a child process): every POST is answered after ``latency`` seconds."""
    import uvicorn

    rows = [json.loads(line) for line in (ROOT / "graders" / "data" / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": rows[0]["output"]}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 50, "completion_tokens": 40}}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await asyncio.sleep(latency)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=2048)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_rate(url: str, concurrency: int, n: int) -> float:
    """Requests/s of a bare httpx client (``concurrency`` threads on one pooled client, nothing read, graded or written):
    the ceiling this machine allows an httpx-based client, measured next to each eval run."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "resume"}]}).encode()
    with httpx.Client(limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: client.post(url, content=body, headers={"Content-Type": "application/json"}), range(n)))
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--waves", type=int, default=20, help="samples per run = concurrency x waves (at least 100)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return

    import httpx

    from graders import from_config
    from graders.eval import EvalRow, NamedGrader, SamplingParams, ServerSampler, run_eval

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(args.latency)])
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        config = json.loads((ROOT / "graders" / "data" / "resume_grader.json").read_text(encoding="utf-8"))
        grader = NamedGrader("resume", from_config(config), config, None, True)
        reference = json.loads((ROOT / "graders" / "data" / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()[0])["reference"]
        print(f"fake server: {args.latency * 1000:.0f} ms per request; résumé grader on every sample")
        print(f"{'concurrency':>11} {'samples':>8} {'eval/s':>8} {'bare/s':>8} {'ideal/s':>8} {'eval/ideal':>10} {'eval/bare':>9} "
              f"{'grading us/sample':>18}")
        for c in args.concurrency:
            n = max(100, c * args.waves)
            bare = bare_rate(f"http://127.0.0.1:{port}/chat/completions", c, n)
            rows = [EvalRow(i, i + 1, {"reference": reference}, messages=[{"role": "user", "content": f"resume {i}"}]) for i in range(n)]
            with tempfile.TemporaryDirectory() as tmp:
                sampler = ServerSampler(f"http://127.0.0.1:{port}", "fake", concurrency=c, timeout=30)
                summary = run_eval(rows, [grader], sampler, SamplingParams(), Path(tmp))
            perf = summary["perf"]
            ideal = c / args.latency
            print(f"{c:>11} {n:>8} {perf['samples_per_s']:>8.1f} {bare:>8.1f} {ideal:>8.0f} {perf['samples_per_s'] / ideal:>10.2f} "
                  f"{perf['samples_per_s'] / bare:>9.2f} {perf['grade_s_per_sample'] * 1e6:>18.0f}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
