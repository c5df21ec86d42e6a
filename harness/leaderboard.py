"""Leaderboards derived from run records (a plain first version: one Markdown table per data set)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.records import iter_records


def records_frame(results: Path) -> tuple[pd.DataFrame, list[str]]:
    recs, problems = iter_records(results)
    rows = []
    for r in recs:
        row = {"method": r["method"], "dataset": r["dataset"], "seed": r["seed"], "status": r["status"]}
        for name, m in r.get("metrics", {}).items():
            row[name] = m.get("value")
        rows.append(row)
    return pd.DataFrame(rows), problems


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.4g}"
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def markdown(results: Path) -> tuple[str, list[str]]:
    df, problems = records_frame(results)
    if df.empty:
        return "No run records found.\n", problems
    parts = []
    for dataset, g in df.groupby("dataset", sort=True):
        metric_cols = [c for c in g.columns if c not in ("method", "dataset", "seed", "status") and g[c].notna().any()]
        agg = g.groupby("method", sort=True).agg(
            seeds=("seed", "nunique"), status=("status", lambda s: ",".join(sorted(set(s)))),
            **{c: (c, "mean") for c in sorted(metric_cols)})
        parts.append(f"## {dataset}\n\n" + md_table(agg.reset_index()) + "\n")
    return "\n".join(parts), problems
