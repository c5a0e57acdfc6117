"""The recipe options of issue 15 (loss aggregation, advantage scale, clip range, ratio level, dynamic sampling,
overlong completions, grading deadline): each variant against a plain reference loop, then in the trainer."""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer import ROWS, small_config, tiny_model, tiny_tokenizer

import rl._grading
import rl._trainer
from graders import Grade, StructuredGrader
from rl import (
    PPOConfig,
    PPOTrainer,
    aggregation_weights,
    clipped_policy_loss,
    clipped_surrogate,
    group_centred,
    overlong_penalty,
    uniform_groups,
)
from rl._advantages import ADVANTAGE_SCALES
from rl._grading import GraderCrashed, grade_within
from rl._losses import AGGREGATIONS, OVERLONG, RATIOS
from schemas import UserError


def fixed_batch(seed: int = 0, b: int = 6, t: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs (leaf, requires grad), old log-probs, per-row advantages broadcast to tokens, a mask with one empty row."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 1, 3, 0, 4, 2])[:b]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # (B, T)
    old = -torch.rand(b, t, generator=gen) * 2
    logprobs = (old + 0.3 * torch.randn(b, t, generator=gen)).requires_grad_(True)  # ratios well inside and outside the clip
    advantages = torch.randn(b, 1, generator=gen).expand(b, t).clone()
    return logprobs, old, advantages, mask


def reference_loss(logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                   ratio_level: str, aggregation: str, low: float, high: float, max_new_tokens: int) -> torch.Tensor:
    """The policy loss written element by element (autograd through the loop gives the reference gradient)."""
    rows: list[list[torch.Tensor]] = []
    for i in range(logprobs.shape[0]):
        real = [t for t in range(logprobs.shape[1]) if mask[i, t] == 1]
        if ratio_level == "sequence" and real:
            mean_log_ratio = sum(logprobs[i, t] - old[i, t] for t in real) / len(real)
        terms = []
        for t in real:
            ratio = torch.exp(logprobs[i, t] - old[i, t]) if ratio_level == "token" else torch.exp(mean_log_ratio)
            a = advantages[i, t]
            clipped = torch.clamp(ratio, low, high)
            terms.append(-torch.minimum(ratio * a, clipped * a))
        rows.append(terms)
    nonempty = [terms for terms in rows if terms]
    if aggregation == "token":
        return sum(term for terms in rows for term in terms) / sum(len(terms) for terms in rows)
    if aggregation == "sequence":
        return sum(sum(terms) / len(terms) for terms in nonempty) / len(nonempty)
    return sum(term for terms in rows for term in terms) / (len(nonempty) * max_new_tokens)  # constant


def library_loss(logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                 ratio_level: str, aggregation: str, low: float, high: float, max_new_tokens: int) -> torch.Tensor:
    per_token, _ = clipped_surrogate(RATIOS[ratio_level](logprobs, old, mask), advantages, low, high)
    return (per_token * aggregation_weights(aggregation, mask, max_new_tokens)).sum()


VARIANTS = list(itertools.product(RATIOS, AGGREGATIONS, [(0.8, 1.2), (0.8, 1.28), (1 - 3e-4, 1 + 4e-4)]))


@pytest.mark.parametrize(("ratio_level", "aggregation", "clip_range"), VARIANTS)
def test_every_policy_loss_variant_matches_the_reference_loop(ratio_level: str, aggregation: str,
                                                              clip_range: tuple[float, float]) -> None:
    for seed in range(3):
        logprobs, old, advantages, mask = fixed_batch(seed)
        kwargs = dict(ratio_level=ratio_level, aggregation=aggregation, low=clip_range[0], high=clip_range[1], max_new_tokens=8)
        ours = library_loss(logprobs, old, advantages, mask, **kwargs)  # type: ignore[arg-type]
        (grad,) = torch.autograd.grad(ours, logprobs)
        reference = reference_loss(logprobs, old, advantages, mask, **kwargs)  # type: ignore[arg-type]
        (reference_grad,) = torch.autograd.grad(reference, logprobs)
        assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
        assert torch.allclose(grad, reference_grad, atol=1e-6)
        assert bool((grad * (1 - mask) == 0).all())  # padding gets no gradient


def test_the_variants_differ_where_they_should() -> None:
    logprobs, old, advantages, mask = fixed_batch(1)
    base = dict(ratio_level="token", aggregation="token", low=0.8, high=1.2, max_new_tokens=8)
    losses = {key: library_loss(logprobs, old, advantages, mask, **{**base, key: value}).item()  # type: ignore[arg-type]
              for key, value in (("aggregation", "sequence"), ("aggregation", "constant"), ("ratio_level", "sequence"), ("high", 1.28))}
    token = library_loss(logprobs, old, advantages, mask, **base).item()  # type: ignore[arg-type]
    assert all(abs(value - token) > 1e-4 for value in losses.values()), (token, losses)


@pytest.mark.parametrize("aggregation", list(AGGREGATIONS))
@pytest.mark.parametrize("ratio_level", list(RATIOS))
def test_micro_batches_add_up_to_the_minibatch_loss_and_gradient(aggregation: str, ratio_level: str) -> None:
    logprobs, old, advantages, mask = fixed_batch(2)
    kwargs = dict(ratio_level=ratio_level, aggregation=aggregation, low=0.8, high=1.28, max_new_tokens=8)
    whole = library_loss(logprobs, old, advantages, mask, **kwargs)  # type: ignore[arg-type]
    (whole_grad,) = torch.autograd.grad(whole, logprobs)
    weights = aggregation_weights(aggregation, mask, 8)  # the minibatch's, sliced per micro-batch as the trainer does
    total = torch.zeros(())
    for first in range(0, 6, 4):
        rows = slice(first, first + 4)
        per_token, _ = clipped_surrogate(RATIOS[ratio_level](logprobs[rows], old[rows], mask[rows]), advantages[rows], 0.8, 1.28)
        total = total + (per_token * weights[rows]).sum()
    (micro_grad,) = torch.autograd.grad(total, logprobs)
    assert total.item() == pytest.approx(whole.item(), abs=1e-7)
    assert torch.allclose(micro_grad, whole_grad, atol=1e-7)


def test_the_symmetric_token_variant_is_the_old_clipped_policy_loss() -> None:
    logprobs, old, advantages, mask = fixed_batch(0)
    old_loss, _ = clipped_policy_loss(logprobs, old, advantages, mask, 0.2)
    new = library_loss(logprobs, old, advantages, mask, ratio_level="token", aggregation="token", low=0.8, high=1.2, max_new_tokens=8)
    assert new.item() == pytest.approx(old_loss.item(), abs=1e-7)


def test_the_sequence_ratio_is_the_geometric_mean_of_the_token_ratios() -> None:
    logprobs, old, _, mask = fixed_batch(3)
    logprobs = logprobs.detach()
    ratio = RATIOS["sequence"](logprobs, old, mask)
    for i in range(6):
        n = int(mask[i].sum())
        if n:
            token_ratios = [math.exp(float(logprobs[i, t] - old[i, t])) for t in range(n)]
            assert float(ratio[i, 0]) == pytest.approx(math.prod(token_ratios) ** (1 / n), rel=1e-5)


# --------------------------------------------------------------------------- advantages


def reference_scale(scores: list[float], group: int, kind: str, eps: float = 1e-6) -> list[float]:
    out = []
    everything = statistics.stdev(scores)
    for start in range(0, len(scores), group):
        members = scores[start:start + group]
        mean, spread = statistics.mean(members), statistics.stdev(members)
        for s in members:
            divisor = {"group": spread + eps, "batch": everything + eps, "none": 1.0}[kind]
            out.append((s - mean) / divisor)
    return out


@pytest.mark.parametrize("kind", list(ADVANTAGE_SCALES))
def test_advantage_scales_match_the_reference_loop(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(12, generator=gen, dtype=torch.float64)
    ours = ADVANTAGE_SCALES[kind](group_centred(scores, 4), scores, 4)
    assert ours.tolist() == pytest.approx(reference_scale(scores.tolist(), 4, kind), abs=1e-9)


def test_uniform_groups_use_a_tolerance_not_equality() -> None:
    scores = torch.tensor([0.7, 0.7 + 1e-9, 0.7, 0.7, 0.71, 0.7], dtype=torch.float64)
    assert uniform_groups(scores, 3, 1e-6).tolist() == [True, False]
    assert uniform_groups(scores, 3, 0.0).tolist() == [False, False]  # exact equality would keep the float-noise group
    assert uniform_groups(torch.tensor([0.5, math.nan, 0.5]), 3, 1e-6).tolist() == [False]  # NaN: the NaN rule's to handle


def test_overlong_variants_match_the_reference() -> None:
    lengths, has_eos = torch.tensor([3, 10, 13, 16, 16]), torch.tensor([True, True, True, False, True])
    scores = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9])
    expected_penalty = [min(1.0, max(0.0, (n - 12) / 4)) for n in lengths.tolist()]
    assert overlong_penalty(lengths, max_new_tokens=16, buffer=4).tolist() == pytest.approx(expected_penalty)
    kwargs = dict(max_new_tokens=16, buffer=4)
    kept, trained = OVERLONG["keep"](scores, lengths, has_eos, **kwargs)
    assert kept.tolist() == scores.tolist() and trained.all()
    kept, trained = OVERLONG["mask"](scores, lengths, has_eos, **kwargs)
    assert kept.tolist() == scores.tolist() and trained.tolist() == has_eos.tolist()
    shaped, trained = OVERLONG["soft"](scores, lengths, has_eos, **kwargs)
    assert shaped.tolist() == pytest.approx([s - p for s, p in zip(scores.tolist(), expected_penalty)]) and trained.all()


