"""score_model and label_model against a fake chat-completions server on 127.0.0.1 and a tiny local GPT-2 built in code."""

from __future__ import annotations

import json
import pickle
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_http import HANG, FakeServer, Respond

from graders import GraderConfigError, from_config, run_grader, validate_grader
from graders.openai._model_grader import LabelModelGrader, ScoreModelGrader
from graders.openai._model_io import BASE_URL_ENV


class FakeChatServer(FakeServer):
    """The fake service as an OpenAI-compatible server: ``base_url`` ends in ``/v1``."""

    def __init__(self, respond: Respond) -> None:
        super().__init__(respond)
        self.base_url = f"{self.root}/v1"


def completion(content: str | None, finish_reason: str = "stop", refusal: str | None = None) -> dict[str, Any]:
    """A chat-completions response body."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "judge",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def replies(*contents: str) -> Respond:
    """Answer the n-th request with the n-th content (the last one repeats)."""
    return lambda n, request: (200, completion(contents[min(n, len(contents) - 1)]))


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], FakeChatServer]]:
    started: list[FakeChatServer] = []

    def start(respond: Respond) -> FakeChatServer:
        started.append(FakeChatServer(respond))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(autouse=True)
def no_ambient_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no base URL or key from the machine they run on."""
    for env in (BASE_URL_ENV, "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(env, raising=False)


INPUT = [
    {"role": "developer", "content": "Score from 0 to 1. Answer {\"steps\": [...], \"result\": <number>}."},
    {"role": "user", "content": [{"type": "input_text", "text": "Reference: {{ item.answer }}"},
                                 "Answer: {{ sample.output_text }}"]},
]


def score_config(**extra: Any) -> dict[str, Any]:
    return {"type": "score_model", "name": "judge", "model": "judge-7b", "input": INPUT, **extra}


def label_config(**extra: Any) -> dict[str, Any]:
    return {"type": "label_model", "name": "verdict", "model": "judge-7b", "input": INPUT,
            "labels": ["correct", "incorrect"], "passing_labels": ["correct"], **extra}


def score_grader(server: FakeChatServer, **extra: Any) -> ScoreModelGrader:
    options = {k: extra.pop(k) for k in ("timeout", "max_retries", "backoff", "api_key", "structured_output") if k in extra}
    return ScoreModelGrader.from_config(score_config(**extra), base_url=server.base_url, **options)


# -- score_model over HTTP -----------------------------------------------------------------


def test_sends_the_rendered_messages_and_reads_the_result(serve: Any) -> None:
    server = serve(replies('{"steps": [{"description": "compare", "conclusion": "close"}], "result": 0.7}'))
    g = score_grader(server, sampling_params={"temperature": 0, "seed": 7, "max_completions_tokens": 64},
                     api_key="sk-test")
    grade = g.grade("Paris", {"answer": "Paris, France"})
    assert grade.score == 0.7 and grade.ok
    assert grade.reason == f"0.7 from model 'judge-7b' at {server.base_url}/chat/completions (result 0.7)"
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "judge-7b"
    assert body["messages"] == [{"role": "system", "content": INPUT[0]["content"]},  # developer is sent as system
                                {"role": "user", "content": "Reference: Paris, France\nAnswer: Paris"}]
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.0, 7, 64)
    schema = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema" and schema["strict"] is True
    assert schema["schema"]["properties"]["result"] == {"type": "number"}


