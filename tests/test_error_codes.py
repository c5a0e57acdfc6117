"""The error codes are closed sets: every code raised anywhere is listed, every listed code is raised, docs/errors.md has each.

The sets are :data:`schemas.MisuseCode` (``UserError.code``), :data:`schemas.IssueCode`
(``Issue.code``), ``graders._errors.ErrorFlag`` (the keys of ``Grade.errors``) and
``graders.serve._wire.RequestErrorCode`` (the reward server's own ``error.code``).
mypy rejects a literal code outside them where the ``code`` parameters are typed;
this test finds the codes the way a reader would, in the source, and also covers
the codes built at run time (the JSON Schema keywords a validation reports).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from graders._errors import ErrorFlag
from graders._result import ERROR_FLAGS
from graders.serve._wire import RequestErrorCode
from schemas import IssueCode, MisuseCode, load_schema
from schemas._errors import DatasetIssueCode, ParseIssueCode, SchemaIssueCode

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "graders", "rl")

CODE_TYPES = {"MisuseCode", "IssueCode", "DatasetIssueCode", "ParseIssueCode", "SchemaIssueCode", "RequestErrorCode",
              "_Failure"}  # _Failure: the failed parse statuses (graders/structured/_decode.py), each an issue code
ISSUE_RECORDS = {"Issue", "DatasetIssue", "RawProblem"}  # records whose first field is the code
REFUSAL = "Rejected"  # the server's refusal: Rejected(status, code, ...)
Kind = Literal["misuse", "issue", "request"]
FLAG_HOMES = {"graders/_errors.py", "graders/_result.py", "graders/_run.py"}  # define or translate flags, set none


def sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


def strings(node: ast.AST | None) -> set[str]:
    """Every string constant in an expression (a code, or the codes an ``x if c else y`` or a dict can give)."""
    if node is None:
        return set()
    if isinstance(node, ast.Constant):
        return {node.value} if isinstance(node.value, str) else set()
    children = node.values if isinstance(node, ast.Dict) else ast.iter_child_nodes(node)  # a dict's values, not its keys
    return {s for child in children if child is not None for s in strings(child)}


def names_code_type(annotation: ast.AST | None) -> bool:
    return annotation is not None and any(isinstance(n, ast.Name) and n.id in CODE_TYPES for n in ast.walk(annotation))


def names_flag_type(annotation: ast.AST | None) -> bool:
    return annotation is not None and any(isinstance(n, ast.Name) and n.id == "ErrorFlag" for n in ast.walk(annotation))


def callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def kind_of(annotation: ast.AST) -> Kind:
    """Which set a code-typed annotation names (a server refusal may also carry a misuse code it passes on)."""
    text = ast.unparse(annotation)
    return "request" if "RequestErrorCode" in text else "issue" if "Issue" in text or "_Failure" in text else "misuse"


def code_parameters(trees: list[tuple[str, ast.Module]]) -> tuple[dict[str, list[tuple[int, str, Kind]]], dict[str, set[str]]]:
    """(function name -> (position or -1, name, kind) of each parameter typed with a code set; file -> functions it defines)."""
    found: dict[str, list[tuple[int, str, Kind]]] = {}
    defined: dict[str, set[str]] = {}
    for where, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defined.setdefault(where, set()).add(node.name)
                if node.name == "__init__":
                    continue
                params = [*node.args.posonlyargs, *node.args.args]
                offset = 1 if params and params[0].arg in ("self", "cls") else 0
                typed = [(i - offset, p.arg, kind_of(p.annotation)) for i, p in enumerate(params)
                         if p.annotation is not None and names_code_type(p.annotation)]
                typed += [(-1, p.arg, kind_of(p.annotation)) for p in node.args.kwonlyargs
                          if p.annotation is not None and names_code_type(p.annotation)]
                if typed:
                    found[node.name] = typed
    return found, defined


def raised_codes() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """(misuse, issue, flag, request) code -> the files that raise or set it, read from the source."""
    trees = list(sources())
    typed_params, defined = code_parameters(trees)
    misuse: dict[str, set[str]] = {}
    issue: dict[str, set[str]] = {}
    flags: dict[str, set[str]] = {}
    request: dict[str, set[str]] = {}
    sets: dict[Kind, dict[str, set[str]]] = {"misuse": misuse, "issue": issue, "request": request}
    flag_names = set(get_args(ErrorFlag))

    def add(into: dict[str, set[str]], codes: set[str], where: str) -> None:
        for code in codes:
            into.setdefault(code, set()).add(where)

    for where, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = callee(node)
                into = issue if name in ISSUE_RECORDS else misuse
                for keyword in node.keywords:
                    if keyword.arg == "code":  # UserError(..., code="x"), Issue(code=...)
                        add(into, strings(keyword.value), where)
                if name in ISSUE_RECORDS and node.args:  # DatasetIssue("x", pointer, ...)
                    add(issue, strings(node.args[0]), where)
                if name == REFUSAL and len(node.args) > 1:  # Rejected(503, "overloaded", ...)
                    add(request, strings(node.args[1]), where)
                own = name in defined.get(where, set())  # a module's own helper of that name wins over another's
                for position, param, kind in [] if own and name not in _typed_in(where, trees) else typed_params.get(name, []):
                    args = [node.args[position]] if 0 <= position < len(node.args) else []  # _issue(out, line, "x", ...)
                    args += [k.value for k in node.keywords if k.arg == param]
                    for arg in args:
                        add(sets[kind], strings(arg), where)
                if where not in FLAG_HOMES:  # flagged("other_error", ...)
                    add(flags, {s for a in node.args for s in strings(a)} & flag_names, where)
            elif isinstance(node, ast.AnnAssign) and names_code_type(node.annotation):  # codes: dict[str, MisuseCode] = {...}
                add(sets[kind_of(node.annotation)], strings(node.value), where)
            elif isinstance(node, ast.AnnAssign) and names_flag_type(node.annotation) and where not in FLAG_HOMES:
                add(flags, strings(node.value) & flag_names, where)  # flag: ErrorFlag = "a" if c else "b"; dict[str, ErrorFlag]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and names_code_type(node.returns):
                for ret in ast.walk(node):  # (code, pointer, message, hint) tuples, or a code
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        value = ret.value.elts[0] if isinstance(ret.value, ast.Tuple) else ret.value
                        add(sets[kind_of(node.returns)], strings(value), where)
            elif isinstance(node, (ast.Assign, ast.AugAssign)) and where not in FLAG_HOMES:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:  # errors["x"] = True, errors["a" if c else "b"] = True, flag = {...}.get(...)
                    if isinstance(target, ast.Subscript):
                        add(flags, strings(target.slice) & flag_names, where)
                    elif isinstance(target, ast.Name) and "flag" in target.id:
                        add(flags, strings(node.value) & flag_names, where)
    return misuse, issue, flags, request


def _typed_in(where: str, trees: list[tuple[str, ast.Module]]) -> set[str]:
    """The functions of the file ``where`` that have a code-typed parameter."""
    tree = dict(trees)[where]
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(a.annotation is not None and names_code_type(a.annotation)
                    for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs])}


MISUSE, ISSUES, FLAGS, REQUESTS = raised_codes()


def test_every_misuse_code_raised_is_listed_and_every_listed_one_is_raised() -> None:
    listed = set(get_args(MisuseCode))
    assert set(MISUSE) - listed == set(), "raised but not in schemas.MisuseCode"
    assert listed - set(MISUSE) == set(), "listed in schemas.MisuseCode but raised nowhere"


def test_every_issue_code_made_is_listed_and_every_listed_one_is_made() -> None:
    listed = set(get_args(IssueCode))
    keywords = set(get_args(SchemaIssueCode))  # made at run time from the violated keyword: see the test below
    assert set(ISSUES) - listed == set(), "made but not in schemas.IssueCode"
    assert listed - set(ISSUES) - keywords == set(), "listed in schemas.IssueCode but made nowhere"
    assert listed == set(get_args(SchemaIssueCode)) | set(get_args(ParseIssueCode)) | set(get_args(DatasetIssueCode))


def test_every_error_flag_is_listed_in_order_and_every_one_but_openais_observation_flag_is_set() -> None:
    assert ERROR_FLAGS == get_args(ErrorFlag)
    assert set(get_args(ErrorFlag)) - set(FLAGS) == {"truncated_observation_error"}


def test_every_request_error_code_raised_is_listed_and_every_listed_one_is_raised() -> None:
    listed = set(get_args(RequestErrorCode))
    assert set(REQUESTS) - listed == set(), "refused with but not in RequestErrorCode"
    assert listed - set(REQUESTS) == set(), "listed in RequestErrorCode but refused with nowhere"


def test_the_scan_sees_each_kind_of_site() -> None:
    """The scan is not vacuous: a keyword, a positional record, a typed helper, a typed dict and a typed return."""
    assert "graders/structured/_planner.py" in MISUSE["unknown_field"]  # GraderConfigError(..., code="unknown_field")
    assert "graders/datasets/_validate.py" in ISSUES["gold_below_max"]  # DatasetIssue("gold_below_max", ...)
    assert "graders/datasets/_checks.py" in ISSUES["invalid_role"]  # _issue(out, line, "invalid_role", ...)
    assert "graders/structured/_decode.py" in ISSUES["no_json"]  # _failure("no_json", ...)
    assert "graders/structured/_options.py" in MISUSE["bad_aggregation"]  # codes: dict[str, MisuseCode]
    assert "rl/_cli.py" in ISSUES["prompt_and_messages"]  # row_problem(...) -> tuple[DatasetIssueCode, ...]
    assert "graders/openai/_endpoint.py" in FLAGS["unresponsive_reward_error"]  # flag: ErrorFlag = "..." if ... else "..."
    assert "graders/structured/_grader.py" in FLAGS["truncated_output_error"]  # _STATUS_FLAGS: dict[str, ErrorFlag] = {...}
    assert "graders/openai/python/_grader.py" in FLAGS["python_grader_server_error"]  # errors["a" if c else "b"] = True
    assert "graders/serve/_pool.py" in REQUESTS["overloaded"]  # Rejected(503, "overloaded", ...)
    assert "graders/serve/_wire.py" in REQUESTS["malformed_json"]  # _bad("malformed_json", ...)
    assert "graders/serve/_app.py" in REQUESTS["not_found"]  # codes: dict[int, RequestErrorCode]
    assert "/model" not in REQUESTS  # rl/_cli.py's own _bad(pointer, ...) is not the server's _bad(code, ...)


DRAFT7 = "http://json-schema.org/draft-07/schema#"

# keyword -> (schema, an instance that violates exactly that keyword)
VIOLATIONS: dict[str, tuple[dict[str, Any], Any]] = {
    "additionalItems": ({"$schema": DRAFT7, "items": [{}], "additionalItems": False}, [1, 2]),
    "additionalProperties": ({"type": "object", "additionalProperties": False}, {"a": 1}),
    "anyOf": ({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, 1),
    "const": ({"const": 1}, 2),
    "contains": ({"contains": {"type": "string"}}, [1]),
    "dependencies": ({"$schema": DRAFT7, "dependencies": {"a": ["b"]}}, {"a": 1}),
    "dependentRequired": ({"dependentRequired": {"a": ["b"]}}, {"a": 1}),
    "enum": ({"enum": ["a", "b"]}, "c"),
    "exclusiveMaximum": ({"exclusiveMaximum": 1}, 1),
    "exclusiveMinimum": ({"exclusiveMinimum": 1}, 1),
    "format": ({"format": "ipv4"}, "not an address"),
    "items": ({"prefixItems": [{}], "items": False}, [1, 2]),
    "maximum": ({"maximum": 1}, 2),
    "maxItems": ({"maxItems": 1}, [1, 2]),
    "maxLength": ({"maxLength": 1}, "ab"),
    "maxProperties": ({"maxProperties": 1}, {"a": 1, "b": 2}),
    "minimum": ({"minimum": 1}, 0),
    "minItems": ({"minItems": 1}, []),
    "minLength": ({"minLength": 2}, "a"),
    "minProperties": ({"minProperties": 1}, {}),
    "multipleOf": ({"multipleOf": 2}, 3),
    "not": ({"not": {"type": "integer"}}, 1),
    "oneOf": ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, 1),
    "pattern": ({"pattern": "^a"}, "b"),
    "required": ({"required": ["a"]}, {}),
    "type": ({"type": "string"}, 1),
    "uniqueItems": ({"uniqueItems": True}, [1, 1]),
    "unevaluatedItems": ({"prefixItems": [{}], "unevaluatedItems": False}, [1, 2]),
    "unevaluatedProperties": ({"properties": {"a": {}}, "unevaluatedProperties": False}, {"a": 1, "b": 2}),
    "false_schema": ({"properties": {"a": False}}, {"a": 1}),
}


def test_every_json_schema_keyword_code_is_what_a_validation_reports() -> None:
    assert set(VIOLATIONS) == set(get_args(SchemaIssueCode)) - {"invalid"}  # invalid: a keyword this list lacks


@pytest.mark.parametrize("code", sorted(VIOLATIONS))
def test_a_violated_keyword_is_reported_under_its_code(code: str) -> None:
    schema, instance = VIOLATIONS[code]
    assert [issue.code for issue in load_schema(schema).validate(instance)] == [code]


def documented_codes() -> dict[str, list[str]]:
    """code -> the kinds its rows in docs/errors.md give (a code may be both a misuse and an issue code)."""
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "docs" / "errors.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`([A-Za-z0-9_]+)`\s*\|\s*(misuse|data|flag|request)\s*\|", line)
        if match:
            rows.setdefault(match.group(1), []).append(match.group(2))
    return rows


def test_docs_errors_md_has_one_row_per_code_and_kind() -> None:
    rows = documented_codes()
    expected = {(c, "misuse") for c in get_args(MisuseCode)} | {(c, "data") for c in get_args(IssueCode)} | \
        {(c, "flag") for c in get_args(ErrorFlag)} | {(c, "request") for c in get_args(RequestErrorCode)}
    found = [(code, kind) for code, kinds in rows.items() for kind in kinds]
    assert len(found) == len(set(found)), "a code is documented twice for the same kind"
    assert set(found) == expected
