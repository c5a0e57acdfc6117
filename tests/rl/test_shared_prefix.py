"""Rollouts that run each prompt once per group (``rl/_shared_prefix.py``) give what whole sequences give.

On two tiny models built in code, one with learned positions (GPT-2) and one with rotary ones
(Llama), both with left-padded prompts: the shared-prompt log-probs, hidden states and gradients
equal a full forward's; the sampler's own log-probs equal them too (so PPO's ratio starts at 1);
the sampler keeps the rollout rules (a completion ends at its first EOS, the pad token after it,
samples of a prompt side by side); and a model that cannot share a cache falls back to the plain path.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_trainer import ROWS, small_config, tiny_model, tiny_tokenizer
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from graders import StructuredGrader
from rl import PPOTrainer, Rollout, generate_completions
from rl._rollout import completion_forward, gather_logprobs, last_positions
from rl._shared_prefix import sample_rollout, sample_tokens, score_completions, shares_prefix

PROMPTS = ["capital of france?", "abc", "where is the eiffel tower? tell me please"]  # three lengths: two rows are left-padded


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


MODELS = {"gpt2": lambda tok: tiny_model(tok).eval(), "llama": tiny_llama}


def rollout(model: Any, tok: PreTrainedTokenizerFast, temperature: float = 0.7, seed: int = 0) -> tuple[Rollout, torch.Tensor, Any]:
    torch.manual_seed(seed)
    return sample_rollout(model, tok, PROMPTS, samples_per_prompt=3, max_new_tokens=8, temperature=temperature, hidden=True,
                          shared=True)


def whole(roll: Rollout) -> Rollout:
    """The same rollout without its prompts: scored as whole sequences."""
    return Rollout(roll.input_ids, roll.attention_mask, roll.completion_mask, roll.has_eos, roll.texts)


@pytest.mark.parametrize("name", MODELS)
def test_shared_prompt_logprobs_and_hidden_states_equal_a_full_forward(name: str) -> None:
    tok = tiny_tokenizer()
    model = MODELS[name](tok)
    roll, sampled, sampled_hidden = rollout(model, tok)
    assert roll.prompt_ids is not None and roll.prompt_ids.shape[0] == len(PROMPTS)
    steps, real = roll.completion_mask.shape[1], roll.completion_mask.bool()
    index = torch.tensor([7, 0, 4, 1])  # a subset, in any order, rows of one prompt apart
    with torch.no_grad():
        full_logits, full_hidden = completion_forward(model, roll.input_ids, roll.attention_mask, steps, 0.7)
        logits, hidden = score_completions(model, roll, index, 0.7)
    full = gather_logprobs(full_logits, roll.completion_ids) * roll.completion_mask  # (B, T)
    shared = gather_logprobs(logits, roll.completion_ids[index]) * roll.completion_mask[index]
    assert torch.allclose(shared, full[index], atol=1e-5)
    assert torch.allclose(hidden[real[index]], full_hidden[index][real[index]], atol=1e-5)
    # The sampler's log-probs are those of the logits that sampled: the same distribution, cached.
    assert torch.allclose(sampled, full, atol=1e-5)
    assert torch.allclose(sampled_hidden[real], full_hidden[real], atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow_through_the_shared_prompt_as_through_whole_sequences(name: str) -> None:
    tok = tiny_tokenizer()
    model = MODELS[name](tok)
    roll, _, _ = rollout(model, tok, temperature=1.0)
    index = torch.tensor([0, 1, 2, 6])
    grads = []
    for scored in (roll, whole(roll)):
        model.zero_grad()
        logits, hidden = score_completions(model, scored, index, 1.0)
        loss = (gather_logprobs(logits, roll.completion_ids[index]) * roll.completion_mask[index]).sum() + hidden.pow(2).mean()
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n, g in grads[1].items():
        assert torch.allclose(grads[0][n], g, atol=1e-4, rtol=1e-4), n


@pytest.mark.parametrize("name", MODELS)
def test_the_sampler_keeps_the_rollout_rules(name: str) -> None:
    tok = tiny_tokenizer()
    model = MODELS[name](tok)
    roll, sampled, _ = rollout(model, tok, temperature=1.0)
    steps = roll.completion_mask.shape[1]
    assert roll.input_ids.shape == (9, roll.prompt_ids.shape[1] + steps) and len(roll.texts) == 9 and steps <= 8  # type: ignore[union-attr]
    assert roll.rows is not None and roll.rows.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # a prompt's samples side by side
    assert (roll.input_ids[:, :-steps] == roll.prompt_ids[roll.rows]).all()  # type: ignore[index]
    for row in range(9):
        tokens, mask = roll.completion_ids[row].tolist(), roll.completion_mask[row].tolist()
        n = sum(mask)
        assert mask == [1] * n + [0] * (steps - n)  # a prefix, cut at the first EOS
        assert bool(roll.has_eos[row]) == (tokens[n - 1] == tok.eos_token_id)
        assert tok.eos_token_id not in tokens[:n - 1]
        assert tokens[n:] == [tok.pad_token_id] * (steps - n)  # after EOS: the pad token
        assert all(v == 0 for v in sampled[row, n:].tolist()) and all(v < 0 for v in sampled[row, :n].tolist())
    assert roll.has_eos.any() and not roll.has_eos.all()  # this untrained model ends some answers, not all
    assert roll.texts == tok.batch_decode(roll.completion_ids.masked_fill(roll.completion_mask == 0, tok.pad_token_id),
                                          skip_special_tokens=True)
    again, _, _ = rollout(model, tok, temperature=1.0)
    assert torch.equal(again.input_ids, roll.input_ids)  # seeded: the same samples


def test_the_sampler_stops_once_every_row_has_ended() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    with torch.no_grad():  # every position's last hidden state becomes a long vector along EOS's embedding: EOS first, always
        eos = model.lm_head.weight[tok.eos_token_id]
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(1000 * eos / eos.dot(eos))
    roll, _, _ = rollout(model, tok, temperature=1.0)
    assert roll.completion_ids.tolist() == [[tok.eos_token_id]] * 9 and roll.has_eos.all() and roll.texts == [""] * 9


def test_sample_tokens_draws_each_token_with_its_probability() -> None:
    probs = torch.tensor([0.5, 0.3, 0.0, 0.15, 0.05])
    logprobs = torch.log(probs).expand(40_000, 5)  # log 0 = -inf: never drawn
    torch.manual_seed(0)
    counts = torch.bincount(sample_tokens(logprobs), minlength=5).double() / 40_000
    assert counts[2] == 0
    assert torch.allclose(counts, probs.double(), atol=0.01)  # 4 standard errors at most
    assert sample_tokens(torch.log(torch.tensor([[0.0, 0.0, 1.0]]))).tolist() == [2]


def test_the_plain_path_gives_the_same_log_probs_as_the_shared_one() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    torch.manual_seed(0)
    plain, logprobs, hidden = sample_rollout(model, tok, PROMPTS, samples_per_prompt=2, max_new_tokens=6, temperature=0.7,
                                             hidden=True, shared=False)
    assert plain.prompt_ids is None and hidden is not None
    with torch.no_grad():
        logits, _ = score_completions(model, plain, torch.arange(6), 0.7)
    assert torch.allclose(gather_logprobs(logits, plain.completion_ids) * plain.completion_mask, logprobs, atol=1e-6)
    torch.manual_seed(0)
    reference = generate_completions(model, tok, PROMPTS, samples_per_prompt=2, max_new_tokens=6, temperature=0.7)
    assert torch.equal(plain.input_ids, reference.input_ids)  # it is model.generate's rollout


class NoCache(GPT2LMHeadModel):
    """A model that decodes one token at a time from its cache, but cannot run several tokens on top of one."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        cache = kwargs.get("past_key_values")
        if cache is not None and cache.get_seq_length() > 0 and kwargs["input_ids"].shape[1] > 1:
            raise NotImplementedError("one token at a time on a cache")
        return super().forward(*args, **kwargs)


