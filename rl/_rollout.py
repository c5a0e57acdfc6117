"""Rollouts: batched sampling of completions, and the log-probabilities of those completions.

* :func:`generate_completions` left-pads the prompts, repeats each one
  ``samples_per_prompt`` times (the samples of one prompt are contiguous, as the
  group estimators expect) and calls ``model.generate`` with the KV cache:
  temperature sampling (with ``top_k`` / ``top_p`` when set), or greedy when ``temperature``
  is None. The pad token must differ from EOS, so "ended" and "padding" never mix.
* :func:`completion_forward` runs the model over prompt + completion and returns
  the logits that predicted each completion token, divided by the *same*
  temperature that sampled them, and the last hidden state at those positions (the
  value head reads it). Position ids are counted from the first real token, as
  ``generate`` counts them, so left padding changes nothing.
* :func:`sequence_logprobs` is ``log_softmax(logits / temperature)`` gathered at the
  completion tokens, zero on padding.
* :func:`truncate_logits` and :func:`gather_logprobs` apply top-k and top-p (nucleus) sampling's
  cut, so that every log-prob is one of the distribution that sampled the token (see
  :func:`gather_logprobs` for the rule that keeps PPO's ratio at 1 and finite).

``PPOTrainer`` samples and scores through ``rl/_shared_prefix.py``, which runs each prompt once per
group; the functions here are its plain path (for a model that cannot share a prompt's cache) and
``evaluate()``'s greedy decoding.

Shapes: ``B`` sequences, ``L`` prompt + completion tokens, ``T`` completion tokens, ``V`` vocabulary, ``H`` hidden size.
"""

from __future__ import annotations

import math
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
                         temperature: float | None, top_k: int = 0, top_p: float = 1.0) -> Rollout:
    """Sample ``samples_per_prompt`` completions of each prompt (greedy when ``temperature`` is None).

    ``top_k`` (0: off) and ``top_p`` (1: off) cut the distribution as :func:`truncate_logits` does
    (``generate``'s own warpers, applied in the same order: temperature, top-k, top-p)."""
    model.eval()  # dropout off: the sampling policy is the one whose log-probs are recomputed
    device = next(model.parameters()).device
    enc = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    prompt_ids = enc["input_ids"].repeat_interleave(samples_per_prompt, dim=0).to(device)  # (B, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(samples_per_prompt, dim=0).to(device)  # (B, P)
    sampling: dict[str, Any] = ({"do_sample": False} if temperature is None else
                                {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p})
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


def last_positions(length: int, count: int, device: torch.device) -> torch.Tensor:
    """The last ``count`` positions of ``length``, as the index tensor a model's ``logits_to_keep`` takes: (count,).

    Not the integer ``logits_to_keep=count``: that slices the hidden states into a strided view, and
    ``torch.matmul`` cannot fold a strided 3-D input into one matrix product, so it copies the
    output embedding once per row (a (B, H, V) copy) before a batched product. An index tensor
    gathers the rows into a contiguous tensor first; the logits are the same.
    """
    return torch.arange(length - count, length, device=device)


def completion_forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``/ temperature`` that predicted the last ``completion_len`` tokens (B, T, V), and the last hidden state there (B, T, H)."""
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L), as generate() counts them
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                output_hidden_states=True, logits_to_keep=last_positions(input_ids.shape[1], completion_len + 1, input_ids.device))
    logits = out.logits[:, :-1] / temperature  # (B, T, V): position t-1 predicts completion token t
    hidden = out.hidden_states[-1][:, -completion_len - 1:-1]  # (B, T, H)
    return logits, hidden


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """``log_softmax(logits)`` at ``tokens``, (B, T, V), (B, T) -> (B, T); with ``top_k`` / ``top_p``, of the cut distribution.

    The cut is :func:`truncate_logits`' on these very logits, with each row's token kept whatever
    its rank: the log-prob is ``logit[token] - logsumexp(logits over the kept set and the token)``.
    Why this rule (the PPO ratio compares the sampler's log-probs with these):

    * where these logits are the sampler's (the first update, the frozen reference at the start),
      the sampled token was inside the cut, so keeping it changes nothing: the log-prob is the
      sampler's own and the ratio is exactly 1 (and ``kl/to_init`` 0);
    * once the policy moves, its cut moves too, and a sampled token may fall outside it; a plain
      mask would give it ``-inf`` (a ratio of 0 and NaN gradients), while kept it gets a finite,
      small log-prob whose gradient pushes the way the advantage says. A stored copy of the
      sampler's cut would need a (B, T, V) mask for every rollout.

    Gradients flow through the logits; the cut itself is a selection, without gradient.

    >>> logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]])
    >>> gather_logprobs(logits, torch.tensor([[1]]), top_k=2).exp()  # among tokens 0 and 1 only
    tensor([[0.2689]])
    >>> gather_logprobs(logits, torch.tensor([[3]]), top_k=2).exp()  # outside the cut: kept with tokens 0 and 1
    tensor([[0.0351]])
    """
    logits = logits.float()
    if top_k or top_p < 1:
        logits = truncate_logits(logits, top_k=top_k, top_p=top_p, keep=tokens)
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


_CUT_ELEMENTS = 1 << 24
"""Logits sorted at once by :func:`truncate_logits` (rows times vocabulary): bounds the sort's memory for a (B, T, V) batch."""

