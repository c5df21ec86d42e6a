"""`scorebench report`: a static HTML page over the run records, ``<results>/report/index.html`` with its images in
``img/`` beside it. It needs no server and no internet: open the file in a browser.

Sections: the leaderboards (`harness.leaderboard`); the metric validity results (``<results>/validity.json``, when
present); per data set, the samples of every method variant (the run's ``samples.png``: an image grid, or for 2-D
targets the samples over the target density) with the primary metric ± its standard error, quality against training
time, NFE and sampling GFLOPs with the Pareto front marked, the mixing of stationary chains (autocorrelation against
lag, traces of the chain's own state, mode hopping at the paid readouts of one long chain, the readouts themselves,
and τ / ESS per 1k NFE with bounds drawn as bounds), and throughput bars; finally the environments (versions,
hardware, git) the numbers came from.

The chain plots come from ``<run>/chain.npz``, which the mixing metric writes beside the record, so a report
regenerates from committed results alone. Only when asked (``chain_steps`` > 0) are the chains of runs whose
record says they have a stationary chain re-run from their checkpoints (EMA weights) with a fixed seed; where
neither exists the page says what is missing.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness import leaderboard as lb
from harness.records import iter_records

CHAINS = 4  # parallel chains re-run per method for the chain plots
ACF_MAX_LAG = 200
STRIP_FRAMES = 16  # read-outs shown along the long chain (images)
e = html.escape


def _pyplot():
    from harness.plots import _pyplot as pyplot

    return pyplot()


# pure helpers ------------------------------------------------------------------------------------------------

def pareto_front(xs: list[float], ys: list[float], higher_is_better: bool | None) -> list[bool]:
    """Which points are Pareto-optimal when x (cost: seconds, NFE) is minimised and y is optimised in its
    direction: no other point is at least as good in both and strictly better in one. NaNs are never optimal."""
    sign = -1.0 if higher_is_better else 1.0
    pts = [(x, sign * y) for x, y in zip(xs, ys, strict=True)]
    out = []
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            out.append(False)
            continue
        dominated = any(j != i and math.isfinite(a) and math.isfinite(b) and a <= x and b <= y and (a < x or b < y)
                        for j, (a, b) in enumerate(pts))
        out.append(not dominated)
    return out


def mean_acf(trace: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation ρ(0..max_lag) of a [chains, steps] trace, averaged over chains (as τ is computed)."""
    from harness.metrics.mixing import autocorrelation_1d

    rho = np.mean([autocorrelation_1d(row) for row in np.asarray(trace, dtype=np.float64)], axis=0)
    return rho[: max_lag + 1]


# collecting --------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """The first ok seed of one method variant on one data set: what the per-variant pictures show."""

    record: dict[str, Any]
    label: str

    @property
    def dir(self) -> Path:
        return Path(self.record["_path"]).parent

    @property
    def run_id(self) -> str:
        return self.record["run_id"]


@dataclass
class Page:
    out: Path
    sections: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def img(self, rel: str, alt: str, width: int | None = None) -> str:
        w = f' width="{width}"' if width else ""
        return f'<img src="{e(rel)}" alt="{e(alt)}"{w}>'

    def section(self, anchor: str, title: str, body: str, level: int = 2) -> None:
        if level == 2:
            self.toc.append((anchor, title))
        self.sections.append(f'<h{level} id="{e(anchor)}">{e(title)}</h{level}>\n{body}')


def representative_runs(records: list[dict[str, Any]], runs: pd.DataFrame) -> dict[str, list[Run]]:
    """Per data set, one ok run per method variant (lowest seed), labelled as in the leaderboard."""
    by_id = {r["run_id"]: r for r in records}
    out: dict[str, list[Run]] = {}
    for ds in sorted(set(runs["dataset"])):
        sub = runs[runs["dataset"] == ds]
        labels = lb.variant_labels(sub)
        chosen = []
        for (method, variant), g in sub.groupby(["method", "variant"], sort=True):
            ok = g[g["status"] == "ok"].sort_values(["seed", "run_id"])
            if len(ok):
                chosen.append(Run(by_id[ok.iloc[0]["run_id"]], labels[(method, variant)]))
        out[ds] = chosen
    return out


# sections ----------------------------------------------------------------------------------------------------

def value_text(entry: dict[str, Any] | None) -> str:
    """A recorded metric value with its uncertainty: "0.0311 ± 0.0012" (± 1.96 standard errors) where a standard
    error is recorded, bounds as "> 1228" (lower bound) or "< 3.1" (upper bound of a higher-is-better value)."""
    if not isinstance(entry, dict):
        return ""
    v, se = lb.to_number(entry.get("value")), lb.to_number(entry.get("stderr"))
    if not math.isfinite(v):
        return ""
    if is_lower_bound(entry):
        return f"{'<' if entry.get('higher_is_better') else '>'} {v:.4g}"
    return f"{v:.4g} ± {1.96 * se:.2g}" if math.isfinite(se) else f"{v:.4g}"


def samples_section(page: Page, ds: str, runs: list[Run], host, metric: str | None = None) -> str:
    cells = []
    for run in runs:
        src = run.dir / run.record.get("artifacts", {}).get("samples_png", "samples.png")
        rel = f"img/samples/{run.run_id}.png"
        dest = page.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        caption = f"{run.label} (seed {run.record['seed']})"
        shown = value_text((run.record.get("metrics") or {}).get(metric)) if metric else ""
        if shown:
            caption += f": {metric} {shown}"
        if src.is_file():
            shutil.copyfile(src, dest)
        elif not _replot_samples(run, dest, host):
            cells.append(f'<figure class="missing"><figcaption>{e(caption)}: no samples.png or samples.npz'
                         "</figcaption></figure>")
            continue
        cells.append(f"<figure>{page.img(rel, 'samples of ' + run.label, 280)}"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    if not cells:
        return "<p>No finished run on this data set.</p>"
    return '<div class="grid">' + "".join(cells) + "</div>"


def _replot_samples(run: Run, dest: Path, host) -> bool:
    """samples.png from samples.npz (2-D: scatter over the target density where the data set is available)."""
    npz = run.dir / run.record.get("artifacts", {}).get("samples_npz", "samples.npz")
    if not npz.is_file():
        return False
    x = torch.as_tensor(np.load(npz)["samples"])
    from harness import plots
    from harness.records import atomic_write

    dataset = _dataset(host, run.record)
    if x.dim() == 2 and dataset is not None:
        fig = plots.scatter_figure(dataset, x.float())
    else:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100, layout="constrained")
        if x.dim() == 2:
            ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red")
        else:
            from torchvision.utils import make_grid

            grid = make_grid(x[:64], nrow=8, padding=1, pad_value=255).permute(1, 2, 0).numpy()
            ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray")
            ax.axis("off")
    atomic_write(dest, lambda f: fig.savefig(f, format="png"), mode="wb")
    _pyplot().close(fig)
    return True


