"""Real architectures (tiny random-init Qwen2 and Llama built in code, saved in bf16): mixed precision, micro-batches,
gradient checkpointing and LoRA through peft, each against the plain path it must equal.

On CPU by default; ``RFTKIT_TEST_DEVICE=cuda`` runs the trainer tests on a GPU (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer import ROWS, tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rl import LoRAConfig, ModelConfig, PPOConfig, PPOTrainer
from rl._checkpoint import write_final
from rl._model import PureLowPrecisionWarning
from schemas import UserError

peft = pytest.importorskip("peft")
DEVICE = torch.device(os.environ.get("RFTKIT_TEST_DEVICE", "cpu"))


@dataclasses.dataclass
class Scored:
    score: float
    sub_scores: dict[str, float]


class LengthGrader:
    """Rewards that differ between samples (the length of the text, folded into [0, 1]), so every update moves weights."""

    def grade_batch(self, responses: list[str], references: list[Any]) -> Sequence[Scored]:
        return [Scored((len(r) % 5) / 4, {}) for r in responses]


def tiny_config(arch: str, vocab: int) -> Any:
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return Qwen2Config(**common, tie_word_embeddings=True) if arch == "qwen2" else LlamaConfig(**common, tie_word_embeddings=False)


def tiny_real_model(arch: str, tokenizer: Any, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer))
    return (Qwen2ForCausalLM(config) if arch == "qwen2" else LlamaForCausalLM(config)).to(DEVICE)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def bf16_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model saved in bfloat16, as most open checkpoints are, with its tokenizer."""
    root = tmp_path_factory.mktemp(f"bf16_{request.param}")
    tok = tiny_tokenizer()
    tiny_real_model(request.param, tok).to(torch.bfloat16).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def config(**overrides: Any) -> PPOConfig:
    base: dict[str, Any] = dict(learning_rate=1e-6, samples_per_prompt=4, prompts_per_batch=2, max_new_tokens=6, ppo_epochs=1,
                                minibatch_size=8, advantage="grpo", kl_coef=0.0, seed=0)
    return PPOConfig(**{**base, **overrides})


def trainer_for(model: Any, tok: Any, cfg: PPOConfig, **kwargs: Any) -> PPOTrainer:
    return PPOTrainer(model, tok, LengthGrader(), ROWS, ROWS[:2], cfg, **kwargs)


