"""walk_jump against known answers: the exact M-density of a Gaussian mixture (computed in R^{Md} as a mixture
of correlated Gaussians, independently of the factorisation the plugin uses), the paper's spectral claim, the
Bayes risk of the loss, an oracle-driven walk, honest NFE counts, and a short training run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from oracle_wj_ssm import (
    MIX3,
    SPEC2,
    Counting,
    m_density_log_prob,
    m_density_score,
    mlp_factory,
    mmd2,
    mmd_floor,
    posterior_mean,
    train,
)

from harness.backbones import BackboneFactory
from harness.datasets import DataSpec
from harness.errors import ConfigError
from harness.metrics.mixing import integrated_autocorr_time, sokal_window
from harness.runner import seeded_init
from plugins.backbones import UNet
from plugins.walk_jump import PARAMETRISATIONS, WalkJump, WalkJumpConfig, WalkState, underdamped_langevin_step

SIGMA, M = 1.0, 4
TAU = SIGMA / math.sqrt(M)


def oracle_model(parametrisation: str, sigma: float = SIGMA, m: int = M, **cfg):
    """The plugin's own exact model (`WalkJump.oracle`): its parametrisation with the exact answer in the network
    slot, so the real code path runs."""
    method = WalkJump(WalkJumpConfig(parametrisation=parametrisation, sigma=sigma, M=m, **cfg), SPEC2)
    return method, method.oracle(MIX3)


def jump_law(tau):
    """Exact law of the jump at stationarity: E[X | ȳ] with ȳ ~ p_τ drawn exactly from the smoothed mixture."""
    smoothed = MIX3.smoothed(tau)
    return lambda n, g: MIX3.denoiser(smoothed.sample(n, g).double(), tau).float()


# the M-density score, exactly ------------------------------------------------------------------------------

@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
def test_oracle_scores_equal_the_autograd_score_of_the_exact_m_density(parametrisation):
    """Universal: (x̂(ȳ) − y_m)/σ² with the exact denoiser at σ/√M; MDAE: exact estimates per measurement; energy:
    autograd of the exact −log p(y). All must equal ∇_y log p(y) of the mixture over components in R^{Md}."""
    method, model = oracle_model(parametrisation)
    g = torch.Generator().manual_seed(0)
    x = MIX3.sample(64, g).double()
    y = torch.cat([method.measure(x, g), 3 * torch.randn(16, M, 2, generator=g, dtype=torch.float64)])  # + far off
    exact = m_density_score(MIX3, y, SIGMA)
    got = model.score(y)
    assert got.shape == y.shape
    torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-9)
    # the jump is the posterior mean E[X | y] = ȳ + (σ²/M) Σ_m ∇_{y_m} log p(y), also computed independently
    chain = method.chain(model)
    torch.testing.assert_close(chain.readout(WalkState(y, torch.zeros_like(y))), posterior_mean(MIX3, y, SIGMA),
                               rtol=1e-9, atol=1e-9)
    if parametrisation == "energy":  # the oracle's free energy is −log p(y) itself, constant included
        torch.testing.assert_close(model.free_energy(y), -m_density_log_prob(MIX3, y, SIGMA), rtol=1e-10, atol=1e-10)


def test_universal_is_permutation_equivariant_and_mdae_is_not():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(32, 8, 2, generator=g)
    perm = torch.randperm(8, generator=g)
    scores = {}
    for p in ("universal", "mdae"):
        method = WalkJump(WalkJumpConfig(parametrisation=p, sigma=1.0, M=8), SPEC2)
        with seeded_init(3):
            model = method.build_model(mlp_factory(width=16, depth=1))
        scores[p] = (model.score(y)[:, perm], model.score(y[:, perm]))
    torch.testing.assert_close(*scores["universal"], rtol=1e-5, atol=1e-6)
    assert (scores["mdae"][0] - scores["mdae"][1]).abs().max() > 1e-3  # a generic stacked net is not equivariant


def test_loss_with_the_exact_denoiser_is_the_bayes_risk():
    """E(1/M)Σ‖x − x̂_m(y)‖² at the oracle is E_ȳ tr Cov(X | ȳ) (ȳ ~ p_τ drawn exactly, independent of the loss's
    noise); an estimate shifted by δ costs exactly ‖δ‖² more."""
    method, model = oracle_model("universal")
    g = torch.Generator().manual_seed(2)
    n = 100_000
    x = MIX3.sample(n, g).double()
    loss = method.loss(model, x, g)
    assert loss.shape == (n,)
    ybar = MIX3.smoothed(TAU).sample(n, g).double()
    var_k = 1 / (1 / MIX3.stds**2 + 1 / TAU**2)  # X | ȳ, k ~ N(m_k, v_k I)
    m_k = var_k[None, :, None] * (MIX3.means[None] / MIX3.stds[None, :, None] ** 2 + ybar[:, None] / TAU**2)
    r = MIX3.smoothed(TAU).responsibilities(ybar)
    second = (r * (MIX3.dim * var_k[None] + m_k.pow(2).sum(2))).sum(1)
    risk = (second - (r[:, :, None] * m_k).sum(1).pow(2).sum(1)).mean().item()
    assert abs(loss.mean().item() - risk) < 0.03 * risk, (loss.mean().item(), risk)

    shift = torch.tensor([0.1, -0.2], dtype=torch.float64)
    base = model.denoise
    model.denoise = lambda ybar: base(ybar) + shift
    worse = method.loss(model, x, torch.Generator().manual_seed(2)).mean().item()
    model.denoise = base
    same = method.loss(model, x, torch.Generator().manual_seed(2)).mean().item()
    assert abs(worse - same - shift.pow(2).sum().item()) < 0.01  # cross term averages to 0 (error ⟂ estimate)


# the spectral claim -------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 2, 4, 16, 64])
def test_m_density_condition_number_of_gaussian_data(m):
    """x ~ N(μ, Σ), y = 1⊗x + σε: Cov y = 11ᵀ⊗Σ + σ²I has eigenvalues σ² ((M−1)d times) and Mλ_i + σ², so the
    condition number is 1 + Mλ_max(Σ)/σ² (Saremi & Srivastava 2022). Checked against numerical eigenvalues."""
    g = torch.Generator().manual_seed(m)
    d, sigma = 3, 0.7
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov_x = a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)
    lam = torch.linalg.eigvalsh(cov_x)
    cov_y = torch.kron(torch.ones(m, m, dtype=torch.float64), cov_x) + sigma**2 * torch.eye(m * d, dtype=torch.float64)
    eig = torch.linalg.eigvalsh(cov_y)
    predicted = torch.cat([torch.full(((m - 1) * d,), sigma**2, dtype=torch.float64), m * lam + sigma**2]).sort().values
    torch.testing.assert_close(eig, predicted, rtol=1e-10, atol=1e-10)
    # the claim needs M ≥ 2 (someone must supply the σ² eigenvalues); one measurement is ordinary smoothing
    kappa = 1 + m * lam.max() / sigma**2 if m >= 2 else (lam.max() + sigma**2) / (lam.min() + sigma**2)
    assert abs(eig.max() / eig.min() - kappa) < 1e-8 * kappa


def test_the_methods_noise_model_has_the_m_density_covariance():
    """The plugin's `measure` draws y with Cov = 11ᵀ⊗Σ + σ²I (sample covariance of 200k draws, 3 % in Frobenius)."""
    method = WalkJump(WalkJumpConfig(sigma=0.7, M=3), SPEC2)
    g = torch.Generator().manual_seed(4)
    cov_x = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    x = (torch.randn(200_000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov_x).T)
    y = method.measure(x, g).reshape(len(x), -1)
    emp = torch.cov(y.T)
    exact = torch.kron(torch.ones(3, 3, dtype=torch.float64), cov_x) + 0.49 * torch.eye(6, dtype=torch.float64)
    assert (emp - exact).norm() < 0.03 * exact.norm()


