"""The four tables of one data set × protocol group: quality, sampler cost, mixing, training.

A group is one protocol of the data set's primary quality metric (feature extractor, weights, n, split, training
budget), so numbers measured under different protocols are never ranked together. Each group gives:

- quality: the primary metric (ranked, interval, floor row) then the other quality metrics; a Fisher divergence
  only where every method of the table reports it at one σ (σ in the header), since values at different σ are not
  comparable;
- sampler cost: NFE, gradient evaluations (where recorded), GFLOPs and seconds per sample;
- mixing: IACT, ESS per 1k NFE, ESS/s, R̂, nested R̂, mode hops; ranked by ESS per 1k NFE, never by a value from a
  chain shorter than 50 autocorrelation times (then the IACT is a lower bound "> τ" and the ESS an upper bound
  "< ESS", and the row is unranked);
- training: steps, seconds, steps/s, parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.leaderboard.load import canonical, load_runs
from harness.leaderboard.stats import (
    combined_interval,
    fmt_interval,
    fmt_sig,
    mean_ci,
    point_halfwidth,
    rank_ranges,
    rank_text,
)

PRIMARY_METRICS = ("fid_inception", "fid_cnn", "mmd", "energy_distance", "sliced_wasserstein", "nll")
MIXING_METRICS = ("ess_per_1k_nfe", "iat", "ess_per_second", "rhat", "nested_rhat", "mode_hops_per_1k_steps")
MIXING_FAMILY = (*MIXING_METRICS, "ess_bulk", "ess_tail")  # left out of the quality table
MIXING_RANK = "ess_per_1k_nfe"
FISHER = "fisher_divergence"
FLOOR_LABEL = "real vs real (floor)"
MAX_HEADER_DIFF = 30  # longer protocol differences of a split column go to a legend under the table
KINDS = ("quality", "cost", "mixing", "training", "samplers")
KIND_TITLES = {"cost": "sampler cost", "mixing": "mixing", "training": "training",
               "samplers": "samplers with exact scores"}
ORACLE_TRACK = "sampler-oracle"  # record["track"] of the sampler track (harness.config.ORACLE_TRACK)
SAMPLER_RANK = "bias_evals"
# the samplers table's columns after its ranking column, in order
SAMPLER_COLUMNS = ("bias_gflops", "bias_evals_every_step", "ess_per_1k_nfe", "rhat", "nested_rhat",
                   "mode_weight_error", "mmd")
LABELS = {
    "mmd": "MMD²", "energy_distance": "energy distance", "sliced_wasserstein": "sliced W₂",
    "mode_coverage": "mode coverage", "mode_weight_error": "mode weight error (TV)", "nll": "NLL (nats)",
    "bits_per_dim": "bits / dim", "fid_cnn": "FID (CNN)", "kid_cnn": "KID (CNN)", "precision_cnn": "precision (CNN)",
    "recall_cnn": "recall (CNN)", "fid_inception": "FID (Inception)", "kid_inception": "KID (Inception)",
    "precision_inception": "precision (Inception)", "recall_inception": "recall (Inception)",
    "inception_score": "Inception score", "class_kl": "class KL (nats)",
    "iat": "IACT (steps)", "ess_per_1k_nfe": "ESS / 1k NFE", "ess_per_second": "ESS / s", "ess_bulk": "ESS bulk",
    "ess_tail": "ESS tail", "rhat": "R̂", "nested_rhat": "nested R̂", "mode_hops_per_1k_steps": "mode hops / 1k steps",
    FISHER: "Fisher divergence",
    "bias_evals": "evals to 1% bias", "bias_gflops": "GFLOPs to 1% bias",
    "bias_evals_every_step": "evals to 1% bias (readout every step)",
}
# (column header, runs-frame field, exact count) per cost and training column
COST_COLUMNS = (("NFE / sample", "nfe", True), ("grad evals / sample", "grad_evals_per_sample", True),
                ("GFLOPs / sample", "gflops_per_sample", False), ("s / sample", "sample_seconds", False))
TRAINING_COLUMNS = (("steps", "train_steps", True), ("train s", "train_seconds", False),
                    ("train PFLOPs", "train_pflops", False), ("steps / s", "steps_per_second", False),
                    ("MFU", "mfu", False), ("parameters", "params", True))


@dataclass
class Cell:
    """A variant's value over its distinct seeds: mean, half-width of the 95% interval (stats.combined_interval;
    NaN when unknown), sd over seeds, number of seeds, rms evaluation stderr, and `bound` ("lower": the value is
    only a lower bound, "upper": only an upper bound, "": a value)."""

    mean: float = math.nan
    ci95: float = math.nan
    sd: float = math.nan
    n: int = 0
    stderr: float = math.nan
    bound: str = ""
    exact: bool = False  # a count: printed in full when integral

    def text(self) -> str:
        if not math.isfinite(self.mean):
            return ""
        if self.bound:
            return ("> " if self.bound == "lower" else "< ") + fmt_sig(
                self.mean, direction="down" if self.bound == "lower" else "up")
        if self.exact and self.mean == int(self.mean) and not (math.isfinite(self.ci95) and self.ci95 > 0):
            return str(int(self.mean))
        if math.isfinite(self.ci95):
            return fmt_interval(self.mean, 0.0 if self.ci95 <= 1e-12 * abs(self.mean) else self.ci95)
        return fmt_sig(self.mean)

    def interval(self) -> tuple[float, float] | None:
        """The interval ranks are decided by (None: unrankable)."""
        if not math.isfinite(self.mean) or self.bound:
            return None
        h = self.ci95 if math.isfinite(self.ci95) else point_halfwidth(self.mean)
        return self.mean - h, self.mean + h

    def as_dict(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.__dict__.items()}


def cell_of(vals: pd.DataFrame, exact: bool = False) -> Cell:
    """One Cell from rows of the values frame (one per seed) or plain numbers."""
    if isinstance(vals, pd.DataFrame):
        mean, half, sd, n, rms = combined_interval(list(vals["value"]), list(vals["stderr"]))
        bounds = {b for b, v in zip(vals["bound"], vals["value"], strict=True) if b and math.isfinite(v)}
        return Cell(mean, math.nan if bounds else half, sd, n, rms, sorted(bounds)[0] if bounds else "", exact)
    return Cell(*mean_ci(list(vals)), exact=exact)


@dataclass
class Row:
    label: str  # method, or method [what differs] when it has several variants
    method: str
    variant: str  # hash of the variant configuration
    rank: int | None  # best place the row's interval allows (None: unranked)
    value: Cell
    runs: str  # "3 ok, 1 diverged"
    note: str = ""  # why there is no value ("failed", "diverged", "interrupted", "n/a")
    extra: dict[str, Cell] = field(default_factory=dict)  # other columns
    nfe: float = math.nan
    train_seconds: float = math.nan
    is_floor: bool = False
    rank_hi: int | None = None  # worst place: rank..rank_hi are shared with overlapping rows

    @property
    def rank_text(self) -> str:
        if self.is_floor:
            return "floor"
        return rank_text(None if self.rank is None else (self.rank, self.rank_hi or self.rank))


@dataclass
class Table:
    dataset: str
    metric: str | None  # ranking metric; None: unranked (cost, training) or no metric values
    higher_is_better: bool | None
    protocol: dict[str, Any]
    differs: dict[str, Any]  # protocol entries that differ from the data set's other groups
    columns: list[str]  # extra columns, in order
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    kind: str = "quality"  # one of KINDS
    metric_label: str = ""  # header of the ranking column

    @property
    def ranked(self) -> bool:
        return self.kind in ("quality", "mixing", "samplers") and self.metric is not None

    @property
    def title(self) -> str:
        arrow = {True: "higher is better", False: "lower is better"}.get(self.higher_is_better, "")
        if self.kind == "samplers":
            head = f"{self.dataset}: {KIND_TITLES[self.kind]}" + (f" (ranked by {self.metric_label}, {arrow})"
                                                                 if self.metric else "")
        elif self.kind == "quality":
            head = (f"{self.dataset}: {self.metric}" + (f" ({arrow})" if arrow else "") if self.metric
                    else f"{self.dataset}: run status (no metric values)")
        else:
            head = f"{self.dataset}: {KIND_TITLES[self.kind]}"
            if self.ranked:
                head += f" (ranked by {self.metric_label}, {arrow})"
        return head + (f" [{describe(self.differs)}]" if self.differs else "")


# helpers ------------------------------------------------------------------------------------------------------

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


def status_summary(statuses: list[str]) -> str:
    order = ("ok", "diverged", "failed", "interrupted", "running")
    counts = {s: statuses.count(s) for s in (*order, *sorted(set(statuses) - set(order))) if s in statuses}
    return ", ".join(f"{c} {s}" for s, c in counts.items())


def _sampling_key(d: dict[str, Any]) -> int:
    return 0 if d.startswith(("sampling.", "method.protocol")) else 1


def variant_labels(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Display label per (method, variant): the method name, plus the differing settings when a method has
    several variants on this data set; a different sampling protocol is always named, first."""
    out = {}
    for method, g in runs.groupby("method", sort=True):
        variants = g.drop_duplicates("variant").sort_values("variant")
        if len(variants) == 1:
            out[(method, variants.iloc[0]["variant"])] = method
            continue
        diffs = protocol_differences(list(variants["variant_config"]))
        for (_, v), d in zip(variants.iterrows(), diffs, strict=True):
            d = {k: d[k] for k in sorted(d, key=lambda k: (_sampling_key(k), k))}
            proto = {k: x for k, x in d.items() if _sampling_key(k) == 0}
            rest = {k: x for k, x in d.items() if _sampling_key(k) == 1}
            parts = [describe(proto) if proto else "", describe(rest) if rest else ""]
            out[(method, v["variant"])] = f"{method} [{'; '.join(p for p in parts if p) or v['variant']}]"
    return out


