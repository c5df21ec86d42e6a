"""Built-in metrics, registered like any plugin's.

Defaults (each overridable in ``[metrics.<name>]`` of the config):
- image quality: ``fid_cnn`` (FID/KID/precision/recall in the data set's own CNN classifier feature space; fast on
  CPU, on by default) and ``fid_inception`` (the standard Inception-v3 FID/KID/precision/recall, plus the
  Inception Score when full weights are present). ``fid_inception`` runs when named in ``eval.metrics``, when
  ``enabled = true``, or by default on CUDA; under ``"auto"`` on CPU it is skipped (it returns None), because
  Inception runs at a few images per second there. ``enabled = false`` turns it off everywhere.
- toy targets: MMD², energy distance and sliced Wasserstein (each with its real-vs-real floor at the same n),
  mode coverage and weight error (mixtures), Fisher divergence of the learned score (score capability), NLL.
- chains: mixing diagnostics on stationary chains (τ, ESS, R̂, rates, mode hopping).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.hookspecs import hookimpl
from harness.metrics import EvalContext, Metric, MetricValue
from harness.metrics import toy as T
from harness.metrics import uncertainty as U

MIXING_DEFAULTS = {  # per data kind: chains, burn-in, recorded steps, projections, superchains of nested R̂
    "vector": {"n_chains": 8, "burn_in": 500, "steps": 2000, "projections": 4, "superchains": 4},
    "image": {"n_chains": 4, "burn_in": 100, "steps": 400, "projections": 4, "superchains": 2},
}


def _opt(ctx: EvalContext, key: str, default: Any) -> Any:
    return ctx.options.get(key, default)


def _check_options(ctx: EvalContext, name: str, valid: dict[str, Any]) -> None:
    unknown = set(ctx.options) - set(valid)
    if unknown:
        raise ValueError(f"unknown [metrics.{name}] option(s) {sorted(unknown)}; valid: {sorted(valid)}")


def _subsample(ctx: EvalContext, default_max: int = 2000) -> torch.Tensor:
    """The first `max_n` samples (the order of samples is already random)."""
    return ctx.samples[: int(_opt(ctx, "max_n", default_max))]


def _mv(d: dict[str, Any]) -> MetricValue:
    return MetricValue(d["value"], d.get("higher_is_better"), d.get("floor"), d.get("protocol", {}),
                       d.get("details", {}), stderr=d.get("stderr"))


# toy targets -------------------------------------------------------------------------------------------------

U_STDERR = ("exact variance of the two-sample U-statistic, estimated without bias from the kernel matrices "
            "(first- and second-order parts each clamped at 0; harness.metrics.uncertainty); covers samples and "
            "reference draws")


def compute_mmd(ctx: EvalContext) -> MetricValue:
    x = _subsample(ctx)
    n, target = x.shape[0], ctx.dataset.target
    y, y2 = target.sample(n, ctx.generator), target.sample(n, ctx.generator)
    bw = T.bandwidths_from(y)
    value, stderr = T.mmd2_with_stderr(x, y, bw)
    floor, floor_stderr = T.mmd2_with_stderr(y2, y, bw)
    return MetricValue(value, floor=floor, stderr=stderr,
                       protocol={"n": n, "kernel": "sum of Gaussians", "bandwidth_factors": list(T.BANDWIDTH_FACTORS),
                                 "bandwidth_rule": "factor × median pairwise distance of the reference sample",
                                 "stderr": U_STDERR},
                       details={"bandwidths": list(bw), "floor_stderr": floor_stderr})


def compute_energy(ctx: EvalContext) -> MetricValue:
    x = _subsample(ctx)
    stderrs = []

    def stat(a, b):
        stderrs.append(T.energy_distance_stderr(a, b))
        return T.energy_distance(a, b)

    value, floor = T.two_sample_with_floor(stat, x, ctx.dataset.target, ctx.generator)
    return MetricValue(value, floor=floor, stderr=stderrs[0],
                       protocol={"n": x.shape[0], "stderr": U_STDERR + " (kernel −‖a − b‖)"},
                       details={"floor_stderr": stderrs[1]})


def compute_sliced(ctx: EvalContext) -> MetricValue:
    x = _subsample(ctx)
    k = int(_opt(ctx, "n_projections", 256))

    def sw(a, b):
        return T.sliced_wasserstein(a, b, generator=ctx.generator, n_projections=k)

    pairs = []

    def keep(a, b):
        pairs.append((a, b))
        return sw(a, b)

    value, floor = T.two_sample_with_floor(keep, x, ctx.dataset.target, ctx.generator)
    b = int(_opt(ctx, "bootstrap", 20))  # 20 replicates: ~16% relative precision of the stderr, ~1.5 s at n 2000
    stderr, floor_stderr = (T.sliced_wasserstein_stderr(a, c, generator=ctx.generator, n_projections=k, replicates=b)
                            for a, c in pairs)
    return MetricValue(value, floor=floor, stderr=stderr,
                       protocol={"n": x.shape[0], "p": 2, "n_projections": k,
                                 "stderr": f"bootstrap, {b} replicates resampling samples and reference draws and "
                                           "redrawing the directions"},
                       details={"floor_stderr": floor_stderr})


def compute_modes(ctx: EvalContext) -> dict[str, MetricValue] | None:
    target = ctx.dataset.target
    if not T.is_mixture(target):
        return None  # no known modes (e.g. the banana)
    x = ctx.samples
    got = T.mode_coverage(x, target)
    xr = target.sample(x.shape[0], ctx.generator)
    real = T.mode_coverage(xr, target)
    se, se_real = T.mode_coverage_stderr(x, target, ctx.generator), T.mode_coverage_stderr(xr, target, ctx.generator)
    protocol = {"n": x.shape[0], "covered_if_count_at_least": f"{T.COVERAGE_FRACTION} × n × w_k",
                "counted_within": f"{T.COVERAGE_QUANTILE} quantile radius σ_k·sqrt(χ²_d)",
                "stderr": f"bootstrap over samples (multinomial), {U.REPLICATES} replicates"}
    details = {k: got[k] for k in ("modes_covered", "modes", "counts", "fractions")}
    return {
        "mode_coverage": MetricValue(got["coverage"], True, real["coverage"], protocol,
                                     {**details, "floor_stderr": se_real["coverage"]}, stderr=se["coverage"]),
        "mode_weight_error": MetricValue(got["weight_error"], False, real["weight_error"], protocol,
                                         {"measure": "total variation of assignment fractions vs weights",
                                          "floor_stderr": se_real["weight_error"]}, stderr=se["weight_error"]),
    }


def compute_fisher(ctx: EvalContext) -> MetricValue:
    n = int(_opt(ctx, "n", 2000))
    res = T.fisher_divergence(ctx.score_fn, ctx.dataset.target, ctx.score_sigma, n, ctx.generator, ctx.device)
    return MetricValue(res["fisher"], stderr=res["stderr"],
                       protocol={"n": n, "sigma": ctx.score_sigma, "points": "exact samples of the target smoothed at "
                                 "sigma", "stderr": "standard error of the mean over the n points"},
                       details={"relative": res["relative"]})


def compute_nll(ctx: EvalContext) -> MetricValue:
    x, _ = ctx.dataset.split("test")
    n = min(x.shape[0], int(_opt(ctx, "n", 2000 if ctx.spec.kind == "vector" else 256)))
    x = x[:n]
    nll, stderr = T.nll_with_stderr(ctx.log_likelihood, x, int(_opt(ctx, "batch", 512)))
    target = ctx.dataset.target
    floor, floor_stderr = T.nll_with_stderr(target.log_prob, x) if target is not None else (None, None)
    protocol = {"n": n, "split": "test (first n)",
                "stderr": "standard error of the mean over the n test points (each with its own trace probe where "
                          "the likelihood is a Hutchinson estimate, so probe variance is included)"}
    if ctx.spec.kind == "vector":
        return MetricValue(nll, floor=floor, protocol=protocol, stderr=stderr,
                           details={"unit": "nats per example, model space", "floor_stderr": floor_stderr})
    # images: the method returns log P of the 8-bit image (a uniform-dequantisation bound), so bits/dim follows
    unit = "nats per 8-bit image (uniform dequantisation bound)"
    per_dim = ctx.spec.dim * math.log(2)
    return {"nll": MetricValue(nll, protocol=protocol, details={"unit": unit}, stderr=stderr),
            "bits_per_dim": MetricValue(nll / per_dim, False, protocol=protocol, stderr=stderr / per_dim,
                                        details={"unit": "bits per dimension of the 8-bit image"})}


# images ------------------------------------------------------------------------------------------------------

def _fid_options(metric: str, options: dict[str, Any]) -> dict[str, Any]:
    from harness.metrics import fid

    return fid.fid_options(metric, {k: v for k, v in options.items() if k in ("n", "reference", "batch_size")})


def _has_labels(ctx: EvalContext) -> bool:
    return ctx.dataset.split("train")[1] is not None


def compute_fid_cnn(ctx: EvalContext) -> dict[str, MetricValue] | None:
    from harness.metrics import fid

    opts = fid.fid_options("fid_cnn", ctx.options)  # n, reference ("test" | "train"), batch_size
    if not _has_labels(ctx) and not ctx.requested:
        return None  # no labels, no classifier: nothing to compute under "auto"
    space = fid.cnn_space(ctx.dataset)
    out = fid.image_fidelity(ctx.dataset, ctx.samples, space, cache_root=ctx.cache_dir / "fidelity",
                             cuda=ctx.device.type == "cuda", generator=ctx.generator, **opts)
    return {k: _mv(v) for k, v in out.items()}


def inception_enabled(ctx: EvalContext) -> bool:
    """``enabled`` option: true / false / "auto" (default: on when requested by name or on CUDA)."""
    enabled = _opt(ctx, "enabled", "auto")
    if enabled == "auto":
        return ctx.requested or ctx.device.type == "cuda"
    return bool(enabled)


def compute_fid_inception(ctx: EvalContext) -> dict[str, MetricValue] | None:
    from harness.metrics import fid

    opts = fid.fid_options("fid_inception", ctx.options)  # n, reference ("test" | "train"), batch_size
    if not inception_enabled(ctx):
        return None
    space = fid.inception_space()
    out = {k: _mv(v) for k, v in fid.image_fidelity(
        ctx.dataset, ctx.samples, space, cache_root=ctx.cache_dir / "fidelity", cuda=ctx.device.type == "cuda",
        isc=bool(_opt(ctx, "inception_score", True)), generator=ctx.generator, **opts).items()}
    reason = fid.inception_score_unavailable_reason()
    if reason:
        out["fid_inception"].details["inception_score"] = reason
    return out


_DATA_HIST: dict[tuple, torch.Tensor] = {}


def compute_class_kl(ctx: EvalContext) -> MetricValue | None:
    from harness.metrics import classifier as C
    from harness.metrics.fid import FLOOR_SPLIT, SUBSET_SEED

    if not _has_labels(ctx) and not ctx.requested:
        return None
    clf = C.get_classifier(ctx.dataset)
    key = (clf.sha256, ctx.dataset.name)
    if key not in _DATA_HIST:
        xt = C.quantise(ctx.dataset, ctx.dataset.split("test")[0])
        _DATA_HIST[key] = C.class_histogram(clf.predict(xt), clf.num_classes)
    p = _DATA_HIST[key]
    pred = clf.predict(C.quantise(ctx.dataset, ctx.samples))
    n = pred.shape[0]
    xtr = ctx.dataset.split(FLOOR_SPLIT)[0]
    idx = torch.randperm(xtr.shape[0], generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
    pred_floor = clf.predict(C.quantise(ctx.dataset, xtr[idx]))
    floor = C.class_kl(p, pred_floor)
    q = C.class_histogram(pred, clf.num_classes)

    def boot(labels):  # bootstrap over samples: the predicted labels resampled with replacement
        reps = U.resample_indices(labels.shape[0], 2 * U.REPLICATES, ctx.generator)
        return U.bootstrap_stderr([C.class_kl(p, labels[i]) for i in reps])

    return MetricValue(C.class_kl(p, pred), floor=floor, stderr=boot(pred),
                       protocol={"n": n, "data_histogram": "classifier predictions on the test split",
                                 "pseudo_count": 0.5, "floor": f"{FLOOR_SPLIT} subset of n", **clf.protocol(),
                                 "stderr": f"bootstrap over samples, {2 * U.REPLICATES} replicates (the data "
                                           "histogram from the whole test split is held fixed)"},
                       details={"sample_histogram": q.tolist(), "data_histogram": p.tolist(),
                                "classes_missing": int((q == 0).sum()), "floor_stderr": boot(pred_floor)})


# chains ------------------------------------------------------------------------------------------------------

def mixing_statistics(ctx: EvalContext, n_projections: int):
    """Statistics and labeler for the data kind: coordinates (d ≤ 2) or fixed projections for vectors; fixed
    projections plus classifier logits for images (labels = predicted class); mixture components label toys."""
    from harness.metrics import mixing as M

    labeler = None
    if ctx.spec.kind == "vector":
        stats = (M.coordinate_statistics(ctx.spec.dim) if ctx.spec.dim <= 2
                 else M.projection_statistics(ctx.spec.dim, n_projections))
        target = ctx.dataset.target
        if target is not None and T.is_mixture(target):
            def labeler(x):
                return target.component(x.detach().float().cpu())
        return stats, labeler
    stats = M.projection_statistics(ctx.spec.dim, n_projections)
    if _has_labels(ctx):
        from harness.metrics.classifier import get_classifier, quantise

        clf = get_classifier(ctx.dataset)
        logits = M.Statistics(lambda x: clf.logits(quantise(ctx.dataset, x.detach().float().cpu()))
                              .to(torch.float64), [f"logit{j}" for j in range(clf.num_classes)])
        stats = M.concat_statistics(stats, logits)

        def labeler(x):
            return clf.predict(quantise(ctx.dataset, x.detach().float().cpu()))
    return stats, labeler


def compute_mixing(ctx: EvalContext) -> dict[str, MetricValue]:
    """Mixing of the method's stationary chain, diagnosed on ``Chain.trace`` at every recorded step, with ESS rates
    charged to chain steps only and readouts (every ``readout_every`` steps, or once at the end) reported apart
    (see harness.metrics.mixing). Leaves chain.npz for the report's plots in the run folder."""
    from harness.metrics import mixing as M
    from harness.metrics.throughput import FLOPS_COUNTED

    _check_options(ctx, "mixing", MIXING_DEFAULTS[ctx.spec.kind])
    cfg = {**MIXING_DEFAULTS[ctx.spec.kind], **ctx.options}
    stats, labeler = mixing_statistics(ctx, int(cfg["projections"]))
    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
    g = torch.Generator(device=ctx.device).manual_seed(seed)
    diag = M.run_chain_diagnostics(ctx.chain, int(cfg["n_chains"]), int(cfg["burn_in"]), int(cfg["steps"]),
                                   stats, labeler, generator=g, names=stats.names,
                                   superchains=int(cfg["superchains"]))
    try:  # FLOPs of one step of two chains, on their own stream (the diagnosed chains' draws do not shift)
        flops = M.chain_flops(ctx.chain, torch.Generator(device=ctx.device).manual_seed(seed ^ 0x5F10))
    except Exception as exc:  # noqa: BLE001 - an op the counter cannot trace must not lose the mixing numbers
        flops = {"gflops_per_chain_step": None, "gflops_per_readout": None,
                 "flops_error": f"{type(exc).__name__}: {exc}"}
    s = diag.summary()
    protocol = {"n_chains": diag.n_chains, "burn_in": diag.burn_in, "steps": diag.steps,
                "statistics": diag.names,
                "diagnosed": "statistics of Chain.trace(state), the chain's own position (walk-jump: ȳ; Langevin: "
                             "x), at every recorded step; no readout per step",
                "cost": "ESS per 1,000 NFE and per second charge chain steps only (C · steps · nfe_per_step, "
                        "burn-in excluded); readouts (every readout_every steps, or once at the end) are counted "
                        "and timed apart (details.cost)",
                "tau": "Sokal automatic window, c = 5 (emcee); a lower bound when steps < 50 τ",
                "ess_rhat": "arviz_stats (rank-normalised, split)",
                "nested_rhat": f"arviz_stats rhat_nested (Margossian et al. 2024), rank-normalised; {diag.superchains} "
                               "superchains of consecutive, independently initialised chains",
                "timing": "chain steps and readouts timed apart, synchronised (CUDA events); burn-in, statistics "
                          "and labels excluded"}
    cost = {**diag.cost(), **flops, "flops_counted": FLOPS_COUNTED}
    per = {"per_statistic": {n: {"tau": t, "tau_stderr": te, "ess_bulk": b, "ess_tail": e, "rhat": r,
                                 "nested_rhat": nr} for n, t, te, b, e, r, nr in zip(
        diag.names, diag.tau, diag.tau_stderr, diag.ess_bulk, diag.ess_tail, diag.rhat, diag.nested_rhat,
        strict=True)},
        "reliable": s["reliable"], "cost": cost, "chain": ctx.chain.describe()}
    # ESS = chains·steps/τ: to first order its relative standard error is τ's (Madras-Sokal), the one stated
    protocol["ess_stderr"] = "relative standard error of τ (delta method on ESS = chains·steps/τ)"

    def ess_se(value):
        rel = s["tau_stderr"] / s["tau"] if s["tau_stderr"] is not None and s["tau"] else None
        return None if rel is None or value is None else abs(value) * rel

    out = {
        "iat": MetricValue(s["tau"], False, protocol=protocol, details=per, stderr=s["tau_stderr"],
                           lower_bound=s["tau_lower_bound"]),
        "ess_bulk": MetricValue(s["ess_bulk"], True, protocol=protocol, stderr=ess_se(s["ess_bulk"])),
        "ess_tail": MetricValue(s["ess_tail"], True, protocol=protocol),
        "rhat": MetricValue(s["rhat"], False, protocol=protocol),
    }
    if s["nested_rhat"] is not None:
        out["nested_rhat"] = MetricValue(s["nested_rhat"], False, protocol=protocol)
    if s["ess_bulk_per_second"] is not None:
        out["ess_per_second"] = MetricValue(s["ess_bulk_per_second"], True, protocol=protocol, details={"cost": cost},
                                            stderr=ess_se(s["ess_bulk_per_second"]))
    if s["ess_bulk_per_1k_nfe"] is not None:
        out["ess_per_1k_nfe"] = MetricValue(s["ess_bulk_per_1k_nfe"], True, protocol=protocol, details={"cost": cost},
                                            stderr=ess_se(s["ess_bulk_per_1k_nfe"]))
    if s["mode_hops_per_1k_steps"] is not None:
        # hops seen at the paid readouts (every k steps) miss returns within k steps: not comparable with hops
        # counted on the trace at every step, so the two are separate protocols (and leaderboard columns)
        labels = (f"readout every {diag.label_every}" if diag.label_source == "readouts"
                  else "trace every step")  # short: the leaderboard shows it in the column header
        out["mode_hops_per_1k_steps"] = MetricValue(s["mode_hops_per_1k_steps"], True,
                                                    protocol={**protocol, "labels": labels})
    if ctx.run_dir is not None:
        M.save_chain_npz(ctx.run_dir / M.CHAIN_NPZ, diag)
        ctx.artifacts[M.CHAIN_NPZ] = ("mixing chains: trace statistics, autocorrelation, mode labels, readouts of "
                                      "chain 0 (harness.metrics.mixing.chain_arrays)")
    return out


