"""The bias-versus-evaluations estimator (harness.metrics.bias) against analytic answers.

An AR(1) chain x_t = ρ x_{t−1} + √(1 − ρ²) ξ_t, stationary for N(0, 1), started at x_0: the running mean of its T
positions after the start has E[x̄_T] = x_0 ρ (1 − ρ^T) / ((1 − ρ) T), its running mean of x² has expectation
1 + (x_0² − 1) ρ² (1 − ρ^{2T}) / ((1 − ρ²) T), and the variance of the running mean is a finite double sum of the
covariances ρ^{|t−s|} (1 − ρ^{2 min(s, t)}). The pooled estimator must follow these, and its evaluations to 1% must
be the analytic crossing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.method import Chain
from harness.metrics import bias as B
from harness.toy import GaussianMixture

RHO = 0.9
X0 = 3.0


class AR1(Chain):
    """x_t = ρ x_{t−1} + √(1 − ρ²) ξ_t in d dimensions from a fixed start; readout = position (optionally paid)."""

    stationary = True

    def __init__(self, x0, rho=RHO, nfe_per_step=1, readout_nfe=0, readout_every=None):
        self.x0, self.rho = torch.as_tensor(x0, dtype=torch.float64), rho
        self.nfe_per_step, self.readout_nfe, self.readout_every = nfe_per_step, readout_nfe, readout_every
        self.readouts = 0

    def init(self, n, generator):
        return self.x0.expand(n, -1).clone()

    def step(self, x, generator):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return self.rho * x + math.sqrt(1 - self.rho**2) * noise

    def readout(self, x):
        self.readouts += 1
        return x.clone()

    def trace(self, x):
        return x


STANDARD_NORMAL = B.Moments.from_moments([0.0], [1.0], [3.0])


def analytic_mean_bias(t: np.ndarray, x0=X0, rho=RHO) -> np.ndarray:
    return x0 * rho * (1 - rho**t) / ((1 - rho) * t)


def analytic_second_bias(t: np.ndarray, x0=X0, rho=RHO) -> np.ndarray:
    return (x0**2 - 1) * rho**2 * (1 - rho ** (2 * t)) / ((1 - rho**2) * t)


def running_mean_sd(T: int, rho=RHO) -> np.ndarray:
    """Standard deviation of one chain's running mean x̄_t, t = 1..T, from a fixed start (exact)."""
    s = np.arange(1, T + 1)
    lo = np.minimum.outer(s, s)
    cov = rho ** np.abs(np.subtract.outer(s, s)) * (1 - rho ** (2 * lo))
    csum = np.cumsum(np.cumsum(cov, 0), 1)
    return np.sqrt(np.diag(csum)) / s


@pytest.fixture(scope="module")
def ar1_curves():
    chains, steps = 20_000, 600
    g = torch.Generator().manual_seed(0)
    return B.run_bias(AR1([X0]), STANDARD_NORMAL, chains, steps, g), chains, steps


def test_running_mean_bias_decays_at_the_analytic_rate(ar1_curves):
    curves, chains, steps = ar1_curves
    curve = curves["protocol"]
    assert curve.positions == "trace every step" and set(curves) == {"protocol"}
    t = np.arange(1, steps + 1)
    got = np.sqrt(curve.parts["mean"])  # |Ê[x] − 0| / 1
    sd = running_mean_sd(steps) / math.sqrt(chains)  # of the pooled estimate
    assert np.all(np.abs(got - analytic_mean_bias(t)) < 4.5 * sd)
    # a 1/T rate: T·bias tends to x0 ρ / (1 − ρ) = 27
    assert abs(steps * got[-1] - X0 * RHO / (1 - RHO)) < 0.1 * 27


def test_running_second_moment_bias_matches_the_analytic_curve(ar1_curves):
    curves, _, _ = ar1_curves
    t = np.arange(1, 201)
    got = np.sqrt(curves["protocol"].parts["second"][:200] * 2.0)  # Var[x²] = 2 for N(0, 1)
    np.testing.assert_allclose(got, analytic_second_bias(t), rtol=0.05)


def test_evals_to_tolerance_is_the_analytic_crossing(ar1_curves):
    curves, chains, steps = ar1_curves
    t = np.arange(1, steps + 1)
    exact = np.maximum(analytic_mean_bias(t) ** 2, analytic_second_bias(t) ** 2 / 2.0)
    t_star = int(t[np.nonzero(~(exact < B.TOLERANCE))[0][-1] + 1])
    assert 265 < t_star < 275  # 27 / T = 0.1 at T ≈ 270: the mean's bias decides
    evals, reached = B.evals_to_tolerance(exact, chains * t.astype(float))
    assert reached and evals == chains * t_star
    got, reached = curves["protocol"].to_tolerance
    # the estimate's own noise moves the crossing by sd / |d bias / dT| steps (sd of the pooled running mean)
    sd = running_mean_sd(t_star)[-1] / math.sqrt(chains)
    slope = X0 * RHO / (1 - RHO) / t_star**2
    assert reached and abs(got / chains - t_star) <= 4 * sd / slope + 1


