"""Standard errors of metric values from the sampling of the evaluation itself (`MetricValue.stderr`).

Three estimators, chosen per metric (each metric's protocol names the one it uses under "stderr"):

- the mean of i.i.d. terms (Fisher divergence, NLL): s / √n, s the sample standard deviation of the terms;
- two-sample U-statistics (unbiased MMD², energy distance, KID): the exact finite-sample variance of

      T = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j)

  (Hoeffding 1948; Serfling 1980, §5.2.1 and §5.2.2), split into its first-order (Hoeffding projection) part
  F = 4/m Var_x[h_x(x)] + 4/n Var_y[h_y(y)] with h_x(x) = E k(x, x') − E k(x, y), h_y likewise, and its
  second-order part S (the doubly-centred kernel). Every moment is estimated without bias from the kernel matrices
  by sums over distinct indices (as in Sutherland et al. 2017, ICLR, App. A, for the equal-size statistic); F and S
  are each clamped at zero. Under P = Q the statistic is degenerate (F = 0 in the population) and the naive
  bootstrap overestimates the spread about twice (it sees the empirical difference as signal); this estimator does
  not, and costs O(mn) once the kernel matrices exist, with no random draws;
- the bootstrap (sliced Wasserstein, FID, class KL, mode statistics): the standard deviation of the statistic over
  B replicates that resample *both* sides with replacement (Efron & Tibshirani 1993, ch. 6), drawn from the metric's
  own CPU generator so that records stay bit-repeatable. Near its floor the bootstrap of a distance that is zero
  at P = Q is conservative: for FID, measured ~1.8× the spread over independent draws at P = Q and within 20%
  away from it (tests/test_uncertainty.py); SW is expected to behave alike (not measured).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

REPLICATES = 100  # bootstrap replicates: the relative error of the stderr is about 1/√(2(B−1)) ≈ 7%


def mean_stderr(values: Tensor) -> float:
    """Standard error s/√n of the mean of n i.i.d. values (s with Bessel's correction); nan for n < 2."""
    v = values.reshape(-1).to(torch.float64)
    return float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")


def resample_indices(n: int, replicates: int, generator: torch.Generator) -> Tensor:
    """[replicates, n] indices drawn uniformly with replacement (one bootstrap resample per row)."""
    return torch.randint(0, n, (replicates, n), generator=generator, device=generator.device).cpu()


def bootstrap_stderr(replicate_values) -> float:
    """Standard deviation (Bessel-corrected) of the bootstrap replicates."""
    return float(torch.as_tensor(replicate_values, dtype=torch.float64).std())


# two-sample U-statistics ---------------------------------------------------------------------------------------

def _one_sample_moments(k: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Unbiased ζ1 = Cov(k(x,x'), k(x,x'')), ζ2 = Var k(x,x') of a symmetric kernel matrix over distinct indices,
    plus its off-diagonal row sums r and total S."""
    m = k.shape[0]
    k = k - torch.diag(k.diagonal())
    r = k.sum(1)
    s, s2, r2 = r.sum(), (k * k).sum(), (r * r).sum()
    e_pair2 = s2 / (m * (m - 1))  # E k(x,x')²
    e_triple = (r2 - s2) / (m * (m - 1) * (m - 2))  # E k(x,x') k(x,x'')
    theta2 = (s * s - 4 * r2 + 2 * s2) / (m * (m - 1) * (m - 2) * (m - 3))  # (E k)² over distinct quadruples
    return e_triple - theta2, e_pair2 - theta2, r, s


def u_statistic_variance(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> tuple[float, float]:
    """(F, S): unbiased estimates of the first- and second-order parts of Var T for the two-sample statistic T of
    the module docstring, from the kernel matrices (k(x_i, x_j), k(y_i, y_j), k(x_i, y_j)); needs m, n ≥ 4.

    With ζ's the Hoeffding variances of each block (ζ10 = Cov(k(x,y), k(x,y')), ζ01 = Cov(k(x,y), k(x',y)),
    ζ11 = Var k(x,y)) and c_x = Cov(k(x,x'), k(x,y)), c_y = Cov(k(y,y'), k(x,y)):
        F = 4/m (ζ1_xx + ζ10 − 2 c_x) + 4/n (ζ1_yy + ζ01 − 2 c_y),
        S = 2/(m(m−1)) (ζ2_xx − 2 ζ1_xx) + 2/(n(n−1)) (ζ2_yy − 2 ζ1_yy) + 4/(mn) (ζ11 − ζ10 − ζ01),
    and F + S = Var T exactly (Var A + Var B + 4 Var C − 4 Cov(A, C) − 4 Cov(B, C))."""
    kxx, kyy, kxy = (a.to(torch.float64) for a in (kxx, kyy, kxy))
    m, n = kxy.shape
    if m < 4 or n < 4:
        raise ValueError(f"the U-statistic variance needs at least 4 points per sample, got {m} and {n}")
    z1x, z2x, rx, sx = _one_sample_moments(kxx)
    z1y, z2y, ry, sy = _one_sample_moments(kyy)
    row, col = kxy.sum(1), kxy.sum(0)
    sc, q2, row2, col2 = row.sum(), (kxy * kxy).sum(), (row * row).sum(), (col * col).sum()
    theta_c2 = (sc * sc - row2 - col2 + q2) / (m * (m - 1) * n * (n - 1))
    z11 = q2 / (m * n) - theta_c2
    z10 = (row2 - q2) / (m * n * (n - 1)) - theta_c2
    z01 = (col2 - q2) / (n * m * (m - 1)) - theta_c2
    cx = (rx * row).sum() / (m * (m - 1) * n) - (sx * sc - 2 * (rx * row).sum()) / (m * (m - 1) * (m - 2) * n)
    cy = (ry * col).sum() / (n * (n - 1) * m) - (sy * sc - 2 * (ry * col).sum()) / (n * (n - 1) * (n - 2) * m)
    first = 4 / m * (z1x + z10 - 2 * cx) + 4 / n * (z1y + z01 - 2 * cy)
    second = 2 / (m * (m - 1)) * (z2x - 2 * z1x) + 2 / (n * (n - 1)) * (z2y - 2 * z1y) + 4 / (m * n) * (z11 - z10 - z01)
    return float(first), float(second)


def u_statistic_stderr(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> float:
    """√(max(F, 0) + max(S, 0)) from `u_statistic_variance`: the standard error of the two-sample U-statistic."""
    first, second = u_statistic_variance(kxx, kyy, kxy)
    return math.sqrt(max(first, 0.0) + max(second, 0.0))


def u_statistic(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> float:
    """The two-sample statistic T itself from its kernel matrices."""
    m, n = kxy.shape
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_kernel(a: Tensor, b: Tensor, degree: int = 3, coef0: float = 1.0) -> Tensor:
    """KID's polynomial kernel (Bińkowski et al. 2018, eq. 5; torch-fidelity's default): (aᵀb / d + coef0)^degree."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    return (a @ b.T / a.shape[1] + coef0) ** degree


def kid_stderr(f_gen: Tensor, f_ref: Tensor, subset_std: float, subsets: int, subset_size: int) -> float:
    """Standard error of KID = mean over `subsets` random subsets (size `subset_size`, without replacement) of the
    unbiased MMD² with the polynomial kernel. By the law of total variance, Var KID = Var E[KID | data] +
    E Var[KID | data]: the first is the variance of the complete U-statistic on all points (`u_statistic_variance`;
    averaging a U-statistic over random subsets gives the complete one), the second is the subset-to-subset
    variance over `subsets` independent draws, i.e. subset_std² / (subsets − 1) with torch-fidelity's
    `kernel_inception_distance_std` (ddof 0). torch-fidelity's std alone is no standard error: with n ≤ subset size
    every subset is the whole set and it is 0 whatever n is."""
    n = min(f_gen.shape[0], f_ref.shape[0])
    var_data = sum(max(v, 0.0) for v in u_statistic_variance(kid_kernel(f_gen, f_gen), kid_kernel(f_ref, f_ref),
                                                             kid_kernel(f_gen, f_ref)))
    var_subsets = subset_std**2 / (subsets - 1) if subsets > 1 and subset_size < n else 0.0
    return math.sqrt(var_data + var_subsets)


# Fréchet distance ------------------------------------------------------------------------------------------------

def _trace_sqrt_product(c1: Tensor, c2: Tensor) -> Tensor:
    """tr √(Σ1 Σ2) for the covariances of the centred rows c1 [n1, d], c2 [n2, d] (float64). Exact either way:
    with fewer points than dimensions it is the nuclear norm of c1 c2ᵀ / √((n1−1)(n2−1)) (the non-zero eigenvalues
    of Σ1Σ2 are the squared singular values of that matrix), else Σ √λ(Σ1^{1/2} Σ2 Σ1^{1/2})."""
    n1, n2, d = c1.shape[0], c2.shape[0], c1.shape[1]
    if min(n1, n2) < d:
        return torch.linalg.svdvals(c1 @ c2.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    s1, s2 = c1.T @ c1 / (n1 - 1), c2.T @ c2 / (n2 - 1)
    e, v = torch.linalg.eigh(s1)
    root = (v * e.clamp(min=0).sqrt()) @ v.T
    return torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum()


def frechet_distance(f1: Tensor, f2: Tensor) -> float:
    """FID between feature sets (Heusel et al. 2017, eq. 6): ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2), float64."""
    f1, f2 = f1.to(torch.float64), f2.to(torch.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = f1 - mu1, f2 - mu2
    tr1, tr2 = c1.pow(2).sum() / (f1.shape[0] - 1), c2.pow(2).sum() / (f2.shape[0] - 1)
    return float((mu1 - mu2).pow(2).sum() + tr1 + tr2 - 2 * _trace_sqrt_product(c1, c2))


def fid_replicates(f1: Tensor, f2: Tensor) -> int:
    """Bootstrap replicates for FID: `REPLICATES` where a replicate is cheap (d < 512 or fewer points than
    dimensions, an n×n SVD), 20 for wide features with many points (two d×d eigendecompositions each)."""
    return REPLICATES if f1.shape[1] < 512 or min(f1.shape[0], f2.shape[0]) < f1.shape[1] else 20


def fid_bootstrap_stderr(f1: Tensor, f2: Tensor, generator: torch.Generator, replicates: int | None = None) -> float:
    """Bootstrap standard error of FID: both feature sets resampled with replacement, mean and covariance
    recomputed in float64 per replicate."""
    b = replicates or fid_replicates(f1, f2)
    f1, f2 = f1.to(torch.float64), f2.to(torch.float64)
    i1, i2 = resample_indices(f1.shape[0], b, generator), resample_indices(f2.shape[0], b, generator)
    return bootstrap_stderr([frechet_distance(f1[a], f2[c]) for a, c in zip(i1, i2, strict=True)])


def binomial_stderr(p: float, n: int) -> float:
    """√(p(1−p)/n): the standard error of a fraction of n independent indicators."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("nan")
