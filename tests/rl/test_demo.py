"""The demo: its data generator, its tokenizer, and one smoke run of the whole pipeline (``--quick``) through the command.

The full run (minutes) is not a test; docs/rl.md records its measured figures.
"""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from graders import StructuredGrader, from_config
from rl._demo import QUICK, build_model, build_tokenizer, register
from rl._demo_data import ANSWER_SKELETON, LANGUAGES, demo_splits, write_splits

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def grader() -> StructuredGrader:
    g = from_config(json.loads((ROOT / "graders" / "data" / "resume_grader.json").read_text(encoding="utf-8")))
    assert isinstance(g, StructuredGrader)
    return g


@pytest.fixture(scope="module")
def data() -> Any:
    return demo_splits(seed=3, sft=300, train=32, heldout=64, legacy_share=0.5)


# --------------------------------------------------------------------------- data


def test_splits_are_deterministic_disjoint_and_sized(data: Any) -> None:
    assert demo_splits(seed=3, sft=300, train=32, heldout=64, legacy_share=0.5) == data
    assert demo_splits(seed=4, sft=300, train=32, heldout=64, legacy_share=0.5) != data
    prompts = [{r["prompt"] for r in split} for split in (data.sft, data.train, data.heldout)]
    assert [len(p) for p in prompts] == [300, 32, 64]  # distinct within each split
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert {r["style"] for r in data.train + data.heldout} == {"current"}
    assert 0.35 < sum(r["style"] == "legacy" for r in data.sft) / len(data.sft) < 0.65


def test_references_are_what_the_grader_expects_and_current_labels_score_one(data: Any, grader: StructuredGrader) -> None:
    rows = data.sft + data.train + data.heldout
    for row in rows:
        ref = row["reference"]
        assert set(ref) == {"university", "programming_languages", "city", "state"}
        assert all(lang in LANGUAGES and lang == lang.lower() for lang in ref["programming_languages"])
        assert ref["university"] in row["prompt"] and f"{ref['city']}, {ref['state']}" in row["prompt"]
    assert all(g.score == 1.0 for g in grader.grade_batch([json.dumps(r["reference"]) for r in rows], [r["reference"] for r in rows]))
    current = [r for r in rows if r["style"] == "current"]
    assert all(g.score == 1.0 for g in grader.grade_batch([r["completion"] for r in current], [r["reference"] for r in current]))
    legacy = [r for r in rows if r["style"] == "legacy"]
    for g in grader.grade_batch([r["completion"] for r in legacy], [r["reference"] for r in legacy]):
        assert g.sub_scores == {"university": 1.0, "programming_languages": 1.0, "city": 0.0, "state": 0.0}
    assert any(r["completion"].count("C++") for r in rows) and any(r["completion"].count("C#") for r in rows)


def test_write_splits_writes_one_row_per_line(data: Any, tmp_path: Path) -> None:
    paths = write_splits(data, tmp_path)
    assert [p.name for p in paths] == ["sft.jsonl", "train.jsonl", "heldout.jsonl"]
    assert [json.loads(line) for line in paths[1].read_text(encoding="utf-8").splitlines()] == data.train


# --------------------------------------------------------------------------- tokenizer and model


