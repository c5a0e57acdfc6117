"""``rftkit eval compare RUN_A RUN_B``: is B better than A, per grader and per field, with a confidence interval.

Rows are paired across the two runs by their item (the dataset row, reference included), so the
runs may list them in another order; only rows both runs graded count. Per row, a run's score is
the mean over its samples. For each grader and each field the difference ``B - A`` of the mean
over the shared rows comes with a 95% interval from a paired bootstrap: the per-row differences
are resampled with replacement (``scipy.stats.bootstrap``, percentile method, 10,000 resamples,
seeded), which keeps each row's A and B together, so the row-to-row spread that both runs share
cancels out.

The gate: B passes when the interval's lower end is at least ``-margin`` for every grader's
overall reward, i.e. B is not worse than A by more than the margin at 95% confidence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas import UserError

from ._run import SAMPLES, SUMMARY, read_samples


@dataclass(frozen=True)
class Difference:
    """``B - A`` of one score over the shared rows, with its 95% paired-bootstrap interval."""

    name: str
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean_a": self.mean_a, "mean_b": self.mean_b, "diff": self.diff, "ci95": [self.low, self.high], "rows": self.rows}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """The mean of ``b - a`` and its 95% percentile-bootstrap interval over the pairs.

    >>> d, low, high = paired_bootstrap([0.0, 0.5, 1.0, 0.5], [0.5, 0.5, 1.0, 1.0])
    >>> d, low <= d <= high, low >= 0.0
    (0.25, True, True)
    """
    from scipy.stats import bootstrap

    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    mean = float(d.mean())
    if len(d) < 2 or bool(np.all(d == d[0])):  # no spread to resample: the interval is the point
        return mean, mean, mean
    res = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def load_run(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run's summary and records; a folder without them raises with a hint."""
    if not (folder / SUMMARY).is_file():
        raise UserError(f"{folder} holds no {SUMMARY}: not a finished `rftkit eval` run", code="not_a_run", pointer="/run",
                        hint="give the --output folder of an `rftkit eval` run (run it again to finish it)")
    return json.loads((folder / SUMMARY).read_text(encoding="utf-8")), read_samples(folder / SAMPLES)


def _per_row(records: Sequence[Mapping[str, Any]], grader: str) -> dict[str, dict[str, list[float]]]:
    """key -> {"reward": [...], "<field>": [...]} over the samples of each row; rows keyed by their item."""
    out: dict[str, dict[str, list[float]]] = {}
    seen: dict[str, int] = {}
    firsts: dict[int, str] = {}
    for r in records:
        if r["row"] not in firsts:
            base = json.dumps(r["item"], sort_keys=True, ensure_ascii=False, default=str)
            seen[base] = seen.get(base, 0) + 1
            firsts[r["row"]] = f"{base}#{seen[base]}"  # the same item twice in a file: paired by occurrence
        scores = out.setdefault(firsts[r["row"]], {})
        result = r["grades"][grader]
        scores.setdefault("reward", []).append(result["reward"])
        for k, v in result["sub_rewards"].items():
            scores.setdefault(k, []).append(v)
    return out


def compare_runs(a: Path, b: Path, *, seed: int = 0, top: int = 5) -> dict[str, Any]:
    """Per grader both runs have: the overall and per-field :class:`Difference`, and the rows that changed most."""
    (sa, ra), (sb, rb) = load_run(a), load_run(b)
    shared_graders = [g for g in sa["graders"] if g in sb["graders"]]
    if not shared_graders:
        raise UserError(f"the runs share no grader ({', '.join(sa['graders'])} vs {', '.join(sb['graders'])})", code="nothing_shared")
    out: dict[str, Any] = {"a": str(a), "b": str(b), "graders": {}}
    for name in shared_graders:
        pa, pb = _per_row(ra, name), _per_row(rb, name)
        keys = [k for k in pa if k in pb]
        if not keys:
            raise UserError("the runs share no row (rows are paired by their item)", code="nothing_shared",
                            hint="compare two runs over the same dataset")
        fields = ["reward", *(f for f in pa[keys[0]] if f != "reward" and all(f in pa[k] and f in pb[k] for k in keys))]
        diffs = {}
        for f in fields:
            va = [float(np.mean(pa[k][f])) for k in keys]
            vb = [float(np.mean(pb[k][f])) for k in keys]
            d, low, high = paired_bootstrap(va, vb, seed=seed)
            diffs[f] = Difference(f, float(np.mean(va)), float(np.mean(vb)), d, low, high, len(keys))
        changes = sorted(((float(np.mean(pb[k]["reward"])) - float(np.mean(pa[k]["reward"])), k) for k in keys),
                         key=lambda t: (-abs(t[0]), t[1]))[:top]
        out["graders"][name] = {
            "overall": diffs["reward"].to_dict(),
            "fields": {f: diffs[f].to_dict() for f in fields if f != "reward"},
            "most_changed": [{"diff": d, "item": json.loads(k.rsplit("#", 1)[0])} for d, k in changes if d != 0],
        }
    out["only_in_a"] = len(_per_row(ra, shared_graders[0])) - out["graders"][shared_graders[0]]["overall"]["rows"]
    out["only_in_b"] = len(_per_row(rb, shared_graders[0])) - out["graders"][shared_graders[0]]["overall"]["rows"]
    return out


def gate(result: Mapping[str, Any], margin: float) -> list[str]:
    """The graders on which B is worse than A by more than ``margin`` (95% lower bound below ``-margin``); empty: B passes."""
    return [name for name, g in result["graders"].items() if g["overall"]["ci95"][0] < -margin]
