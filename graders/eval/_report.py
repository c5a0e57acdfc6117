"""What a person reads after ``rftkit eval``: the terminal table and ``report.html``.

``report.html`` is one self-contained file (no script, no stylesheet or font from a network; the
charts are inline SVG) that opens offline in any browser: the summary table, a bar per field of
each grader, a histogram of each grader's rewards, and the worst-scored samples with their
field-by-field breakdown.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

BAR = "#2f6db5"
"""The fill of every bar; the screenshot test looks for it."""


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_tables(summary: Mapping[str, Any]) -> list[Table]:
    """Per grader: mean, pass rate, pass@k, parse errors; then per field. One table each."""
    main = Table(title=f"{summary['rows']} rows x {summary['samples_per_row']} sample(s): {summary['samples']} graded")
    for col in ("grader", "type", "mean", "pass rate", "pass@k", "parse errors", "flagged"):
        main.add_column(col, justify="left" if col in ("grader", "type") else "right")
    tables = [main]
    for name, g in summary["graders"].items():
        at_k = ", ".join(f"@{k} {_f(v)}" for k, v in g.get("pass_at_k", {}).items())
        main.add_row(escape(name), g["type"], _f(g["mean"]), _f(g.get("pass_rate")), at_k or "-", _f(g["parse_error_rate"]),
                     str(sum(g["errors"].values())))
        if g["fields"]:
            fields = Table(title=f"{name}: per field")
            fields.add_column("field")
            fields.add_column("mean", justify="right")
            for field, f in g["fields"].items():
                fields.add_row(escape(field), _f(f["mean"]))
            tables.append(fields)
    perf, tokens = summary["perf"], summary["tokens"]
    usage = Table(title="usage")
    for col in ("completion tokens", "mean per sample", "finish reasons", "samples/s", "latency p50 / p95 (s)"):
        usage.add_column(col, justify="right")
    reasons = ", ".join(f"{k} {v}" for k, v in summary["finish_reasons"].items())
    usage.add_row(str(tokens["completion"]), _f(tokens["mean_completion"], 1), escape(reasons), _f(perf.get("samples_per_s"), 1),
                  f"{_f(perf['latency_s']['p50'])} / {_f(perf['latency_s']['p95'])}")
    tables.append(usage)
    return tables


# --------------------------------------------------------------------------- report.html


def _bars(values: Mapping[str, float | None], title: str) -> str:
    """A horizontal bar chart of values in [0, 1], as inline SVG."""
    row_h, label_w, bar_w = 22, 220, 360
    height = row_h * len(values) + 30
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{label_w + bar_w + 70}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, (name, value) in enumerate(values.items()):
        y = 10 + i * row_h
        v = 0.0 if value is None else max(0.0, min(1.0, value))
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{html.escape(name[:34])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}" fill="#eceff3"/>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * v:.1f}" height="{row_h - 6}" fill="{BAR}"/>'
                     f'<text x="{label_w + bar_w + 6}" y="{y + 15}">{_f(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(rewards: Sequence[float], title: str, bins: int = 10) -> str:
    """A histogram of rewards over [0, 1] (a reward of exactly 1 falls in the last bin), as inline SVG."""
    counts = [0] * bins
    for r in rewards:
        counts[min(bins - 1, max(0, int(r * bins)))] += 1
    top = max(counts) or 1
    w, h, pad = 40, 160, 30
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{bins * w + 2 * pad}" height="{h + 2 * pad}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, c in enumerate(counts):
        bar_h = h * c / top
        x = pad + i * w
        parts.append(f'<rect x="{x + 2}" y="{pad + h - bar_h:.1f}" width="{w - 4}" height="{bar_h:.1f}" fill="{BAR}"/>'
                     f'<text x="{x + w / 2}" y="{pad + h - bar_h - 4:.1f}" text-anchor="middle">{c}</text>'
                     f'<text x="{x + w / 2}" y="{pad + h + 16}" text-anchor="middle">{i / bins:.1f}</text>')
    parts.append(f'<line x1="{pad}" y1="{pad + h}" x2="{pad + bins * w}" y2="{pad + h}" stroke="#333"/></svg>')
    return "".join(parts)


def _cut(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _field_rows(details: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name, d in details.items():
        out.append(f"<tr><td>{html.escape(prefix + name)}</td><td>{html.escape(str(d.get('comparator')))}</td>"
                   f"<td class=num>{_f(d.get('score'))}</td><td><code>{html.escape(_cut(d.get('prediction')))}"
                   f"</code></td><td><code>{html.escape(_cut(d.get('reference')))}</code></td></tr>")
        if d.get("fields"):
            out += _field_rows(d["fields"], prefix + name + ".")
    return out


_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 18px}th,td{border:1px solid #c9d1d9;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#dbe7f5}td.num{text-align:right;font-variant-numeric:tabular-nums}svg text{font:12px sans-serif}
code{white-space:pre-wrap;word-break:break-all}pre{white-space:pre-wrap;background:#f6f8fa;padding:6px;max-height:14em;overflow:auto}
.sample{border:1px solid #c9d1d9;padding:8px 12px;margin:10px 0}"""


