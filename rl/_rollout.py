"""Rollouts: batched sampling of completions, and the log-probabilities of those completions.

* :func:`generate_completions` left-pads the prompts, repeats each one
  ``samples_per_prompt`` times (the samples of one prompt are contiguous, as the
  group estimators expect) and calls ``model.generate`` with the KV cache:
  temperature sampling with top-k off and top-p 1, or greedy when ``temperature``
  is None. The pad token must differ from EOS, so "ended" and "padding" never mix.
* :func:`completion_forward` runs the model over prompt + completion and returns
  the logits that predicted each completion token, divided by the *same*
  temperature that sampled them, and the last hidden state at those positions (the
  value head reads it). Position ids are counted from the first real token, as
  ``generate`` counts them, so left padding changes nothing.
* :func:`sequence_logprobs` is ``log_softmax(logits / temperature)`` gathered at the
  completion tokens, zero on padding.

``PPOTrainer`` samples and scores through ``rl/_shared_prefix.py``, which runs each prompt once per
group; the functions here are its plain path (for a model that cannot share a prompt's cache) and
``evaluate()``'s greedy decoding.

Shapes: ``B`` sequences, ``L`` prompt + completion tokens, ``T`` completion tokens, ``V`` vocabulary, ``H`` hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig


@dataclass
class Rollout:
    """One batch of sampled completions."""

    input_ids: torch.Tensor
    """(B, L) left-padded prompt followed by the completion (right-padded after EOS)."""
    attention_mask: torch.Tensor
    """(B, L) 1 on real prompt tokens and real completion tokens."""
    completion_mask: torch.Tensor
    """(B, T) 1 on each completion token up to and including its first EOS. The mask is cut at EOS,
    not read from pad ids, because a model may sample the pad token as an ordinary token."""
    has_eos: torch.Tensor
    """(B,) bool: the completion ended with EOS (False: it hit ``max_new_tokens``)."""
    texts: list[str]
    """The decoded completions, special tokens dropped."""
    prompt_ids: torch.Tensor | None = None
    """(P, Lp) the distinct prompts, left-padded, when the rollout was sampled with them shared (``rl._shared_prefix``)."""
    prompt_mask: torch.Tensor | None = None
    """(P, Lp) 1 on real prompt tokens, with ``prompt_ids``."""
    rows: torch.Tensor | None = None
    """(B,) the index in ``prompt_ids`` of each row's prompt, with ``prompt_ids``."""

    @property
    def completion_ids(self) -> torch.Tensor:
        """(B, T) the completion tokens."""
        return self.input_ids[:, -self.completion_mask.shape[1]:]


def check_tokenizer(tokenizer: Any) -> None:
    """Raise a :class:`schemas.UserError` unless the tokenizer has an EOS and a distinct pad token."""
    from schemas import UserError

    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token", code="bad_tokenizer", pointer="/tokenizer/eos_token",
                        hint="set tokenizer.eos_token to the token that ends an answer")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise UserError("the tokenizer needs a pad token distinct from EOS", code="bad_tokenizer", pointer="/tokenizer/pad_token",
                        hint="tokenizer.add_special_tokens({'pad_token': '<pad>'}) and model.resize_token_embeddings(len(tokenizer))")


@torch.no_grad()
def generate_completions(model: Any, tokenizer: Any, prompts: list[str], *, samples_per_prompt: int, max_new_tokens: int,
                         temperature: float | None) -> Rollout:
    """Sample ``samples_per_prompt`` completions of each prompt (greedy when ``temperature`` is None)."""
    model.eval()  # dropout off: the sampling policy is the one whose log-probs are recomputed
    device = next(model.parameters()).device
    enc = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    prompt_ids = enc["input_ids"].repeat_interleave(samples_per_prompt, dim=0).to(device)  # (B, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(samples_per_prompt, dim=0).to(device)  # (B, P)
    sampling: dict[str, Any] = ({"do_sample": False} if temperature is None else
                                {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0})
    generation = GenerationConfig(  # type: ignore[no-untyped-call]  # transformers leaves GenerationConfig.__init__ untyped
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, max_new_tokens=max_new_tokens, use_cache=True, **sampling)
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation)
    completion_mask, has_eos, texts = cut_at_eos(tokenizer, out[:, prompt_ids.shape[1]:])
    return Rollout(out, torch.cat([prompt_mask, completion_mask], dim=1), completion_mask, has_eos, texts)


def cut_at_eos(tokenizer: Any, completion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The mask of each completion up to and including its first EOS (B, T), whether it has one (B,), and its text."""
    is_eos = completion == tokenizer.eos_token_id
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # (B, T): strictly after the first EOS
    texts = tokenizer.batch_decode(completion.masked_fill(after_eos, tokenizer.pad_token_id), skip_special_tokens=True)
    return (~after_eos).long(), is_eos.any(dim=1), texts


def completion_forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``/ temperature`` that predicted the last ``completion_len`` tokens (B, T, V), and the last hidden state there (B, T, H)."""
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L), as generate() counts them
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                output_hidden_states=True, logits_to_keep=completion_len + 1)
    logits = out.logits[:, :-1] / temperature  # (B, T, V): position t-1 predicts completion token t
    hidden = out.hidden_states[-1][:, -completion_len - 1:-1]  # (B, T, H)
    return logits, hidden


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``tokens``: (B, T, V), (B, T) -> (B, T)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Per-token log-probabilities of the completion, (B, T), zero on padding.

    The completion is the last ``T = completion_mask.shape[1]`` tokens of ``input_ids``;
    the distribution is ``softmax(logits / temperature)``, the one that sampled them.
    Gradients flow when called outside ``torch.no_grad()``.
    """
    completion_len = completion_mask.shape[1]
    logits, _ = completion_forward(model, input_ids, attention_mask, completion_len, temperature)
    return gather_logprobs(logits, input_ids[:, -completion_len:]) * completion_mask
