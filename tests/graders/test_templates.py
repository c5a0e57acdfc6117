"""Templates: the variable grammar, path walking, the rendering rule and missing variables."""

from __future__ import annotations

from typing import Any

import pytest

from graders import GraderConfigError
from graders.openai import MissingVariable, Sample, Template

ITEM: dict[str, Any] = {
    "name": "Ada",
    "answers": [{"text": "first"}, {"text": "second"}],
    "meta": {"count": 3, "ok": True, "none": None, "tags": ["x", "y"], "ratio": 0.5},
    "city": "São Paulo",
}
TOOLS_SAMPLE: dict[str, Any] = {
    "output_text": "",
    "output_tools": [{"type": "function", "function": {"name": "lookup", "arguments": '{"smiles":"CCO"}'}}],
}


@pytest.mark.parametrize(("source", "sample", "expected"), [
    ("{{ item.name }}", "", "Ada"),
    ("{{item.name}}", "", "Ada"),
    ("{{   item.name\t}}", "", "Ada"),
    ("Hi {{ item.name }}!", "", "Hi Ada!"),
    ("{{ item.answers[1].text }}", "", "second"),
    ("{{ item.answers[0] }}", "", '{"text":"first"}'),
    ("{{ item.meta.count }}", "", "3"),
    ("{{ item.meta.ok }}", "", "true"),
    ("{{ item.meta.none }}", "", "null"),
    ("{{ item.meta.ratio }}", "", "0.5"),
    ("{{ item.meta.tags }}", "", '["x","y"]'),
    ("{{ item.city }}", "", "São Paulo"),
    ("{{ item.meta }}", "", '{"count":3,"ok":true,"none":null,"tags":["x","y"],"ratio":0.5}'),
    ("{{sample.output_text}}", "  raw text, kept as is  ", "  raw text, kept as is  "),
    ("{{ sample.output_json.a.b }}", '{"a": {"b": "deep"}}', "deep"),
    ("{{ sample.output_json.a }}", '{"a": {"b": "é"}}', '{"b":"é"}'),
    ("{{ sample.output_json }}", '```json\n{"a": [1, 2]}\n```', '{"a":[1,2]}'),
    ("{{sample.output_tools[0].function.arguments}}", TOOLS_SAMPLE, '{"smiles":"CCO"}'),
    ("{{ sample.output_tools[0].function.name }}", TOOLS_SAMPLE, "lookup"),
    ("no variables at all", "", "no variables at all"),
    ("{{ item.name }} and {{ item.name }}", "", "Ada and Ada"),
    ("{ item.name } {{", "", "{ item.name } {{"),
], ids=repr)
def test_render(source: str, sample: Any, expected: str) -> None:
    assert Template(source).render(Sample.of(sample), ITEM) == expected


@pytest.mark.parametrize(("source", "sample", "item", "variable", "says"), [
    ("{{ item.missing }}", "", ITEM, "item.missing", "no key 'missing'"),
    ("{{ item.answers[2].text }}", "", ITEM, "item.answers[2].text", "past the end"),
    ("{{ item.name[0] }}", "", ITEM, "item.name[0]", "not a list"),
    ("{{ item.name.first }}", "", ITEM, "item.name.first", "not an object"),
    ("{{ item.meta.none.x }}", "", ITEM, "item.meta.none.x", "null"),
    ("{{ item.name }}", "", None, "item.name", "no item"),
    ("{{ sample.output_json.city }}", "Paris", ITEM, "sample.output_json.city", "no JSON"),
    ("{{ sample.output_json.city }}", '{"town": "Paris"}', ITEM, "sample.output_json.city", "no key 'city'"),
    ("{{ sample.output_tools[0] }}", "text", ITEM, "sample.output_tools[0]", "no such field"),
    ("{{ sample.answer }}", "text", ITEM, "sample.answer", "not a sample field"),
    ("ok {{ item.name }} then {{ item.nope }}", "", ITEM, "item.nope", "no key"),
], ids=repr)
def test_missing_variable_is_a_record(source: str, sample: Any, item: dict[str, Any] | None, variable: str, says: str) -> None:
    result = Template(source).render(Sample.of(sample), item)
    assert isinstance(result, MissingVariable)
    assert result.variable == variable and says in result.message


@pytest.mark.parametrize("source", ["{{ items.x }}", "{{ x }}", "{{ item.x | upper }}", "{{ item.x() }}", "{{ }}",
                                    "{{ item[a] }}", "a {{ __import__('os') }}", "{{ item.x + 1 }}"])
def test_malformed_variables_raise_at_construction(source: str) -> None:
    with pytest.raises(GraderConfigError) as info:
        Template(source, pointer="/input")
    assert info.value.code == "bad_template" and info.value.pointer == "/input"


def test_render_value_yields_the_raw_value_only_for_a_lone_variable() -> None:
    s = Sample.of('{"a": {"b": [1, 2]}}')
    assert Template("{{ sample.output_json.a }}").render_value(s, None) == {"b": [1, 2]}
    assert Template("{{ item.meta.count }}").render_value(s, ITEM) == 3
    assert Template(" {{ item.meta.count }}").render_value(s, ITEM) == " 3"  # text around it: rendered text
    assert Template("{{ item.meta.count }}{{ item.name }}").render_value(s, ITEM) == "3Ada"
    assert isinstance(Template("{{ item.zzz }}").render_value(s, ITEM), MissingVariable)


def test_variables_lists_each_as_written() -> None:
    t = Template("{{item.a}} {{ sample.output_json.b[0].c }} {{ item.a }}")
    assert t.variables == ("item.a", "sample.output_json.b[0].c", "item.a")


@pytest.mark.parametrize(("raw", "text", "json_value", "tools"), [
    ('{"a": 1}', '{"a": 1}', {"a": 1}, None),
    ("Sure: ```json\n{\"a\": 1}\n```", "Sure: ```json\n{\"a\": 1}\n```", {"a": 1}, None),
    ("plain words", "plain words", None, None),
    ('{"a": 1,', '{"a": 1,', None, None),  # truncated: no output_json
    ({"output_text": "x", "output_json": {"k": "v"}}, "x", {"k": "v"}, None),  # given output_json wins
    ({"output_text": '{"k": 2}'}, '{"k": 2}', {"k": 2}, None),
    ({"choices": [{"message": {"content": '{"k": 3}', "tool_calls": [{"id": "t"}]}, "finish_reason": "stop"}]},
     '{"k": 3}', {"k": 3}, [{"id": "t"}]),
    ({"output_tools": [{"id": "u"}]}, None, None, [{"id": "u"}]),
], ids=repr)
def test_sample_builder(raw: Any, text: str | None, json_value: Any, tools: Any) -> None:
    s = Sample.of(raw)
    assert (s.output_text, s.output_json, s.output_tools) == (text, json_value, tools)
    assert Sample.of(s) is s


def test_sample_of_a_wrong_type_is_misuse() -> None:
    from schemas import UserError

    with pytest.raises(UserError) as info:
        Sample.of(42)  # type: ignore[arg-type]  # the misuse under test
    assert info.value.code == "bad_sample"


def test_templates_never_execute_code() -> None:
    item = {"x": "{{ item.y }}", "y": "secret"}
    assert Template("{{ item.x }}").render(Sample.of(""), item) == "{{ item.y }}"  # values are not re-rendered
