"""Exact toy targets against known answers: autograd, closed-form moments, scipy, adaptive quadrature and
Monte Carlo. Every Monte-Carlo comparison allows 5 standard errors (estimated from the same samples); the seeds
are fixed, so the tests are deterministic, and 5 SE keeps them valid for any seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from harness.toy import Banana, GaussianMixture, SmoothedBanana, grid_mixture, ring_mixture
from plugins.datasets import (
    BANANA_A,
    BANANA_B,
    BANANA_S,
    GRID25_SPACING,
    GRID25_STD,
    RING8_RADIUS,
    RING8_STD,
    BananaData,
    Grid25,
    Ring8,
)

RING = ring_mixture(8, RING8_RADIUS, RING8_STD)
GRID = grid_mixture(5, GRID25_SPACING, GRID25_STD)
BANANA = Banana(BANANA_A, BANANA_B, BANANA_S)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def probe_points(target, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Target samples plus uniform points over a wide box (tails, between modes), in float64."""
    g = gen(seed)
    box = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 14
    return torch.cat([target.sample(n, g).double(), box])


def autograd_score(target, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(target.log_prob(x).sum(), x)
    return g


def mean_and_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean and its standard error along dim 0."""
    return values.mean(0), values.std(0) / math.sqrt(values.shape[0])


def mc_density(target, y: torch.Tensor, t: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """p_t(y) = E_{x~p} N(y; x, t² I) by Monte Carlo over exact samples: (estimate, standard error) per point."""
    x = target.sample(n, gen(seed)).double()
    d2 = torch.cdist(y.double(), x) ** 2  # [m, n]
    k = torch.exp(-d2 / (2 * t**2)) / (2 * math.pi * t**2)
    return mean_and_se(k.T)


def mc_posterior_mean(target, y: torch.Tensor, t: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E[X | X + tε = y] by self-normalised importance sampling with the prior as proposal; delta-method SE."""
    x = target.sample(n, gen(seed)).double()
    logw = -torch.cdist(y.double(), x) ** 2 / (2 * t**2)  # [m, n]
    w = torch.softmax(logw, dim=1)
    est = w @ x  # [m, 2]
    resid = x[None, :, :] - est[:, None, :]  # [m, n, 2]
    se = torch.sqrt((w[:, :, None] ** 2 * resid**2).sum(1))
    return est, se


# score = ∇ log p ----------------------------------------------------------------------------------------------

TARGETS = {
    "ring8": RING,
    "ring8_s0.3": RING.smoothed(0.3),
    "grid25": GRID,
    "grid25_s1": GRID.smoothed(1.0),
    "banana": BANANA,
    "banana_t0.01": BANANA.smoothed(0.01),
    "banana_t0.3": BANANA.smoothed(0.3),
    "banana_t2": BANANA.smoothed(2.0),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_score_is_the_gradient_of_log_prob(name):
    target = TARGETS[name]
    x = probe_points(target)
    exact, auto = target.score(x), autograd_score(target, x)
    assert exact.dtype == torch.float64 and torch.isfinite(exact).all()
    torch.testing.assert_close(exact, auto, rtol=1e-9, atol=1e-9)


def test_float32_inputs_keep_their_dtype():
    x = probe_points(BANANA).float()
    for target in TARGETS.values():
        assert target.log_prob(x).dtype == torch.float32 and target.score(x).dtype == torch.float32


# Gaussian mixtures ----------------------------------------------------------------------------------------------

def test_ring_and_grid_geometry():
    assert RING.means.shape == (8, 2) and GRID.means.shape == (25, 2)
    torch.testing.assert_close(RING.means.norm(dim=1), torch.full((8,), RING8_RADIUS, dtype=torch.float64))
    ticks = sorted(set(GRID.means[:, 0].tolist()))
    assert ticks == pytest.approx([-2 * GRID25_SPACING, -GRID25_SPACING, 0.0, GRID25_SPACING, 2 * GRID25_SPACING])
    # component(): equal weights and stds, so the most responsible mode is the nearest mean
    x = probe_points(GRID, 200)
    assert torch.equal(GRID.component(x), torch.cdist(x, GRID.means).argmin(1))
    assert torch.equal(RING.component(RING.means), torch.arange(8))


@pytest.mark.parametrize("target,var", [
    (RING, RING8_RADIUS**2 / 2 + RING8_STD**2),  # Σ_j cos²(2πj/8) / 8 = 1/2
    (GRID, GRID25_SPACING**2 * 2 + GRID25_STD**2),  # E[k²] = 2 for k uniform on {−2..2}
])
def test_mixture_sample_moments(target, var):
    x = target.sample(40_000, gen(1)).double()
    stats_ = torch.cat([x, x**2, x[:, :1] * x[:, 1:]], dim=1)  # E x, E x², E x1 x2
    est, se = mean_and_se(stats_)
    exact = torch.tensor([0.0, 0.0, var, var, 0.0], dtype=torch.float64)
    assert ((est - exact).abs() <= 5 * se).all(), (est, exact, se)


@pytest.mark.parametrize("target,s", [(RING, 0.3), (GRID, 0.15), (GRID, 1.0)])
def test_smoothed_mixture_density_matches_monte_carlo_convolution(target, s):
    y = target.smoothed(s).sample(6, gen(5)).double()
    mc, se = mc_density(target, y, s, 400_000, seed=7)
    exact = target.smoothed(s).log_prob(y).exp()
    assert (se / mc < 0.03).all()  # informative: 5 SE is < 15 % of the density (unsmoothed would be off ×1.5 or more)
    assert ((mc - exact).abs() <= 5 * se).all(), (mc, exact, se)


def test_mixture_denoiser_is_the_posterior_mean():
    """Tweedie: y + s² ∇ log p_s(y) = E[X | X + sε = y]."""
    s = 0.5
    y = torch.tensor([[2.1, 0.3], [1.2, 1.2], [0.0, 0.0], [-1.0, 1.9], [3.0, -3.0]], dtype=torch.float64)
    mc, se = mc_posterior_mean(RING, y, s, 200_000, seed=3)
    tweedie = RING.denoiser(y, s)
    assert ((mc - tweedie).abs() <= 5 * se + 1e-12).all(), (mc, tweedie, se)


def test_mixture_smoothing_is_exact_for_a_single_gaussian():
    """One Gaussian N(μ, σ²) smoothed by s is N(μ, σ² + s²): compare with scipy."""
    g = GaussianMixture(torch.tensor([[0.5, -1.0]]), 0.3).smoothed(0.4)
    y = probe_points(g, 16)
    ref = stats.multivariate_normal([0.5, -1.0], 0.25 * np.eye(2)).logpdf(y.numpy())
    np.testing.assert_allclose(g.log_prob(y).numpy(), ref, rtol=1e-12)


# banana ---------------------------------------------------------------------------------------------------------

def test_banana_log_prob_matches_scipy():
    x = probe_points(BANANA).numpy()
    m = BANANA_B * (x[:, 0] ** 2 - BANANA_A**2)
    ref = stats.norm(0, BANANA_A).logpdf(x[:, 0]) + stats.norm(m, BANANA_S).logpdf(x[:, 1])
    np.testing.assert_allclose(BANANA.log_prob(torch.as_tensor(x)).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_banana_densities_integrate_to_one(t):
    """Trapezoid rule, spacing 0.1, over a box holding all but ~1e-8 of the mass (measured: |1 − total| < 3e-7)."""
    target = BANANA.smoothed(t)
    x1 = torch.linspace(-8, 8, 161, dtype=torch.float64)
    x2 = torch.linspace(-6, 26, 321, dtype=torch.float64)
    dens = target.log_prob(torch.cartesian_prod(x1, x2)).exp().reshape(len(x1), len(x2))
    total = torch.trapezoid(torch.trapezoid(dens, x2, dim=1), x1)
    assert float(total) == pytest.approx(1.0, abs=1e-6)


def test_banana_sample_moments():
    a, b, s = BANANA_A, BANANA_B, BANANA_S
    x = BANANA.sample(100_000, gen(2)).double()
    stats_ = torch.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1], x[:, 0] ** 2 * x[:, 1]], 1)
    est, se = mean_and_se(stats_)
    exact = torch.tensor([0.0, 0.0, a**2, s**2 + 2 * b**2 * a**4, 0.0, 2 * b * a**4], dtype=torch.float64)
    assert ((est - exact).abs() <= 5 * se).all(), (est, exact, se)
    t = 0.7  # smoothing adds t² to each variance and leaves the other moments
    xt = BANANA.smoothed(t).sample(100_000, gen(3)).double()
    est_t, se_t = mean_and_se(torch.stack([xt[:, 0] ** 2, xt[:, 1] ** 2], 1))
    assert ((est_t - exact[2:4] - t**2).abs() <= 5 * se_t).all()


