"""`scorebench report`: a static HTML page over the run records, ``<results>/report/index.html`` with its images in
``img/`` beside it. It needs no server and no internet: open the file in a browser.

Sections: the leaderboards (`harness.leaderboard`); per data set, the samples of every method variant (the run's
``samples.png``: an image grid, or for 2-D targets the samples over the target density), quality against training
time and against NFE with the Pareto front marked, the mixing of stationary chains (autocorrelation against lag,
traces, and mode hopping along one long chain: mixture labels for toy targets, the chain's read-out every k steps
for images), and throughput bars; finally the environments (versions, hardware, git) the numbers came from.

Records hold mixing summaries (τ, ESS, R̂) but not traces, so the chain plots come from re-running each stationary
method's chain from its checkpoint (EMA weights) for ``chain_steps`` steps with a fixed seed; with
``chain_steps = 0``, or where a checkpoint, plugin or data set is missing, the page says so instead.
"""

from __future__ import annotations

import html
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

def samples_section(page: Page, ds: str, runs: list[Run], host) -> str:
    cells = []
    for run in runs:
        src = run.dir / run.record.get("artifacts", {}).get("samples_png", "samples.png")
        rel = f"img/samples/{run.run_id}.png"
        dest = page.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        caption = f"{run.label} (seed {run.record['seed']})"
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


def tradeoff_section(page: Page, ds: str, tables: list[lb.Table], runs: pd.DataFrame) -> str:
    """Quality against training seconds and against NFE per variant (mean ± CI), Pareto front marked."""
    parts = []
    for i, t in enumerate(x for x in tables if x.dataset == ds):
        rows = [r for r in t.rows if not r.is_floor and r.value.n > 0]
        if t.metric is None or not rows:
            continue
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, layout="constrained")
        for ax, attr, xlabel in ((axes[0], "train_seconds", "training time (s)"), (axes[1], "nfe", "NFE per sample")):
            xs = [getattr(r, attr) for r in rows]
            ys = [r.value.mean for r in rows]
            front = pareto_front(xs, ys, t.higher_is_better)
            for r, x, y, on in zip(rows, xs, ys, front, strict=True):
                if not (math.isfinite(x) and math.isfinite(y)):
                    continue
                err = r.value.ci95 if math.isfinite(r.value.ci95) else None
                ax.errorbar([x], [y], yerr=err, fmt="o" if not on else "*", ms=7 if not on else 13,
                            color="tab:red" if on else "tab:blue", capsize=3)
                ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
            pts = sorted((x, y) for x, y, on in zip(xs, ys, front, strict=True) if on)
            if len(pts) > 1:
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="tab:red", lw=1,
                        label="Pareto front")
                ax.legend(fontsize=8)
            if all(x > 0 for x in xs if math.isfinite(x)) and any(math.isfinite(x) for x in xs):
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{t.metric} ({'higher' if t.higher_is_better else 'lower'} is better)")
            ax.grid(alpha=0.3)
        fig.suptitle(t.title, fontsize=9)
        rel = f"img/plots/{ds}_tradeoff_{i}.png"
        _save(fig, page.out / rel)
        parts.append(f"<figure>{page.img(rel, 'quality against time and NFE: ' + t.title, 900)}"
                     f"<figcaption>{e(t.title)}: mean ± 95% CI over seeds; stars on the red line are "
                     "Pareto-optimal (no variant is both cheaper and better)</figcaption></figure>")
    return "\n".join(parts) or "<p>No metric values to plot on this data set.</p>"


def nfe_curve_section(page: Page, ds: str, records: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """One line per run: the `nfe_curve` metric's quality at each sampler length, against NFE per sample."""
    curves: dict[str, list[tuple[str, list[dict]]]] = {}
    for r in records:
        m = (r.get("metrics") or {}).get("nfe_curve") if r["dataset"] == ds and r["status"] == "ok" else None
        if m and (m.get("details") or {}).get("curve"):
            stat = (m.get("protocol") or {}).get("statistic", "quality")
            curves.setdefault(stat, []).append((labels.get(r["run_id"], r["method"]), m["details"]["curve"]))
    if not curves:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, (stat, lines) in zip(axes[0], sorted(curves.items()), strict=True):
        for label, curve in sorted(lines, key=lambda x: x[0]):
            pts = sorted((c["nfe"], c["value"]) for c in curve)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("NFE per sample")
        ax.set_ylabel(f"{stat} (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    rel = f"img/plots/{ds}_nfe_curves.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'quality against NFE per sampler length: ' + ds, 700)}<figcaption>each "
            "run's sampler rerun at fractions of its length (metric nfe_curve); the rightmost point is the run's "
            "own samples</figcaption></figure>")


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


