"""The structured grader: the seed example, the policies, aggregation, configs, batches."""

from __future__ import annotations

import itertools
import json
import pickle
import random

import pytest
from pydantic import BaseModel

from graders import FieldSpec, GraderConfigError, StructuredGrader, from_config
from graders.comparators import fuzzy, number
from graders.structured import assign

SEED_REFERENCE = {
    "university": "University of California Berkeley",
    "programming_languages": ["python", "c++", "java"],
    "city": "Los Angeles",
    "state": "California",
}


class Profile(BaseModel):
    university: str
    programming_languages: list[str]
    city: str
    state: str


class Job(BaseModel):
    title: str
    company: str
    years: int


class Person(BaseModel):
    name: str
    jobs: list[Job]
    salary: float | None = None


def seed_prediction(**changes: object) -> str:
    pred = dict(SEED_REFERENCE, programming_languages=["python", "java", "rust"])
    pred.update(changes)
    return json.dumps(pred)


# --------------------------------------------------------------------------- the seed example


def test_seed_example_languages_precision_recall_f1_are_two_thirds() -> None:
    grade = StructuredGrader(schema=Profile).grade(seed_prediction(), SEED_REFERENCE)
    langs = grade.details["programming_languages"]
    assert langs.precision == pytest.approx(2 / 3, abs=1e-12)
    assert langs.recall == pytest.approx(2 / 3, abs=1e-12)
    assert langs.f1 == pytest.approx(2 / 3, abs=1e-12)
    assert sorted(langs.matched or []) == [(0, 0, 1.0), (1, 2, 1.0)]
    assert langs.missing == ["c++"] and langs.extra == ["rust"]
    # the other fields are identical strings: the inferred fuzzy comparator gives 1
    for name in ("university", "city", "state"):
        assert grade.details[name].comparator == "fuzzy"
        assert grade.sub_scores[name] == 1.0
    assert grade.score == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)
    assert grade.ok and grade.reason.startswith("0.917")


def test_seed_example_other_fields_follow_their_comparator() -> None:
    pred = seed_prediction(state="CA", city="los angeles", university="UC Berkeley")
    grade = StructuredGrader(schema=Profile).grade(pred, SEED_REFERENCE)
    for name in ("university", "city", "state"):
        expected = fuzzy(json.loads(pred)[name], SEED_REFERENCE[name])
        assert grade.sub_scores[name] == pytest.approx(expected)
    assert grade.sub_scores["city"] == 1.0  # case and spacing are normalised away
    assert grade.sub_scores["state"] < 0.5


def test_config_overrides_change_the_comparator() -> None:
    grader = StructuredGrader(schema=Profile, fields={"state": {"comparator": "exact"}, "city": FieldSpec(weight=3)})
    grade = grader.grade(seed_prediction(state="california", city="Los Angeles"), SEED_REFERENCE)
    assert grade.details["state"].comparator == "exact" and grade.sub_scores["state"] == 0.0
    assert grade.score == pytest.approx((1 + 2 / 3 + 3 * 1 + 0) / 6)


# --------------------------------------------------------------------------- lists


def test_assignment_is_optimal_not_greedy() -> None:
    pairs = assign([[0.9, 0.8], [0.85, 0.1]])
    assert sum(p[2] for p in pairs) == pytest.approx(1.65)


@pytest.mark.parametrize("seed", range(30))
def test_assignment_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n_pred, n_ref = rng.randint(1, 5), rng.randint(1, 5)
    matrix = [[round(rng.random(), 3) for _ in range(n_ref)] for _ in range(n_pred)]
    threshold = rng.choice([0.0, 0.5])
    best = 0.0
    k = min(n_pred, n_ref)
    for rows in itertools.permutations(range(n_pred), k):
        for cols in itertools.permutations(range(n_ref), k):
            best = max(best, sum(matrix[i][j] for i, j in zip(rows, cols) if matrix[i][j] >= threshold))
    got = assign(matrix, threshold)
    assert sum(s for _, _, s in got) == pytest.approx(best)
    assert len({i for i, _, _ in got}) == len(got) == len({j for _, j, _ in got})


