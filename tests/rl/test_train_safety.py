"""``rftkit train``'s safety rails, on the tiny GPT-2 of ``test_trainer.py``.

The output folder (a used one is refused unless ``--resume`` or ``--overwrite``), the final
model (written atomically; ``--resume`` finishes one a kill left missing), device and write
errors (one line, exit 2), a run without an eval set (no ``eval/`` keys), and the dataset
check before the model is loaded (``rftkit validate``'s report; ``--skip-bad-rows``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_train_cli import PPO, ROWS, invoke, write_assets
from test_trainer import tiny_model, tiny_tokenizer

from rl import read_metrics
from rl._checkpoint import checkpoint_name, list_checkpoints


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model + tokenizer, a 6-row dataset and a structured grader config."""
    return write_assets(tmp_path_factory.mktemp("train_safety"))


def write_config(where: Path, assets: Path, *, steps: int = 1, data: Path | None = None, device: str = "cpu",
                 dataset_extra: str = "eval_count = 2", train_extra: str = "checkpoint_every = 1") -> Path:
    """A TOML config in ``where`` whose output is ``where/out``."""
    config = where / "run.toml"
    config.write_text(f"""
[model]
name_or_path = {json.dumps(str(assets / "model"))}
device = {json.dumps(device)}

[dataset]
train = {json.dumps(str(data or assets / "data.jsonl"))}
{dataset_extra}

[grader]
config = {json.dumps(str(assets / "grader.json"))}
{PPO}
[train]
steps = {steps}
console_every = 1
output = "out"
{train_extra}
""", encoding="utf-8")
    return config


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with a file's bytes (None for a directory)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error:")]


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as loading the model or tokenizer."""
    import transformers

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)


# --------------------------------------------------------------------------- 11: the output folder


def test_a_second_run_into_a_used_folder_is_refused_and_leaves_it_untouched(tmp_path: Path, assets: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, assets, steps=2)
    (tmp_path / "out").mkdir()  # an existing, empty folder is fine
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 0, out
    before = tree(tmp_path / "out")

    code, out = invoke(["train", str(config), "--steps", "1"], monkeypatch)  # run B: its step-1 would be pruned under A's
    assert code == 2, out
    [line] = error_lines(out)  # one line: what is there and what to do
    assert "not empty" in line and "metrics.jsonl" in line and "checkpoints" in line
    assert "--resume" in line and "--overwrite" in line and "/train/output" in line
    assert tree(tmp_path / "out") == before  # A's metrics, checkpoints and model untouched


def test_overwrite_replaces_a_previous_run(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, assets, steps=2)
    assert invoke(["train", str(config)], monkeypatch)[0] == 0
    code, out = invoke(["train", str(config), "--steps", "1", "--overwrite"], monkeypatch)
    assert code == 0, out
    run = tmp_path / "out"
    assert [m["step"] for m in read_metrics(run / "metrics.jsonl")] == [1]  # B's log alone
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [checkpoint_name(1)]  # A's step 2 is gone
    assert (run / "model" / "model.safetensors").is_file()


def test_overwrite_refuses_a_folder_holding_other_files(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, assets)
    assert invoke(["train", str(config)], monkeypatch)[0] == 0
    run = tmp_path / "out"
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    (run / "checkpoints" / "best").mkdir()  # not a step-* directory: the user's
    before = tree(run)
    code, out = invoke(["train", str(config), "--overwrite"], monkeypatch)
    assert code == 2, out
    [line] = error_lines(out)
    assert "notes.txt" in line and "best" in line
    assert tree(run) == before  # nothing removed


def test_overwrite_never_takes_a_model_folder_rftkit_did_not_write(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 no_model_load: None) -> None:
    config = write_config(tmp_path, assets)
    shutil.copytree(assets / "model", tmp_path / "out" / "model")  # e.g. the user's base model
    before = tree(tmp_path / "out")
    code, out = invoke(["train", str(config), "--overwrite"], monkeypatch)
    assert code == 2 and "model" in error_lines(out)[0], out
    assert tree(tmp_path / "out") == before


def test_only_rftkit_s_own_files_count_as_its_own(tmp_path: Path) -> None:
    from rl._checkpoint import MODEL_MARKER
    from rl._cli import foreign_entries

    run = tmp_path / "run"
    for d in ("checkpoints/step-00000002", "checkpoints/.tmp-step-00000003-7", "plots", "model", ".tmp-model-7"):
        (run / d).mkdir(parents=True)
    for f in ("metrics.jsonl", "plots/reward.png", f"model/{MODEL_MARKER}", ".tmp-probe-x1"):
        (run / f).write_text("", encoding="utf-8")
    assert foreign_entries(run) == []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "plots" / "mine.png").write_text("", encoding="utf-8")
    (run / "checkpoints" / "step-00000009").symlink_to(elsewhere)  # deleting through a link could reach anywhere
    (run / "data.jsonl").write_text("", encoding="utf-8")
    assert foreign_entries(run) == ["checkpoints/step-00000009/", "data.jsonl", "plots/mine.png"]


def test_resume_and_overwrite_together_are_refused(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch,
                                                   no_model_load: None) -> None:
    code, out = invoke(["train", str(write_config(tmp_path, assets)), "--resume", "--overwrite"], monkeypatch)
    assert code == 2 and "--resume" in out and "--overwrite" in out, out


# --------------------------------------------------------------------------- 12: the final model


@pytest.mark.parametrize("damage", ["missing", "partial"])
def test_resume_writes_the_final_model_a_kill_left_missing(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch,
                                                          damage: str) -> None:
    config = write_config(tmp_path, assets)
    assert invoke(["train", str(config)], monkeypatch)[0] == 0
    run = tmp_path / "out"
    shutil.rmtree(run / "model")  # a kill while model/ was written (after the last checkpoint)
    if damage == "partial":  # what the old non-atomic write left: some files, and a temp dir of the new writer
        (run / "model").mkdir()
        (run / "model" / "config.json").write_text("{}", encoding="utf-8")
        (run / ".tmp-model-4242").mkdir()
        (run / ".tmp-model-4242" / "model.safetensors").write_bytes(b"half")

    code, out = invoke(["train", str(config), "--resume"], monkeypatch)
    assert code == 0, out
    assert "model" in out and "nothing to do" not in out
    assert not list(run.glob(".tmp-*"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "model")
    AutoTokenizer.from_pretrained(run / "model")
    saved = load_file(str(list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"))
    state = model.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())  # the last checkpoint's weights

    code, out = invoke(["train", str(config), "--resume"], monkeypatch)  # now complete: nothing left to do
    assert code == 0 and "nothing to do" in out, out


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    from rl._checkpoint import replace_directory

    final = tmp_path / "model"
    final.mkdir()
    (final / "weights").write_text("old", encoding="utf-8")
    (tmp_path / ".tmp-model-999").mkdir()  # left by a writer that was killed

    def failing(tmp: Path) -> None:
        (tmp / "weights").write_text("new, half written", encoding="utf-8")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        replace_directory(final, failing)
    assert info.value.errno == errno.ENOSPC and str(final) in str(info.value.filename)  # the error names what was written
    assert (final / "weights").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dir left, the stale one cleared too

    def succeeding(tmp: Path) -> None:
        (tmp / "weights").write_text("new", encoding="utf-8")

    replace_directory(final, succeeding)
    assert (final / "weights").read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --------------------------------------------------------------------------- 13: devices, write errors, no eval set


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "gpu"])
def test_a_device_this_torch_cannot_use_exits_2_with_one_line(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch,
                                                             no_model_load: None, device: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch, even on a GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, out = invoke(["train", str(write_config(tmp_path, assets, device=device))], monkeypatch)
    assert code == 2, out
    [line] = error_lines(out)
    assert "/model/device" in line and device in line and "Traceback" not in out


def test_an_output_that_cannot_be_created_exits_2_naming_it(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch,
                                                           no_model_load: None) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")  # root ignores chmod; a path under a file fails for everyone
    output = tmp_path / "afile" / "run"
    code, out = invoke(["train", str(write_config(tmp_path, assets)), "--output", str(output)], monkeypatch)
    assert code == 2, out
    [line] = error_lines(out)
    assert str(tmp_path / "afile") in line and os.strerror(errno.ENOTDIR) in line and "/train/output" in line


def test_a_full_disk_while_checkpointing_exits_2_naming_the_path(tmp_path: Path, assets: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import rl._checkpoint

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rl._checkpoint, "save_model", full)  # the policy's weights, written by save_policy
    code, out = invoke(["train", str(write_config(tmp_path, assets))], monkeypatch)
    assert code == 2, out
    [line] = error_lines(out)
    assert os.strerror(errno.ENOSPC) in line and str(tmp_path / "out" / "checkpoints") in line and "Traceback" not in out
    assert not list((tmp_path / "out" / "checkpoints").glob(".tmp-*"))


def test_a_run_without_an_eval_set_logs_no_eval_keys(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = invoke(["train", str(write_config(tmp_path, assets, steps=2, dataset_extra=""))], monkeypatch)
    assert code == 0, out
    metrics = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert not [k for m in metrics for k in m if k.startswith("eval/")]  # evaluated at each checkpoint: nothing to evaluate
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == ["entropy.png", "kl.png", "reward.png"]
    assert "done: 2 step(s)" in out and "nan" not in out.split("done:")[1]


def test_eval_every_without_an_eval_set_is_refused(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch,
                                                   no_model_load: None) -> None:
    config = write_config(tmp_path, assets, dataset_extra="", train_extra="eval_every = 1")
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 2 and "/train/eval_every" in out, out


def test_evaluate_without_eval_rows_returns_nothing() -> None:
    from test_trainer import ROWS as TRAINER_ROWS
    from test_trainer import small_config

    from graders import StructuredGrader
    from rl import PPOTrainer

    tok = tiny_tokenizer()
    assert PPOTrainer(tiny_model(tok), tok, StructuredGrader(), TRAINER_ROWS, [], small_config()).evaluate() == {}


# --------------------------------------------------------------------------- 14: the dataset check before the model


BAD_LINES = [
    json.dumps({"prompt": "", "reference": {"city": "Paris"}}),  # line 7: empty_prompt
    '{"prompt": "capital of spain?", "reference": ',  # line 8: invalid_json
    json.dumps({"prompt": "capital of spain?"}),  # line 9: missing_reference
    json.dumps({"prompt": [{"role": "user", "content": "hi"}], "reference": {"city": "Rome"}}),  # line 10: a chat under 'prompt'
]


@pytest.fixture
def bad_data(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n".join(BAD_LINES) + "\n"
                    + json.dumps({"prompt": "capital of germany?", "reference": {"city": "Berlin"}}) + "\n", encoding="utf-8")
    return path


def test_bad_rows_stop_the_run_before_the_model_is_loaded(tmp_path: Path, assets: Path, bad_data: Path,
                                                          monkeypatch: pytest.MonkeyPatch, no_model_load: None) -> None:
    code, out = invoke(["train", str(write_config(tmp_path, assets, data=bad_data))], monkeypatch)
    assert code == 2, out
    for line, code_name in ((7, "empty_prompt"), (8, "invalid_json"), (9, "missing_reference"), (10, "prompt_not_text")):
        assert f"{bad_data}:{line}: error {code_name}" in out, (line, out)
    assert "--skip-bad-rows" in error_lines(out)[0]
    assert not (tmp_path / "out").exists()  # nothing written

    validated = invoke(["validate", str(bad_data), "--grader", str(assets / "grader.json")], monkeypatch)[1]
    issue_lines = [line for line in validated.splitlines() if re.match(rf"{re.escape(str(bad_data))}:\d+: ", line)]
    assert issue_lines and all(line in out for line in issue_lines)  # rftkit validate's report, line for line


@pytest.mark.parametrize("how", ["flag", "toml"])
def test_skip_bad_rows_trains_on_the_rest_and_lists_each_skipped_row(tmp_path: Path, assets: Path, bad_data: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    extra = "eval_count = 2" + ("\nskip_bad_rows = true" if how == "toml" else "")
    args = ["train", str(write_config(tmp_path, assets, data=bad_data, dataset_extra=extra))]
    code, out = invoke(args + (["--skip-bad-rows"] if how == "flag" else []), monkeypatch)
    assert code == 0, out
    assert "skipped 4 bad row(s)" in out and "lines 7, 8, 9, 10" in out
    assert "on 5 prompts (2 held out)" in out  # 7 good rows: 5 trained on, the last 2 held out
    assert [m["step"] for m in read_metrics(tmp_path / "out" / "metrics.jsonl")] == [1]