def write_report(path: Path, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *, title: str, worst: int = 10) -> Path:
    """Write ``report.html``: the summary, per-field bars, a reward histogram per grader, and the ``worst`` lowest-scored samples."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>",
            f"<p>{summary['rows']} rows, {summary['samples_per_row']} sample(s) per row, {summary['samples']} graded"
            + (f", <b>{summary['missing_samples']} missing</b> (failed requests: run the command again to retry them)"
               if summary["missing_samples"] else "") + ".</p>",
            '<table id="summary"><tr><th>grader</th><th>type</th><th>mean</th><th>pass rate</th><th>pass@k</th>'
            "<th>parse-error rate</th><th>flagged samples</th></tr>"]
    for name, g in summary["graders"].items():
        at_k = ", ".join(f"@{k}: {_f(v)}" for k, v in g.get("pass_at_k", {}).items())
        body.append(f"<tr><td>{e(name)}</td><td>{e(g['type'])}</td><td class=num>{_f(g['mean'])}</td>"
                    f"<td class=num>{_f(g.get('pass_rate'))}</td><td>{e(at_k) or '-'}</td><td class=num>{_f(g['parse_error_rate'])}</td>"
                    f"<td class=num>{sum(g['errors'].values())}</td></tr>")
    body.append("</table>")
    tokens, perf = summary["tokens"], summary["perf"]
    body.append(f"<p>Tokens: {tokens['prompt']} prompt, {tokens['completion']} completion; finish reasons: "
                f"{e(', '.join(f'{k} {v}' for k, v in summary['finish_reasons'].items()))}; "
                f"{_f(perf.get('samples_per_s'), 1)} samples/s; latency p50 {_f(perf['latency_s']['p50'])} s.</p>")
    for name, g in summary["graders"].items():
        body.append(f"<h2>{e(name)}</h2>")
        if g["fields"]:
            body.append("<h3>Mean per field</h3>" + _bars({k: f["mean"] for k, f in g["fields"].items()}, f"{name}: mean per field"))
        if g["errors"]:
            body.append("<p>Error flags: " + e(", ".join(f"{k} {v}" for k, v in g["errors"].items())) + "</p>")
        rewards = [r["grades"][name]["reward"] for r in records]
        body.append("<h3>Reward histogram</h3>" + _histogram(rewards, f"{name}: reward histogram"))
    if summary["graders"] and records:
        first = next(iter(summary["graders"]))
        body.append(f"<h2>The {min(worst, len(records))} lowest-scored samples ({e(first)})</h2>")
        for r in sorted(records, key=lambda r: (r["grades"][first]["reward"], r["row"], r["sample"]))[:worst]:
            result = r["grades"][first]
            prompt = r["input"].get("prompt") if "prompt" in r["input"] else json.dumps(r["input"]["messages"], ensure_ascii=False)
            body.append(f'<div class="sample"><b>row {r["row"]} (line {r["line"]}), sample {r["sample"]}: reward {_f(result["reward"])}'
                        f'</b> &middot; {e(str(result["reason"]))}<br>finish: {e(str(r["finish_reason"]))}'
                        f"<details><summary>prompt</summary><pre>{e(str(prompt))}</pre></details>"
                        f"<pre>{e(r['output_text'])}</pre>")
            if result.get("details"):
                body.append("<table><tr><th>field</th><th>comparator</th><th>score</th><th>prediction</th><th>reference</th></tr>"
                            + "".join(_field_rows(result["details"])) + "</table>")
            body.append("</div>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_STYLE}</style></head>'
            f'<body>{"".join(body)}</body></html>\n')
    path.write_text(page, encoding="utf-8")
    return path