def test_a_model_that_cannot_share_a_prompt_trains_on_the_plain_path() -> None:
    tok = tiny_tokenizer()
    assert shares_prefix(tiny_model(tok)) and shares_prefix(tiny_llama(tok))
    model = NoCache(tiny_model(tok).config)
    assert not shares_prefix(model)
    trainer = PPOTrainer(model, tok, StructuredGrader(), ROWS, ROWS, small_config(advantage="gae"))
    assert not trainer.shared_prefix
    before = [p.detach().clone() for p in model.parameters()]
    trainer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize(("name", "advantage"), [("gpt2", "gae"), ("llama", "grpo")])
def test_the_first_ratio_is_one_on_the_shared_path(name: str, advantage: str) -> None:
    tok = tiny_tokenizer()
    # A learning rate too small to move the policy: every minibatch's ratio is the sampling-vs-scoring numerics alone.
    trainer = PPOTrainer(MODELS[name](tok), tok, StructuredGrader(), ROWS, ROWS,
                         small_config(advantage=advantage, learning_rate=1e-12, kl_estimator="k3", temperature=0.7))
    assert trainer.shared_prefix
    metrics = trainer.step()
    assert metrics["policy/approx_kl"] < 1e-10 and metrics["policy/clipfrac"] == 0, metrics
    assert abs(metrics["kl/to_init"]) < 1e-4 and metrics["update/skipped_ratio"] == 0


@pytest.mark.parametrize("name", MODELS)
def test_last_positions_gives_the_logits_of_an_integer_logits_to_keep_from_a_contiguous_input(name: str) -> None:
    tok = tiny_tokenizer()
    model = MODELS[name](tok)
    enc = tok(PROMPTS, padding=True, padding_side="left", return_tensors="pt")
    length = enc["input_ids"].shape[1]
    seen: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        for count in (1, 3):
            sliced = model(**enc, logits_to_keep=count).logits
            indexed = model(**enc, logits_to_keep=last_positions(length, count, enc["input_ids"].device)).logits
            assert indexed.shape == sliced.shape == (len(PROMPTS), count, len(tok))
            torch.testing.assert_close(indexed, sliced)
    hook.remove()
    assert [x.is_contiguous() for x in seen] == [False, True, False, True]  # the slice is a strided view, the index a copy