def _adaptive_reference(y1: float, y2: float, t: float) -> float:
    """log p_t(y) by scipy's adaptive quadrature of ∫ N(x1; 0, a²) N(y1; x1, t²) N(y2; m(x1), s² + t²) dx1,
    with the integrand's peak located on a dense grid (independent of SmoothedBanana's root finding)."""
    a, b, s = BANANA_A, BANANA_B, BANANA_S
    v = s**2 + t**2

    def log_h(x):
        return (stats.norm.logpdf(x, 0, a) + stats.norm.logpdf(y1, x, t) + stats.norm.logpdf(y2, b * (x**2 - a**2),
                                                                                              math.sqrt(v)))

    xs = np.linspace(-15, 15, 300_001)
    lh = log_h(xs)
    peak, c = xs[lh.argmax()], lh.max()
    above = xs[lh > c - 60]
    val, _ = integrate.quad(lambda x: math.exp(log_h(x) - c), above.min() - 0.01, above.max() + 0.01,
                            points=[peak], epsabs=0, epsrel=1e-12, limit=500)
    return math.log(val) + c


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_smoothed_banana_matches_adaptive_quadrature(t):
    y = torch.tensor([[0.0, -0.8], [1.5, 1.0], [-2.0, 2.5], [0.0, 3.0], [5.0, -5.0], [-4.0, 6.0]], dtype=torch.float64)
    ours = BANANA.smoothed(t).log_prob(y)
    ref = torch.tensor([_adaptive_reference(float(p[0]), float(p[1]), t) for p in y], dtype=torch.float64)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


