"""The JSON Schema of every grader config, generated from the config models.

``schemas/formats/grader_config.json`` is :func:`grader_config_schema`'s output: a
discriminated union on ``type`` with one ``$defs`` entry per type, each the JSON Schema
of that type's model (:mod:`graders.openai._configs`, and
:class:`~graders.structured._options.StructuredConfig`). The models are the one
definition of a config: ``from_config`` validates with them, and their attribute
docstrings are the fields' descriptions here. The schema is for editors and for
checking configs without rftkit; ``from_config`` also runs the models' checks JSON
Schema cannot say (formulas parse, templates are well formed, ``meteor`` has WordNet).
A test keeps the shipped files equal to the generators. To regenerate both::

    .venv/bin/python -m graders._config_schema
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .openai._configs import GraderConfig
from .structured._grader import structured_config_schema


def grader_config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every grader config rftkit reads satisfies."""
    generated = TypeAdapter(GraderConfig).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "rftkit grader config",
            "description": "Every grader config rftkit reads: OpenAI's seven types and rftkit's structured.", **generated}


def write_schemas(folder: Path) -> None:
    """Write ``grader_config.json`` and ``structured_grader.json`` into ``folder``."""
    for name, schema in (("grader_config.json", grader_config_schema()), ("structured_grader.json", structured_config_schema())):
        (folder / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_schemas(Path(str(resources.files("schemas") / "formats")))
