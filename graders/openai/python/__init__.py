"""OpenAI's ``python`` grader: the config's ``grade(sample, item)`` run in a sandbox.

Owns the grader and its config checks (``_grader``), the grading process's side
of the sandbox: a template interpreter per grader, a forked child per grade, the
pool of them and their deadlines (``_sandbox``), and the program the sandbox runs
(the ``_worker`` subpackage, standard library only, started by path: it confines
itself and never imports :mod:`graders`; one module per part: supervisor,
template, grade child, confinement, audit hook, frames, process trees).
"""

from ._grader import PythonGrader, grading_deadline, sample_dict

__all__ = ["PythonGrader", "grading_deadline", "sample_dict"]
