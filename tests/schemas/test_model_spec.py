"""``--schema path/to/file.py:Model``: a user's own ``schemas.py`` (the name of rftkit's package) still works.

rftkit's import packages are ``schemas``, ``graders`` and ``rl``, so ``schemas:Invoice``
names rftkit's package even when the current directory holds the user's ``schemas.py``.
Every option that takes ``MODULE:Model`` (``validate --schema``, ``schema export``,
``schema check``) also takes the file's path, loaded under a private module name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import schemas
from graders._cli import app
from schemas._cli import load_model

INVOICE = """
from datetime import date
from pydantic import BaseModel

class Invoice(BaseModel):
    number: str
    issued: date
    total: float
"""

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project: their own schemas.py beside the data, as the current directory."""
    (tmp_path / "schemas.py").write_text(INVOICE)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "billing.py").write_text(INVOICE)
    rows = [{"prompt": "Invoice A-1 of 2024-03-15, 187.50", "reference": {"number": "A-1", "issued": "2024-03-15", "total": 187.5}},
            {"prompt": "Invoice A-2", "reference": {"number": "A-2", "issued": "15 March 2024", "total": 10}}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("spec", ["schemas.py:Invoice", "./schemas.py:Invoice", "models/billing.py:Invoice"])
def test_validate_takes_a_file_path_and_model(project: Path, spec: str) -> None:
    result = invoke("validate", "train.jsonl", "--schema", spec, "--format", "json")
    assert result.exit_code == 1, result.output
    issues = json.loads(result.stdout)["issues"]
    assert [(i["line"], i["code"], i["pointer"]) for i in issues] == [(2, "reference_invalid", "/reference/issued")]


def test_an_absolute_path_works_and_the_users_module_does_not_replace_ours(project: Path) -> None:
    cls = load_model(f"{project / 'schemas.py'}:Invoice")
    assert cls.__name__ == "Invoice" and cls.__module__ != "schemas"
    assert sys.modules["schemas"] is schemas and hasattr(schemas, "UserError")


def test_schema_export_and_check_take_a_file_path(project: Path) -> None:
    exported = invoke("schema", "export", "schemas.py:Invoice")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["required"] == ["number", "issued", "total"]
    checked = invoke("schema", "check", "models/billing.py:Invoice")
    assert checked.exit_code == 0 and "Invoice" in checked.output, checked.output


def test_a_module_name_that_is_rftkits_own_package_says_how_to_name_the_file(project: Path) -> None:
    result = invoke("validate", "train.jsonl", "--schema", "schemas:Invoice")
    assert result.exit_code == 2, result.output
    assert "rftkit's own" in result.output and "./schemas.py:Invoice" in result.output


@pytest.mark.parametrize(("spec", "words"), [
    ("absent.py:Invoice", "not found"),
    ("schemas.py:Nope", "not a pydantic model class"),
    ("broken.py:Invoice", "ZeroDivisionError"),
])
def test_file_spec_errors_are_could_not_run(project: Path, spec: str, words: str) -> None:
    (project / "broken.py").write_text("1 / 0\n")
    result = invoke("schema", "export", spec)
    assert result.exit_code == 2 and words in result.output, result.output