# bias of stationary chains against exact moments ---------------------------------------------------------------

BIAS_DEFAULTS = {"n_chains": 32, "steps": 2000, "burn_in": 0, "tolerance": 0.01, "every_step": True}


def compute_bias(ctx: EvalContext) -> dict[str, MetricValue]:
    """Evaluations (and GFLOPs) until the squared bias of the pooled running estimates of E[x] and E[x²] stays below
    the tolerance (harness.metrics.bias): ``bias_evals`` / ``bias_gflops`` under the method's own protocol,
    ``bias_evals_every_step`` for chains with a paid readout read out at every step. The curves are in details."""
    from harness.metrics import bias as B
    from harness.metrics import mixing as M
    from harness.metrics.throughput import FLOPS_COUNTED

    _check_options(ctx, "bias", BIAS_DEFAULTS)
    cfg = {**BIAS_DEFAULTS, **ctx.options}
    moments = B.target_moments(ctx.dataset.target)
    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
    g = torch.Generator(device=ctx.device).manual_seed(seed)
    curves = B.run_bias(ctx.chain, moments, int(cfg["n_chains"]), int(cfg["steps"]), g, burn_in=int(cfg["burn_in"]),
                        tol=float(cfg["tolerance"]), every_step=bool(cfg["every_step"]))
    try:
        flops = M.chain_flops(ctx.chain, torch.Generator(device=ctx.device).manual_seed(seed ^ 0xB1A5))
    except Exception as exc:  # noqa: BLE001 - FLOPs are context, not the measurement
        flops = {"gflops_per_chain_step": None, "gflops_per_readout": None, "error": f"{type(exc).__name__}: {exc}"}
    chain = ctx.chain
    nfe_step, readout_nfe = int(chain.nfe_per_step), int(getattr(chain, "readout_nfe", 0))
    g_step, g_read = flops.get("gflops_per_chain_step"), flops.get("gflops_per_readout") or 0.0

    def gflops_per_eval(curve) -> float | None:
        if g_step is None:
            return None
        if curve.positions == "readout every step":
            return (g_step + g_read) / (nfe_step + readout_nfe)
        k = curve.extra.get("readout_every")
        if k:
            return (k * g_step + g_read) / (k * nfe_step + readout_nfe)
        return g_step / nfe_step

    protocol = {"tolerance": float(cfg["tolerance"]), "n_chains": int(cfg["n_chains"]), "steps": int(cfg["steps"]),
                "burn_in": int(cfg["burn_in"]),
                "estimator": "running average over all chains and every recorded point after burn-in (pooled)",
                "bias2": "max(max_i (Ê[x_i] − E x_i)²/Var x_i, max_i (Ê[x_i²] − E x_i²)²/Var x_i²)",
                "evaluations": "network evaluations over all chains (steps × nfe_per_step + readouts × readout_nfe); "
                               "the first point after which b² stays below tolerance",
                "moments": moments.source, "flops": FLOPS_COUNTED}
    out = {}
    for key, name in (("protocol", "bias_evals"), ("every_step", "bias_evals_every_step")):
        curve = curves.get(key)
        if curve is None:
            continue
        evals, reached = curve.to_tolerance
        gpe = gflops_per_eval(curve)
        details = {**curve.details(), "gflops_per_eval": gpe, "chain": chain.describe()}
        if key == "protocol" and "trace" in curves:  # the chain's own position, unpaid: for comparison
            t = curves["trace"].details()
            details["trace"] = {k: t[k] for k in ("positions", "curve", "final_bias2", "reached", "evals_per_chain")}
        proto = {**protocol, "positions": curve.positions}
        out[name] = MetricValue(evals, False, protocol=proto, details=details, lower_bound=not reached)
        if key == "protocol" and gpe is not None:
            out["bias_gflops"] = MetricValue(evals * gpe, False, protocol=proto, lower_bound=not reached,
                                             details={"gflops_per_eval": gpe, **flops})
    return out


