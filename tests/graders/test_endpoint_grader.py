"""The endpoint grader against a fake reward server on 127.0.0.1: answers, retries, timeouts, rate limit, config errors."""

from __future__ import annotations

import math
import pickle
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_http import HANG, Answer, FakeServer, Respond

from graders import GraderConfigError, from_config, run_grader, validate_grader
from graders.openai._endpoint import EndpointGrader, HttpFailure, RateLimiter, post_json


class EndpointServer(FakeServer):
    """The fake service, answering at ``url`` (its ``/grade`` path)."""

    def __init__(self, respond: Respond) -> None:
        super().__init__(respond)
        self.url = f"{self.root}/grade"


def always(status: int, body: Any, headers: dict[str, str] | None = None) -> Callable[[int, dict[str, Any]], Answer]:
    return lambda n, request: (status, body, headers or {})


@pytest.fixture
def server_factory() -> Iterator[Callable[[Respond], EndpointServer]]:
    started: list[EndpointServer] = []

    def start(respond: Respond) -> EndpointServer:
        server = EndpointServer(respond)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def grader(url: str, **extra: Any) -> EndpointGrader:
    options = {k: extra.pop(k) for k in ("timeout", "max_retries", "backoff", "client", "score_range") if k in extra}
    g = EndpointGrader.from_config({"type": "endpoint", "name": "reward", "url": url, **extra}, **options)
    return g


# -- answers -------------------------------------------------------------------------------


def test_posts_sample_item_and_trace_id_and_reads_the_score(server_factory: Any) -> None:
    server = server_factory(always(200, {"score": 0.75, "why": "close"}))
    g = grader(server.url, headers={"Authorization": "Bearer s3cret"})
    grade = g.grade('{"city": "Paris"}', {"city": "Paris"})
    assert grade.score == 0.75 and grade.ok
    assert grade.details["reward"].prediction == {"score": 0.75, "why": "close"}
    assert grade.reason == f"0.75 from endpoint {server.url}"
    [request] = server.requests
    assert request["path"] == "/grade"
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert body["sample"] == {"output_text": '{"city": "Paris"}', "output_json": {"city": "Paris"}}
    assert body["item"] == {"city": "Paris"}
    assert re.fullmatch(r"trace_[0-9a-f]{32}", body["trace_id"])


def test_a_sample_dict_is_sent_as_given_with_the_derived_fields_it_lacks(server_factory: Any) -> None:
    server = server_factory(always(200, {"score": 1}))
    sample = {"choices": [{"message": {"content": "hi", "tool_calls": []}, "finish_reason": "stop"}], "output_audio": None}
    assert grader(server.url).grade(sample).score == 1.0
    sent = server.requests[0]["body"]
    assert sent["sample"]["choices"] == sample["choices"] and sent["sample"]["output_text"] == "hi"
    assert "output_audio" in sent["sample"] and sent["item"] == {}


def test_the_score_is_on_the_given_scale_and_pass_threshold_marks_the_reason(server_factory: Any) -> None:
    server = server_factory(lambda n, r: (200, {"score": [8, 3][n]}))
    g = grader(server.url, pass_threshold=8, score_range=(0, 10))
    passed, failed = g.grade("a"), g.grade("b")
    assert (passed.score, failed.score) == (8.0, 3.0)
    assert passed.reason.endswith(">= 8: passes") and failed.reason.endswith("< 8: fails")
    assert pickle.loads(pickle.dumps(g)).score_range == (0.0, 10.0)


@pytest.mark.parametrize(("score", "score_range"), [(1e30, None), (-0.5, None), (1.0000001, None), (11, (0, 10)),
                                                    (-1e308, (-1, 1))])
def test_a_score_outside_the_range_is_flagged_never_a_reward(server_factory: Any, score: float,
                                                             score_range: tuple[float, float] | None) -> None:
    server = server_factory(always(200, {"score": score}))
    g = grader(server.url, **({"score_range": score_range} if score_range else {}))
    grade = g.grade("x")
    assert (grade.score, grade.errors["other_error"]) == (0.0, True) and "outside the grader's range" in grade.reason
    assert run_grader({"type": "endpoint", "name": "r", "url": server.url}, "x")["reward"] == 0.0  # all outside [0, 1]


