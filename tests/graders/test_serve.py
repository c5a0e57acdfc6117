"""``rftkit serve`` on loopback: every endpoint with good input, every refusal with its status and message.

Each server is real (uvicorn on an ephemeral 127.0.0.1 port, in a thread) and is
stopped when its test module is done; the client is httpx. After every bad
request the server is checked to still answer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from graders import Grade, GraderConfigError, StructuredGrader, from_config, run_grader, validate_grader
from graders.integrations._openrlhf import response_from_query
from graders.openai import OpenAIGrader
from graders.serve._app import create_app
from graders.serve._protocol import _http_protocol, _served
from graders.serve._wire import _INLINE_BYTES, RUN_PATH, VALIDATE_PATH
from schemas import UserError

DATA = Path(__file__).resolve().parents[2] / "graders" / "data"
GRADER = DATA / "resume_grader.json"
ROWS = [json.loads(line) for line in (DATA / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024
STRING_CHECK = {"type": "string_check", "name": "answer", "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}",
                "operation": "eq"}


@contextmanager
def serving(app: Any, *, rftkit: bool = False) -> Iterator[str]:
    """Serve ``app`` with uvicorn on an ephemeral loopback port, in a thread; stop it afterwards.

    ``rftkit``: with the HTTP protocol ``rftkit serve`` uses (read timeout, connection cap), not uvicorn's own.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           http=_http_protocol() if rftkit else "auto"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


