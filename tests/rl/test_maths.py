"""The trainer's maths against plain Python loops (CleanRL's fast-GAE-equals-reference idea)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rl import (
    adaptive_kl_coef,
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    grpo,
    kl_from_logits,
    kl_k1,
    kl_k3,
    lr_factor,
    reinforce_pp,
    rloo,
    whiten,
)


def batch(seed: int, b: int = 4, t: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # (B, T), trailing padding
    rewards = torch.randn(b, t, generator=gen) * mask
    values = torch.randn(b, t, generator=gen) * mask
    return rewards, values, mask


def gae_reference(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """One sequence, real tokens only, written the textbook way."""
    n = len(rewards)
    out = [0.0] * n
    running = 0.0
    for t in reversed(range(n)):
        next_value = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        out[t] = running
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
def test_gae_matches_the_reference_loop(seed: int, gamma: float, lam: float) -> None:
    rewards, values, mask = batch(seed)
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    for i in range(rewards.shape[0]):
        n = int(mask[i].sum())
        expected = gae_reference(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
        assert adv[i, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert ret[i, :n].tolist() == pytest.approx([a + v for a, v in zip(expected, values[i, :n].tolist())], abs=1e-5)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0


def group_reference(scores: list[float], k: int, kind: str) -> list[float]:
    out = []
    for start in range(0, len(scores), k):
        g = scores[start:start + k]
        mean = sum(g) / k
        std = math.sqrt(sum((x - mean) ** 2 for x in g) / (k - 1))  # torch.std is the unbiased one
        for x in g:
            if kind == "grpo":
                out.append((x - mean) / (std + 1e-6))
            else:
                out.append(x - (sum(g) - x) / (k - 1))
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_group_baselines_match_the_reference_loop(seed: int, kind: str) -> None:
    rng = random.Random(seed)
    k = rng.randint(2, 6)
    scores = [rng.random() for _ in range(k * rng.randint(1, 4))]
    fn = grpo if kind == "grpo" else rloo
    got = fn(torch.tensor(scores, dtype=torch.float64), k).tolist()
    assert got == pytest.approx(group_reference(scores, k, kind), abs=1e-9)


def test_reinforce_pp_normalises_over_the_batch() -> None:
    scores = [0.2, 0.9, 0.4, 0.4, 1.0]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((x - mean) ** 2 for x in scores) / len(scores))
    got = reinforce_pp(torch.tensor(scores, dtype=torch.float64)).tolist()
    assert got == pytest.approx([(x - mean) / (std + 1e-6) for x in scores], abs=1e-9)


def test_group_baselines_reject_bad_group_sizes() -> None:
    with pytest.raises(ValueError):
        grpo(torch.tensor([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError):
        rloo(torch.tensor([1.0, 2.0]), 1)


def test_whiten_uses_real_tokens_only() -> None:
    _, values, mask = batch(3)
    out = whiten(values, mask)
    real = out[mask.bool()]
    assert abs(float(real.mean())) < 1e-5 and abs(float(real.var(unbiased=False)) - 1.0) < 1e-3
    assert out[~mask.bool()].abs().sum() == 0


def test_clipped_policy_loss_matches_the_reference_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    _, _, mask = batch(1)
    logp, old, adv = (torch.randn(mask.shape, generator=gen) * 0.3 for _ in range(3))
    loss, clipfrac = clipped_policy_loss(logp, old, adv, mask, clip=0.2)
    terms, clipped = [], []
    for lp, o, a, m in zip(logp.flatten().tolist(), old.flatten().tolist(), adv.flatten().tolist(), mask.flatten().tolist()):
        if not m:
            continue
        ratio = math.exp(lp - o)
        bounded = min(max(ratio, 0.8), 1.2)
        terms.append(-min(ratio * a, bounded * a))
        clipped.append(bounded * a < ratio * a)
    assert float(loss) == pytest.approx(sum(terms) / len(terms), abs=1e-5)
    assert float(clipfrac) == pytest.approx(sum(clipped) / len(clipped), abs=1e-6)


def test_clipped_value_loss_matches_the_reference_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    _, _, mask = batch(2)
    v, old, ret = (torch.randn(mask.shape, generator=gen) for _ in range(3))
    loss = clipped_value_loss(v, old, ret, mask, clip=0.2)
    terms = []
    for a, o, r, m in zip(v.flatten().tolist(), old.flatten().tolist(), ret.flatten().tolist(), mask.flatten().tolist()):
        if m:
            c = o + min(max(a - o, -0.2), 0.2)
            terms.append(0.5 * max((a - r) ** 2, (c - r) ** 2))
    assert float(loss) == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_kl_estimators_and_entropy() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, generator=gen)
    ref_logits = torch.randn(2, 3, 5, generator=gen)
    logp = torch.log_softmax(logits, -1)
    ref = torch.log_softmax(ref_logits, -1)
    # sampled-token estimators average to the exact KL under the policy's own distribution
    exact = (logp.exp() * (logp - ref)).sum(-1)  # (B, T)
    k1 = (logp.exp() * kl_k1(logp, ref)).sum(-1)
    k3 = (logp.exp() * kl_k3(logp, ref)).sum(-1)
    assert torch.allclose(k1, exact, atol=1e-6) and torch.allclose(k3, exact, atol=1e-6)
    assert (kl_k3(logp, ref) >= -1e-7).all()
    h = entropy_from_logits(logits)
    assert torch.allclose(h, -(logp.exp() * logp).sum(-1), atol=1e-5)
    mask = torch.ones(2, 3)
    assert float(approx_kl(logp[..., 0], ref[..., 0], mask)) == pytest.approx(
        float((0.5 * (logp[..., 0] - ref[..., 0]) ** 2).mean()), abs=1e-7)


def test_kl_from_logits_matches_the_sum_over_the_vocabulary() -> None:
    gen = torch.Generator().manual_seed(3)
    logits, ref_logits = torch.randn(2, 3, 5, generator=gen), torch.randn(2, 3, 5, generator=gen)
    got = kl_from_logits(logits, ref_logits)
    for b in range(2):
        for t in range(3):
            p = torch.softmax(logits[b, t], -1).tolist()
            q = torch.softmax(ref_logits[b, t], -1).tolist()
            assert float(got[b, t]) == pytest.approx(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)), abs=1e-5)
    assert (got >= 0).all() and torch.allclose(kl_from_logits(logits, logits), torch.zeros(2, 3), atol=1e-6)


class ReferenceKLController:
    """Ziegler et al.'s controller written as the usual stateful object (value, target, horizon; update(current, n))."""

    def __init__(self, init: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current: float, n_steps: int) -> None:
        error = current / self.target - 1
        error = 0.2 if error > 0.2 else -0.2 if error < -0.2 else error
        self.value = self.value * (1 + error * n_steps / self.horizon)