def test_the_range_ends_are_scores_and_pass_threshold_must_lie_in_it(server_factory: Any) -> None:
    server = server_factory(lambda n, r: (200, {"score": [0, 1, 10][n]}))
    assert grader(server.url).grade("a").score == 0.0 and grader(server.url).grade("b").score == 1.0
    assert grader(server.url, score_range=(0, 10)).grade("c").score == 10.0
    with pytest.raises(GraderConfigError) as info:
        grader(server.url, pass_threshold=8)
    assert (info.value.code, info.value.pointer) == ("bad_value", "/pass_threshold") and '"range"' in (info.value.hint or "")
    for bad in [(1, 0), (0, math.inf), (0,), "0-1", (True, 2)]:
        with pytest.raises(GraderConfigError, match="score_range"):
            grader(server.url, score_range=bad)


def test_a_json_config_on_another_scale_builds_with_its_range(server_factory: Any) -> None:
    """OpenAI's example pairs an endpoint with pass_threshold 8: a JSON config says its scale with "range"."""
    server = server_factory(always(200, {"score": 8}))
    config = {"type": "endpoint", "name": "r", "url": server.url, "pass_threshold": 8, "range": [0, 10]}
    g = from_config(config)
    assert g.grade("x").score == 8.0 and g.config() == config | {"pass_threshold": 8.0, "range": [0.0, 10.0]}
    assert pickle.loads(pickle.dumps(g)).score_range == (0.0, 10.0)
    assert run_grader(config, "x")["reward"] == 8.0
    with pytest.raises(GraderConfigError) as info:
        from_config({**config, "range": [10, 0]})
    assert info.value.pointer == "/range"
    with pytest.raises(GraderConfigError, match="twice"):
        EndpointGrader.from_config(config, score_range=(0, 10))


def test_an_output_over_the_bound_is_sent_cut_and_flagged(server_factory: Any) -> None:
    from graders import structured as _parsing

    server = server_factory(always(200, {"score": 1}))
    _parsing.set_max_output_chars(100)
    try:
        text = "y" * 300
        grades = [grader(server.url).grade(text), grader(server.url).grade({"output_text": text, "extra": 1})]
    finally:
        _parsing.set_max_output_chars(None)
    assert [(g.score, g.errors["truncated_output_error"]) for g in grades] == [(1.0, True)] * 2
    assert [r["body"]["sample"]["output_text"] for r in server.requests] == ["y" * 100] * 2
    assert server.requests[1]["body"]["sample"]["extra"] == 1


def test_a_lone_surrogate_in_the_sample_is_sent_as_its_escape(server_factory: Any) -> None:
    server = server_factory(always(200, {"score": 1}))
    grade = grader(server.url).grade('{"city": "Par\\ud83d"}', {"ref": "x\ud800"})
    assert grade.score == 1.0 and grade.ok
    sent = server.requests[0]["body"]
    assert sent["sample"]["output_json"] == {"city": "Par\ud83d"} and sent["item"] == {"ref": "x\ud800"}


# -- failures are flagged zeros ----------------------------------------------------------------


def test_a_500_is_retried_with_the_same_trace_id(server_factory: Any) -> None:
    server = server_factory(lambda n, r: (500, "boom") if n < 2 else (200, {"score": 0.5}))
    grade = grader(server.url, max_retries=2, backoff=0.01).grade("x")
    assert grade.score == 0.5 and grade.ok
    assert len(server.requests) == 3
    assert len({r["body"]["trace_id"] for r in server.requests}) == 1


def test_persistent_5xx_is_unresponsive_after_all_retries(server_factory: Any) -> None:
    server = server_factory(always(503, "overloaded"))
    grade = grader(server.url, max_retries=2, backoff=0.0).grade("x")
    assert grade.score == 0.0 and grade.errors["unresponsive_reward_error"] and not grade.errors["other_error"]
    assert len(server.requests) == 3
    assert "HTTP 503" in grade.reason and "'overloaded'" in grade.reason and "after 3 attempts" in grade.reason