def trained_weights(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- 1. mixed precision


def test_a_bf16_checkpoint_moves_by_the_adamw_step_of_a_float32_run(bf16_checkpoint: Path) -> None:
    tok = AutoTokenizer.from_pretrained(bf16_checkpoint)
    bf16 = AutoModelForCausalLM.from_pretrained(bf16_checkpoint).to(DEVICE)
    assert bf16.dtype == torch.bfloat16  # what transformers hands over for a bf16 checkpoint
    before = trained_weights(bf16)
    mixed = trainer_for(bf16, tok, config())  # the defaults: float32 master weights, bf16 compute
    assert mixed.policy.dtype == torch.bfloat16 and mixed.policy.autocast and mixed.shared_prefix
    assert all(p.dtype == torch.float32 for p in mixed.params)
    mixed.step()
    assert all(s["exp_avg_sq"].dtype == torch.float32 for s in mixed.optimizer.state.values())

    fp32 = trainer_for(AutoModelForCausalLM.from_pretrained(bf16_checkpoint, dtype=torch.float32).to(DEVICE), tok, config(),
                       model_config=ModelConfig(dtype="float32"))
    fp32.step()
    mixed_after, fp32_after = trained_weights(mixed.model), trained_weights(fp32.model)
    moved_mixed = torch.cat([(mixed_after[n] - before[n]).abs().flatten() for n in before])
    moved_fp32 = torch.cat([(fp32_after[n] - before[n]).abs().flatten() for n in before])
    # AdamW's first step moves every weight with a gradient by about the learning rate, whatever the gradient's size
    assert (moved_fp32 > 0).float().mean() > 0.5
    assert (moved_mixed > 0).float().mean() >= 0.99 * (moved_fp32 > 0).float().mean()
    both = (moved_mixed > 0) & (moved_fp32 > 0)
    relative = (moved_mixed[both] - moved_fp32[both]).abs() / moved_fp32[both]
    assert (relative < 0.05).float().mean() > 0.98  # all but weights whose gradient is near AdamW's eps (1e-8)
    assert abs(moved_mixed[both].median().item() - 1e-6) < 1e-7

    with pytest.warns(PureLowPrecisionWarning):  # pure bf16 on request: the same step is mostly lost to rounding
        pure = trainer_for(AutoModelForCausalLM.from_pretrained(bf16_checkpoint).to(DEVICE), tok, config(),
                           model_config=ModelConfig(dtype="bfloat16", master_dtype="bfloat16"))
    pure.step()
    pure_after = trained_weights(pure.model)
    moved_pure = torch.cat([(pure_after[n] - before[n]).abs().flatten() for n in before])
    assert (moved_pure > 0).float().mean() < 0.2 * (moved_mixed > 0).float().mean()


def test_float16_compute_scales_the_loss_and_checkpoints_the_scaler(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    trainer = trainer_for(tiny_real_model("llama", tok), tok, config(learning_rate=1e-3), model_config=ModelConfig(dtype="float16"))
    assert trainer.policy.dtype == torch.float16 and trainer.scaler.is_enabled()
    before = trained_weights(trainer.model)
    metrics = trainer.step()
    assert all(p.dtype == torch.float32 for p in trainer.params) and trainer.scaler.get_scale() > 0
    assert any(not torch.equal(before[n], p) for n, p in trained_weights(trainer.model).items())
    assert metrics["update/skipped_ratio"] == 0.0
    assert (trainer.save_checkpoint(tmp_path) / "scaler.pt").is_file()


def test_model_config_rejects_bad_values_with_a_pointer() -> None:
    for kwargs, pointer in [({"dtype": "fp8"}, "/dtype"), ({"master_dtype": "auto"}, "/master_dtype"),
                            ({"dtype": "float32", "master_dtype": "bfloat16"}, "/master_dtype"), ({"threads": 0}, "/threads"),
                            ({"gradient_checkpointing": "yes"}, "/gradient_checkpointing")]:
        with pytest.raises(UserError) as info:
            ModelConfig(**kwargs)
        assert info.value.pointer == pointer
    for kwargs, pointer in [({"r": 0}, "/r"), ({"dropout": 0.1}, "/dropout"), ({"target_modules": ()}, "/target_modules")]:
        with pytest.raises(UserError) as info:
            LoRAConfig(**kwargs)
        assert info.value.pointer == pointer
    with pytest.raises(UserError) as info:
        PPOConfig(minibatch_size=4, micro_batch_size=8)
    assert info.value.pointer == "/micro_batch_size"


# --------------------------------------------------------------------------- 2-3. micro-batches and gradient checkpointing


def gradients_of_one_step(model: Any, tok: Any, cfg: PPOConfig, **kwargs: Any) -> tuple[list[list[torch.Tensor]], dict[str, float]]:
    """The gradients each optimizer step of one trainer step saw (clipping off), and the step's metrics."""
    trainer = trainer_for(model, tok, cfg, **kwargs)
    seen: list[list[torch.Tensor]] = []

    def record(*_: Any) -> None:
        seen.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in trainer.params])

    trainer.optimizer.register_step_pre_hook(record)
    return seen, trainer.step()


@pytest.mark.parametrize("setting", [
    {"micro_batch_size": 2}, {"micro_batch_size": 3},  # 3: micro-batches that cut a group, and a short last one
    {"gradient_checkpointing": True}, {"gradient_checkpointing": True, "micro_batch_size": 4}])
@pytest.mark.parametrize(("advantage", "kl_estimator"), [("grpo", "k3"), ("gae", "k1")])
def test_micro_batches_and_checkpointing_give_the_gradients_of_one_pass(setting: dict[str, Any], advantage: str,
                                                                        kl_estimator: str) -> None:
    tok = tiny_tokenizer()
    cfg = config(learning_rate=1e-3, advantage=advantage, kl_estimator=kl_estimator, kl_coef=0.1, max_grad_norm=1e9, ppo_epochs=2,
                 minibatch_size=8)
    plain, plain_metrics = gradients_of_one_step(tiny_real_model("qwen2", tok), tok, cfg)
    micro = setting.get("micro_batch_size")
    other, other_metrics = gradients_of_one_step(
        tiny_real_model("qwen2", tok), tok, dataclasses.replace(cfg, micro_batch_size=micro),
        model_config=ModelConfig(gradient_checkpointing=setting.get("gradient_checkpointing", False)))
    assert len(plain) == len(other) == 2  # one minibatch per epoch
    for step_plain, step_other in zip(plain, other):
        assert any(g.abs().sum() > 0 for g in step_plain)
        for a, b in zip(step_plain, step_other):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    for key in ("loss/policy", "policy/entropy", "policy/approx_kl"):
        assert other_metrics[key] == pytest.approx(plain_metrics[key], rel=1e-4, abs=1e-7)