# the walk with the oracle ------------------------------------------------------------------------------

def test_oracle_walk_samples_the_m_density_and_jumps_land_on_the_jump_law():
    """Parallel chains from uniform noise, 300 walk steps at the default δ = 0.5σ, γ = 0.5: ȳ ~ p_τ (the mixture
    smoothed at τ = σ/√M), y_m − ȳ has variance σ²(M−1)/M, and the jumps follow the law of E[X | ȳ]. Thresholds:
    1.5 × the largest of 20 real-vs-real MMD² at the same n (room for the O(δ²) discretisation bias)."""
    method, model = oracle_model("universal", steps=300)
    n, g = 1000, torch.Generator().manual_seed(5)
    chain = method.chain(model)
    state = chain.init(n, g)
    for _ in range(method.config.steps):
        state = chain.step(state, g)
    ybar, jumps = state.y.mean(1), chain.readout(state)
    smoothed = MIX3.smoothed(TAU)
    floor_y, floor_j = mmd_floor(smoothed.sample, n, g), mmd_floor(jump_law(TAU), n, g)
    assert mmd2(ybar, smoothed.sample(n, g)) < 1.5 * floor_y
    assert mmd2(jumps, jump_law(TAU)(n, g)) < 1.5 * floor_j
    # power: the unsmoothed target is rejected for ȳ, and so is the target for the jumps (τ = 0.5 is not small)
    assert mmd2(MIX3.sample(n, g), smoothed.sample(n, g)) > 3 * floor_y
    assert mmd2(MIX3.sample(n, g), jump_law(TAU)(n, g)) > 3 * floor_j
    resid = (state.y - ybar[:, None]).var().item()
    assert abs(resid - SIGMA**2 * (M - 1) / M) < 0.05 * SIGMA**2 * (M - 1) / M


