"""The Python examples in README.md and docs/**/*.md run, in order, one namespace per page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<ticks>`{3,})python\s*\n(?P<body>.*?)^(?P=ticks)\s*$", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return [m.group("body") for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    blocks = python_blocks(page)
    assert blocks
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message names the failing block
            raise AssertionError(f"{page.name} block {i} failed: {exc!r}\n{block}") from exc