_CANDIDATES = 256
"""Top-p alone looks for each row's nucleus among its ``_CANDIDATES`` most likely tokens first (a top-k: on a CPU, 20x
cheaper than sorting a 150k vocabulary); a row whose nucleus is larger is sorted whole. Same result either way."""


def truncate_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``logits`` (..., V) with ``-inf`` outside the top ``top_k`` tokens and then outside the top-``top_p`` nucleus.

    As ``transformers``' ``TopKLogitsWarper`` then ``TopPLogitsWarper`` (the order ``generate`` uses):
    top-k keeps every token whose logit is at least the k-th largest (0: off); top-p then keeps
    the most likely tokens, in order, until the ones before the next token hold ``top_p`` of the
    probability of what top-k kept, so the token that crosses ``top_p`` is in and at least one
    token always is (1: off). ``keep`` (...,), a token per row kept whatever its rank (see
    :func:`gather_logprobs`). The softmax of the result is the renormalised distribution sampled from.

    >>> truncate_logits(torch.tensor([3.0, 2.0, 1.0, 0.0]), top_p=0.8)  # 0.64 < 0.8, 0.64 + 0.24 >= 0.8
    tensor([3., 2., -inf, -inf])
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"top_k must be an integer >= 0 and top_p in (0, 1], got {top_k!r} and {top_p!r}")
    vocab = logits.shape[-1]
    if not (0 < top_k < vocab or top_p < 1):
        return logits if keep is None else logits.clone()
    rows = logits.detach().reshape(-1, vocab)  # (N, V)
    with torch.no_grad():
        floors = [_smallest_kept(chunk, top_k if top_k < vocab else 0, top_p)
                  for chunk in torch.split(rows, max(1, _CUT_ELEMENTS // vocab))]  # (n, V) each
    floor = torch.cat(floors).view(*logits.shape[:-1], 1)  # (..., 1): the smallest logit kept
    drop = logits < floor  # (..., V)
    if keep is not None:
        drop = drop.scatter(-1, keep.unsqueeze(-1), False)
    return logits.masked_fill(drop, -math.inf)


def _smallest_kept(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The smallest logit that top-k then top-p keep in each row: (n, V) -> (n, 1)."""
    if top_k:
        ranked = logits.topk(top_k, dim=-1).values  # (n, k), largest first
        return _nucleus_floor(ranked, torch.logsumexp(ranked.float(), dim=-1, keepdim=True), top_p)[0] if top_p < 1 else ranked[:, -1:]
    total = torch.logsumexp(logits.float(), dim=-1, keepdim=True)  # (n, 1): the softmax's normaliser
    if logits.shape[-1] <= _CANDIDATES:
        return _nucleus_floor(logits.sort(dim=-1, descending=True).values, total, top_p)[0]
    floor, found = _nucleus_floor(logits.topk(_CANDIDATES, dim=-1).values, total, top_p)
    if not bool(found.all()):
        wide = ~found  # rows whose nucleus reaches past the candidates: sorted whole
        floor[wide] = _nucleus_floor(logits[wide].sort(dim=-1, descending=True).values, total[wide], top_p)[0]
    return floor


def _nucleus_floor(ranked: torch.Tensor, total: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest logit of each row's top-``top_p`` nucleus among its largest logits ``ranked`` (n, c), largest first,
    whose softmax normaliser is ``total`` (n, 1); and whether the nucleus ends inside ``ranked`` (n,)."""
    probs = torch.exp(ranked.float() - total)  # (n, c)
    before = probs.cumsum(dim=-1) - probs  # the probability of the tokens ranked above each
    count = (before < top_p).sum(dim=-1, keepdim=True).clamp(min=1)  # (n, 1): tokens in the nucleus
    return ranked.gather(-1, count - 1), count.squeeze(1) < ranked.shape[-1]


def sequence_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
                      temperature: float, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Per-token log-probabilities of the completion, (B, T), zero on padding.

    The completion is the last ``T = completion_mask.shape[1]`` tokens of ``input_ids``;
    the distribution is ``softmax(logits / temperature)`` cut by ``top_k`` / ``top_p`` (:func:`gather_logprobs`),
    the one that sampled them. Gradients flow when called outside ``torch.no_grad()``.
    """
    completion_len = completion_mask.shape[1]
    logits, _ = completion_forward(model, input_ids, attention_mask, completion_len, temperature)
    return gather_logprobs(logits, input_ids[:, -completion_len:], top_k=top_k, top_p=top_p) * completion_mask