# --------------------------------------------------------------------------- PPOConfig


@pytest.mark.parametrize(("overrides", "pointer"), [
    ({"loss_aggregation": "mean"}, "/loss_aggregation"),
    ({"ratio_level": "group"}, "/ratio_level"),
    ({"overlong": "drop"}, "/overlong"),
    ({"clip_high": 0.0}, "/clip_high"),
    ({"clip_low": 1.5}, "/clip_low"),
    ({"scale_advantages": "none", "advantage": "rloo"}, "/scale_advantages"),
    ({"scale_advantages": "median"}, "/scale_advantages"),
    ({"drop_uniform_groups": True, "advantage": "gae"}, "/drop_uniform_groups"),
    ({"uniform_tolerance": -1e-6}, "/uniform_tolerance"),
    ({"max_resample_rounds": -1}, "/max_resample_rounds"),
    ({"overlong": "soft", "overlong_buffer": 100}, "/overlong_buffer"),
    ({"grade_timeout_s": 0}, "/grade_timeout_s"),
    ({"grade_timeout_s": math.inf}, "/grade_timeout_s"),
])
def test_bad_recipe_options_raise_at_construction(overrides: dict[str, Any], pointer: str) -> None:
    with pytest.raises(UserError) as info:
        PPOConfig(**{"advantage": "grpo", **overrides})
    assert info.value.pointer == pointer and info.value.code == "bad_config"


