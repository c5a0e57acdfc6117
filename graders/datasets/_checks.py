"""The per-row structure checks of each dataset layout, paths into a row, and the template variables a grader reads."""


from collections.abc import Callable, Mapping
from typing import Any

from schemas._errors import DatasetIssueCode
from schemas.reading import (
    shorten,
)

from .._errors import GraderConfigError
from ..openai._templates import Template
from ._records import _PATH_PART, ROLES, WARNING_CODES, DatasetIssue

# -- paths into a row ---------------------------------------------------------------------


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split a dotted path with ``[i]`` indexes into keys and indexes.

    >>> parse_path("reward_model.ground_truth"), parse_path("a.b[0].c")
    (('reward_model', 'ground_truth'), ('a', 'b', 0, 'c'))
    """
    return tuple(int(m.group(2)) if m.group(2) is not None else m.group(1) for m in _PATH_PART.finditer(path))


_MISSING = object()


def resolve(row: Any, path: tuple[str | int, ...]) -> tuple[Any, int]:
    """Follow ``path`` in ``row``: (value, len(path)) when it resolves, else (``_MISSING``, index of the first step that failed)."""
    node = row
    for depth, step in enumerate(path):
        if isinstance(step, int):
            if isinstance(node, list) and -len(node) <= step < len(node):
                node = node[step]
                continue
        elif isinstance(node, dict) and step in node:
            node = node[step]
            continue
        return _MISSING, depth
    return node, len(path)


def template_variables(config: Any) -> list[tuple[str, tuple[str | int, ...]]]:
    """Every distinct ``{{ item.x }}`` variable in a grader config's templates, in order of appearance: the path as
    written (after ``item.``) and its steps, read by :class:`graders.openai.Template` (the grammar the graders use).

    A python grader's ``source`` is code, not a template; a string that does not compile as a template is left to
    the grader, which rejects it when it is built.

    >>> template_variables({"input": [{"content": "{{ item.question }}"}], "reference": "{{item.answers[0].text}}"})
    [('question', ('question',)), ('answers[0].text', ('answers', 0, 'text'))]
    >>> [path for path, _ in template_variables({"input": "{{ item.first-name }} and {{ item.a.b }}"})]
    ['first-name', 'a.b']
    """
    found: dict[str, tuple[str | int, ...]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            if "{{" not in node:
                return
            try:
                template = Template(node)
            except GraderConfigError:
                return
            for text, steps in template.item_variables:
                found.setdefault(text, steps)
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if key != "source":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(found.items())


# -- structure checks per format --------------------------------------------------------------

_Out = list[DatasetIssue]


def _issue(out: _Out, line: int, code: DatasetIssueCode, pointer: str, message: str, value: Any = None) -> None:
    out.append(DatasetIssue(code, pointer, message, shorten(value), line, "warning" if code in WARNING_CODES else "error"))


def _covered(out: _Out, pointer: str) -> bool:
    """True when an issue already found in this row points at ``pointer`` or a part containing it (one defect, one report)."""
    return any(i.pointer and (pointer == i.pointer or pointer.startswith(i.pointer + "/")) for i in out)


def _check_messages(msgs: Any, base: str, line: int, out: _Out) -> bool:
    """Check a list of chat messages; True when it is a usable prompt (errors go to ``out``)."""
    if not isinstance(msgs, list):
        _issue(out, line, "wrong_type", base, f"{base[1:]} must be a list of messages, got {type(msgs).__name__}", msgs)
        return False
    if not msgs:
        _issue(out, line, "empty_prompt", base, f"{base[1:]} is an empty list: there is nothing to prompt with", msgs)
        return False
    fine = True
    for i, m in enumerate(msgs):
        ptr = f"{base}/{i}"
        if not isinstance(m, dict):
            _issue(out, line, "wrong_type", ptr, f"a message must be an object, got {type(m).__name__}", m)
            fine = False
            continue
        role = m.get("role")
        if role is None:
            _issue(out, line, "missing_field", ptr + "/role", "message has no 'role'", m)
            fine = False
        elif role not in ROLES:
            _issue(out, line, "invalid_role", ptr + "/role", f"unknown role {role!r}; expected one of {sorted(ROLES)}", role)
            fine = False
        content = m.get("content")
        if isinstance(content, str):
            if not content.strip():
                _issue(out, line, "empty_content", ptr + "/content", f"the {role} message has empty content", content)
                fine = False
        elif isinstance(content, list):
            if not content:
                _issue(out, line, "empty_content", ptr + "/content", f"the {role} message has no content parts", content)
                fine = False
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    _issue(out, line, "wrong_type", f"{ptr}/content/{j}",
                           'a content part must be an object with a "type" (e.g. {"type": "text", "text": ...})', part)
                    fine = False
        elif content is None:
            if not (role == "assistant" and m.get("tool_calls")):
                _issue(out, line, "missing_field", ptr + "/content", f"the {role} message has no 'content'", m)
                fine = False
        else:
            _issue(out, line, "wrong_type", ptr + "/content",
                   f"content must be a string or a list of parts, got {type(content).__name__}", content)
            fine = False
    last = msgs[-1]
    if isinstance(last, dict) and last.get("role") in ROLES and last.get("role") != "user":
        _issue(out, line, "last_message_not_user", f"{base}/{len(msgs) - 1}/role",
               f"the last message is from {last.get('role')!r}; the model answers the user, so the prompt must end with a user message",
               last.get("role"))
        fine = False
    return fine


def _check_prompt(row: dict[str, Any], line: int, out: _Out) -> Any:
    """A ``prompt`` column: a non-empty string or a list of messages. Returns the prompt, or None when unusable."""
    if "prompt" not in row or row["prompt"] is None:
        _issue(out, line, "missing_field", "/prompt", "row has no 'prompt'", None)
        return None
    prompt = row["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            _issue(out, line, "empty_prompt", "/prompt", "prompt is empty", prompt)
            return None
        return prompt
    if isinstance(prompt, list):
        return prompt if _check_messages(prompt, "/prompt", line, out) else None
    _issue(out, line, "wrong_type", "/prompt", f"prompt must be a string or a list of messages, got {type(prompt).__name__}", prompt)
    return None


def _check_openai_rft(row: dict[str, Any], line: int, out: _Out) -> Any:
    if "messages" not in row:
        _issue(out, line, "missing_field", "/messages", "row has no 'messages' (the OpenAI RFT format puts the prompt there)", None)
        return None
    if "tools" in row and not isinstance(row["tools"], list):
        _issue(out, line, "wrong_type", "/tools", f"tools must be a list, got {type(row['tools']).__name__}", row["tools"])
    msgs = row["messages"]
    return msgs if _check_messages(msgs, "/messages", line, out) else None


def _check_verl(row: dict[str, Any], line: int, out: _Out) -> Any:
    source = row.get("data_source")
    if source is None:
        _issue(out, line, "missing_field", "/data_source", "row has no 'data_source' (verl picks the reward function by it)", None)
    elif not isinstance(source, str):
        _issue(out, line, "wrong_type", "/data_source", f"data_source must be a string, got {type(source).__name__}", source)
    rm = row.get("reward_model")  # when absent, the reference check reports /reward_model/ground_truth as missing
    if rm is not None and not isinstance(rm, dict):
        _issue(out, line, "wrong_type", "/reward_model", f"reward_model must be an object, got {type(rm).__name__}", rm)
    info = row.get("extra_info")
    if info is not None and not isinstance(info, dict):
        _issue(out, line, "wrong_type", "/extra_info", f"extra_info must be an object, got {type(info).__name__}", info)
    return _check_prompt(row, line, out)


FORMATS: dict[str, Callable[[dict[str, Any], int, _Out], Any]] = {
    "openai_rft": _check_openai_rft,
    "prompt_reference": _check_prompt,
    "trl": _check_prompt,
    "verl": _check_verl,
}
"""Each layout's structure check: it appends issues and returns the prompt (None when unusable)."""

_DEFAULT_REFERENCE = {"prompt_reference": "reference", "verl": "reward_model.ground_truth"}


def detect_format(row: Mapping[str, Any]) -> str | None:
    """Name the layout of one row, or None.

    >>> detect_format({"messages": []}), detect_format({"prompt": "x", "reference": 1}), detect_format({"prompt": "x", "answer": 1})
    ('openai_rft', 'prompt_reference', 'trl')
    >>> detect_format({"data_source": "gsm8k", "prompt": [], "reward_model": {"ground_truth": "4"}})
    'verl'
    """
    if "messages" in row:
        return "openai_rft"
    rm = row.get("reward_model")
    if "data_source" in row and "prompt" in row and isinstance(rm, Mapping) and "ground_truth" in rm:
        return "verl"
    if "prompt" in row and "reference" in row:
        return "prompt_reference"
    if "prompt" in row:
        return "trl"
    return None




