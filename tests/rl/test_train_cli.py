"""``rftkit train CONFIG`` end to end on a tiny GPT-2 saved to disk: TOML and YAML, --resume, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_trainer import tiny_model, tiny_tokenizer
from typer.testing import CliRunner

from graders._cli import app, load_plugins
from rl import read_metrics
from rl._checkpoint import checkpoint_name, list_checkpoints

load_plugins(app)
runner = CliRunner()

ROWS = [{"prompt": p, "reference": {"city": c}} for p, c in [
    ("capital of france?", "Paris"), ("where is the eiffel tower?", "Paris"), ("capital of italy?", "Rome"),
    ("where is the colosseum?", "Rome"), ("a city on the rhone?", "Lyon"), ("home of the louvre?", "Paris")]]

PPO = """
[ppo]
learning_rate = 0.01
samples_per_prompt = 2
prompts_per_batch = 2
max_new_tokens = 4
ppo_epochs = 1
minibatch_size = 4
advantage = "grpo"
seed = 0
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_assets(tmp_path_factory.mktemp("train_cli"))


def write_assets(root: Path) -> Path:
    """``root`` with a saved tiny model + tokenizer, a 6-row dataset and a structured grader config."""
    tok = tiny_tokenizer()
    tok.save_pretrained(root / "model")
    tiny_model(tok).save_pretrained(root / "model")
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    grader = {"type": "structured", "name": "city", "fields": {"city": {"comparator": "normalized"}}}
    (root / "grader.json").write_text(json.dumps(grader), encoding="utf-8")
    return root


def toml_config(steps: int = 2, extra: str = "", ppo: str = PPO) -> str:
    return f"""
[model]
name_or_path = "model"
device = "cpu"

[dataset]
train = "data.jsonl"
eval_count = 2

[grader]
config = "grader.json"
{ppo}
[train]
steps = {steps}
checkpoint_every = 1
console_every = 1
output = "runs/a"
{extra}"""