def test_a_lone_surrogate_or_a_huge_integer_in_the_output_is_graded_as_data(serve: Any) -> None:
    server = serve(replies('{"steps": [], "result": 123456789012345678901234567890}', '{"result": 1e400}'))
    g = score_grader(server)
    huge = g.grade('{"a": "Par\\ud83d", "n": 123456789012345678901234567890}', {"answer": "Paris\ud800"})
    assert (huge.score, huge.ok) == (1.0, True)  # a result over 64 bits is a number: clamped to the range
    sent = server.requests[0]["body"]["messages"][1]["content"]
    assert sent == 'Reference: Paris\ufffd\nAnswer: {"a": "Par\\ud83d", "n": 123456789012345678901234567890}'
    assert g.grade("Par\ud83d", {"answer": "x"}).score == 0.0  # 1e400 is no finite result: flagged
    assert server.requests[1]["body"]["messages"][1]["content"].endswith("Answer: Par\ufffd")
    label = LabelModelGrader.from_config(label_config(), base_url=serve(replies('{"result": "correct"}')).base_url)
    assert label.grade("Par\ud83d", {"answer": "x\udfff"}).score == 1.0


def test_an_output_over_the_bound_is_asked_about_cut_and_flagged(serve: Any) -> None:
    from graders import structured as _parsing

    server = serve(replies('{"result": 0.5}', '{"result": "correct"}'))
    _parsing.set_max_output_chars(100)
    try:
        scored = score_grader(server).grade("z" * 300, {"answer": "a"})
        labelled = LabelModelGrader.from_config(label_config(), base_url=server.base_url).grade("z" * 300, {"answer": "a"})
    finally:
        _parsing.set_max_output_chars(None)
    assert (scored.score, scored.errors["truncated_output_error"]) == (0.5, True)
    assert (labelled.score, labelled.errors["truncated_output_error"]) == (1.0, True)
    assert server.requests[0]["body"]["messages"][1]["content"] == "Reference: a\nAnswer: " + "z" * 100


