"""validate_dataset: every defect in the fixture directory is reported once, at the right line, with the right code.

The fixtures (tests/schemas/fixtures/, shared with the reader's tests) hold one defect per file, in the OpenAI RFT
layout unless the file name says otherwise; good rows around the defect must not
be reported. Larger files (10,000 rows, a 50 MB line, Parquet) are generated into
tmp_path at test time rather than committed.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from graders import from_config
from graders._cli import app
from graders.datasets import DatasetIssue, Report, template_variables, validate_dataset
from graders.datasets._command import register
from schemas import SchemaError, UserError
from schemas.reading import PromptIndex

FIXTURES = Path(__file__).parents[1] / "schemas" / "fixtures"
SCHEMA = FIXTURES / "schema.json"
CITIES = ["Paris", "Lima", "Oslo", "Kyoto", "Quito", "Perth", "Cork", "Turin"]


class FakeGrade:
    def __init__(self, score: float, sub_scores: dict[str, float]) -> None:
        self.score = score
        self.sub_scores = sub_scores
        self.details: dict[str, Any] = {}
        self.reason = f"{score:.3f}"


class AsciiOnlyGrader:
    """A deliberately misconfigured grader: it cannot match a value with non-ASCII letters, even against itself."""

    def grade(self, response: Any, reference: Any) -> FakeGrade:
        predicted = json.loads(response)
        subs = {k: float(predicted.get(k) == v and str(v).isascii()) for k, v in reference.items()}
        return FakeGrade(sum(subs.values()) / len(subs), subs)


def good_row(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": "Extract the city and year as JSON."},
                         {"role": "user", "content": f"Trip report {i}: we visited {CITIES[i % 8]} in {2000 + i}."}],
            "reference": {"city": CITIES[i % 8], "year": 2000 + i}, "meta": {"source": "blog"}}


def codes(report: Report) -> list[tuple[int, str, str]]:
    return [(i.line, i.code, i.pointer) for i in report.issues]


# (file, options, the one expected issue: line, code, pointer)
ONE_DEFECT: list[tuple[str, dict[str, Any], tuple[int, str, str]]] = [
    ("invalid_json.jsonl", {}, (3, "invalid_json", "")),
    ("invalid_utf8.jsonl", {}, (2, "invalid_utf8", "")),
    ("truncated_line.jsonl", {}, (4, "truncated_line", "")),
    ("not_an_object.jsonl", {}, (2, "not_an_object", "")),
    ("blank_line.jsonl", {}, (3, "blank_line", "")),
    ("line_too_long.jsonl", {"max_line_bytes": 2048}, (2, "line_too_long", "")),
    ("invalid_role.jsonl", {}, (2, "invalid_role", "/messages/1/role")),
    ("last_message_not_user.jsonl", {}, (4, "last_message_not_user", "/messages/2/role")),
    ("empty_content.jsonl", {}, (2, "empty_content", "/messages/1/content")),
    ("empty_prompt.jsonl", {}, (4, "empty_prompt", "/prompt")),
    ("wrong_type.jsonl", {}, (3, "wrong_type", "/messages/1/content")),
    ("missing_field.jsonl", {}, (2, "missing_field", "/messages")),
    ("missing_reference.jsonl", {}, (3, "missing_reference", "/reference")),
    ("reference_invalid.jsonl", {}, (2, "reference_invalid", "/reference/year")),
    ("reference_not_json.jsonl", {}, (2, "reference_not_json", "/reward_model/ground_truth")),
    ("unresolved_variable.jsonl", {"grader_config": {"input": [{"role": "user", "content": "from {{ item.meta.source }}"}]}},
     (4, "unresolved_variable", "/meta")),
    ("gold_below_max.jsonl", {"grader": AsciiOnlyGrader()}, (3, "gold_below_max", "/reference")),
    ("duplicate_prompt.jsonl", {}, (5, "duplicate_prompt", "/messages")),
    ("leaked_prompt.jsonl", {"against": FIXTURES / "leaked_prompt.valid.jsonl"}, (3, "leaked_prompt", "/messages")),
]


@pytest.mark.parametrize(("name", "options", "expected"), ONE_DEFECT, ids=[c[0] for c in ONE_DEFECT])
def test_each_fixture_reports_its_one_defect(name: str, options: dict[str, Any], expected: tuple[int, str, str]) -> None:
    path = FIXTURES / name
    before = path.read_bytes()
    report = validate_dataset(path, response_schema=SCHEMA, **options)
    assert codes(report) == [expected]
    assert report.counts == {expected[1]: 1}
    issue = report.issues[0]
    assert issue.message and isinstance(issue, DatasetIssue)
    warning = expected[1] in ("blank_line", "duplicate_prompt", "leaked_prompt")
    assert issue.severity == ("warning" if warning else "error")
    assert (report.errors, report.warnings, report.rows_with_errors) == ((0, 1, 0) if warning else (1, 0, 1))
    assert report.exit_code() == (0 if warning else 1) and report.exit_code(strict=True) == 1
    assert path.read_bytes() == before  # validation never touches the file


def test_a_bom_crlf_and_no_final_newline_are_fine() -> None:
    report = validate_dataset(FIXTURES / "clean_bom_crlf.jsonl", response_schema=SCHEMA)
    assert (report.rows, report.issues, report.format, report.detected) == (4, [], "openai_rft", True)
    assert report.ok(strict=True) and report.exit_code() == 0


def test_the_gold_self_check_reports_the_score_and_the_fields_that_fell_short() -> None:
    report = validate_dataset(FIXTURES / "gold_below_max.jsonl", grader=AsciiOnlyGrader())
    (issue,) = report.issues
    assert issue.input["score"] == 0.5 and issue.input["sub_scores"] == {"city": 0.0}
    assert "0.5000 < 1" in issue.message and "city 0.00" in issue.message
    assert "gold" in report.checks


def test_the_gold_self_check_with_a_real_grader() -> None:
    """The bundled résumé references score 1 against themselves; a formula that can never reach 1 fails on every row."""
    data = Path(__file__).resolve().parents[2] / "graders" / "data" / "resume_demo.jsonl"
    config = json.loads((data.parent / "resume_grader.json").read_text(encoding="utf-8"))
    good = validate_dataset(data, grader=from_config(config), grader_config=config)
    assert good.issues == [] and good.checks == ("json", "structure", "schema", "gold", "duplicates")
    broken = {**config, "aggregation": "formula", "formula": "0.3*university + 0.3*city + 0.3*state"}
    report = validate_dataset(data, grader=from_config(broken))
    assert report.counts == {"gold_below_max": good.rows}
    assert report.issues[0].input["score"] == pytest.approx(0.9) and "no field below 1" in report.issues[0].message


def test_the_grader_schema_is_used_when_none_is_given(tmp_path: Path) -> None:
    config = {"type": "structured", "schema": json.loads(SCHEMA.read_text())}
    report = validate_dataset(FIXTURES / "reference_invalid.jsonl", grader=from_config(config))
    assert codes(report) == [(2, "reference_invalid", "/reference/year")]  # and no second report from the gold check


def test_many_defects_in_ten_thousand_good_rows(tmp_path: Path) -> None:
    """Each defect once, at its line, with its code; no good row reported; the file's bytes unchanged."""
    rng = random.Random(7)
    lines = [json.dumps(good_row(i)) for i in range(10_000)]

    def mutated(i: int, change: Any) -> str:
        row = good_row(i)
        change(row)
        return json.dumps(row)

    defects: dict[int, tuple[str, str]] = {}
    makers: list[tuple[str, str, Any]] = [
        ("invalid_json", "", lambda i: json.dumps(good_row(i))[:-1] + ",}"),
        ("invalid_json", "", lambda i: json.dumps(good_row(i)).replace(f'"year": {2000 + i}', '"year": NaN')),
        ("not_an_object", "", lambda i: '"just a string"'),
        ("invalid_role", "/messages/0/role", lambda i: mutated(i, lambda r: r["messages"][0].update(role="bot"))),
        ("last_message_not_user", "/messages/2/role",
         lambda i: mutated(i, lambda r: r["messages"].append({"role": "assistant", "content": "ok"}))),
        ("empty_content", "/messages/1/content", lambda i: mutated(i, lambda r: r["messages"][1].update(content=""))),
        ("empty_prompt", "/messages", lambda i: mutated(i, lambda r: r.update(messages=[]))),
        ("wrong_type", "/messages", lambda i: mutated(i, lambda r: r.update(messages="hello"))),
        ("missing_reference", "/reference", lambda i: mutated(i, lambda r: r.pop("reference"))),
        ("reference_invalid", "/reference/city", lambda i: mutated(i, lambda r: r["reference"].update(city=""))),
        ("reference_invalid", "/reference", lambda i: mutated(i, lambda r: r["reference"].update(extra=1))),
        ("unresolved_variable", "/meta/source", lambda i: mutated(i, lambda r: r["meta"].pop("source"))),
        ("gold_below_max", "/reference", lambda i: mutated(i, lambda r: r["reference"].update(city="Zürich"))),
        # The first 100 lines are never mutated, so the copied prompt is a good one.
        ("duplicate_prompt", "/messages", lambda i: json.dumps({**good_row(rng.randrange(100)), "reference": good_row(i)["reference"]})),
    ]
    spots = rng.sample(range(100, 10_000), 3 * len(makers))
    for k, spot in enumerate(spots):
        code, pointer, make = makers[k % len(makers)]
        lines[spot] = make(spot)
        defects[spot + 1] = (code, pointer)
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = path.read_bytes()
    config = {"input": "{{ item.meta.source }}"}
    report = validate_dataset(path, response_schema=SCHEMA, grader=AsciiOnlyGrader(), grader_config=config)
    assert path.read_bytes() == before
    assert codes(report) == sorted((line, code, pointer) for line, (code, pointer) in defects.items())
    assert report.rows == 10_000
    assert report.rows_with_errors == sum(1 for code, _ in defects.values() if code != "duplicate_prompt")