def test_checkpointing_recomputes_in_the_backward() -> None:
    """The checkpointing test above could pass with checkpointing silently off: count the decoder layers' forwards."""
    tok = tiny_tokenizer()
    calls = {"n": 0}

    def count(*_: Any) -> None:
        calls["n"] += 1

    def forwards(gradient_checkpointing: bool) -> int:
        model = tiny_real_model("qwen2", tok)
        trainer = trainer_for(model, tok, config(), model_config=ModelConfig(gradient_checkpointing=gradient_checkpointing))
        trainer.shared_prefix_update = False  # both update on whole sequences: only the recompute differs
        trainer.model.model.layers[0].mlp.register_forward_pre_hook(count)  # inside the checkpointed forward
        calls["n"] = 0
        trainer.step()
        return calls["n"]

    assert forwards(True) == forwards(False) + 1  # one minibatch: its forward is run again in the backward


# --------------------------------------------------------------------------- 4. LoRA


def lora_trainer(tok: Any, cfg: PPOConfig | None = None, **kwargs: Any) -> PPOTrainer:
    return trainer_for(tiny_real_model("qwen2", tok), tok, cfg or config(learning_rate=1e-2, kl_coef=0.05),
                       model_config=ModelConfig(dtype="float32"), lora=LoRAConfig(r=4, alpha=8), **kwargs)


def test_lora_trains_only_the_adapters_and_its_reference_is_the_base_with_adapters_off() -> None:
    tok = tiny_tokenizer()
    trainer = lora_trainer(tok)
    assert trainer.ref_model is None  # no copy of the base weights
    assert trainer.shared_prefix  # the shared-prompt KV path works with adapters
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    initial = copy.deepcopy(trainer.model.get_base_model())  # adapters B = 0: the initial policy
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora_before and {n for n, p in trainer.model.named_parameters() if p.requires_grad} == set(lora_before)
    for _ in range(2):
        metrics = trainer.step()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in base_before.items())  # the base is bit-identical
    assert any(not torch.equal(after[n], p) for n, p in lora_before.items())
    assert metrics["kl/to_init"] != 0.0

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]], device=DEVICE)
    with torch.no_grad(), trainer.policy.reference_model() as reference:
        ref_logits = reference(input_ids=ids).logits
    with torch.no_grad():
        torch.testing.assert_close(ref_logits, initial(input_ids=ids).logits)
        assert not torch.allclose(trainer.model(input_ids=ids).logits, ref_logits)  # the adapters are on again after