def nfe_unit(record: dict[str, Any]) -> str:
    """What one NFE of this run costs: "fwd" (one network forward pass) or "fwd+bwd" (an energy model: a forward
    and a backward pass with respect to the input, score = −∇E), from the chain description or the timings."""
    desc = chain_description(record) or {}
    t = record.get("timings") or {}
    grads = [lb.to_number(desc.get("grad_evals_per_step")), lb.to_number(t.get("grad_evals_per_sample")),
             lb.to_number(record.get("grad_evals_per_sample"))]
    return "fwd+bwd" if any(math.isfinite(g) and g > 0 for g in grads) else "fwd"


NFE_AXIS = "NFE per sample (1 NFE = 1 forward pass; [fwd+bwd]: forward + input-gradient backward)"


@dataclass
class Point:
    """One method variant on a frontier plot: mean over its ok seeds."""

    label: str
    y: float
    yerr: float  # 95% half-width: over seeds (t), or 1.96 × the recorded standard error with one seed
    err_kind: str  # "ci" | "se" | ""
    train_seconds: float
    train_pflops: float
    nfe: float
    gflops: float
    unit: str
    bound: bool


def _mean(xs) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def quality_interval(values: list[float], stderrs: list[float]) -> tuple[float, float, str]:
    """(mean, 95% half-width, kind) as the leaderboard computes it (`leaderboard.combined_interval`): over seeds
    where there are several ("ci", never narrower than the evaluation's own standard error allows), else 1.96 × the
    recorded standard error of the one value ("se"), else NaN."""
    mean, half, _, k, _ = lb.combined_interval(values, stderrs)  # the leaderboard's interval, same formula
    if not math.isfinite(half):
        return mean, math.nan, ""
    return mean, half, "ci" if k >= 2 else "se"


def frontier_groups(ds: str, records: list[dict[str, Any]], runs: pd.DataFrame, values: pd.DataFrame,
                    metric: str | None) -> tuple[str | None, list[tuple[str, bool | None, list[Point]]]]:
    """(metric, [(title, higher_is_better, points)]) for the data set: one group per measurement protocol of the
    ranking metric (as the leaderboard splits its tables), one point per method variant."""
    vals = values[values["dataset"] == ds]
    sub = runs[runs["dataset"] == ds]
    chosen = metric if metric is not None and metric in set(vals["metric"]) else lb.choose_metric(vals)
    if chosen is None:
        return None, []
    mv = vals[vals["metric"] == chosen]
    keys = sorted(set(mv["protocol_key"]))
    diffs = lb.protocol_differences([json.loads(k) for k in keys]) if len(keys) > 1 else [{} for _ in keys]
    labels = lb.variant_labels(sub)
    by_id = {r["run_id"]: r for r in records}
    out = []
    for key, diff in zip(keys, diffs, strict=True):
        g = mv[mv["protocol_key"] == key]
        dirs = {bool(v) for v in g["higher_is_better"] if isinstance(v, bool)}
        hib = dirs.pop() if len(dirs) == 1 else None
        pts = []
        for (method, variant), gg in g.groupby(["method", "variant"], sort=True):
            recs = [by_id[i] for i in gg["run_id"] if i in by_id and by_id[i].get("status") == "ok"]
            if not recs:
                continue
            entries = [(r.get("metrics") or {}).get(chosen) or {} for r in recs]
            y, err, kind = quality_interval([lb.to_number(m.get("value")) for m in entries],
                                            [lb.to_number(m.get("stderr")) for m in entries])
            t = [r.get("timings") or {} for r in recs]
            pts.append(Point(
                labels[(method, variant)], y, err, kind, _mean([lb.to_number(x.get("train_seconds")) for x in t]),
                _mean([lb.to_number(x.get("train_pflops")) for x in t]),
                _mean([lb.to_number(r.get("nfe")) for r in recs]),
                _mean([lb.to_number(x.get("sample_gflops_per_sample")) for x in t]), nfe_unit(recs[0]),
                any(is_lower_bound(m) for m in entries)))
        arrow = {True: "higher is better", False: "lower is better"}.get(hib, "")
        title = f"{ds}: {chosen}" + (f" ({arrow})" if arrow else "") + (f" [{lb.describe(diff)}]" if diff else "")
        if pts:
            out.append((title, hib, pts))
    return chosen, out


