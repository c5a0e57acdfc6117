"""The policy on a real model: precision, LoRA adapters, gradient checkpointing, the reference, loading.

What :class:`rl.PPOTrainer` does to the model it is given, each piece here so the trainer reads as PPO:

* **Mixed precision** (:func:`prepare_policy`): the trained weights and AdamW's states in
  ``master_dtype`` (float32), every forward and backward under ``torch.autocast`` in the compute
  ``dtype`` (:func:`compute_context`). A bf16 checkpoint is upcast once, so an update of
  ``1e-6`` is kept instead of rounding away against a bf16 weight. ``master_dtype`` 16-bit is pure
  low precision, on request only, with a warning.
* **The reference** (:class:`Reference`): full fine-tuning keeps a frozen copy of the initial
  weights in the compute dtype; with LoRA it is the policy itself with the adapters switched off
  (``peft``'s ``disable_adapter``), so the base weights are held once.
* **LoRA** through peft: adapters (float32) on the frozen base (compute dtype).
* **Gradient checkpointing**: transformers' own, on each decoder layer. Its layers checkpoint only
  when marked as training, and the trainer keeps the model in ``eval()`` (no dropout), so
  :func:`checkpointing` marks the decoder layers alone as training for the update's forward: the
  modules inside them (attention, dropout) stay in eval mode.
* **Loading** (:func:`load_pretrained`): ``from_pretrained`` with ``attn_implementation``,
  ``trust_remote_code``, ``revision``, the weights in the dtype they will be kept in.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from ._config import LoRAConfig, ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def floating_dtype(model: Any) -> torch.dtype:
    """The dtype of the model's floating-point weights (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def resolve_dtype(config: ModelConfig, model: Any) -> torch.dtype:
    """The compute dtype: ``config.dtype``, ``auto`` read as the model's weights' dtype (or a 16-bit master's)."""
    if config.dtype != "auto":
        return _DTYPES[config.dtype]
    if config.pure_low_precision:
        return _DTYPES[config.master_dtype]
    return floating_dtype(model)


class PureLowPrecisionWarning(UserWarning):
    """The trained weights are 16-bit: updates smaller than about 1/256 of a weight (bf16) are lost."""


@dataclasses.dataclass
class Policy:
    """The prepared policy: the (maybe peft-wrapped) model, its compute dtype and how to run its reference."""

    model: Any
    dtype: torch.dtype
    """The compute dtype of every forward (the sampler's, the update's, the reference's)."""
    autocast: bool
    """Forwards run under ``torch.autocast(dtype)`` (mixed precision); False when the weights already are ``dtype``."""
    reference: Any | None
    """Full fine-tuning: the frozen initial weights; None with LoRA (the policy with its adapters off)."""
    lora: bool
    gradient_checkpointing: bool

    def compute(self) -> contextlib.AbstractContextManager[Any]:
        """The context every forward of the policy (and of its reference) runs in."""
        return compute_context(self.model, self.dtype, enabled=self.autocast)

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[Any]:
        """The frozen initial policy to score with: the copy, or the policy with its adapters disabled."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model


def compute_context(model: Any, dtype: torch.dtype, *, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on the model's device type in ``dtype`` (a no-op context when not ``enabled``)."""
    if not enabled:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=dtype)


def prepare_policy(model: Any, config: ModelConfig, lora: LoRAConfig | None) -> Policy:
    """Cast, wrap and mark the model for training as ``config`` and ``lora`` say; returns the :class:`Policy`.

    Full fine-tuning: the reference is copied first (in the compute dtype), then the weights become
    ``master_dtype``. LoRA: the base goes to the compute dtype and stays frozen; peft adds the adapters
    in float32 (``master_dtype`` unless pure low precision).
    """
    dtype = resolve_dtype(config, model)
    master = _DTYPES[config.master_dtype]
    if config.pure_low_precision:
        warnings.warn(f"pure {config.master_dtype} training: the trained weights and AdamW's states are {config.master_dtype}, so "
                      "updates smaller than about 1/256 of a weight are lost; master_dtype = 'float32' keeps them",
                      PureLowPrecisionWarning, stacklevel=3)
    reference = None
    if lora is None:
        reference = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
        model.to(master)
    else:
        model = _add_adapters(model.to(dtype), lora, float32_adapters=not config.pure_low_precision)
    if config.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        try:
            enable(**({"activation_checkpointing_kwargs": {"use_reentrant": False}} if enable.__name__.startswith("activation")
                      else {"gradient_checkpointing_kwargs": {"use_reentrant": False}}))
        except ValueError as exc:
            from schemas import UserError

            raise UserError(f"this model cannot checkpoint its layers ({exc})", code="bad_config",
                            pointer="/gradient_checkpointing", hint="set gradient_checkpointing = false") from None
    return Policy(model.eval(), dtype, autocast=dtype != floating_dtype(model) or lora is not None and dtype != torch.float32,
                  reference=reference, lora=lora is not None, gradient_checkpointing=config.gradient_checkpointing)


def _add_adapters(model: Any, lora: LoRAConfig, *, float32_adapters: bool) -> Any:
    try:
        import peft
    except ImportError:
        from schemas import UserError

        raise UserError("LoRA needs the peft package", code="missing_extra", pointer="/lora",
                        hint="pip install 'rftkit[lora]'") from None
    modules = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    peft_config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=modules,
                                  task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft reads transformers' deprecated alias (is_gradient_checkpointing): its warning, not the user's
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
            return peft.get_peft_model(model, peft_config, autocast_adapter_dtype=float32_adapters)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        from schemas import UserError

        raise UserError(f"cannot add LoRA adapters: {exc}", code="bad_config", pointer="/lora/target_modules",
                        hint="'all-linear', or names of the model's linear layers (print(model) lists them)") from None


def is_peft(model: Any) -> bool:
    """Whether ``model`` carries peft adapters."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """Let the decoder layers checkpoint during the update's forward: only they are marked as training.

    transformers checkpoints a layer when it has ``gradient_checkpointing`` set *and* is training; the
    trainer keeps the model in ``eval()`` so that dropout stays off, and marking the layers alone (not
    their submodules) keeps it off.
    """
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


def load_pretrained(name_or_path: str, config: ModelConfig, *, lora: bool, device: str) -> tuple[Any, Any, ModelConfig]:
    """The model and tokenizer ``from_pretrained``, and ``config`` with ``auto`` resolved to the checkpoint's dtype.

    The weights load in the dtype they will be kept in: ``master_dtype`` for full fine-tuning,
    the compute dtype for LoRA's frozen base, so a bf16 checkpoint is never held twice.
    ``threads`` is applied first (``torch.set_num_threads``).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code, "revision": config.revision}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if config.dtype == "auto":
        saved = getattr(AutoConfig.from_pretrained(name_or_path, **kwargs), "dtype", None)
        name = str(saved).removeprefix("torch.") if saved is not None else "float32"
        config = dataclasses.replace(config, dtype=config.master_dtype if config.pure_low_precision
                                     else name if name in _DTYPES else "float32")  # type: ignore[arg-type]  # checked by the line's `in`
    load_dtype = config.dtype if lora or config.pure_low_precision else config.master_dtype
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=_DTYPES[load_dtype], **kwargs)
    return model, tokenizer, config
