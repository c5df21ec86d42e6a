"""The `oracle(target)` capability of every built-in method: its model, read through the method's own
parametrisation and `score_fn`, gives the exact score of the target smoothed at each noise level the method uses
(known answers: `target.smoothed(s).score`, the mixtures' closed forms and the banana's quadrature); it costs what
the network costs; sampling with it gives the target law; and `has_oracle` tells which methods provide one."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import ConfigError
from harness.method import Method, has_oracle
from harness.metrics.toy import mmd2_unbiased
from harness.oracles import smoothed_log_prob, smoothed_score
from harness.toy import GaussianMixture
from plugins.datasets import BananaData, Ring8
from plugins.dsm import DSM
from plugins.mdsm import MDSM, energy_grad
from plugins.sde import SDES, ScoreSDE
from plugins.ssm import SSM
from plugins.walk_jump import WalkJump

DATASETS = {"ring8": Ring8(root=None, download=False), "banana": BananaData(root=None, download=False)}
TOL = 1e-5  # relative error of float32 inputs (the oracles compute in float64 inside)


def points(name: str, n: int = 256) -> torch.Tensor:
    """Data draws plus points well outside the data (the samplers start there)."""
    ds = DATASETS[name]
    g = torch.Generator().manual_seed(0)
    return torch.cat([ds.target.sample(n, g), 3 * ds.spec.std * torch.randn(n // 4, 2, generator=g)])


def rel(got: torch.Tensor, exact: torch.Tensor) -> float:
    return float((got.double() - exact.double()).norm() / exact.double().norm())


def test_has_oracle_and_the_default():
    for cls in (DSM, SSM, ScoreSDE, MDSM, WalkJump):
        assert has_oracle(cls) and has_oracle(cls(cls.make_config(), DATASETS["ring8"].spec))

    class Plain(DSM):
        oracle = Method.oracle

    assert not has_oracle(Plain)
    with pytest.raises(NotImplementedError, match="'dsm' has no oracle"):
        Plain(Plain.make_config(), DATASETS["ring8"].spec).oracle(DATASETS["ring8"].target)
    with pytest.raises(ConfigError, match="3-dimensional"):  # a target of the wrong dimension is refused
        DSM(DSM.make_config(), DATASETS["ring8"].spec).oracle(GaussianMixture(torch.zeros(1, 3), 1.0))


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_smoothing_helpers_per_example_levels(data):
    """Per-example levels (a loss with random σ) equal one-level evaluation row by row; log-density gradients by
    autograd equal the scores (the energies rely on it)."""
    target, x = DATASETS[data].target, points(data, 32)
    s = torch.tensor([0.05, 0.3, 1.0]).repeat_interleave(14)[: x.shape[0]]
    score, logp = smoothed_score(target, x, s), smoothed_log_prob(target, x, s)
    for lv in s.unique().tolist():
        rows = s == lv
        sm = target.smoothed(lv)
        torch.testing.assert_close(score[rows], sm.score(x[rows].double()), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(logp[rows], sm.log_prob(x[rows].double()), rtol=1e-10, atol=1e-10)
    xr = x.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(smoothed_log_prob(target, xr, s).sum(), xr)
    torch.testing.assert_close(grad, score, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_dsm_oracle_is_the_smoothed_score(data):
    ds = DATASETS[data]
    method = DSM(DSM.make_config(), ds.spec)
    model = method.oracle(ds.target)
    fn, s = method.score_fn(model)
    x = points(data)
    assert s == method.config.sigma and rel(fn(x), ds.target.smoothed(s).score(x.double())) < TOL
    assert model(x).dtype == torch.float32 and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("parametrisation", ["score", "energy"])
@pytest.mark.parametrize("noise", ["ladder", "none"])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_ssm_oracle_is_the_smoothed_score_at_every_level(data, noise, parametrisation):
    """Ladder: s(x, σ_i) = ∇log p_σi at every level of the ladder; no noise: the data's own score."""
    ds = DATASETS[data]
    method = SSM(SSM.make_config({"noise": noise, "parametrisation": parametrisation, "n_levels": 4}), ds.spec)
    model = method.oracle(ds.target)
    x = points(data)
    for level in method.sigmas:
        sig = torch.full((x.shape[0],), level)
        exact = (ds.target.smoothed(level) if noise == "ladder" else ds.target).score(x.double())
        assert rel(model.score(x, sig), exact) < TOL, level
    fn, s = method.score_fn(model)
    exact = ds.target.smoothed(s).score(x.double()) if s else ds.target.score(x.double())
    assert rel(fn(x), exact) < TOL


