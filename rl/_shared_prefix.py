"""Rollouts that compute each prompt once per group: sampling, and scoring with or without grad.

The samples of one prompt share it token for token, and in RFT the prompt is most of each
sequence. So every pass here runs the batch's *distinct* prompts once, copies each prompt's
keys and values (a ``transformers`` ``Cache``) to the rows that continue it, and runs the
completions on top:

* :func:`sample_rollout` -- a compact sampling loop in place of ``model.generate``: KV cache,
  ``softmax(logits / temperature)`` cut to the ``top_k`` tokens and then the ``top_p`` nucleus
  when set (``rl._rollout.truncate_logits``, as ``generate`` cuts), left-padded prompts, the pad
  token after a row's EOS, stopping once every row has emitted EOS or at ``max_new_tokens``. The
  log-probs of the sampled tokens (and, for a value head, the last hidden state) come from the
  very distribution that sampled them, cut and renormalised, so the old policy needs no forward
  of its own, and the trainer's ``gather_logprobs(..., top_k=, top_p=)`` gives the same numbers.
* :func:`score_completions` -- the logits ``/ temperature`` that predict each completion token
  and the last hidden state there, for any subset of the rollout's rows; with grad, the
  gradient flows through the shared prompt states into every sample that reads them.

Position ids are counted from each prompt's first real token, as ``generate`` counts them, so
left padding changes nothing, for learned positions (GPT-2) and rotary ones (Llama) alike.

A model that cannot take this path (no ``Cache`` it can share, or results that differ from a
full forward: :func:`shares_prefix` checks once) uses the plain one: ``generate_completions``
and :func:`rl._rollout.completion_forward` over whole sequences, with the same results.

Shapes: ``P`` distinct prompts, ``B`` rows (completions), ``b`` rows scored, ``Lp`` prompt
tokens (left-padded), ``T`` completion tokens, ``V`` vocabulary, ``H`` hidden size.
"""

from __future__ import annotations

from typing import Any

import torch

from ._rollout import (
    Rollout,
    completion_forward,
    cut_at_eos,
    gather_logprobs,
    generate_completions,
    last_positions,
    truncate_logits,
)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token: (N, L) -> (N, L)."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _run_prompts(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rows: torch.Tensor,
                 *, hidden: bool) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """The prompts that ``rows`` continue, each run once; returns the cache, the last logits and hidden state per row.

    ``rows`` (b,) holds the prompt index of each row; the cache comes back with one entry per row.
    """
    used, row_of = torch.unique(rows, return_inverse=True)  # (p,), (b,)
    out = model(input_ids=prompt_ids[used], attention_mask=prompt_mask[used], position_ids=_positions(prompt_mask[used]),
                use_cache=True, output_hidden_states=hidden, logits_to_keep=last_positions(prompt_ids.shape[1], 1, prompt_ids.device))
    cache = out.past_key_values
    cache.batch_select_indices(row_of)  # each row gets its prompt's keys and values (gradients flow back through the copy)
    last_hidden = out.hidden_states[-1][row_of, -1] if hidden else None  # (b, H)
    return cache, out.logits[row_of, -1], last_hidden  # (b, V)


