"""Reading dataset files: rows one at a time (JSONL, compressed JSONL, Parquet), and an on-disk prompt index.

What :mod:`graders.datasets` builds its validation on: :func:`read_dataset` yields
each line as a :class:`RawRow` (its decoded value, or the problem that stopped it),
holding one line at a time; :class:`PromptIndex` finds duplicate and leaked
prompts in a temporary SQLite table, so memory stays flat in the file's size.
"""

from ._dedupe import PromptIndex, prompt_hash
from ._errors import shorten
from ._reader import DEFAULT_MAX_LINE_BYTES, NumberOutOfRange, RawRow, check_path, decode_json, read_dataset

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "NumberOutOfRange",
    "PromptIndex",
    "RawRow",
    "check_path",
    "decode_json",
    "prompt_hash",
    "read_dataset",
    "shorten",
]
