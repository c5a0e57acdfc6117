"""``rftkit eval --model DIR``: the local-model source, checked against the demo's own held-out figure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from graders.eval import Request, SamplingParams
from graders.eval._cli import register
from rl._demo import QUICK, build_model, build_tokenizer, run_demo
from rl._demo_data import ANSWER_SKELETON, demo_splits
from rl._eval_model import LocalSampler

ROOT = Path(__file__).resolve().parents[2]


SMALL = replace(QUICK, sft_rows=400, sft_steps=120, sft_batch_size=16, n_embd=64, n_layer=2, n_head=2, heldout_prompts=16,
                ppo=replace(QUICK.ppo, max_new_tokens=24))
"""The demo's pipeline (data, tokenizer, GPT-2, warm start, PPO) at a size that runs in about 20 s and writes answers the
grader scores above 0 (``--quick``'s toy scores 0 everywhere, which would make the comparison empty)."""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's run (``run_demo``, as ``rftkit demo`` and tests/rl/test_demo.py run it): a model directory and its held-out rows."""
    from rich.console import Console

    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out, SMALL, console=Console(quiet=True))
    return out


def cli(*args: str) -> Any:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        pass

    return CliRunner().invoke(app, ["eval", *args], env={"COLUMNS": "200"})


def test_eval_of_the_demo_model_matches_the_demos_after_figure(demo_run: Path, tmp_path: Path) -> None:
    after = json.loads((demo_run / "summary.json").read_text(encoding="utf-8"))["heldout_reward_after"]
    # greedy, the demo's max_new_tokens, and the trainer's evaluation batch (prompts_per_batch * samples_per_prompt)
    result = cli(str(demo_run / "data" / "heldout.jsonl"), "-g", str(ROOT / "graders" / "data" / "resume_grader.json"),
                 "--model", str(demo_run / "model"), "--max-tokens", str(SMALL.ppo.max_new_tokens),
                 "--batch-size", str(SMALL.ppo.batch_size), "--device", "cpu", "-o", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text(encoding="utf-8"))
    got = next(iter(summary["graders"].values()))
    print(f"demo after: {after['overall']:.6f}; rftkit eval: {got['mean']:.6f}")
    assert summary["samples"] == SMALL.heldout_prompts and after["overall"] > 0.05
    assert got["mean"] == pytest.approx(after["overall"], abs=0.005)
    for field in ("university", "programming_languages", "city", "state"):
        assert got["fields"].get(field, {"mean": 0.0})["mean"] == pytest.approx(after[field], abs=0.005)
    records = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["finish_reason"] in ("stop", "length") and r["usage"]["completion_tokens"] <= SMALL.ppo.max_new_tokens
               for r in records)


def test_local_sampler_counts_tokens_cuts_at_stop_and_renders_chats() -> None:
    data = demo_splits(seed=0, sft=40, train=2, heldout=2, legacy_share=0.5)
    tok = build_tokenizer((r["prompt"] + r["completion"] for r in data.sft), added_tokens=ANSWER_SKELETON)
    model = build_model(tok, n_embd=16, n_layer=1, n_head=2, seed=0)
    sampler = LocalSampler.from_model(model, tok, batch_size=2)
    prompts = [r["prompt"] for r in data.heldout]
    requests = [Request(i, 0, p, None) for i, p in enumerate(prompts)]
    out = dict(sampler.sample(requests, SamplingParams(max_tokens=5)))
    for request, completion in out.items():
        assert completion.prompt_tokens == len(tok(request.prompt)["input_ids"])
        assert completion.completion_tokens is not None and 1 <= completion.completion_tokens <= 5
        assert completion.finish_reason in ("stop", "length") and completion.error is None
    again = dict(sampler.sample(requests, SamplingParams(max_tokens=5)))
    assert [c.text for c in again.values()] == [c.text for c in out.values()]  # greedy
    first = next(iter(out.values())).text
    if len(first) > 1:
        cut = dict(sampler.sample(requests[:1], SamplingParams(max_tokens=5, stop=(first[1:],))))
        assert next(iter(cut.values())).text == first[:1] and next(iter(cut.values())).finish_reason == "stop"
    from schemas import UserError

    with pytest.raises(UserError, match="chat template"):
        list(sampler.sample([Request(0, 0, None, [{"role": "user", "content": "hi"}])], SamplingParams(max_tokens=2)))
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    assert sampler.render(Request(0, 0, None, [{"role": "user", "content": "hi"}])) == "user: hi\nassistant:"


def test_a_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "x", "reference": {"city": "A"}}\n', encoding="utf-8")
    result = cli(str(tmp_path / "rows.jsonl"), "-g", str(ROOT / "graders" / "data" / "resume_grader.json"),
                 "--model", str(tmp_path / "no-such-model"), "--device", "cpu", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "bad_model" in result.output and "/model" in result.output


def test_train_eval_report_runs_the_same_evaluation_at_each_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_train_cli import ROWS, invoke, toml_config
    from test_trainer import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "model")
    tiny_model(tok).save_pretrained(tmp_path / "model")
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    (tmp_path / "grader.json").write_text(json.dumps({"type": "structured", "name": "city", "fields": {"city": {"comparator": "normalized"}}}),
                                          encoding="utf-8")
    (tmp_path / "run.toml").write_text(toml_config(steps=2, extra="eval_report = true\n"), encoding="utf-8")
    code, out = invoke(["train", str(tmp_path / "run.toml")], monkeypatch)
    assert code == 0, out
    run = tmp_path / "runs" / "a"
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["step-1", "step-2"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    for m in metrics:  # the report's mean is the trainer's own held-out figure at that checkpoint
        summary = json.loads((run / "eval" / f"step-{m['step']}" / "summary.json").read_text(encoding="utf-8"))
        assert summary["samples"] == 2 and summary["graders"]["city"]["mean"] == pytest.approx(m["eval/reward/mean"], abs=1e-9)
        assert (run / "eval" / f"step-{m['step']}" / "report.html").is_file()
    code, out = invoke(["train", str(tmp_path / "run.toml"), "--overwrite"], monkeypatch)  # eval/ is train's own: replaced
    assert code == 0, out
    (tmp_path / "bad.toml").write_text(toml_config(extra="eval_report = 1\n"), encoding="utf-8")
    code, out = invoke(["train", str(tmp_path / "bad.toml")], monkeypatch)
    assert code == 2 and "/train/eval_report" in out


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.* is deprecated:FutureWarning")  # get_peft_model: peft reads the old name
def test_a_lora_adapter_is_loaded_onto_its_base(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from test_trainer import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    base = tiny_model(tok)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(tiny_model(tok), LoraConfig(r=4, target_modules=["c_attn"], lora_alpha=8, fan_in_fan_out=True))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=2.0)  # B starts at 0 (the adapter a no-op): make it change the outputs
    peft_model.save_pretrained(tmp_path / "adapter")
    requests = [Request(i, 0, p, None) for i, p in enumerate(["capital of france?", "where is the colosseum?", "a city"])]
    params = SamplingParams(max_tokens=6)
    with_adapter = [c.text for _, c in LocalSampler(str(tmp_path / "base"), adapter=tmp_path / "adapter", device="cpu").sample(requests, params)]
    expected = [c.text for _, c in LocalSampler.from_model(peft_model.eval(), tok).sample(requests, params)]
    plain = [c.text for _, c in LocalSampler(str(tmp_path / "base"), device="cpu").sample(requests, params)]
    assert with_adapter == expected and with_adapter != plain
    from schemas import UserError

    with pytest.raises(UserError, match="bad_adapter"):
        LocalSampler(str(tmp_path / "base"), adapter=tmp_path / "no-adapter", device="cpu")