def metric_label(name: str, vals: pd.DataFrame | None = None) -> str:
    """Column header: what the column holds and its unit; a record's own label wins (nfe_curve names the sampler
    length its value is at)."""
    if vals is not None and len(vals):
        own = sorted({x for x in vals["label"] if isinstance(x, str) and x})
        if len(own) == 1:
            return own[0]
        if name == "nfe_curve":
            protos = list(vals["protocol"])
            stat = {str(p.get("statistic", "quality")) for p in protos}
            low = {min(p["factors"]) for p in protos if p.get("factors")}
            if len(stat) == 1 and len(low) == 1:
                s = stat.pop()
                return f"{LABELS.get(s, s)} at {low.pop():g}× sampler length"
    return LABELS.get(name, name)


def choose_metric(values: pd.DataFrame) -> str | None:
    names = set(values["metric"]) - set(MIXING_FAMILY) - {FISHER}
    for m in PRIMARY_METRICS:
        if m in names:
            return m
    if not names:
        return None
    counts = values[values["metric"].isin(names)].groupby("metric")["run_id"].nunique()
    return sorted(counts.index, key=lambda m: (-counts[m], m))[0]


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


def per_seed_floors(vals: pd.DataFrame) -> list[float]:
    """One real-vs-real floor per seed: every method of a seed is measured against the same reference samples,
    so its records repeat one measurement, which must not count as many."""
    if vals.empty:
        return []
    fin = vals[[math.isfinite(v) for v in vals["floor"]]]
    return [float(g["floor"].mean()) for _, g in fin.groupby("seed", sort=True)]


