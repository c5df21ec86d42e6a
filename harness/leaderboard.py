"""Leaderboards derived from run records.

Every record under ``<results>/runs/*/record.json`` becomes one row of a pandas frame; every metric value one row of
a second frame, keyed by its *protocol fingerprint*: the metric's own ``protocol`` dict (feature extractor, weights
hash, n, split, ...) plus the run's training budget. A leaderboard table is one (data set, ranking metric, protocol)
group, so numbers measured under different protocols are never ranked together; when one data set needs several
tables, each names what differs from the others.

In a table: one row per method variant (method + hash of its resolved method, backbone and training configuration),
the mean over seeds with a two-sided 95% confidence interval from the t-distribution (mean ± t_{0.975, n−1} s/√n),
the number of seeds, the run statuses (failed and diverged runs are listed, never dropped), the rank by the
ranking metric in its declared direction, the other metrics of the same runs as extra columns (split by protocol
where theirs differ), and the real-vs-real floor as its own row.

Output is deterministic: everything is sorted, numbers are printed with fixed precision and nothing depends on
the clock, so the same records give byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.records import iter_records

FORMATS = ("md", "csv", "json", "html")
# Preferred ranking metrics, best first; a data set without any of them ranks by its most common metric.
PRIMARY_METRICS = ("fid_inception", "fid_cnn", "mmd", "energy_distance", "sliced_wasserstein", "nll", "iat")
CONFIDENCE = 0.95
TRAIN_KEYS_OUTSIDE_VARIANT = ("steps", "seconds", "checkpoint_every")  # budget (in the protocol) and bookkeeping
FLOOR_LABEL = "real vs real (floor)"
MAX_HEADER_DIFF = 30  # longer protocol differences of a split column go to a legend under the table


# reading -----------------------------------------------------------------------------------------------------

def to_number(v: Any) -> float:
    """Record values are JSON numbers, or strings 'nan'/'inf' for non-finite floats (records._jsonable)."""
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:n]


def variant_config(rec: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs of one method the same treatment: resolved method, backbone and training settings
    (the budget is part of the protocol instead)."""
    cfg = rec.get("config") or {}
    train = {k: v for k, v in (cfg.get("train") or {}).items() if k not in TRAIN_KEYS_OUTSIDE_VARIANT}
    return {"method": cfg.get("method") or {}, "backbone": cfg.get("backbone") or {}, "train": train}


def budget(rec: dict[str, Any]) -> dict[str, Any]:
    b = rec.get("budget") or {}
    return {"steps": b.get("steps"), "seconds": b.get("seconds")}


def load_runs(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs: one row per record, values: one row per record × metric, problems: one message per bad record)."""
    recs, problems = iter_records(Path(results))
    runs, values = [], []
    for r in recs:
        try:
            run, vals = _record_rows(r)
        except (TypeError, AttributeError, ValueError) as exc:  # a field of the wrong type: skip, say where
            problems.append(f"{r.get('_path')}: malformed record ({type(exc).__name__}: {exc})")
            continue
        runs.append(run)
        values.extend(vals)
    run_cols = ["run_id", "path", "method", "dataset", "seed", "status", "variant", "variant_config", "budget",
                "error", "nfe", "train_seconds", "params", "metric_errors"]
    val_cols = ["run_id", "method", "dataset", "seed", "variant", "budget", "metric", "value", "higher_is_better",
                "floor", "protocol", "protocol_key", "reliable"]
    runs_df = pd.DataFrame(runs, columns=run_cols).sort_values(["dataset", "method", "variant", "seed", "run_id"])
    vals_df = pd.DataFrame(values, columns=val_cols).sort_values(["dataset", "metric", "method", "seed", "run_id"])
    return runs_df.reset_index(drop=True), vals_df.reset_index(drop=True), sorted(problems)


def _record_rows(r: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    vcfg = variant_config(r)
    b = budget(r)
    err = r.get("error") or None
    run = {
        "run_id": str(r["run_id"]), "path": r.get("_path"), "method": str(r["method"]), "dataset": str(r["dataset"]),
        "seed": int(r["seed"]), "status": str(r["status"]), "variant": short_hash(vcfg), "variant_config": vcfg,
        "budget": canonical(b), "error": (err.get("message") if isinstance(err, dict) else str(err)) if err else None,
        "nfe": to_number(r.get("nfe")), "train_seconds": to_number((r.get("timings") or {}).get("train_seconds")),
        "params": to_number(r.get("params")), "metric_errors": dict(r.get("metric_errors") or {}),
    }
    vals = []
    for name, m in sorted((r.get("metrics") or {}).items()):
        if not isinstance(m, dict):
            raise TypeError(f"metric {name!r} is {type(m).__name__}, expected an object")
        protocol = {**(m.get("protocol") or {}), "budget": b}
        vals.append({
            "run_id": run["run_id"], "method": run["method"], "dataset": run["dataset"], "seed": run["seed"],
            "variant": run["variant"], "budget": run["budget"], "metric": str(name), "value": to_number(m.get("value")),
            "higher_is_better": m.get("higher_is_better"), "floor": to_number(m.get("floor")),
            "protocol": protocol, "protocol_key": canonical(protocol),
            "reliable": m["details"].get("reliable") if isinstance(m.get("details"), dict) else None,
        })
    return run, vals


# statistics --------------------------------------------------------------------------------------------------

def mean_ci(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, half-width of the t confidence interval, sample sd, n) of the finite values; the half-width is
    t_{(1+c)/2, n−1} · s / √n (NaN for n < 2)."""
    from scipy import stats

    x = [v for v in values if math.isfinite(v)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = math.fsum(x) / n
    if n < 2:
        return mean, math.nan, math.nan, 1
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in x) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n), sd, n