def test_a_50_mb_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    big = "word " * 10_000_000  # 50 MB of content
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(good_row(0)) + "\n")
        fh.write(json.dumps({"messages": [{"role": "user", "content": big}], "reference": {"city": "Oslo", "year": 1}}) + "\n")
        fh.write(json.dumps(good_row(2)) + "\n")
    del big
    tracemalloc.start()
    try:
        report = validate_dataset(path, response_schema=SCHEMA)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.rows == 3 and report.issues == []
    assert peak < 5 * 50_000_000  # a few copies of the line (bytes, text, parsed), never more
    report = validate_dataset(path, max_line_bytes=10_000_000)
    assert codes(report) == [(2, "line_too_long", "")]
    assert "50,000," in report.issues[0].message


def test_verl_parquet_is_read_by_row_group(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"data_source": "trips", "prompt": [{"role": "user", "content": f"Trip {i}: city and year?"}], "ability": "x",
             "reward_model": {"style": "rule", "ground_truth": json.dumps({"city": CITIES[i % 8], "year": 2000 + i})},
             "extra_info": {"index": i}} for i in range(10_000)]
    rows[4321]["prompt"] = [{"role": "user", "content": "   "}]
    rows[9000]["reward_model"] = {"style": "rule", "ground_truth": json.dumps({"city": "Oslo"})}
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    seen: list[tuple[int, int]] = []
    report = validate_dataset(path, response_schema=SCHEMA, progress=lambda done, total: seen.append((done, total)))
    assert (report.format, report.rows, report.reference_field) == ("verl", 10_000, "reward_model.ground_truth")
    assert codes(report) == [(4322, "empty_content", "/prompt/0/content"), (9001, "reference_invalid", "/reward_model/ground_truth")]
    assert seen[-1] == (10_000, 10_000)