@torch.no_grad()
def sample_rollout(model: Any, tokenizer: Any, prompts: list[str], *, samples_per_prompt: int, max_new_tokens: int,
                   temperature: float, hidden: bool, shared: bool, top_k: int = 0,
                   top_p: float = 1.0) -> tuple[Rollout, torch.Tensor, torch.Tensor | None]:
    """Sample ``samples_per_prompt`` completions per prompt; returns the rollout, the sampled tokens' log-probs (B, T),
    zero after EOS, and, if ``hidden``, the last hidden state where each token was predicted (B, T, H).

    ``shared``: each prompt run once (the loop below); otherwise ``generate_completions`` and a full forward for the log-probs.
    ``top_k`` (0: off) and ``top_p`` (1: off) cut each step's distribution; the log-probs are of the cut one.
    """
    model.eval()  # dropout off: the policy that samples is the one the update scores
    if not shared:
        roll = generate_completions(model, tokenizer, prompts, samples_per_prompt=samples_per_prompt,
                                    max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        steps = roll.completion_mask.shape[1]
        all_logits, all_hidden = completion_forward(model, roll.input_ids, roll.attention_mask, steps, temperature)
        logprobs = gather_logprobs(all_logits, roll.completion_ids, top_k=top_k, top_p=top_p)  # the cut recomputed, token kept
        return roll, logprobs * roll.completion_mask, all_hidden if hidden else None
    device = next(model.parameters()).device
    enc = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)  # (P, Lp)
    rows = torch.arange(len(prompts), device=device).repeat_interleave(samples_per_prompt)  # (B,)
    cache, logits, last_hidden = _run_prompts(model, prompt_ids, prompt_mask, rows, hidden=hidden)
    n_rows, eos, pad = len(rows), tokenizer.eos_token_id, tokenizer.pad_token_id
    completion = torch.full((n_rows, max_new_tokens), pad, dtype=torch.long, device=device)  # (B, max_new_tokens)
    logprobs = torch.zeros(n_rows, max_new_tokens, device=device)  # (B, max_new_tokens)
    hiddens = logits.new_zeros(n_rows, max_new_tokens, last_hidden.shape[-1]) if last_hidden is not None else None
    active = torch.arange(n_rows, device=device)  # (A,) the rows still sampling, in the cache's order
    mask = prompt_mask[rows]  # (A, Lp + steps so far)
    position = mask.sum(dim=1, keepdim=True)  # (A, 1): the next token's position
    steps = 0
    while steps < max_new_tokens:
        logp = torch.log_softmax(truncate_logits(logits.float() / temperature, top_k=top_k, top_p=top_p), dim=-1)  # (A, V)
        token = sample_tokens(logp)  # (A,)
        completion[active, steps] = token
        logprobs[active, steps] = logp.gather(1, token[:, None]).squeeze(1)
        if hiddens is not None and last_hidden is not None:
            hiddens[active, steps] = last_hidden
        steps += 1
        going = token != eos  # (A,)
        if not bool(going.all()):  # rows that emitted EOS leave the batch (their later tokens stay the pad token)
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, token, mask, position = active[keep], token[keep], mask[keep], position[keep]
        if len(active) == 0 or steps == max_new_tokens:
            break
        mask = torch.cat([mask, torch.ones_like(position)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True,
                    output_hidden_states=hidden)
        position = position + 1
        logits = out.logits[:, -1]  # (A, V)
        last_hidden = out.hidden_states[-1][:, -1] if hidden else None  # (A, H)
    completion = completion[:, :steps]  # (B, T)
    completion_mask, has_eos, texts = cut_at_eos(tokenizer, completion)
    roll = Rollout(torch.cat([prompt_ids[rows], completion], dim=1), torch.cat([prompt_mask[rows], completion_mask], dim=1),
                   completion_mask, has_eos, texts, prompt_ids=prompt_ids, prompt_mask=prompt_mask, rows=rows)
    return roll, logprobs[:, :steps] * completion_mask, hiddens[:, :steps] if hiddens is not None else None


def sample_tokens(logprobs: torch.Tensor) -> torch.Tensor:
    """One token per row drawn from ``softmax`` of the rows' log-probs, by inverting the CDF: (N, V) -> (N,).

    Exact sampling from the distribution given, as ``torch.multinomial``, but one uniform draw per
    row instead of one per vocabulary entry (25x faster here). The CDF is summed in float64, so a
    token's chance is its probability to about 1e-16; a token with probability 0 (log-prob
    ``-inf``, as top-k and top-p leave the tokens they cut) is never drawn.
    """
    cdf = logprobs.double().exp().cumsum(dim=-1)  # (N, V)
    draw = torch.rand(len(cdf), 1, dtype=torch.float64, device=cdf.device) * cdf[:, -1:]  # (N, 1), uniform on [0, total)
    return torch.searchsorted(cdf, draw, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)


def score_completions(model: Any, roll: Rollout, index: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``/ temperature`` that predict the completion tokens of rows ``index`` (b, T, V), and the last hidden state (b, T, H).

    With the rollout's prompts (a :func:`sample_rollout` with ``shared``), each prompt is run once;
    otherwise whole sequences (``completion_forward``). Gradients flow unless called under ``torch.no_grad()``.
    """
    steps = roll.completion_mask.shape[1]
    if roll.prompt_ids is None or roll.prompt_mask is None or roll.rows is None:
        return completion_forward(model, roll.input_ids[index], roll.attention_mask[index], steps, temperature)
    cache, first_logits, first_hidden = _run_prompts(model, roll.prompt_ids, roll.prompt_mask, roll.rows[index], hidden=True)
    assert first_hidden is not None
    logits, hiddens = first_logits[:, None], first_hidden[:, None]  # (b, 1, V), (b, 1, H): they predict completion token 0
    if steps > 1:
        mask = roll.attention_mask[index, :-1]  # (b, Lp + T - 1): the prompt, then the completion fed
        fed = roll.completion_ids[index, :-1]  # (b, T - 1): token t predicts token t + 1
        out = model(input_ids=fed, attention_mask=mask, position_ids=_positions(mask)[:, -(steps - 1):], past_key_values=cache,
                    use_cache=True, output_hidden_states=True)
        logits = torch.cat([logits, out.logits], dim=1)  # (b, T, V)
        hiddens = torch.cat([hiddens, out.hidden_states[-1]], dim=1)  # (b, T, H)
    return logits / temperature, hiddens


def shares_prefix(model: Any, tolerance: float = 1e-3) -> bool:
    """Whether :func:`score_completions`' shared-prompt path gives ``model`` the log-probs of a full forward.

    A probe of two prompts (one left-padded) with two completions each; any error, or a log-prob
    that differs by more than ``tolerance`` (more for 16-bit weights), means no.
    """
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    prompt_ids = (torch.arange(10, device=device).view(2, 5) * 7 + 3) % vocab  # (2, 5)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], device=device)
    rows = torch.tensor([0, 0, 1, 1], device=device)
    completion = (torch.arange(12, device=device).view(4, 3) * 11 + 5) % vocab  # (4, 3)
    completion_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]], device=device)
    roll = Rollout(torch.cat([prompt_ids[rows], completion], dim=1), torch.cat([prompt_mask[rows], completion_mask], dim=1),
                   completion_mask, completion_mask.bool().all(dim=1), [""] * 4, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                   rows=rows)
    plain = Rollout(roll.input_ids, roll.attention_mask, completion_mask, roll.has_eos, roll.texts)
    everything = torch.arange(4, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shared = gather_logprobs(score_completions(model, roll, everything, 1.0)[0], completion) * completion_mask
            full = gather_logprobs(score_completions(model, plain, everything, 1.0)[0], completion) * completion_mask
    except Exception:  # any model whose forward cannot take a shared cache this way
        return False
    finally:
        model.train(was_training)
    dtype = next(model.parameters()).dtype
    allowed = max(tolerance, 8 * torch.finfo(dtype).eps if dtype.is_floating_point else tolerance)
    return bool((shared - full).abs().max() <= allowed)