# building ------------------------------------------------------------------------------------------------------

def check_names(values: pd.DataFrame, runs: pd.DataFrame, metric: str | None, dataset: str | None) -> None:
    """An unknown data set or metric is a usage error naming the closest and all existing names."""
    from harness.errors import UsageError, did_you_mean

    if dataset is not None and dataset not in set(runs["dataset"]):
        raise UsageError(did_you_mean("data set", dataset, set(runs["dataset"])))
    if metric is not None:
        have = set(values["metric"]) if dataset is None else set(values.loc[values["dataset"] == dataset, "metric"])
        if metric not in have:
            raise UsageError(did_you_mean("metric", metric, have) + (f" (on {dataset})" if dataset else ""))


def build_tables(results, metric: str | None = None, dataset: str | None = None) -> tuple[list[Table], list[str]]:
    """All leaderboard tables (by data set, then protocol group, then kind) and the problems with records
    (unreadable, malformed, dropped copies). An unknown `metric` or `dataset` raises UsageError."""
    runs, values, problems = load_runs(results)
    check_names(values, runs, metric, dataset)
    if dataset is not None:
        runs, values = runs[runs["dataset"] == dataset], values[values["dataset"] == dataset]
    tables = []
    for ds in sorted(set(runs["dataset"])):
        v = values[values["dataset"] == ds]
        if metric is not None and metric not in set(v["metric"]):
            problems = [*problems, f"{ds}: no table, metric {metric!r} was not measured there"]
            continue
        tables.extend(dataset_tables(ds, runs[runs["dataset"] == ds], v, metric))
    return tables, problems