def ranks(means: list[float], higher_is_better: bool | None) -> list[int | None]:
    """Competition ranks ("1224") of the finite means in the metric's direction; None for missing values."""
    sign = -1.0 if higher_is_better else 1.0
    finite = sorted(sign * m for m in means if math.isfinite(m))
    return [finite.index(sign * m) + 1 if math.isfinite(m) else None for m in means]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def protocol_differences(protocols: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each protocol, the flattened keys whose values are not the same in all of `protocols`."""
    flat = [flatten(p) for p in protocols]
    keys = sorted(set().union(*flat)) if flat else []
    differ = [k for k in keys if len({canonical(f.get(k)) for f in flat}) > 1]
    return [{k: f.get(k) for k in differ} for f in flat]


def _brief(v: Any, width: int = 16) -> str:
    s = v if isinstance(v, str) else canonical(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def describe(diff: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_brief(v)}" for k, v in diff.items())


# tables ------------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    mean: float = math.nan
    ci95: float = math.nan
    sd: float = math.nan
    n: int = 0

    def text(self) -> str:
        if not math.isfinite(self.mean):
            return ""
        if math.isfinite(self.ci95):
            if self.ci95 <= 1e-12 * abs(self.mean):  # identical values up to rounding
                return f"{self.mean:.4g} ± 0"
            return f"{self.mean:.4g} ± {self.ci95:.2g}"
        return f"{self.mean:.4g}"

    def as_dict(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}


@dataclass
class Row:
    label: str  # method, or method [what differs] when it has several variants
    method: str
    variant: str  # hash of the variant configuration
    rank: int | None
    value: Cell
    runs: str  # "3 ok, 1 diverged"
    note: str = ""  # why there is no value ("failed", "diverged", "n/a")
    extra: dict[str, Cell] = field(default_factory=dict)  # other metric columns
    nfe: float = math.nan
    train_seconds: float = math.nan
    is_floor: bool = False


@dataclass
class Table:
    dataset: str
    metric: str | None  # None: no metric values, only run statuses
    higher_is_better: bool | None
    protocol: dict[str, Any]
    differs: dict[str, Any]  # protocol entries that differ from the data set's other tables of this metric
    columns: list[str]  # extra metric columns, in order
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        arrow = {True: "higher is better", False: "lower is better"}.get(self.higher_is_better, "")
        head = f"{self.dataset}: {self.metric}" + (f" ({arrow})" if arrow else "") if self.metric else \
            f"{self.dataset}: run status (no metric values)"
        return head + (f" [{describe(self.differs)}]" if self.differs else "")


def status_summary(statuses: list[str]) -> str:
    order = ("ok", "diverged", "failed", "running")
    counts = {s: statuses.count(s) for s in order if s in statuses}
    return ", ".join(f"{c} {s}" for s, c in counts.items())


def variant_labels(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Display label per (method, variant): the method name, plus the differing settings when a method has
    several variants on this data set."""
    out = {}
    for method, g in runs.groupby("method", sort=True):
        variants = g.drop_duplicates("variant").sort_values("variant")
        if len(variants) == 1:
            out[(method, variants.iloc[0]["variant"])] = method
            continue
        diffs = protocol_differences(list(variants["variant_config"]))
        for (_, v), d in zip(variants.iterrows(), diffs, strict=True):
            out[(method, v["variant"])] = f"{method} [{describe(d) or v['variant']}]"
    return out


def choose_metric(values: pd.DataFrame) -> str | None:
    names = set(values["metric"])
    for m in PRIMARY_METRICS:
        if m in names:
            return m
    if not names:
        return None
    counts = values.groupby("metric")["run_id"].nunique()
    return sorted(counts.index, key=lambda m: (-counts[m], m))[0]


def build_tables(results: Path, metric: str | None = None, dataset: str | None = None) -> tuple[list[Table], list[str]]:
    """All leaderboard tables (sorted by data set, then protocol) and the problems with unreadable records."""
    runs, values, problems = load_runs(results)
    if dataset is not None:
        runs, values = runs[runs["dataset"] == dataset], values[values["dataset"] == dataset]
    tables = []
    for ds in sorted(set(runs["dataset"])):
        tables.extend(dataset_tables(ds, runs[runs["dataset"] == ds], values[values["dataset"] == ds], metric))
    return tables, problems


def dataset_tables(ds: str, runs: pd.DataFrame, values: pd.DataFrame, metric: str | None) -> list[Table]:
    labels = variant_labels(runs)
    chosen = metric or choose_metric(values)
    mvals = values[values["metric"] == chosen] if chosen else values.iloc[0:0]
    notes = []
    if metric and mvals.empty:
        have = ", ".join(sorted(set(values["metric"]))) or "none"
        notes.append(f"metric {metric!r} was not measured on {ds} (metrics here: {have})")
    groups = sorted(set(mvals["protocol_key"]), key=lambda k: _natural_key(json.loads(k)))
    protocols = [json.loads(k) for k in groups]
    diffs = protocol_differences(protocols) if len(protocols) > 1 else [{} for _ in protocols]
    tables = []
    budgets_covered = set()
    for key, proto, diff in zip(groups, protocols, diffs, strict=True):
        b = canonical(proto["budget"])
        budgets_covered.add(b)
        g = mvals[mvals["protocol_key"] == key]
        hib = _direction(g["higher_is_better"])
        # the runs of this budget, except those whose value of the chosen metric was measured under another protocol
        elsewhere = set(mvals.loc[mvals["protocol_key"] != key, "run_id"]) - set(g["run_id"])
        here = runs[(runs["budget"] == b) & ~runs["run_id"].isin(elsewhere)]
        tables.append(_table(ds, chosen, hib, proto, diff, here, g, values, labels, notes))
    for b in sorted(set(runs["budget"]) - budgets_covered):  # runs with no value of the chosen metric at all
        proto = {"budget": json.loads(b)}
        tables.append(_table(ds, chosen if chosen in set(values["metric"]) else None, None, proto,
                             proto if tables else {}, runs[runs["budget"] == b], mvals.iloc[0:0], values, labels,
                             notes))
    return tables


def _natural_key(proto: dict[str, Any]) -> list[tuple]:
    """Sort protocols by their flattened entries, numbers numerically (n=500 before n=1000)."""
    out = []
    for k, v in sorted(flatten(proto).items()):
        num = v if isinstance(v, int | float) and not isinstance(v, bool) else None
        out.append((k, num is None, num if num is not None else 0, canonical(v)))
    return out


def _direction(col: pd.Series) -> bool | None:
    dirs = {bool(v) for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))}
    return dirs.pop() if len(dirs) == 1 else None