class Gate(OpenAIGrader):
    """A grader whose grading waits for a gate to open (at most 20 s, so nothing can hang); "boom" raises."""

    name, type = "gate", "gate"

    def __init__(self) -> None:
        self.open = threading.Event()

    def grade(self, sample: Any, item: Any = None) -> Grade:
        if sample == "boom":
            raise RuntimeError("a bug in the grader")
        if sample != "fast":
            self.open.wait(20)
        return Grade(1.0, {"gate": 1.0})

    def config(self) -> dict[str, Any]:
        return {"type": "gate"}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    app = create_app(GRADER, token=TOKEN, max_body_bytes=LIMIT)
    with serving(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def gate() -> Iterator[tuple[Gate, httpx.Client]]:
    grader = Gate()
    app = create_app(grader, timeout_s=0.5, max_concurrency=2, threads=2)
    with serving(app) as url, httpx.Client(base_url=url, timeout=20) as c:
        try:
            yield grader, c
        finally:
            grader.open.set()  # let stuck grading threads finish


def still_serving(c: httpx.Client) -> None:
    assert c.get("/health").json()["status"] == "ok"
    row = ROWS[0]
    r = c.post("/score", json={"sample": row["output"], "item": {"reference": row["reference"]}})
    assert r.status_code == 200, r.text


def error(r: httpx.Response, status: int, code: str, pointer: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()["error"]
    assert body["code"] == code and body["message"], body
    if pointer is not None:
        assert body["pointer"] == pointer, body
    return body


def resume() -> StructuredGrader:
    grader = from_config(GRADER)
    assert isinstance(grader, StructuredGrader)
    return grader


def local(row: Mapping[str, Any]) -> Grade:
    return resume().grade(row["output"], row["reference"])


# --------------------------------------------------------------------------- good input


def test_health_is_open(client: httpx.Client) -> None:
    r = httpx.get(str(client.base_url.join("/health")))
    assert r.status_code == 200
    assert r.json()["grader"] == {"name": "resume", "type": "structured"}


def test_get_reward_speaks_openrlhf(client: httpx.Client) -> None:
    prompts = [f"<|im_start|>user\n{row['prompt']}<|im_end|>\n<|im_start|>assistant\n" for row in ROWS]
    queries = [p + row["output"] + "<|im_end|><|endoftext|>" for p, row in zip(prompts, ROWS)]
    labels = [json.dumps(row["reference"]) for row in ROWS]  # OpenRLHF's labels are the dataset's strings
    r = client.post("/get_reward", json={"query": queries, "prompts": prompts, "labels": labels})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = [resume().grade(response_from_query(q, p), label).score for q, p, label in zip(queries, prompts, labels)]
    assert body["rewards"] == body["scores"] == expected
    assert expected == [local(row).score for row in ROWS]
    fields = ["university", "programming_languages", "city", "state"]
    assert sorted(body["extra_logs"]) == sorted(f"reward/resume/{f}" for f in fields)
    assert body["extra_logs"]["reward/resume/programming_languages"][0] == local(ROWS[0]).sub_scores["programming_languages"]
    # prompts may be left out (the oldest OpenRLHF sends only the query): the chat template tells the response apart
    r = client.post("/get_reward", json={"query": queries[:1], "labels": [ROWS[0]["reference"]]})
    assert r.json()["rewards"] == expected[:1]


def test_run_and_validate_speak_openai(client: httpx.Client) -> None:
    r = client.post(RUN_PATH, json={"grader": STRING_CHECK, "model_sample": "42", "item": {"answer": "42"}})
    assert r.status_code == 200, r.text
    body, local_body = r.json(), run_grader(STRING_CHECK, "42", {"answer": "42"})
    assert body["metadata"].pop("execution_time") >= 0 and local_body["metadata"].pop("execution_time") >= 0
    assert body == local_body and body["reward"] == 1.0
    structured = {"type": "structured", "name": "cv", "schema": json.loads(GRADER.read_text())["schema"],
                  "reference": "{{ item.cv }}"}
    r = client.post(RUN_PATH, json={"grader": structured, "model_sample": ROWS[0]["output"], "item": {"cv": ROWS[0]["reference"]}})
    assert r.json()["reward"] == run_grader(structured, ROWS[0]["output"], {"cv": ROWS[0]["reference"]})["reward"]
    assert set(r.json()["sub_rewards"]) == {"university", "programming_languages", "city", "state"}
    r = client.post(VALIDATE_PATH, json={"grader": STRING_CHECK})
    assert r.status_code == 200 and r.json() == validate_grader(STRING_CHECK)
    second = client.post(VALIDATE_PATH, json={"grader": dict(reversed(list(STRING_CHECK.items())))})  # same config, from the cache
    assert second.json() == validate_grader(STRING_CHECK)


def test_grade_returns_full_grades(client: httpx.Client) -> None:
    rows = ROWS[:4]
    r = client.post("/grade", json={"responses": [row["output"] for row in rows], "references": [row["reference"] for row in rows]})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [json.loads(json.dumps(local(row).to_dict())) for row in rows]
    assert r.json()["results"][0]["details"]["programming_languages"]["missing"] == ["c++"]
    # "samples" for "responses", each row's reference inside its item
    r = client.post("/grade", json={"samples": [rows[1]["output"]], "items": [{"reference": rows[1]["reference"], "id": 1}]})
    assert r.json()["results"][0]["score"] == local(rows[1]).score


def test_score_speaks_the_endpoint_protocol(client: httpx.Client) -> None:
    row = ROWS[2]
    r = client.post("/score", json={"sample": {"output_text": row["output"]}, "item": {"reference": row["reference"]},
                                    "trace_id": "trace_1"})
    assert r.status_code == 200, r.text
    assert r.json()["score"] == local(row).score and r.json()["trace_id"] == "trace_1"


def test_rftkit_endpoint_grader_can_call_it(client: httpx.Client) -> None:
    grader = from_config({"type": "endpoint", "name": "remote", "url": str(client.base_url.join("/score")), "headers": AUTH})
    row = ROWS[0]
    assert grader.grade(row["output"], {"reference": row["reference"]}).score == local(row).score


# --------------------------------------------------------------------------- refusals


def test_malformed_json(client: httpx.Client) -> None:
    r = client.post("/get_reward", content=b'{"query": ["a"], ', headers={"Content-Type": "application/json"})
    assert "not valid JSON" in error(r, 400, "malformed_json")["message"]
    error(client.post("/grade", content=b"\xff\xfe"), 400, "malformed_json")
    assert "must be a JSON object" in error(client.post("/score", json=[1, 2]), 400, "wrong_type", "")["message"]
    still_serving(client)


def test_wrong_types(client: httpx.Client) -> None:
    assert "'query' must be an array" in error(client.post("/get_reward", json={"query": "q", "labels": []}), 400, "wrong_type",
                                               "/query")["message"]
    error(client.post("/get_reward", json={"query": ["a", 7], "labels": ["{}", "{}"]}), 400, "wrong_type", "/query/1")
    error(client.post("/get_reward", json={"query": ["a"], "labels": ["{}", "{}"]}), 400, "length_mismatch", "/labels")
    error(client.post(RUN_PATH, json={"grader": "string_check", "model_sample": "x"}), 400, "wrong_type", "/grader")
    error(client.post(RUN_PATH, json={"grader": STRING_CHECK, "model_sample": 3}), 400, "wrong_type", "/model_sample")
    error(client.post(RUN_PATH, json={"grader": STRING_CHECK, "model_sample": "x", "item": [1]}), 400, "wrong_type", "/item")
    error(client.post("/grade", json={"responses": ["x"], "items": ["row"]}), 400, "wrong_type", "/items/0")
    still_serving(client)


def test_missing_fields(client: httpx.Client) -> None:
    assert "'labels'" in error(client.post("/get_reward", json={"query": ["a"]}), 400, "missing_field", "/labels")["message"]
    error(client.post(RUN_PATH, json={"grader": STRING_CHECK}), 400, "missing_field", "/model_sample")
    error(client.post(VALIDATE_PATH, json={}), 400, "missing_field", "/grader")
    error(client.post("/grade", json={"responses": ["x"]}), 400, "missing_field", "/references")
    error(client.post("/grade", json={"responses": ["x"], "items": [{}]}), 400, "missing_field", "/items/0/reference")
    error(client.post("/score", json={"sample": "x", "item": {}}), 400, "missing_field", "/item/reference")
    still_serving(client)


def test_bad_grader_config_and_bad_data(client: httpx.Client) -> None:
    bad = {**STRING_CHECK, "operation": "equals"}
    body = error(client.post(VALIDATE_PATH, json={"grader": bad}), 400, "bad_value", "/grader/operation")
    assert "equals" in body["message"] and body["hint"]
    error(client.post(RUN_PATH, json={"grader": {"type": "nope"}, "model_sample": "x"}), 400, "unknown_grader_type", "/grader/type")
    body = error(client.post("/get_reward", json={"query": ["{}"], "labels": ["{not json"]}), 400, "bad_reference", "/labels/0")
    assert "not valid JSON" in body["message"]
    still_serving(client)


def test_body_over_the_limit(client: httpx.Client) -> None:
    big = {"query": ["x" * LIMIT], "labels": ["{}"]}
    body = error(client.post("/get_reward", json=big), 413, "body_too_large")
    assert str(LIMIT) in body["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as the body arrives
        yield b'{"query": ["'
        for _ in range(8):
            yield b"x" * (LIMIT // 4)
        yield b'"], "labels": ["{}"]}'

    error(client.post("/get_reward", content=chunks()), 413, "body_too_large")
    still_serving(client)



def test_small_structured_requests_are_graded_on_the_event_loop() -> None:
    """rftkit serve's app: a small /get_reward to a structured grader skips the grading threads; the rest use them."""
    app = create_app(GRADER)
    pool = app.state.rftkit.pool
    hops: list[int] = []
    run = pool.run

    async def counted(job: Any, timeout_s: float, **lane: Any) -> Any:
        hops.append(1)
        return await run(job, timeout_s, **lane)

    pool.run = counted
    small = {"query": [r["output"] for r in ROWS], "labels": [json.dumps(r["reference"]) for r in ROWS]}
    big = {key: value * 40 for key, value in small.items()}
    assert len(json.dumps(small)) <= _INLINE_BYTES < len(json.dumps(big))
    with serving(_served(app)) as url, httpx.Client(base_url=url, timeout=20) as c:
        want = [local(r).score for r in ROWS]
        assert c.post("/get_reward", json=small).json()["rewards"] == want and hops == []
        assert c.post("/get_reward", json=big).json()["rewards"] == want * 40 and hops == [1]
        row = ROWS[0]
        assert c.post("/score", json={"sample": row["output"], "item": {"reference": row["reference"]}}).json()["score"] == (
            local(row).score) and hops == [1, 1]

        def chunks() -> Iterator[bytes]:  # no Content-Length
            body = json.dumps(small).encode()
            yield from (body[i:i + 100] for i in range(0, len(body), 100))

        assert c.post("/get_reward", content=chunks()).json()["rewards"] == want
        error(c.post("/get_reward", content=b"{"), 400, "malformed_json")
        assert c.get("/nowhere").status_code == 404 and c.get("/health").json()["status"] == "ok"
        error(c.get("/get_reward"), 405, "method_not_allowed")


@pytest.mark.parametrize(("field", "bounded"), [
    ({"comparator": "normalized"}, True), ({"comparator": "fuzzy", "scorer": "token_set_ratio"}, True),
    ({"comparator": "math"}, False),  # sympy: seconds for one hard answer
    ({"comparator": "fuzzy", "scorer": "partial_ratio"}, False),  # slides one long text along another
])
def test_only_graders_of_bounded_cost_are_graded_on_the_event_loop(field: dict[str, Any], bounded: bool) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}}
    grader = StructuredGrader(schema=schema, fields={"a": field, "tags": {"comparator": "normalized"}})  # tags matched by key
    assert grader._bounded is bounded
    assert (create_app(grader).state.rftkit.inline_bytes > 0) is bounded
    fuzzy_list = StructuredGrader(schema=schema)  # strings default to fuzzy: a pairwise matrix per list
    assert not fuzzy_list._bounded and create_app(fuzzy_list).state.rftkit.inline_bytes == 0


def test_a_slow_structured_grade_times_out_and_the_server_keeps_answering() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    grader = StructuredGrader(schema=schema, fields={"a": {"comparator": "math"}})
    real = grader.grade

    def slow(*args: Any, **kwargs: Any) -> Grade:
        time.sleep(1.5)  # a hard sympy simplification, in effect
        return real(*args, **kwargs)

    grader.grade = slow  # type: ignore[method-assign]  # the slow path, on purpose
    with serving(create_app(grader, timeout_s=0.3)) as url, httpx.Client(base_url=url, timeout=20) as c:
        started = time.monotonic()
        body = error(c.post("/get_reward", json={"query": ['{"a": "1/2"}'], "labels": ['{"a": "0.5"}']}), 504, "grading_timeout")
        assert time.monotonic() - started < 1.2, body  # answered at the deadline, not when the grade ended
        assert c.get("/health").json()["status"] == "ok"


def test_token(client: httpx.Client) -> None:
    url = str(client.base_url.join("/score"))
    r = httpx.post(url, json={"sample": "x", "item": {"reference": {}}})
    assert error(r, 401, "missing_token")["hint"] and r.headers["www-authenticate"].startswith("Bearer")
    error(httpx.post(url, json={}, headers={"Authorization": "Bearer wrong"}), 401, "invalid_token")
    error(httpx.post(url, json={}, headers={"Authorization": f"Basic {TOKEN}"}), 401, "invalid_token")
    still_serving(client)


def test_unknown_path_and_method(client: httpx.Client) -> None:
    assert "/get_reward" in error(client.post("/nope", json={}), 404, "not_found")["hint"]
    error(client.get("/get_reward"), 405, "method_not_allowed")
    still_serving(client)


def test_a_grader_that_blocks_gets_504_then_503_while_stuck(gate: tuple[Gate, httpx.Client]) -> None:
    grader, c = gate
    start = time.monotonic()
    assert "0.5 s" in error(c.post("/score", json={"sample": "slow"}), 504, "grading_timeout")["message"]
    assert time.monotonic() - start < 10
    # the stuck grading keeps its slot; fill the other one, then the server refuses at once instead of queueing
    threading.Thread(target=lambda: c.post("/score", json={"sample": "slow"}), daemon=True).start()
    deadline = time.monotonic() + 10
    while c.get("/health").json()["in_flight"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    r = c.post("/score", json={"sample": "fast"})
    assert error(r, 503, "overloaded")["hint"] and r.headers["retry-after"] == "1"
    grader.open.set()  # the stuck graders return: their slots come back
    deadline = time.monotonic() + 10
    while c.get("/health").json()["in_flight"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert c.post("/score", json={"sample": "fast"}).json()["score"] == 1.0


def test_a_grader_bug_is_a_500_and_the_server_goes_on(gate: tuple[Gate, httpx.Client]) -> None:
    _, c = gate
    body = error(c.post("/score", json={"sample": "boom"}), 500, "grader_error")
    assert "RuntimeError: a bug in the grader" in body["message"]
    assert c.post("/score", json={"sample": "fast"}).status_code == 200


def test_routes_added_to_the_app_still_work() -> None:
    from fastapi.testclient import TestClient

    app = create_app(GRADER)

    @app.get("/version")
    def version() -> dict[str, str]:
        return {"version": "1"}

    with TestClient(app) as c:
        assert c.get("/version").json() == {"version": "1"}
        assert c.get("/health").json()["status"] == "ok"
        error(c.post("/health"), 405, "method_not_allowed")


def test_create_app_rejects_bad_settings() -> None:
    with pytest.raises(GraderConfigError, match="operation"):
        create_app({**STRING_CHECK, "operation": "equals"})
    with pytest.raises(UserError, match="max_concurrency"):
        create_app(GRADER, max_concurrency=0)


# --------------------------------------------------------------------------- the command


def test_serve_help_explains_the_options() -> None:
    from graders._cli import app, load_plugins

    load_plugins(app)
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in ("--grader", "--host", "--port", "--workers", "--token", "RFTKIT_SERVE_TOKEN", "--max-body-bytes", "--timeout",
                   "--max-concurrency", "/get_reward", "--token-file", "--insecure-no-token", "--allow-graders",
                   "--max-python-graders", "--read-timeout", "--max-connections"):
        assert option in result.output, option
    result = CliRunner().invoke(app, ["serve", "--grader", "no/such/grader.json"])
    assert result.exit_code == 2 and "not found" in result.output


def test_serve_with_two_workers(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from graders._cli import main; sys.argv[0] = 'rftkit'; main()"
    env = {**os.environ, "RFTKIT_SERVE_TOKEN": TOKEN}
    log = tmp_path / "serve.log"  # a file, not a pipe: nothing blocks on it (the workers keep a pipe open after a kill)
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--grader", str(GRADER), "--port", str(port),
                                 "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120  # three imports of graders on a loaded machine
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        row = ROWS[0]
        body = {"query": [row["output"]], "labels": [row["reference"]]}
        assert httpx.post(url + "/get_reward", json=body).status_code == 401  # the token came from the environment
        assert httpx.post(url + "/get_reward", json=body, headers=AUTH).json()["rewards"] == [local(row).score]
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