def test_the_key_comes_from_openai_api_key_and_structured_output_can_be_off(serve: Any,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    server = serve(replies("0.5"))
    assert score_grader(server, structured_output=False).grade("x", {"answer": "y"}).score == 0.5
    body, headers = server.requests[0]["body"], server.requests[0]["headers"]
    assert headers["Authorization"] == "Bearer sk-env" and "response_format" not in body and "max_tokens" not in body


def test_base_url_comes_from_the_keyword_then_rftkit_then_openai_env(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(replies("1"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # would refuse connections
    monkeypatch.setenv(BASE_URL_ENV, server.base_url)
    g = from_config(score_config())
    assert isinstance(g, ScoreModelGrader) and g.grade("x", {"answer": "y"}).score == 1.0
    monkeypatch.delenv(BASE_URL_ENV)
    assert "127.0.0.1:9" in ScoreModelGrader.from_config(score_config()).backend.describe()
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(GraderConfigError) as err:
        from_config(score_config())
    assert (err.value.code, err.value.pointer) == ("model_not_found", "/model")
    assert BASE_URL_ENV in (err.value.hint or "")


def test_a_base_url_that_is_not_http_is_a_config_error_at_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "localhost:8000")
    with pytest.raises(GraderConfigError) as err:
        from_config(score_config())
    assert err.value.pointer == "/model" and BASE_URL_ENV in err.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ('{"steps": [], "result": 0.25}', 0.25),
    ('I compared them.\n```json\n{"steps": [], "result": 1}\n```', 1.0),
    ('<think>{"result": 0.1} hmm, no</think>{"result": 0.9}', 0.9),
    (" 0.6\n", 0.6),
])
def test_reads_the_score_from_json_fences_prose_or_a_bare_number(serve: Any, text: str, expected: float) -> None:
    assert score_grader(serve(replies(text))).grade("x", {"answer": "y"}).score == pytest.approx(expected)


class TestClampingConformance:
    """OpenAI: "The output of the grader will be truncated to the given `range`, and default to 0 for all
    non-numeric outputs"; ``result`` is "the reward value for the query".
    https://platform.openai.com/docs/guides/graders#score-model-graders
    (now https://developers.openai.com/api/docs/guides/graders)."""

    @pytest.mark.parametrize(("result", "expected"), [(1.5, 1.0), (-3, 0.0), (0.4, 0.4), (1, 1.0), (0, 0.0)])
    def test_default_range_is_0_to_1(self, serve: Any, result: float, expected: float) -> None:
        grade = score_grader(serve(replies(json.dumps({"steps": [], "result": result})))).grade("x", {"answer": "y"})
        assert grade.score == expected and grade.ok
        assert ("clamped to [0, 1]" in grade.reason) == (result != expected)

    @pytest.mark.parametrize(("result", "expected"), [(7, 7.0), (12, 10.0), (-1, 0.0)])
    def test_a_wider_range_gives_the_raw_clamped_value_as_reward(self, serve: Any, result: float, expected: float) -> None:
        server = serve(replies(json.dumps({"steps": [], "result": result})))
        grade = score_grader(server, range=[0, 10], pass_threshold=6).grade("x", {"answer": "y"})
        assert grade.score == expected and grade.ok

    def test_a_negative_range_keeps_negative_rewards(self, serve: Any) -> None:
        grade = score_grader(serve(replies('{"steps": [], "result": -1.0}')), range=[-1, 1]).grade("x", {"answer": "y"})
        assert grade.score == -1.0 and grade.ok

    @pytest.mark.parametrize("text", ["It is quite good.", '{"steps": [], "result": "high"}', '{"steps": []}',
                                      '{"result": NaN}', "[0.5]", ""])
    def test_non_numeric_output_scores_0_with_a_parse_error(self, serve: Any, text: str) -> None:
        grade = score_grader(serve(replies(text)), range=[1, 10]).grade("x", {"answer": "y"})
        assert grade.score == 0.0 and grade.errors["model_grader_parse_error"]  # 0, even below range
        assert grade.details["judge"].prediction == text


def test_pass_threshold_marks_the_reason(serve: Any) -> None:
    server = serve(replies('{"steps": [], "result": 7}', '{"steps": [], "result": 5}'))
    g = score_grader(server, range=[0, 10], pass_threshold=6)
    assert g.grade("x", {"answer": "y"}).reason.endswith(">= 6: passes")
    assert g.grade("x", {"answer": "y"}).reason.endswith("< 6: fails")


def test_a_reply_cut_at_the_token_limit_is_a_parse_error_that_says_so(serve: Any) -> None:
    server = serve(lambda n, r: (200, completion('{"steps": [{"description": "a', finish_reason="length")))
    grade = score_grader(server).grade("x", {"answer": "y"})
    assert grade.errors["model_grader_parse_error"] and "cut" in grade.reason


@pytest.mark.parametrize("reply", [completion(None, refusal="I can't help with that."),
                                   completion("", finish_reason="content_filter")])
def test_a_refusal_is_flagged(serve: Any, reply: dict[str, Any]) -> None:
    grade = score_grader(serve(lambda n, r: (200, reply))).grade("x", {"answer": "y"})
    assert grade.score == 0.0 and grade.errors["model_grader_refusal_error"] and not grade.errors["model_grader_parse_error"]
    assert "refused" in grade.reason


def test_a_500_is_retried_then_answers(serve: Any) -> None:
    server = serve(lambda n, r: (500, "busy") if n == 0 else (200, completion('{"steps": [], "result": 0.3}')))
    assert score_grader(server, max_retries=2, backoff=0.0).grade("x", {"answer": "y"}).score == 0.3
    assert len(server.requests) == 2


def test_persistent_server_errors_are_flagged_with_details(serve: Any) -> None:
    server = serve(lambda n, r: (500, "CUDA out of memory"))
    grade = score_grader(server, max_retries=1, backoff=0.0).grade("x", {"answer": "y"})
    assert grade.score == 0.0 and grade.errors["model_grader_server_error"]
    assert "HTTP 500" in grade.reason and "CUDA out of memory" in grade.reason and len(server.requests) == 2


def test_a_400_is_not_retried_and_suggests_turning_structured_output_off(serve: Any) -> None:
    server = serve(lambda n, r: (400, "unknown field response_format"))
    grade = score_grader(server, max_retries=3, backoff=0.0).grade("x", {"answer": "y"})
    assert grade.errors["model_grader_server_error"] and "structured_output=False" in grade.reason
    assert len(server.requests) == 1


@pytest.mark.parametrize("body", [{"error": "bad"}, {"choices": []}, "not json"])
def test_a_malformed_reply_is_a_server_error(serve: Any, body: Any) -> None:
    grade = score_grader(serve(lambda n, r: (200, body))).grade("x", {"answer": "y"})
    assert grade.errors["model_grader_server_error"] and not grade.errors["model_grader_parse_error"]


def test_a_hung_server_is_cut_by_the_timeout(serve: Any) -> None:
    server = serve(lambda n, r: (200, HANG))
    start = time.perf_counter()
    grade = score_grader(server, timeout=0.25, max_retries=0).grade("x", {"answer": "y"})
    assert grade.errors["model_grader_server_error"] and "no answer within 0.25 s" in grade.reason
    assert time.perf_counter() - start < 8  # generous: proves the hang was cut (the server would hold it 10 s)


def test_a_missing_template_variable_scores_0_without_asking(serve: Any) -> None:
    server = serve(replies("1"))
    grade = score_grader(server).grade("x", {"reference": "y"})
    assert grade.score == 0.0 and grade.errors["invalid_variable_error"]
    assert "item.answer" in grade.reason and not server.requests


# -- label_model ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "score"), [('{"steps": [], "result": "correct"}', 1.0),
                                             ('{"steps": [], "result": "incorrect"}', 0.0),
                                             ("Correct.", 1.0), ("`incorrect`", 0.0)])