def test_fuzzy_list_elements_get_partial_credit_and_threshold() -> None:
    grader = StructuredGrader()
    grade = grader.grade('{"langs": ["python3", "javascript"]}', {"langs": ["python", "java"]})
    d = grade.details["langs"]
    s = fuzzy("python3", "python")
    assert d.matched == [(0, 0, pytest.approx(s))]  # javascript/java is below the 0.8 match threshold
    assert d.precision == pytest.approx(s / 2) and d.recall == pytest.approx(s / 2)


def test_list_modes_set_multiset_ordered() -> None:
    ref = {"xs": ["a", "a", "b"]}
    pred = '{"xs": ["b", "a"]}'
    as_set = StructuredGrader(fields={"xs": {"comparator": "exact"}}).grade(pred, ref)
    multiset = StructuredGrader(fields={"xs": {"comparator": "exact", "mode": "multiset"}}).grade(pred, ref)
    ordered = StructuredGrader(fields={"xs": {"comparator": "exact", "mode": "ordered"}}).grade(pred, ref)
    assert as_set.sub_scores["xs"] == 1.0
    assert multiset.details["xs"].recall == pytest.approx(2 / 3) and multiset.details["xs"].precision == 1.0
    # ordered pairs index by index: ("b", "a") fails, ("a", "a") matches; "b" at index 2 has no partner
    assert ordered.details["xs"].matched == [(1, 1, 1.0)]
    assert ordered.details["xs"].missing == ["a", "b"] and ordered.details["xs"].extra == ["b"]


def test_lists_of_objects_pair_by_object_score_and_count_both_sides() -> None:
    ref = {"name": "Ann", "jobs": [
        {"title": "Engineer", "company": "Acme", "years": 3},
        {"title": "Manager", "company": "Globex", "years": 2},
    ]}
    pred = {"name": "Ann", "jobs": [
        {"title": "Manager", "company": "Globex", "years": 5},   # matches job 1, years wrong
        {"title": "Engineer", "company": "Acme", "years": 3},    # matches job 0 exactly
        {"title": "Astronaut", "company": "NASA", "years": 1},   # hallucinated
    ]}
    grade = StructuredGrader(schema=Person).grade(json.dumps(pred), ref)
    jobs = grade.details["jobs"]
    assert sorted((i, j) for i, j, _ in jobs.matched or []) == [(0, 1), (1, 0)]
    assert jobs.extra == [pred["jobs"][2]] and jobs.missing == []
    pair_scores = {(i, j): s for i, j, s in jobs.matched or []}
    assert pair_scores[(1, 0)] == 1.0 and pair_scores[(0, 1)] == pytest.approx(2 / 3)
    matched = 1.0 + 2 / 3
    assert jobs.precision == pytest.approx(matched / 3) and jobs.recall == pytest.approx(matched / 2)
    # nested fields inside the matched items are reported
    manager = next(item for (i, j, _), item in zip(jobs.matched or [], jobs.items or []) if i == 0)
    assert manager.fields is not None and manager.fields["years"].score == 0.0
    # micro-F1 counts: the hallucinated job costs 3 false positives
    assert grade.counts is not None
    tp, fp, fn = grade.counts
    assert fp >= 3 + 1  # 3 from the extra job, 1 from the wrong years


def test_wrong_type_for_a_list_scores_zero() -> None:
    # a string where a list belongs is schema-invalid: that field scores 0, flagged; the others keep their credit
    grade = StructuredGrader(schema=Profile).grade(seed_prediction(programming_languages="python, java"), SEED_REFERENCE)
    assert grade.errors["schema_validation_error"]
    assert grade.details["programming_languages"].status == "wrong_type"
    assert grade.score == pytest.approx(3 / 4)
    gated = StructuredGrader(schema=Profile, on_schema_violation="gate").grade(
        seed_prediction(programming_languages="python, java"), SEED_REFERENCE)
    assert gated.score == 0.0 and gated.errors["schema_validation_error"]


