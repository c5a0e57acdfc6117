"""OpenRLHF: a grader as a reward_func, and the prompt/response split of its queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas import UserError

from .._config import AnyGrader
from ._common import _field_scores, field_names, row_item
from ._verl import _from_env

# --------------------------------------------------------------------------- OpenRLHF

_ASSISTANT_OPENERS = (
    "<|im_start|>assistant",  # ChatML (Qwen)
    "<|start_header_id|>assistant<|end_header_id|>",  # Llama 3
    "<start_of_turn>model",  # Gemma
    "<|assistant|>",  # Phi, Zephyr
    "<｜Assistant｜>",  # DeepSeek
    "[/INST]",  # Llama 2, Mistral
)
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<eos>",
                "<|end|>", "<｜end▁of▁sentence｜>", "<|eom_id|>")


def _strip_end(text: str) -> str:
    """``text`` without the end-of-turn markers and whitespace it ends with, in any mix.

    Stripped from the right, one marker or run of whitespace at a time: no marker
    ends with another marker or with whitespace, so at most one thing can be
    stripped at each step, and this removes the longest such tail (what a
    ``(?:marker|\\s)+\\Z`` regex removes, without its search trying every start position).

    >>> _strip_end("{} <|im_end|>\\n<|endoftext|></s>  ")
    '{}'
    """
    while True:
        text = text.rstrip()
        if not text.endswith(_END_CHARS):
            return text
        for marker in _END_MARKERS:
            if text.endswith(marker):
                text = text[: len(text) - len(marker)]
                break
        else:
            return text


_END_CHARS = tuple(sorted({m[-1] for m in _END_MARKERS}))


def response_from_query(query: str, prompt: str) -> str:
    """The response inside an OpenRLHF query (prompt and response decoded with template markup).

    The rule: (1) when the prompt occurs in the query, the response is what
    follows its first occurrence (left padding before it is skipped); (2)
    otherwise (the tokenizer's round trip changed the prompt text), it is what
    follows the last assistant-turn opener of a known chat template (ChatML,
    Llama 3, Gemma, Phi, DeepSeek, Llama 2); (3) failing both, the whole query.
    End-of-turn and padding tokens (``<|im_end|>``, ``<|eot_id|>``, ``</s>``...)
    and whitespace are then stripped from the end.

    >>> response_from_query("<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n{}<|im_end|><|endoftext|>",
    ...                     "<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n")
    '{}'
    >>> response_from_query("<|im_start|>user\\nhi <|im_end|>\\n<|im_start|>assistant\\n{}<|im_end|>", "changed")
    '{}'
    """
    start = query.find(prompt) if prompt else -1
    if start >= 0:
        text = query[start + len(prompt):]
    else:
        cut = max(((query.rfind(o), o) for o in _ASSISTANT_OPENERS), key=lambda p: p[0])
        text = query[cut[0] + len(cut[1]):] if cut[0] >= 0 else query
    return _strip_end(text).lstrip("\n")


def _tensor_or_list(values: list[float]) -> Any:
    """A float tensor where torch is installed (what OpenRLHF's reward_func template returns), else the list."""
    try:
        import torch
    except ImportError:
        return values
    return torch.tensor(values, dtype=torch.float32)


def openrlhf_rewards(grader: AnyGrader, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], *,
                     declared: list[str] | None = None) -> dict[str, Any]:
    """OpenRLHF's ``{"rewards", "scores", "extra_logs"}`` for one batch, as plain lists.

    Row i's response is recovered from ``queries[i]`` by :func:`response_from_query`
    and graded against ``labels[i]``; an OpenAI-type grader reads the item
    :func:`label_item` builds (``{"prompt", "reference"}`` and, when the label is
    an object or its JSON text, the object's keys). A label the grader cannot grade raises
    :class:`UserError` with the pointer ``/labels/<i>``. ``declared`` is
    :func:`field_names` of the grader, when the caller has it already.
    """
    fields_declared = field_names(grader) if declared is None else declared
    grades = []
    for i, (q, p, label) in enumerate(zip(queries, prompts, labels)):
        try:
            text = response_from_query(q, p)
            grades.append(grader.grade_row(text, row_item(grader, label, {"prompt": p})))
        except UserError as exc:
            raise type(exc)(exc.message, code=exc.code, pointer=f"/labels/{i}{exc.pointer}", hint=exc.hint) from None
    scores = [x.score for x in grades]
    if fields_declared and grades:  # every row has every declared field (see _field_scores): one column each
        extra = {f"reward/{grader.name}/{f}": [x.sub_scores.get(f, 0.0) for x in grades] for f in fields_declared}
    else:
        rows = [_field_scores(x, fields_declared) for x in grades]
        fields = list(dict.fromkeys(f for r in rows for f in r))
        extra = {f"reward/{grader.name}/{f}": [r.get(f, 0.0) for r in rows] for f in fields}
    return {"rewards": scores, "scores": list(scores), "extra_logs": extra}


def openrlhf_reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], *,
                         grader: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's ``reward_func(queries, prompts, labels)``, grading with ``$RFTKIT_GRADER`` (cached).

    Returns ``{"rewards", "scores", "extra_logs"}`` (see :func:`openrlhf_rewards`):
    the rewards and the scores (both the grade, in [0, 1]) and, in ``extra_logs``,
    one per-sample series per field under ``reward/<name>/<field>``. Each is a
    float tensor where torch is installed (as OpenRLHF's template returns), else a list.
    """
    scorer = _from_env(grader)
    out = openrlhf_rewards(scorer.grader, queries, prompts, labels, declared=scorer._declared)
    return {"rewards": _tensor_or_list(out["rewards"]), "scores": _tensor_or_list(out["scores"]),
            "extra_logs": {k: _tensor_or_list(v) for k, v in out["extra_logs"].items()}}