def test_formats_are_detected_and_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "trl.jsonl"
    path.write_text('{"prompt": "2+2?", "solution": "4"}\n{"prompt": [{"role": "user", "content": "3+3?"}], "solution": "6"}\n')
    report = validate_dataset(path)
    assert (report.format, report.detected, report.reference_field, report.issues) == ("trl", True, "solution", [])
    forced = validate_dataset(path, format="openai_rft")
    assert not forced.detected and [i.code for i in forced.issues] == ["missing_field", "missing_field"]
    with pytest.raises(UserError) as exc:
        validate_dataset(path, format="alpaca")  # type: ignore[arg-type]  # the point: an unknown layout
    assert exc.value.code == "unknown_format"


def test_misuse_raises_could_not_run(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        validate_dataset(tmp_path / "missing.jsonl")
    assert exc.value.code == "dataset_not_found"
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(SchemaError):
        validate_dataset(path, response_schema=tmp_path / "nope.json")
    with pytest.raises(UserError) as exc:
        validate_dataset(path, response_schema={"type": "object"})
    assert exc.value.code == "no_reference_field"


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = validate_dataset(path)
    assert codes(report) == [(0, "empty_dataset", "")] and report.exit_code() == 1


def test_max_issues_keeps_the_counts_exact(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": ""}\n' * 50)
    report = validate_dataset(path, max_issues=10)
    assert len(report.issues) == 10 and report.dropped == 40 and report.counts == {"empty_prompt": 50}
    assert report.to_dict()["summary"]["dropped"] == 40


def test_prompt_index_matches_a_plain_dict() -> None:
    rng = random.Random(3)
    hashes = [rng.randrange(-(2**63), 2**63) for _ in range(300)]
    stream = [rng.choice(hashes) for _ in range(2000)]
    index = PromptIndex(chunk=37)
    found: dict[int, int] = {}
    for line, h in enumerate(stream, 1):
        index.add(h, line)
        if line % 500 == 0:
            found.update(index.flush())
    found.update(index.flush())
    first_seen: dict[int, int] = {}
    expected = {}
    for line, h in enumerate(stream, 1):
        if h in first_seen:
            expected[line] = first_seen[h]
        else:
            first_seen[h] = line
    assert found == expected


runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_exit_codes_and_json() -> None:
    clean = invoke("validate", str(FIXTURES / "clean_bom_crlf.jsonl"), "--schema", str(SCHEMA))
    assert clean.exit_code == 0, clean.output
    assert "openai_rft (detected)" in clean.output and "ok" in clean.output
    bad = invoke("validate", str(FIXTURES / "invalid_role.jsonl"), "--format", "json")
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["summary"]["counts"] == {"invalid_role": 1} and data["issues"][0]["line"] == 2
    missing = invoke("validate", str(FIXTURES / "nope.jsonl"))
    assert missing.exit_code == 2 and "dataset_not_found" in missing.output
    bad_schema = invoke("validate", str(FIXTURES / "clean_bom_crlf.jsonl"), "--schema", str(FIXTURES / "invalid_role.jsonl"))
    assert bad_schema.exit_code == 2


def test_cli_strict_makes_warnings_fail() -> None:
    path = str(FIXTURES / "duplicate_prompt.jsonl")
    assert invoke("validate", path).exit_code == 0
    strict = invoke("validate", path, "--strict")
    assert strict.exit_code == 1 and "duplicate_prompt" in strict.output and "line 2" in strict.output
    leak = invoke("validate", str(FIXTURES / "leaked_prompt.jsonl"), "--against", str(FIXTURES / "leaked_prompt.valid.jsonl"))
    assert leak.exit_code == 0 and "leaked_prompt.valid.jsonl line 2" in leak.output


def test_cli_grader_option_runs_gold_and_template_checks(tmp_path: Path) -> None:
    """register() wires any grader loader in; the config file's {{ item.x }} variables are checked in every row."""
    own = typer.Typer()
    own.callback()(lambda: None)  # a command group, as the rftkit app is, so the command is named
    register(own, lambda path: AsciiOnlyGrader())
    path = tmp_path / "grader.json"
    path.write_text(json.dumps({"type": "python", "source": "...", "input": "{{ item.meta.source }} {{ item.reference.city }}"}))
    result = runner.invoke(own, ["validate", str(FIXTURES / "unresolved_variable.jsonl"), "--grader", str(path), "-f", "json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["counts"] == {"unresolved_variable": 1} and "templates" in data["checks"]
    config = tmp_path / "formula.json"
    config.write_text(json.dumps({"type": "structured", "schema": json.loads(SCHEMA.read_text()),
                                  "aggregation": "formula", "formula": "0.5*city + 0.4*year"}))
    result = invoke("validate", str(FIXTURES / "clean_bom_crlf.jsonl"), "--grader", str(config))
    assert result.exit_code == 1 and "gold_below_max" in result.output and "0.9000 < 1" in result.output
    bad = tmp_path / "bad_grader.json"
    bad.write_text(json.dumps({"type": "nope"}))
    result = invoke("validate", str(FIXTURES / "clean_bom_crlf.jsonl"), "--grader", str(bad))
    assert result.exit_code == 2 and "unknown_grader_type" in result.output


def test_schema_export_and_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_models.py").write_text("from pydantic import BaseModel\n\nclass Trip(BaseModel):\n    city: str\n    year: int\n")
    monkeypatch.chdir(tmp_path)
    exported = invoke("schema", "export", "my_models:Trip")
    assert exported.exit_code == 0, exported.output
    schema = json.loads(exported.stdout)
    assert schema["required"] == ["city", "year"]
    assert invoke("schema", "export", "my_models:Nope").exit_code == 2
    assert invoke("schema", "check", str(SCHEMA)).exit_code == 0
    assert invoke("schema", "check", "my_models:Trip").exit_code == 0
    bad_ref = tmp_path / "ref.json"
    bad_ref.write_text(json.dumps({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}))
    result = invoke("schema", "check", str(bad_ref))
    assert result.exit_code == 1 and "unresolvable_ref" in result.output and "/properties/a/$ref" in result.output
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "strng"}}}))
    result = invoke("schema", "check", str(meta))
    assert result.exit_code == 1 and "invalid_schema" in result.output
    assert invoke("schema", "check", str(tmp_path / "absent.json")).exit_code == 2


def test_issue_records_are_json_ready() -> None:
    report = validate_dataset(FIXTURES / "reference_invalid.jsonl", response_schema=SCHEMA)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["issues"][0] == {"line": 2, "severity": "error", "code": "reference_invalid", "pointer": "/reference/year",
                                 "message": "the reference violates the schema (type): '2001' is not of type 'integer'",
                                 "input": "2001"}


def test_template_variables_use_the_graders_grammar(tmp_path: Path) -> None:
    """A key with a hyphen is a variable for graders.Template, so validation checks it too (it once did not)."""
    config = {"type": "string_check", "name": "n", "operation": "eq",
              "input": "{{ item.first-name }} and {{ item.a.b }}", "reference": "{{ sample.output_text }}"}
    assert [path for path, _ in template_variables(config)] == ["first-name", "a.b"]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "a": {"b": 1}}) + "\n", encoding="utf-8")
    report = validate_dataset(path, grader_config=config)
    assert [(i.code, i.pointer) for i in report.issues if i.code == "unresolved_variable"] == [("unresolved_variable", "/first-name")]
