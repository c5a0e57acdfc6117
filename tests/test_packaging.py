"""The package surface: public names, the one-way dependency rule, py.typed, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import graders
import graders.adapters
import graders.eval
import graders.openai
import graders.openai.python
import graders.serve
import graders.structured
import rl
import schemas
from graders._cli import app, load_plugins

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module", [schemas, graders, rl, graders.comparators, graders.adapters, graders.serve, graders.structured,
                                     graders.openai, graders.openai.python, graders.eval],
                         ids=lambda m: m.__name__)
def test_all_lists_exactly_the_public_names(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]  # every public module defines __all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), f"{module.__name__}.{name} is listed but missing"
    public = {n for n in vars(module) if not n.startswith("_")}
    imported_modules = {n for n in public if type(getattr(module, n)).__name__ == "module" and n not in names}
    assert public - set(names) - imported_modules == set(), "public names missing from __all__"


@pytest.mark.parametrize("package", ["schemas", "graders", "rl"])
def test_py_typed_ships(package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()


def test_graders_import_without_torch() -> None:
    """graders and schemas import, grade and never load torch, even where torch is absent."""
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'rl'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
import graders, schemas
g = graders.StructuredGrader().grade('{"a": [1, 2]}', {"a": [2, 1]})
assert g.score == 1.0, g.reason
assert not any(m.split('.')[0] in ('torch', 'transformers', 'rl') for m in sys.modules)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


runner = CliRunner()


def test_cli_help_lists_the_commands() -> None:
    load_plugins(app)  # main() does this; idempotent
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "grade" in result.output and "demo" in result.output


def test_the_installed_entry_points_name_every_plugin_command() -> None:
    from importlib.metadata import entry_points

    commands = {ep.name: ep.value for ep in entry_points(group="rftkit.commands")}
    assert commands == {"train": "rl._cli:register", "demo": "rl._demo:register", "serve": "graders.serve._command:register",
                        "eval": "graders.eval._cli:register"}
    samplers = {ep.name: ep.value for ep in entry_points(group="rftkit.samplers")}
    assert samplers == {"local": "rl._eval_model:LocalSampler"}


def test_grade_command_writes_one_result_per_row(tmp_path: Path) -> None:
    out = tmp_path / "grades.jsonl"
    data = ROOT / "graders" / "data" / "resume_demo.jsonl"
    before = data.read_bytes()
    result = runner.invoke(app, ["grade", str(data), "--grader", str(ROOT / "examples/resume/grader.json"), "-o", str(out)],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(data.read_text().splitlines())
    assert rows[0]["sub_rewards"]["programming_languages"] == pytest.approx(2 / 3)
    assert rows[0]["details"]["programming_languages"]["missing"] == ["c++"]
    assert rows[5]["metadata"]["errors"]["truncated_output_error"] and rows[6]["metadata"]["errors"]["sample_parse_error"]
    assert data.read_bytes() == before  # the user's file is never modified


def test_grade_command_reports_a_bad_config_clearly(tmp_path: Path) -> None:
    cfg = tmp_path / "g.json"
    cfg.write_text(json.dumps({"type": "structured", "fields": {"a": {"comparator": "nope"}}}))
    data = tmp_path / "d.jsonl"
    data.write_text('{"output": "{}", "reference": {"a": 1}}\n')
    result = runner.invoke(app, ["grade", str(data), "--grader", str(cfg)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "unknown_comparator" in result.output and "/fields/a/comparator" in result.output


def test_validate_with_an_openai_type_grader_checks_templates_not_gold(tmp_path: Path) -> None:
    cfg = tmp_path / "check.json"
    cfg.write_text(json.dumps({"type": "string_check", "name": "c", "input": "{{ sample.output_text }}",
                               "reference": "{{ item.reference.nope }}", "operation": "eq"}))
    data = ROOT / "graders" / "data" / "resume_demo.jsonl"
    result = runner.invoke(app, ["validate", str(data), "--grader", str(cfg), "--format", "json"])
    report = json.loads(result.output)
    assert result.exit_code == 1, result.output
    assert report["summary"]["counts"] == {"unresolved_variable": 10}
    assert "gold_below_max" not in result.output