# quality against NFE -----------------------------------------------------------------------------------------

# n 0: all samples, at most 500 vectors / 300 images; reference: the FID reference split for images (as fid_cnn's)
NFE_CURVE_DEFAULTS = {"factors": [0.1, 0.25, 0.5], "n": 0, "reference": "test"}


NFE_CURVE_LABELS = {"mmd": ("MMD²", "unitless (squared kernel norm)"),
                    "fid_cnn": ("FID (CNN)", "squared domain-CNN feature units")}


def nfe_curve_key(statistic: str, factor: float) -> str:
    """The record key of `nfe_curve`'s value: what it holds, at what, e.g. ``mmd_at_0.1x_sampler`` (MMD² of samples
    from the sampler run at 0.1× its length) or ``fid_cnn_at_0.1x_sampler``."""
    return f"{statistic}_at_{factor:g}x_sampler"


def compute_nfe_curve(ctx: EvalContext) -> dict[str, MetricValue] | None:
    """The run's quality statistic (MMD² against the exact target for toy data, FID in the domain-CNN space for
    labelled images) for fresh samples from the sampler shortened or lengthened by each factor, plus the run's own
    samples at factor 1. Recorded under `nfe_curve_key` (statistic and factor in the name, e.g.
    ``mmd_at_0.1x_sampler``): the statistic at the smallest factor, with its standard error from the same estimator
    as the quality metric (U-statistic variance for MMD², bootstrap for FID); the curve (each point with its
    stderr) is in the details, protocol["metric"] is "nfe_curve"."""
    _check_options(ctx, "nfe_curve", NFE_CURVE_DEFAULTS)
    factors = sorted({float(f) for f in _opt(ctx, "factors", NFE_CURVE_DEFAULTS["factors"])} - {1.0})
    if not factors or min(factors) <= 0:
        raise ValueError(f"[metrics.nfe_curve] factors must be positive numbers other than 1, got {factors}")
    cap = 500 if ctx.spec.kind == "vector" else 300
    n = min(ctx.samples.shape[0], int(_opt(ctx, "n", 0)) or cap)
    if ctx.spec.kind == "vector":
        target = ctx.dataset.target
        if target is None:
            return None
        y = target.sample(n, ctx.generator)
        bw = T.bandwidths_from(y)
        mmd_floor = T.mmd2_with_stderr(target.sample(n, ctx.generator), y, bw)

        def quality(x) -> tuple[float, float, float, float]:
            return (*T.mmd2_with_stderr(x, y, bw), *mmd_floor)

        statistic, stderr_rule = "mmd", U_STDERR
    else:
        if not _has_labels(ctx):
            return None
        from harness.metrics import fid

        space = fid.cnn_space(ctx.dataset)
        reference = fid.fid_options("nfe_curve", {"reference": _opt(ctx, "reference", "test")})["reference"]

        def quality(x) -> tuple[float, float, float, float]:
            out = fid.image_fidelity(ctx.dataset, x, space, cache_root=ctx.cache_dir / "fidelity",
                                     cuda=ctx.device.type == "cuda", n=n, isc=False, reference=reference,
                                     generator=ctx.generator)["fid_cnn"]
            return out["value"], out["stderr"], out["floor"], out["details"]["floor_stderr"]

        statistic, stderr_rule = "fid_cnn", fid.STDERR_PROTOCOL["fid"] + f"; reference split: {reference}"
    curve = []
    for f in [*factors, 1.0]:
        x, nfe = (ctx.samples[:n], ctx.nfe) if f == 1.0 else ctx.resample(f, n)
        q, se, floor, floor_se = quality(x)
        curve.append({"factor": f, "nfe": nfe, "value": float(q), "stderr": se})
    name, unit = NFE_CURVE_LABELS[statistic]
    protocol = {"metric": "nfe_curve", "statistic": statistic, "n": n, "factors": factors,
                "label": f"{name} at {factors[0]:g}× sampler length",
                "what": f"{name} of fresh samples from the sampler run at {factors[0]:g}× its length (NFE in details)",
                "unit": unit, "scaled": "every sampler-length field of the method, rounded, at least 1",
                "stderr": stderr_rule}
    return {nfe_curve_key(statistic, factors[0]): MetricValue(
        curve[0]["value"], floor=floor, protocol=protocol, stderr=curve[0]["stderr"],
        details={"curve": curve, "nfe": curve[0]["nfe"], "floor_stderr": floor_se})}