@pytest.mark.parametrize("sde", sorted(SDES))
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_sde_oracle_is_the_scaled_smoothed_score_at_every_time(data, sde):
    """s(x, t) = ∇log q(x/α_t)/α_t with q = target.smoothed(σ_t/α_t), at several t; score_fn gives p_τ's score."""
    ds = DATASETS[data]
    method = ScoreSDE(ScoreSDE.make_config({"sde": sde}), ds.spec)
    model = method.oracle(ds.target)
    x = points(data)
    for t in (method.config.sample_eps, 0.1, 0.5, 1.0):
        tt = torch.full((x.shape[0],), t, dtype=torch.float64)
        alpha, sigma = method.sde.marginal(tt)
        a = float(alpha[0])
        exact = ds.target.smoothed(float(sigma[0] / alpha[0])).score(x.double() / a) / a
        assert rel(model(x.double(), tt), exact) < 1e-9, t
        assert rel(model(x, tt.float()), exact) < 1e-4, t  # float32 t: σ_t/α_t rounded
    fn, tau = method.score_fn(model)
    assert rel(fn(x), ds.target.smoothed(tau).score(x.double())) < 1e-4


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_mdsm_oracle_energy_gradient_is_the_sigma0_score(data):
    ds = DATASETS[data]
    method = MDSM(MDSM.make_config(), ds.spec)
    energy = method.oracle(ds.target)
    x = points(data)
    s0 = method.config.sigma0
    torch.testing.assert_close(energy(x.double()), -ds.target.smoothed(s0).log_prob(x.double()), rtol=1e-12,
                               atol=1e-12)
    assert rel(-energy_grad(energy, x), ds.target.smoothed(s0).score(x.double())) < TOL


@pytest.mark.parametrize("parametrisation", ["universal", "mdae", "energy"])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_walk_jump_oracle_scores_are_the_m_density_scores(data, parametrisation):
    """∇_{y_m} log p(y) = (E[X | ȳ] − y_m)/σ², E[X | ȳ] = target.denoiser(ȳ, σ/√M) (ȳ is sufficient); the jump
    is that denoiser; universal's score_fn is p_τ's score."""
    ds = DATASETS[data]
    method = WalkJump(WalkJump.make_config({"parametrisation": parametrisation, "M": 4}), ds.spec)
    model = method.oracle(ds.target)
    sigma, tau = method.config.sigma, method.config.sigma / 2
    y = method.measure(points(data, 64), torch.Generator().manual_seed(1))
    xhat = ds.target.denoiser(y.mean(1).double(), tau)
    assert rel(model.score(y), (xhat[:, None] - y.double()) / sigma**2) < TOL
    assert rel(model.jump(y), xhat) < TOL
    if parametrisation == "universal":
        fn, level = method.score_fn(model)
        assert level == pytest.approx(tau) and rel(fn(y[:, 0]), ds.target.smoothed(tau).score(y[:, 0].double())) < TOL


ORACLE_CASES = {
    "dsm": (DSM, {"steps": 4}),
    "ssm-ladder-energy": (SSM, {"parametrisation": "energy", "noise": "ladder", "n_levels": 2, "steps_per_level": 2}),
    "sde-vp-pc": (ScoreSDE, {"sde": "vp", "sampler": "pc", "steps": 3}),
    "mdsm": (MDSM, {"hot_steps": 2, "cool_steps": 2, "final_steps": 2}),
    "walk_jump-energy": (WalkJump, {"parametrisation": "energy", "M": 2, "steps": 4}),
    "walk_jump-long_chain": (WalkJump, {"protocol": "long_chain", "chains": 1, "burn_in": 2, "jump_every": 3}),
}


