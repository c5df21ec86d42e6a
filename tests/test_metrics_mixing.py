"""Mixing diagnostics against known answers: AR(1) processes have τ = (1 + ρ)/(1 − ρ), ESS ≈ N/τ and a sign-change
rate arccos(ρ)/π; emcee's `integrated_time` is the reference implementation of Sokal's window."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from harness.method import Chain, randn
from harness.metrics import mixing as M


def ar1(rho: float, chains: int, steps: int, seed: int) -> np.ndarray:
    """Stationary AR(1): x_t = ρ x_{t−1} + sqrt(1 − ρ²) ε_t, started from N(0, 1) (exact stationary start)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((chains, steps))
    x0 = rng.standard_normal(chains)
    x, _ = lfilter([math.sqrt(1 - rho**2)], [1, -rho], eps, axis=1, zi=(rho * x0)[:, None])
    return x


@pytest.mark.parametrize("rho, chains, steps", [(0.5, 1, 400_000), (0.9, 32, 100_000)])
def test_ar1_tau_within_5_percent(rho, chains, steps):
    x = ar1(rho, chains, steps, seed=1)
    tau = M.integrated_autocorr_time(x[0] if chains == 1 else x)
    exact = (1 + rho) / (1 - rho)
    assert abs(tau / exact - 1) < 0.05, (tau, exact)


@pytest.mark.parametrize("rho, chains", [(0.3, 1), (0.7, 4), (0.95, 8)])
def test_matches_emcee_integrated_time(rho, chains):
    emcee = pytest.importorskip("emcee", reason="emcee is a test-only dependency (pip install emcee)")
    x = ar1(rho, chains, 20_000, seed=2)
    ours = M.integrated_autocorr_time(x)
    ref = emcee.autocorr.integrated_time(x.T[:, :, None], c=5, quiet=True)[0]  # emcee: [steps, walkers, dims]
    assert ours == pytest.approx(ref, rel=1e-10)
    if chains == 1:
        assert M.integrated_autocorr_time(x[0]) == pytest.approx(ref, rel=1e-10)


def test_autocorrelation_is_linear_not_circular():
    x = np.sin(np.arange(64) * 0.3) + np.random.default_rng(0).standard_normal(64)
    x = x - x.mean()
    direct = np.array([np.dot(x[: 64 - t], x[t:]) for t in range(64)]) / np.dot(x, x)
    np.testing.assert_allclose(M.autocorrelation_1d(x), direct, atol=1e-12)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\[chains, steps\]"):
        M.integrated_autocorr_time(np.zeros((2, 3, 4)))


def test_label_changes_per_1k():
    labels = np.array([[0, 0, 1, 1, 0], [2, 2, 2, 2, 2]])  # 2 changes in 2 chains × 4 transitions
    assert M.label_changes_per_1k(labels) == pytest.approx(1000 * 2 / 8)


class AR1Chain(Chain):
    """A 2-D AR(1) chain: stationary N(0, I), τ = (1 + ρ)/(1 − ρ) per coordinate; optional offset start."""

    stationary = True
    nfe_per_step = 3

    def __init__(self, rho: float, start: float | None = None):
        self.rho, self.start = rho, start

    def init(self, n, g):
        if self.start is None:
            return randn((n, 2), g)
        return torch.linspace(-self.start, self.start, n)[:, None].repeat(1, 2)

    def step(self, x, g):
        return self.rho * x + math.sqrt(1 - self.rho**2) * randn(x.shape, g)

    def readout(self, x):
        return x


def test_run_chain_diagnostics_on_ar1_chain():
    rho, C, K = 0.8, 8, 5000
    stats = M.coordinate_statistics(2)
    diag = M.run_chain_diagnostics(AR1Chain(rho), C, 50, K, stats, labeler=lambda x: (x[:, 0] > 0).long(),
                                   generator=torch.Generator().manual_seed(0))
    tau = (1 + rho) / (1 - rho)
    assert diag.names == ["x0", "x1"]
    for t in diag.tau:
        assert t == pytest.approx(tau, rel=0.1)
    for e in diag.ess_bulk:  # ESS ≈ C·K/τ
        assert e == pytest.approx(C * K / tau, rel=0.2)
    assert max(diag.rhat) < 1.01
    # sign changes of a stationary Gaussian AR(1): P(sign x_t ≠ sign x_{t+1}) = arccos(ρ)/π
    assert diag.mode_hops_per_1k == pytest.approx(1000 * math.acos(rho) / math.pi, rel=0.05)
    s = diag.summary()
    assert diag.nfe == C * K * 3
    assert s["ess_bulk_per_1k_nfe"] == pytest.approx(1000 * s["ess_bulk"] / (C * K * 3))
    assert s["ess_bulk_per_second"] > 0 and s["reliable"]


def test_rhat_flags_chains_that_do_not_mix():
    """Chains started far apart with ρ ≈ 1 stay apart: split-R̂ ≫ 1 and ESS ≪ number of draws."""
    diag = M.run_chain_diagnostics(AR1Chain(0.9999, start=5.0), 4, 0, 400, M.coordinate_statistics(2),
                                   generator=torch.Generator().manual_seed(0))
    assert min(diag.rhat) > 1.5
    assert max(diag.ess_bulk) < 0.05 * 4 * 400
    assert not diag.summary()["reliable"]


def test_projection_statistics_fixed_and_unit():
    a, b = M.projection_statistics(5, 3, seed=0), M.projection_statistics(5, 3, seed=0)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a(x), b(x))
    eye = torch.eye(5)
    u = a(eye).T  # rows: the directions
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3, dtype=torch.float64))