def test_429_honours_a_short_retry_after(server_factory: Any) -> None:
    server = server_factory(lambda n, r: (429, "slow down", {"Retry-After": "0"}) if n == 0 else (200, {"score": 1.0}))
    assert grader(server.url, backoff=30).grade("x").score == 1.0  # Retry-After 0 replaces the 30 s backoff
    assert len(server.requests) == 2


def test_a_client_error_is_not_retried_and_flags_other_error(server_factory: Any) -> None:
    server = server_factory(always(404, "no such route"))
    grade = grader(server.url, max_retries=3, backoff=0.0).grade("x")
    assert grade.errors["other_error"] and not grade.errors["unresponsive_reward_error"]
    assert len(server.requests) == 1 and "HTTP 404" in grade.reason


@pytest.mark.parametrize("body", ["<html>oops</html>", {"reward": 1.0}, {"score": "high"}, {"score": True},
                                  '{"score": NaN}', [1.0]])
def test_a_bad_body_flags_other_error(server_factory: Any, body: Any) -> None:
    server = server_factory(always(200, body))
    grade = grader(server.url).grade("x")
    assert grade.score == 0.0 and grade.errors["other_error"] and not grade.errors["unresponsive_reward_error"]
    assert server.url in grade.reason


def test_a_timeout_is_cut_and_flags_unresponsive(server_factory: Any) -> None:
    server = server_factory(always(200, HANG))
    start = time.perf_counter()
    grade = grader(server.url, timeout=0.25, max_retries=1, backoff=0.0).grade("x")
    elapsed = time.perf_counter() - start
    assert grade.errors["unresponsive_reward_error"] and "no answer within 0.25 s" in grade.reason
    assert len(server.requests) == 2
    assert elapsed < 8  # generous: proves the hang was cut (the server would hold each request 10 s)


def test_a_refused_connection_flags_unresponsive() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    grade = grader(f"http://127.0.0.1:{port}/grade", max_retries=1, backoff=0.0).grade("x")
    assert grade.errors["unresponsive_reward_error"] and "ConnectError" in grade.reason


def test_an_item_json_cannot_hold_is_the_callers_mistake(server_factory: Any) -> None:
    server = server_factory(always(200, {"score": 1}))
    with pytest.raises(GraderConfigError) as err:
        grader(server.url).grade("x", {"tags": {"a", "b"}})
    assert err.value.code == "payload_not_json" and not server.requests


# -- rate limit ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_requests_evenly_and_never_waits_when_time_has_passed() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        limiter.wait()
        starts.append(clock.now)
    assert starts == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    clock.now += 10  # idle for a while: the next request goes at once, no burst credit is kept
    assert limiter.wait() == 0.0 and limiter.wait() == pytest.approx(0.25)


def test_the_grader_waits_for_its_rate_limit_before_every_request(server_factory: Any) -> None:
    server = server_factory(lambda n, r: (500, "x") if n == 1 else (200, {"score": 1.0}))
    g = grader(server.url, rate_limit=5, backoff=0.0)
    assert g.rate_limiter is not None and g.rate_limiter.interval == pytest.approx(0.2)
    clock = FakeClock()  # a clock that stands still: every wait is the full spacing, no real time passes
    g.rate_limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    grades = [g.grade("x") for _ in range(3)]
    assert all(gr.score == 1.0 for gr in grades)
    assert len(server.requests) == 4  # the retry of the second grade waited for the limit too
    assert clock.slept == pytest.approx([0.2, 0.2, 0.2])


# -- config --------------------------------------------------------------------------------


ENDPOINT = {"type": "endpoint", "name": "reward", "url": "http://127.0.0.1:9/grade"}