def _table(ds, metric, hib, proto, diff, runs, mvals, values, labels, notes) -> Table:
    run_ids = set(runs["run_id"])
    others = values[values["run_id"].isin(run_ids) & (values["metric"] != metric)]
    columns, legend = _extra_columns(others)
    rows = []
    for (method, variant), g in runs.groupby(["method", "variant"], sort=True):
        mine = mvals[(mvals["method"] == method) & (mvals["variant"] == variant)]
        cell = Cell(*mean_ci(list(mine["value"])))
        statuses = list(g["status"])
        note = ""
        if cell.n == 0:
            bad = sorted({s for s in statuses if s != "ok"})
            note = "/".join(bad) if bad else ("n/a" if metric else "")
        ok = g[g["status"] == "ok"]
        rows.append(Row(
            label=labels[(method, variant)], method=method, variant=variant, rank=None, value=cell,
            runs=status_summary(statuses), note=note,
            extra=_extra_cells(others[(others["method"] == method) & (others["variant"] == variant)], columns),
            nfe=mean_ci(list(ok["nfe"]))[0], train_seconds=mean_ci(list(ok["train_seconds"]))[0],
        ))
    for row, rank in zip(rows, ranks([r.value.mean for r in rows], hib), strict=True):
        row.rank = rank
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0, r.label, r.variant))
    floor = Cell(*mean_ci(per_seed_floors(mvals)))
    if floor.n:
        extra = _extra_cells(others, columns, floor=True)
        rows.append(Row(FLOOR_LABEL, "", "", None, floor, f"{floor.n} seed{'s' * (floor.n > 1)}", extra=extra,
                        is_floor=True))
    return Table(ds, metric, hib, proto, diff, [c for c, _, _ in columns], rows,
                 list(notes) + legend + _reliability_notes(values[values["run_id"].isin(run_ids)], labels))


