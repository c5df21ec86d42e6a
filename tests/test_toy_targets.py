"""The sampler-track targets (issue 13) and `moments()` on every toy target, against known answers: closed forms,
scipy (densities, adaptive quadrature, KS tests), autograd and Monte Carlo. Monte-Carlo comparisons allow 5
standard errors estimated from the same samples; seeds are fixed, so the tests are deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from harness.datasets import data_fingerprint
from harness.metrics.toy import is_mixture
from harness.toy import (
    Banana,
    Gaussian,
    GaussianMixture,
    ManyWell,
    SmoothedManyWell,
    _well,
    geometric_weights,
    ring_mixture,
    smoothed_well,
)
from plugins.datasets import (
    GMM40,
    TOY_DATASETS,
    BananaData,
    Grid25,
    IllGaussian32,
    IllGaussian100,
    ManyWell32,
    Ring8,
    Unequal2,
    Unequal10,
)

GMM = GMM40().target
ILL32, ILL100 = IllGaussian32().target, IllGaussian100().target
MW = ManyWell32().target
UNEQ2, UNEQ10 = Unequal2().target, Unequal10().target
SMALL_WELL = ManyWell(1)  # one 2-D double-well factor


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def well_log_unnorm(x):
    return -(x**4) + 6 * x**2 + 0.5 * x


def well_log_z() -> float:
    """log ∫ exp(−x⁴ + 6x² + x/2) dx by scipy's adaptive quadrature (independent of `_Well`'s trapezoid)."""
    c = 10.0
    val, _ = integrate.quad(lambda x: math.exp(well_log_unnorm(x) - c), -np.inf, np.inf, epsabs=0, epsrel=1e-13,
                            limit=200, points=None)
    return math.log(val) + c


def autograd_score(target, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(target.log_prob(x).sum(), x)
    return g


def grid_integral_2d(target, lo: float, hi: float, n: int) -> float:
    """∫ p over [lo, hi]² by the trapezoid rule on an n × n grid (the densities are smooth and negligible at the
    edges, so the rule converges geometrically)."""
    g = torch.linspace(lo, hi, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = target.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp()
    return float(p.sum() * (g[1] - g[0]) ** 2)


# parameters -----------------------------------------------------------------------------------------------------

def test_gmm40_parameters():
    assert GMM.means.shape == (40, 2) and GMM.means.abs().max() <= 40
    torch.testing.assert_close(GMM.stds, torch.ones(40, dtype=torch.float64))
    torch.testing.assert_close(GMM.weights, torch.full((40,), 1 / 40, dtype=torch.float64))
    # the means are the seeded uniform draw the docstring describes
    expected = (torch.rand((40, 2), generator=gen(0)) - 0.5) * 2 * 40
    torch.testing.assert_close(GMM.means, expected.double())


@pytest.mark.parametrize("target", [ILL32, ILL100])
def test_ill_gaussian_condition_number_and_rotation(target):
    d = target.dim
    assert d in (32, 100)
    eig = torch.linalg.eigvalsh(target.cov)
    assert float(eig.max() / eig.min()) == pytest.approx(100.0, rel=1e-8)
    assert target.condition_number == pytest.approx(100.0)
    torch.testing.assert_close(target.eigvecs.T @ target.eigvecs, torch.eye(d, dtype=torch.float64))
    assert (target.cov - torch.diag(target.cov.diagonal())).abs().max() > 0.01  # rotated: not diagonal


@pytest.mark.parametrize("target", [UNEQ2, UNEQ10])
def test_unequal_mixtures_span_a_factor_of_ten(target):
    w = target.weights
    assert w.shape == (5,) and float(w.sum()) == pytest.approx(1.0)
    assert float(w.max() / w.min()) == pytest.approx(10.0)
    torch.testing.assert_close(w, geometric_weights(5, 10.0))
    d = torch.cdist(target.means, target.means) + 1e9 * torch.eye(5, dtype=torch.float64)
    assert float(d.min()) >= 6.0
    assert target.modes is not None and is_mixture(target)


# densities and scores -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, lo, hi, n", [(GMM, -48.0, 48.0, 481), (UNEQ2, -15.0, 15.0, 301),
                                               (SMALL_WELL, -8.0, 8.0, 801)])
def test_2d_densities_integrate_to_one(target, lo, hi, n):
    assert grid_integral_2d(target, lo, hi, n) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("target", [ILL32, ILL100])
def test_gaussian_log_prob_matches_scipy(target):
    x = target.sample(16, gen(1)).double() * 3
    ref = stats.multivariate_normal(np.zeros(target.dim), target.cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(target.log_prob(x).numpy(), ref, rtol=1e-10)
    s = 0.7
    cov_s = target.cov + s**2 * torch.eye(target.dim, dtype=torch.float64)
    ref_s = stats.multivariate_normal(np.zeros(target.dim), cov_s.numpy())
    np.testing.assert_allclose(target.smoothed(s).log_prob(x).numpy(), ref_s.logpdf(x.numpy()), rtol=1e-10)


def test_many_well_log_prob_is_the_normalised_product():
    log_z = well_log_z()
    assert _well().log_z == pytest.approx(log_z, abs=1e-12)
    x = MW.sample(8, gen(2)).double()
    ref = (well_log_unnorm(x[:, 0::2]) - log_z).sum(1) + torch.distributions.Normal(0, 1).log_prob(x[:, 1::2]).sum(1)
    torch.testing.assert_close(MW.log_prob(x), ref, rtol=0, atol=1e-10)
    assert MW.dim == 32 and MW.modes is None and not is_mixture(MW)
    # component: the sign pattern of the double-well coordinates as bits
    lab = MW.component(x)
    bits = (x[:, 0::2] > 0).long()
    assert torch.equal(lab, (bits * 2 ** torch.arange(16)).sum(1))


@pytest.mark.parametrize("name", ["gmm40", "ill32", "many_well", "many_well_s", "uneq10"])
def test_score_is_the_gradient_of_log_prob(name):
    target = {"gmm40": GMM, "ill32": ILL32, "many_well": MW, "many_well_s": MW.smoothed(0.4),
              "uneq10": UNEQ10}[name]
    x = target.sample(32, gen(3)).double()
    x = torch.cat([x, x + torch.randn(x.shape, generator=gen(4), dtype=torch.float64)])
    torch.testing.assert_close(target.score(x), autograd_score(target, x), rtol=1e-9, atol=1e-9)


# the smoothed ManyWell ------------------------------------------------------------------------------------------

def adaptive_smoothed_well(y: float, t: float, log_z: float) -> float:
    """log (q * N(0, t²))(y) by scipy's adaptive quadrature, the integrand's peak found on a dense grid."""
    xs = np.linspace(-8, 14, 220_001)
    lh = well_log_unnorm(xs) - (xs - y) ** 2 / (2 * t * t)
    c, peak, above = lh.max(), xs[lh.argmax()], xs[lh > lh.max() - 60]
    val, _ = integrate.quad(lambda x: math.exp(well_log_unnorm(x) - (x - y) ** 2 / (2 * t * t) - c),
                            above.min() - 0.01, above.max() + 0.01, points=[peak], epsabs=0, epsrel=1e-13,
                            limit=500)
    return math.log(val) + c - log_z - 0.5 * math.log(2 * math.pi * t * t)


@pytest.mark.parametrize("t", [0.003, 0.05, 0.4, 2.0, 20.0])
def test_smoothed_well_matches_adaptive_quadrature(t):
    ys = [-6.0, -1.7, -0.2, 0.0, 1.0, 1.75, 4.0, 12.0]
    ours, _ = smoothed_well(torch.tensor(ys, dtype=torch.float64), t)
    log_z = well_log_z()
    ref = torch.tensor([adaptive_smoothed_well(y, t, log_z) for y in ys], dtype=torch.float64)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


def test_smoothed_many_well_matches_monte_carlo_convolution():
    t = 0.3
    y = SMALL_WELL.smoothed(t).sample(6, gen(5)).double()
    x = SMALL_WELL.sample(200_000, gen(6)).double()
    k = torch.exp(-torch.cdist(y, x) ** 2 / (2 * t**2)) / (2 * math.pi * t**2)  # [6, n]
    mc, se = k.mean(1), k.std(1) / math.sqrt(x.shape[0])
    exact = SMALL_WELL.smoothed(t).log_prob(y).exp()
    assert ((mc - exact).abs() <= 5 * se).all(), (mc, exact, se)


def test_smoothed_many_well_denoiser_is_the_posterior_mean():
    t = 0.5
    y = torch.tensor([[0.0, 0.0], [1.5, -1.0], [-1.2, 2.0], [0.4, 0.5]], dtype=torch.float64)
    x = SMALL_WELL.sample(200_000, gen(7)).double()
    logw = -torch.cdist(y, x) ** 2 / (2 * t**2)  # posterior ∝ p(x) N(y; x, t²): self-normalised weights
    w = torch.softmax(logw, dim=1)
    mc = w @ x
    ess = 1 / (w**2).sum(1)
    se = torch.sqrt((w[:, :, None] * (x[None] - mc[:, None]) ** 2).sum(1) / ess[:, None])
    assert ((mc - SMALL_WELL.denoiser(y, t)).abs() <= 5 * se).all()


def test_smoothed_many_well_limits_and_composition():
    x = MW.sample(16, gen(8)).double()
    assert MW.smoothed(0) is MW and GMM.smoothed(0).log_prob(x[:, :2]).shape == (16,)
    # t → 0 recovers the target (gap O(t²))
    torch.testing.assert_close(MW.smoothed(1e-4).log_prob(x), MW.log_prob(x), rtol=0, atol=1e-5)
    twice = MW.smoothed(0.3).smoothed(0.4)
    assert isinstance(twice, SmoothedManyWell) and twice.t == pytest.approx(0.5)
    # very large t: each coordinate ≈ N(E x, Var x + t²)
    t = 200.0
    mean, second = MW.moments()
    ref = torch.distributions.Normal(mean, torch.sqrt(second - mean**2 + t**2)).log_prob(x).sum(1)
    torch.testing.assert_close(MW.smoothed(t).log_prob(x), ref, rtol=0, atol=1e-3)


# samplers -------------------------------------------------------------------------------------------------------

def test_many_well_sampler_is_exact_ks():
    """KS test of every double-well coordinate against the quadrature CDF of q (and the Gaussian ones against
    N(0, 1)); 4,000 draws per coordinate."""
    x = MW.sample(4000, gen(9)).double()
    grid = np.linspace(-6, 6, 120_001)
    dens = np.exp(well_log_unnorm(grid) - well_log_z())
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))])
    assert cdf[-1] == pytest.approx(1.0, abs=1e-9)
    pooled = x[:, 0::2].reshape(-1).numpy()
    assert stats.kstest(pooled, lambda v: np.interp(v, grid, cdf)).pvalue > 1e-3
    for j in range(0, 32, 2):
        assert stats.kstest(x[:, j].numpy(), lambda v: np.interp(v, grid, cdf)).pvalue > 1e-4
    assert stats.kstest(x[:, 1::2].reshape(-1).numpy(), "norm").pvalue > 1e-3
    again = MW.sample(4000, gen(9))
    assert torch.equal(again, x.float())  # a pure function of the generator


# moments --------------------------------------------------------------------------------------------------------

def test_moments_closed_forms():
    mean, second = MW.moments()
    lz = well_log_z()
    m1 = integrate.quad(lambda v: v * math.exp(well_log_unnorm(v) - lz), -8, 8, epsabs=1e-13, limit=200)[0]
    m2 = integrate.quad(lambda v: v * v * math.exp(well_log_unnorm(v) - lz), -8, 8, epsabs=1e-13, limit=200)[0]
    torch.testing.assert_close(mean[0::2], torch.full((16,), m1, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(second[0::2], torch.full((16,), m2, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(mean[1::2], torch.zeros(16, dtype=torch.float64))
    torch.testing.assert_close(second[1::2], torch.ones(16, dtype=torch.float64))
    m, s2 = ILL100.moments()
    torch.testing.assert_close(m, torch.zeros(100, dtype=torch.float64))
    torch.testing.assert_close(s2, ILL100.cov.diagonal())
    single = GaussianMixture(torch.tensor([[1.0, -2.0]]), 0.5)
    m, s2 = single.moments()
    torch.testing.assert_close(m, torch.tensor([1.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(s2, torch.tensor([1.25, 4.25], dtype=torch.float64))
    m, s2 = UNEQ2.smoothed(0.5).moments()
    m0, s20 = UNEQ2.moments()
    torch.testing.assert_close(m, m0)
    torch.testing.assert_close(s2, s20 + 0.25)


@pytest.mark.parametrize("name", ["ring8", "banana", "banana_s", "gmm40", "ill32", "many_well", "many_well_s",
                                  "uneq2", "uneq10"])
def test_moments_match_large_exact_samples(name):
    target = {"ring8": ring_mixture(8, 2.0, 0.2), "banana": Banana(1.0, 0.8, 0.4),
              "banana_s": Banana(1.0, 0.8, 0.4).smoothed(0.6), "gmm40": GMM, "ill32": ILL32, "many_well": MW,
              "many_well_s": MW.smoothed(0.5), "uneq2": UNEQ2, "uneq10": UNEQ10}[name]
    x = target.sample(40_000, gen(10)).double()
    mean, second = target.moments()
    assert mean.dtype == second.dtype == torch.float64 and mean.shape == second.shape == (target.dim,)
    for est, exact in ((x, mean), (x**2, second)):
        se = est.std(0) / math.sqrt(x.shape[0])
        assert ((est.mean(0) - exact).abs() <= 5 * se).all(), (name, est.mean(0) - exact, se)


# the data sets ----------------------------------------------------------------------------------------------------

NEW = [GMM40, IllGaussian32, IllGaussian100, ManyWell32, Unequal2, Unequal10]


@pytest.mark.parametrize("cls", NEW)
def test_new_toy_datasets_are_fixed_and_inside_their_box(cls):
    ds, again = cls(), cls()
    train, labels = ds.split("train")
    test, _ = ds.split("test")
    d = ds.target.dim
    assert labels is None and train.shape == (10_000, d) and test.shape == (2_000, d)
    assert torch.equal(train, again.split("train")[0])
    lo, hi = ds.value_range
    assert ((train >= lo) & (train <= hi)).all(1).float().mean() > 0.99
    assert ds.target.log_prob(train[:100].double()).isfinite().all()


def test_registered_toy_names_and_unchanged_old_splits():
    assert [c.name for c in TOY_DATASETS] == ["ring8", "grid25", "banana", "gmm40", "ill_gaussian32",
                                              "ill_gaussian100", "many_well32", "unequal2", "unequal10"]
    # the training splits of the original toy sets, fingerprinted before the new targets were added
    fingerprints = {
        Ring8: "789ce49b8d503d5b2d962367fde41b393c6cc1cbd1569cb9fc7ceca44bdbff81",
        Grid25: "acf3bdff2c60dfeb2cad6871bc5355c6df0166ab27e4887890dcc9cf1e0cf76c",
        BananaData: "34bf73e0b0ed8b9e0fc3c39030ed1c2a4ae42def1a56dd86067319594f9c8dc7",
    }
    for cls, fp in fingerprints.items():
        assert data_fingerprint(cls().split("train")[0]) == fp, cls.name


def test_gaussian_rejects_bad_shapes():
    with pytest.raises(ValueError, match="eigvecs"):
        Gaussian(torch.zeros(3), torch.eye(2), torch.ones(3))
    with pytest.raises(ValueError, match="> 0"):
        Gaussian(torch.zeros(2), torch.eye(2), torch.tensor([1.0, 0.0]))
