"""The PPO trainer on a tiny GPT-2 built in code: config checks, log-probs, left padding, one full step.

The tokenizer is character-level over a small alphabet plus whole-answer tokens
(``{"city": "Paris"}`` is one token), so even an untrained model writes a
gradable answer often enough for the rewards of one batch to differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from graders import Grade, StructuredGrader
from rl import PPOConfig, PPOTrainer, generate_completions, sequence_logprobs, token_rewards
from schemas import UserError

ANSWERS = ['{"city": "Paris"}', '{"city": "Rome"}', '{"city": "Lyon"}']
ROWS = [{"prompt": "capital of france?", "reference": {"city": "Paris"}},
        {"prompt": "where is the eiffel tower?", "reference": {"city": "Paris"}},
        {"prompt": "capital of italy?", "reference": {"city": "Rome"}}]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    chars = "abcdefghijklmnopqrstuvwxyz ?"
    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per character
    tok.add_special_tokens(["<pad>", "<eos>"])
    tok.add_tokens(ANSWERS)
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def small_config(**overrides: Any) -> PPOConfig:
    base: dict[str, Any] = dict(learning_rate=1e-2, samples_per_prompt=4, prompts_per_batch=2, max_new_tokens=6, temperature=1.0,
                                ppo_epochs=2, minibatch_size=4, seed=0)
    return PPOConfig(**{**base, **overrides})


# --------------------------------------------------------------------------- PPOConfig


@pytest.mark.parametrize(("overrides", "pointer"), [
    ({"learning_rate": 0.0}, "/learning_rate"),
    ({"samples_per_prompt": 0}, "/samples_per_prompt"),
    ({"max_new_tokens": 2.5}, "/max_new_tokens"),
    ({"temperature": math.nan}, "/temperature"),
    ({"advantage": "ppo2"}, "/advantage"),
    ({"kl_estimator": "k2"}, "/kl_estimator"),
    ({"kl_coef": -0.1}, "/kl_coef"),
    ({"lam": 1.5}, "/lam"),
    ({"advantage": "grpo", "samples_per_prompt": 1}, "/samples_per_prompt"),
    ({"minibatch_size": 64, "samples_per_prompt": 2, "prompts_per_batch": 2}, "/minibatch_size"),
    ({"ratio_skip_threshold": 1.0}, "/ratio_skip_threshold"),
    ({"kl_target": 0.0}, "/kl_target"),
    ({"kl_target": math.inf}, "/kl_target"),
    ({"kl_target": 1.0, "kl_coef": 0.0}, "/kl_coef"),
    ({"kl_horizon": 0}, "/kl_horizon"),
    ({"warmup_steps": -1}, "/warmup_steps"),
    ({"lr_schedule": "step"}, "/lr_schedule"),
    ({"lr_schedule": "linear"}, "/lr_decay_steps"),  # a decay needs its end
    ({"lr_schedule": "cosine", "warmup_steps": 10, "lr_decay_steps": 10}, "/lr_decay_steps"),
    ({"lr_decay_steps": 100}, "/lr_decay_steps"),  # read only by linear and cosine
])
def test_config_rejects_bad_values_with_a_pointer(overrides: dict[str, Any], pointer: str) -> None:
    with pytest.raises(UserError) as info:
        PPOConfig(**overrides)
    assert info.value.code == "bad_config" and info.value.pointer == pointer


def test_config_defaults_are_valid_and_batch_size_is_derived() -> None:
    config = PPOConfig()
    assert config.advantage == "gae" and config.clip == 0.2 and config.gamma == 1.0 and config.lam == 0.95
    assert config.batch_size == config.prompts_per_batch * config.samples_per_prompt


# --------------------------------------------------------------------------- log-probs and padding


def test_sequence_logprobs_equals_a_manual_gather() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 3, 4, 11, 1]])  # the second row is left-padded, ends with EOS
    attention = (ids != 0).long()
    completion_mask = torch.tensor([[1, 1], [1, 1]])
    temperature = 0.7
    with torch.no_grad():
        got = sequence_logprobs(model, ids, attention, completion_mask, temperature)
    for row in range(2):
        real = attention[row].bool()
        with torch.no_grad():
            logits = model(input_ids=ids[row][real][None]).logits[0]  # (L, V): the row alone, unpadded
        logp = torch.log_softmax(logits / temperature, dim=-1)
        n = int(real.sum())
        expected = [logp[n - 3, ids[row, -2]], logp[n - 2, ids[row, -1]]]
        assert got[row].tolist() == pytest.approx([float(e) for e in expected], abs=1e-5)


def test_left_padding_does_not_change_a_prompts_completion() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    short, long = "capital of france?", "where is the eiffel tower? tell me please"
    alone = generate_completions(model, tok, [short], samples_per_prompt=1, max_new_tokens=6, temperature=None)
    batched = generate_completions(model, tok, [short, long], samples_per_prompt=1, max_new_tokens=6, temperature=None)
    steps = alone.completion_mask.shape[1]
    assert batched.completion_ids[0, :steps].tolist() == alone.completion_ids[0].tolist()
    assert batched.texts[0] == alone.texts[0]
    lp_alone = sequence_logprobs(model, alone.input_ids, alone.attention_mask, alone.completion_mask, 1.0)
    lp_batched = sequence_logprobs(model, batched.input_ids, batched.attention_mask, batched.completion_mask, 1.0)
    assert lp_batched[0, :steps].tolist() == pytest.approx(lp_alone[0].tolist(), abs=1e-5)


def test_rollout_groups_samples_and_cuts_the_mask_at_eos() -> None:
    tok = tiny_tokenizer()
    roll = generate_completions(tiny_model(tok), tok, ["abc", "de"], samples_per_prompt=3, max_new_tokens=8, temperature=1.0)
    assert roll.input_ids.shape[0] == 6 and len(roll.texts) == 6
    for row in range(6):
        tokens, mask = roll.completion_ids[row].tolist(), roll.completion_mask[row].tolist()
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)  # a prefix
        assert bool(roll.has_eos[row]) == (tok.eos_token_id in tokens[:n])
        assert tok.eos_token_id not in tokens[:n - 1]  # nothing after the first EOS counts


# --------------------------------------------------------------------------- rewards


def test_no_eos_penalty_lowers_the_reward_of_a_completion_without_eos() -> None:
    scores = torch.tensor([0.8, 0.8])
    mask = torch.ones(2, 4)
    rewards = token_rewards(scores, torch.zeros(2, 4), mask, torch.tensor([True, False]), kl_coef=0.0, no_eos_penalty=0.3)
    assert rewards.sum(dim=1).tolist() == pytest.approx([0.8, 0.5])
    assert rewards[:, :3].abs().sum() == 0  # the score sits on the last real token only


def test_k1_penalty_is_spread_over_real_tokens_only() -> None:
    kl = torch.tensor([[0.5, 0.5, 0.5]])
    rewards = token_rewards(torch.tensor([1.0]), kl, torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([True]), kl_coef=0.5, no_eos_penalty=0.0)
    assert rewards.tolist() == [[-0.25, 0.75, 0.0]]


# --------------------------------------------------------------------------- one step


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("advantage", ["gae", "grpo", "rloo"])
def test_one_step_changes_the_policy_and_not_the_reference(advantage: str) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    trainer = PPOTrainer(model, tok, StructuredGrader(), ROWS, ROWS, small_config(advantage=advantage))
    before, ref_before = snapshot(model), snapshot(trainer.ref_model)
    metrics = trainer.step()
    changed = [k for k, v in snapshot(model).items() if not torch.equal(v, before[k])]
    assert changed, "no policy weight moved"
    assert all(torch.equal(v, ref_before[k]) for k, v in snapshot(trainer.ref_model).items())
    expected = {"reward/mean", "reward/city", "kl/to_init", "loss/policy", "policy/clipfrac", "policy/approx_kl", "policy/entropy",
                "perf/samples_per_s", "rollout/skipped_nan", "update/skipped_ratio"} | ({"loss/value"} if advantage == "gae" else set())
    assert expected <= set(metrics), expected - set(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["kl/to_init"] == pytest.approx(0.0, abs=1e-5)  # the first rollout is sampled by the initial policy
    assert metrics["rollout/skipped_nan"] == 0 and metrics["update/skipped_ratio"] == 0
    assert trainer.step_count == 1
    second = trainer.step()
    assert abs(second["kl/to_init"]) > 0  # the policy has moved away from the initial one


def test_evaluate_grades_greedy_completions_per_field() -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config())
    first, again = trainer.evaluate(), trainer.evaluate()
    assert first == again  # greedy: deterministic
    assert {"eval/reward/mean", "eval/skipped_nan"} <= set(first)
    assert 0.0 <= first["eval/reward/mean"] <= 1.0


class NaNEveryThird:
    """Grades like the structured grader, except every third completion scores NaN."""

    def __init__(self) -> None:
        self.inner = StructuredGrader()

    def grade_batch(self, responses: Sequence[str], references: Sequence[Any]) -> list[Grade]:
        grades = list(self.inner.grade_batch(responses, references))
        return [Grade(math.nan) if i % 3 == 0 else g for i, g in enumerate(grades)]


@pytest.mark.parametrize("advantage", ["gae", "reinforce++"])
def test_nan_rewards_are_skipped_and_counted(advantage: str) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    trainer = PPOTrainer(model, tok, NaNEveryThird(), ROWS, ROWS, small_config(advantage=advantage))
    before = snapshot(model)
    metrics = trainer.step()
    assert metrics["rollout/skipped_nan"] == 3  # rows 0, 3 and 6 of 8
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert any(not torch.equal(v, before[k]) for k, v in snapshot(model).items())  # the other rows still train
    assert all(torch.isfinite(p).all() for p in model.parameters())


class NaNFirstTwo(NaNEveryThird):
    def grade_batch(self, responses: Sequence[str], references: Sequence[Any]) -> list[Grade]:
        grades = list(self.inner.grade_batch(responses, references))
        return [Grade(math.nan) if i < 2 else g for i, g in enumerate(grades)]


def test_a_minibatch_of_only_skipped_rows_takes_no_optimizer_step() -> None:
    tok = tiny_tokenizer()
    config = small_config(advantage="reinforce++", minibatch_size=2, ppo_epochs=1)  # minibatches are half groups
    trainer = PPOTrainer(tiny_model(tok), tok, NaNFirstTwo(), ROWS, ROWS, config)
    steps: list[int] = []
    trainer.optimizer.register_step_pre_hook(lambda *_: steps.append(1))
    metrics = trainer.step()
    assert metrics["rollout/skipped_nan"] == 2
    assert len(steps) == 3  # 4 minibatches of 2 rows; rows 0 and 1 (both NaN) would only move the weights by decay


def test_trainer_rejects_a_tokenizer_whose_pad_is_eos() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    tok.pad_token = tok.eos_token
    with pytest.raises(UserError) as info:
        PPOTrainer(model, tok, StructuredGrader(), ROWS, ROWS, small_config())
    assert info.value.pointer == "/tokenizer/pad_token"


def test_trainer_rejects_rows_without_a_reference() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(UserError) as info:
        PPOTrainer(tiny_model(tok), tok, StructuredGrader(), [{"prompt": "x"}], [], small_config())
    assert info.value.pointer == "/train_rows/0/reference"


def test_minibatches_whose_ratio_explodes_are_skipped_and_counted() -> None:
    tok = tiny_tokenizer()
    # Minibatches of half a group: an update on one half moves the ratio of the other (whole groups of this
    # untrained model barely move each other's ratio).
    config = small_config(advantage="grpo", learning_rate=0.5, ppo_epochs=4, minibatch_size=2, ratio_skip_threshold=1.05,
                          whiten_advantages=False)
    metrics = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, config).step()
    # 4 epochs x 4 minibatches; the first one always runs (the ratio is 1 before any update).
    assert 1 <= metrics["update/skipped_ratio"] < 16, metrics
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_the_learning_rate_follows_warm_up_and_decay_and_is_logged() -> None:
    tok = tiny_tokenizer()
    config = small_config(learning_rate=0.01, warmup_steps=2, lr_schedule="linear", lr_decay_steps=4, ppo_epochs=1)
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, config)
    rates = [trainer.step()["update/lr"] for _ in range(4)]
    assert rates == pytest.approx([0.005, 0.01, 0.01, 0.005])  # warm-up 1/2, 2/2; then decay 2/2, 1/2
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # step 4 = lr_decay_steps: the rate has reached 0
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.step()  # AdamW at rate 0 (weight decay is scaled by the rate too): nothing moves
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_an_adaptive_kl_coefficient_follows_the_controller_and_is_logged() -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS,
                         small_config(kl_coef=0.1, kl_target=1e-3, kl_horizon=16))
    first = trainer.step()
    assert first["kl/coef"] == 0.1 and trainer.kl_coef == pytest.approx(0.1 * (1 - 0.2 * 8 / 16))  # KL 0 < target: -0.2 clipped
    second = trainer.step()
    assert second["kl/coef"] == pytest.approx(0.09)  # the coefficient this step used
    expected = 0.09 * (1 + max(-0.2, min(0.2, second["kl/to_init"] / 1e-3 - 1)) * 8 / 16)
    assert trainer.kl_coef == pytest.approx(expected)
    fixed = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config(kl_coef=0.1))
    fixed.step()
    assert fixed.step()["kl/coef"] == fixed.kl_coef == 0.1