# --------------------------------------------------------------------------- null / missing / extra policy


@pytest.mark.parametrize(
    ("pred", "ref", "score", "status"),
    [
        ({"a": None}, {"a": None}, 1.0, "both_empty"),
        ({}, {"a": None}, 1.0, "both_empty"),
        ({"a": ""}, {"a": None}, 1.0, "both_empty"),
        ({"a": []}, {"a": ""}, 1.0, "both_empty"),
        ({"a": "  "}, {"a": []}, 1.0, "both_empty"),
        ({"a": "x"}, {"a": None}, 0.0, "extra"),
        ({"a": ["x"]}, {"a": []}, 0.0, "extra"),
        ({}, {"a": "x"}, 0.0, "missing"),
        ({"a": None}, {"a": "x"}, 0.0, "missing"),
        ({"a": ""}, {"a": ["x"]}, 0.0, "missing"),
    ],
)
def test_empty_value_policy(pred: dict, ref: dict, score: float, status: str) -> None:
    grade = StructuredGrader().grade(json.dumps(pred), ref)
    detail = grade.details["a"]
    assert (detail.score, detail.status) == (score, status)


def test_missing_costs_recall_and_extra_costs_precision_in_micro_f1() -> None:
    grader = StructuredGrader(aggregation="micro_f1")
    missing = grader.grade('{"a": "x"}', {"a": "x", "b": "y"})
    assert missing.counts == (1.0, 0.0, 1.0) and missing.score == pytest.approx(2 / 3)
    extra = grader.grade('{"a": "x", "b": null, "c": "z"}', {"a": "x", "b": None})
    assert extra.counts == (1.0, 1.0, 0.0) and extra.score == pytest.approx(2 / 3)


def test_extra_fields_penalize_or_ignore() -> None:
    out = '{"a": "x", "hallucinated": "y"}'
    penalize = StructuredGrader().grade(out, {"a": "x"})
    ignore = StructuredGrader(extra_fields="ignore").grade(out, {"a": "x"})
    assert penalize.score == 0.5 and penalize.details["hallucinated"].status == "extra"
    assert ignore.score == 1.0 and "hallucinated" not in ignore.details


def test_required_field_gates_the_grade() -> None:
    grader = StructuredGrader(fields={"city": {"required": True}})
    assert grader.grade('{"state": "CA"}', {"city": "LA", "state": "CA"}).score == 0.0
    assert "required" in grader.grade('{"state": "CA"}', {"city": "LA", "state": "CA"}).reason
    assert grader.grade('{"state": "CA", "city": "LA"}', {"city": "LA", "state": "CA"}).score == 1.0


# --------------------------------------------------------------------------- inference from the schema


def test_comparators_are_inferred_from_schema_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "flag": {"type": "boolean"},
            "count": {"type": "integer"},
            "price": {"type": "number"},
            "when": {"type": "string", "format": "date"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
            "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
    }
    value = {"text": "t", "kind": "a", "flag": True, "count": 3, "price": 1.5, "when": "2024-01-31",
             "tags": ["x"], "items": [{"x": 1}], "address": {"zip": "9"}, "maybe": 2.0}
    grade = StructuredGrader(schema=schema).grade(json.dumps(value), value)
    labels = {k: d.comparator for k, d in grade.details.items()}
    assert labels == {"text": "fuzzy", "kind": "enum", "flag": "bool", "count": "exact", "price": "number",
                      "when": "date", "tags": "list/set", "items": "list/set", "address": "object", "maybe": "number"}
    assert grade.score == 1.0
    assert grade.details["tags"].matched == [(0, 0, 1.0)]