@pytest.mark.parametrize("seed", range(3))
def test_adaptive_kl_coef_matches_the_reference_controller(seed: int) -> None:
    rng = random.Random(seed)
    reference, coef = ReferenceKLController(0.05, target=2.0, horizon=500), 0.05
    for _ in range(50):
        kl, n = rng.uniform(0.0, 5.0), rng.choice([16, 64])
        reference.update(kl, n)
        coef = adaptive_kl_coef(coef, kl, target=2.0, horizon=500, n_samples=n)
        assert coef == pytest.approx(reference.value, rel=1e-12)


def test_adaptive_kl_coef_moves_towards_the_target_and_ignores_nan() -> None:
    assert adaptive_kl_coef(0.1, 4.0, target=2.0, horizon=100, n_samples=10) > 0.1  # KL too high: penalise more
    assert adaptive_kl_coef(0.1, 1.0, target=2.0, horizon=100, n_samples=10) < 0.1  # too low: penalise less
    assert adaptive_kl_coef(0.1, 2.0, target=2.0, horizon=100, n_samples=10) == 0.1
    assert adaptive_kl_coef(0.1, math.nan, target=2.0, horizon=100, n_samples=10) == 0.1
    # the proportional error is clipped at +-0.2: a KL 100x the target moves it no more than 1.2x the target does
    assert adaptive_kl_coef(0.1, 200.0, target=2.0, horizon=100, n_samples=10) == adaptive_kl_coef(0.1, 2.4, target=2.0, horizon=100,
                                                                                                    n_samples=10)


# --------------------------------------------------------------------------- learning-rate schedule


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_lr_factor_matches_a_plain_schedule(schedule: str, warmup: int) -> None:
    decay = None if schedule == "constant" else 10
    previous = math.inf
    for step in range(14):
        if step < warmup:
            expected = (step + 1) / warmup  # rises by 1/warmup a step, full rate on the last warm-up step
        elif decay is None:
            expected = 1.0
        else:
            done = min(step - warmup, decay - warmup) / (decay - warmup)  # fraction of the decay behind us
            expected = 1.0 - done if schedule == "linear" else (1.0 + math.cos(math.pi * done)) / 2.0
        got = lr_factor(step, warmup_steps=warmup, schedule=schedule, decay_steps=decay)
        assert got == pytest.approx(expected, abs=1e-12), step
        if step >= warmup:
            assert got <= previous  # never rises after warm-up
            previous = got
    if decay is not None:
        assert lr_factor(decay, warmup_steps=warmup, schedule=schedule, decay_steps=decay) == 0.0
        assert lr_factor(warmup, warmup_steps=warmup, schedule=schedule, decay_steps=decay) == 1.0