@pytest.mark.parametrize(("change", "code", "pointer"), [
    ({"url": None}, "missing_key", "/url"),
    ({"url": "ftp://example.com/grade"}, "bad_value", "/url"),
    ({"url": "not a url"}, "bad_value", "/url"),
    ({"url": 42}, "wrong_type", "/url"),
    ({"headers": {"X-Key": 1}}, "wrong_type", "/headers/X-Key"),
    ({"headers": ["X-Key"]}, "wrong_type", "/headers"),
    ({"rate_limit": 0}, "bad_value", "/rate_limit"),
    ({"rate_limit": 2.5}, "bad_value", "/rate_limit"),
    ({"rate_limit": True}, "bad_value", "/rate_limit"),
    ({"pass_threshold": "high"}, "wrong_type", "/pass_threshold"),
    ({"name": ""}, "wrong_type", "/name"),
    ({"timeout": 5}, "unknown_key", "/timeout"),  # rftkit's settings are keywords, never config keys
])
def test_config_errors_carry_their_pointer(change: dict[str, Any], code: str, pointer: str) -> None:
    config = {k: v for k, v in {**ENDPOINT, **change}.items() if v is not None}
    with pytest.raises(GraderConfigError) as err:
        from_config(config)
    assert (err.value.code, err.value.pointer) == (code, pointer)


def test_config_errors_inside_multi_point_into_it() -> None:
    config = {"type": "multi", "name": "m", "calculate_output": "e",
              "graders": {"e": {**ENDPOINT, "rate_limit": -1}}}
    with pytest.raises(GraderConfigError) as err:
        validate_grader(config)
    assert err.value.pointer == "/graders/e/rate_limit"


@pytest.mark.parametrize(("option", "value"), [("timeout", 0), ("timeout", math.inf), ("max_retries", -1),
                                                ("max_retries", 1.5), ("backoff", -0.1)])
def test_bad_keywords_raise(option: str, value: Any) -> None:
    with pytest.raises(GraderConfigError) as err:
        EndpointGrader(url=ENDPOINT["url"], **{option: value})
    assert err.value.code == "bad_option" and err.value.pointer == f"/{option}"


def test_name_is_optional_and_the_config_reads_back() -> None:
    g = from_config({"type": "endpoint", "url": "https://example.com/grade"})
    assert isinstance(g, EndpointGrader) and g.name == "endpoint"
    full = {**ENDPOINT, "headers": {"Authorization": "Bearer k"}, "rate_limit": 10, "pass_threshold": 0.5}
    assert validate_grader(full)["grader"] == full


def test_pickles_as_config_and_keywords_and_hides_header_values() -> None:
    g = grader(ENDPOINT["url"], headers={"Authorization": "Bearer s3cret"}, rate_limit=3, timeout=7.5, max_retries=1)
    copy = pickle.loads(pickle.dumps(g))
    assert copy.config() == g.config() and (copy.timeout, copy.max_retries) == (7.5, 1)
    assert "s3cret" not in repr(g) and "Authorization" in repr(g)


# -- wiring ----------------------------------------------------------------------------------


def test_run_grader_and_multi(server_factory: Any) -> None:
    server = server_factory(lambda n, r: (200, {"score": 0.4}) if r["body"]["item"].get("ok") else (404, "gone"))
    config = {"type": "endpoint", "name": "reward", "url": server.url}
    result = run_grader(config, "answer", {"ok": True})
    assert result["reward"] == 0.4 and result["metadata"]["type"] == "endpoint"
    assert not any(v for k, v in result["metadata"]["errors"].items() if k.endswith("_error"))
    multi = from_config({"type": "multi", "name": "m", "calculate_output": "0.5 * reward + 0.5 * exact", "graders": {
        "reward": config,
        "exact": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}", "reference": "answer",
                  "operation": "eq"}}})
    assert multi.grade("answer", {"ok": True}).score == pytest.approx(0.7)
    down = multi.grade("answer", {"ok": False})  # a failing endpoint inside multi: flagged 0, the formula still runs
    assert down.score == pytest.approx(0.5) and down.errors["other_error"] and "HTTP 404" in down.reason


def test_post_json_never_raises_on_network_failure() -> None:
    answer = post_json("http://127.0.0.1:9/x", b"{}", {}, timeout=0.5, max_retries=0, backoff=0.0)
    assert isinstance(answer, HttpFailure) and answer.status is None and answer.unanswered
