"""Exceptions raised by :mod:`graders` (the tree is drawn in ``schemas._errors``)."""

from __future__ import annotations

from schemas import UserError


class GraderConfigError(UserError):
    """A grader config, a field option, a comparator option or a weight is wrong.

    Raised at construction, with the JSON pointer of the offending part of the
    config and a hint. The one case raised while grading is a *reference* that
    cannot be one (code ``bad_reference``: None, text that is not JSON, a
    scalar): references are the user's data, not the model's output.
    """


def pointer_token(key: str) -> str:
    """``key`` as one reference token of a JSON pointer (RFC 6901: ``~`` -> ``~0``, ``/`` -> ``~1``).

    >>> "/fields/" + pointer_token("a/b")
    '/fields/a~1b'
    """
    return key.replace("~", "~0").replace("/", "~1")