def test_one_long_oracle_chain_visits_the_modes_with_the_right_frequencies():
    """A single chain, 2000 jumps, one every k = 10 steps: the fraction of jumps per mode matches the jump law's
    (±0.08), so the walk crosses between separated modes."""
    method, model = oracle_model("universal")
    g = torch.Generator().manual_seed(6)
    res = method.long_chain(model, n_jumps=2000, generator=g, burn_in=50)
    assert res.samples.shape == (2000, 2)
    assert res.info["total_nfe"] == 50 + 2000 * 11 and res.nfe == round((50 + 2000 * 11) / 2000) == 11
    comp = MIX3.component(res.samples)
    assert (comp[1:] != comp[:-1]).sum() > 100  # it hops between modes (about once every 6 jumps)
    got = torch.bincount(comp, minlength=3).double() / 2000
    want = torch.bincount(MIX3.component(jump_law(TAU)(20_000, g)), minlength=3).double() / 20_000
    assert (got - want).abs().max() < 0.08, (got, want)


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
def test_nfe_is_counted_honestly(parametrisation):
    """Network calls counted at the network: K steps cost K evaluations (an energy's forward+backward is one), the
    jump one more; `sample` and `long_chain` report exactly what they spent, and energies count gradients."""
    method, model = oracle_model(parametrisation, steps=7)
    slot = "energy" if parametrisation == "energy" else "net"
    counter = Counting(getattr(model, slot))
    setattr(model, slot, counter)
    g = torch.Generator().manual_seed(7)
    res = method.sample(model, 5, g)
    assert res.nfe == counter.calls == 7 + 1 and res.samples.shape == (5, 2)
    assert method.chain(model).nfe_per_step == 1
    counter.calls = 0
    res = method.long_chain(model, n_jumps=3, generator=g, jump_every=4, burn_in=2)
    assert res.info["total_nfe"] == counter.calls == 2 + 3 * (4 + 1)
    chain = method.chain(model)
    assert chain.grad_evals_per_step == int(parametrisation == "energy")
    assert res.info.get("grad_evals", 0) == (2 + 3 * (4 + 1)) / 3 * int(parametrisation == "energy")


def test_score_fn_is_the_smoothed_score_at_sigma_over_root_m():
    method, model = oracle_model("universal")
    fn, level = method.score_fn(model)
    assert level == TAU
    x = MIX3.sample(50, torch.Generator().manual_seed(8)).double()
    torch.testing.assert_close(fn(x), MIX3.smoothed(TAU).score(x), rtol=1e-9, atol=1e-9)
    method, model = oracle_model("mdae")
    assert method.score_fn(model) is None