def dataset_tables(ds: str, runs: pd.DataFrame, values: pd.DataFrame, metric: str | None) -> list[Table]:
    """The data set's tables: its trained runs' groups, then the sampler track's table (runs on exact scores)."""
    oracle = runs["track"] == ORACLE_TRACK
    tables = trained_tables(ds, runs[~oracle], values[~values["run_id"].isin(set(runs.loc[oracle, "run_id"]))],
                            metric) if (~oracle).any() else []
    if oracle.any():
        tables.append(samplers_table(ds, runs[oracle], values[values["run_id"].isin(set(runs.loc[oracle, "run_id"]))]))
    return tables


def samplers_table(ds: str, runs: pd.DataFrame, values: pd.DataFrame) -> Table:
    """The sampler track (records with track "sampler-oracle": each method's sampler on exact scores, no training):
    ranked by network evaluations until the squared bias of E[x] and E[x²] stays below 1% (a run that never got there
    is a lower bound "> N", unranked), with GFLOPs, the every-step readout where it differs, ESS per 1k NFE, R̂,
    nested R̂, mode weight error and MMD² beside it."""
    labels = variant_labels(runs)
    vals = values[values["status"].isin(["ok", "diverged", "failed"])]
    rk = vals[vals["metric"] == SAMPLER_RANK]
    have = set(zip(rk["method"], rk["variant"], strict=True))
    rows = _base_rows(runs, labels, lambda m, v: (m, v) in have)
    for r in rows:
        r.value = cell_of(rk[(rk["method"] == r.method) & (rk["variant"] == r.variant)])
        if r.note == "n/a":
            r.note = "n/a (no stationary chain)"
    hib = _direction(rk["higher_is_better"]) if len(rk) else False
    _rank(rows, hib)
    shown = vals[vals["metric"].isin(SAMPLER_COLUMNS)]
    columns, legend = _columns(shown)
    order = {m: i for i, m in enumerate(SAMPLER_COLUMNS)}
    columns.sort(key=lambda c: order[c[1]])
    _fill(rows, shown, columns)
    notes = [*legend]
    bounded = [r.label for r in rows if r.value.bound]
    if bounded:
        notes.append(f"not ranked: {', '.join(bounded)}: the squared bias was still above 1% when the chains stopped "
                     "(\"> N\": the evaluations spent); raise [metrics.bias] steps")
    protos = [p for p in rk["protocol"]] if len(rk) else []
    proto = {k: v for k, v in (protos[0] if protos else {}).items() if k in ("tolerance", "n_chains", "steps",
                                                                            "burn_in", "budget")}
    notes.append("no training: each method's own sampler, initialisation and default step sizes on its model of the "
                 "exact target (Method.oracle); annealed samplers (no stationary chain) are measured by their sample "
                 "quality at their default NFE (MMD²)")
    return Table(ds, SAMPLER_RANK if len(rk) else None, hib, proto, {}, [c for c, _, _ in columns], rows, notes,
                 "samplers", metric_label(SAMPLER_RANK, rk) if len(rk) else "value")