def test_clip_range_defaults_to_clip_on_both_sides() -> None:
    assert PPOConfig(clip=0.1).clip_range == pytest.approx((0.9, 1.1))
    assert PPOConfig(clip=0.2, clip_high=0.28).clip_range == pytest.approx((0.8, 1.28))
    assert PPOConfig(clip_low=3e-4, clip_high=4e-4).clip_range == pytest.approx((1 - 3e-4, 1 + 4e-4))


def test_the_train_config_reads_the_recipe_keys() -> None:
    tomllib = pytest.importorskip("tomllib")
    from rl._cli import _ppo_config

    section = tomllib.loads("""
[ppo]
advantage = "grpo"
loss_aggregation = "constant"
scale_advantages = "none"
whiten_advantages = false
clip_low = 0.2
clip_high = 0.28
ratio_level = "sequence"
drop_uniform_groups = true
uniform_tolerance = 1e-6
max_resample_rounds = 2
overlong = "soft"
overlong_buffer = 8
grade_timeout_s = 30
""")["ppo"]
    config = _ppo_config(section)
    assert (config.loss_aggregation, config.scale_advantages, config.ratio_level, config.overlong) == ("constant", "none", "sequence", "soft")
    assert config.clip_range == pytest.approx((0.8, 1.28)) and config.grade_timeout_s == 30.0 and config.drop_uniform_groups
    with pytest.raises(UserError) as info:
        _ppo_config({"loss_aggregation": "mean"})
    assert info.value.pointer == "/ppo/loss_aggregation"


# --------------------------------------------------------------------------- in the trainer


class Graded:
    """Grades like the structured grader, then maps each score through ``shape(score, i, reference)``."""

    def __init__(self) -> None:
        self.inner = StructuredGrader()
        self.calls = 0

    def shape(self, score: float, i: int, reference: Any) -> float:
        raise NotImplementedError

    def grade_batch(self, responses: list[str], references: list[Any]) -> list[Grade]:
        grades = self.inner.grade_batch(responses, references)
        self.calls += 1
        return [Grade(self.shape(g.score, i, r)) for i, (g, r) in enumerate(zip(grades, references))]