@pytest.mark.parametrize("case", sorted(ORACLE_CASES))
def test_oracle_costs_what_the_network_costs(case):
    """Forward calls of the oracle slot (and backward passes through it) during `sample` equal the reported NFE
    (and grad_evals), as tests/test_cost_accounting.py pins for the networks; chain steps likewise."""
    cls, cfg = ORACLE_CASES[case]
    ds = DATASETS["ring8"]
    method = cls(cls.make_config(dict(cfg)), ds.spec)
    model = method.oracle(ds.target)
    slots = [m for m in model.modules() if hasattr(m, "calls")]
    assert len(slots) == 1
    fwd, bwd = [], []
    slots[0].register_forward_hook(lambda *a: fwd.append(1))
    slots[0].register_full_backward_hook(lambda *a: bwd.append(1))
    res = method.sample(model, 3, torch.Generator().manual_seed(0))
    if "chains" in res.info:  # long_chain: each call evaluates one sample per chain
        assert res.info["chains"] * len(fwd) == res.info["total_nfe"], (len(fwd), res.info)
        assert res.info["chains"] * len(bwd) == pytest.approx(res.info.get("grad_evals", 0) * 3)
    else:  # one batched call per evaluation
        assert len(fwd) == res.nfe and res.info.get("total_nfe", 3 * res.nfe) == 3 * res.nfe, (len(fwd), res.info)
        assert len(bwd) == res.info.get("grad_evals", 0), (len(bwd), res.info)
    chain = method.chain(model) if not isinstance(method, ScoreSDE) else None
    if chain is not None:
        fwd.clear(), bwd.clear()
        state = chain.step(chain.init(2, torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2))
        assert len(fwd) == chain.nfe_per_step and len(bwd) == chain.grad_evals_per_step
        fwd.clear()
        chain.readout(state)
        assert len(fwd) == chain.readout_nfe


# sampling with the oracle gives the target law ---------------------------------------------------------------

def mmd_floor(target, n: int, g: torch.Generator, bw, reps: int = 20) -> float:
    return max(mmd2_unbiased(target.sample(n, g), target.sample(n, g), bw) for _ in range(reps))


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_sde_oracle_samples_the_banana(sde):
    """The paper's sampler per SDE (VE: PC, VP: Euler-Maruyama), 200 steps, on the banana with its exact smoothed
    scores (quadrature): MMD² to exact banana draws under 2 × the real-vs-real floor; reversed-sign banana fails."""
    ds = DATASETS["banana"]
    method = ScoreSDE(ScoreSDE.make_config({"sde": sde, "steps": 200}), ds.spec)
    n, g, bw = 400, torch.Generator().manual_seed(3), (0.2, 0.5, 1.0, 2.0)
    res = method.sample(method.oracle(ds.target), n, g)
    floor = mmd_floor(ds.target, n, g, bw)
    got = mmd2_unbiased(res.samples, ds.target.sample(n, g), bw)
    assert got < 2 * floor, (got, floor)
    flipped = ds.target.sample(n, g) * torch.tensor([1.0, -1.0])
    assert mmd2_unbiased(flipped, ds.target.sample(n, g), bw) > 5 * floor


def test_walk_jump_oracle_walk_samples_the_ring_smoothed_at_tau():
    """The walk on ring8's exact M-density (defaults σ = std, M = 16, δ = σ/2): ȳ after 200 steps follows
    p_τ = ring8 smoothed at τ = σ/4 (MMD² under 2 × the real-vs-real floor)."""
    ds = DATASETS["ring8"]
    method = WalkJump(WalkJump.make_config({"steps": 200}), ds.spec)
    chain = method.chain(method.oracle(ds.target))
    n, g, bw = 400, torch.Generator().manual_seed(4), (0.2, 0.5, 1.0, 2.0)
    state = chain.init(n, g)
    for _ in range(200):
        state = chain.step(state, g)
    smoothed = ds.target.smoothed(method.config.sigma / math.sqrt(method.config.M))
    floor = mmd_floor(smoothed, n, g, bw)
    assert mmd2_unbiased(chain.trace(state), smoothed.sample(n, g), bw) < 2 * floor
