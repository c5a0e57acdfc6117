"""``ServerSampler`` (aiohttp on one event loop) against a fake server on loopback: the retry rules it shares with the
endpoint grader's ``post_json``, bounded concurrency, the rate limit, unreachable servers, proxies and misuse."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from fake_http import Answer, FakeServer

from graders import from_config
from graders.eval import EvalRow, NamedGrader, Request, SamplingParams, ServerSampler, run_eval
from graders.eval._sampling import env_proxy
from graders.openai._endpoint import MAX_RETRY_AFTER, Failed, HttpFailure, RateLimiter, post_json, retry_plan
from schemas import UserError

OK = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "text": "4", "finish_reason": "stop"}]}


def drive(plan_args: tuple[int, float], failures: list[Failed]) -> tuple[list[float | None], HttpFailure | None]:
    """The waits a plan asks for, fed ``failures`` one by one, and its final HttpFailure (None: attempts were left)."""
    plan = retry_plan(*plan_args)
    waits = [next(plan)]
    for failed in failures:
        try:
            waits.append(plan.send(failed))
        except StopIteration as stop:
            return waits, stop.value
    return waits, None


def test_retry_plan_backs_off_honours_retry_after_and_stops_on_a_status_not_worth_another() -> None:
    waits, final = drive((3, 0.5), [Failed("timeout"), Failed("HTTP 503: ''", 503), Failed("HTTP 429: ''", 429, "1e9")])
    assert waits == [None, 0.5, 1.0, MAX_RETRY_AFTER] and final is None  # Retry-After is capped
    waits, final = drive((3, 0.5), [Failed("HTTP 429: ''", 429, "Wed, 21 Oct 2026 07:28:00 GMT"), Failed("HTTP 400: 'no'", 400)])
    assert waits == [None, 0.5]  # an HTTP-date Retry-After falls back to the backoff
    assert final == HttpFailure("HTTP 400: 'no'", 400, 2)  # 400 is not retried
    waits, final = drive((1, 40.0), [Failed("HTTP 500: ''", 500), Failed("HTTP 502: ''", 502)])
    assert waits == [None, 30.0]  # the backoff is capped at MAX_BACKOFF
    assert final == HttpFailure("HTTP 502: '' (after 2 attempts)", 502, 2)


def script(n_by_prompt: dict[str, list[Answer]]) -> Any:
    """A respond function that answers each prompt's k-th request with its k-th scripted answer (then 200)."""
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def respond(n: int, req: dict[str, Any]) -> Answer:
        body = req["body"]
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        with lock:
            k = seen.get(prompt, 0)
            seen[prompt] = k + 1
        answers = n_by_prompt.get(prompt, [])
        return answers[k] if k < len(answers) else (200, OK)

    return respond


def test_the_async_sampler_and_post_json_wait_alike_for_the_same_answers() -> None:
    answers: list[Answer] = [(503, "busy"), (429, {"error": "slow"}, {"Retry-After": "3"}), (500, "boom")]
    server = FakeServer(script({"q": answers}))
    try:
        slept_sync: list[float] = []
        response = post_json(server.root + "/chat/completions", b'{"messages": [{"role": "user", "content": "q"}]}', {},
                             timeout=5, max_retries=5, backoff=0.25, sleep=slept_sync.append)
        assert not isinstance(response, HttpFailure) and response.status_code == 200
        server.respond = script({"q": answers})
        slept_async: list[float] = []
        sampler = ServerSampler(server.root, "m", backoff=0.25, max_retries=5, sleep=slept_async.append)
        [(_, done)] = list(sampler.sample([Request(0, 0, None, [{"role": "user", "content": "q"}])], SamplingParams()))
    finally:
        server.close()
    assert slept_sync == slept_async == [0.25, 3.0, 1.0]
    assert done.error is None and done.text == "4" and done.attempts == 4


def test_no_more_than_concurrency_requests_are_ever_in_flight() -> None:
    in_flight, most = [0], [0]
    lock = threading.Lock()
    full = threading.Event()

    def respond(n: int, req: dict[str, Any]) -> Answer:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            if in_flight[0] == 4:
                full.set()
        full.wait(30)  # the first four are held until all four are in flight; later ones pass at once
        with lock:
            in_flight[0] -= 1
        return 200, OK

    server = FakeServer(respond)
    try:
        sampler = ServerSampler(server.root, "m", concurrency=4)
        requests = [Request(i, 0, f"q{i}", None) for i in range(12)]
        done = list(sampler.sample(requests, SamplingParams()))
    finally:
        server.close()
    assert full.is_set() and most[0] == 4
    assert sorted(r.row for r, _ in done) == list(range(12)) and all(c.error is None for _, c in done)


def test_the_rate_limit_spaces_the_requests() -> None:
    server = FakeServer(lambda n, req: (200, OK))
    slept: list[float] = []
    try:
        sampler = ServerSampler(server.root, "m", concurrency=3, sleep=slept.append)
        sampler.limiter = RateLimiter(4, clock=lambda: 100.0)  # a frozen clock: each request is 1/4 s after the last
        done = list(sampler.sample([Request(i, 0, f"q{i}", None) for i in range(5)], SamplingParams()))
    finally:
        server.close()
    assert len(done) == 5 and sorted(slept) == [0.25, 0.5, 0.75, 1.0]


def test_an_unreachable_server_is_an_error_per_sample_after_the_retries(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    sampler = ServerSampler(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff=0.1, sleep=slept.append)
    exact = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}", "reference": "4", "operation": "eq"}
    rows = [EvalRow(i, i + 1, {}, prompt=f"q{i}") for i in range(2)]
    summary = run_eval(rows, [NamedGrader("exact", from_config(exact), exact, 1.0, False)], sampler, SamplingParams(),
                       tmp_path / "run")
    assert summary["samples"] == 0 and summary["missing_samples"] == 2 and summary["perf"]["failed_requests"] == 2
    assert sorted(slept) == [0.1, 0.1, 0.2, 0.2]
    errors = [line for line in (tmp_path / "run" / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(errors) == 2 and all("ClientConnectorError" in e and "after 3 attempts" in e for e in errors)


def test_a_chat_row_sent_to_completions_raises_the_usage_error_not_a_hang() -> None:
    server = FakeServer(lambda n, req: (200, OK))
    try:
        sampler = ServerSampler(server.root, "m", api="completions")
        with pytest.raises(UserError, match="cannot be sent to /completions"):
            list(sampler.sample([Request(0, 0, None, [{"role": "user", "content": "q"}])], SamplingParams()))
    finally:
        server.close()
    assert not server.requests


def test_sampling_inside_a_running_event_loop_is_refused_with_a_hint() -> None:
    sampler = ServerSampler("http://127.0.0.1:9/v1", "m")

    async def inside() -> None:
        list(sampler.sample([Request(0, 0, "q", None)], SamplingParams()))

    with pytest.raises(UserError, match="event loop") as info:
        asyncio.run(inside())
    assert "to_thread" in str(info.value.hint)


def test_the_proxy_comes_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("http://127.0.0.1:8000/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.example:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert env_proxy("https://api.openai.com/v1") is None
    assert ServerSampler("https://api.openai.com/v1", "m").proxy is None