def tradeoff_section(page: Page, ds: str, records: list[dict[str, Any]], runs: pd.DataFrame, values: pd.DataFrame,
                     metric: str | None) -> str:
    """Quality against training seconds, training PFLOPs, NFE per sample and sampling GFLOPs per sample (FLOPs where
    recorded), mean ±
    95% interval, Pareto front marked; bounds (open markers) never join the front."""
    chosen, groups = frontier_groups(ds, records, runs, values, metric)
    parts = []
    for i, (title, hib, pts) in enumerate(groups):
        axes_spec = [("train_seconds", "training time (s)")]
        if any(math.isfinite(p.train_pflops) for p in pts):  # hardware-independent training compute
            axes_spec.append(("train_pflops", "training PFLOPs"))
        axes_spec.append(("nfe", NFE_AXIS))
        if any(math.isfinite(p.gflops) for p in pts):
            axes_spec.append(("gflops", "sampling GFLOPs per sample"))
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(axes_spec), figsize=(5 * len(axes_spec), 4.2), dpi=100,
                                 layout="constrained", squeeze=False)
        for ax, (attr, xlabel) in zip(axes[0], axes_spec, strict=True):
            xs = [getattr(p, attr) for p in pts]
            front = pareto_front(xs, [math.nan if p.bound else p.y for p in pts], hib)
            for p, x, on in zip(pts, xs, front, strict=True):
                if not (math.isfinite(x) and math.isfinite(p.y)):
                    continue
                color = "tab:red" if on else "tab:blue"
                ax.errorbar([x], [p.y], yerr=p.yerr if math.isfinite(p.yerr) else None, fmt="*" if on else "o",
                            ms=13 if on else 7, color=color, mfc="none" if p.bound else color, capsize=3)
                text = p.label + (" [fwd+bwd]" if attr == "nfe" and p.unit == "fwd+bwd" else "")
                if p.bound:
                    text += f" ({'<' if hib else '>'} {p.y:.3g}, bound)"
                ax.annotate(text, (x, p.y), textcoords="offset points", xytext=(5, 5), fontsize=8)
            on_pts = sorted((x, p.y) for p, x, on in zip(pts, xs, front, strict=True) if on)
            if len(on_pts) > 1:
                ax.step([q[0] for q in on_pts], [q[1] for q in on_pts], where="post", color="tab:red", lw=1,
                        label="Pareto front")
                ax.legend(fontsize=8)
            finite = [x for x in xs if math.isfinite(x)]
            if finite and all(x > 0 for x in finite):
                ax.set_xscale("log")
            ax.set_xlabel(xlabel, fontsize=8 if attr == "nfe" else 10)
            ax.set_ylabel(f"{chosen} ({'higher' if hib else 'lower'} is better)")
            ax.grid(alpha=0.3)
        fig.suptitle(title, fontsize=9)
        rel = f"img/plots/{ds}_tradeoff_{i}.png"
        _save(fig, page.out / rel)
        kinds = {p.err_kind for p in pts}
        bars = ("95% t interval over seeds" if kinds == {"ci"} else "95% interval: over seeds where there are "
                "several, else ± 1.96 × the evaluation's standard error" if kinds - {""} else "no interval recorded")
        has = {a for a, _ in axes_spec}
        gflops = ("; GFLOPs: the sampler's floating-point work per sample as recorded" if "gflops" in has
                  else "; no sampling FLOPs recorded on this data set")
        if "train_pflops" in has:
            gflops += ("; PFLOPs: training's floating-point work (FlopCounterMode per step × steps), the same on "
                       "any hardware")
        parts.append(f"<figure>{page.img(rel, 'quality against time, NFE and FLOPs: ' + title, 300 * len(axes_spec))}"
                     f"<figcaption>{e(title)}: mean, bars {e(bars)}; stars on the red line are Pareto-optimal (no "
                     f"variant is both cheaper and better); open markers are bounds{e(gflops)}. One NFE is one "
                     "network evaluation: a forward pass, or for energy models ([fwd+bwd]) a forward and a "
                     "backward pass.</figcaption></figure>")
    return "\n".join(parts) or "<p>No metric values to plot on this data set.</p>"


def nfe_curve_section(page: Page, ds: str, records: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """One line per run: the `nfe_curve` metric's quality at each sampler length, against NFE per sample (recorded
    as ``<statistic>_at_<factor>x_sampler`` with protocol["metric"] = "nfe_curve"; older records: ``nfe_curve``)."""
    curves: dict[str, list[tuple[str, list[dict]]]] = {}
    for r in records:
        if r["dataset"] != ds or r["status"] != "ok":
            continue
        for name, m in sorted((r.get("metrics") or {}).items()):
            if not (isinstance(m, dict) and (name == "nfe_curve" or (m.get("protocol") or {}).get("metric")
                                             == "nfe_curve") and (m.get("details") or {}).get("curve")):
                continue
            stat = (m.get("protocol") or {}).get("statistic", "quality")
            label = labels.get(r["run_id"], r["method"]) + (" [fwd+bwd]" if nfe_unit(r) == "fwd+bwd" else "")
            curves.setdefault(stat, []).append((label, m["details"]["curve"]))
    if not curves:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, (stat, lines) in zip(axes[0], sorted(curves.items()), strict=True):
        for label, curve in sorted(lines, key=lambda x: x[0]):
            pts = sorted((lb.to_number(c.get("nfe")), lb.to_number(c.get("value")), lb.to_number(c.get("stderr")))
                         for c in curve)
            err = [1.96 * p[2] if math.isfinite(p[2]) else 0.0 for p in pts]
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err if any(err) else None, fmt="o-", ms=4,
                        capsize=2, label=label)
        ax.set_xscale("log")
        ax.set_xlabel(NFE_AXIS, fontsize=8)
        ax.set_ylabel(f"{stat} (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    rel = f"img/plots/{ds}_nfe_curves.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'quality against NFE per sampler length: ' + ds, 700)}<figcaption>each "
            "run's sampler rerun at fractions of its length (metric nfe_curve), ± 1.96 standard errors where "
            "recorded; the rightmost point is the run's own samples</figcaption></figure>")


