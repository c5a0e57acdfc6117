"""Top-k and top-p sampling (``PPOConfig.top_k``, ``top_p``): the cut, the log-probs of the cut distribution, PPO's ratio.

The cut is checked against ``transformers``' own warpers (the ones ``generate`` applies); the
sampler's log-probs against a forward of the same model; and the trainer's first update on two
tiny models built in code (GPT-2, Llama), shared-prompt path and plain path, against a ratio of 1.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from test_shared_prefix import MODELS, PROMPTS, NoCache
from test_trainer import ROWS, small_config, tiny_model, tiny_tokenizer
from transformers import TopKLogitsWarper, TopPLogitsWarper

import rl._rollout
import rl._trainer
from graders import StructuredGrader
from rl import PPOConfig, PPOTrainer
from rl._rollout import gather_logprobs, generate_completions, truncate_logits
from rl._shared_prefix import sample_rollout, sample_tokens, score_completions
from schemas import UserError


def hf_cut(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """What ``generate`` does to (N, V) scores: top-k, then top-p, each only when on."""
    if top_k:
        logits = TopKLogitsWarper(top_k=top_k)(torch.zeros(1, 1, dtype=torch.long), logits)
    if top_p < 1:
        logits = TopPLogitsWarper(top_p=top_p)(torch.zeros(1, 1, dtype=torch.long), logits)
    return logits


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (1, 1.0), (5, 1.0), (0, 0.9), (0, 0.3), (0, 0.999), (7, 0.8), (40, 0.5),
                                              (100, 1.0), (100, 0.95)])
@pytest.mark.parametrize("scale", [0.3, 3.0])  # flat and peaked distributions
def test_the_cut_equals_transformers_warpers(top_k: int, top_p: float, scale: float) -> None:
    generator = torch.Generator().manual_seed(top_k * 1000 + int(top_p * 100))
    logits = torch.randn(64, 50, generator=generator) * scale  # (N, V)
    ours = truncate_logits(logits, top_k=top_k, top_p=top_p)
    theirs = hf_cut(logits, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.equal(ours, theirs)
    kept = (~torch.isinf(ours)).sum(dim=-1)
    assert bool((kept >= 1).all()) and (top_k == 0 or top_k >= 50 or bool((kept <= top_k).all()))


@pytest.mark.parametrize("candidates", [8, 256])
@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.99])
def test_top_p_among_the_most_likely_tokens_first_gives_the_cut_of_a_full_sort(monkeypatch: pytest.MonkeyPatch, candidates: int,
                                                                               top_p: float) -> None:
    generator = torch.Generator().manual_seed(int(top_p * 100) + candidates)
    scales = torch.linspace(0.1, 6.0, 48)[:, None]  # flat rows (nucleus past the candidates) to peaked ones (inside them)
    logits = torch.randn(48, 300, generator=generator) * scales  # (N, V), V above 256 candidates
    monkeypatch.setattr(rl._rollout, "_CANDIDATES", candidates)
    ours = truncate_logits(logits, top_p=top_p)
    assert torch.equal(ours, hf_cut(logits, 0, top_p))
    kept = (~torch.isinf(ours)).sum(dim=-1)
    assert bool((kept < candidates).any()) and (candidates == 256 or bool((kept >= candidates).any()))  # both ways taken


def test_the_cut_of_a_batch_of_sequences_is_the_cut_of_each_row(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(1)) * 2  # (B, T, V)
    whole = truncate_logits(logits, top_k=10, top_p=0.7)
    monkeypatch.setattr(rl._rollout, "_CUT_ELEMENTS", 40 * 4)  # sorted 4 rows at a time
    assert torch.equal(truncate_logits(logits, top_k=10, top_p=0.7), whole)
    assert torch.equal(truncate_logits(logits, top_p=0.7), hf_cut(logits.view(15, 40), 0, 0.7).view(3, 5, 40))
    assert torch.equal(whole, hf_cut(logits.view(15, 40), 10, 0.7).view(3, 5, 40))


def test_log_probs_are_of_the_renormalised_cut_and_a_token_outside_it_stays_finite() -> None:
    logits = torch.randn(2, 6, 30, generator=torch.Generator().manual_seed(2), requires_grad=True)  # (B, T, V)
    cut = hf_cut(logits.detach().view(12, 30), 5, 0.8).view(2, 6, 30)
    inside = cut.argmax(dim=-1)  # (B, T) the most likely token: always kept
    expected = torch.log_softmax(cut, dim=-1).gather(-1, inside[..., None]).squeeze(-1)
    assert torch.allclose(gather_logprobs(logits, inside, top_k=5, top_p=0.8), expected, atol=1e-6)
    assert torch.allclose(gather_logprobs(logits, inside), torch.log_softmax(logits, -1).gather(-1, inside[..., None]).squeeze(-1))

    outside = logits.detach().argmin(dim=-1)  # (B, T) the least likely token: never in a top-5
    logprobs = gather_logprobs(logits, outside, top_k=5, top_p=0.8)
    kept = (~torch.isinf(cut)).scatter(-1, outside[..., None], True)  # the cut, and the token
    manual = logits.detach().gather(-1, outside[..., None]).squeeze(-1) - torch.logsumexp(
        logits.detach().masked_fill(~kept, -math.inf), dim=-1)
    assert torch.allclose(logprobs, manual, atol=1e-6) and bool(torch.isfinite(logprobs).all())
    logprobs.sum().backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    assert bool((logits.grad[~kept] == 0).all())  # a cut token has no share of the normaliser, so no gradient


def test_sample_tokens_never_draws_a_cut_token_and_follows_the_renormalised_probabilities() -> None:
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    logp = torch.log_softmax(truncate_logits(logits, top_k=3), dim=-1)
    torch.manual_seed(0)
    counts = torch.bincount(sample_tokens(logp), minlength=5).double() / 20000
    assert counts[3] == 0 and counts[4] == 0
    assert torch.allclose(counts[:3], logp[0, :3].double().exp(), atol=0.015)  # ~4 standard errors


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shared", [True, False])
def test_the_samplers_log_probs_are_those_of_the_cut_distribution(name: str, shared: bool) -> None:
    tok = tiny_tokenizer()
    model = MODELS[name](tok)
    torch.manual_seed(0)
    roll, logprobs, _ = sample_rollout(model, tok, PROMPTS, samples_per_prompt=3, max_new_tokens=8, temperature=0.7, hidden=False,
                                       shared=shared, top_k=6, top_p=0.8)
    with torch.no_grad():
        logits, _ = score_completions(model, roll, torch.arange(len(roll.texts)), 0.7)  # (B, T, V)
    real = roll.completion_mask.bool()
    cut = truncate_logits(logits, top_k=6, top_p=0.8)
    assert bool(torch.isfinite(cut.gather(-1, roll.completion_ids[..., None]).squeeze(-1))[real].all())  # each token inside its cut
    scored = gather_logprobs(logits, roll.completion_ids, top_k=6, top_p=0.8) * roll.completion_mask
    assert torch.allclose(logprobs, scored, atol=1e-5)
    full = gather_logprobs(logits, roll.completion_ids) * roll.completion_mask
    assert bool((logprobs[real] > full[real] + 1e-3).any())  # the cut matters here: renormalised, the tokens got likelier


@pytest.mark.parametrize("shared", [True, False])
def test_top_k_of_one_samples_the_greedy_completion_with_probability_one(shared: bool) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    greedy = generate_completions(model, tok, PROMPTS, samples_per_prompt=2, max_new_tokens=6, temperature=None)
    roll, logprobs, _ = sample_rollout(model, tok, PROMPTS, samples_per_prompt=2, max_new_tokens=6, temperature=1.3, hidden=False,
                                       shared=shared, top_k=1)
    assert roll.texts == greedy.texts
    assert bool((logprobs == 0).all())


def first_ratios(monkeypatch: pytest.MonkeyPatch, trainer: PPOTrainer) -> list[torch.Tensor]:
    """The per-token ratios ``exp(logprobs - old_logprobs)`` (real tokens) of each minibatch of one ``step()``."""
    ratios: list[torch.Tensor] = []
    ratio = rl._trainer.RATIOS["token"]  # the trainer's ratio_level="token" (the default)

    def spy(logprobs: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> Any:
        ratios.append(torch.exp(logprobs - old).detach()[mask.bool()])
        return ratio(logprobs, old, mask)

    monkeypatch.setitem(rl._trainer.RATIOS, "token", spy)
    trainer.step()
    return ratios


@pytest.mark.parametrize(("name", "advantage"), [("gpt2", "gae"), ("llama", "grpo")])
@pytest.mark.parametrize(("top_k", "top_p"), [(5, 1.0), (0, 0.7), (8, 0.85)])
def test_the_ratio_at_the_first_update_is_one_with_top_k_and_top_p(monkeypatch: pytest.MonkeyPatch, name: str, advantage: str,
                                                                   top_k: int, top_p: float) -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(MODELS[name](tok), tok, StructuredGrader(), ROWS, ROWS,
                         small_config(advantage=advantage, temperature=0.7, top_k=top_k, top_p=top_p, kl_estimator="k3"))
    assert trainer.shared_prefix
    ratios = first_ratios(monkeypatch, trainer)
    assert len(ratios) == 4  # 2 epochs x 2 minibatches, none skipped
    assert torch.allclose(ratios[0], torch.ones_like(ratios[0]), atol=1e-5), ratios[0]  # before any update: the sampler's policy
    assert all(bool(torch.isfinite(r).all()) for r in ratios)  # later minibatches: a moved policy, a moved cut, still finite


def test_the_ratio_at_the_first_update_is_one_on_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(NoCache(tiny_model(tok).config), tok, StructuredGrader(), ROWS, ROWS,
                         small_config(advantage="grpo", temperature=0.7, top_k=6, top_p=0.8))
    assert not trainer.shared_prefix
    ratios = first_ratios(monkeypatch, trainer)
    assert torch.allclose(ratios[0], torch.ones_like(ratios[0]), atol=1e-5), ratios[0]


def test_the_kl_to_the_initial_policy_starts_at_zero_with_the_cut() -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(MODELS["llama"](tok), tok, StructuredGrader(), ROWS, ROWS,
                         small_config(advantage="grpo", learning_rate=1e-12, top_k=4, top_p=0.9))
    metrics = trainer.step()
    assert abs(metrics["kl/to_init"]) < 1e-4 and metrics["policy/clipfrac"] == 0, metrics


def test_many_updates_with_a_moving_cut_stay_finite() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    trainer = PPOTrainer(model, tok, StructuredGrader(), ROWS, ROWS,
                         small_config(advantage="grpo", learning_rate=0.05, ppo_epochs=4, minibatch_size=4, top_k=3, top_p=0.6,
                                      ratio_skip_threshold=1e6))
    for _ in range(3):
        metrics = trainer.step()
        assert all(math.isfinite(v) for k, v in metrics.items() if not k.startswith("reward/")), metrics
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize(("overrides", "pointer"), [({"top_k": -1}, "/top_k"), ({"top_k": 2.0}, "/top_k"), ({"top_k": True}, "/top_k"),
                                                    ({"top_p": 0.0}, "/top_p"), ({"top_p": 1.5}, "/top_p"), ({"top_p": math.nan}, "/top_p")])
def test_config_rejects_bad_top_k_and_top_p(overrides: dict[str, Any], pointer: str) -> None:
    with pytest.raises(UserError) as caught:
        PPOConfig(**overrides)
    assert caught.value.pointer == pointer and caught.value.code == "bad_config"


def test_truncate_logits_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="top_k"):
        truncate_logits(torch.zeros(3), top_k=-1)
    with pytest.raises(ValueError, match="top_p"):
        truncate_logits(torch.zeros(3), top_p=0.0)
