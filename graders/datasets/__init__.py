"""Dataset validation: every row of a training file checked once, before anything trains.

Owns :func:`validate_dataset` (``_validate``: the per-row checks, the template
variables read with graders' own :class:`~graders.openai.Template`, the gold
self-check through the grader) and the ``rftkit validate`` command (``_command``).
Reading the file and the prompt index are :mod:`schemas.reading`'s.
"""

from ._checks import FORMATS, template_variables
from ._records import DatasetFormat, DatasetIssue, GoldVerdict, Report
from ._validate import validate_dataset

__all__ = ["FORMATS", "DatasetFormat", "DatasetIssue", "GoldVerdict", "Report", "template_variables", "validate_dataset"]
