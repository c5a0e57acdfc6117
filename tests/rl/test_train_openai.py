"""``rftkit train`` with OpenAI-type grader configs and OpenAI RFT ``messages`` rows (the migration path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_train_cli import invoke, toml_config
from test_trainer import tiny_model, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

from rl import read_metrics
from rl._cli import ItemGrader, read_rows, trainer_rows
from schemas import UserError

CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
"""A chat template the tiny tokenizer can encode (lowercase letters, spaces and '?')."""

CITIES = [("capital of france?", "Paris"), ("where is the eiffel tower?", "Paris"), ("capital of italy?", "Rome"),
          ("where is the colosseum?", "Rome"), ("a city on the rhone?", "Lyon"), ("home of the louvre?", "Paris")]
CHAT_ROWS = [{"messages": [{"role": "user", "content": q}], "city": c} for q, c in CITIES]
STRING_CHECK = {"type": "string_check", "name": "city", "input": "{{ sample.output_text }}", "reference": "{{ item.city }}",
                "operation": "eq"}


def chat_tokenizer() -> PreTrainedTokenizerFast:
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    return tok


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_chat_rows_render_through_the_chat_template_and_keep_the_item(tmp_path: Path) -> None:
    rows = read_rows(write_jsonl(tmp_path / "t.jsonl", CHAT_ROWS[:2]), "/dataset/train", needs_reference=False)
    out = trainer_rows(rows, chat_tokenizer(), structured=False)
    assert out[0] == {"prompt": "capital of france? ", "reference": {"city": "Paris"}}
    mixed = trainer_rows([{"prompt": "capital of italy?", "city": "Rome", "id": 7}], chat_tokenizer(), structured=False)
    assert mixed == [{"prompt": "capital of italy?", "reference": {"city": "Rome", "id": 7}}]  # a prompt row's item: its other keys


def test_a_chat_template_that_adds_bos_is_not_doubled() -> None:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ?")}}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.add_special_tokens(["<pad>", "<eos>", "<bos>"])
    raw.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    raw.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    tok.chat_template = "{{ bos_token }}" + CHAT
    (row,) = trainer_rows([{"messages": [{"role": "user", "content": "hi"}]}], tok, structured=False)
    assert row["prompt"] == "hi "
    assert tok(row["prompt"])["input_ids"].count(2) == 1  # the rollout's tokenizer call adds the one BOS


def test_item_grader_grades_against_each_rows_item() -> None:
    from graders import from_config

    grades = ItemGrader(from_config(STRING_CHECK)).grade_batch(["Paris", "Rome", "Lyon"],
                                                              [{"city": "Paris"}, {"city": "Paris"}, {}])
    assert [g.score for g in grades] == [1.0, 0.0, 0.0]
    assert grades[2].errors["invalid_variable_error"]  # a missing item key is a flagged 0, not a crash


@pytest.mark.parametrize(("row", "needs_reference", "says"), [
    ({"messages": [{"role": "assistant", "content": "x"}]}, False, "ending in a user turn"),
    ({"messages": []}, False, "ending in a user turn"),
    ({"messages": [{"role": "user", "content": 3}]}, False, "ending in a user turn"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, False, "not both"),
    ({"city": "Paris"}, False, "needs 'prompt'"),
    ({"messages": [{"role": "user", "content": "a"}], "city": "Paris"}, True, "needs each row's 'reference'"),
])
def test_bad_rows_name_their_line(tmp_path: Path, row: dict[str, Any], needs_reference: bool, says: str) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{**CHAT_ROWS[0], "reference": {"city": "Paris"}}, row])
    with pytest.raises(UserError) as err:
        read_rows(path, "/dataset/train", needs_reference=needs_reference)
    assert "row 2" in err.value.message and says in err.value.message


def test_chat_rows_need_a_chat_template() -> None:
    with pytest.raises(UserError) as err:
        trainer_rows([CHAT_ROWS[0]], tiny_tokenizer(), structured=False)
    assert (err.value.code, err.value.pointer) == ("bad_tokenizer", "/model/name_or_path")


def test_rftkit_train_runs_an_openai_grader_on_chat_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = chat_tokenizer()
    tok.save_pretrained(tmp_path / "model")
    tiny_model(tok).save_pretrained(tmp_path / "model")
    write_jsonl(tmp_path / "data.jsonl", CHAT_ROWS)
    multi = {"type": "multi", "name": "m", "calculate_output": "0.5 * exact + 0.5 * close",
             "graders": {"exact": STRING_CHECK,
                         "close": {"type": "text_similarity", "name": "close", "evaluation_metric": "fuzzy_match",
                                   "input": "{{ sample.output_text }}", "reference": "{{ item.city }}"}}}
    (tmp_path / "grader.json").write_text(json.dumps(multi), encoding="utf-8")
    (tmp_path / "train.toml").write_text(toml_config(steps=2, extra="eval_every = 2"), encoding="utf-8")
    code, output = invoke(["train", str(tmp_path / "train.toml")], monkeypatch)
    assert code == 0, output
    metrics = read_metrics(tmp_path / "runs" / "a" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    last = metrics[-1]
    assert 0.0 <= last["reward/exact"] <= 1.0 and 0.0 <= last["reward/close"] <= 1.0  # the multi's sub-graders, per field
    assert last["reward/mean"] == pytest.approx(0.5 * last["reward/exact"] + 0.5 * last["reward/close"], abs=1e-6)
    assert "eval/reward/mean" in last
