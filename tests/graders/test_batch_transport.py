"""Fast-path grades come back from worker processes as their values and read the same as grades made in this process."""

from __future__ import annotations

import pickle

from graders import StructuredGrader, grade_batch
from graders._lazy_grade import packed, unpacked

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "langs": {"type": "array", "items": {"type": "string"}}},
          "required": ["city", "langs"]}
RESPONSES = ['{"city": "Paris", "langs": ["python", "c"]}', '{"city": "Lyon", "langs": ["c++"]}', "not json",
             '{"city": "Paris", "langs": []}', '{"city": "Oslo", "langs": ["go", "rust", "go"]}'] * 6
REFERENCES = [{"city": "Paris", "langs": ["c", "python"]}, {"city": "Lyon", "langs": ["c#"]}, {"city": "Paris", "langs": []},
              {"city": "Paris", "langs": ["python"]}, {"city": "Oslo", "langs": ["rust", "go"]}] * 6


def test_packed_grades_unpack_to_the_same_grade() -> None:
    grader = StructuredGrader(SCHEMA, fields={"langs": {"comparator": "normalized"}})
    assert grader._flat_build is not None  # the schema takes the fast path
    for response, reference in zip(RESPONSES, REFERENCES):
        grade = grader.grade(response, reference)
        sent = pickle.loads(pickle.dumps(packed(grade)))
        assert unpacked(sent, grader._flat_build).to_dict() == grade.to_dict()


def test_worker_processes_return_the_same_grades_in_input_order() -> None:
    grader = StructuredGrader(SCHEMA, fields={"langs": {"comparator": "normalized"}})
    local = grade_batch(grader, RESPONSES, REFERENCES)
    pooled = grade_batch(grader, RESPONSES, REFERENCES, workers=2, chunk_size=4, adaptive=False)
    assert [g.to_dict() for g in pooled] == [g.to_dict() for g in local]
    assert [g.counts for g in pooled] == [g.counts for g in local]
