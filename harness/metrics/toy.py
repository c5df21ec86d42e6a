"""Exact metrics on synthetic targets with a known density (harness.toy): two-sample distances with their
real-vs-real floor at the same n, mode coverage for mixtures, Fisher divergence of a learned score, and NLL.

Every two-sample distance is computed between the samples and *fresh* target samples of the same size; the floor
is the same statistic between two further independent target sample sets of that size (what an exact sampler
would score at this n).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from harness.metrics import uncertainty as U

if TYPE_CHECKING:
    from harness.toy import ToyTarget

BANDWIDTH_FACTORS = (0.03, 0.1, 0.3, 1.0, 3.0)  # × median pairwise distance of the reference sample; the
# small ones resolve individual modes of the toy mixtures (std ≈ 0.1 × median distance), the large ones global shape
COVERAGE_FRACTION = 0.25  # a mode is covered when it receives ≥ this fraction of its expected count n·w_k
COVERAGE_QUANTILE = 0.99  # ... counting samples within this χ_d quantile of the component's radius


def _flat64(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64).cpu()


def median_distance(y: Tensor) -> float:
    """Median of the pairwise Euclidean distances within y (the "median heuristic")."""
    y = _flat64(y)
    d = torch.cdist(y, y)
    iu = torch.triu_indices(y.shape[0], y.shape[0], offset=1)
    return float(d[iu[0], iu[1]].median())


def bandwidths_from(y: Tensor, factors: tuple[float, ...] = BANDWIDTH_FACTORS) -> tuple[float, ...]:
    """Gaussian kernel bandwidths h_b = factor_b × median pairwise distance of the reference sample y."""
    med = median_distance(y)
    med = med if med > 0 else 1.0
    return tuple(f * med for f in factors)


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidths: tuple[float, ...]) -> float:
    """Unbiased MMD² (Gretton et al. 2012, JMLR, Lemma 6 / eq. 3) with the kernel
    k(a, b) = Σ_b exp(−‖a − b‖² / (2 h_b²)):

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j).
    """
    x, y = _flat64(x), _flat64(y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("MMD² needs at least 2 points per sample")
    return U.u_statistic(*_mmd_kernels(x, y, bandwidths))


def gaussian_kernel(a: Tensor, b: Tensor, bandwidths: tuple[float, ...]) -> Tensor:
    """k(a_i, b_j) = Σ_b exp(−‖a_i − b_j‖² / (2 h_b²)) as a matrix."""
    d2 = torch.cdist(a, b).pow(2)
    return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)


def _mmd_kernels(x: Tensor, y: Tensor, bandwidths: tuple[float, ...]) -> tuple[Tensor, Tensor, Tensor]:
    return gaussian_kernel(x, x, bandwidths), gaussian_kernel(y, y, bandwidths), gaussian_kernel(x, y, bandwidths)


def mmd2_with_stderr(x: Tensor, y: Tensor, bandwidths: tuple[float, ...]) -> tuple[float, float]:
    """(MMD²_u, its standard error): the exact variance of the two-sample U-statistic estimated without bias
    (`harness.metrics.uncertainty.u_statistic_variance`), from the same kernel matrices; needs ≥ 4 points each."""
    kxx, kyy, kxy = _mmd_kernels(_flat64(x), _flat64(y), bandwidths)
    return U.u_statistic(kxx, kyy, kxy), U.u_statistic_stderr(kxx, kyy, kxy)


def mmd_two_sample(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] | None = None) -> float:
    """The two-sample statistic T(x, y) = MMD²_u(x, y) with bandwidths from the *reference* y (median heuristic ×
    `BANDWIDTH_FACTORS`) unless given. Compare it with `mmd_threshold` computed at the same n."""
    return mmd2_unbiased(x, y, bandwidths if bandwidths is not None else bandwidths_from(y))


def mmd_threshold(sampler: Callable[[int, torch.Generator], Tensor], n: int, *, generator: torch.Generator,
                  trials: int = 50, quantile: float = 0.99, m: int | None = None,
                  bandwidths: tuple[float, ...] | None = None) -> float:
    """Critical value of `mmd_two_sample` under the null, calibrated by simulation at the same sizes: the
    `quantile` of T(x', y) over `trials` pairs of fresh samples x' (size m, default n) and y (size n) from
    `sampler(size, generator)` (e.g. ``target.sample``). A sampler passes the test when T(x, y) ≤ threshold."""
    m = m or n
    stats = torch.tensor([mmd_two_sample(sampler(m, generator), sampler(n, generator), bandwidths)
                          for _ in range(trials)])
    return float(torch.quantile(stats, quantile))


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance (Székely & Rizzo 2013, eq. 2.1) with U-statistics for the within-sample terms:
    2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (zero iff the distributions are equal)."""
    x, y = _flat64(x), _flat64(y)
    m, n = x.shape[0], y.shape[0]
    exy = torch.cdist(x, y).mean()
    exx = torch.cdist(x, x).sum() / (m * (m - 1))
    eyy = torch.cdist(y, y).sum() / (n * (n - 1))
    return float(2 * exy - exx - eyy)


def energy_distance_stderr(x: Tensor, y: Tensor) -> float:
    """Standard error of `energy_distance`: it is the two-sample U-statistic with kernel k(a, b) = −‖a − b‖
    (2 E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ = A + B − 2C), so `u_statistic_stderr` applies unchanged."""
    x, y = _flat64(x), _flat64(y)
    return U.u_statistic_stderr(-torch.cdist(x, x), -torch.cdist(y, y), -torch.cdist(x, y))


def random_directions(d: int, k: int, generator: torch.Generator) -> Tensor:
    """k directions uniform on the unit sphere S^{d−1}, float64 [k, d]."""
    v = torch.randn(k, d, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    return v / v.norm(dim=1, keepdim=True)


def sliced_wasserstein(x: Tensor, y: Tensor, *, generator: torch.Generator, n_projections: int = 256,
                       p: int = 2) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
    SW_p = (E_θ W_p^p(θᵀX, θᵀY))^{1/p} over uniform directions θ, with 1-D W_p between empirical measures from
    their quantile functions (sorted values; for unequal sizes both are evaluated at the midpoints of the larger)."""
    x, y = _flat64(x), _flat64(y)
    theta = random_directions(x.shape[1], n_projections, generator)
    px, py = (x @ theta.T).sort(dim=0).values, (y @ theta.T).sort(dim=0).values
    if px.shape[0] != py.shape[0]:
        q = (torch.arange(max(px.shape[0], py.shape[0]), dtype=torch.float64) + 0.5) / max(px.shape[0], py.shape[0])
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return float((px - py).abs().pow(p).mean().pow(1 / p))


def sliced_wasserstein_stderr(x: Tensor, y: Tensor, *, generator: torch.Generator, n_projections: int = 256,
                              replicates: int = 20) -> float:
    """Bootstrap standard error of `sliced_wasserstein`: each replicate resamples x and y with replacement *and*
    draws fresh directions, so the spread covers both the samples and the Monte Carlo over θ."""
    x, y = _flat64(x), _flat64(y)
    ix = U.resample_indices(x.shape[0], replicates, generator)
    iy = U.resample_indices(y.shape[0], replicates, generator)
    return U.bootstrap_stderr([sliced_wasserstein(x[a], y[b], generator=generator, n_projections=n_projections)
                               for a, b in zip(ix, iy, strict=True)])


def two_sample_with_floor(stat: Callable[[Tensor, Tensor], float], samples: Tensor, target: ToyTarget,
                          generator: torch.Generator) -> tuple[float, float]:
    """(stat(samples, Y), stat(Y', Y)) with Y, Y' fresh target samples of the same size as `samples`."""
    n = samples.shape[0]
    y = target.sample(n, generator)
    y2 = target.sample(n, generator)
    return stat(samples, y), stat(y2, y)


# mixtures ----------------------------------------------------------------------------------------------------

def mode_coverage(samples: Tensor, target) -> dict[str, float | list]:
    """Per-mode statistics for a Gaussian mixture (`weights`, `means`, `stds`, `component`):

    - counts_k: samples whose most responsible component is k *and* that lie within the `COVERAGE_QUANTILE`
      quantile radius σ_k √χ²_d(q) of μ_k (so far-off samples cover nothing);
    - mode k is covered when counts_k ≥ `COVERAGE_FRACTION` · n · w_k (a quarter of its expected count);
    - weight error: total variation ½ Σ_k |n_k / n − w_k| of the assignment fractions (all samples assigned to
      their most responsible component) against the true weights.
    """
    k, near = _mode_assignment(samples, target)
    return _mode_summary(k, near, target.weights.to(torch.float64))


def _mode_assignment(samples: Tensor, target) -> tuple[Tensor, Tensor]:
    """Per sample: its most responsible component k and whether it lies within the coverage radius of μ_k."""
    from scipy.stats import chi2

    x = samples.to(torch.float64).cpu()
    k = target.component(x)
    radius = target.stds.to(torch.float64) * math.sqrt(chi2.ppf(COVERAGE_QUANTILE, x.shape[1]))
    return k, (x - target.means.to(torch.float64)[k]).norm(dim=1) <= radius[k]


def _mode_summary(k: Tensor, near: Tensor, w: Tensor) -> dict[str, float | list]:
    n = k.shape[0]
    counts = torch.bincount(k[near], minlength=w.shape[0]).to(torch.float64)
    covered = counts >= COVERAGE_FRACTION * n * w
    frac = torch.bincount(k, minlength=w.shape[0]).to(torch.float64) / n
    return {"coverage": float(covered.double().mean()), "weight_error": float(0.5 * (frac - w).abs().sum()),
            "modes_covered": int(covered.sum()), "modes": int(w.shape[0]), "counts": counts.tolist(),
            "fractions": frac.tolist()}


def mode_coverage_stderr(samples: Tensor, target, generator: torch.Generator,
                         replicates: int = U.REPLICATES) -> dict[str, float]:
    """Bootstrap standard errors of `mode_coverage`'s coverage and weight error: the samples resampled with
    replacement (a multinomial draw of the per-sample mode assignments), the statistics recomputed."""
    k, near = _mode_assignment(samples, target)
    w = target.weights.to(torch.float64)
    reps = [_mode_summary(k[i], near[i], w) for i in U.resample_indices(k.shape[0], replicates, generator)]
    return {"coverage": U.bootstrap_stderr([r["coverage"] for r in reps]),
            "weight_error": U.bootstrap_stderr([r["weight_error"] for r in reps])}


def is_mixture(target) -> bool:
    return all(hasattr(target, a) for a in ("weights", "means", "stds")) and target.component(
        target.means[:1].to(torch.float32)) is not None


# score and likelihood ---------------------------------------------------------------------------------------

def fisher_divergence(score_fn: Callable[[Tensor], Tensor], target: ToyTarget, sigma: float, n: int,
                      generator: torch.Generator, device: torch.device | str = "cpu",
                      batch: int = 4096) -> dict[str, float]:
    """Fisher divergence of a learned score at noise level σ against the exact smoothed score (Hyvärinen 2005;
    the quantity denoising score matching minimises up to a constant, Vincent 2011):

        F = E_{x ~ p_σ} ‖s_θ(x) − ∇ log p_σ(x)‖²,   p_σ = p * N(0, σ² I),

    estimated on n points from p_σ. Also returns F / E‖∇ log p_σ‖² (relative) and the Monte Carlo standard error.
    """
    smooth = target.smoothed(sigma) if sigma else target
    x = smooth.sample(n, generator)
    errs, norms = [], []
    for i in range(0, n, batch):
        xb = x[i: i + batch]
        s = score_fn(xb.to(device)).detach().to(torch.float64).cpu()
        exact = smooth.score(xb.to(torch.float64)).to(torch.float64)
        errs.append((s - exact).pow(2).sum(1))
        norms.append(exact.pow(2).sum(1))
    e, m = torch.cat(errs), torch.cat(norms)
    return {"fisher": float(e.mean()), "relative": float(e.mean() / m.mean()),
            "stderr": U.mean_stderr(e)}


def mean_nll(log_likelihood: Callable[[Tensor], Tensor], x: Tensor, batch: int = 1024) -> float:
    """Mean −log p(x) in nats over x (batched)."""
    return nll_with_stderr(log_likelihood, x, batch)[0]


def nll_with_stderr(log_likelihood: Callable[[Tensor], Tensor], x: Tensor, batch: int = 1024) -> tuple[float, float]:
    """(mean −log p(x) in nats over x, its standard error s/√n over the points). Where log p is itself a
    stochastic estimate per point (a Hutchinson trace probe in the probability-flow ODE), each point has its own
    independent probe, so s already contains the probe variance and s/√n covers points and probes together."""
    vals = -torch.cat([log_likelihood(x[i: i + batch]).detach().to(torch.float64).cpu()
                       for i in range(0, x.shape[0], batch)])
    return float(vals.mean()), U.mean_stderr(vals)