def invoke(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_train_is_registered_once() -> None:
    load_plugins(app)  # idempotent
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert names.count("train") == 1


def test_train_writes_metrics_checkpoints_and_resumes(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "run.toml"
    config.write_text(toml_config(steps=2).replace('"model"', json.dumps(str(assets / "model")))
                      .replace('"data.jsonl"', json.dumps(str(assets / "data.jsonl")))
                      .replace('"grader.json"', json.dumps(str(assets / "grader.json"))), encoding="utf-8")
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 0, out
    run = tmp_path / "runs" / "a"  # train.output is relative to the config file
    assert [m["step"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [checkpoint_name(1), checkpoint_name(2)]
    assert (run / "model" / "model.safetensors").is_file()

    code, out = invoke(["train", str(config), "--resume", "--steps", "3"], monkeypatch)
    assert code == 0, out
    metrics = read_metrics(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert "eval/reward/mean" in metrics[-1]
    assert list_checkpoints(run / "checkpoints")[-1].name == checkpoint_name(3)


def test_resume_without_a_checkpoint_exits_2(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = assets / "noresume.toml"
    config.write_text(toml_config(), encoding="utf-8")
    code, out = invoke(["train", str(config), "--resume", "--output", str(tmp_path / "empty")], monkeypatch)
    assert code == 2 and "no checkpoint" in out and "/train/output" in out


def test_yaml_config_works_and_output_overrides(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = assets / "run.yaml"
    config.write_text(
        "model: {name_or_path: model, device: cpu}\n"
        "dataset: {train: data.jsonl, eval: data.jsonl}\n"
        "grader: {config: grader.json}\n"
        "ppo: {learning_rate: 0.01, samples_per_prompt: 2, prompts_per_batch: 2, max_new_tokens: 4, ppo_epochs: 1,\n"
        "      minibatch_size: 4, advantage: rloo}\n"
        "train: {steps: 1, console_every: null}\n", encoding="utf-8")
    code, out = invoke(["train", str(config), "--output", str(tmp_path / "y")], monkeypatch)
    assert code == 0, out
    assert [m["step"] for m in read_metrics(tmp_path / "y" / "metrics.jsonl")] == [1]
    assert [p.name for p in list_checkpoints(tmp_path / "y" / "checkpoints")] == [checkpoint_name(1)]  # default: the last step


@pytest.mark.parametrize(("edit", "pointer"), [
    (lambda c: c.replace("learning_rate = 0.01", "learning_rate = -1"), "/ppo/learning_rate"),
    (lambda c: c.replace("learning_rate = 0.01", 'learning_rate = "fast"'), "/ppo/learning_rate"),
    (lambda c: c.replace("seed = 0", "seed = 0\nwarmup = 3"), "/ppo/warmup"),
    (lambda c: c + "\n[optimizer]\nname = \"adamw\"\n", "/optimizer"),
    (lambda c: c.replace("steps = 2", "steps = 0"), "/train/steps"),
    (lambda c: c.replace('config = "grader.json"', 'config = "missing.json"'), "/grader/config"),
    (lambda c: c.replace('name_or_path = "model"', 'name_or_path = "./nowhere"'), "/model/name_or_path"),
    (lambda c: c.replace("eval_count = 2", "eval_count = 2\neval = \"data.jsonl\""), "/dataset/eval_count"),
])
def test_bad_config_exits_2_with_the_pointer(edit: object, pointer: str, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = assets / "bad.toml"
    config.write_text(edit(toml_config()), encoding="utf-8")  # type: ignore[operator]
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 2, out
    assert pointer in out and "error" in out


def test_unreadable_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[model\n", encoding="utf-8")
    assert invoke(["train", str(bad)], monkeypatch)[0] == 2
    assert invoke(["train", str(tmp_path / "absent.toml")], monkeypatch)[0] == 2
    other = tmp_path / "c.ini"
    other.write_text("x", encoding="utf-8")
    code, out = invoke(["train", str(other)], monkeypatch)
    assert code == 2 and ".toml" in out


def test_the_docs_example_config_uses_only_known_keys() -> None:
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from rl._cli import SECTIONS, _ppo_config

    page = (Path(__file__).resolve().parents[2] / "docs" / "rl.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```toml\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    assert blocks
    for i, block in enumerate(blocks):
        data = tomllib.loads(block)
        if i == 0:  # the first is the full example: every section but the optional [lora]
            assert set(data) == set(SECTIONS) - {"lora"}
        for name, section in data.items():
            assert set(section) <= SECTIONS[name], name
        if "ppo" in data:
            _ppo_config(data["ppo"])
        if "lora" in data:  # the real-model example: its [model] and [lora] values are valid too
            from rl import LoRAConfig, ModelConfig
            from rl._cli import _section_config

            _section_config(LoRAConfig, data["lora"], "lora")
            _section_config(ModelConfig, data["model"], "model", skip=frozenset({"name_or_path", "device"}))


def test_the_ppo_section_reads_an_optional_kl_target() -> None:
    from rl._cli import _ppo_config
    from schemas import UserError

    assert _ppo_config({"kl_target": 2, "kl_horizon": 640}).kl_target == 2.0  # TOML: an int is fine for a float field
    assert _ppo_config({"kl_target": None}).kl_target is None  # YAML's null
    for bad, pointer in (({"kl_target": "2"}, "/ppo/kl_target"), ({"kl_target": 1.0, "kl_coef": 0}, "/ppo/kl_coef")):
        with pytest.raises(UserError) as info:
            _ppo_config(bad)
        assert info.value.pointer == pointer


def test_the_ppo_section_reads_a_learning_rate_schedule() -> None:
    from rl._cli import _ppo_config
    from schemas import UserError

    config = _ppo_config({"warmup_steps": 5, "lr_schedule": "cosine", "lr_decay_steps": 200})
    assert (config.warmup_steps, config.lr_schedule, config.lr_decay_steps) == (5, "cosine", 200)
    assert isinstance(config.lr_decay_steps, int)  # an `int | None` field stays an int (not 200.0)
    for bad, pointer in (({"lr_schedule": "cosine", "lr_decay_steps": 200.5}, "/ppo/lr_decay_steps"),
                         ({"lr_schedule": "linear"}, "/ppo/lr_decay_steps"), ({"lr_schedule": 1}, "/ppo/lr_schedule")):
        with pytest.raises(UserError) as info:
            _ppo_config(bad)
        assert info.value.pointer == pointer


def test_a_plugin_that_cannot_import_becomes_a_stub_that_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import typer

    import graders._cli as cli

    broken = EntryPoint(name="train", value="rl_missing_for_test._cli:register", group=cli.PLUGIN_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken] if group == cli.PLUGIN_GROUP else [])
    fresh = typer.Typer()

    @fresh.command()
    def other() -> None:  # two commands, so typer keeps subcommand names
        """A placeholder."""

    cli.load_plugins(fresh)
    cli.load_plugins(fresh)  # idempotent
    result = runner.invoke(fresh, ["train", "cfg.toml", "--resume"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "needs the rl extra: install rftkit[rl]" in result.output