def throughput_section(page: Page, ds: str, records: list[dict[str, Any]], labels: dict[str, str]) -> str:
    keys = (("steps_per_second", "training steps/s"), ("samples_per_second", "sampling samples/s"),
            ("nfe_per_second", "network evaluations/s"))
    per: dict[str, dict[str, list[float]]] = {}
    for r in records:
        if r["dataset"] != ds or r["status"] != "ok":
            continue
        t = r.get("timings") or {}
        for k, _ in keys:
            v = lb.to_number(t.get(k))
            if math.isfinite(v):
                per.setdefault(labels[r["run_id"]], {}).setdefault(k, []).append(v)
    if not per:
        return "<p>No timings recorded on this data set.</p>"
    from matplotlib.ticker import MaxNLocator

    names = sorted(per)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.5 * len(names) + 1.5), dpi=100, layout="constrained")
    for ax, (k, title) in zip(axes, keys, strict=True):
        vals = [float(np.mean(per[n].get(k, [np.nan]))) for n in names]
        ax.barh(range(len(names)), vals, color="tab:green")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    rel = f"img/plots/{ds}_throughput.png"
    _save(fig, page.out / rel)
    hw = sorted({(r.get("hardware") or {}).get("gpu") or (r.get("hardware") or {}).get("cpu") or "?"
                 for r in records if r["dataset"] == ds})
    return (f"<figure>{page.img(rel, 'throughput on ' + ds, 900)}<figcaption>mean over ok runs; warm-up steps "
            f"excluded; measured on {e(', '.join(hw))} (see Environment)</figcaption></figure>")


def environment_section(records: list[dict[str, Any]]) -> str:
    groups: dict[str, dict[str, Any]] = {}
    for r in records:
        env = {"versions": r.get("versions"), "hardware": r.get("hardware"), "git": r.get("git"),
               "device": r.get("device")}
        key = lb.canonical(env)
        groups.setdefault(key, {"env": env, "runs": []})["runs"].append(r["run_id"])
    if not groups:
        return "<p>No records.</p>"
    out = []
    for i, key in enumerate(sorted(groups), 1):
        env, run_ids = groups[key]["env"], sorted(groups[key]["runs"])
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(_brief(v))}</td></tr>"
                       for k, v in sorted(lb.flatten({k: v for k, v in env.items() if v is not None}).items()))
        listed = ", ".join(run_ids[:20]) + (f" and {len(run_ids) - 20} more" if len(run_ids) > 20 else "")
        out.append(f'<h3>Environment {i} ({len(run_ids)} runs)</h3><table class="env">{rows}</table>'
                   f'<p class="runs">{e(listed)}</p>')
    return "\n".join(out)


def _fmt(v: float) -> str:
    return format(v, ".4g") if math.isfinite(v) else ""


def _brief(v: Any) -> str:
    return v if isinstance(v, str) else lb.canonical(v)


# chains ------------------------------------------------------------------------------------------------------

CHAIN_FILE = "chain.npz"


@dataclass
class ChainData:
    """What the mixing plots need, as the mixing metric writes it to ``<run>/chain.npz`` (or a re-run makes it).

    trace [C, K', S]: statistics of the chain's own state (no network evaluation), one row every `trace_every`
    recorded steps; acf [S, L+1]: chain-averaged autocorrelation of each statistic at lags 0..L in recorded steps;
    labels [C, R]: mode labels at the paid readouts, `label_every` walk steps apart (None without a labeler);
    readouts [R', *shape]: readouts of chain 0, `readout_every` walk steps apart (None: none kept)."""

    label: str
    trace: np.ndarray
    names: list[str]
    acf: np.ndarray
    trace_every: int = 1
    labels: np.ndarray | None = None
    label_every: int = 1
    readouts: np.ndarray | None = None
    readout_every: int = 0
    nfe_per_step: float = math.nan
    readout_nfe: float = math.nan
    source: str = "recorded"


def chain_file(run: Run) -> Path:
    """``<run>/chain.npz`` (record["artifacts"] maps the file name to its description)."""
    return run.dir / CHAIN_FILE


def load_chain(run: Run) -> ChainData | str:
    """The run's recorded chain.npz as ChainData, or why it cannot be used."""
    path = chain_file(run)
    if not path.is_file():
        return f"no {CHAIN_FILE} in {run.dir.name}"
    try:
        with np.load(path, allow_pickle=False) as z:
            f = {k: z[k] for k in z.files}
        trace = np.asarray(f["trace"], dtype=np.float64)
        if trace.ndim != 3:
            raise ValueError(f"trace has shape {trace.shape}, expected [chains, rows, statistics]")
        acf = np.asarray(f["acf"], dtype=np.float64) if "acf" in f else np.stack(
            [mean_acf(trace[:, :, j], trace.shape[1] - 1) for j in range(trace.shape[2])])
        names = [str(n) for n in f["names"]] if "names" in f else [f"s{j}" for j in range(trace.shape[2])]
        readout_every = int(f.get("readout_every", 0))
        readouts = f.get("readouts")
        return ChainData(
            run.label, trace, names, acf, trace_every=int(f.get("trace_every", 1)),
            labels=np.asarray(f["labels"]) if "labels" in f else None, label_every=int(f.get("label_every", 1)),
            readouts=readouts if readouts is not None and readout_every > 0 and len(readouts) else None,
            readout_every=readout_every, nfe_per_step=float(f.get("nfe_per_step", math.nan)),
            readout_nfe=float(f.get("readout_nfe", math.nan)), source=f"recorded {CHAIN_FILE}")
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"unreadable {path.name} ({type(exc).__name__}: {exc})"


def chain_description(record: dict[str, Any]) -> dict[str, Any] | None:
    """The chain's describe() as the record holds it (the mixing metric's details), or None."""
    if isinstance(record.get("chain"), dict):
        return record["chain"]
    for m in (record.get("metrics") or {}).values():
        d = m.get("details") if isinstance(m, dict) else None
        if isinstance(d, dict) and isinstance(d.get("chain"), dict):
            return d["chain"]
    return None


def has_stationary_chain(record: dict[str, Any]) -> bool:
    """Whether the record says its method has a stationary chain: a chain description with stationary = true (the
    mixing metric ran), or a recorded chain.npz. Records that say nothing (sde, runs without the mixing metric) do
    not, so their chains are never re-run."""
    desc = chain_description(record)
    return bool(desc and desc.get("stationary")) or CHAIN_FILE in (record.get("artifacts") or {})


def _dataset(host, rec: dict[str, Any]):
    try:
        from harness.config import Job, SuiteConfig, build_dataclass
        from harness.runner import load_dataset

        suite = build_dataclass(SuiteConfig, rec["config"].get("suite") or {}, "suite")
        return load_dataset(host, Job(rec["method"], rec["dataset"], rec["seed"], suite, None, None, {}, {}, {}))
    except Exception:  # noqa: BLE001 - the page says what is missing instead
        return None


