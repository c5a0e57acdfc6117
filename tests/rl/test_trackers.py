"""Trackers (``report_to``): TensorBoard, W&B and MLflow get each step's metrics, offline, read back with their own tools.

TensorBoard's event files are read by TensorBoard's ``EventAccumulator``; W&B runs with
``WANDB_MODE=offline`` and its run file is read back record by record (W&B's own protobuf
``Record``); MLflow writes to a local file store that ``MlflowClient`` reads. Nothing reaches the network.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_train_cli import ROWS as CLI_ROWS
from test_train_cli import invoke, toml_config
from test_trainer import ROWS, small_config, tiny_model, tiny_tokenizer

import rl._logging
from graders import StructuredGrader
from rl import MetricsLogger, PPOTrainer, read_metrics
from rl._cli import foreign_entries
from rl._logging import check_report_to
from schemas import UserError

STEPS = [  # per-field keys as the trainer logs them, one that MLflow cannot take as is, and a NaN (no reading)
    (1, {"reward/mean": 0.25, "reward/invoice/total": 0.5, "reward/items[0]": 1.0, "kl/to_init": 0.01, "eval/reward/mean": math.nan}),
    (2, {"reward/mean": 0.5, "reward/invoice/total": 0.75, "reward/items[0]": 0.0, "kl/to_init": 0.02}),
]


def log_steps(log_dir: Path, report_to: list[str], steps: list[tuple[int, dict[str, float]]] = STEPS, start_step: int = 0) -> None:
    with MetricsLogger(log_dir / "metrics.jsonl", console_every=None, report_to=report_to, start_step=start_step,
                       run_config={"learning_rate": 1e-5, "top_p": 0.9}) as log:
        for step, metrics in steps:
            log.log(step, metrics)


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_event_files_hold_every_finite_metric_at_its_step(tmp_path: Path) -> None:
    log_steps(tmp_path, ["tensorboard"])
    got = scalars(tmp_path)
    assert set(got) == {"reward/mean", "reward/invoice/total", "reward/items[0]", "kl/to_init"}  # the NaN is no reading
    assert got["reward/invoice/total"] == [(1, 0.5), (2, 0.75)]
    assert got["kl/to_init"] == [(1, pytest.approx(0.01)), (2, pytest.approx(0.02))]
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]  # the JSONL is written as well
    assert foreign_entries(tmp_path) == []  # rftkit train --overwrite takes the event files as its own


def test_a_resumed_run_replaces_the_tensorboard_steps_after_its_checkpoint(tmp_path: Path) -> None:
    log_steps(tmp_path, ["tensorboard"], [(1, {"reward/mean": 0.1}), (2, {"reward/mean": 0.2}), (3, {"reward/mean": 0.3})])
    log_steps(tmp_path, ["tensorboard"], [(2, {"reward/mean": 0.7}), (3, {"reward/mean": 0.8})], start_step=1)  # resumed at step 1
    assert scalars(tmp_path)["reward/mean"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.7)), (3, pytest.approx(0.8))]
    assert [row["reward/mean"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [0.1, 0.7, 0.8]


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B run file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose chunks
    (crc32 4, length 2, type 1: full 1, first 2, middle 3, last 4) join into protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_holds_each_steps_metrics_and_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "rftkit-test")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    log_steps(tmp_path / "run-a", ["wandb"])
    import wandb

    wandb.teardown()  # waits for W&B's service to have written and closed the run file (finish() only waits for the exit record)
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history, config, project = [], {}, None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "run":
            project = record.run.project
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    assert project == "rftkit-test" and config["learning_rate"] == 1e-5 and config["top_p"] == 0.9
    assert [row["_step"] for row in history] == [1, 2]
    assert [row["reward/invoice/total"] for row in history] == [0.5, 0.75]
    assert history[1]["reward/items[0]"] == 0.0 and "eval/reward/mean" not in history[0]


def test_mlflow_local_store_holds_each_steps_metrics_and_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's local file store, kept in maintenance mode
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "rftkit-test")
    log_steps(tmp_path / "run-a", ["mlflow"])
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("rftkit-test")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run-a" and run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "1e-05", "top_p": "0.9"}
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
               for key in run.data.metrics}
    assert set(history) == {"reward/mean", "reward/invoice/total", "reward/items_0_", "kl/to_init"}  # [ ] are not MLflow's
    assert history["reward/invoice/total"] == [(1, 0.5), (2, 0.75)]


def test_an_mlflow_store_that_cannot_open_is_one_error_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses its file store unless asked
    with pytest.raises(UserError) as caught:
        log_steps(tmp_path / "run-a", ["mlflow"])
    assert caught.value.code == "tracker_failed" and "\n" not in str(caught.value) and "MLFLOW_TRACKING_URI" in (caught.value.hint or "")
    assert not (tmp_path / "run-a" / "metrics.jsonl").exists()


def test_a_wandb_run_that_cannot_start_is_one_error_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def refuse(**kwargs: Any) -> Any:
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb, "init", refuse)  # as wandb answers online without a key (no network in tests)
    with pytest.raises(UserError) as caught:
        log_steps(tmp_path / "run-a", ["tensorboard", "wandb"])
    assert caught.value.code == "tracker_failed" and "api_key not configured" in str(caught.value)
    assert "WANDB_MODE=offline" in (caught.value.hint or "") and not (tmp_path / "run-a" / "metrics.jsonl").exists()


@pytest.mark.parametrize("missing", ["tensorboard", "wandb", "mlflow"])
def test_a_tracker_whose_library_is_missing_is_one_error_with_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                missing: str) -> None:
    module = rl._logging.TRACKERS[missing][0]
    real = rl._logging.importlib.util.find_spec
    monkeypatch.setattr(rl._logging.importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(UserError) as caught:
        MetricsLogger(tmp_path / "metrics.jsonl", report_to=["tensorboard", "wandb", "mlflow"])
    error = caught.value
    assert error.code == "missing_extra" and error.hint == f"pip install 'rftkit[{missing}]'" and "\n" not in str(error)
    assert error.pointer == f"/report_to/{['tensorboard', 'wandb', 'mlflow'].index(missing)}"
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "tensorboard").exists()  # nothing opened


def test_no_tracker_library_is_imported_unless_chosen(tmp_path: Path) -> None:
    code = ("import sys, rl, rl._cli\n"
            f"with rl.MetricsLogger({str(tmp_path / 'metrics.jsonl')!r}, console_every=None) as log:\n"
            "    log.log(1, {'reward/mean': 1.0})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wandb', 'mlflow', 'tensorboard')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.parametrize(("report_to", "pointer"), [(["tensorbord"], "/train/report_to/0"), (["wandb", "wandb"], "/train/report_to/1"),
                                                    ({"tensorboard": True}, "/train/report_to"), ([3], "/train/report_to/0")])
def test_bad_report_to_values_are_rejected_with_a_pointer(report_to: Any, pointer: str) -> None:
    with pytest.raises(UserError) as caught:
        check_report_to(report_to, "/train/report_to")
    assert caught.value.pointer == pointer and caught.value.code == "bad_config"


def test_report_to_accepts_one_name_or_none() -> None:
    assert check_report_to("tensorboard") == ["tensorboard"]
    assert check_report_to([]) == []


def test_the_trainers_per_field_rewards_reach_tensorboard(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config(advantage="grpo"))
    history = trainer.train(2, log_dir=tmp_path, console_every=None, report_to=["tensorboard"])
    got = scalars(tmp_path)
    assert "reward/city" in got and "loss/policy" in got and "kl/to_init" in got
    assert got["reward/city"] == [(step, pytest.approx(m["reward/city"])) for step, m in enumerate(history, start=1)]


def test_report_to_without_a_log_dir_is_refused() -> None:
    tok = tiny_tokenizer()
    trainer = PPOTrainer(tiny_model(tok), tok, StructuredGrader(), ROWS, ROWS, small_config(advantage="grpo"))
    with pytest.raises(UserError) as caught:
        trainer.train(1, report_to=["tensorboard"])
    assert caught.value.pointer == "/report_to" and trainer.step_count == 0


def cli_config(tmp_path: Path, report_to: str) -> Path:
    """A ``rftkit train`` config over a tiny saved model, writing to ``tmp_path/runs/a``."""
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "model")
    tiny_model(tok).save_pretrained(tmp_path / "model")
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CLI_ROWS), encoding="utf-8")
    grader = {"type": "structured", "name": "city", "fields": {"city": {"comparator": "normalized"}}}
    (tmp_path / "grader.json").write_text(json.dumps(grader), encoding="utf-8")
    config = tmp_path / "run.toml"
    config.write_text(toml_config(steps=2, extra=f"report_to = {report_to}\n"), encoding="utf-8")
    return config


def test_rftkit_train_reports_to_tensorboard_and_overwrite_takes_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = cli_config(tmp_path, '["tensorboard"]')
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 0, out
    run = tmp_path / "runs" / "a"
    got, rows = scalars(run), read_metrics(run / "metrics.jsonl")
    assert [step for step, _ in got["reward/mean"]] == [1, 2] and "reward/city" in got and "eval/reward/mean" in got
    keys = {key for row in rows for key, value in row.items() if key != "step" and value is not None}
    assert keys == set(got)
    for key in keys:  # every finite reading of the JSONL, at its step
        assert got[key] == [(row["step"], pytest.approx(row[key])) for row in rows if row.get(key) is not None], key
    code, out = invoke(["train", str(config), "--overwrite"], monkeypatch)  # the event files are rftkit's own
    assert code == 0, out
    assert len(list((run / "tensorboard").iterdir())) == 1  # the first run's events were removed with the rest


def test_rftkit_train_with_a_missing_tracker_library_exits_2_before_loading_the_model(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = cli_config(tmp_path, '["tensorboard", "wandb"]')
    real = rl._logging.importlib.util.find_spec
    monkeypatch.setattr(rl._logging.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    (tmp_path / "model" / "config.json").unlink()  # loading the model would fail: the check must come first
    code, out = invoke(["train", str(config)], monkeypatch)
    assert code == 2 and "pip install 'rftkit[wandb]'" in out and "/train/report_to/1" in out, out
    assert not (tmp_path / "runs").exists()