def trained_tables(ds: str, runs: pd.DataFrame, values: pd.DataFrame, metric: str | None) -> list[Table]:
    labels = variant_labels(runs)
    mixing_metric = metric if metric in MIXING_FAMILY else MIXING_RANK
    chosen = metric if metric is not None and metric not in MIXING_FAMILY else choose_metric(values)
    mvals = values[values["metric"] == chosen] if chosen else values.iloc[0:0]
    groups = sorted(set(mvals["protocol_key"]), key=lambda k: _natural_key(json.loads(k)))
    protocols = [json.loads(k) for k in groups]
    diffs = protocol_differences(protocols) if len(protocols) > 1 else [{} for _ in protocols]
    tables = []
    budgets_covered = set()
    for key, proto, diff in zip(groups, protocols, diffs, strict=True):
        b = canonical(proto["budget"])
        budgets_covered.add(b)
        g = mvals[mvals["protocol_key"] == key]
        # the runs of this budget, except those whose value of the chosen metric was measured under another protocol
        elsewhere = set(mvals.loc[mvals["protocol_key"] != key, "run_id"]) - set(g["run_id"])
        here = runs[(runs["budget"] == b) & ~runs["run_id"].isin(elsewhere)]
        tables.extend(group_tables(ds, chosen, mixing_metric, proto, diff, here, values, labels))
    for b in sorted(set(runs["budget"]) - budgets_covered):  # runs with no value of the chosen metric at all
        proto = {"budget": json.loads(b)}
        tables.extend(group_tables(ds, None, mixing_metric, proto, proto if tables else {},
                                   runs[runs["budget"] == b], values, labels))
    return tables


def group_tables(ds, chosen, mixing_metric, proto, diff, runs, values, labels) -> list[Table]:
    vals = values[values["run_id"].isin(set(runs["run_id"])) & values["status"].isin(["ok", "diverged", "failed"])]
    out = [quality_table(ds, chosen, proto, diff, runs, vals, labels)]
    for t in (cost_table(ds, proto, diff, runs, labels), mixing_table(ds, mixing_metric, proto, diff, runs, vals,
                                                                        labels),
              training_table(ds, proto, diff, runs, labels)):
        if t is not None:
            out.append(t)
    return out


def _base_rows(runs: pd.DataFrame, labels, has_value) -> list[Row]:
    rows = []
    for (method, variant), g in runs.groupby(["method", "variant"], sort=True):
        statuses = list(g["status"])
        ok = g[g["status"] == "ok"]
        note = ""
        if not has_value(method, variant):
            bad = sorted({s for s in statuses if s != "ok"})
            note = "/".join(bad) if bad else "n/a"
        rows.append(Row(labels[(method, variant)], method, variant, None, Cell(), status_summary(statuses), note,
                        nfe=mean_ci(list(ok["nfe"]))[0], train_seconds=mean_ci(list(ok["train_seconds"]))[0]))
    return rows


def _rank(rows: list[Row], hib: bool | None) -> None:
    rr = rank_ranges([r.value.interval() for r in rows], hib)
    for r, x in zip(rows, rr, strict=True):
        r.rank, r.rank_hi = (x if x is not None else (None, None))
    rows.sort(key=lambda r: (r.rank is None, r.rank or 0, r.rank_hi or 0,
                             (-1 if hib else 1) * (r.value.mean if math.isfinite(r.value.mean) else 0), r.label))


