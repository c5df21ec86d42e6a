"""Leaderboards derived from run records.

Every record under ``<results>/runs/*/record.json`` becomes one row of a pandas frame and every metric value one
row of a second frame (`load`); copies of one run and repeated seeds are dropped and named. Each data set gives one
group of tables per protocol of its primary quality metric (the metric's own ``protocol`` dict plus the training
budget), and each group four tables (`tables`): quality (ranked by the primary metric, with the real-vs-real
floor), sampler cost, mixing (ranked by ESS per 1k NFE where the chains are long enough) and training. Rows are
method variants (method + hash of the resolved method, backbone, training and sampling configuration).

Each cell is the mean over distinct seeds with a 95% interval that combines the evaluation's own standard error with
the spread over seeds; overlapping intervals share a rank ("2–4"); numbers carry the digits their interval supports
(formulas in `stats`). Output is deterministic (`render`): the same records give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

from harness.leaderboard.load import (
    budget,
    canonical,
    dedupe,
    effective_status,
    load_runs,
    short_hash,
    to_number,
    variant_config,
)
from harness.leaderboard.render import (
    FORMATS,
    HTML_STYLE,
    render,
    to_csv,
    to_html,
    to_html_fragment,
    to_json,
    to_markdown,
    to_rows,
)
from harness.leaderboard.stats import CONFIDENCE, combined_interval, fmt_interval, fmt_sig, mean_ci, rank_ranges, ranks
from harness.leaderboard.tables import (
    FLOOR_LABEL,
    KINDS,
    PRIMARY_METRICS,
    Cell,
    Row,
    Table,
    build_tables,
    choose_metric,
    describe,
    flatten,
    metric_label,
    per_seed_floors,
    protocol_differences,
    status_summary,
    variant_labels,
)

__all__ = [
    "CONFIDENCE", "FLOOR_LABEL", "FORMATS", "HTML_STYLE", "KINDS", "PRIMARY_METRICS", "Cell", "Row", "Table",
    "budget", "build_tables", "canonical", "choose_metric", "combined_interval", "dedupe", "describe",
    "effective_status", "flatten", "fmt_interval", "fmt_sig", "load_runs", "mean_ci", "metric_label",
    "per_seed_floors", "protocol_differences", "rank_ranges", "ranks", "render", "short_hash", "status_summary",
    "to_csv", "to_html", "to_html_fragment", "to_json", "to_markdown", "to_number", "to_rows", "variant_config",
    "variant_labels", "write_leaderboard",
]


def write_leaderboard(results: Path, fmt: str | None = None, out: Path | str | None = None,
                      metric: str | None = None, dataset: str | None = None) -> tuple[str, list[Path], list[str]]:
    """`scorebench leaderboard`: (text to print, files written, problems).

    Only the default view (no `fmt`, `out`, `metric` or `dataset`) writes ``<results>/leaderboard.md`` and ``.csv``.
    With `out` (a path; ``-`` for none): writes that one file in `fmt` (default: from its suffix, else md).
    Otherwise nothing is written and the text is returned. A results folder without records, an unknown data set
    or metric raise UsageError (exit 2) before anything is written.
    """
    from harness.errors import UsageError

    results = Path(results)
    runs, _, problems = load_runs(results)
    if runs.empty:
        bad = f"; unreadable: {'; '.join(problems)}" if problems else ""
        raise UsageError(f"no run records in {str(results)!r} (looked for {results / 'runs' / '*' / 'record.json'})"
                         f"{bad}. Run `scorebench run` first, or pass --results results for the committed "
                         "reference results")
    tables, problems = build_tables(results, metric, dataset)
    if out is not None and str(out) != "-":
        out = Path(out)
        fmt = fmt or (out.suffix.lstrip(".") if out.suffix.lstrip(".") in FORMATS else "md")
        text = render(tables, problems, fmt)
        _write(out, text)
        return text, [out], problems
    if fmt is None and out is None and metric is None and dataset is None:
        written = []
        for suffix in ("md", "csv"):
            path = results / f"leaderboard.{suffix}"
            _write(path, render(tables, problems, suffix))
            written.append(path)
        return render(tables, problems, "md"), written, problems
    return render(tables, problems, fmt or "md"), [], problems


def _write(path: Path, text: str) -> None:
    from harness.records import atomic_write

    atomic_write(Path(path), lambda f: f.write(text))