class FlatForRome(Graded):
    """Rome's groups score 0.7 (one sample 1e-9 above): uniform within the tolerance; every other sample a distinct score."""

    def __init__(self) -> None:
        super().__init__()
        self.rome_groups = 0

    def grade_batch(self, responses: list[str], references: list[Any]) -> list[Grade]:
        self.rome_groups += sum(r == {"city": "Rome"} for r in references[::4])
        return super().grade_batch(responses, references)

    def shape(self, score: float, i: int, reference: Any) -> float:
        if reference == {"city": "Rome"}:
            return 0.7 + (1e-9 if i % 4 == 1 else 0.0)
        return (i % 4) / 4 + score / 8


@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_dynamic_sampling_drops_uniform_groups_and_fills_the_batch(advantage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tiny_tokenizer()
    grader = FlatForRome()
    trainer = PPOTrainer(tiny_model(tok), tok, grader, ROWS, [], small_config(advantage=advantage, drop_uniform_groups=True,
                                                                              max_resample_rounds=3))
    trained_rows: list[int] = []
    original = rl._trainer.whiten

    def spy(x: torch.Tensor, mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        trained_rows.append(x.shape[0])
        return original(x, mask, **kwargs)

    monkeypatch.setattr(rl._trainer, "whiten", spy)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    totals = {"dropped": 0.0, "rounds": 0.0}
    for _ in range(3):
        metrics = trainer.step()
        totals["dropped"] += metrics["rollout/dropped_groups"]
        totals["rounds"] += metrics["rollout/resample_rounds"]
        assert 0 <= metrics["rollout/resample_rounds"] <= 3
    assert totals["dropped"] == grader.rome_groups > 0  # every Rome group sampled was dropped, nothing else
    assert totals["rounds"] == grader.calls - 3  # each extra rollout is one extra grading call
    assert trained_rows == [8, 8, 8]  # 2 prompts x 4 samples: each batch filled with groups that have a signal
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


class FlatEverywhere(Graded):
    def shape(self, score: float, i: int, reference: Any) -> float:
        return 0.5 + (1e-9 if i % 2 else 0.0)


def test_dynamic_sampling_without_any_signal_does_not_train() -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, FlatEverywhere(), ROWS, [],
                         small_config(advantage="grpo", drop_uniform_groups=True, max_resample_rounds=1, kl_coef=0.0))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = trainer.step()
    assert metrics["rollout/dropped_groups"] == 4 and metrics["rollout/resample_rounds"] == 1  # 2 groups x 2 rollouts
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert metrics["reward/mean"] == pytest.approx(0.5, abs=1e-8)  # the reward of everything sampled is still logged


def test_overlong_mask_leaves_truncated_rows_out_of_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every minibatch's loss mask (the one the policy loss is weighted by) is empty exactly on the rows without EOS."""
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, [],
                         small_config(advantage="reinforce++", overlong="mask", max_new_tokens=6, micro_batch_size=None))
    rollouts: list[Any] = []
    masks: list[torch.Tensor] = []
    indices: list[torch.Tensor] = []
    sample, weights, score = rl._trainer.sample_rollout, rl._trainer.aggregation_weights, rl._trainer.score_completions

    def sample_spy(*args: Any, **kwargs: Any) -> Any:
        out = sample(*args, **kwargs)
        rollouts.append(out[0])
        return out

    def weights_spy(kind: str, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        masks.append(mask.clone())
        return weights(kind, mask, max_new_tokens)

    def score_spy(model: Any, roll: Any, index: torch.Tensor, temperature: float) -> Any:
        if torch.is_grad_enabled():  # the update's forward: `index` is the minibatch's rows
            indices.append(index.clone())
        return score(model, roll, index, temperature)

    monkeypatch.setattr(rl._trainer, "sample_rollout", sample_spy)
    monkeypatch.setattr(rl._trainer, "aggregation_weights", weights_spy)
    monkeypatch.setattr(rl._trainer, "score_completions", score_spy)
    trainer.step()
    has_eos = rollouts[0].has_eos
    assert bool(has_eos.any()) and not bool(has_eos.all())  # the seeded batch mixes ended and truncated completions
    assert len(masks) == len(indices) > 0
    for mask, index in zip(masks, indices):
        assert (mask.sum(dim=1) > 0).tolist() == has_eos[index].tolist()


# --------------------------------------------------------------------------- grading under a deadline


class HangsOnTheLast:
    """Grades like the structured grader, except that the last completion of a batch of ``hang_at`` hangs (in the worker),
    after saying so through ``started`` and leaving its process id in ``pid``; ``hang`` switches the hanging on and off."""

    def __init__(self, batch: int) -> None:
        self.inner, self.batch, self.seen = StructuredGrader(), batch, 0
        context = multiprocessing.get_context("fork")
        self.started, self.hang, self.pid = context.Event(), context.Event(), context.Value("i", 0)
        self.hang.set()

    def grade_batch(self, responses: list[str], references: list[Any]) -> Sequence[Any]:
        self.seen += len(responses)  # grade_within grades one completion per call, in order, in one worker
        if self.hang.is_set() and self.seen == self.batch:
            self.pid.value = os.getpid()
            self.started.set()
            time.sleep(3600)  # killed long before
        return self.inner.grade_batch(responses, references)


def deadline_when(event: Any) -> Any:
    """A clock for ``rl._grading``: time stands still until ``event`` is set, then the deadline has passed."""
    return lambda: math.inf if event.is_set() else 0.0


def test_a_hung_grade_is_skipped_as_nan_its_worker_stopped_and_training_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tiny_tokenizer()
    grader = HangsOnTheLast(batch=8)
    monkeypatch.setattr(rl._grading, "monotonic", deadline_when(grader.started))
    trainer = PPOTrainer(tiny_model(tok), tok, grader, ROWS, [], small_config(advantage="grpo", grade_timeout_s=5.0))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = trainer.step()
    assert metrics["rollout/grade_timeouts"] == 1 and metrics["rollout/skipped_nan"] == 1
    assert math.isfinite(metrics["reward/mean"])  # the 7 graded completions
    with pytest.raises(ProcessLookupError):
        os.kill(grader.pid.value, 0)  # the worker that hung is gone
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # the other group still trained
    grader.hang.clear()
    grader.started.clear()
    grader.seen = 0
    metrics = trainer.step()  # the run goes on
    assert metrics["rollout/grade_timeouts"] == 0 and metrics["rollout/skipped_nan"] == 0


def test_grade_within_returns_grades_in_order_and_nan_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    grader = HangsOnTheLast(batch=3)
    monkeypatch.setattr(rl._grading, "monotonic", deadline_when(grader.started))
    responses = ['{"city": "Paris"}', '{"city": "Rome"}', '{"city": "Paris"}', '{"city": "Paris"}']
    results = grade_within(grader, responses, [{"city": "Paris"}] * 4, timeout_s=1.0)
    expected = [g.score for g in StructuredGrader().grade_batch(responses[:2], [{"city": "Paris"}] * 2)]
    assert [r.score for r in results[:2]] == expected and expected[0] == 1.0 > expected[1]
    assert all(math.isnan(r.score) and r.timed_out for r in results[2:])  # the hung one and the one after it
    assert results[0].sub_scores == {"city": 1.0}


def test_grade_within_grades_everything_when_in_time() -> None:
    results = grade_within(StructuredGrader(), ['{"city": "Paris"}', "no"], [{"city": "Paris"}] * 2, timeout_s=3600)
    assert results[0].score == 1.0 and results[1].score < 1.0 and not any(r.timed_out for r in results)


class Raises:
    def grade_batch(self, responses: list[str], references: list[Any]) -> list[Grade]:
        raise ValueError("a bug in the grader")


def test_a_grader_bug_under_a_deadline_raises_not_nan() -> None:
    with pytest.raises(GraderCrashed, match="a bug in the grader"):
        grade_within(Raises(), ["x"], [None], timeout_s=3600)


def test_the_presets_in_the_docs_are_valid_configs_and_match_the_benchmark() -> None:
    import re
    import sys

    tomllib = pytest.importorskip("tomllib")
    from rl._cli import _ppo_config

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "rl.md").read_text(encoding="utf-8")
    presets = dict(re.findall(r"^#### Preset `(\w+)`.*?^```toml\n(.*?)^```", page, re.MULTILINE | re.DOTALL))
    assert set(presets) == {"grpo", "dapo", "dr_grpo", "gspo"}
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import recipes
    finally:
        sys.path.remove(str(root / "benchmarks"))
    for name, block in presets.items():
        section = tomllib.loads(block)["ppo"]
        _ppo_config(section)
        expected = dict(recipes.PRESETS[name])
        if "overlong_buffer" in section:  # the benchmark sets it from its own max_new_tokens
            expected["overlong_buffer"] = section["overlong_buffer"]
        assert section == expected, name
