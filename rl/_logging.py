"""``MetricsLogger``: one JSON line per step, flushed at once, a rich console table every few steps, and the trackers.

Each line is ``{"step": 12, "reward/mean": 0.7, ...}`` with the trainer's namespaced
keys. JSON has no NaN, so a non-finite value is written as ``null``. Opening a log
with ``start_step=k`` keeps only the lines of steps ``<= k`` (rewritten atomically),
so a run resumed from the checkpoint of step ``k`` appends without duplicating the
steps the killed run logged after it. The JSONL file is always written: it is what
every plotting tool reads, and what ``rl._plots`` draws from.

``report_to`` sends every step's metrics, the same keys (``reward/<field>`` included), to
the trackers people already use, each through its own library, an optional extra imported
only when chosen (:data:`TRACKERS`):

* ``tensorboard`` -- ``torch.utils.tensorboard.SummaryWriter`` event files in ``<log dir>/tensorboard``
  (``tensorboard --logdir <log dir>``); a resumed run purges the steps after its checkpoint;
* ``wandb`` -- one W&B run per process (``WANDB_PROJECT``, default ``rftkit``; ``WANDB_MODE=offline``
  writes it locally for ``wandb sync``; ``WANDB_DIR``), with the trainer's config;
* ``mlflow`` -- one MLflow run through ``MlflowClient`` (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``,
  default ``rftkit``), with the config as params; a metric name MLflow refuses (only letters, digits,
  ``_ - . / `` and space are allowed) has each other character replaced by ``_``.

A tracker is given finite values only (a NaN reward mean is "no reading", as ``null`` in the JSONL).
A chosen tracker whose library is missing is a :class:`schemas.UserError` (``missing_extra``) at
construction, with the ``pip install`` line.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
>>> with MetricsLogger(path, console_every=None) as log:
...     log.log(1, {"reward/mean": 0.5, "kl/to_init": float("nan")})
>>> path.read_text()
'{"step": 1, "reward/mean": 0.5, "kl/to_init": null}\\n'
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, get_args

from rich.console import Console
from rich.table import Table

from schemas import UserError

Tracker = Literal["tensorboard", "wandb", "mlflow"]
"""A tracker ``report_to`` can name; metrics.jsonl and the plots are always written."""

TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}
"""Each tracker's module (checked for, imported only when chosen) and the package that provides it (``rftkit[<tracker>]``)."""