def test_friction_convention_is_exp_minus_gamma_delta():
    """With a flat potential the O-step alone acts: v' = e^{−γδ} v + √(u(1 − e^{−2γδ})) ξ, y' = y + δ/2 (v + v').
    So over many chains corr(v, v') = e^{−γδ} and Var v' = u when Var v = u (walk-jump's e^{−γ} would differ)."""
    g = torch.Generator().manual_seed(11)
    delta, gamma, u, n = 0.4, 1.5, 2.0, 200_000
    y, v = torch.zeros(n, 1, dtype=torch.float64), u**0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    y2, v2 = underdamped_langevin_step(y, v, torch.zeros_like, delta, gamma, u,
                                       torch.randn(n, 1, generator=g, dtype=torch.float64))
    corr = torch.corrcoef(torch.stack([v[:, 0], v2[:, 0]]))[0, 1].item()
    assert abs(corr - math.exp(-gamma * delta)) < 0.01 and abs(v2.var().item() - u) < 0.03 * u
    torch.testing.assert_close(y2, 0.5 * delta * (v + v2))


# the papers' sampler rescaled to [-1, 1] ----------------------------------------------------------------------

# data N(μ, s²I) on [0, 1] (the references' scale), mapped to [-1, 1] by x -> 2x − 1: N(2μ − 1, (2s)² I)
GMU, GS = 0.4, 0.15
GSPEC = DataSpec("gauss", "image", (1, 2, 2), (-1.0, 1.0), None, 1000, 100, 4.0, 2 * GS)


def gaussian_m_score(y: torch.Tensor, mu: float, s: float, sigma: float) -> torch.Tensor:
    """∇_y log p(y) of the M-density of x ~ N(μ, s²I), y_m = x + σ ε_m: Cov y = (s²11ᵀ + σ²I_M) ⊗ I_d, whose
    inverse (Sherman-Morrison) is (I − s²/(σ² + Ms²) 11ᵀ)/σ², so
    ∇_{y_m} log p = −[(y_m − μ) − s²/(σ² + Ms²) Σ_k (y_k − μ)]/σ²."""
    r = y - mu
    return -(r - s**2 / (sigma**2 + y.shape[1] * s**2) * r.sum(1, keepdim=True)) / sigma**2


class GaussianDenoiser(torch.nn.Module):
    """Universal slot for Gaussian data: x̂(ȳ) = μ + s²/(s² + τ²)(ȳ − μ), and x̂(ȳ) = ȳ + τ net(ȳ/a)."""

    def __init__(self, mu: float, s: float, tau: float, a: float):
        super().__init__()
        self.mu, self.s, self.tau, self.a = mu, s, tau, a

    def forward(self, z, c=None):
        ybar = z * self.a
        xhat = self.mu + self.s**2 / (self.s**2 + self.tau**2) * (ybar - self.mu)
        return (xhat - ybar) / self.tau


def gaussian_walk_jump(**cfg):
    """The plugin with its image defaults (unless overridden) and the exact Gaussian denoiser in the net slot."""
    method = WalkJump(WalkJump.make_config(cfg), GSPEC)
    model = method.build_model(lambda **kw: torch.nn.Identity())
    model.net = GaussianDenoiser(2 * GMU - 1, 2 * GS, model.tau, model.in_scale)
    return method, model