def _brief(v: Any) -> str:
    return v if isinstance(v, str) else lb.canonical(v)


# chains ------------------------------------------------------------------------------------------------------

@dataclass
class ChainRun:
    label: str
    trace: np.ndarray  # [chains, steps, S] statistics of the read-outs
    names: list[str]
    labels: np.ndarray | None  # [chains, steps] mode labels, where modes are known
    frames: torch.Tensor | None  # [STRIP_FRAMES, *shape] read-outs of chain 0 every k steps (images)
    every: int
    nfe_per_step: int


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
def rerun_chain(host, run: Run, steps: int, seed: int = 0) -> ChainRun | str:
    """Run CHAINS chains of a stationary method for steps/2 burn-in + `steps` recorded steps; or why not."""
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
    g = torch.Generator().manual_seed(seed)
    state = chain.init(CHAINS, g)
    for _ in range(steps // 2):
        state = chain.step(state, g)
    every = max(1, steps // STRIP_FRAMES)
    trace, labels, frames = [], [], []
    for k in range(steps):
        state = chain.step(state, g)
        x = chain.readout(state).detach().float().cpu()
        trace.append(stats(x).numpy())
        if labeler is not None:
            labels.append(labeler(x).numpy())
        if dataset.kind == "image" and k % every == every - 1 and len(frames) < STRIP_FRAMES:
            frames.append(x[0])
    return ChainRun(run.label, np.stack(trace, axis=1), stats.names, np.stack(labels, axis=1) if labels else None,
                    torch.stack(frames) if frames else None, every, int(chain.nfe_per_step))


def chains_section(page: Page, ds: str, runs: list[Run], host, steps: int, log: Callable[[str], None]) -> str:
    if steps <= 0:
        return "<p>Chain plots skipped (chain steps = 0).</p>"
    done, skipped = [], []
    for run in runs:
        log(f"  re-running the chain of {run.label} on {ds} ({steps} steps)")
        res = rerun_chain(host, run, steps)
        (skipped.append(f"{run.label}: {res}") if isinstance(res, str) else done.append(res))
    parts = []
    if done:
        parts.append(_acf_and_traces(page, ds, done, steps))
        if any(c.labels is not None for c in done):
            parts.append(_mode_labels(page, ds, [c for c in done if c.labels is not None]))
        if any(c.frames is not None for c in done):
            parts.append(_strips(page, ds, [c for c in done if c.frames is not None], host))
    else:
        parts.append("<p>No autocorrelation or trace data: no method on this data set has a stationary chain "
                     "that could be re-run from its checkpoint.</p>")
    if skipped:
        parts.append('<p class="note">Not shown: ' + e("; ".join(skipped)) + "</p>")
    return "\n".join(parts)


def _acf_and_traces(page: Page, ds: str, chains: list[ChainRun], steps: int) -> str:
    plt = _pyplot()
    lag = min(ACF_MAX_LAG, steps // 2)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100, layout="constrained")
    for c in chains:
        rho = mean_acf(c.trace[:, :, 0], lag)
        axes[0].plot(np.arange(len(rho)), rho, label=c.label)
        axes[1].plot(np.arange(c.trace.shape[1]), c.trace[0, :, 0], lw=0.6, label=c.label)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set(xlabel="lag (steps)", ylabel=f"autocorrelation of {chains[0].names[0]}",
                title=f"mean over {CHAINS} chains after burn-in")
    axes[1].set(xlabel="step after burn-in", ylabel=chains[0].names[0], title="trace of chain 0")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    rel = f"img/plots/{ds}_acf_traces.png"
    _save(fig, page.out / rel)
    what = "a coordinate" if chains[0].names[0].startswith("x") else "a fixed random projection"
    return (f"<figure>{page.img(rel, 'autocorrelation and traces on ' + ds, 900)}<figcaption>statistic "
            f"{e(chains[0].names[0])} of the read-out ({what}); {steps} steps after {steps // 2} burn-in, re-run "
            "from the checkpoints with seed 0</figcaption></figure>")


def _mode_labels(page: Page, ds: str, chains: list[ChainRun]) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(len(chains), 1, figsize=(10, 1.2 * len(chains) + 0.8), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, c in zip(axes[:, 0], chains, strict=True):
        hops = int((c.labels[0, 1:] != c.labels[0, :-1]).sum())
        ax.step(np.arange(c.labels.shape[1]), c.labels[0], where="post", lw=0.8)
        ax.set_ylabel("mode", fontsize=8)
        ax.set_title(f"{c.label}: {hops} mode changes in {c.labels.shape[1]} steps (chain 0)", fontsize=8)
    axes[-1, 0].set_xlabel("step after burn-in")
    rel = f"img/plots/{ds}_mode_hopping.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'mode hopping on ' + ds, 900)}<figcaption>most responsible mixture "
            "component of the read-out along one long chain</figcaption></figure>")


def _strips(page: Page, ds: str, chains: list[ChainRun], host) -> str:
    from torchvision.utils import make_grid

    plt = _pyplot()
    fig, axes = plt.subplots(len(chains), 1, figsize=(10, 0.9 * len(chains) + 0.6), dpi=100, layout="constrained",
                             squeeze=False)
    for ax, c in zip(axes[:, 0], chains, strict=True):
        imgs = ((c.frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        grid = make_grid(imgs, nrow=len(imgs), padding=1, pad_value=255).permute(1, 2, 0).numpy()
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{c.label}: read-out every {c.every} steps", fontsize=8)
    rel = f"img/plots/{ds}_chain_strip.png"
    _save(fig, page.out / rel)
    return (f"<figure>{page.img(rel, 'read-outs along one chain on ' + ds, 900)}<figcaption>mode hopping: the "
            "read-out (for walk-jump, the jump) of chain 0 every k steps</figcaption></figure>")


def _save(fig, path: Path) -> None:
    from harness.records import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}), mode="wb")
    _pyplot().close(fig)


# the page ----------------------------------------------------------------------------------------------------

def _template() -> Template:
    from importlib import resources

    return Template(resources.files("harness").joinpath("templates", "report.html").read_text(encoding="utf-8"))


def build_report(results: Path, out: Path | None = None, *, metric: str | None = None, chain_steps: int = 1000,
                 plugins_dir: str | None = None, log: Callable[[str], None] = print) -> tuple[Path, list[str]]:
    """Write ``<out>/index.html`` (default ``<results>/report``) and its images; returns (path, problems)."""
    from harness.plugins import get_plugin_host

    results = Path(results)
    out = Path(out) if out is not None else results / "report"
    if (out / "img").is_dir():
        shutil.rmtree(out / "img")  # the report's own images only: stale pictures never survive a rebuild
    (out / "img").mkdir(parents=True, exist_ok=True)
    records, _ = iter_records(results)
    runs, _, _ = lb.load_runs(results)
    tables, problems = lb.build_tables(results, metric)
    host = get_plugin_host(plugins_dir)
    page = Page(out)
    counts = lb.status_summary(list(runs["status"])) if len(runs) else "no runs"
    page.sections.append(f'<p class="summary">{len(records)} run records under {e(str(results))}: {e(counts)}.'
                         + (f" {len(problems)} unreadable records skipped (listed below the leaderboards)."
                            if problems else "") + "</p>")
    page.section("leaderboards", "Leaderboards", lb.to_html_fragment(tables, problems, heading_level=3))
    reps = representative_runs(records, runs)
    label_of = {}
    for ds in reps:
        sub = runs[runs["dataset"] == ds]
        labels = lb.variant_labels(sub)
        label_of.update({r.run_id: labels[(r.method, r.variant)] for r in sub.itertuples()})
    for ds, chosen in reps.items():
        log(f"report: {ds}")
        body = [f"<h3>Samples</h3>{samples_section(page, ds, chosen, host)}",
                f"<h3>Quality against training time and NFE</h3>{tradeoff_section(page, ds, tables, runs)}"
                f"{nfe_curve_section(page, ds, records, label_of)}",
                f"<h3>Mixing of stationary chains</h3>{chains_section(page, ds, chosen, host, chain_steps, log)}",
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