class MetricsLogger:
    """Appends each step's metrics to a JSONL file, prints them as a table every ``console_every`` steps, and sends them
    to the ``report_to`` trackers (see the module docstring); ``run_config`` (the trainer's settings) goes to wandb and mlflow."""

    def __init__(self, path: str | os.PathLike[str], *, start_step: int = 0, console_every: int | None = 10,
                 console: Console | None = None, report_to: Sequence[str] | str = (),
                 run_config: Mapping[str, Any] | None = None) -> None:
        names = check_report_to(report_to)  # before anything is written: a missing library leaves no trace
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.console_every = console_every
        self.console = console if console is not None else Console()
        _keep_steps_up_to(self.path, start_step)
        self.trackers: list[_Tracker] = []
        """The open trackers, in ``report_to``'s order."""
        try:
            for name in names:
                self.trackers.append(_OPEN[name](self.path.parent, start_step, dict(run_config or {})))
        except BaseException:
            self._close_trackers()
            raise
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append ``{"step": step, **metrics}`` and flush; print the table when ``step`` is a multiple of ``console_every``;
        send the finite values to each tracker."""
        row = {"step": step, **{k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self.console_every and step % self.console_every == 0:
            self.console.print(metrics_table(step, metrics))
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        for tracker in self.trackers:
            tracker.log(step, finite)

    def close(self) -> None:
        self._file.close()
        self._close_trackers()

    def _close_trackers(self) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def metrics_table(step: int, metrics: Mapping[str, float]) -> Table:
    """A two-column table of one step's metrics, sorted by key so each namespace stays together."""
    table = Table(title=f"step {step}", show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.4g}")
    return table


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a metrics JSONL file (a last line cut short by a kill is dropped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _keep_steps_up_to(path: Path, last_step: int) -> None:
    """Drop the lines of steps after ``last_step`` (and any line cut short), via a temp file and ``os.replace``."""
    if not path.exists():
        return
    kept = [row for row in read_metrics(path) if isinstance(row.get("step"), int) and row["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in kept), encoding="utf-8")
    os.replace(tmp, path)


def check_report_to(report_to: Sequence[str] | str, pointer: str = "/report_to") -> list[Tracker]:
    """The trackers ``report_to`` names, in order, once each; a :class:`schemas.UserError` for an unknown name or a
    tracker whose library is not installed (found without importing it).

    >>> check_report_to(["tensorboard"])
    ['tensorboard']
    >>> check_report_to(["tensorbord"])
    Traceback (most recent call last):
    ...
    schemas._errors.UserError: unknown tracker 'tensorbord' [bad_config at /report_to/0] (hint: report_to takes any of tensorboard, wandb, mlflow)
    """
    names = [report_to] if isinstance(report_to, str) else report_to
    if not isinstance(names, (list, tuple)):
        raise UserError(f"report_to must be a list of tracker names, got {report_to!r}", code="bad_config", pointer=pointer,
                        hint='for example report_to = ["tensorboard"]; [] for metrics.jsonl and the plots only')
    chosen: list[Tracker] = []
    for i, name in enumerate(names):
        if name not in get_args(Tracker):
            raise UserError(f"unknown tracker {name!r}", code="bad_config", pointer=f"{pointer}/{i}",
                            hint="report_to takes any of " + ", ".join(get_args(Tracker)))
        if name in chosen:
            raise UserError(f"tracker {name!r} is named twice", code="bad_config", pointer=f"{pointer}/{i}")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"report_to {name!r} needs the {package} package, which is not installed", code="missing_extra",
                            pointer=f"{pointer}/{i}", hint=f"pip install 'rftkit[{name}]'")
        chosen.append(name)
    return chosen


class _Tracker(Protocol):
    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class _TensorBoard:
    """Scalars in TensorBoard event files under ``<log dir>/tensorboard``."""

    def __init__(self, log_dir: Path, start_step: int, run_config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on reading, TensorBoard drops what an earlier run wrote from this step on (a resumed run's repeats).
        self.writer = SummaryWriter(str(log_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    """One W&B run: ``WANDB_PROJECT`` (default ``rftkit``), named after the log directory, the config attached."""

    def __init__(self, log_dir: Path, start_step: int, run_config: Mapping[str, Any]) -> None:
        import wandb

        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rftkit"), name=log_dir.resolve().name,
                                  config=dict(run_config), reinit="create_new")
        except wandb.errors.Error as exc:  # no API key, an unreachable server, a bad setting
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"wandb cannot start a run: {first_line}", code="tracker_failed", pointer="/report_to",
                            hint="wandb login (or set WANDB_API_KEY), or WANDB_MODE=offline to write the run locally") from None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


_MLFLOW_UNSAFE = re.compile(r"[^/\w.\- ]")  # MLflow accepts letters, digits, _ - . / and space in a metric name


class _Mlflow:
    """One MLflow run in ``MLFLOW_EXPERIMENT_NAME`` (default ``rftkit``) on ``MLFLOW_TRACKING_URI``'s store."""

    def __init__(self, log_dir: Path, start_step: int, run_config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient()
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rftkit")
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(name)
            self.run_id: str = self.client.create_run(experiment_id, run_name=log_dir.resolve().name).info.run_id
        except (MlflowException, ImportError) as exc:  # the store cannot be opened (a server down, a backend's library missing)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"mlflow cannot open its tracking store: {first_line}", code="tracker_failed",
                            pointer="/report_to", hint="set MLFLOW_TRACKING_URI to a server (http://host:5000) or a local store "
                            "(file:./mlruns with MLFLOW_ALLOW_FILE_STORE=true; sqlite:///mlflow.db needs pip install mlflow)") from None
        params = [Param(key, str(value)) for key, value in run_config.items()]
        for first in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[first:first + 100])

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_MLFLOW_UNSAFE.sub("_", key), value, now, step) for key, value in metrics.items()]
        for first in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per call
            self.client.log_batch(self.run_id, metrics=batch[first:first + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


_OPEN: dict[str, Callable[[Path, int, Mapping[str, Any]], _Tracker]] = {"tensorboard": _TensorBoard, "wandb": _Wandb,
                                                                          "mlflow": _Mlflow}
"""Each tracker's opener: (log directory, the step the run starts after, the run's config) -> an open tracker."""
