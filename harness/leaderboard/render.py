"""Markdown, CSV, JSON and HTML from the tables. Deterministic: the same records give byte-identical files."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from typing import Any

from harness.leaderboard.load import canonical
from harness.leaderboard.tables import Row, Table, _brief, describe, flatten

FORMATS = ("md", "csv", "json", "html")
RANKED_KINDS = ("quality", "mixing", "samplers")  # tables with a rank column
TOP_KINDS = ("quality", "samplers")  # tables that head a group (their own heading level and protocol line)


def _row_cells(t: Table, r: Row) -> list[str]:
    extra = [r.extra[c].text() if c in r.extra else "" for c in t.columns]
    seeds = "" if r.is_floor else str(r.value.n)
    if t.kind in RANKED_KINDS:
        return [r.rank_text, r.label, r.value.text() or r.note, seeds, r.runs, *extra]
    seeds = str(max((c.n for c in r.extra.values()), default=0))
    return [r.label, seeds if not r.note else r.note, r.runs, *extra]


def _header(t: Table) -> list[str]:
    if t.kind in RANKED_KINDS:
        head = f"{t.metric_label or t.metric} (95% CI)" if t.metric else "value"
        return ["rank", "method", head, "seeds", "runs", *t.columns]
    return ["method", "seeds", "runs", *t.columns]


def _protocol_line(t: Table) -> str:
    flat = flatten(t.protocol)
    return ", ".join(f"{k}={_brief(v, 40)}" for k, v in sorted(flat.items()))


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _differs_line(t: Table) -> str:
    return (f"Not comparable with the other {t.dataset} tables: they differ in {', '.join(sorted(t.differs))}."
            if t.differs else "")


def to_markdown(tables: list[Table], problems: list[str]) -> str:
    out = ["# Leaderboard", ""] if tables else ["No run records found.", ""]
    for t in tables:
        out += [f"## {t.title}", ""] if t.kind in TOP_KINDS else [f"### {t.title}", ""]
        if t.differs and t.kind == "quality":
            out += [_differs_line(t), ""]
        head = _header(t)
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" for _ in head) + "|")
        for r in t.rows:
            out.append("| " + " | ".join(_md_escape(c) for c in _row_cells(t, r)) + " |")
        out.append("")
        if t.kind in TOP_KINDS:
            out += [f"Protocol: {_protocol_line(t)}", ""]
        out += [f"Note: {n}" for n in t.notes] + ([""] if t.notes else [])
    if problems:
        out += ["## Skipped records", ""] + [f"- {_md_escape(p)}" for p in problems] + [""]
    return "\n".join(out)


def to_rows(tables: list[Table]) -> list[dict[str, Any]]:
    """One flat dict per table row (the CSV and JSON content)."""
    rows = []
    for t in tables:
        for r in t.rows:
            row = {
                "dataset": t.dataset, "table": t.kind, "metric": t.metric or "", "higher_is_better": t.higher_is_better,
                "protocol": canonical(t.protocol), "protocol_differs": describe(t.differs),
                "rank": "floor" if r.is_floor else r.rank, "rank_worst": None if r.is_floor else r.rank_hi,
                "method": r.method, "label": r.label, "variant": r.variant, "mean": r.value.mean,
                "ci95": r.value.ci95, "sd": r.value.sd, "stderr": r.value.stderr, "bound": r.value.bound,
                "n_seeds": r.value.n, "runs": r.runs, "note": r.note, "nfe": r.nfe, "train_seconds": r.train_seconds,
            }
            for c in t.columns:
                cell = r.extra.get(c)
                if cell is not None:
                    row[f"{c}.mean"], row[f"{c}.ci95"] = cell.mean, cell.ci95
                    if cell.bound:
                        row[f"{c}.bound"] = cell.bound
            rows.append(row)
    return rows


FIXED = ["dataset", "table", "metric", "higher_is_better", "protocol", "protocol_differs", "rank", "rank_worst",
         "method", "label", "variant", "mean", "ci95", "sd", "stderr", "bound", "n_seeds", "runs", "note", "nfe",
         "train_seconds"]


def to_csv(tables: list[Table]) -> str:
    rows = to_rows(tables)
    extra = sorted({k for r in rows for k in r} - set(FIXED))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIXED + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in FIXED + extra})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return format(v, ".6g") if math.isfinite(v) else ""
    return "" if v is None else v


def _json_clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _json_clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_clean(x) for x in v]
    return v


def to_json(tables: list[Table], problems: list[str]) -> str:
    data = {"tables": [{"dataset": t.dataset, "kind": t.kind, "metric": t.metric,
                        "higher_is_better": t.higher_is_better, "title": t.title, "protocol": t.protocol,
                        "differs": t.differs, "columns": t.columns, "notes": t.notes, "rows": to_rows([t])}
                       for t in tables],
            "skipped": problems}
    return json.dumps(_json_clean(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def to_html_fragment(tables: list[Table], problems: list[str], heading_level: int = 2) -> str:
    e = html.escape
    out = []
    if not tables:
        out.append("<p>No run records found.</p>")
    for t in tables:
        h = f"h{heading_level if t.kind in TOP_KINDS else heading_level + 1}"
        out.append(f'<{h} class="board-title">{e(t.title)}</{h}>')
        if t.differs and t.kind == "quality":
            out.append(f'<p class="differs">{e(_differs_line(t))}</p>')
        out.append(f'<table class="leaderboard {e(t.kind)}">')
        out.append("<thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in _header(t)) + "</tr></thead><tbody>")
        for r in t.rows:
            cls = "floor" if r.is_floor else ("unranked" if t.ranked and r.rank is None else "ranked")
            out.append(f'<tr class="{cls}">' + "".join(f"<td>{e(c)}</td>" for c in _row_cells(t, r)) + "</tr>")
        out.append("</tbody></table>")
        if t.kind in TOP_KINDS:
            out.append(f'<p class="protocol">Protocol: {e(_protocol_line(t))}</p>')
        out += [f'<p class="note">{e(n)}</p>' for n in t.notes]
    if problems:
        h = f"h{heading_level}"
        out.append(f"<{h}>Skipped records</{h}><ul class=\"skipped\">"
                   + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    return "\n".join(out) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.leaderboard { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
table.leaderboard th { background: #f0f0f0; }
tr.floor td { font-style: italic; color: #555; }
tr.unranked td { color: #a33; }
p.protocol, p.note, p.differs { font-size: 0.8em; color: #555; }
"""


def to_html(tables: list[Table], problems: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>scorebench leaderboard</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n<h1>Leaderboard</h1>\n"
            + to_html_fragment(tables, problems) + "</body></html>\n")


RENDERERS = {
    "md": lambda t, p: to_markdown(t, p),
    "csv": lambda t, p: to_csv(t),
    "json": to_json,
    "html": to_html,
}


def render(tables: list[Table], problems: list[str], fmt: str) -> str:
    if fmt not in RENDERERS:
        from harness.errors import UsageError

        raise UsageError(f"unknown format {fmt!r}; available: {', '.join(FORMATS)}")
    return RENDERERS[fmt](tables, problems)
