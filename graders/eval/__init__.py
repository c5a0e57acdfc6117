"""``rftkit eval``: sample a model on a dataset, grade every sample, report, resume, compare.

The Python surface: :func:`run_eval` with a model source (:class:`ServerSampler`, or ``rl``'s
local sampler), :func:`read_definition` and :func:`read_rows` for the graders and rows,
:func:`summarize`, :func:`write_report`, :func:`compare_runs`. See docs/eval.md.
"""

from ._compare import compare_runs, gate, paired_bootstrap
from ._report import write_report
from ._run import pass_at_k, read_samples, run_eval, summarize
from ._sampling import Completion, Request, Sampler, ServerSampler
from ._spec import EvalDefinition, EvalRow, NamedGrader, SamplingParams, read_definition, read_rows

__all__ = [
    "Completion",
    "EvalDefinition",
    "EvalRow",
    "NamedGrader",
    "Request",
    "Sampler",
    "SamplingParams",
    "ServerSampler",
    "compare_runs",
    "gate",
    "paired_bootstrap",
    "pass_at_k",
    "read_definition",
    "read_rows",
    "read_samples",
    "run_eval",
    "summarize",
    "write_report",
]