def test_evals_to_tolerance_needs_the_curve_to_stay_below():
    evals = np.arange(1.0, 7.0)
    assert B.evals_to_tolerance(np.array([1, 0.005, 0.02, 0.008, 0.004, 0.001]), evals) == (4.0, True)
    assert B.evals_to_tolerance(np.array([1, 0.005, np.nan, 0.008, 0.004, 0.001]), evals) == (4.0, True)
    assert B.evals_to_tolerance(np.array([1, 0.5, 0.2, 0.08, 0.04, 0.02]), evals) == (6.0, False)
    assert B.evals_to_tolerance(np.full(6, 1e-4), evals) == (1.0, True)


def test_evaluations_charge_steps_and_paid_readouts():
    """A chain reading out every k = 5 steps at 1 NFE (walk-jump's protocol): the protocol curve has a point per
    readout, charged k·nfe_step + 1 per interval; the every-step curve charges nfe_step + 1 per step; the trace is
    charged steps only."""
    chain = AR1([X0, -1.0], nfe_per_step=2, readout_nfe=1, readout_every=5)
    c, steps = 16, 50
    curves = B.run_bias(chain, B.Moments.from_moments([0, 0], [1, 1], [3, 3]), c, steps,
                        torch.Generator().manual_seed(1))
    assert set(curves) == {"protocol", "every_step", "trace"}
    np.testing.assert_array_equal(curves["protocol"].evals, c * np.arange(1, 11) * (5 * 2 + 1))
    np.testing.assert_array_equal(curves["every_step"].evals, c * np.arange(1, 51) * 3)
    np.testing.assert_array_equal(curves["trace"].evals, c * np.arange(1, 51) * 2)
    # readout = position here, so the protocol curve is the every-step curve at every 5th step... only in Ê's
    # inputs: its running average is over the readouts alone
    assert chain.readouts == steps  # every step read once; the protocol's readouts reuse them
    # without the every-step curve, only the protocol's readouts are paid
    chain2 = AR1([X0, -1.0], readout_nfe=1, readout_every=5)
    B.run_bias(chain2, B.Moments.from_moments([0, 0], [1, 1], [3, 3]), 4, 50, torch.Generator().manual_seed(1),
               every_step=False)
    assert chain2.readouts == 10


def test_burn_in_leaves_points_out_of_the_estimate():
    s1 = np.array([[10.0], [0.0], [2.0], [4.0]])  # sums over 2 chains
    s2 = np.array([[50.0], [2.0], [2.0], [10.0]])
    m = B.Moments.from_moments([0.0], [1.0], [3.0])
    full = B.running_bias2(s1, s2, 2, m)
    np.testing.assert_allclose(full["mean"], [(10 / 2) ** 2, (10 / 4) ** 2, (12 / 6) ** 2, (16 / 8) ** 2])
    cut = B.running_bias2(s1, s2, 2, m, burn_in=1)
    assert np.isnan(cut["mean"][0])
    np.testing.assert_allclose(cut["mean"][1:], [0.0, (2 / 4) ** 2, (6 / 6) ** 2])
    np.testing.assert_allclose(cut["second"][1:], [(1 - 1) ** 2 / 2, (1 - 1) ** 2 / 2, (14 / 6 - 1) ** 2 / 2])


def test_mixture_moments_are_exact():
    mix = GaussianMixture(torch.tensor([[-2.0, 1.0], [1.0, 0.5], [3.0, -1.0]]), torch.tensor([0.3, 0.6, 0.2]),
                          torch.tensor([0.2, 0.5, 0.3]))
    m = B.target_moments(mix)
    x = mix.sample(400_000, torch.Generator().manual_seed(3)).double().numpy()
    n = x.shape[0]  # within 5 standard errors of the Monte Carlo estimates
    assert np.all(np.abs(m.mean - x.mean(0)) < 5 * x.std(0) / math.sqrt(n))
    assert np.all(np.abs(m.second - (x**2).mean(0)) < 5 * (x**2).std(0) / math.sqrt(n))
    assert np.all(np.abs(m.var2 - (x**2).var(0)) < 5 * ((x**2 - (x**2).mean(0)) ** 2).std(0) / math.sqrt(n))
    assert "closed form" in m.source


def test_a_targets_own_moments_win_and_the_fourth_falls_back_to_monte_carlo():
    class Gauss:  # N(1, 2²) in 2-D, with moments() as ToyTarget provides them
        dim = 2

        def moments(self):
            return torch.tensor([1.0, 1.0]), torch.tensor([5.0, 5.0])

        def sample(self, n, g):
            return 1 + 2 * torch.randn(n, 2, generator=g)

    m = B.target_moments(Gauss())
    np.testing.assert_array_equal(m.mean, [1.0, 1.0])
    np.testing.assert_array_equal(m.var, [4.0, 4.0])
    # Var[x²] of N(μ, s²) = 2 s⁴ + 4 μ² s² = 48
    np.testing.assert_allclose(m.var2, [48.0, 48.0], rtol=0.05)
    assert "ToyTarget.moments()" in m.source and "Monte Carlo" in m.source


def test_curve_details_are_thinned_and_json_ready(ar1_curves):
    curves, chains, _ = ar1_curves
    d = curves["protocol"].details()
    assert len(d["curve"]["evals"]) <= B.CURVE_POINTS and d["curve"]["evals"][0] == chains
    assert d["curve"]["evals"][-1] == chains * 600 and d["reached"]
    assert all(isinstance(v, float) for v in d["curve"]["bias2"])