def reference_walk(y: torch.Tensor, v: torch.Tensor, steps: int, g: torch.Generator, sigma=1.0, delta=0.5,
                   gamma=0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """mems' sampler on [0, 1] (σ = 1, δ = 0.5, γ = 0.5, u = 1), from the formula: A (y += δ/2 v), B (v += δ/2 ψ),
    O (v = e^{−γδ} v + √(1 − e^{−2γδ}) ξ), B, A, with ψ the exact M-density score at the midpoint."""
    c = math.exp(-gamma * delta)
    for _ in range(steps):
        xi = torch.randn(y.shape, generator=g)  # the plugin's noise: float32 standard normals, same stream
        y = y + delta / 2 * v
        psi = gaussian_m_score(y, GMU, GS, sigma)
        v = v + delta / 2 * psi
        v = c * v + math.sqrt(1 - c * c) * xi
        v = v + delta / 2 * psi
        y = y + delta / 2 * v
    return y, v


def test_walk_on_image_scale_is_twice_the_papers_walk_minus_one():
    """With the image defaults (σ = 2, δ = 1, γ = 0.25 on [-1, 1]) the plugin's walk on an exact Gaussian M-density
    is 2 × (mems' walk on [0, 1] with σ = 1, δ = 0.5, γ = 0.5) − 1 on the same noise, to float64 precision; the
    velocities are the same. (With the old γ = 0.5 on [-1, 1], γδ doubles and the walks part at the first step.)"""
    method, model = gaussian_walk_jump()
    g = torch.Generator().manual_seed(20)
    n, m = 64, method.config.M
    x0 = GMU + GS * torch.randn(n, 1, 1, 2, 2, generator=g, dtype=torch.float64)
    y0 = x0 + 1.0 * torch.randn(n, m, 1, 2, 2, generator=g, dtype=torch.float64)
    v0 = torch.randn(n, m, 1, 2, 2, generator=g, dtype=torch.float64)
    # the plugin's model is the exact score of the mapped law: σ' = 2, μ' = 2μ − 1, s' = 2s
    torch.testing.assert_close(model.score(2 * y0 - 1), gaussian_m_score(2 * y0 - 1, 2 * GMU - 1, 2 * GS, 2.0),
                               rtol=1e-12, atol=1e-12)
    chain, state = method.chain(model), WalkState(2 * y0 - 1, v0.clone())
    g_plugin, g_ref = torch.Generator().manual_seed(21), torch.Generator().manual_seed(21)
    for _ in range(200):
        state = chain.step(state, g_plugin)
    y_ref, v_ref = reference_walk(y0, v0, 200, g_ref)
    torch.testing.assert_close(state.y, 2 * y_ref - 1, rtol=0, atol=1e-10)
    torch.testing.assert_close(state.v, v_ref, rtol=0, atol=1e-10)


def baoab_iact(var: float, delta: float, gamma: float, lags: int = 4000) -> tuple[float, float]:
    """Exact IACT of z in the ABOBA splitting on the 1-D Gaussian N(0, var) (u = 1): (z, v) follows the linear
    recursion w' = A w + b ξ; with S the stationary covariance (discrete Lyapunov), ρ(k) = (AᵏS)₀₀/S₀₀ and
    τ = 1 + 2 Σ_{k≥1} ρ(k). Returns (τ, τ̂): τ̂ is the exact ρ summed up to Sokal's window (c = 5), the value the
    harness's estimator converges to (smaller than τ for an oscillating ρ, which the window cuts at a trough)."""
    import numpy as np
    from scipy.linalg import solve_discrete_lyapunov

    c = math.exp(-gamma * delta)
    drift = np.array([[1.0, delta / 2], [0.0, 1.0]])
    kick = np.array([[1.0, 0.0], [-delta / 2 / var, 1.0]])
    a = drift @ kick @ np.diag([1.0, c]) @ kick @ drift
    b = drift @ kick @ np.array([0.0, math.sqrt(1 - c * c)])
    cov = solve_discrete_lyapunov(a, np.outer(b, b))
    rho, p = [], np.eye(2)
    for _ in range(lags):
        rho.append((p @ cov)[0, 0] / cov[0, 0])
        p = a @ p
    taus = 2 * np.cumsum(rho) - 1
    return float(taus[-1]), float(taus[sokal_window(taus)])


def test_iact_of_the_mean_measurement_drops_with_the_rescaled_friction():
    """ȳ of the Gaussian M-density is the mode Σ_m y_m/M of variance (Ms'² + σ'²)/M²: its exact BAOAB IACT is 2.71
    steps at the default γ = 0.25 (γδ = 0.25, mems) and 5.33 at the old γ = 0.5 on [-1, 1] (Sokal-windowed: 1.94
    and 5.22). The plugin's chains, started at stationarity, estimate both within 10 % (the harness's estimator,
    256 series of 3000 steps), so the rescaled friction mixes ȳ more than twice as fast."""
    got, exact = {}, {}
    for friction in (0.0, 0.5):  # 0: the default, resolved to 0.25/δ
        method, model = gaussian_walk_jump(friction=friction)
        c = method.config
        g = torch.Generator().manual_seed(22)
        x = (2 * GMU - 1) + 2 * GS * torch.randn(64, 1, 1, 2, 2, generator=g, dtype=torch.float64)
        y = x + c.sigma * torch.randn(64, c.M, 1, 2, 2, generator=g, dtype=torch.float64)
        chain, state = method.chain(model), WalkState(y, torch.randn(y.shape, generator=g, dtype=torch.float64))
        trace = []
        for _ in range(3000):
            state = chain.step(state, g)
            trace.append(chain.trace(state).reshape(-1))
        got[c.friction] = integrated_autocorr_time(torch.stack(trace, 1).numpy())
        exact[c.friction] = baoab_iact(c.M * (2 * GS) ** 2 + c.sigma**2, c.step_size, c.friction)
    assert set(got) == {0.25, 0.5}
    assert exact[0.25][0] == pytest.approx(2.71, abs=0.01) and exact[0.5][0] == pytest.approx(5.33, abs=0.01)
    for gamma in got:
        assert got[gamma] == pytest.approx(exact[gamma][1], rel=0.1), (got, exact)
    assert got[0.25] < 0.6 * got[0.5]


def test_long_chain_protocol_jumps_every_k_steps_and_amortises_its_cost():
    """protocol = "long_chain": `chains` chains, burn-in, then one jump every k walk steps until n jumps; the last
    round runs only the chains still owed a jump. Network evaluations counted per example at the network:
    (chains·burn_in + n·k) walk evaluations + n jumps, reported as the total and the per-sample mean."""
    method, model = oracle_model("universal", protocol="long_chain", chains=3, burn_in=2, jump_every=4)
    rows = []

    class Rows(torch.nn.Module):  # evaluations per example: the rows that reach the network
        def forward(self, z, c=None, net=model.net):
            rows.append(z.shape[0])
            return net(z, c)

    model.net = Rows()
    res = method.sample(model, 7, torch.Generator().manual_seed(23))
    total = 3 * 2 + 7 * 4 + 7
    assert res.samples.shape == (7, 2) and sum(rows) == total == res.info["total_nfe"]
    assert res.info == {"protocol": "long_chain", "chains": 3, "burn_in": 2, "jump_every": 4,
                        "total_walk_steps": 3 * 2 + 7 * 4, "total_nfe": total, "nfe_mean": total / 7}
    assert res.nfe == round(total / 7)
    # chain-major: chain 0's jumps first, in time order, and they come from one walk (the same chain as `trace`)
    chain = method.chain(model)
    assert chain.readout_every == 4 and chain.readout_nfe == 1 and chain.nfe_per_step == 1
    state = WalkState(torch.randn(5, M, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(5, M, 2))
    torch.testing.assert_close(chain.trace(state), state.y.mean(1))
    # the nfe curve scales the long chain's burn-in and spacing
    assert method.sampler_length == ("burn_in", "jump_every")
    assert method.with_sampler_scaled(0.5).config.jump_every == 2
    parallel, _ = oracle_model("universal")
    assert parallel.sampler_length == ("steps",)
    assert parallel.sample(model, 4, torch.Generator().manual_seed(1)).info["protocol"] == "parallel"


# defaults, shapes, training -------------------------------------------------------------------------------

def test_defaults_resolve_per_data_kind_and_bad_names_fail():
    image = DataSpec("d", "image", (1, 8, 8), (-1.0, 1.0), 10, 100, 10, 10.0, 0.5)
    rgb = DataSpec("c", "image", (3, 8, 8), (-1.0, 1.0), 10, 100, 10, 10.0, 0.5)
    c = WalkJump(WalkJump.make_config(), image).config
    # mems' σ = 1, δ = 0.5, γ = 0.5 on [0, 1] are σ = 2, δ = 1, γ = 0.25 on [-1, 1] (γδ stays)
    assert (c.sigma, c.M, c.step_size, c.friction) == (2.0, 16, 1.0, 0.25)
    assert WalkJump(WalkJump.make_config(), image).resolved_config()["friction"] == 0.25  # in the record
    assert WalkJump(WalkJump.make_config(), rgb).config.M == 8
    v = WalkJump(WalkJump.make_config(), SPEC2).config
    assert (v.sigma, v.M, v.step_size, v.friction) == (SPEC2.std, 16, 0.5 * SPEC2.std, 0.25 / (0.5 * SPEC2.std))
    assert WalkJump(WalkJump.make_config({"friction": 0.7}), image).config.friction == 0.7
    assert c.protocol == "parallel"
    assert WalkJump(WalkJump.make_config(), SPEC2).resolved_config()["sigma"] == SPEC2.std
    with pytest.raises(ConfigError, match="did you mean 'universal'"):
        WalkJump(WalkJump.make_config({"parametrisation": "univrsal"}), SPEC2)
    with pytest.raises(ConfigError, match="protocol.*did you mean 'long_chain'"):
        WalkJump(WalkJump.make_config({"protocol": "long_chian"}), SPEC2)
    with pytest.raises(ConfigError, match="jump_every >= 1"):
        WalkJump(WalkJump.make_config({"protocol": "long_chain", "jump_every": 0}), SPEC2)


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
def test_image_shapes_train_and_sample_on_the_unet(parametrisation):
    spec = DataSpec("img", "image", (1, 8, 8), (-1.0, 1.0), None, 100, 10, 10.0, 0.5)
    method = WalkJump(WalkJump.make_config({"parametrisation": parametrisation, "M": 3, "steps": 2}), spec)
    factory = BackboneFactory("unet", UNet, spec.shape, {"ch": 8, "ch_mult": (1,), "attention": False})
    with seeded_init(0):
        model = method.build_model(factory)
    g = torch.Generator().manual_seed(9)
    loss = method.loss(model, torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, g)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    res = method.sample(model, 3, g)
    assert res.samples.shape == (3, 1, 8, 8) and torch.isfinite(res.samples).all() and res.nfe == 3


def test_short_training_of_the_universal_denoiser_samples_the_jump_law():
    """400 AdamW steps on fresh samples (about a second): jumps of 1000 parallel 200-step walks are within 1.5 × the
    real-vs-real floor of the exact jump law (seeded: the same numbers every run)."""
    method = WalkJump(WalkJumpConfig(sigma=SIGMA, M=M, steps=200), SPEC2)
    with seeded_init(0):
        model = method.build_model(mlp_factory())
    losses = train(method, model, MIX3, steps=400, seed=0)
    assert sum(losses[-50:]) / 50 < 1.1 * 0.163  # the Bayes risk at τ = 0.5 is 0.163 (test above)
    n, g = 1000, torch.Generator().manual_seed(10)
    res = method.sample(model, n, g)
    assert mmd2(res.samples, jump_law(TAU)(n, g)) < 1.5 * mmd_floor(jump_law(TAU), n, g)


@pytest.mark.parametrize("parametrisation", sorted(PARAMETRISATIONS))
def test_runs_through_the_runner(host, tiny_config, tmp_path, parametrisation):
    from harness.config import load_suite
    from harness.runner import run_job

    sets = ["suite.methods=['walk_jump']", f"methods.walk_jump.parametrisation='{parametrisation}'",
            "methods.walk_jump.steps=5", "methods.walk_jump.M=4"]
    if parametrisation == "universal":  # the papers' protocol, recorded with the run
        sets += ["methods.walk_jump.protocol='long_chain'", "methods.walk_jump.chains=4",
                 "methods.walk_jump.burn_in=3", "methods.walk_jump.jump_every=2"]
    suite = load_suite(tiny_config, sets, all_methods=host.registries["methods"].names())
    out = run_job(host, suite.jobs[0], tmp_path, progress=False)
    assert out.status == "ok", out.message
    rec = json.loads((out.run_dir / "record.json").read_text())
    n = suite.jobs[0].eval.n_samples
    if parametrisation == "universal":
        assert rec["sampling"]["protocol"] == "long_chain" and rec["sampling"]["jump_every"] == 2
        assert rec["nfe"] == pytest.approx(rec["sampling"]["total_nfe"] / n)
    else:
        assert rec["sampling"]["protocol"] == "parallel" and rec["nfe"] == 5 + 1
    assert rec["config"]["method"]["friction"] == pytest.approx(0.25 / rec["config"]["method"]["step_size"])