def _columns(others: pd.DataFrame) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(column name, metric, protocol key) per metric, split by protocol where it differs, and legend lines for
    split columns whose difference is too long for a header."""
    cols, legend = [], []
    for m, g in others.groupby("metric", sort=True):
        keys = sorted(set(g["protocol_key"]), key=lambda k: _natural_key(json.loads(k)))
        name = metric_label(m, g)
        if len(keys) == 1:
            cols.append((name, m, keys[0]))
            continue
        for j, (key, d) in enumerate(zip(keys, protocol_differences([json.loads(k) for k in keys]), strict=True)):
            text = describe(d)
            if len(text) <= MAX_HEADER_DIFF:
                cols.append((f"{name} [{text}]", m, key))
            else:
                cols.append((f"{name} [p{j + 1}]", m, key))
                legend.append(f"{name} [p{j + 1}]: {text}")
    return cols, legend


def _fill(rows: list[Row], vals: pd.DataFrame, columns) -> None:
    for r in rows:
        mine = vals[(vals["method"] == r.method) & (vals["variant"] == r.variant)]
        for name, m, key in columns:
            r.extra[name] = cell_of(mine[(mine["metric"] == m) & (mine["protocol_key"] == key)])


def _fisher(vals: pd.DataFrame, rows: list[Row]) -> tuple[pd.DataFrame, list[str]]:
    """The Fisher-divergence values to show (all rows at one σ) or none, with a note why."""
    f = vals[vals["metric"] == FISHER]
    if f.empty:
        return f, []
    sig = {canonical(p.get("sigma")) for p in f["protocol"]}
    have = set(zip(f["method"], f["variant"], strict=True))
    valued = [r for r in rows if r.note == ""]
    if len(sig) == 1 and all((r.method, r.variant) in have for r in valued):
        return f, []
    why = (f"measured at different σ ({', '.join(sorted(fmt_sig(float(s)) for s in sig if s != 'null'))})"
           if len(sig) > 1 else "not reported by every method")
    return f.iloc[0:0], [f"Fisher divergence left out: {why}; it is comparable only at one σ"]


def quality_table(ds, chosen, proto, diff, runs, vals, labels) -> Table:
    mvals = vals[(vals["metric"] == chosen) & (vals["protocol_key"] == canonical(proto))] if chosen else vals.iloc[:0]
    have = set(zip(mvals["method"], mvals["variant"], strict=True))
    rows = _base_rows(runs, labels, lambda m, v: (m, v) in have)
    for r in rows:
        r.value = cell_of(mvals[(mvals["method"] == r.method) & (mvals["variant"] == r.variant)])
    hib = _direction(mvals["higher_is_better"])
    _rank(rows, hib)
    others = vals[~vals["metric"].isin([chosen, *MIXING_FAMILY, FISHER])]
    fisher, notes = _fisher(vals, rows)
    columns, legend = _columns(others)
    if len(fisher):
        sigma = float(fisher["protocol"].iloc[0].get("sigma", math.nan))
        columns.append((f"{LABELS[FISHER]} (σ={fmt_sig(sigma)})", FISHER, None))
    _fill(rows, others, [c for c in columns if c[1] != FISHER])
    for r in rows:
        for name, m, _ in columns:
            if m == FISHER:
                r.extra[name] = cell_of(fisher[(fisher["method"] == r.method) & (fisher["variant"] == r.variant)])
    floor = Cell(*mean_ci(per_seed_floors(mvals)))
    if floor.n:
        extra = {}
        for name, m, key in columns:
            g = others[(others["metric"] == m) & (others["protocol_key"] == key)] if m != FISHER else fisher.iloc[:0]
            extra[name] = Cell(*mean_ci(per_seed_floors(g)))
        rows.append(Row(FLOOR_LABEL, "", "", None, floor, f"{floor.n} seed{'s' * (floor.n > 1)}", extra=extra,
                        is_floor=True))
    notes = [*notes, *legend, *_uncertainty_notes(rows), *_protocol_notes(rows, runs, labels)]
    return Table(ds, chosen, hib, proto, diff, [c for c, _, _ in columns], rows, notes, "quality",
                 (metric_label(chosen, mvals) if chosen else "value"))


def _uncertainty_notes(rows: list[Row]) -> list[str]:
    bare = [r.label for r in rows if not r.is_floor and r.rank is not None and not math.isfinite(r.value.ci95)]
    if not bare:
        return []
    return [f"no uncertainty recorded for {', '.join(bare)}: printed with 3 significant digits, and ranked apart "
            "only from values that differ in those digits"]


def _protocol_notes(rows: list[Row], runs: pd.DataFrame, labels) -> list[str]:
    """Say so where one method's rows were sampled under different protocols (walk-jump parallel vs long chain)."""
    notes = []
    for method, g in runs.groupby("method", sort=True):
        protos = {canonical(s) for s in g["sampling"] if s is not None}
        if len(protos) > 1:
            notes.append(f"{method} rows were sampled under different protocols "
                         f"({'; '.join(sorted(describe(json.loads(p)) for p in protos))}): a rank between them "
                         "compares sampling protocols, not only methods")
    return notes