def test_tokenizer_round_trips_pads_left_and_keeps_values_whole(data: Any) -> None:
    tok = build_tokenizer((r["prompt"] + r["completion"] for r in data.sft), added_tokens=ANSWER_SKELETON)
    assert tok.pad_token_id is not None and tok.eos_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    for row in data.heldout[:20]:  # text it was not trained on
        for text in (row["prompt"], row["completion"], row["prompt"] + row["completion"]):
            assert tok.decode(tok(text)["input_ids"]) == text
    answer = tok.convert_ids_to_tokens(tok(data.sft[0]["completion"])["input_ids"])
    assert answer[0] == ANSWER_SKELETON[0] and answer[-1] == ANSWER_SKELETON[-1]  # each skeleton piece is one token
    prompt = tok.convert_ids_to_tokens(tok("Lives in Houston, Texas. Writes C++ and C#")["input_ids"])
    in_answer = tok.convert_ids_to_tokens(tok('"], "city": "Houston", "state": "Texas"}')["input_ids"])
    assert {"Houston", "Texas"} <= set(prompt) & set(in_answer)  # a value is one and the same token in both
    assert {"C++", "C#"} <= set(prompt)
    batch = tok(["a", "a longer prompt"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id and batch["attention_mask"][0][0] == 0


def test_build_model_is_seeded_and_sized_for_the_tokenizer(data: Any) -> None:
    tok = build_tokenizer(r["prompt"] for r in data.sft[:50])
    a, b = build_model(tok, n_embd=32, n_layer=1, n_head=2, seed=1), build_model(tok, n_embd=32, n_layer=1, n_head=2, seed=1)
    assert a.config.vocab_size == len(tok) and a.config.pad_token_id == tok.pad_token_id != a.config.eos_token_id
    assert all(p.equal(q) for p, q in zip(a.parameters(), b.parameters()))


# --------------------------------------------------------------------------- the command, end to end at a tiny scale


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``rftkit demo --quick`` through the lazy ``rftkit.commands`` proxy, as the ``demo = "rl._demo:register"`` entry point runs it."""
    import graders._cli as cli

    entry = EntryPoint(name="demo", value="rl._demo:register", group=cli.PLUGIN_GROUP)
    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, so typer keeps "demo" as a named subcommand
        pass

    out = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "entry_points", lambda group: [entry] if group == cli.PLUGIN_GROUP else [])
        cli.load_plugins(app)
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return out, result.output


def test_register_adds_a_demo_command_with_its_options() -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for option in ("--output", "--seed", "--quick", "--threads"):
        assert option in result.output


def test_quick_demo_prints_the_grading_breakdown_then_the_before_after_table(quick_run: tuple[Path, str]) -> None:
    _, output = quick_run
    assert output.index("Seed example") < output.index("held-out reward, greedy")
    # The seed example's breakdown (issue 2): programming_languages P = R = F1 = 2/3, c++ missed, rust extra.
    assert "0.6667" in output and '["c++"]' in output and '["rust"]' in output
    for name in ("overall", "university", "programming_languages", "city", "state", "KL to base"):
        assert name in output


def test_quick_demo_writes_summary_plots_data_and_a_loadable_model(quick_run: tuple[Path, str]) -> None:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    out, _ = quick_run
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in ("heldout_reward_before", "heldout_reward_after"):
        assert set(summary[key]) == {"overall", "university", "programming_languages", "city", "state"}
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in summary[key].values())
    assert isinstance(summary["kl_to_base"], float) and summary["kl_to_base"] >= 0.0
    assert isinstance(summary["wall_clock_s"], float) and isinstance(summary["cpu_s"], float)
    assert summary["heldout_prompts"] == QUICK.heldout_prompts and summary["train_prompts"] == QUICK.train_prompts
    assert summary["settings"]["ppo"]["advantage"] == QUICK.ppo.advantage
    for name in ("reward.png", "kl.png", "entropy.png"):
        assert (out / "plots" / name).read_bytes().startswith(PNG)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [m["step"] for m in metrics] == list(range(QUICK.ppo_steps + 1))  # step 0: the held-out reward before RFT
    assert metrics[0]["eval/reward/mean"] == summary["heldout_reward_before"]["overall"] and "eval/reward/mean" in metrics[-1]
    assert {p.name for p in (out / "data").iterdir()} == {"sft.jsonl", "train.jsonl", "heldout.jsonl"}
    model = GPT2LMHeadModel.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.n_embd == QUICK.n_embd and tok.pad_token_id != tok.eos_token_id
    assert tok.decode(tok("Resume: x")["input_ids"]) == "Resume: x"
