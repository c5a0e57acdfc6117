"""``rftkit serve``: what a client may make the server do (issue 11, part 1), and no 500 for bad model output.

Every server is real (uvicorn on an ephemeral 127.0.0.1 port, in a thread) and is
stopped when its test is done; python graders' workers are closed with it.
"""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve import GRADER, ROWS, STRING_CHECK, error, serving, still_serving
from typer.testing import CliRunner

from graders.serve._app import create_app
from graders.serve._wire import RUN_PATH, VALIDATE_PATH, _dumps
from schemas import UserError

LEAK = "def grade(sample, item):\n    raise Exception(open('/etc/passwd').read())\n"
CMDLINE = ("import os\ndef grade(sample, item):\n"
           "    raise Exception(' | '.join(open(f'/proc/{p}/cmdline').read() for p in os.listdir('/proc') if p.isdigit()))\n")
CONSTANT = "def grade(sample, item):\n    return {value}\n"


def python(source: str, name: str = "py") -> dict[str, Any]:
    return {"type": "python", "name": name, "source": source}


def multi(**graders: dict[str, Any]) -> dict[str, Any]:
    return {"type": "multi", "name": "m", "graders": graders, "calculate_output": " + ".join(graders)}


@pytest.fixture(scope="module")
def default() -> Iterator[httpx.Client]:
    """A server started with no --allow-graders: the default policy."""
    with serving(create_app(GRADER)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def refused(r: httpx.Response, kind: str, pointer: str, flag: str | None = None) -> dict[str, Any]:
    body = error(r, 403, "grader_type_not_allowed" if flag else "server_path_refused", pointer)
    assert kind in body["message"], body
    if flag:
        assert f"--allow-graders {flag}" in body["hint"], body
    return body


# --------------------------------------------------------------------------- the default policy


def test_request_borne_python_is_refused_by_default(default: httpx.Client) -> None:
    for path, body in ((RUN_PATH, {"grader": python(LEAK), "model_sample": "x"}), (VALIDATE_PATH, {"grader": python(LEAK)})):
        r = default.post(path, json=body)
        refused(r, "python", "/grader", "python")
        assert "root:" not in r.text
    r = default.post(RUN_PATH, json={"grader": python(CMDLINE), "model_sample": "x"})
    refused(r, "python", "/grader", "python")
    assert "pytest" not in r.text and "cmdline" not in r.text
    # inside a multi: the pointer names the sub-grader
    r = default.post(RUN_PATH, json={"grader": multi(ok=STRING_CHECK, x=python(LEAK)), "model_sample": "x", "item": {"answer": "x"}})
    refused(r, "'python'", "/grader/graders/x", "python")
    still_serving(default)


def test_endpoint_model_and_label_graders_are_refused_by_default(default: httpx.Client) -> None:
    with socket.socket() as listener:  # where an endpoint config would make the server POST (blind SSRF)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/score"
        endpoint = {"type": "endpoint", "name": "e", "url": url}
        refused(default.post(RUN_PATH, json={"grader": endpoint, "model_sample": "x"}), "endpoint", "/grader", "endpoint")
        refused(default.post(VALIDATE_PATH, json={"grader": multi(a=endpoint)}), "endpoint", "/grader/graders/a", "endpoint")
        assert select.select([listener], [], [], 0)[0] == [], "the server connected to the URL a request named"
    messages = [{"role": "user", "content": "{{ sample.output_text }}"}]
    score = {"type": "score_model", "name": "s", "model": "m", "input": messages}
    label = {"type": "label_model", "name": "l", "model": "m", "input": messages, "labels": ["a", "b"], "passing_labels": ["a"]}
    refused(default.post(RUN_PATH, json={"grader": score, "model_sample": "x"}), "score_model", "/grader", "score_model")
    refused(default.post(VALIDATE_PATH, json={"grader": label}), "label_model", "/grader", "label_model")
    still_serving(default)


def test_a_schema_path_is_refused_and_says_nothing_about_the_file(default: httpx.Client, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bodies = []
    for path in (str(schema), str(bad), str(tmp_path / "missing.json"), "/etc/passwd.json"):
        config = {"type": "structured", "name": "s", "schema": path}
        r = default.post(VALIDATE_PATH, json={"grader": config})
        body = refused(r, "schema", "/grader/schema")
        bodies.append(json.dumps(body).replace(path, "<path>"))
        r = default.post(RUN_PATH, json={"grader": multi(s=config), "model_sample": "{}", "item": {"reference": {}}})
        refused(r, "schema", "/grader/graders/s/schema")
    assert len(set(bodies)) == 1, bodies  # the same answer whether the file exists, parses or not
    still_serving(default)


def test_the_safe_types_still_work_by_default(default: httpx.Client) -> None:
    similarity = {"type": "text_similarity", "name": "t", "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}",
                  "evaluation_metric": "fuzzy_match"}
    structured = {"type": "structured", "name": "cv", "schema": json.loads(GRADER.read_text())["schema"]}
    config = multi(a=STRING_CHECK, b=similarity, c={**structured, "reference": "{{ item.cv }}"})
    r = default.post(RUN_PATH, json={"grader": config, "model_sample": ROWS[0]["output"],
                                     "item": {"answer": ROWS[0]["output"], "cv": ROWS[0]["reference"]}})
    assert r.status_code == 200, r.text
    assert r.json()["sub_rewards"]["a"] == 1.0 and r.json()["sub_rewards"]["b"] == 1.0
    assert default.post(VALIDATE_PATH, json={"grader": structured}).status_code == 200


def test_a_request_cannot_name_an_embedding_model(default: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config = {"type": "text_similarity", "name": "t", "input": "{{ sample.output_text }}", "reference": "x",
              "evaluation_metric": "cosine", "embedding_model": str(tmp_path)}
    error(default.post(VALIDATE_PATH, json={"grader": config}), 400, "unknown_key", "/grader/embedding_model")


# --------------------------------------------------------------------------- the operator's opt-in


def test_allowed_python_runs_and_a_local_model_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # looks like a model directory
    app = create_app(GRADER, allow_graders=["python", "score_model"])
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        r = c.post(RUN_PATH, json={"grader": python(CONSTANT.format(value=0.25)), "model_sample": "x"})
        assert r.status_code == 200 and r.json()["reward"] == 0.25, r.text
        endpoint = {"type": "endpoint", "name": "e", "url": "http://127.0.0.1:9/score"}
        refused(c.post(VALIDATE_PATH, json={"grader": endpoint}), "endpoint", "/grader", "endpoint")
        messages = [{"role": "user", "content": "{{ sample.output_text }}"}]
        for model in (str(tmp_path), "./model", "~/model"):
            score = {"type": "score_model", "name": "s", "model": model, "input": messages}
            body = error(c.post(VALIDATE_PATH, json={"grader": multi(s=score)}), 403, "local_model_refused", "/grader/graders/s/model")
            assert "config.json" not in body["message"]


def test_a_request_borne_model_name_never_looks_at_the_servers_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even allowed, a model grader's ``model`` is a served model's name: a directory of that name is not looked at."""
    (tmp_path / "relmodel").mkdir()
    (tmp_path / "relmodel" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    for env in ("RFTKIT_MODEL_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(env, raising=False)
    messages = [{"role": "user", "content": "{{ sample.output_text }}"}]
    with serving(create_app(GRADER, allow_graders=["score_model"])) as url, httpx.Client(base_url=url, timeout=30) as c:
        bodies = []
        for name in ("relmodel", "nomodel"):
            score = {"type": "score_model", "name": "s", "model": name, "input": messages}
            body = error(c.post(VALIDATE_PATH, json={"grader": score}), 400, "model_not_found", "/grader/model")
            bodies.append(json.dumps(body).replace(name, "<name>"))
        assert bodies[0] == bodies[1], bodies  # the same answer whether the directory exists or not


def test_allow_graders_checks_its_names() -> None:
    with pytest.raises(UserError, match="allow_graders"):
        create_app(GRADER, allow_graders=["pyhton"])
    assert create_app(GRADER, allow_graders=["all"]).state.rftkit.allowed == {"python", "score_model", "label_model", "endpoint"}


def children() -> set[int]:
    """This process's direct children (the python graders' supervisors, for a server run in this process)."""
    me, found = str(os.getpid()), set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.add(int(pid))
    return found


def test_request_borne_python_graders_share_a_bounded_pool() -> None:
    app = create_app(GRADER, allow_graders=["python"], max_python_graders=2)
    before = children()
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        for i in range(6):  # six distinct configs: each one's worker would stay alive
            r = c.post(RUN_PATH, json={"grader": python(CONSTANT.format(value=i / 10)), "model_sample": "x"})
            assert r.json()["reward"] == i / 10, r.text
            if i == 0:
                per_grader = len(children() - before)
                assert per_grader >= 1
            assert len(children() - before) <= 2 * per_grader
        assert app.state.rftkit.cache.live_python() <= 2
        # a config used again is rebuilt (or still cached) and answers the same
        assert c.post(RUN_PATH, json={"grader": python(CONSTANT.format(value=0.0)), "model_sample": "x"}).json()["reward"] == 0.0
    assert not children() - before, "the server's python workers outlived it"


# --------------------------------------------------------------------------- the command


def invoke(args: list[str], env: dict[str, str | None] | None = None) -> Any:
    from graders._cli import app, load_plugins

    load_plugins(app)
    return CliRunner().invoke(app, ["serve", "--grader", str(GRADER), *args], env={"RFTKIT_SERVE_TOKEN": None, **(env or {})})


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """uvicorn.run replaced by a recorder: the command's checks run, no server starts."""
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def test_off_loopback_without_a_token_refuses_to_start(started: list[tuple[Any, dict[str, Any]]], tmp_path: Path) -> None:
    result = invoke(["--host", "0.0.0.0"])
    assert result.exit_code == 2 and started == []
    assert "--insecure-no-token" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert invoke(["--host", "0.0.0.0", "--insecure-no-token"]).exit_code == 0 and len(started) == 1
    assert invoke(["--host", "::1"]).exit_code == 0 and invoke(["--host", "127.0.0.2"]).exit_code == 0
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    assert invoke(["--host", "0.0.0.0", "--token-file", str(token)]).exit_code == 0
    assert started[-1][0].server.token == b"from-a-file"
    assert invoke(["--host", "0.0.0.0"], env={"RFTKIT_SERVE_TOKEN": "from-env"}).exit_code == 0
    assert started[-1][0].server.token == b"from-env"
    missing = invoke(["--token-file", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "token" in missing.output
    token.write_text("\n")
    assert invoke(["--token-file", str(token)]).exit_code == 2
    assert invoke(["--allow-graders", "python,sql"]).exit_code == 2


# --------------------------------------------------------------------------- no 500 for bad model output

NASTY = [
    "Par\ud83d",  # a lone surrogate (sent as the JSON escape \ud83d)
    '{"university": "Par\\ud83d", "city": "\\udc00"}',  # a lone surrogate inside the model's JSON
    '{"university": 123456789012345678901234567890, "city": -99999999999999999999999, "state": 1e999}',
    '{"university": NaN, "city": Infinity, "state": -Infinity}',
    "[" * 5000 + "]" * 5000,
    '{"university": ' + '{"a": ' * 2000 + "1" + "}" * 2000 + "}",
    "{" * (1 << 20),
    "\x00\ufeff\u202e" * 100,
]


def test_no_500_for_any_malformed_model_output() -> None:
    similarity = {"type": "text_similarity", "name": "t", "input": "{{ sample.output_text }}", "reference": "x",
                  "evaluation_metric": "fuzzy_match"}
    by_field = {"type": "string_check", "name": "s", "input": "{{ sample.output_json.university }}", "reference": "x",
                "operation": "eq"}
    reference = ROWS[0]["reference"]
    with serving(create_app(GRADER, max_body_bytes=4 << 20)) as url, httpx.Client(base_url=url, timeout=60) as c:
        for output in NASTY:
            requests: list[tuple[str, Any]] = [
                ("/grade", {"responses": [output], "references": [reference]}),
                ("/score", {"sample": output, "item": {"reference": reference}}),
                ("/get_reward", {"query": [output], "labels": [reference]}),
                *((RUN_PATH, {"grader": g, "model_sample": output}) for g in (STRING_CHECK, similarity, by_field)),
            ]
            for path, body in requests:
                raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as its escape
                r = c.post(path, content=raw, headers={"Content-Type": "application/json"})
                assert r.status_code == 200, (path, output[:40], r.text[:300])
                r.json()  # the answer is JSON a client can read
        # a request whose own values orjson cannot hold: a reference with a huge integer, a deep one
        big = {"responses": ['{"n": 1}'], "references": [{"n": 2**70}]}
        assert c.post("/grade", content=json.dumps(big).encode()).status_code == 200
        deep: Any = "x"
        for _ in range(300):
            deep = {"a": deep}
        r = c.post("/grade", content=json.dumps({"responses": ["{}"], "references": [deep]}).encode())
        assert r.status_code == 200, r.text[:300]
        # not JSON at all: 400, never 500
        for raw in (b'{"sample": NaN}', b'{"sample": "x", "item": {"n": ' + b"9" * 5000 + b"}}", b"[" * 100_000):
            error(c.post("/score", content=raw), 400, "malformed_json")
        still_serving(c)


def test_answers_hold_what_orjson_cannot_write() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    value = {"s": "Par\ud83d", "n": 2**70, "f": float("nan"), "deep": deep, ("k\udc00"): 1}
    decoded = json.loads(_dumps(value))  # valid JSON, valid UTF-8
    assert decoded["s"] == "Par\ufffd" and decoded["n"] == 2**70 and decoded["f"] is None and decoded["k\ufffd"] == 1
    inner = decoded["deep"]
    for _ in range(198):  # decoded['deep'] is at depth 1 of the answer
        inner = inner[0]
    assert isinstance(inner, list) and isinstance(inner[0], str) and "nested" in inner[0]


def test_a_config_too_deep_or_too_long_is_a_400_with_a_pointer(default: httpx.Client) -> None:
    deep: Any = {"x": 1}
    for _ in range(300):  # deeper than orjson writes (the cache key) and than a config may nest
        deep = {"a": deep}
    configs = [
        ({"type": "structured", "name": "s", "schema": {"type": "object", "properties": {"a": deep}}}, "/grader/schema/properties/a"),
        ({**STRING_CHECK, "extra": deep}, "/grader/extra"),
        ({"type": "multi", "name": "m", "graders": {"a": STRING_CHECK}, "calculate_output": " + ".join(["a"] * 1000)},
         "/grader/calculate_output"),
    ]
    for config, pointer in configs:
        for path, body in ((VALIDATE_PATH, {"grader": config}), (RUN_PATH, {"grader": config, "model_sample": "x"})):
            r = default.post(path, content=json.dumps(body).encode())
            assert r.status_code == 400, r.text[:300]
            assert r.json()["error"]["pointer"].startswith(pointer), r.text[:300]
    still_serving(default)


@pytest.mark.filterwarnings("default::DeprecationWarning")  # as outside the test run: jsonschema only warns, then fetches
def test_an_inline_schema_cannot_reference_a_server_file(default: httpx.Client, tmp_path: Path) -> None:
    target = tmp_path / "string.json"
    target.write_text('{"type": "string"}')
    bodies = []
    for uri in (target.as_uri(), (tmp_path / "missing.json").as_uri()):
        config = {"type": "structured", "name": "s", "schema": {"type": "object", "properties": {"a": {"$ref": uri}}}}
        r = default.post(VALIDATE_PATH, json={"grader": config})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["pointer"] == "/grader/schema/properties/a/$ref"
        bodies.append(r.text.replace(uri, "<uri>"))
    assert len(set(bodies)) == 1, bodies  # the same answer whether the file exists or not
    still_serving(default)
