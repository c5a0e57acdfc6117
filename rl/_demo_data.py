"""The demo's data: synthetic résumé-extraction rows, generated deterministically from a seed.

Each row is ``{"prompt", "reference", "completion", "style"}``: a line about a person (name,
university, programming languages, home town, in one of eight phrasings), the answer the
résumé grader (``graders/data/resume_grader.json``) expects::

    {"university": "Rice University", "programming_languages": ["c++", "go"], "city": "Houston", "state": "Texas"}

and ``completion``, a supervised target for the warm start, as compact JSON in one of two
label styles:

* ``current`` -- what the grader wants: the values copied from the prompt (languages keep
  the prompt's casing, ``"C++"``; the grader casefolds, so this scores 1.0);
* ``legacy`` -- an older labelling guideline: the city with the state's postal code
  (``"Houston, TX"``) and the state as the code (``"TX"``). The grader scores both fields 0.

:func:`demo_splits` draws rows until it has enough *distinct* prompts and deals them into three
disjoint splits: ``heldout`` (evaluation only), ``train`` (the PPO prompts) and ``sft`` (the
warm start), where a ``legacy_share`` of the rows carry legacy labels. Only ``random.Random(seed)``
is used, so a seed always gives the same rows; nothing is bundled on disk, and
:func:`write_splits` writes the splits as JSONL to read or to feed ``rftkit train``.

>>> data = demo_splits(seed=0, sft=5, train=3, heldout=2)
>>> [len(data.sft), len(data.train), len(data.heldout)]
[5, 3, 2]
>>> data.train[0]["reference"]["state"] in {state for _, state, _ in PLACES}
True
>>> demo_splits(seed=0, sft=5, train=3, heldout=2) == data
True
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIRST_NAMES = (
    "Jane", "Raj", "Maria", "Wei", "Olivia", "Ahmed", "Sofia", "Kenji", "Amara", "Lucas", "Priya", "Diego", "Hannah", "Omar",
    "Yuki", "Noah", "Fatima", "Ethan", "Chloe", "Mateo", "Aisha", "Liam", "Elena", "Kwame", "Ines", "Arjun", "Grace", "Tomas",
)
LAST_NAMES = (
    "Doe", "Patel", "Garcia", "Chen", "Brown", "Hassan", "Rossi", "Tanaka", "Okafor", "Silva", "Sharma", "Lopez", "Muller",
    "Haddad", "Sato", "Smith", "Khan", "Wilson", "Martin", "Reyes", "Bello", "Nguyen", "Novak", "Mensah", "Costa", "Iyer",
)
UNIVERSITIES = (
    "Stanford University", "Rice University", "Duke University", "Yale University", "Purdue University", "Cornell University",
    "University of Michigan", "University of Washington", "University of Texas at Austin", "University of Chicago",
    "University of California Berkeley", "Georgia Institute of Technology", "Massachusetts Institute of Technology",
    "Carnegie Mellon University", "Ohio State University", "Boston University", "New York University", "Arizona State University",
)
LANGUAGES = {  # reference spelling (what the grader compares, casefolded) -> how a résumé writes it
    "python": "Python", "java": "Java", "c": "C", "c++": "C++", "c#": "C#", "go": "Go", "rust": "Rust", "ruby": "Ruby",
    "typescript": "TypeScript", "javascript": "JavaScript", "kotlin": "Kotlin", "swift": "Swift", "scala": "Scala",
    "haskell": "Haskell", "sql": "SQL", "php": "PHP", "julia": "Julia", "f#": "F#",
}
PLACES = (  # city, state, the state's postal code (the legacy labels' spelling)
    ("Austin", "Texas", "TX"), ("Houston", "Texas", "TX"), ("Seattle", "Washington", "WA"), ("Boston", "Massachusetts", "MA"),
    ("Chicago", "Illinois", "IL"), ("Denver", "Colorado", "CO"), ("Atlanta", "Georgia", "GA"), ("Miami", "Florida", "FL"),
    ("Portland", "Oregon", "OR"), ("Phoenix", "Arizona", "AZ"), ("Detroit", "Michigan", "MI"), ("Columbus", "Ohio", "OH"),
    ("Pittsburgh", "Pennsylvania", "PA"), ("Los Angeles", "California", "CA"), ("San Diego", "California", "CA"),
    ("Palo Alto", "California", "CA"), ("New York", "New York", "NY"), ("Nashville", "Tennessee", "TN"),
    ("Raleigh", "North Carolina", "NC"), ("Salt Lake City", "Utah", "UT"),
)
TEMPLATES = (
    "{name}. B.S. Computer Science, {university}. Skills: {languages}. Based in {city}, {state}.",
    "{name} studied at {university}; languages: {languages}. {city}, {state}.",
    "{name}, {university} graduate. Writes {languages} daily. Lives in {city}, {state}.",
    "{name} - {university}. {languages}. {city}, {state}.",
    "Education: {university}. Name: {name}. Programming: {languages}. Location: {city}, {state}.",
    "{name} is a developer in {city}, {state} who codes in {languages} and holds a degree from {university}.",
    "Based in {city}, {state}, {name} ({university} alumnus) knows {languages}.",
    "{name} | {university} | {languages} | {city}, {state}",
)
PROMPT = "Resume: {text}\nJSON:\n"
"""How a description becomes the model's prompt; the completion follows on the next line."""
ANSWER_SKELETON = ('{"university": "', '", "programming_languages": ["', '", "', '"], "city": "', '", "state": "', '"}')
"""The fixed pieces of every answer's JSON, between and around the values (the demo's tokenizer makes each one token)."""


