"""TRL's real ``GRPOTrainer`` trains two steps with an rftkit grader as its reward, on a tiny model built here.

The per-field means that :class:`graders.adapters.TrlReward` reports through TRL's
``log_metric`` hook must show up in the trainer's own log history, next to TRL's
``rewards/<name>/mean``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from graders.adapters import trl_reward

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

REFERENCES = [
    {"city": "Paris", "langs": ["python", "c"]},
    {"city": "Lima", "langs": ["rust"]},
    {"city": "Oslo", "langs": ["go", "java"]},
    {"city": "Kyiv", "langs": ["c++"]},
]


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"Extract: {r['city']} " + json.dumps(r) for r in REFERENCES] * 4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_grpo_trainer_runs_two_steps_and_logs_per_field_rewards(tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    before = [p.detach().clone() for p in model.parameters()]
    dataset = Dataset.from_list([{"prompt": f"Extract: {r['city']} ", "reference": r} for r in REFERENCES])
    # A multi of the structured grader and a fuzzy text match: an untrained model never writes JSON (the
    # structured part scores 0, flagged), but the fuzzy part varies between samples, so GRPO has a signal.
    reward = trl_reward({"type": "multi", "name": "resume", "calculate_output": "0.5 * fields + 0.5 * text", "graders": {
        "fields": {"type": "structured", "name": "fields"},
        "text": {"type": "text_similarity", "name": "text", "evaluation_metric": "fuzzy_match",
                 "input": "{{ sample.output_text }}", "reference": "{{ item.reference }}"}}})
    with warnings.catch_warnings():
        # TRL 1.16's own defaults trip transformers' deprecation warnings (gradient_checkpointing), and the tiny model
        # has no generation config; neither is ours to fix, and the suite turns warnings into errors.
        warnings.simplefilter("ignore")
        args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=12, learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no",
                          use_cpu=True, bf16=False, seed=0, disable_tqdm=True, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                              processing_class=tokenizer)
        trainer.train()
    assert trainer.state.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "rewards/resume/mean" in entry]
    assert len(logged) == 2
    for entry in logged:
        # TRL's own reward column, and the per-field means our log_metric hook reported.
        assert {"reward/resume/fields", "reward/resume/text", "reward/resume/error_rate"} <= set(entry)
        assert entry["reward/resume/fields"] == 0.0 and 0.0 < entry["reward/resume/text"] <= 1.0
        # Random text is never valid JSON, so every row is flagged (sample_parse_error) and the error rate is 1.
        assert entry["reward/resume/error_rate"] == pytest.approx(1.0)
        assert entry["rewards/resume/mean"] == pytest.approx(0.5 * entry["reward/resume/text"], abs=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