def test_float_fields_use_a_relative_tolerance() -> None:
    grader = StructuredGrader(schema=Person)
    ref = {"name": "A", "jobs": [], "salary": 100000.0}
    assert grader.grade('{"name": "A", "jobs": [], "salary": 100000.00001}', ref).sub_scores["salary"] == 1.0
    assert grader.grade('{"name": "A", "jobs": [], "salary": 100001}', ref).sub_scores["salary"] == 0.0
    assert number(100000.00001, 100000.0, rel_tol=1e-6) == 1.0


# --------------------------------------------------------------------------- aggregation


def test_aggregations() -> None:
    pred = seed_prediction(state="Nevada")
    ref = SEED_REFERENCE
    exact_fields = {k: {"comparator": "exact"} for k in ("university", "city", "state")}
    mean = StructuredGrader(schema=Profile, fields=exact_fields).grade(pred, ref)
    assert mean.score == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    micro = StructuredGrader(schema=Profile, fields=exact_fields, aggregation="micro_f1").grade(pred, ref)
    tp, fp, fn = 2 + 2, 1 + 1, 1 + 1  # 2 exact strings + 2 languages; state wrong; rust/c++
    assert micro.score == pytest.approx(2 * tp / (2 * tp + fp + fn))
    strict = StructuredGrader(schema=Profile, fields=exact_fields, aggregation="all_or_nothing")
    assert strict.grade(pred, ref).score == 0.0
    assert strict.grade(json.dumps(ref), ref).score == 1.0
    formula = StructuredGrader(schema=Profile, fields=exact_fields, aggregation="formula",
                               formula="0.5 * programming_languages + 0.5 * min(city, state)")
    assert formula.grade(pred, ref).score == pytest.approx(0.5 * 2 / 3)


def test_formula_with_unknown_name_is_rejected_with_pointer() -> None:
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Profile, aggregation="formula", formula="0.5 * cty")
    assert err.value.pointer == "/formula" and err.value.code == "formula_unknown_name"


def test_formula_math_error_is_a_flagged_zero() -> None:
    grader = StructuredGrader(schema=Profile, aggregation="formula", formula="log(state - 1)")
    grade = grader.grade(seed_prediction(), SEED_REFERENCE)
    assert grade.score == 0.0 and grade.errors["formula_parse_error"]


# --------------------------------------------------------------------------- gating and flags


def test_parse_failures_are_flagged_zeros() -> None:
    grader = StructuredGrader(schema=Profile)
    prose = grader.grade("I could not find it.", SEED_REFERENCE)
    assert prose.score == 0.0 and prose.errors["sample_parse_error"] and prose.reason
    truncated = grader.grade('{"university": "Univ', SEED_REFERENCE)
    assert truncated.score == 0.0 and truncated.errors["truncated_output_error"]
    assert not truncated.errors["sample_parse_error"]


def test_lenient_repairs_are_recorded_and_can_be_penalised() -> None:
    out = "{'city': 'Los Angeles', 'state': 'California',}"
    strict = StructuredGrader().grade(out, {"city": "Los Angeles", "state": "California"})
    assert strict.score == 0.0 and strict.errors["sample_parse_error"]
    lenient = StructuredGrader(lenient=True, repair_penalty=0.2).grade(out, {"city": "Los Angeles", "state": "California"})
    assert set(lenient.repairs) == {"single_quotes", "trailing_comma"}
    assert lenient.score == pytest.approx(0.8)


def test_schema_invalid_is_graded_per_field_unless_gated() -> None:
    pred = json.dumps({"university": "University of California Berkeley", "programming_languages": ["python"], "city": "Los Angeles"})
    gated = StructuredGrader(schema=Profile, on_schema_violation="gate").grade(pred, SEED_REFERENCE)
    assert gated.score == 0.0 and gated.errors["schema_validation_error"]
    assert gated.issues and gated.issues[0].code == "required"
    for grader in (StructuredGrader(schema=Profile), StructuredGrader(schema=Profile, partial_credit=True)):
        partial = grader.grade(pred, SEED_REFERENCE)
        assert 0.0 < partial.score < 1.0 and partial.details["state"].status == "missing"
        assert partial.errors["schema_validation_error"] and partial.issues[0].code == "required"


