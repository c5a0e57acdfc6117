"""Each grader config is one pydantic model: the generated JSON Schema and ``from_config`` agree, errors carry pointers."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import pytest

from graders import GraderConfigError, from_config
from graders._config_schema import grader_config_schema
from graders._registry import GRADER_TYPES
from graders.comparators import ComparatorName
from graders.comparators._registry import comparator_models
from graders.openai._configs import SUB_GRADER_CONFIGS, GraderConfig
from graders.openai._endpoint import EndpointGrader
from graders.openai._model_grader import LabelModelGrader, ScoreModelGrader
from graders.openai.python import PythonGrader
from schemas import SchemaError, load_schema

SCHEMA = load_schema(json.loads((resources.files("schemas") / "formats" / "grader_config.json").read_text(encoding="utf-8")))
ASK = [{"role": "user", "content": [{"type": "input_text", "text": "{{ sample.output_text }}"}, "{{ item.a }}"]}]
BASE: dict[str, dict[str, Any]] = {
    "string_check": {"type": "string_check", "name": "c", "input": "{{ sample.output_text }}", "reference": "{{ item.a }}",
                     "operation": "ilike"},
    "text_similarity": {"type": "text_similarity", "name": "t", "input": "{{ sample.output_text }}", "reference": "x",
                        "evaluation_metric": "fuzzy_match"},
    "python": {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"},
    "score_model": {"type": "score_model", "name": "s", "model": "m", "input": ASK, "range": [0, 10],
                    "sampling_params": {"temperature": 1, "max_tokens": 8}},
    "label_model": {"type": "label_model", "name": "l", "model": "m", "input": ASK, "labels": ["a", "b"], "passing_labels": ["a"]},
    "endpoint": {"type": "endpoint", "url": "https://127.0.0.1:9/score", "headers": {"A": "b"}, "rate_limit": 3},
    "structured": {"type": "structured", "name": "st", "fields": {"a": {"comparator": "fuzzy", "threshold": 0.5}},
                   "aggregation": "micro_f1", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
}
# (type, change to the base config, code, pointer): each is wrong in a way JSON Schema can say
BAD = [
    ("string_check", {"operation": "EQ"}, "bad_value", "/operation"),
    ("string_check", {"name": 3}, "wrong_type", "/name"),
    ("text_similarity", {"evaluation_metric": "rouge"}, "bad_value", "/evaluation_metric"),
    ("text_similarity", {"pass_threshold": True}, "wrong_type", "/pass_threshold"),
    ("python", {"image_tag": 1}, "wrong_type", "/image_tag"),
    ("python", {"sandbox": "x"}, "unknown_key", "/sandbox"),
    ("score_model", {"range": [0, 1, 2]}, "bad_value", "/range"),
    ("score_model", {"sampling_params": {"top_p": 2}}, "bad_value", "/sampling_params/top_p"),
    ("score_model", {"input": [{"role": "user"}]}, "missing_key", "/input/0/content"),
    ("score_model", {"input": [{"role": "user", "content": []}]}, "wrong_type", "/input/0/content"),
    ("score_model", {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a", "x": 1}]}]},
     "unknown_key", "/input/0/content/0/x"),
    ("label_model", {"labels": ["a", " "]}, "wrong_type", "/labels/1"),
    ("label_model", {"labels": "a"}, "wrong_type", "/labels"),
    ("endpoint", {"headers": {"": "x"}}, "wrong_type", "/headers/"),
    ("endpoint", {"rate_limit": "5"}, "bad_value", "/rate_limit"),
    ("endpoint", {"range": [0, "1"]}, "bad_value", "/range/1"),
    ("structured", {"lenient": 1}, "bad_option", "/lenient"),
    ("structured", {"fields": {"a": {"mode": "bag"}}}, "bad_field_option", "/fields/a/mode"),
    ("structured", {"schema": ["x"]}, "bad_schema", "/schema"),
]


def _changed(kind: str, change: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(BASE[kind]), **change}


@pytest.fixture(autouse=True)
def _model_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFTKIT_MODEL_BASE_URL", "http://127.0.0.1:9/v1")  # model graders need a server named; none is called


@pytest.mark.parametrize("kind", sorted(BASE))
def test_every_type_builds_and_satisfies_the_schema_alone_and_inside_multi(kind: str) -> None:
    config = copy.deepcopy(BASE[kind])
    multi = {"type": "multi", "name": "m", "graders": {"g": copy.deepcopy(config)}, "calculate_output": "g"}
    for each in (config, multi):
        before = copy.deepcopy(each)
        assert SCHEMA.validate(each) == []
        grader = from_config(each)
        assert each == before  # neither the schema nor the models change the config they check
        getattr(grader, "close", lambda: None)()


@pytest.mark.parametrize(("kind", "change", "code", "pointer"), BAD, ids=lambda x: repr(x)[:40])
def test_the_schema_and_from_config_reject_the_same_configs_at_the_same_place(kind: str, change: dict[str, Any],
                                                                             code: str, pointer: str) -> None:
    config = _changed(kind, change)
    assert SCHEMA.validate(config) != []
    with pytest.raises(GraderConfigError) as err:
        from_config(config)
    assert (err.value.code, err.value.pointer) == (code, pointer)
    assert err.value.hint or code in ("missing_key", "wrong_type", "bad_value")


@pytest.mark.parametrize(("kind", "change", "code", "pointer"), BAD, ids=lambda x: repr(x)[:40])
def test_an_error_in_a_sub_grader_points_through_the_multi(kind: str, change: dict[str, Any], code: str, pointer: str) -> None:
    config = {"type": "multi", "name": "m", "graders": {"ok": BASE["string_check"], "x/y": _changed(kind, change)},
              "calculate_output": "ok"}
    assert SCHEMA.validate(config) != []
    with pytest.raises(GraderConfigError) as err:
        from_config(config)
    assert (err.value.code, err.value.pointer) == (code, "/graders/x~1y" + pointer)


def test_checks_json_schema_cannot_say_are_the_models_validators() -> None:
    # each config satisfies the schema, yet its model rejects it, pointing at the bad part
    cases = [
        (_changed("string_check", {"input": "{{ itm.a }}"}), "bad_template", "/input"),
        (_changed("score_model", {"input": [{"role": "user", "content": [{"type": "input_text", "text": "{{ x }}"}]}]}),
         "bad_template", "/input/0/content/0/text"),
        (_changed("score_model", {"range": [1, 0]}), "bad_value", "/range"),
        (_changed("label_model", {"passing_labels": ["c"]}), "bad_value", "/passing_labels/0"),
        (_changed("label_model", {"labels": ["a", "a"]}), "bad_value", "/labels/1"),
        (_changed("python", {"source": "def grade(s):\n    return 1\n"}), "bad_grade_signature", "/source"),
        (_changed("endpoint", {"url": "ftp://x/y"}), "bad_value", "/url"),
        ({"type": "multi", "name": "m", "graders": {"a": BASE["string_check"]}, "calculate_output": "a + b"},
         "formula_unknown_name", "/calculate_output"),
    ]
    for config, code, pointer in cases:
        assert SCHEMA.validate(config) == [], config
        with pytest.raises(GraderConfigError) as err:
            from_config(config)
        assert (err.value.code, err.value.pointer) == (code, pointer)
        multi = {"type": "multi", "name": "m", "graders": {"in": config}, "calculate_output": "in"}
        if config["type"] != "multi":
            with pytest.raises(GraderConfigError) as err:
                from_config(multi)
            assert (err.value.code, err.value.pointer) == (code, "/graders/in" + pointer)


def test_a_schema_error_of_a_structured_sub_grader_points_into_the_multi() -> None:
    config = {"type": "multi", "name": "m", "calculate_output": "s",
              "graders": {"s": {"type": "structured", "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}}}}
    with pytest.raises(SchemaError) as err:
        from_config(config)
    assert err.value.pointer == "/graders/s/schema/properties/a/type"


def test_the_schema_is_a_union_on_type_with_one_definition_per_type() -> None:
    schema = grader_config_schema()
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(mapping) == set(SUB_GRADER_CONFIGS) | {"multi"}
    for kind, ref in mapping.items():
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["properties"]["type"]["const"] == kind and definition["additionalProperties"] is False
    multi = schema["$defs"]["MultiConfig"]["properties"]["graders"]["additionalProperties"]
    assert set(multi["discriminator"]["mapping"]) == set(SUB_GRADER_CONFIGS)  # a multi holds no multi
    described = [p for d in schema["$defs"].values() for p in d.get("properties", {}).values() if "description" in p]
    assert len(described) >= 30  # field docs come from the models' attribute docstrings


# -- comparator options: one model per comparator, the field-option schema generated from them ----------------

# (a field's override in a schema-free structured config, code, pointer under /fields/a)
BAD_FIELD_OPTIONS = [
    ({"comparator": "fuzy"}, "unknown_comparator", "/comparator"),
    ({"comparator": "fuzzy", "scorer": "nope"}, "bad_comparator_option", "/scorer"),
    ({"comparator": "fuzzy", "partial_credit": 1}, "bad_comparator_option", "/partial_credit"),
    ({"comparator": "fuzzy", "partial_credit": False}, "bad_comparator_option", "/threshold"),
    ({"comparator": "fuzzy", "partial_credit": False, "threshold": 0}, "bad_comparator_option", "/threshold"),
    ({"comparator": "fuzzy", "max_chars": 0}, "bad_comparator_option", "/max_chars"),
    ({"comparator": "fuzzy", "normalize": "yes"}, "bad_comparator_option", "/normalize"),
    ({"comparator": "number", "abs_tol": -1}, "bad_comparator_option", "/abs_tol"),
    ({"comparator": "number", "rel_tol": None}, "bad_comparator_option", "/rel_tol"),
    ({"comparator": "number", "decimal": ";"}, "bad_comparator_option", "/decimal"),
    ({"comparator": "number", "tolerance": 1}, "bad_comparator_option", "/tolerance"),
    ({"comparator": "date", "order": "dmy"}, "bad_comparator_option", "/order"),
    ({"comparator": "datetime", "tolerance": "1"}, "bad_comparator_option", "/tolerance"),
    ({"comparator": "enum", "case_sensitive": "no"}, "bad_comparator_option", "/case_sensitive"),
    ({"comparator": "normalized", "strip_punct": True}, "bad_comparator_option", "/strip_punct"),
    ({"comparator": "exact", "scorer": "ratio"}, "bad_comparator_option", "/scorer"),
    ({"comparator": "bool", "x": 1}, "bad_comparator_option", "/x"),
    ({"comparator": "math", "abs_tol": 1}, "bad_comparator_option", "/abs_tol"),
    ({"abs_toll": 1}, "bad_comparator_option", "/abs_toll"),
    ({"abs_tol": 1, "scorer": "ratio"}, "bad_comparator_option", ""),
    ({"abs_tol": -1}, "bad_comparator_option", "/abs_tol"),            # no comparator: the options name number
    ({"partial_credit": False}, "bad_comparator_option", "/threshold"),  # ... or fuzzy
]
GOOD_FIELD_OPTIONS = [
    {"comparator": "fuzzy", "partial_credit": False, "threshold": 0.9, "scorer": "WRatio", "max_chars": None},
    {"partial_credit": False, "threshold": 0.9},
    {"abs_tol": 0.5, "decimal": ","},
    {"comparator": "exact", "threshold": 0.5, "weight": 2, "required": True},
    {"order": "day_first"},
    {"comparator": "datetime", "tolerance": 60},
    {"comparator": "normalized", "strip_punctuation": True, "mode": "multiset"},
    {"weight": 0},
    {"comparator": None},
    {"fields": {"b": {"comparator": "enum", "case_sensitive": False}}},
]


def _structured(field: dict[str, Any]) -> dict[str, Any]:
    return {"type": "structured", "fields": {"a": copy.deepcopy(field)}}


@pytest.mark.parametrize("field", GOOD_FIELD_OPTIONS, ids=lambda x: repr(x)[:50])
def test_good_comparator_options_satisfy_the_schema_and_build(field: dict[str, Any]) -> None:
    config = _structured(field)
    assert SCHEMA.validate(config) == []
    assert from_config(config).fields["a"].options == {k: v for k, v in field.items() if k not in
                                                       ("comparator", "threshold", "weight", "required", "mode", "fields")}


@pytest.mark.parametrize(("field", "code", "pointer"), BAD_FIELD_OPTIONS, ids=lambda x: repr(x)[:50])
def test_the_schema_and_from_config_reject_the_same_comparator_options(field: dict[str, Any], code: str,
                                                                       pointer: str) -> None:
    config = _structured(field)
    assert SCHEMA.validate(config) != []
    with pytest.raises(GraderConfigError) as err:
        from_config(config)
    assert (err.value.code, err.value.pointer) == (code, "/fields/a" + pointer)
    assert err.value.hint
    multi = {"type": "multi", "name": "m", "graders": {"s": config}, "calculate_output": "s"}
    assert SCHEMA.validate(multi) != []
    with pytest.raises(GraderConfigError) as err:
        from_config(multi)
    assert (err.value.code, err.value.pointer) == (code, "/graders/s/fields/a" + pointer)


def test_the_field_option_schema_is_generated_from_the_comparator_models() -> None:
    spec = grader_config_schema()["$defs"]["FieldSpec"]
    branches = {b["title"].removesuffix(" options"): b for b in spec["anyOf"][1]["oneOf"]}
    models = comparator_models()
    assert list(branches) == list(models) == list(get_args(ComparatorName))
    assert spec["properties"]["comparator"]["anyOf"][0]["enum"] == list(models)
    for name, model in models.items():
        options = branches[name]["properties"]
        assert options.pop("comparator") == {"enum": [name, None]}
        assert options == model.model_json_schema().get("properties", {})
        assert all("description" in o for o in options.values())  # each option's docs: its attribute docstring


# -- a config built through from_config is validated once -----------------------------------------------------

ONCE = ["python", "score_model", "label_model", "endpoint"]


def _arguments(config: dict[str, Any]) -> dict[str, Any]:
    """A config as the grader class's constructor arguments (an endpoint's range is its score_range keyword)."""
    arguments = {k: v for k, v in config.items() if k != "type"}
    if config["type"] == "endpoint" and "range" in arguments:
        arguments["score_range"] = tuple(arguments.pop("range"))
    return arguments


@pytest.mark.parametrize("kind", ONCE)
def test_from_config_validates_a_config_once(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = SUB_GRADER_CONFIGS[kind]
    calls: list[object] = []
    validate = model.model_validate.__func__  # type: ignore[attr-defined]  # the classmethod's function, to wrap

    def counted(cls: type, data: object, **kwargs: Any) -> Any:
        calls.append(data)
        return validate(cls, data, **kwargs)

    monkeypatch.setattr(model, "model_validate", classmethod(counted))
    grader = from_config(copy.deepcopy(BASE[kind]))
    assert len(calls) == 1, calls  # the dict, and not the constructor's arguments again
    getattr(grader, "close", lambda: None)()
    calls.clear()
    rebuilt = type(grader)(**_arguments(grader.config()))
    assert len(calls) == 1  # the constructor validates its arguments, once
    assert rebuilt.config() == grader.config()
    getattr(rebuilt, "close", lambda: None)()


@pytest.mark.parametrize("kind", ONCE)
def test_the_constructor_and_from_config_give_the_same_errors(kind: str) -> None:
    grader_class = {"python": PythonGrader, "score_model": ScoreModelGrader, "label_model": LabelModelGrader,
                    "endpoint": EndpointGrader}[kind]
    own = {"python": ({"image_tag": 1}, "wrong_type", "/image_tag"), "score_model": ({"range": [1, 0]}, "bad_value", "/range"),
           "label_model": ({"passing_labels": ["c"]}, "bad_value", "/passing_labels/0"),
           "endpoint": ({"url": "ftp://x/y"}, "bad_value", "/url")}[kind]
    for change, code, pointer in (({"name": ""}, "wrong_type", "/name"), ({"name": 3}, "wrong_type", "/name"), own):
        config = {**copy.deepcopy(BASE[kind]), **change}
        with pytest.raises(GraderConfigError) as from_dict:
            from_config(config)
        with pytest.raises(GraderConfigError) as from_arguments:
            grader_class(**_arguments(config))
        assert (from_dict.value.code, from_dict.value.pointer) == (from_arguments.value.code, from_arguments.value.pointer)
        assert (from_dict.value.code, from_dict.value.pointer) == (code, pointer)


# -- a new grader type is one registry entry -------------------------------------------------------------------

TOY_MODULE = '''
from typing import Any, ClassVar, Literal

from graders._result import Grade
from graders._validation import ConfigModel
from graders.openai._common import OpenAIGrader


class ToyConfig(ConfigModel):
    """A grader type that exists only in this test."""

    what = "a toy grader config"
    type: Literal["toy"]
    name: str
    score: float
    """The score every grade gets."""


class ToyGrader(OpenAIGrader):
    type: ClassVar[str] = "toy"

    def __init__(self, config: ToyConfig) -> None:
        self.name, self.score = config.name, config.score

    @classmethod
    def from_config(cls, config: Any) -> "ToyGrader":
        from graders._validation import validate_config

        return cls(config if isinstance(config, ToyConfig) else validate_config(ToyConfig, config))

    def grade(self, sample: Any, item: Any = None) -> Grade:
        return Grade(self.score, {}, {}, None, "toy")

    def config(self) -> dict[str, Any]:
        return {"type": "toy", "name": self.name, "score": self.score}
'''
TOY_RUN = '''
import sys
from importlib.machinery import PathFinder


class RegisterToy:  # adds one entry to GRADER_TYPES as graders._registry is imported, and changes nothing else
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "graders._registry":
            return None
        spec = PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.GRADER_TYPES["toy"] = module.GraderType("toy_grader:ToyConfig", "toy_grader:ToyGrader.from_config",
                                                           request_borne="safe")

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, RegisterToy)

from graders import GraderConfigError, from_config
from graders._config_schema import grader_config_schema
from graders.serve._wire import SAFE_GRADER_TYPES

toy = {"type": "toy", "name": "t", "score": 0.25}
assert from_config(toy).grade("x").score == 0.25
multi = from_config({"type": "multi", "name": "m", "graders": {"a": toy}, "calculate_output": "2 * a"})
assert multi.grade("x", {}).score == 0.5
try:
    from_config({"type": "multi", "name": "m", "graders": {"a": {**toy, "scor": 1}}, "calculate_output": "a"})
except GraderConfigError as exc:
    assert (exc.code, exc.pointer) == ("unknown_key", "/graders/a/scor"), exc
else:
    raise AssertionError("an unknown key of a toy sub-grader was accepted")
schema = grader_config_schema()
assert schema["discriminator"]["mapping"]["toy"] == "#/$defs/ToyConfig"
inner = schema["$defs"]["MultiConfig"]["properties"]["graders"]["additionalProperties"]["discriminator"]["mapping"]
assert "toy" in inner and "toy" in SAFE_GRADER_TYPES
print("toy registered")
'''


def test_a_new_grader_type_is_one_registry_entry(tmp_path: Path) -> None:
    # A type added to GRADER_TYPES, and nowhere else, is built by from_config, held by multi (its errors pointing
    # through it), in the JSON Schema alone and inside multi, and known to the server.
    (tmp_path / "toy_grader.py").write_text(TOY_MODULE, encoding="utf-8")
    (tmp_path / "run.py").write_text(TOY_RUN, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0 and "toy registered" in done.stdout, done.stderr


def test_the_config_unions_are_the_registry_s_models() -> None:
    every = get_args(get_args(GraderConfig)[0])
    assert every == tuple(t.model() for t in GRADER_TYPES.values())
    assert SUB_GRADER_CONFIGS == {k: t.model(sub=True) for k, t in GRADER_TYPES.items() if k != "multi"}