def test_label_model_passes_on_a_passing_label(serve: Any, text: str, score: float) -> None:
    server = serve(replies(text))
    g = LabelModelGrader.from_config(label_config(), base_url=server.base_url)
    grade = g.grade("Paris", {"answer": "Paris"})
    assert grade.score == score and grade.ok
    enum = server.requests[0]["body"]["response_format"]["json_schema"]["schema"]["properties"]["result"]
    assert enum == {"type": "string", "enum": ["correct", "incorrect"]}


@pytest.mark.parametrize("text", ['{"result": "maybe"}', "The answer is not correct", '{"result": 1}'])
def test_label_model_flags_a_reply_without_a_known_label(serve: Any, text: str) -> None:
    g = LabelModelGrader.from_config(label_config(), base_url=serve(replies(text)).base_url)
    grade = g.grade("Paris", {"answer": "Paris"})
    assert grade.score == 0.0 and grade.errors["model_grader_parse_error"]


# -- config ----------------------------------------------------------------------------------


def _set(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``config`` with the value at ``path`` (``/``-separated) replaced, or removed when value is DROP."""
    out = json.loads(json.dumps(config))
    *parents, last = [int(p) if p.isdigit() else p for p in path.strip("/").split("/")]
    node = out
    for p in parents:
        node = node[p]
    if value is DROP:
        del node[last]
    else:
        node[last] = value
    return out


DROP = object()


@pytest.mark.parametrize(("make", "path", "value", "code", "pointer"), [
    (score_config, "/model", DROP, "missing_key", "/model"),
    (score_config, "/foo", 1, "unknown_key", "/foo"),
    (score_config, "/base_url", "http://x", "unknown_key", "/base_url"),  # rftkit settings are never config keys
    (score_config, "/input", [], "wrong_type", "/input"),
    (score_config, "/input/0/role", "bot", "bad_value", "/input/0/role"),
    (score_config, "/input/0/type", "note", "bad_value", "/input/0/type"),
    (score_config, "/input/0/name", "x", "unknown_key", "/input/0/name"),
    (score_config, "/input/0/content", "{{ items.x }}", "bad_template", "/input/0/content"),
    (score_config, "/input/1/content/0/text", "{{ item.x | upper }}", "bad_template", "/input/1/content/0/text"),
    (score_config, "/input/1/content/1", {"type": "input_image", "image_url": "{{ item.url }}"},
     "unsupported_content", "/input/1/content/1/type"),
    (score_config, "/input/1/content/0", {"type": "input_text"}, "missing_key", "/input/1/content/0/text"),
    (score_config, "/input/1/content", 5, "wrong_type", "/input/1/content"),
    (score_config, "/range", [1, 0], "bad_value", "/range"),
    (score_config, "/range", [0], "bad_value", "/range"),
    (score_config, "/pass_threshold", "x", "wrong_type", "/pass_threshold"),
    (score_config, "/sampling_params", {"temp": 1}, "unknown_key", "/sampling_params/temp"),
    (score_config, "/sampling_params", {"temperature": 5}, "bad_value", "/sampling_params/temperature"),
    (score_config, "/sampling_params", {"max_completions_tokens": 0}, "bad_value", "/sampling_params/max_completions_tokens"),
    (score_config, "/sampling_params", {"reasoning_effort": "max"}, "bad_value", "/sampling_params/reasoning_effort"),
    (label_config, "/labels", [], "wrong_type", "/labels"),
    (label_config, "/labels", ["a", "a"], "bad_value", "/labels/1"),
    (label_config, "/passing_labels", ["correct", "right"], "bad_value", "/passing_labels/1"),
    (label_config, "/range", [0, 1], "unknown_key", "/range"),
])
def test_config_errors_carry_their_pointer(make: Callable[..., dict[str, Any]], path: str, value: Any, code: str,
                                           pointer: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        from_config(_set(make(), path, value))
    assert (err.value.code, err.value.pointer) == (code, pointer)


def test_config_errors_inside_multi_point_into_it() -> None:
    config = {"type": "multi", "name": "m", "calculate_output": "judge",
              "graders": {"judge": _set(score_config(), "/input/1/role", "robot")}}
    with pytest.raises(GraderConfigError) as err:
        validate_grader(config)
    assert err.value.pointer == "/graders/judge/input/1/role"


def test_configs_read_back_and_pickle_with_their_settings(serve: Any) -> None:
    server = serve(replies('{"steps": [], "result": 0.8}'))
    full = score_config(range=[0, 10], pass_threshold=5, sampling_params={"temperature": 0.2, "max_tokens": 100})
    g = ScoreModelGrader.from_config(full, base_url=server.base_url, timeout=9.0, api_key="sk-x")
    assert g.config() == {**full, "range": [0.0, 10.0]}
    copy = pickle.loads(pickle.dumps(g))  # what grade_batch sends to its workers
    assert copy.config() == g.config() and copy.grade("x", {"answer": "y"}).score == 0.8
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-x"
    label = LabelModelGrader.from_config(label_config(), base_url=server.base_url)
    assert pickle.loads(pickle.dumps(label)).config() == label_config()
    assert "sk-x" not in repr(g)


def test_run_grader_and_multi_normalise_a_wide_range(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(replies('{"steps": [], "result": 8}'))
    monkeypatch.setenv(BASE_URL_ENV, server.base_url)
    result = run_grader(score_config(range=[0, 10]), "Paris", {"answer": "Paris"})
    assert result["reward"] == 8.0 and result["metadata"]["type"] == "score_model"
    assert not any(result["metadata"]["errors"][f] for f in ("model_grader_server_error", "model_grader_parse_error"))
    multi = from_config({"type": "multi", "name": "m", "calculate_output": "judge / 10",
                         "graders": {"judge": score_config(range=[0, 10])}})
    assert multi.grade("Paris", {"answer": "Paris"}).score == pytest.approx(0.8)


# -- a local transformers model ------------------------------------------------------------------


def tiny_lm(path: Path, answer: str, chat_template: str | None = None) -> Path:
    """A 1-layer GPT-2 that always writes ``answer`` then stops, with a character-level tokenizer: all built here.

    ``answer`` is one token. The blocks are zeroed, so the last hidden state is
    layer-norm(one-hot(previous token)); the LM head maps every token but
    ``answer`` to ``answer``, and ``answer`` to end-of-sequence.
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    vocab[answer] = a = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    tokenizer.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    if chat_template is not None:
        fast.chat_template = chat_template
    size = len(vocab)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=size, n_embd=size, n_layer=1, n_head=1, n_positions=2048,
                                       tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(size))
        model.transformer.ln_f.weight.fill_(1.0)
        # h = layer_norm(one_hot(t)): about sqrt(size) at t, -1/sqrt(size) elsewhere
        model.lm_head.weight[a, a] = -3.0 * size  # logit(answer) ~ +30 unless the last token is answer
        model.lm_head.weight[0, a] = 3.0  # logit(eos) ~ +30 right after answer
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def local_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"score": tiny_lm(root / "score", '{"steps": [], "result": 0.7}'),
            "over": tiny_lm(root / "over", '{"result": 3}'),
            "label": tiny_lm(root / "label", "incorrect"),
            "chat": tiny_lm(root / "chat", "correct", chat_template="{% for m in messages %}<{{ m.role }}>{{ m.content }}\n"
                            "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")}