def test_smoothed_banana_matches_monte_carlo_convolution():
    t = 0.3
    y = BANANA.smoothed(t).sample(6, gen(8)).double()
    mc, se = mc_density(BANANA, y, t, 400_000, seed=9)
    exact = BANANA.smoothed(t).log_prob(y).exp()
    assert (se / mc < 0.03).all()
    assert ((mc - exact).abs() <= 5 * se).all(), (mc, exact, se)


def test_smoothed_banana_denoiser_is_the_posterior_mean():
    t = 0.5
    y = torch.tensor([[0.0, -0.5], [1.5, 1.0], [-1.0, 0.5], [0.3, 2.0]], dtype=torch.float64)
    mc, se = mc_posterior_mean(BANANA, y, t, 200_000, seed=4)
    tweedie = BANANA.denoiser(y, t)
    assert ((mc - tweedie).abs() <= 5 * se).all(), (mc, tweedie, se)


def test_smoothed_banana_limits_and_composition():
    y = probe_points(BANANA, 32)
    # t → 0 recovers the exact banana: the gap is (t²/2)(Δ log p + |∇ log p|²) + O(t⁴), ~1e-5 on samples
    x = BANANA.sample(64, gen(6)).double()
    torch.testing.assert_close(BANANA.smoothed(1e-3).log_prob(x), BANANA.log_prob(x), rtol=0, atol=1e-3)
    # smoothing twice adds variances
    twice = BANANA.smoothed(0.3).smoothed(0.4)
    assert isinstance(twice, SmoothedBanana) and twice.t == pytest.approx(0.5)
    assert BANANA.smoothed(0) is BANANA
    # very large t: p_t ≈ N(0, Σ + t² I) with Σ = diag(a², s² + 2b²a⁴) (same first two moments)
    t = 30.0
    cov = np.diag([BANANA_A**2 + t**2, BANANA_S**2 + 2 * BANANA_B**2 * BANANA_A**4 + t**2])
    ref = stats.multivariate_normal(np.zeros(2), cov).logpdf(y.numpy())
    np.testing.assert_allclose(BANANA.smoothed(t).log_prob(y).numpy(), ref, atol=1e-3)
    with pytest.raises(ValueError):
        SmoothedBanana(BANANA, -1.0)


# the data sets built on them ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [Ring8, Grid25, BananaData])
def test_toy_datasets_are_fixed_and_mostly_inside_their_box(cls):
    ds, again = cls(), cls()
    train, labels = ds.split("train")
    test, _ = ds.split("test")
    assert labels is None and train.shape == (10_000, 2) and test.shape == (2_000, 2) and train.dtype == torch.float32
    assert torch.equal(train, again.split("train")[0]) and torch.equal(test, again.split("test")[0])
    assert not torch.equal(train[:2000], test)
    lo, hi = ds.value_range
    assert isinstance(lo, float) and isinstance(hi, float)
    inside = ((train >= lo) & (train <= hi)).all(1).float().mean()
    assert inside > 0.99
    spec = ds.spec
    assert (spec.kind, spec.shape, spec.num_classes, spec.train_size, spec.test_size) == ("vector", (2,), None,
                                                                                         10_000, 2_000)
    assert ds.target.log_prob(train[:100].double()).isfinite().all()
