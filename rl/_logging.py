"""``MetricsLogger``: one JSON line per step, flushed at once, and a rich console table every few steps.

Each line is ``{"step": 12, "reward/mean": 0.7, ...}`` with the trainer's namespaced
keys. JSON has no NaN, so a non-finite value is written as ``null``. Opening a log
with ``start_step=k`` keeps only the lines of steps ``<= k`` (rewritten atomically),
so a run resumed from the checkpoint of step ``k`` appends without duplicating the
steps the killed run logged after it. No tensorboard or wandb: a JSONL file is
what every plotting tool reads.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
>>> with MetricsLogger(path, console_every=None) as log:
...     log.log(1, {"reward/mean": 0.5, "kl/to_init": float("nan")})
>>> path.read_text()
'{"step": 1, "reward/mean": 0.5, "kl/to_init": null}\\n'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.table import Table


class MetricsLogger:
    """Appends each step's metrics to a JSONL file and prints them as a table every ``console_every`` steps."""

    def __init__(self, path: str | os.PathLike[str], *, start_step: int = 0, console_every: int | None = 10,
                 console: Console | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.console_every = console_every
        self.console = console if console is not None else Console()
        _keep_steps_up_to(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append ``{"step": step, **metrics}`` and flush; print the table when ``step`` is a multiple of ``console_every``."""
        row = {"step": step, **{k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self.console_every and step % self.console_every == 0:
            self.console.print(metrics_table(step, metrics))

    def close(self) -> None:
        self._file.close()

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
