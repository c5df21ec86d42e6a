"""The mdsm plugin against known answers: its exact model (`MDSM.oracle`, the σ0-smoothed energy E = −log p_σ0 of a
Gaussian mixture) stands in for the network, plugged into the method's own loss, sampler and chain."""

from __future__ import annotations

import math

import pytest
import torch
from oracle_sde_mdsm import (
    MIX,
    RING,
    RING_GAUSSIAN,
    RING_SPEC,
    SPEC,
    mmd2,
    mmd_threshold,
    seeded_model,
    train,
)
from torch import nn

from harness.datasets import DataSpec
from harness.errors import ConfigError
from harness.toy import GaussianMixture
from plugins.mdsm import MDSM, MDSMConfig, annealing_schedule

SIGMA0 = 0.1


class Linear(nn.Module):
    """E(x) = c·x, so ∇E = c everywhere."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, c=None):
        return x.flatten(1) @ self.c


class Quadratic(nn.Module):
    """E(x) = ½ a ‖x‖² with a trainable a."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x, c=None):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


# schedule and noise levels ------------------------------------------------------------------------------------

def test_annealing_schedule_has_the_papers_shape():
    """500 steps at T = 100, 2000 steps of T_k = 100 exp(−k log 100/2000), 200 steps linearly from 1 to 0."""
    T = annealing_schedule(100.0, 500, 2000, 200)
    assert T.shape == (2700,)
    assert (T[:500] == 100).all()
    k = torch.tensor([0, 1, 1000, 1999], dtype=torch.float64)
    torch.testing.assert_close(T[500 + k.long()], 100 * torch.exp(-k * math.log(100) / 2000))
    assert (T[500:2500].diff() < 0).all() and 1 < T[2499] < 1.003
    torch.testing.assert_close(T[2500:], torch.linspace(1, 0, 200, dtype=torch.float64))
    m = MDSM(MDSMConfig(hot_steps=3, cool_steps=4, final_steps=2), SPEC)
    assert m.schedule().tolist()[:3] == [100.0] * 3 and m.schedule().shape == (9,)


@pytest.mark.parametrize("spacing", ["linear", "geometric"])
def test_noise_levels_are_tied_to_batch_position(spacing):
    """With data x = 0 and ∇E = c (huge), ℓ_i = ‖σ0² c − σ_i ε_i‖²/(σ_i² σ0⁴) = ‖c‖²/σ_i² (1 + O(σ_i/(σ0²‖c‖))),
    so each example's σ_i is read back from its loss: it is the level of its batch position."""
    method = MDSM(MDSMConfig(spacing=spacing, sigma_min=0.05, sigma_max=1.2), SPEC)
    c = torch.tensor([1e6, 0.0])
    loss = method.loss(Linear(c), torch.zeros(16, 2), torch.Generator().manual_seed(0))
    sig = c.norm() / loss.sqrt()
    expected = (torch.linspace(0.05, 1.2, 16) if spacing == "linear"
                else torch.exp(torch.linspace(math.log(0.05), math.log(1.2), 16)))
    torch.testing.assert_close(sig, expected, rtol=5e-3, atol=0)


# the loss -----------------------------------------------------------------------------------------------------

def test_loss_at_the_exact_energy_is_the_irreducible_value():
    """With one level σ_i = σ0, ℓ = ‖ε + σ0 s(x̃)‖²/σ0⁴ with s = −∇E; at the exact s* = ∇ log p_σ0 its mean is
    (d − σ0² E‖s*‖²)/σ0⁴ (Tweedie), estimated from independent draws of p_σ0. Shifting ∇E by δ adds exactly
    ‖δ‖²/σ0² in expectation."""
    n = 100_000
    method = MDSM(MDSMConfig(sigma_min=SIGMA0, sigma_max=SIGMA0), SPEC)
    x = MIX.sample(n, torch.Generator().manual_seed(0))
    energy = method.oracle(MIX)
    loss = method.loss(energy, x, torch.Generator().manual_seed(1)).mean().item()
    y = MIX.smoothed(SIGMA0).sample(n, torch.Generator().manual_seed(2))
    irreducible = (2 - SIGMA0**2 * MIX.smoothed(SIGMA0).score(y).pow(2).sum(1).mean().item()) / SIGMA0**4
    assert abs(loss / irreducible - 1) < 0.02, (loss, irreducible)

    class Shifted(nn.Module):
        def forward(self, x, c=None):
            return energy(x) + x[:, 0]  # ∇E shifted by δ = (1, 0)

    worse = method.loss(Shifted(), x, torch.Generator().manual_seed(1)).mean().item()
    assert abs(worse - loss - 1 / SIGMA0**2) < 10, (worse - loss)