# --------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    ("kwargs", "code", "pointer"),
    [
        ({"fields": {"city": {"comparator": "fuzz"}}}, "unknown_comparator", "/fields/city/comparator"),
        ({"fields": {"city": {"weight": -1}}}, "bad_field_option", "/fields/city/weight"),
        ({"fields": {"city": {"threshold": 2}}}, "bad_field_option", "/fields/city/threshold"),
        ({"fields": {"city": {"scorer": "nope"}}}, "bad_comparator_option", "/fields/city/scorer"),
        ({"aggregation": "median"}, "bad_aggregation", "/aggregation"),
        ({"aggregation": "formula"}, "bad_aggregation", "/formula"),
        ({"repair_penalty": 2.0}, "bad_option", "/repair_penalty"),
    ],
)
def test_bad_options_raise_at_construction_with_a_pointer(kwargs: dict, code: str, pointer: str) -> None:
    with pytest.raises(GraderConfigError) as err:
        StructuredGrader(schema=Profile, **kwargs)
    assert err.value.code == code
    assert err.value.pointer == pointer


def test_from_config_structured_and_unknown_type() -> None:
    grader = from_config({"type": "structured", "schema": Profile.model_json_schema(),
                          "fields": {"programming_languages": {"comparator": "normalized"}}})
    assert grader.grade(seed_prediction(), SEED_REFERENCE).sub_scores["programming_languages"] == pytest.approx(2 / 3)
    with pytest.raises(GraderConfigError) as err:
        from_config({"type": "structured", "shema": {}})
    assert err.value.pointer == "/shema"
    with pytest.raises(GraderConfigError) as err:
        from_config({"type": "nope"})
    assert err.value.pointer == "/type"


def test_dotted_field_names_reach_nested_fields() -> None:
    grader = StructuredGrader(fields={"address.city": {"comparator": "exact"}})
    grade = grader.grade('{"address": {"city": "la"}}', {"address": {"city": "LA"}})
    assert grade.details["address"].fields is not None
    assert grade.details["address"].fields["city"].comparator == "exact"
    assert grade.score == 0.0


# --------------------------------------------------------------------------- batch and pickling


def test_grader_pickles_and_batches_keep_input_order() -> None:
    grader = StructuredGrader(schema=Profile, fields={"state": {"comparator": "exact"}})
    clone = pickle.loads(pickle.dumps(grader))
    states = ["California", "Nevada", "Oregon", "california"] * 5
    responses = [seed_prediction(state=s) for s in states] + ["not json"]
    references = [SEED_REFERENCE] * len(responses)
    serial = grader.grade_batch(responses, references)
    parallel = clone.grade_batch(responses, references, workers=2)
    assert [g.score for g in serial] == [g.score for g in parallel]
    assert [g.sub_scores.get("state") for g in parallel][:4] == [1.0, 0.0, 0.0, 0.0]
    assert parallel[-1].errors["sample_parse_error"]


def test_to_dict_is_json_serialisable() -> None:
    grade = StructuredGrader(schema=Person).grade(
        json.dumps({"name": "A", "jobs": [{"title": "t", "company": "c", "years": 1}]}),
        {"name": "A", "jobs": [{"title": "t", "company": "c", "years": 2}]})
    text = json.dumps(grade.to_dict())
    assert '"jobs"' in text and '"matched"' in text


# --------------------------------------------------------------------------- fast paths equal the plain ones

from hypothesis import given, settings  # noqa: E402 -- kept next to the tests that use it
from hypothesis import strategies as st  # noqa: E402