@dataclass(frozen=True)
class DemoData:
    """Three disjoint splits of résumé rows (no prompt appears in two of them)."""

    sft: list[dict[str, Any]]
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]


def _join(items: list[str], rng: random.Random) -> str:
    if len(items) == 1:
        return items[0]
    style = rng.randrange(3)
    if style == 0:
        return ", ".join(items)
    if style == 1:
        return ", ".join(items[:-1]) + " and " + items[-1]
    return "/".join(items)


def resume_row(rng: random.Random, *, legacy: bool = False) -> dict[str, Any]:
    """One random row: ``prompt``, ``reference`` (the grader's answer), ``completion`` (a JSON label) and its ``style``."""
    languages = rng.sample(sorted(LANGUAGES), rng.randint(1, 3))
    city, state, code = rng.choice(PLACES)
    university = rng.choice(UNIVERSITIES)
    text = rng.choice(TEMPLATES).format(name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", university=university,
                                        languages=_join([LANGUAGES[x] for x in languages], rng), city=city, state=state)
    reference = {"university": university, "programming_languages": languages, "city": city, "state": state}
    completion = {**reference, "programming_languages": [LANGUAGES[x] for x in languages]}  # as written in the prompt
    if legacy:
        completion.update(city=f"{city}, {code}", state=code)
    return {"prompt": PROMPT.format(text=text), "reference": reference, "completion": json.dumps(completion),
            "style": "legacy" if legacy else "current"}


def demo_splits(*, seed: int = 0, sft: int = 3000, train: int = 32, heldout: int = 128, legacy_share: float = 0.0) -> DemoData:
    """Deterministic, disjoint splits of distinct prompts: ``heldout`` first, then ``train``, then ``sft``.

    Each ``sft`` row has legacy labels with probability ``legacy_share``; ``train`` and ``heldout``
    rows always carry current ones (PPO reads only their ``reference``).
    """
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < sft + train + heldout:
        row = resume_row(rng, legacy=len(rows) >= heldout + train and rng.random() < legacy_share)
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    return DemoData(sft=rows[heldout + train:], train=rows[heldout:heldout + train], heldout=rows[:heldout])


def write_splits(data: DemoData, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``sft.jsonl``, ``train.jsonl`` and ``heldout.jsonl`` (one row per line) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("sft", "train", "heldout"):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in getattr(data, name)), encoding="utf-8")
        paths.append(path)
    return paths