def test_a_resumed_lora_run_takes_the_same_step_as_the_uninterrupted_one(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    straight = lora_trainer(tok)
    straight.step()
    saved = straight.save_checkpoint(tmp_path)
    assert (saved / "adapter_model.safetensors").is_file() and not (saved / "model.safetensors").exists()
    expected = straight.step()
    resumed = PPOTrainer(tiny_real_model("qwen2", tok), tok, LengthGrader(), ROWS, ROWS[:2], None, resume_from=tmp_path,
                         model_config=ModelConfig(dtype="float32"), lora=LoRAConfig(r=4, alpha=8))
    got = resumed.step()
    assert {k: v for k, v in got.items() if not k.startswith("perf/")} == {k: v for k, v in expected.items() if not k.startswith("perf/")}
    ours, theirs = dict(resumed.model.named_parameters()), dict(straight.model.named_parameters())
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)
    with pytest.raises(UserError) as info:  # a LoRA checkpoint is not resumed as full fine-tuning
        PPOTrainer(tiny_real_model("qwen2", tok), tok, LengthGrader(), ROWS, ROWS[:2], None, resume_from=tmp_path)
    assert info.value.code == "bad_resume"


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.* is deprecated:FutureWarning")  # peft 0.21 reads the old name
def test_lora_checkpoints_and_the_final_export_are_models(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    trainer = lora_trainer(tok)
    trainer.step()
    step_dir = trainer.save_checkpoint(tmp_path / "checkpoints")
    prompt = tok(["capital of france?"], return_tensors="pt").to(DEVICE)

    def greedy(model: Any) -> list[int]:
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        return [int(t) for t in out[0]]

    with torch.no_grad():
        adapted = greedy(trainer.model)
        from_checkpoint = peft.PeftModel.from_pretrained(tiny_real_model("qwen2", tok), step_dir)
        assert greedy(from_checkpoint) == adapted
    write_final(tmp_path, trainer.model, tok, trainer.step_count)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model").to(DEVICE)
    assert not hasattr(merged, "peft_config") and AutoTokenizer.from_pretrained(tmp_path / "model").pad_token == "<pad>"
    onto_base = peft.PeftModel.from_pretrained(tiny_real_model("qwen2", tok), tmp_path / "adapter")
    with torch.no_grad():
        assert greedy(merged) == adapted
        assert greedy(onto_base) == adapted


def test_full_fine_tuning_checkpoints_load_with_from_pretrained(tmp_path: Path, bf16_checkpoint: Path) -> None:
    tok = AutoTokenizer.from_pretrained(bf16_checkpoint)
    trainer = trainer_for(AutoModelForCausalLM.from_pretrained(bf16_checkpoint).to(DEVICE), tok, config(learning_rate=1e-3))
    trainer.step()
    step_dir = trainer.save_checkpoint(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(step_dir, dtype=torch.float32)
    ours = dict(trainer.model.named_parameters())
    for name, p in loaded.named_parameters():
        assert torch.equal(p, ours[name].cpu()), name
    assert AutoTokenizer.from_pretrained(step_dir).eos_token == "<eos>"


# --------------------------------------------------------------------------- rftkit train: [model], [lora], device errors


@pytest.fixture(scope="module")
def qwen_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bf16 tiny Qwen2 with its tokenizer, a 6-row dataset and a structured grader config."""
    import json

    root = tmp_path_factory.mktemp("real_cli")
    tok = tiny_tokenizer()
    tiny_real_model("qwen2", tok).to(torch.bfloat16).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = [{"prompt": r["prompt"], "reference": r["reference"]} for r in ROWS * 2]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "grader.json").write_text(json.dumps({"type": "structured", "fields": {"city": {"comparator": "normalized"}}}),
                                      encoding="utf-8")
    return root


def real_toml(root: Path, model: str = "", lora: str = "", steps: int = 2) -> str:
    return f"""
[model]
name_or_path = "{root / 'model'}"
device = "cpu"
threads = 1
{model}
{lora}
[dataset]
train = "{root / 'data.jsonl'}"

[grader]
config = "{root / 'grader.json'}"

[ppo]
learning_rate = 0.01
samples_per_prompt = 2
prompts_per_batch = 2
max_new_tokens = 4
ppo_epochs = 1
minibatch_size = 4
micro_batch_size = 2
advantage = "grpo"

[train]
steps = {steps}
checkpoint_every = 1
console_every = 1
output = "out"
"""


def test_the_model_and_lora_sections_are_read_and_checked(qwen_assets: Path) -> None:
    from rl._cli import parse_config, read_config_file

    path = qwen_assets / "read.toml"
    path.write_text(real_toml(qwen_assets, 'dtype = "bfloat16"\ngradient_checkpointing = true\nattn_implementation = "sdpa"\n'
                              'revision = "main"', '[lora]\nr = 8\nalpha = 16\ntarget_modules = ["q_proj", "v_proj"]'))
    spec = parse_config(read_config_file(path), qwen_assets)
    assert spec.model_config == ModelConfig(dtype="bfloat16", gradient_checkpointing=True, attn_implementation="sdpa",
                                            revision="main", threads=1)
    assert spec.lora == LoRAConfig(r=8, alpha=16, target_modules=("q_proj", "v_proj")) and spec.ppo.micro_batch_size == 2
    for model, lora, pointer in [('dtype = "fp8"', "", "/model/dtype"), ("", "[lora]\nr = 0", "/lora/r"),
                                 ("", "[lora]\nrank = 8", "/lora/rank"), ('attn_implementation = ""', "", "/model/attn_implementation")]:
        path.write_text(real_toml(qwen_assets, model, lora))
        with pytest.raises(UserError) as info:
            parse_config(read_config_file(path), qwen_assets)
        assert info.value.pointer == pointer


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.* is deprecated:FutureWarning")  # peft 0.21 reads the old name
def test_rftkit_train_with_lora_writes_adapter_checkpoints_an_adapter_and_a_merged_model(
        tmp_path: Path, qwen_assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_train_cli import invoke

    config = tmp_path / "run.toml"
    config.write_text(real_toml(qwen_assets, "gradient_checkpointing = true", "[lora]\nr = 4\nalpha = 8"))
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 0, out
    assert "gradient checkpointing: the update runs whole sequences" in out
    run = tmp_path / "out"
    step = run / "checkpoints" / "step-00000002"
    assert (step / "adapter_model.safetensors").is_file() and not (step / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    assert not hasattr(merged, "peft_config")
    onto_base = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_assets / "model"), run / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():  # the merged model and the adapter on its bf16 base compute the same policy (to bf16 rounding)
        torch.testing.assert_close(merged(input_ids=ids).logits.float(), onto_base(input_ids=ids).logits.float(),
                                   rtol=0.05, atol=0.05)
    code, out = invoke(["train", str(config), "--resume", "--steps", "3"], monkeypatch)
    assert code == 0, out
    assert (run / "checkpoints" / "step-00000003" / "adapter_model.safetensors").is_file()


def test_out_of_memory_is_one_line_naming_the_knobs_exit_2(tmp_path: Path, qwen_assets: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from test_train_cli import invoke

    def oom(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(PPOTrainer, "train", oom)
    config = tmp_path / "run.toml"
    config.write_text(real_toml(qwen_assets))
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 2, out
    [line] = [x for x in out.splitlines() if x.startswith("error:")]
    assert "out of memory" in line and "micro_batch_size" in line and "gradient_checkpointing" in line and "[lora]" in line
    assert "Traceback" not in out