def _reliability_notes(vals: pd.DataFrame, labels: dict[tuple[str, str], str]) -> list[str]:
    """Which rows' mixing estimates come from chains shorter than 50 autocorrelation times (Sokal's rule)."""
    bad = vals[[r is False for r in vals["reliable"]]] if len(vals) else vals
    names = sorted({labels[(m, v)] for m, v in zip(bad["method"], bad["variant"], strict=True)})
    if not names:
        return []
    return [f"mixing estimates of {', '.join(names)} are unreliable: their chains ran fewer than 50 autocorrelation "
            "times (raise [metrics.mixing] steps)"]


def _extra_columns(others: pd.DataFrame) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(column name, metric, protocol key) per other metric, split by protocol where it differs, and legend lines
    for split columns whose difference is too long for a header ("iat [p2]: chain.step_size=0.02, ...")."""
    cols, legend = [], []
    for m, g in others.groupby("metric", sort=True):
        keys = sorted(set(g["protocol_key"]), key=lambda k: _natural_key(json.loads(k)))
        if len(keys) == 1:
            cols.append((m, m, keys[0]))
            continue
        for j, (key, d) in enumerate(zip(keys, protocol_differences([json.loads(k) for k in keys]), strict=True)):
            text = describe(d)
            if len(text) <= MAX_HEADER_DIFF:
                cols.append((f"{m} [{text}]", m, key))
            else:
                cols.append((f"{m} [p{j + 1}]", m, key))
                legend.append(f"{m} [p{j + 1}]: {text}")
    return cols, legend


def per_seed_floors(vals: pd.DataFrame) -> list[float]:
    """One real-vs-real floor per seed: every method of a seed is measured against the same reference samples,
    so its records repeat one measurement, which must not count as many."""
    if vals.empty:
        return []
    fin = vals[[math.isfinite(v) for v in vals["floor"]]]
    return [float(g["floor"].mean()) for _, g in fin.groupby("seed", sort=True)]


def _extra_cells(vals: pd.DataFrame, columns, floor: bool = False) -> dict[str, Cell]:
    out = {}
    for name, m, key in columns:
        g = vals[(vals["metric"] == m) & (vals["protocol_key"] == key)]
        out[name] = Cell(*mean_ci(per_seed_floors(g) if floor else list(g["value"])))
    return out


# rendering ---------------------------------------------------------------------------------------------------

def _num(v: float, fmt: str = ".4g") -> str:
    return format(v, fmt) if isinstance(v, float | int) and math.isfinite(v) else ""


def _row_cells(t: Table, r: Row) -> list[str]:
    rank = "floor" if r.is_floor else (str(r.rank) if r.rank is not None else "—")
    value = r.value.text() or r.note
    seeds = "" if r.is_floor else str(r.value.n)
    return [rank, r.label, value, seeds, r.runs, _num(r.nfe), _num(r.train_seconds, ".3g"),
            *[r.extra[c].text() for c in t.columns]]


def _header(t: Table) -> list[str]:
    head = f"{t.metric} (mean ± 95% CI)" if t.metric else "value"
    return ["rank", "method", head, "seeds", "runs", "NFE", "train s", *t.columns]


def _protocol_line(t: Table) -> str:
    flat = flatten(t.protocol)
    return ", ".join(f"{k}={_brief(v, 40)}" for k, v in sorted(flat.items()))


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(tables: list[Table], problems: list[str]) -> str:
    if not tables:
        out = ["No run records found.", ""]
    else:
        out = ["# Leaderboard", ""]
    for t in tables:
        out += [f"## {t.title}", ""]
        if t.differs:
            out += [f"Not comparable with the other {t.dataset} tables: they differ in "
                    f"{', '.join(sorted(t.differs))}.", ""]
        head = _header(t)
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" for _ in head) + "|")
        for r in t.rows:
            out.append("| " + " | ".join(_md_escape(c) for c in _row_cells(t, r)) + " |")
        out += ["", f"Protocol: {_protocol_line(t)}", ""]
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
                "dataset": t.dataset, "metric": t.metric or "", "higher_is_better": t.higher_is_better,
                "protocol": canonical(t.protocol), "protocol_differs": describe(t.differs),
                "rank": "floor" if r.is_floor else r.rank, "method": r.method, "label": r.label,
                "variant": r.variant, "mean": r.value.mean, "ci95": r.value.ci95, "sd": r.value.sd,
                "n_seeds": r.value.n, "runs": r.runs, "note": r.note, "nfe": r.nfe, "train_seconds": r.train_seconds,
            }
            for c in t.columns:
                row[f"{c}.mean"], row[f"{c}.ci95"] = r.extra[c].mean, r.extra[c].ci95
            rows.append(row)
    return rows


def to_csv(tables: list[Table]) -> str:
    rows = to_rows(tables)
    fixed = ["dataset", "metric", "higher_is_better", "protocol", "protocol_differs", "rank", "method", "label",
             "variant", "mean", "ci95", "sd", "n_seeds", "runs", "note", "nfe", "train_seconds"]
    extra = sorted({k for r in rows for k in r} - set(fixed))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fixed + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in fixed + extra})
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
    data = {"tables": [{"dataset": t.dataset, "metric": t.metric, "higher_is_better": t.higher_is_better,
                        "title": t.title, "protocol": t.protocol, "differs": t.differs, "columns": t.columns,
                        "notes": t.notes, "rows": [r for r in to_rows([t])]} for t in tables],
            "skipped": problems}
    return json.dumps(_json_clean(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def to_html_fragment(tables: list[Table], problems: list[str], heading_level: int = 2) -> str:
    h = f"h{heading_level}"
    e = html.escape
    out = []
    if not tables:
        out.append("<p>No run records found.</p>")
    for t in tables:
        out.append(f'<{h} class="board-title">{e(t.title)}</{h}>')
        if t.differs:
            out.append(f"<p class=\"differs\">Not comparable with the other {e(t.dataset)} tables: they differ in "
                       f"{e(', '.join(sorted(t.differs)))}.</p>")
        out.append('<table class="leaderboard">')
        out.append("<thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in _header(t)) + "</tr></thead><tbody>")
        for r in t.rows:
            cls = "floor" if r.is_floor else ("unranked" if r.rank is None else "ranked")
            out.append(f'<tr class="{cls}">' + "".join(f"<td>{e(c)}</td>" for c in _row_cells(t, r)) + "</tr>")
        out.append("</tbody></table>")
        out.append(f'<p class="protocol">Protocol: {e(_protocol_line(t))}</p>')
        out += [f'<p class="note">{e(n)}</p>' for n in t.notes]
    if problems:
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


def write_leaderboard(results: Path, fmt: str | None = None, out: Path | str | None = None,
                      metric: str | None = None, dataset: str | None = None) -> tuple[str, list[Path], list[str]]:
    """`scorebench leaderboard`: (text to print, files written, problems).

    Without `fmt` and `out`: writes ``<results>/leaderboard.md`` and ``.csv`` and returns the Markdown. With `out`
    (a path; ``-`` for none): writes that one file in `fmt` (default: from its suffix, else md). With only `fmt`:
    writes nothing and returns the text in that format.
    """
    results = Path(results)
    tables, problems = build_tables(results, metric, dataset)
    if metric and not any(t.metric == metric for t in tables) and tables:
        from harness.errors import UsageError

        _, values, _ = load_runs(results)
        raise UsageError(f"no run record has metric {metric!r}; available: "
                         f"{', '.join(sorted(set(values['metric']))) or '(none)'}")
    written = []
    if fmt is None and out is None:
        for suffix in ("md", "csv"):
            path = results / f"leaderboard.{suffix}"
            _write(path, render(tables, problems, suffix))
            written.append(path)
        return render(tables, problems, "md"), written, problems
    if out is not None and str(out) != "-":
        out = Path(out)
        fmt = fmt or (out.suffix.lstrip(".") if out.suffix.lstrip(".") in FORMATS else "md")
        text = render(tables, problems, fmt)
        _write(out, text)
        return text, [out], problems
    return render(tables, problems, fmt or "md"), [], problems


def _write(path: Path, text: str) -> None:
    from harness.records import atomic_write

    atomic_write(Path(path), lambda f: f.write(text))
