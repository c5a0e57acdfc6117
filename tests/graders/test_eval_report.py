"""``report.html`` opened in headless Chromium: the summary table and the charts render, offline.

Needs Debian's ``chromium`` (``tests/graders/install_chromium.sh``); skipped with that reason where it is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from graders import from_config
from graders.eval import EvalRow, NamedGrader, SamplingParams, read_samples, run_eval, write_report
from graders.eval._report import BAR
from graders.eval._sampling import Completion, Request

ROOT = Path(__file__).resolve().parents[2]
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


class Canned:
    """A model source that answers each row with a fixed text (no server needed for a report)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def sample(self, requests: Iterable[Request], params: SamplingParams) -> Iterator[tuple[Request, Completion]]:
        for r in requests:
            yield r, Completion(self.texts[r.row], "stop", 10, 5, 0.01)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = json.loads((ROOT / "examples" / "resume" / "grader.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (ROOT / "graders" / "data" / "resume_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    out = tmp_path_factory.mktemp("report")
    graders = [NamedGrader("resume", from_config(config), config, 0.8, True)]
    summary = run_eval([EvalRow(i, i + 1, {"reference": r["reference"]}, prompt=f"resume {i}") for i, r in enumerate(rows)], graders,
                       Canned([r["output"] for r in rows]), SamplingParams(), out)
    return write_report(out / "report.html", summary, read_samples(out / "samples.jsonl"), title="report test")


def test_the_report_is_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count("<svg") >= 2 and '<table id="summary">' in page and "lowest-scored samples" in page
    assert "programming_languages" in page  # the per-field bars and the breakdown name each field


@pytest.mark.skipif(BROWSER is None, reason="headless Chromium is absent: run tests/graders/install_chromium.sh (apt-get install chromium)")
def test_the_report_renders_its_table_and_charts_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    assert BROWSER is not None
    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                    "--no-first-run", "--window-size=1200,1400", f"--screenshot={shot}", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    colors = {color: n for n, color in image.getcolors(maxcolors=1 << 20) or []}

    def rgb(hex_color: str) -> tuple[int, int, int]:
        return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)

    assert colors.get(rgb("#dbe7f5"), 0) > 2000  # the summary table's header cells
    assert colors.get(rgb(BAR), 0) > 5000  # the per-field bars and the histogram
    header_rows = {y for y in range(image.height) for x in range(0, image.width, 8) if image.getpixel((x, y)) == rgb("#dbe7f5")}
    bar_rows = {y for y in range(image.height) for x in range(0, image.width, 8) if image.getpixel((x, y)) == rgb(BAR)}
    assert min(header_rows) < min(bar_rows)  # the table comes first, then the charts