def test_loss_gradient_flows_through_the_energy_gradient():
    """Double backprop: for E = ½ a ‖x‖² the loss depends on a only through ∇E = a x̃; autograd's dL/da equals a
    central finite difference of the loss (same noise)."""
    method = MDSM(MDSMConfig(), SPEC)
    x = MIX.sample(64, torch.Generator().manual_seed(0)).double()
    energy = Quadratic(3.0)
    method.loss(energy, x, torch.Generator().manual_seed(1)).mean().backward()
    h = 1e-4
    with torch.no_grad():
        lp = method.loss(Quadratic(3.0 + h), x, torch.Generator().manual_seed(1)).mean()
        lm = method.loss(Quadratic(3.0 - h), x, torch.Generator().manual_seed(1)).mean()
    fd = (lp - lm) / (2 * h)
    torch.testing.assert_close(energy.a.grad, fd, rtol=1e-5, atol=0)


# sampling with the exact energy -------------------------------------------------------------------------------

SQUARE = GaussianMixture(torch.tensor([[-0.7, -0.7], [0.7, -0.7], [-0.7, 0.7], [0.7, 0.7]]), 0.25,
                         torch.tensor([0.1, 0.2, 0.3, 0.4]))


def test_annealed_sampler_with_the_exact_energy_recovers_modes_and_weights():
    """The paper's schedule (500 @ T = 100, 2000 cooling to 1, 200 to 0) on E = −log p_σ0 of four modes with weights
    0.1..0.4, then the denoising step: 99% of the samples lie within 0.1 of a mode centre (cooling to T = 0 collapses
    them onto the modes of p_σ0), and the fraction per mode is within 0.035 (about 3 binomial standard errors at
    n = 2000) of its weight. ε = 0.2 here: the step must suit the modes' width (0.25), as the paper's 0.02 suits
    images whose stiffest directions have width σ0."""
    method = MDSM(MDSMConfig(step_size=0.2), SPEC)
    assert method.config.sigma0 == SIGMA0
    energy = method.oracle(SQUARE)
    res = method.sample(energy, 2000, torch.Generator().manual_seed(0))
    assert res.nfe == 2701
    dist = torch.cdist(res.samples.double(), SQUARE.means).min(1).values
    assert dist.quantile(0.99) < 0.1, dist.quantile(0.99)
    frac = torch.bincount(SQUARE.component(res.samples), minlength=4).double() / 2000
    assert (frac - SQUARE.weights).abs().max() < 0.035, frac


OVERLAP = GaussianMixture(torch.tensor([[-0.8, 0.0], [0.8, 0.3]]), torch.tensor([0.3, 0.4]), torch.tensor([0.3, 0.7]))


def test_stationary_chain_samples_the_smoothed_density_and_reads_out_by_denoising():
    """Long-run Langevin at T = 1 on the exact energy samples p_σ0 (MMD² below twice the real-vs-real 95th
    percentile plus an O(ε²) bias allowance of 1e-3); the readout is Tweedie's E[x | x̃] at σ0, exactly."""
    method = MDSM(MDSMConfig(chain_step_size=0.1, denoise=False), SPEC)
    energy = method.oracle(OVERLAP)
    chain = method.chain(energy)
    assert chain.stationary and chain.describe()["readout"] == "raw state"
    g = torch.Generator().manual_seed(0)
    x = chain.init(500, g)
    for _ in range(2000):
        x = chain.step(x, g)
    target = OVERLAP.smoothed(SIGMA0)
    floor = mmd_threshold(target, 500, g, reps=20)
    got = mmd2(chain.readout(x), target.sample(500, g))
    assert got < 2 * floor + 1e-3, (got, floor)

    method.config.denoise = True
    assert "denoise" in method.chain(energy).describe()["readout"]
    torch.testing.assert_close(method.chain(energy).readout(x), OVERLAP.denoiser(x, SIGMA0), rtol=1e-4, atol=1e-5)


def test_declares_no_sigma0_score():
    """−∇E of the multiscale objective is not the σ0-smoothed score, so the method must not claim one (the Fisher
    divergence metric would compare against the wrong target)."""
    from harness.method import Method

    assert MDSM.score_fn is Method.score_fn and MDSM(MDSMConfig(), SPEC).score_fn(None) is None


# configuration and the real network ---------------------------------------------------------------------------