VECTOR, IMAGE, BOTH = frozenset({"vector"}), frozenset({"image"}), frozenset({"vector", "image"})

METRICS = (
    Metric("mmd", "Unbiased MMD² (multi-bandwidth Gaussian kernel) against fresh target samples, with floor",
           False, VECTOR, compute_mmd, frozenset({"target"}), options=frozenset({"max_n"})),
    Metric("energy_distance", "Energy distance against fresh target samples, with real-vs-real floor",
           False, VECTOR, compute_energy, frozenset({"target"}), options=frozenset({"max_n"})),
    Metric("sliced_wasserstein", "Sliced 2-Wasserstein distance against fresh target samples, with floor",
           False, VECTOR, compute_sliced, frozenset({"target"}),
           options=frozenset({"max_n", "n_projections", "bootstrap"})),
    Metric("mode_coverage", "Fraction of mixture modes covered and total-variation weight error",
           True, VECTOR, compute_modes, frozenset({"target"}), options=frozenset(())),
    Metric("fisher_divergence", "E‖s_θ − ∇log p_σ‖² on the target smoothed at the method's noise level",
           False, VECTOR, compute_fisher, frozenset({"target", "score"}), options=frozenset({"n"})),
    Metric("nll", "Mean negative log-likelihood (nats) of test points; floor: the exact target's",
           False, BOTH, compute_nll, frozenset({"likelihood"}), options=frozenset({"n", "batch"})),
    Metric("fid_cnn", "FID/KID/precision/recall in the data set's own CNN classifier feature space",
           False, IMAGE, compute_fid_cnn, options=frozenset({"n", "reference", "batch_size"}),
           check_options=lambda o: _fid_options("fid_cnn", o)),
    Metric("fid_inception", "FID/KID/precision/recall (Inception-v3, torch-fidelity); default on CUDA or by name",
           False, IMAGE, compute_fid_inception,
           options=frozenset({"enabled", "n", "inception_score", "reference", "batch_size"}),
           check_options=lambda o: _fid_options("fid_inception", o)),
    Metric("class_kl", "KL(data class histogram ‖ samples' predicted class histogram), domain classifier",
           False, IMAGE, compute_class_kl, options=frozenset(())),
    Metric("nfe_curve", "Quality (MMD² or FID_cnn) against NFE: the sampler rerun at fractions of its length; "
           "recorded as <statistic>_at_<factor>x_sampler at the shortest", False, BOTH, compute_nfe_curve,
           frozenset({"resample"}),
           options=frozenset(NFE_CURVE_DEFAULTS),
           check_options=lambda o: _fid_options("nfe_curve", {"reference": o.get("reference", "test")})),
    Metric("mixing", "Stationary-chain mixing of the chain's own trace: autocorrelation time, ESS, split-R̂, "
           "nested R̂, ESS per 1k chain-step NFE and per second (readouts apart), mode hopping",
           True, BOTH, compute_mixing, frozenset({"chain"}), options=frozenset(MIXING_DEFAULTS["vector"])),
    Metric("bias", "Evaluations (and GFLOPs) until the squared bias of the running estimates of E[x] and E[x²], "
           "normalised by the target's variance, stays below 0.01 (stationary chains, exact moments); "
           "bias_evals, bias_gflops, bias_evals_every_step", False, VECTOR, compute_bias,
           frozenset({"chain", "target"}), options=frozenset(BIAS_DEFAULTS)),
)


@hookimpl
def register_metrics(register):
    for metric in METRICS:
        register(metric)