def rebuild_model(host, rec: dict[str, Any], run_dir: Path):
    """(dataset, method, EMA model on CPU) of a finished run, from its resolved config and checkpoint."""
    from harness.config import EvalConfig, Job, SuiteConfig, TrainConfig, build_dataclass
    from harness.runner import CHECKPOINT, build_components

    cfg = rec["config"]
    backbone = dict(cfg.get("backbone") or {})
    bname = backbone.pop("name", None)
    job = Job(rec["method"], rec["dataset"], int(rec["seed"]),
              build_dataclass(SuiteConfig, cfg.get("suite") or {}, "suite"),
              build_dataclass(TrainConfig, cfg.get("train") or {}, "train"),
              build_dataclass(EvalConfig, cfg.get("eval") or {}, "eval"),
              dict(cfg.get("method") or {}), {bname: backbone} if bname else {}, dict(cfg.get("metrics") or {}))
    comp = build_components(host, job, torch.device("cpu"))
    ckpt = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    comp.model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    comp.model.eval()
    return comp.dataset, comp.method, comp.model


@torch.no_grad()
def rerun_chain(host, run: Run, steps: int, seed: int = 0) -> ChainData | str:
    """Run CHAINS chains of a stationary method for steps/2 burn-in + `steps` recorded steps (as the mixing metric
    does: statistics of the chain's own state every step; readouts, and their mode labels, only every
    `readout_every` steps, the method's protocol, else every steps/STRIP_FRAMES); or why not."""
    from harness.metrics.mixing import coordinate_statistics, projection_statistics

    if not (run.dir / "checkpoint.pt").is_file():
        return "no checkpoint"
    try:
        dataset, method, model = rebuild_model(host, run.record, run.dir)
    except Exception as exc:  # noqa: BLE001 - a missing plugin or data set: say so on the page
        return f"cannot rebuild the model ({type(exc).__name__}: {exc})"
    chain = method.chain(model)
    if chain is None or not chain.stationary:
        return "no stationary chain"
    dim = dataset.spec.dim
    stats = coordinate_statistics(dim) if dim <= 2 else projection_statistics(dim, 2)
    target = dataset.target
    labeler = target.component if target is not None and getattr(target, "modes", None) is not None else None
    every = int(getattr(chain, "readout_every", None) or max(1, steps // STRIP_FRAMES))
    g = torch.Generator().manual_seed(seed)
    state = chain.init(CHAINS, g)
    for _ in range(steps // 2):
        state = chain.step(state, g)
    trace, labels, frames = [], [], []
    for k in range(steps):
        state = chain.step(state, g)
        trace.append(stats(chain.trace(state).detach().float().cpu()).numpy())
        if k % every == every - 1 and (labeler is not None or dataset.kind == "image"):
            x = chain.readout(state).detach().float().cpu()
            if labeler is not None:
                labels.append(labeler(x).numpy())
            if dataset.kind == "image":
                frames.append(x[0].numpy())
    tr = np.stack(trace, axis=1)
    lag = min(ACF_MAX_LAG, steps - 1)
    acf = np.stack([mean_acf(tr[:, :, j], lag) for j in range(tr.shape[2])])
    return ChainData(run.label, tr, stats.names, acf, labels=np.stack(labels, axis=1) if labels else None,
                     label_every=every, readouts=np.stack(frames) if frames else None,
                     readout_every=every if frames else 0,
                     nfe_per_step=float(chain.nfe_per_step), readout_nfe=float(getattr(chain, "readout_nfe", 0)),
                     source=f"re-run from the checkpoint: {CHAINS} chains, {steps // 2} burn-in + {steps} steps, "
                            "seed 0")


def choose_chain(host, run: Run, steps: int, log: Callable[[str], None]) -> ChainData | str | None:
    """The chain data of one run: re-run from its checkpoint when asked (steps > 0) and the record says it has a
    stationary chain, else the recorded chain.npz; a string says what is missing; None: the run has no chain."""
    stationary = has_stationary_chain(run.record)
    recorded = load_chain(run)
    if not stationary and isinstance(recorded, str):
        return None
    why_not_rerun = None
    if steps > 0 and stationary:
        if (run.dir / "checkpoint.pt").is_file():
            log(f"  re-running the chain of {run.label} ({steps} steps)")
            res = rerun_chain(host, run, steps)
            if not isinstance(res, str):
                return res
            why_not_rerun = f"re-run failed: {res}"
        else:
            why_not_rerun = "no checkpoint to re-run"
    if not isinstance(recorded, str):
        return recorded
    if why_not_rerun:
        return f"{recorded}; {why_not_rerun}"
    has_ckpt = (run.dir / "checkpoint.pt").is_file()
    return (f"{recorded} and no checkpoint (rerun the job with the mixing metric to record one)" if not has_ckpt
            else f"{recorded} (pass --chain-steps N to re-run the chain from its checkpoint)")


def chains_section(page: Page, ds: str, runs: list[Run], host, steps: int, log: Callable[[str], None],
                   records: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> str:
    done, missing, chainless = [], [], []
    for run in runs:
        res = choose_chain(host, run, steps, log)
        if res is None:
            chainless.append(run.label)
        elif isinstance(res, str):
            missing.append(f"{run.label}: {res}")
        else:
            done.append(res)
    parts = []
    if done:
        parts.append(_acf_and_traces(page, ds, done))
        if any(c.labels is not None for c in done):
            parts.append(_mode_labels(page, ds, [c for c in done if c.labels is not None]))
        if any(c.readouts is not None and c.readouts.ndim >= 3 for c in done):
            parts.append(_strips(page, ds, [c for c in done if c.readouts is not None and c.readouts.ndim >= 3]))
    elif missing:
        parts.append("<p>No autocorrelation or trace data: neither a recorded chain.npz nor a re-run chain for any "
                     "method with a stationary chain on this data set.</p>")
    else:
        parts.append("<p>No method on this data set records a stationary chain.</p>")
    if records is not None and labels is not None:
        parts.append(mixing_summary_section(page, ds, records, labels))
    if missing:
        parts.append('<p class="note">Missing chain data: ' + e("; ".join(missing)) + "</p>")
    if chainless:
        parts.append('<p class="note">No stationary chain (reverse-time or annealed samplers, or no mixing metric '
                     "recorded): " + e(", ".join(chainless)) + "</p>")
    return "\n".join(p for p in parts if p)


def _acf_and_traces(page: Page, ds: str, chains: list[ChainData]) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100, layout="constrained")
    for c in chains:
        rho = c.acf[0][: ACF_MAX_LAG + 1]
        axes[0].plot(np.arange(len(rho)), rho, label=c.label)
        axes[1].plot(np.arange(c.trace.shape[1]) * c.trace_every, c.trace[0, :, 0], lw=0.6, label=c.label)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set(xlabel="lag (chain steps)", ylabel=f"autocorrelation of {chains[0].names[0]}",
                title="mean over chains after burn-in")
    axes[1].set(xlabel="step after burn-in", ylabel=chains[0].names[0], title="trace of chain 0")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    rel = f"img/plots/{ds}_acf_traces.png"
    _save(fig, page.out / rel)
    what = "a coordinate" if chains[0].names[0].startswith("x") else "a fixed random projection"
    sources = "; ".join(sorted({f"{c.label}: {c.source}" for c in chains}))
    return (f"<figure>{page.img(rel, 'autocorrelation and traces on ' + ds, 900)}<figcaption>statistic "
            f"{e(chains[0].names[0])} ({what}) of each chain's own state (walk-jump: the mean measurement ȳ; "
            f"Langevin: x), no readout. Data: {e(sources)}</figcaption></figure>")


def _mode_labels(page: Page, ds: str, chains: list[ChainData]) -> str:
    """Mode labels of chain 0 at the paid readouts (walk-jump: its jumps every k walk steps, the papers' long-chain
    protocol, Saremi & Hyvärinen 2019 §4), against walk steps."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(chains), 1, figsize=(10, 1.2 * len(chains) + 0.8), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, c in zip(axes[:, 0], chains, strict=True):
        lab = c.labels[0]
        hops = int((lab[1:] != lab[:-1]).sum())
        steps = (np.arange(len(lab)) + 1) * c.label_every
        ax.step(steps, lab, where="post", lw=0.8)
        ax.set_ylabel("mode", fontsize=8)
        ax.set_title(f"{c.label}: {hops} mode changes in {len(lab)} labels, one every {c.label_every} walk steps "
                     f"({len(lab) * c.label_every} steps, chain 0)", fontsize=8)
    axes[-1, 0].set_xlabel("walk steps after burn-in")
    rel = f"img/plots/{ds}_mode_hopping.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'mode hopping on ' + ds, 900)}<figcaption>label (mixture component or "
            "predicted class) along one long chain, at its paid readouts where it has them (walk-jump: a jump every "
            "k walk steps, the papers' long-chain protocol), else of its own state; the x axis counts walk steps"
            "</figcaption></figure>")


def _strips(page: Page, ds: str, chains: list[ChainData]) -> str:
    from torchvision.utils import make_grid

    plt = _pyplot()
    fig, axes = plt.subplots(len(chains), 1, figsize=(10, 0.9 * len(chains) + 0.6), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, c in zip(axes[:, 0], chains, strict=True):
        x = torch.as_tensor(np.asarray(c.readouts, dtype=np.float32))
        if len(x) > STRIP_FRAMES:
            x = x[np.linspace(0, len(x) - 1, STRIP_FRAMES).round().astype(int)]
        imgs = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if imgs.dim() == 3:
            imgs = imgs.unsqueeze(1)
        grid = make_grid(imgs, nrow=len(imgs), padding=1, pad_value=255).permute(1, 2, 0).numpy()
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
        ax.set_axis_off()
        steps = c.trace.shape[1] * c.trace_every
        ax.set_title(f"{c.label}: {len(imgs)} readouts evenly spaced over {steps} walk steps (the chain pays one "
                     f"every {c.readout_every} steps; {steps // c.readout_every} in all)", fontsize=8)
    rel = f"img/plots/{ds}_chain_strip.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'read-outs along one chain on ' + ds, 900)}<figcaption>mode hopping: the "
            "readouts (walk-jump: the jumps) of one long chain, left to right, evenly spaced</figcaption></figure>")


MIXING_PLOTTED = (("iat", "τ, integrated autocorrelation time (chain steps)"),
                  ("ess_per_1k_nfe", "ESS per 1,000 chain-step NFE"))


def is_lower_bound(entry: dict[str, Any]) -> bool:
    """A mixing value from a chain shorter than 50 τ is a bound, not an estimate: the record's lower_bound flag
    (records before it: details.reliable = false of τ)."""
    if entry.get("lower_bound"):
        return True
    d = entry.get("details")
    return isinstance(d, dict) and d.get("reliable") is False


def mixing_summary_section(page: Page, ds: str, records: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """τ and ESS per 1k NFE per run: filled markers for estimates, open markers labelled "> τ" (or "< ESS") for
    bounds from chains shorter than 50 τ (Sokal 1997; emcee's rule)."""
    pts: dict[str, list[tuple[str, float, bool]]] = {}
    for r in records:
        if r["dataset"] != ds or r["status"] != "ok":
            continue
        for key, _ in MIXING_PLOTTED:
            m = (r.get("metrics") or {}).get(key)
            v = lb.to_number(m.get("value")) if isinstance(m, dict) else math.nan
            if math.isfinite(v) and v > 0:
                iat = (r.get("metrics") or {}).get("iat") or {}
                bound = is_lower_bound(m) or (key != "iat" and is_lower_bound(iat))
                pts.setdefault(key, []).append((labels.get(r["run_id"], r["method"]), v, bound))
    if not pts:
        return ""
    plt = _pyplot()
    keys = [(k, t) for k, t in MIXING_PLOTTED if k in pts]
    n = max(len(v) for v in pts.values())
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 0.45 * n + 1.6), dpi=100,
                             layout="constrained", squeeze=False)
    for ax, (key, title) in zip(axes[0], keys, strict=True):
        rows = sorted(pts[key])
        for i, (_label, v, bound) in enumerate(rows):
            ax.plot([v], [i], "o", ms=8, color="tab:purple", mfc="none" if bound else "tab:purple")
            text = (f"> {v:.4g}" if key == "iat" else f"< {v:.4g}") if bound else f"{v:.4g}"
            ax.annotate(text, (v, i), textcoords="offset points", xytext=(7, -3), fontsize=8)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    rel = f"img/plots/{ds}_mixing_summary.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'mixing summary on ' + ds, 800)}<figcaption>filled: estimate; open, "
            "labelled \"&gt; τ\" / \"&lt; ESS\": a bound, the chain ran fewer than 50 τ (τ is at least, ESS at "
            "most, the value shown); bounds are never ranked</figcaption></figure>")


# metric validity ---------------------------------------------------------------------------------------------

VALIDITY_FILE = "validity.json"


def load_validity(results: Path) -> list[dict[str, Any]] | str | None:
    """The entries of ``<results>/validity.json`` (schema 1), a string saying why it cannot be read, or None when
    there is no such file."""
    path = Path(results) / VALIDITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("results"), list):
            return f"{path}: expected {{\"schema\": 1, \"results\": [...]}}, got schema {data.get('schema')!r}"
        return [r for r in data["results"] if isinstance(r, dict)]
    except (OSError, ValueError, AttributeError) as exc:
        return f"{path}: unreadable ({type(exc).__name__}: {exc})"