def mixing_table(ds, rank_metric, proto, diff, runs, vals, labels) -> Table | None:
    mix = vals[vals["metric"].isin(MIXING_METRICS) | (vals["metric"] == rank_metric)]
    if mix.empty:
        return None
    have = set(zip(mix["method"], mix["variant"], strict=True))
    rows = [r for r in _base_rows(runs, labels, lambda m, v: (m, v) in have) if (r.method, r.variant) in have
            or r.note not in ("n/a", "")]
    without = sorted({labels[k] for k in zip(runs["method"], runs["variant"], strict=True)} - {r.label for r in rows})
    rk = mix[mix["metric"] == rank_metric]
    for r in rows:
        r.value = cell_of(rk[(rk["method"] == r.method) & (rk["variant"] == r.variant)])
    hib = _direction(rk["higher_is_better"]) if len(rk) else None
    _rank(rows, hib)
    columns, legend = _columns(mix[mix["metric"] != rank_metric])
    _fill(rows, mix, columns)
    notes = [*legend]
    bounded = [r.label for r in rows if r.value.bound]
    if bounded:
        notes.append(f"not ranked: {', '.join(bounded)}: their chains ran fewer than 50 autocorrelation times, so the "
                     "IACT is only a lower bound (\"> τ\") and the ESS an upper bound (\"< ESS\"); raise "
                     "[metrics.mixing] steps")
    if without:
        notes.append(f"no mixing chain: {', '.join(without)}")
    notes += _uncertainty_notes(rows)
    return Table(ds, rank_metric if len(rk) else None, hib, proto, diff, [c for c, _, _ in columns], rows, notes,
                 "mixing", metric_label(rank_metric, rk))


def _plain_table(kind, spec, ds, proto, diff, runs, labels) -> Table | None:
    present = [(n, f, ex) for n, f, ex in spec if runs[f].notna().any()]
    if not present:
        return None
    rows = _base_rows(runs, labels, lambda m, v: True)
    for r in rows:
        ok = runs[(runs["method"] == r.method) & (runs["variant"] == r.variant) & (runs["status"] == "ok")]
        for name, f, ex in present:
            r.extra[name] = cell_of(list(ok[f]), exact=ex)
        if ok.empty:
            r.note = "/".join(sorted({s for s in runs.loc[(runs["method"] == r.method)
                                                           & (runs["variant"] == r.variant), "status"]}))
    rows.sort(key=lambda r: r.label)
    return Table(ds, None, None, proto, diff, [n for n, _, _ in present], rows, [], kind, "")


def cost_table(ds, proto, diff, runs, labels) -> Table | None:
    return _plain_table("cost", COST_COLUMNS, ds, proto, diff, runs, labels)


def training_table(ds, proto, diff, runs, labels) -> Table | None:
    return _plain_table("training", TRAINING_COLUMNS, ds, proto, diff, runs, labels)
