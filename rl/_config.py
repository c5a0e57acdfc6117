"""``PPOConfig``: every knob of the PPO trainer, each documented once and checked at construction.

A bad value raises :class:`schemas.UserError` at once, with a stable ``code``
(``bad_config``), the JSON pointer of the field (``/minibatch_size``) and a hint.

>>> PPOConfig(samples_per_prompt=4, prompts_per_batch=2).batch_size
8
>>> PPOConfig(clip=0.0)
Traceback (most recent call last):
...
schemas._errors.UserError: clip must be > 0, got 0.0 [bad_config at /clip] (hint: PPO's usual value is 0.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, NoReturn, get_args

from schemas import UserError

from ._advantages import AdvantageEstimator, AdvantageScale

LRSchedule = Literal["constant", "linear", "cosine"]
"""The learning rate after warm-up: unchanged, or decayed to 0 at ``lr_decay_steps`` along a line or a half cosine."""

DType = Literal["float32", "bfloat16", "float16", "auto"]
"""A floating-point type by name; ``auto`` is the checkpoint's own (a ``PPOTrainer``: the given model's)."""

KLEstimator = Literal["k1", "k3"]
"""How the KL to the initial policy enters training: ``k1`` as a per-token penalty inside the
reward, ``k3`` as a separate, always non-negative loss term."""

LossAggregation = Literal["token", "sequence", "constant"]
"""How per-token policy losses become one number (``rl.aggregation_weights``): the mean over every real token of
the minibatch (``token``, DAPO), each sequence's mean then the mean over sequences (``sequence``, GRPO), or the sum
over tokens divided by ``sequences * max_new_tokens`` (``constant``, Dr. GRPO)."""

RatioLevel = Literal["token", "sequence"]
"""The importance ratio: one per token (PPO, GRPO, DAPO), or one per completion, the exponent of its mean token
log-ratio, shared by its tokens (GSPO; ``rl.sequence_ratio``)."""

GradeBackend = Literal["local", "processes", "ray"]
"""Where a rollout is graded: in this process by the grader's own ``grade_batch`` (``local``), or on graders' batch
engine (``graders.grade_batch``) in worker processes on this machine (``processes``) or as Ray tasks (``ray``)."""

Overlong = Literal["keep", "mask", "soft"]
"""A completion that hit ``max_new_tokens`` without EOS: trained on as it is (``keep``), left out of the loss
(``mask``), or every completion that reaches the last ``overlong_buffer`` tokens penalised linearly (``soft``, DAPO)."""


@dataclass(frozen=True)
class PPOConfig:
    """The PPO trainer's settings; defaults suit RFT's regime (dozens of prompts, many samples each)."""

    learning_rate: float = 1e-5
    """AdamW learning rate for the policy (and the value head); the peak when a schedule is set."""
    warmup_steps: int = 0
    """Trainer steps over which the learning rate rises linearly to ``learning_rate`` (0: none); see ``rl.lr_factor``."""
    lr_schedule: LRSchedule = "constant"
    """After warm-up: ``constant``, or ``linear`` / ``cosine`` decay to 0 at step ``lr_decay_steps``."""
    lr_decay_steps: int | None = None
    """The trainer step at which ``linear`` and ``cosine`` reach 0 (warm-up included; required by them, unused by
    ``constant``). Usually the run's total steps."""
    samples_per_prompt: int = 4
    """Completions sampled per prompt; they form one group for ``grpo`` and ``rloo``."""
    prompts_per_batch: int = 8
    """Prompts per rollout batch; one ``step()`` generates ``prompts_per_batch * samples_per_prompt`` completions."""
    max_new_tokens: int = 64
    """The longest completion; a completion that reaches it without EOS gets ``no_eos_penalty``."""
    temperature: float = 1.0
    """Sampling temperature; log-probabilities are computed from ``logits / temperature`` too, so the
    ratio compares the distribution that actually sampled the tokens."""
    top_k: int = 0
    """Sample among the ``top_k`` most likely tokens only (0: off); applied after ``temperature``, before ``top_p``.
    Log-probs (the sampler's, the trainer's and the reference's) are those of the cut, renormalised distribution,
    with the sampled token always counted in (``rl._rollout.gather_logprobs``), so the ratio starts at 1."""
    top_p: float = 1.0
    """Nucleus sampling: the most likely tokens holding ``top_p`` of the probability (1.0: off); log-probs as ``top_k``."""
    advantage: AdvantageEstimator = "gae"
    """``gae`` (value head), or critic-free ``grpo``, ``rloo`` (both need ``samples_per_prompt >= 2``) or ``reinforce++``."""
    gamma: float = 1.0
    """Discount over completion tokens (``gae`` only)."""
    lam: float = 0.95
    """GAE's lambda (``gae`` only)."""
    kl_coef: float = 0.05
    """Weight of the KL to the frozen initial policy (the starting weight when ``kl_target`` is set); 0 turns the penalty off."""
    kl_target: float | None = None
    """None: ``kl_coef`` stays fixed. A number: the KL per completion (nats, as ``kl/to_init``) that an adaptive
    coefficient steers towards, with Ziegler et al.'s proportional controller (``rl.adaptive_kl_coef``)."""
    kl_horizon: int = 10000
    """Adaptive KL only: completions over which the coefficient may change by at most 20%; smaller reacts faster."""
    kl_estimator: KLEstimator = "k1"
    """``k1``: ``-kl_coef * (logp - logp_ref)`` added to every token's reward; ``k3``: ``kl_coef * k3`` added to the loss."""
    clip: float = 0.2
    """PPO's ratio clip: the surrogate is flat outside ``[1 - clip, 1 + clip]`` (each side overridable below)."""
    clip_low: float | None = None
    """The lower side of the ratio's clip range, ``1 - clip_low`` (None: ``clip``). See :attr:`clip_range`."""
    clip_high: float | None = None
    """The upper side, ``1 + clip_high`` (None: ``clip``); DAPO's "clip-higher" raises it (0.28 against 0.2)."""
    ratio_level: RatioLevel = "token"
    """``token``: a ratio per token; ``sequence``: GSPO's length-normalised ratio per completion (use a far smaller
    clip range with it: GSPO clips at 3e-4 / 4e-4)."""
    loss_aggregation: LossAggregation = "token"
    """``token`` (DAPO, TRL's default), ``sequence`` (GRPO) or ``constant`` (Dr. GRPO); see :data:`LossAggregation`."""
    scale_advantages: AdvantageScale = "group"
    """``grpo`` only: divide each centred score by its group's std (``group``, GRPO), the whole batch's (``batch``) or
    by nothing (``none``, Dr. GRPO). Dr. GRPO also needs ``whiten_advantages=False``, which would otherwise rescale."""
    drop_uniform_groups: bool = False
    """``grpo``/``rloo`` only: a group whose scores all lie within ``uniform_tolerance`` of each other has advantage 0
    everywhere, so it is dropped and more prompts are sampled, up to ``max_resample_rounds`` more rollouts, until
    ``prompts_per_batch`` groups with a signal are in hand (DAPO's dynamic sampling). Logged as
    ``rollout/dropped_groups`` and ``rollout/resample_rounds``."""
    uniform_tolerance: float = 1e-6
    """A group is uniform when ``max - min`` of its scores is at most this. Sized for scores in [0, 1] (F1-type rewards
    differ by float noise, e.g. ``0.7`` and ``0.7 + 1e-9``, where a 0/1 reward would be exactly equal); scale it with
    a grader's score range."""
    max_resample_rounds: int = 4
    """``drop_uniform_groups``: extra rollouts a step may sample to fill its batch; after them it trains on what it has."""
    overlong: Overlong = "keep"
    """A completion that reached ``max_new_tokens`` without EOS: ``keep``, ``mask`` or ``soft``; see :data:`Overlong`."""
    overlong_buffer: int = 4
    """``soft``: the last this many tokens before ``max_new_tokens`` over which the penalty rises linearly from 0 to 1;
    a completion of length ``L`` loses ``min(1, max(0, L - (max_new_tokens - overlong_buffer)) / overlong_buffer)``."""
    grade_timeout_s: float | None = None
    """None: the rollout is graded in this process, for as long as it takes. A number: it is graded in a forked worker
    process for at most this many seconds; samples not graded by then score NaN (skipped and counted as
    ``rollout/grade_timeouts``), the worker's process group is killed, and training goes on (``rl/_grading.py``)."""
    grade_backend: GradeBackend = "local"
    """``local``: the rollout is graded in this process by the grader's ``grade_batch``. ``processes``: on graders' batch
    engine, in up to ``grade_workers`` worker processes (forked where safe), started only where a probe of the first
    rows shows they pay. ``ray``: as Ray tasks, on the Ray the program runs, else the cluster ``RAY_ADDRESS`` names,
    else a local Ray with ``grade_workers`` CPUs, started once for the run. Both need a grader of ``graders`` (one with
    ``grade(response, reference)``); not with ``grade_timeout_s``. See ``docs/rl.md`` (grading at scale)."""
    grade_workers: int | None = None
    """``processes`` and ``ray``: the most worker processes (a local Ray's CPUs); None: every CPU of this machine."""
    value_clip: float = 0.2
    """How far a value prediction may move from its rollout value before its loss is clipped (``gae`` only)."""
    value_coef: float = 0.1
    """Weight of the value loss in the total loss (``gae`` only)."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    minibatch_size: int = 8
    """Completions per gradient step; at most the batch size. Minibatches are filled group by group (a prompt's
    samples side by side, each prompt run once), so a multiple of ``samples_per_prompt`` holds whole groups."""
    micro_batch_size: int | None = None
    """Completions per forward/backward (None: the whole minibatch at once). Gradients accumulate over the
    micro-batches of a minibatch, each weighted by its share of the minibatch's tokens, so the step is the one a
    single pass would take; only peak memory changes. A multiple of ``samples_per_prompt`` runs each prompt once."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    no_eos_penalty: float = 0.0
    """Subtracted from the score of a completion that never emitted EOS (0 turns it off)."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over the batch's real tokens."""
    ratio_skip_threshold: float = 10.0
    """A minibatch whose mean importance ratio exceeds this is skipped (no update) and counted."""
    seed: int = 0
    """Seeds prompt order, sampling and minibatch shuffling."""
    keep_last: int = 3
    """Checkpoints kept by ``save_checkpoint``; older ``step-*`` directories are deleted."""

    @property
    def clip_range(self) -> tuple[float, float]:
        """The ratio's clip range ``(1 - clip_low, 1 + clip_high)``, each side defaulting to ``clip``.

        >>> PPOConfig(clip=0.2, clip_high=0.28).clip_range
        (0.8, 1.28)
        """
        low = self.clip if self.clip_low is None else self.clip_low
        high = self.clip if self.clip_high is None else self.clip_high
        return 1.0 - low, 1.0 + high

    @property
    def batch_size(self) -> int:
        """Completions per rollout: ``prompts_per_batch * samples_per_prompt``."""
        return self.prompts_per_batch * self.samples_per_prompt

    def __post_init__(self) -> None:
        for f in fields(self):  # numbers first: every other check assumes finite numbers
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                _reject(f.name, f"{f.name} must be a finite number, got {value}")
        for name in ("samples_per_prompt", "prompts_per_batch", "max_new_tokens", "ppo_epochs", "minibatch_size", "keep_last",
                     "kl_horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _reject(name, f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            _reject("top_k", f"top_k must be an integer >= 0, got {self.top_k!r}", "0 turns top-k sampling off")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            _reject("top_p", f"top_p must be in (0, 1], got {self.top_p!r}", "1.0 turns nucleus sampling off; 0.9-0.95 are usual")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            _reject("warmup_steps", f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.lr_schedule not in get_args(LRSchedule):
            _reject("lr_schedule", f"unknown lr_schedule {self.lr_schedule!r}", "choose one of " + ", ".join(get_args(LRSchedule)))
        decay = self.lr_decay_steps
        if self.lr_schedule == "constant":
            if decay is not None:
                _reject("lr_decay_steps", "lr_decay_steps is only read by the linear and cosine schedules",
                        "set lr_schedule = 'linear' or 'cosine', or drop lr_decay_steps")
        elif isinstance(decay, bool) or not isinstance(decay, int) or decay <= self.warmup_steps:
            _reject("lr_decay_steps", f"the {self.lr_schedule} schedule needs lr_decay_steps, an integer above warmup_steps "
                    f"({self.warmup_steps}), got {decay!r}", "usually the run's total steps")
        for name in ("learning_rate", "temperature", "clip", "value_clip", "max_grad_norm"):
            if getattr(self, name) <= 0:
                hint = {"clip": "PPO's usual value is 0.2", "temperature": "use 1.0 to sample from the model as is"}
                _reject(name, f"{name} must be > 0, got {getattr(self, name)}", hint.get(name, ""))
        for name in ("kl_coef", "value_coef", "no_eos_penalty"):
            if getattr(self, name) < 0:
                _reject(name, f"{name} must be >= 0, got {getattr(self, name)}", "use 0 to turn it off")
        if self.kl_target is not None:
            if isinstance(self.kl_target, bool) or not isinstance(self.kl_target, (int, float)) or not self.kl_target > 0:
                _reject("kl_target", f"kl_target must be a number > 0 or None, got {self.kl_target!r}",
                        "None keeps kl_coef fixed; TRL's adaptive default is 6 nats per completion")
            if self.kl_coef == 0:
                _reject("kl_coef", "an adaptive KL coefficient (kl_target) needs a starting kl_coef > 0",
                        "the controller multiplies kl_coef, so 0 would stay 0; try kl_coef=0.05")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            name = "gamma" if not 0 <= self.gamma <= 1 else "lam"
            _reject(name, f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.advantage not in get_args(AdvantageEstimator):
            _reject("advantage", f"unknown advantage estimator {self.advantage!r}",
                    "choose one of " + ", ".join(get_args(AdvantageEstimator)))
        if self.kl_estimator not in get_args(KLEstimator):
            _reject("kl_estimator", f"unknown KL estimator {self.kl_estimator!r}", "choose k1 (in the reward) or k3 (as a loss)")
        if self.advantage in ("grpo", "rloo") and self.samples_per_prompt < 2:
            _reject("samples_per_prompt", f"{self.advantage} compares the samples of one prompt, so it needs "
                    f"samples_per_prompt >= 2, got {self.samples_per_prompt}", "raise samples_per_prompt or use advantage='gae'")
        if self.minibatch_size > self.batch_size:
            _reject("minibatch_size", f"minibatch_size {self.minibatch_size} exceeds the batch of {self.batch_size} completions",
                    "lower minibatch_size or raise prompts_per_batch * samples_per_prompt")
        if self.micro_batch_size is not None:
            if isinstance(self.micro_batch_size, bool) or not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 1:
                _reject("micro_batch_size", f"micro_batch_size must be an integer >= 1 or None, got {self.micro_batch_size!r}",
                        "None runs each minibatch in one forward/backward")
            if self.micro_batch_size > self.minibatch_size:
                _reject("micro_batch_size", f"micro_batch_size {self.micro_batch_size} exceeds minibatch_size {self.minibatch_size}",
                        "a micro-batch is a slice of a minibatch: lower micro_batch_size (or drop it)")
        self._check_recipe()
        if self.ratio_skip_threshold <= 1:
            _reject("ratio_skip_threshold", f"ratio_skip_threshold must be > 1, got {self.ratio_skip_threshold}",
                    "the ratio starts at 1; 10 skips only real blow-ups")

    def _check_recipe(self) -> None:
        """The loss, advantage, sampling and grading variants (issue 15's options)."""
        for name, choices in (("loss_aggregation", LossAggregation), ("ratio_level", RatioLevel), ("overlong", Overlong),
                              ("scale_advantages", AdvantageScale)):
            if getattr(self, name) not in get_args(choices):
                _reject(name, f"unknown {name} {getattr(self, name)!r}", "choose one of " + ", ".join(get_args(choices)))
        for name in ("clip_low", "clip_high"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                _reject(name, f"{name} must be a number > 0 or None, got {value!r}", "None uses clip; DAPO uses clip_high = 0.28")
        if self.clip_range[0] < 0:
            _reject("clip_low", f"clip_low {1 - self.clip_range[0]:g} is above 1, so the ratio's lower bound would be negative",
                    "the ratio is never negative: keep clip_low below 1 (0.2 is usual)")
        if self.scale_advantages != "group" and self.advantage != "grpo":
            _reject("scale_advantages", f"scale_advantages={self.scale_advantages!r} applies to advantage='grpo', not "
                    f"{self.advantage!r}", "set advantage='grpo', or drop scale_advantages")
        if not isinstance(self.drop_uniform_groups, bool):
            _reject("drop_uniform_groups", f"drop_uniform_groups must be true or false, got {self.drop_uniform_groups!r}")
        if self.drop_uniform_groups and self.advantage not in ("grpo", "rloo"):
            _reject("drop_uniform_groups", f"drop_uniform_groups needs a group baseline (grpo or rloo), not {self.advantage!r}",
                    "only a group-relative advantage is 0 on a group of equal scores; set advantage='grpo'")
        if isinstance(self.uniform_tolerance, bool) or not isinstance(self.uniform_tolerance, (int, float)) or self.uniform_tolerance < 0:
            _reject("uniform_tolerance", f"uniform_tolerance must be a number >= 0, got {self.uniform_tolerance!r}",
                    "1e-6 suits scores in [0, 1]")
        if isinstance(self.max_resample_rounds, bool) or not isinstance(self.max_resample_rounds, int) or self.max_resample_rounds < 0:
            _reject("max_resample_rounds", f"max_resample_rounds must be an integer >= 0, got {self.max_resample_rounds!r}",
                    "0 drops uniform groups without sampling more")
        if isinstance(self.overlong_buffer, bool) or not isinstance(self.overlong_buffer, int) or self.overlong_buffer < 1:
            _reject("overlong_buffer", f"overlong_buffer must be an integer >= 1, got {self.overlong_buffer!r}")
        if self.overlong == "soft" and self.overlong_buffer > self.max_new_tokens:
            _reject("overlong_buffer", f"overlong_buffer {self.overlong_buffer} exceeds max_new_tokens {self.max_new_tokens}",
                    "the buffer is the last tokens before max_new_tokens; DAPO uses a fifth of the length")
        timeout = self.grade_timeout_s
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
            _reject("grade_timeout_s", f"grade_timeout_s must be a number of seconds > 0 or None, got {timeout!r}",
                    "None waits for every grade")
        if self.grade_backend not in get_args(GradeBackend):
            _reject("grade_backend", f"unknown grade_backend {self.grade_backend!r}", "choose one of " + ", ".join(get_args(GradeBackend)))
        workers = self.grade_workers
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            _reject("grade_workers", f"grade_workers must be an integer >= 1 or None, got {workers!r}", "None uses every CPU")
        if self.grade_backend != "local" and timeout is not None:
            _reject("grade_backend", f"grade_backend={self.grade_backend!r} cannot be combined with grade_timeout_s",
                    "grade_timeout_s grades in one worker stopped at the deadline: drop one of them")


@dataclass(frozen=True)
class ModelConfig:
    """How the policy is loaded and computed: ``rftkit train``'s ``[model]`` section, less the model's name and device.

    The defaults train a bf16 checkpoint correctly: the trained weights and AdamW's states in float32,
    the forward and backward in the checkpoint's dtype under ``torch.autocast`` (mixed precision).

    >>> ModelConfig(dtype="bfloat16").pure_low_precision
    False
    >>> ModelConfig(dtype="bfloat16", master_dtype="bfloat16").pure_low_precision
    True
    """

    dtype: DType = "auto"
    """Compute dtype: the forward and backward run in it (``torch.autocast``), and so do the sampler and the
    reference. ``auto``: the checkpoint's dtype (bf16 for most open models; float32 for one saved in float32)."""
    master_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The dtype of the trained weights and of AdamW's states. Keep float32: a bf16 weight cannot take an update
    smaller than 1/256 of itself, so at ``learning_rate=1e-6`` almost every update is lost. A 16-bit master
    (pure low precision, with a warning) halves the weights' memory at that cost."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward instead of keeping them (less memory, about
    a third more compute). The update then runs whole sequences, not the shared-prompt cache (a layer
    that checkpoints cannot write a cache); sampling and the reference keep it."""
    attn_implementation: str | None = None
    """Passed to ``from_pretrained`` (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``, ...); None: transformers' default."""
    trust_remote_code: bool = False
    """Passed to ``from_pretrained``: run the model code a hub repository ships (only for repositories you trust)."""
    revision: str | None = None
    """Passed to ``from_pretrained``: a branch, tag or commit of a hub model; None: the default branch."""
    threads: int | None = None
    """``torch.set_num_threads`` for a CPU run; None: torch's default (all cores, which a busy machine punishes)."""

    @property
    def pure_low_precision(self) -> bool:
        """The trained weights themselves are 16-bit (``master_dtype`` is not float32)."""
        return self.master_dtype != "float32"

    def __post_init__(self) -> None:
        if self.dtype not in get_args(DType):
            _reject("dtype", f"unknown dtype {self.dtype!r}", "choose one of " + ", ".join(get_args(DType)))
        if self.master_dtype not in ("float32", "bfloat16", "float16"):
            _reject("master_dtype", f"unknown master_dtype {self.master_dtype!r}",
                    "float32 (mixed precision, the default) or, to save memory at a cost in precision, bfloat16 / float16")
        if self.pure_low_precision and self.dtype not in (self.master_dtype, "auto"):
            _reject("master_dtype", f"master_dtype {self.master_dtype} with dtype {self.dtype}: 16-bit weights compute in their own dtype",
                    f"set dtype = {self.master_dtype!r}, or master_dtype = 'float32' for mixed precision")
        for name in ("gradient_checkpointing", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                _reject(name, f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("attn_implementation", "revision"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                _reject(name, f"{name} must be a non-empty string or None, got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            _reject("threads", f"threads must be an integer >= 1 or None, got {self.threads!r}", "1 is often fastest on a busy CPU")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters through peft: ``rftkit train``'s ``[lora]`` section (present: LoRA; absent: full fine-tuning).

    Only the adapters train (float32, with their AdamW states); the base weights stay frozen in the compute
    dtype, and the reference policy is the same base with the adapters switched off, so one copy of the base
    weights is held. ``dropout`` is kept at 0: PPO scores the very policy that sampled.

    >>> LoRAConfig(r=8).scale
    4.0
    """

    r: int = 16
    """The adapters' rank."""
    alpha: int = 32
    """LoRA's scale numerator: each adapter's output is multiplied by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapters' input; must be 0 (PPO's ratio compares the policy that sampled with itself)."""
    target_modules: str | tuple[str, ...] = "all-linear"
    """The modules that get adapters: ``"all-linear"`` (every linear layer but the output head) or module
    names such as ``("q_proj", "v_proj")``; passed to ``peft.LoraConfig``."""

    @property
    def scale(self) -> float:
        """``alpha / r``."""
        return self.alpha / self.r

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            _reject("r", f"r must be an integer >= 1, got {self.r!r}", "8-64 are usual")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int) or self.alpha < 1:
            _reject("alpha", f"alpha must be an integer >= 1, got {self.alpha!r}", "usually 2 * r")
        if self.dropout != 0:
            _reject("dropout", f"dropout must be 0 here, got {self.dropout!r}",
                    "PPO scores the policy that sampled, so the update runs without dropout")
        modules = self.target_modules
        if isinstance(modules, list):
            object.__setattr__(self, "target_modules", modules := tuple(modules))
        if not (isinstance(modules, str) and modules) and not (
                isinstance(modules, tuple) and modules and all(isinstance(m, str) and m for m in modules)):
            _reject("target_modules", f"target_modules must be 'all-linear' or a list of module names, got {modules!r}",
                    "for example ['q_proj', 'k_proj', 'v_proj', 'o_proj']")


def _reject(name: str, message: str, hint: str = "") -> NoReturn:
    raise UserError(message, code="bad_config", pointer=f"/{name}", hint=hint)
