"""PNG plots of a run's ``metrics.jsonl``: reward (overall and per field), KL and entropy against steps.

:func:`plot_metrics` writes three files:

* ``reward.png`` -- left, the sampled completions' ``reward/mean`` (bold) and each
  ``reward/<field>``; right, when the run evaluated, the held-out greedy
  ``eval/reward/mean`` and ``eval/reward/<field>`` at the steps it was measured;
* ``kl.png`` -- ``kl/to_init`` (nats per completion) and, on a second axis, the
  coefficient ``kl/coef`` (flat unless ``kl_target`` makes it adaptive);
* ``entropy.png`` -- ``policy/entropy`` (nats per token).

It uses matplotlib's object API (``matplotlib.figure.Figure`` rendered by Agg), never
``pyplot``: no display, no global figure state, safe in a test or a server. matplotlib
is imported when a plot is drawn, not when ``rl`` is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._logging import read_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The (step, value) pairs of ``key`` over the rows that have a finite value for it."""
    points = [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def _fields(rows: Sequence[dict[str, Any]], prefix: str) -> list[str]:
    """The per-field keys under ``prefix/`` (``reward/city``, ...), in order of first appearance, ``mean`` excluded."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k.startswith(prefix + "/") and k.count("/") == prefix.count("/") + 1))
    return [k for k in seen if k != f"{prefix}/mean"]


def _reward_panel(ax: Axes, rows: Sequence[dict[str, Any]], prefix: str, title: str) -> None:
    for key in _fields(rows, prefix):
        ax.plot(*_series(rows, key), linewidth=1, marker="." if prefix.startswith("eval") else None,
                label=key.removeprefix(prefix + "/"))
    ax.plot(*_series(rows, f"{prefix}/mean"), color="black", linewidth=2.5, marker="o" if prefix.startswith("eval") else None,
            label="overall")
    ax.set(title=title, xlabel="step", ylabel="reward", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")


def _line_figure(rows: Sequence[dict[str, Any]], key: str, color: str, title: str, ylabel: str) -> tuple[Figure, Axes]:
    """A one-panel figure of ``key`` against steps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(*_series(rows, key), color=color)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_metrics(metrics: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw ``reward.png``, ``kl.png`` and ``entropy.png`` from a metrics JSONL file into ``out_dir``; returns their paths.

    A key that is absent from every line is left out of its figure; an empty file writes nothing.
    """
    from matplotlib.figure import Figure

    rows = read_metrics(metrics)
    if not rows:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    has_eval = any("eval/reward/mean" in r for r in rows)
    fig = Figure(figsize=(11 if has_eval else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_eval else 1, squeeze=False)[0]
    _reward_panel(axes[0], rows, "reward", "reward of sampled completions")
    if has_eval:
        _reward_panel(axes[1], rows, "eval/reward", "held-out reward (greedy)")
    written.append(_save(fig, out / "reward.png"))

    fig, ax = _line_figure(rows, "kl/to_init", "tab:blue", "KL to the initial policy", "kl/to_init (nats per completion)")
    steps, coef = _series(rows, "kl/coef")
    if coef:
        twin = ax.twinx()
        twin.plot(steps, coef, color="tab:orange", linestyle="--")
        twin.set_ylabel("kl/coef", color="tab:orange")
    written.append(_save(fig, out / "kl.png"))

    fig, _ = _line_figure(rows, "policy/entropy", "tab:green", "policy entropy", "policy/entropy (nats per token)")
    written.append(_save(fig, out / "entropy.png"))
    return written


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, format="png")
    return path
