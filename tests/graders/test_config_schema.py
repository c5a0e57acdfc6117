"""The shipped JSON Schema of the structured grader config matches the code, and real configs satisfy it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from graders._structured import structured_config_schema
from schemas import load_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = resources.files("schemas") / "formats" / "structured_grader.json"


def test_shipped_schema_is_generated_from_the_code() -> None:
    # After changing the options, regenerate the file with:
    # .venv/bin/python -c "import json; from graders._structured import structured_config_schema as s; \
    #   open('schemas/formats/structured_grader.json', 'w').write(json.dumps(s(), indent=2, ensure_ascii=False) + '\n')"
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == structured_config_schema()


def test_example_config_satisfies_the_schema_and_mistakes_do_not() -> None:
    schema = load_schema(json.loads(SHIPPED.read_text(encoding="utf-8")))
    example = json.loads((ROOT / "examples" / "resume" / "grader.json").read_text(encoding="utf-8"))
    assert schema.validate(example) == []
    issues = schema.validate({"type": "structured", "aggregation": "median", "partial_credit": "no", "shema": {}})
    assert {i.pointer for i in issues} >= {"/aggregation", "/partial_credit"}
    assert any(i.code == "additionalProperties" for i in issues)