from graders.comparators import make_comparator, normalize_text  # noqa: E402

words = st.lists(st.sampled_from(["python", "Python ", "java", "javascript", "c", "c++", "c#", "", "  ", "rust", "go"]) | st.text(max_size=6),
                 max_size=5)


@settings(max_examples=200, deadline=None)
@given(words, words, st.sampled_from(["ratio", "token_set_ratio", "jaro_winkler"]), st.sampled_from([0.0, 0.5]),
       st.booleans(), st.booleans())
def test_comparator_matrix_equals_pairwise_scores(preds: list[str], refs: list[str], scorer: str, threshold: float,
                                                  partial: bool, strip: bool) -> None:
    threshold = threshold if partial or threshold > 0 else 0.5  # pass/fail needs a threshold
    for compare in (make_comparator("fuzzy", scorer=scorer, threshold=threshold, partial_credit=partial),
                    make_comparator("normalized", strip_punctuation=strip)):
        fast = compare.matrix(preds, refs)  # type: ignore[attr-defined]  # the optional fast path under test
        if fast is None:  # only for items that normalise to nothing, which the grader compares pair by pair
            assert any(not normalize_text(x, strip_punctuation=True) for x in preds + refs)
            continue
        assert fast == [[compare(p, r) for r in refs] for p in preds]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.3, 0.6, 0.9, 1.0]), min_size=3, max_size=3), min_size=1, max_size=4),
       st.sampled_from([0.0, 0.5, 0.8]))
def test_assign_fast_path_is_optimal(matrix: list[list[float]], threshold: float) -> None:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    m = np.where((np.asarray(matrix) >= threshold) & (np.asarray(matrix) > 0), np.asarray(matrix), 0.0)
    rows, cols = linear_sum_assignment(m, maximize=True)
    assert sum(s for _, _, s in assign(matrix, threshold)) == pytest.approx(float(m[rows, cols].sum()))


def test_grade_batch_restores_the_garbage_collector() -> None:
    import gc

    assert gc.isenabled()
    grades = StructuredGrader().grade_batch(['{"a": 1}', "oops"], [{"a": 1}, {"a": 1}])
    assert [g.score for g in grades] == [1.0, 0.0]
    assert gc.isenabled()
    gc.disable()
    try:
        StructuredGrader().grade_batch(['{"a": 1}'], [{"a": 1}])
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Python", "python", " PYTHON ", "java", "Java", "c++", "C++", "c#", "rust"]), max_size=7),
       st.lists(st.sampled_from(["python", "Java", "c++", "C#", "go", "rust", "rust"]), max_size=7),
       st.sampled_from(["set", "multiset"]))
def test_pairing_by_key_equals_the_assignment(pred: list[str], ref: list[str], mode: str) -> None:
    import graders.structured._nodes as structured

    keyed = StructuredGrader(fields={"xs": {"comparator": "normalized", "mode": mode}})
    real_assign = structured.assign
    structured.assign = None  # type: ignore[assignment]  # the key path must not need the assignment solver
    try:
        grade = keyed.grade(json.dumps({"xs": pred}), {"xs": ref})
    finally:
        structured.assign = real_assign
    # the expectation: the comparator's full score matrix through the optimal assignment
    compare = make_comparator("normalized")
    p = list(dict.fromkeys(pred)) if mode == "set" else pred
    r = list(dict.fromkeys(ref)) if mode == "set" else ref
    best = sum(s for _, _, s in assign([[compare(a, b) for b in r] for a in p], 0.0)) if p and r else 0.0
    detail = grade.details["xs"]
    matched = sum(s for _, _, s in detail.matched or [])
    assert matched == pytest.approx(best)
    assert len({i for i, _, _ in detail.matched or []}) == len(detail.matched or [])
    assert len({j for _, j, _ in detail.matched or []}) == len(detail.matched or [])