def validity_section(page: Page, results: Path) -> str | None:
    """Per data set and feature extractor: whether the metric rose monotonically with every disturbance and left
    the real-vs-real floor at the mildest level (Heusel et al. 2017, Fig. 1), and value against strength."""
    entries = load_validity(results)
    if entries is None:
        return None
    if isinstance(entries, str):
        return f'<p class="note">{e(entries)}</p>'
    if not entries:
        return "<p>validity.json lists no results.</p>"
    rows, figs = [], []
    for i, r in enumerate(sorted(entries, key=lambda r: (str(r.get("dataset")), str(r.get("extractor"))))):
        dist = r.get("disturbances") or {}
        bad = sorted(k for k, d in dist.items() if isinstance(d, dict) and not d.get("monotone", False))
        verdict = "passed" if r.get("passed") else "FAILED"
        name = f"{r.get('dataset')} / {r.get('extractor')}"
        rows.append(f'<tr class="{"ranked" if r.get("passed") else "unranked"}"><td>{e(str(r.get("dataset")))}</td>'
                    f"<td>{e(str(r.get('extractor')))}</td><td>{e(str(r.get('extractor_version', '')))}</td>"
                    f"<td>{e(str(r.get('n', '')))}</td><td>{e(_fmt(lb.to_number(r.get('floor'))))}</td>"
                    f"<td>{verdict}</td><td>{e(', '.join(bad) or '—')}</td></tr>")
        if dist:
            rel = _validity_plot(page, i, name, r, dist)
            figs.append(f"<figure>{page.img(rel, 'metric validity: ' + name, 180 * min(len(dist), 5))}"
                        f"<figcaption>{e(name)}: {verdict}</figcaption></figure>")
    head = "".join(f"<th>{h}</th>" for h in ("data set", "extractor", "version", "n", "floor (real vs real)",
                                              "result", "not monotone"))
    return ("<p>Real test images under increasing disturbance (Heusel et al. 2017, Fig. 1): a valid metric rises "
            "monotonically with each disturbance's strength and stays at the real-vs-real floor at the mildest. "
            f"From {e(VALIDITY_FILE)} in the results folder.</p>"
            f'<table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            + '<div class="grid">' + "".join(figs) + "</div>")


def _validity_plot(page: Page, i: int, name: str, r: dict[str, Any], dist: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(dist), figsize=(2.2 * len(dist), 2.2), dpi=100, layout="constrained",
                             squeeze=False)
    floor = lb.to_number(r.get("floor"))
    for ax, (k, d) in zip(axes[0], sorted(dist.items()), strict=True):
        xs = [lb.to_number(x) for x in (d.get("levels") or [])]
        ys = [lb.to_number(y) for y in (d.get("values") or [])]
        ok = bool(d.get("monotone"))
        ax.plot(xs[: len(ys)], ys[: len(xs)], "o-", ms=3, color="tab:green" if ok else "tab:red")
        if math.isfinite(floor):
            ax.axhline(floor, color="k", lw=0.6, ls="--")
        ax.set_title(f"{k} ({'monotone' if ok else 'NOT monotone'})", fontsize=7)
        ax.set_xlabel("strength", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("metric value", fontsize=7)
    fig.suptitle(name + " (dashed: floor)", fontsize=8)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    rel = f"img/validity/{i}_{safe}.png"
    _save(fig, page.out / rel)
    return rel


def _save(fig, path: Path) -> None:
    from harness.records import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}), mode="wb")
    _pyplot().close(fig)