def test_defaults_resolve_from_the_data_and_are_recorded():
    """Images: the paper's [0, 1] lengths doubled for [-1, 1] (METHODS.md, "Rescaling the papers' defaults"):
    σ0 0.1 -> 0.2, σ ∈ [0.05, 1.2] -> [0.1, 2.4], ε 0.02 -> 0.04, start 0.5 + N(0, 1) -> 0 + N(0, 2²); ε²/σ0² stays.
    Vectors: the same lengths in units of the data's std, σ_max = max pairwise distance/√d."""
    vec = MDSM(MDSMConfig(), SPEC).resolved_config()
    assert vec["sigma_max"] == pytest.approx(SPEC.max_pairwise_distance / math.sqrt(2))
    assert vec["init_std"] == SPEC.std and vec["chain_step_size"] == vec["step_size"] == 0.02 * SPEC.std
    assert (vec["sigma0"], vec["sigma_min"]) == (0.1 * SPEC.std, 0.05 * SPEC.std)
    wide = MDSM(MDSMConfig(), RING_SPEC).resolved_config()  # vector defaults scale with the data
    for key in ("sigma0", "sigma_min", "step_size", "init_std"):
        assert wide[key] == pytest.approx(vec[key] * RING_SPEC.std / SPEC.std)
    img = DataSpec("img", "image", (1, 8, 8), (-1.0, 1.0), None, 10, 10, 12.0, 0.6)
    method = MDSM(MDSMConfig(), img)
    got = {k: method.resolved_config()[k] for k in ("sigma0", "sigma_min", "sigma_max", "step_size", "init_std",
                                                   "chain_step_size")}
    assert got == pytest.approx({"sigma0": 0.2, "sigma_min": 0.1, "sigma_max": 2.4, "step_size": 0.04,
                                 "init_std": 2.0, "chain_step_size": 0.04})
    assert got["step_size"] ** 2 / got["sigma0"] ** 2 == pytest.approx(0.02**2 / 0.1**2)  # dimensionless, kept
    x0 = method.initial_state(20_000, torch.Generator().manual_seed(0))  # centred on the data: 0 on [-1, 1]
    assert abs(x0.mean().item()) < 0.01 and x0.std().item() == pytest.approx(2.0, rel=0.01)
    assert MDSM(MDSMConfig(sigma0=0.3, sigma_max=1.5), img).config.sigma0 == 0.3  # explicit values win
    with pytest.raises(ConfigError, match="geometric"):
        MDSM(MDSMConfig(spacing="log"), SPEC)


@pytest.mark.parametrize("head", ["norm", "quadratic"])
def test_sampling_never_touches_parameter_gradients(head):
    method = MDSM(MDSMConfig(head=head, hot_steps=2, cool_steps=2, final_steps=2), SPEC)
    model = seeded_model(method, 0, width=16, depth=1)
    assert not model.net.conditional
    g = torch.Generator().manual_seed(0)
    out = method.sample(model, 8, g)
    assert out.samples.shape == (8, 2) and out.nfe == 7
    chain = method.chain(model)
    chain.readout(chain.step(chain.init(4, g), g))
    assert all(p.grad is None for p in model.parameters())
    loss = method.loss(model, MIX.sample(8, g), g)
    assert loss.shape == (8,) and loss.requires_grad


def test_chain_contract_and_energy_gradients_are_counted():
    """The T = 1 chain: trace = x (free), readout = the denoising step (1 gradient, at the end: readout_every None),
    one energy gradient per step (grad_evals_per_step = 1); `sample` reports every NFE as a gradient evaluation."""
    method = MDSM(MDSMConfig(hot_steps=2, cool_steps=3, final_steps=2), SPEC)
    model = seeded_model(method, 0, width=16, depth=1)
    chain = method.chain(model)
    g = torch.Generator().manual_seed(0)
    x = chain.step(chain.init(4, g), g)
    assert chain.trace(x) is x
    assert (chain.nfe_per_step, chain.grad_evals_per_step, chain.readout_nfe, chain.readout_every) == (1, 1, 1, None)
    res = method.sample(model, 3, g)
    assert res.nfe == res.info["grad_evals"] == 2 + 3 + 2 + 1 and res.info["total_nfe"] == 3 * res.nfe


def test_short_training_learns_the_ring():
    """600 steps of a 2×64 residual MLP energy (norm head, seeded); a shortened schedule (100 @ T = 100, 400 cooling,
    50 to 0): samples reach MMD² < 0.5 × that of the moment-matched Gaussian (the floor is printed)."""
    method = MDSM(MDSMConfig(hot_steps=100, cool_steps=400, final_steps=50), RING_SPEC)
    model = train(method, seeded_model(method, 0), RING, steps=600, batch=128, lr=3e-3, seed=0)
    g = torch.Generator().manual_seed(1)
    samples = method.sample(model, 500, g).samples
    got = mmd2(samples, RING.sample(500, g))
    baseline = mmd2(RING_GAUSSIAN.sample(500, g), RING.sample(500, g))
    floor = mmd_threshold(RING, 500, g, reps=10)
    print(f"ring8-like, mdsm: MMD² {got:.4f}, moment-matched Gaussian {baseline:.4f}, floor {floor:.4f}")
    assert got < 0.5 * baseline, (got, baseline)