def test_a_local_model_directory_grades_without_a_server(local_models: dict[str, Path]) -> None:
    g = from_config(score_config(model=str(local_models["score"])))
    assert isinstance(g, ScoreModelGrader) and g.backend.describe().startswith("local model")
    grade = g.grade("Paris", {"answer": "Paris"})
    assert grade.score == 0.7 and grade.ok and grade.details["judge"].prediction == '{"steps": [], "result": 0.7}'
    over = from_config(score_config(model=str(local_models["over"]), sampling_params={"temperature": 1.0, "seed": 3}))
    assert over.grade("Paris", {"answer": "Paris"}).score == 1.0  # clamped; sampling with a seed works too
    label = from_config(label_config(model=str(local_models["label"])))
    assert label.grade("Paris", {"answer": "Paris"}).score == 0.0


def test_the_prompt_is_the_chat_template_or_plain_role_lines(local_models: dict[str, Path]) -> None:
    from graders.openai._model_backends import load_local_model

    messages = [{"role": "system", "content": "Be fair."}, {"role": "user", "content": "Grade: x"}]
    plain, templated = load_local_model(local_models["label"]).prompt(messages)
    assert (plain, templated) == ("system: Be fair.\nuser: Grade: x\nassistant:", False)
    chat, templated = load_local_model(local_models["chat"]).prompt(messages)
    assert (chat, templated) == ("<system>Be fair.\n<user>Grade: x\n<assistant>", True)
    g = from_config(label_config(model=str(local_models["chat"])))
    assert g.grade("Paris", {"answer": "Paris"}).score == 1.0


def test_a_local_model_is_a_directory_with_a_config(tmp_path: Path) -> None:
    for model in (str(tmp_path / "missing"), "./no/such/model", str(tmp_path)):
        with pytest.raises(GraderConfigError) as err:
            from_config(score_config(model=model))
        assert (err.value.code, err.value.pointer) == ("model_not_found", "/model")
    (tmp_path / "config.json").write_text("{}")
    g = from_config(score_config(model=str(tmp_path)))  # builds: the model loads on first grade
    with pytest.raises(GraderConfigError) as err:
        g.grade("x", {"answer": "y"})
    assert (err.value.code, err.value.pointer) == ("model_load_failed", "/model")


def test_building_a_local_model_grader_does_not_import_torch(local_models: dict[str, Path]) -> None:
    code = ("import sys, graders; g = graders.from_config({'type': 'score_model', 'name': 'j', 'model': sys.argv[1], "
            "'input': [{'role': 'user', 'content': 'x'}]}); assert 'torch' not in sys.modules, 'torch imported'")
    run = subprocess.run([sys.executable, "-c", code, str(local_models["score"])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