# the sampler track --------------------------------------------------------------------------------------------

BIAS_METRICS = (("bias_evals", "method's protocol"), ("bias_evals_every_step", "readout every step"))


def bias_curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[str, list, list, bool]]]]:
    """data set -> method label -> [(curve name, evaluations, b², reached)] from the sampler track's ok records
    (the `bias` metric's details; the lowest seed per method)."""
    out: dict[str, dict[str, list]] = {}
    for r in sorted(records, key=lambda r: (r["dataset"], r["method"], r["seed"])):
        if r.get("status") != "ok":
            continue
        per = out.setdefault(r["dataset"], {})
        if r["method"] in per:
            continue
        curves = []
        for key, what in BIAS_METRICS:
            entry = (r.get("metrics") or {}).get(key)
            curve = ((entry or {}).get("details") or {}).get("curve")
            if curve:
                name = f"{what}: {(entry['protocol'] or {}).get('positions', '')}"
                curves.append((name, curve["evals"], curve["bias2"], not entry.get("lower_bound")))
        per[r["method"]] = curves
    return out


def samplers_section(page: Page, records: list[dict[str, Any]]) -> str:
    """One plot per target: squared bias b² (max over coordinates of E[x] and E[x²], normalised by the target's
    variance) of the pooled running estimate against the network evaluations spent over all chains, one line per
    method (dashed: the readout at every step), the 1% tolerance marked."""
    per = bias_curves(records)
    parts = ["<p>Each method's own sampler on its model of the exact target (no training): squared bias of the "
             "running estimates of E[x] and E[x²] (max over coordinates, normalised by the target's variance; "
             "harness.metrics.bias) against network evaluations over all chains. The dotted line is the 1% "
             "tolerance; methods without a stationary chain (annealed samplers) have no curve.</p>"]
    plt = _pyplot()
    drawn = 0
    for ds in sorted(per):
        methods = {m: c for m, c in per[ds].items() if c}
        if not methods:
            parts.append(f"<p>{e(ds)}: no stationary chain recorded a bias curve.</p>")
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=100, layout="constrained")
        for i, (m, curves) in enumerate(sorted(methods.items())):
            for j, (name, x, y, _) in enumerate(curves):
                pts = [(a, b) for a, b in zip(x, y, strict=True) if a and b is not None and a > 0 and b > 0]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=f"C{i}", ls="-" if j == 0 else "--", lw=1.3,
                            label=m if j == 0 else f"{m} ({name.split(': ', 1)[-1]})")
        ax.axhline(0.01, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations (all chains)")
        ax.set_ylabel("b² (max over coordinates)")
        ax.set_title(f"{ds}: bias against evaluations", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        rel = f"img/plots/{ds}_bias.png"
        _save(fig, page.out / rel)
        drawn += 1
        parts.append(f"<figure>{page.img(rel, 'bias against evaluations on ' + ds, 650)}<figcaption>{e(ds)}: "
                     "solid, the method's own protocol (walk-jump: a jump every k walk steps; Langevin chains: the "
                     "chain's position every step); dashed, the readout at every step</figcaption></figure>")
    return "\n".join(parts)


# the page ----------------------------------------------------------------------------------------------------

def _template() -> Template:
    from importlib import resources

    return Template(resources.files("harness").joinpath("templates", "report.html").read_text(encoding="utf-8"))


def build_report(results: Path, out: Path | None = None, *, metric: str | None = None, chain_steps: int = 0,
                 plugins_dir: str | None = None, log: Callable[[str], None] = print) -> tuple[Path, list[str]]:
    """Write ``<out>/index.html`` (default ``<results>/report``) and its images; returns (path, problems).

    Everything comes from the run folders (records, samples, chain.npz) and ``<results>/validity.json``; with
    `chain_steps` > 0 the chains of runs whose records say they have a stationary chain are re-run from their
    checkpoints for that many steps instead."""
    from harness.plugins import get_plugin_host

    results = Path(results)
    out = Path(out) if out is not None else results / "report"
    if (out / "img").is_dir():
        shutil.rmtree(out / "img")  # the report's own images only: stale pictures never survive a rebuild
    (out / "img").mkdir(parents=True, exist_ok=True)
    records, _ = iter_records(results)
    runs, values, _ = lb.load_runs(results)
    tables, problems = lb.build_tables(results, metric)
    host = get_plugin_host(plugins_dir)
    page = Page(out)
    counts = lb.status_summary(list(runs["status"])) if len(runs) else "no runs"
    page.sections.append(f'<p class="summary">{len(records)} run records under {e(str(results))}: {e(counts)}.'
                         + (f" {len(problems)} unreadable records skipped (listed below the leaderboards)."
                            if problems else "") + "</p>")
    page.section("leaderboards", "Leaderboards", lb.to_html_fragment(tables, problems, heading_level=3))
    validity = validity_section(page, results)
    if validity is not None:
        page.section("validity", "Metric validity", validity)
    oracle = [r for r in records if r.get("track") == lb.tables.ORACLE_TRACK]
    if oracle:
        page.section("samplers", "Samplers with exact scores", samplers_section(page, oracle))
    # the per-data-set sections show trained runs; the sampler track has its own section above
    records = [r for r in records if r.get("track") != lb.tables.ORACLE_TRACK]
    runs = runs[runs["track"] != lb.tables.ORACLE_TRACK]
    values = values[values["run_id"].isin(set(runs["run_id"]))]
    reps = representative_runs(records, runs)
    label_of = {}
    for ds in reps:
        sub = runs[runs["dataset"] == ds]
        labels = lb.variant_labels(sub)
        label_of.update({r.run_id: labels[(r.method, r.variant)] for r in sub.itertuples()})
    for ds, chosen in reps.items():
        log(f"report: {ds}")
        quality, _ = frontier_groups(ds, records, runs, values, metric)
        body = [f"<h3>Samples</h3>{samples_section(page, ds, chosen, host, quality)}",
                "<h3>Quality against training time, NFE and FLOPs</h3>"
                f"{tradeoff_section(page, ds, records, runs, values, metric)}"
                f"{nfe_curve_section(page, ds, records, label_of)}",
                "<h3>Mixing of stationary chains</h3>"
                f"{chains_section(page, ds, chosen, host, chain_steps, log, records, label_of)}",
                f"<h3>Throughput</h3>{throughput_section(page, ds, records, label_of)}"]
        page.section(f"ds-{ds}", f"Data set: {ds}", "\n".join(body))
    page.section("environment", "Environment and versions", environment_section(records))
    toc = "".join(f'<li><a href="#{e(a)}">{e(t)}</a></li>' for a, t in page.toc)
    text = _template().substitute(title="scorebench report", style=lb.HTML_STYLE, toc=toc,
                                  body="\n".join(page.sections))
    from harness.records import atomic_write

    index = out / "index.html"
    atomic_write(index, lambda f: f.write(text))
    return index, problems
