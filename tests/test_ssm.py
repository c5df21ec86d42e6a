"""ssm against known answers: unbiasedness of SSM and SSM-VR for models with an exact Jacobian/Hessian, FD-SSM's
O(h²) convergence to autograd SSM, the score-matching identities at the exact score, the oracle samplers, honest
NFE counts, and short training runs on 2-D targets."""

from __future__ import annotations

import pytest
import torch
from oracle_wj_ssm import MIX3, SPEC2, Counting, mlp_factory, mmd2, mmd_floor, train
from torch import nn

from harness.backbones import BackboneFactory
from harness.datasets import DataSpec
from harness.errors import ConfigError
from harness.runner import seeded_init
from harness.toy import GaussianMixture
from plugins.backbones import UNet
from plugins.ssm import PROJECTIONS, SSM, SSMConfig

F64 = torch.float64


# models with an exact Jacobian / Hessian, in the plugins' network slots (noise "none", data std 1) ---------------

class TanhScore(nn.Module):
    """s(x) = A x + b + c ⊙ tanh(W x + e); ∇s = A + diag(c ⊙ (1 − tanh²)) W."""

    def __init__(self, g, d=2):
        super().__init__()
        r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
        self.A, self.b, self.c, self.W, self.e = r(d, d), r(d), r(d), r(d, d), r(d)

    def forward(self, x, c=None):
        flat = x.flatten(1)
        return (flat @ self.A.T + self.b + self.c * torch.tanh(flat @ self.W.T + self.e)).view_as(x)

    def exact_objective(self, x):
        """tr ∇s + ½‖s‖², per row."""
        flat = x.flatten(1)
        t = torch.tanh(flat @ self.W.T + self.e)
        trace = torch.diagonal(self.A).sum() + ((1 - t**2) * self.c * torch.diagonal(self.W)).sum(1)
        return trace + 0.5 * self.forward(x).flatten(1).pow(2).sum(1)


class LogCoshEnergy(nn.Module):
    """E(x) = ½xᵀPx + bᵀx + Σ_j a_j log cosh(w_jᵀx); ∇E = Px + b + Wᵀ(a ⊙ tanh Wx), ∇²E = P + Wᵀdiag(a(1 − tanh²))W."""

    def __init__(self, g, d=2):
        super().__init__()
        r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
        q = r(d, d)
        self.P, self.b, self.a, self.W = q @ q.T + torch.eye(d, dtype=F64), r(d), r(3).abs(), r(3, d)

    def forward(self, x, c=None):
        u = x @ self.W.T
        return 0.5 * ((x @ self.P) * x).sum(1) + x @ self.b + (self.a * torch.log(torch.cosh(u))).sum(1)

    def exact_objective(self, x):
        """tr ∇s + ½‖s‖² with s = −∇E: −tr ∇²E + ½‖∇E‖²."""
        t = torch.tanh(x @ self.W.T)
        grad = x @ self.P + self.b + (self.a * t) @ self.W
        trace = torch.trace(self.P) + ((self.a * (1 - t**2)) * self.W.pow(2).sum(1)).sum(1)
        return -trace + 0.5 * grad.pow(2).sum(1)


def analytic(parametrisation, spec=SPEC2, seed=0, **cfg):
    method = SSM(SSMConfig(parametrisation=parametrisation, noise="none", **cfg), spec)
    with seeded_init(0):
        model = method.build_model(mlp_factory(spec, width=8, depth=1))
    g = torch.Generator().manual_seed(seed)
    truth = TanhScore(g, spec.dim) if parametrisation == "score" else LogCoshEnergy(g)
    setattr(model, "net" if parametrisation == "score" else "energy_net", truth)
    return method, model, truth


# unbiasedness ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("projection", sorted(PROJECTIONS))
@pytest.mark.parametrize("loss", ["ssm", "ssm_vr"])
@pytest.mark.parametrize("parametrisation", ["score", "energy"])
def test_sliced_estimators_are_unbiased_for_the_score_matching_objective(parametrisation, loss, projection):
    """At 8 points, the mean of 20,000 single-projection estimates equals tr ∇s + ½‖s‖² computed from the exact
    Jacobian (score) or Hessian (energy), within 5 standard errors of that mean (and 2 % of the spread)."""
    method, model, truth = analytic(parametrisation, loss=loss, projection=projection)
    g = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(8, 2, generator=g, dtype=F64)
    n = 20_000
    est = method.loss(model, x.repeat(n, 1), g).view(n, 8)
    mean, se = est.mean(0), est.std(0) / n**0.5
    exact = truth.exact_objective(x)
    assert ((mean - exact).abs() < 5 * se + 1e-9).all(), (mean, exact, se)
    assert (est.std(0) > 1e-3).all()  # a genuinely random estimator


def test_flattening_images_gives_the_objective_of_the_flattened_vector():
    """A linear score on 1×3×3 images: the estimator's mean equals tr A + ½‖Ax + b‖² over all 9 dimensions (a
    reduction over the last axis only would see 3 × 3 blocks and miss the off-block Jacobian)."""
    spec = DataSpec("img", "image", (1, 3, 3), (-1.0, 1.0), None, 10, 10, 5.0, 1.0)
    method = SSM(SSMConfig(noise="none"), spec)
    with seeded_init(0):
        model = method.build_model(BackboneFactory("unet", UNet, spec.shape, {"ch": 4, "ch_mult": (1,)}))
    g = torch.Generator().manual_seed(2)
    truth = TanhScore(g, d=9)
    truth.c = torch.zeros(9, dtype=F64)  # linear: the Jacobian is A everywhere, dense across rows and columns
    model.net = truth
    x = torch.randn(4, 1, 3, 3, generator=g, dtype=F64)
    n = 20_000
    est = method.loss(model, x.repeat(n, 1, 1, 1), g).view(n, 4)
    exact = truth.exact_objective(x)
    assert ((est.mean(0) - exact).abs() < 5 * est.std(0) / n**0.5).all()


# FD-SSM ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parametrisation", ["score", "energy"])
def test_fd_ssm_converges_to_autograd_ssm_at_second_order(parametrisation):
    """Same points, same projections (same seed): |FD-SSM(h) − SSM| shrinks 4× per halving of h (central
    differences, O(h²)); at ‖hv‖ = 0.0125 the gap is below 1e-4 of the loss's scale."""
    g = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(64, 2, generator=g, dtype=F64)
    method, model, _ = analytic(parametrisation, loss="ssm")
    ref = method.loss(model, x, torch.Generator().manual_seed(4))
    errs = []
    for step in (0.2, 0.1, 0.05, 0.025, 0.0125):
        method, model, _ = analytic(parametrisation, loss="fd_ssm", fd_step=step)
        errs.append((method.loss(model, x, torch.Generator().manual_seed(4)) - ref).abs().mean().item())
    ratios = [a / b for a, b in zip(errs, errs[1:], strict=False)]
    assert all(3.6 < r < 4.4 for r in ratios), (errs, ratios)
    assert errs[-1] < 1e-4 * ref.abs().mean().item()


# identities at the exact score -------------------------------------------------------------------------

def oracle_method(noise="ladder", **cfg):
    """The plugin's own exact model (`SSM.oracle`): s(x, σ) = ∇log p_σ(x) of MIX3 in the net slot."""
    method = SSM(SSMConfig(noise=noise, **cfg), SPEC2)
    return method, method.oracle(MIX3)


def test_loss_at_the_exact_score_is_minus_half_the_fisher_information_and_a_shift_costs_half_its_square():
    """J(s*) = −½ E‖∇log p‖² (integration by parts) and J(s* + δ) − J(s*) = ½‖δ‖², on the clean mixture."""
    method, model = oracle_method(noise="none")
    g = torch.Generator().manual_seed(5)
    x = MIX3.sample(100_000, g).double()
    loss = method.loss(model, x, torch.Generator().manual_seed(6))
    fisher = MIX3.score(MIX3.sample(100_000, g).double()).pow(2).sum(1).mean().item()
    assert abs(loss.mean().item() + 0.5 * fisher) < 5 * loss.std().item() / len(x) ** 0.5 + 0.01 * fisher

    delta = torch.tensor([0.3, -0.4], dtype=F64)

    class Shifted(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, c=None):
            return self.net(x, c) + delta

    model.net = Shifted(model.net)
    shifted = method.loss(model, x, torch.Generator().manual_seed(6))
    assert abs((shifted - loss).mean().item() - 0.5 * delta.pow(2).sum().item()) < 0.01


def test_ladder_loss_at_the_exact_scores_is_the_sigma_weighted_fisher_information():
    """NCSN weighting: E_i σ_i² J_σi(s*_σi) = −½ E_i σ_i² E‖∇log p_σi‖² over a 3-level ladder (levels drawn per
    example, so this also checks that the noise added and the level the net is told agree)."""
    method, model = oracle_method(noise="ladder", sigma_max=1.0, sigma_min=0.1, n_levels=3)
    g = torch.Generator().manual_seed(7)
    x = MIX3.sample(150_000, g).double()
    loss = method.loss(model, x, torch.Generator().manual_seed(8))
    want = sum(-0.5 * s**2 * MIX3.smoothed(s).score(MIX3.smoothed(s).sample(100_000, g).double()).pow(2).sum(1).mean()
               for s in method.sigmas).item() / 3
    assert method.sigmas == pytest.approx([1.0, 10**-0.5, 0.1])
    tol = 5 * loss.std().item() / len(x) ** 0.5 + 0.01 * abs(want)
    assert abs(loss.mean().item() - want) < tol, (loss.mean(), want)


# samplers with the oracle ------------------------------------------------------------------------------

def test_annealed_langevin_with_the_exact_scores_samples_the_target():
    """NCSN Algorithm 1 over 10 levels from 2.0 to 0.02, T = 100, ε = 0.2σ_L², then the Tweedie step: the samples
    pass the MMD test against the (unsmoothed) target at 1.5 × the real-vs-real floor; the NFE is L·T + 1."""
    method, model = oracle_method(sigma_max=2.0, sigma_min=0.02, n_levels=10, steps_per_level=100)
    counter = Counting(model.net)
    model.net = counter
    n, g = 1000, torch.Generator().manual_seed(9)
    res = method.sample(model, n, g)
    assert res.nfe == counter.calls == 10 * 100 + 1
    assert mmd2(res.samples, MIX3.sample(n, g)) < 1.5 * mmd_floor(MIX3.sample, n, g)
    wrong = GaussianMixture(MIX3.means, MIX3.stds, torch.tensor([0.2, 0.3, 0.5]))  # power: wrong weights fail
    assert mmd2(wrong.sample(n, g), MIX3.sample(n, g)) > 3 * mmd_floor(MIX3.sample, n, g)


def test_long_run_langevin_chain_leaves_the_smallest_level_invariant():
    """Started from exact draws of p_σL (σ_L = 0.3), 300 steps keep the law (MMD at 1.5 × the floor); readout is
    the exact Tweedie denoiser."""
    method, model = oracle_method(sigma_max=1.0, sigma_min=0.3, n_levels=2)
    chain = method.chain(model)
    assert chain.stationary and chain.nfe_per_step == 1 and chain.sigma == pytest.approx(0.3)
    n, g = 1000, torch.Generator().manual_seed(10)
    target = MIX3.smoothed(0.3)
    x = target.sample(n, g)
    for _ in range(300):
        x = chain.step(x, g)
    assert mmd2(x, target.sample(n, g)) < 1.5 * mmd_floor(target.sample, n, g)
    torch.testing.assert_close(chain.readout(x.double()), MIX3.denoiser(x.double(), 0.3), rtol=1e-9, atol=1e-9)


# defaults, shapes, training ----------------------------------------------------------------------------

def test_defaults_resolve_per_data_kind_and_bad_names_fail():
    image = DataSpec("d", "image", (1, 8, 8), (-1.0, 1.0), 10, 100, 10, 10.0, 0.5)
    c = SSM(SSM.make_config(), image).config
    assert (c.noise, c.sigma_max, c.sigma_min, c.step_size) == ("ladder", 2.0, 0.02, pytest.approx(0.2 * 0.02**2))
    v = SSM(SSM.make_config(), SPEC2).config
    assert (v.noise, v.loss, v.projection) == ("none", "ssm_vr", "rademacher")
    for key, bad, good in (("loss", "fdssm", "fd_ssm"), ("projection", "radmacher", "rademacher"),
                           ("parametrisation", "energie", "energy"), ("noise", "ladr", "ladder")):
        with pytest.raises(ConfigError, match=f"did you mean '{good}'"):
            SSM(SSM.make_config({key: bad}), SPEC2)


@pytest.mark.parametrize("loss", ["ssm", "ssm_vr", "fd_ssm"])
@pytest.mark.parametrize("parametrisation", ["score", "energy"])
def test_image_ladder_trains_and_samples_on_the_unet(parametrisation, loss):
    spec = DataSpec("img", "image", (1, 8, 8), (-1.0, 1.0), None, 100, 10, 10.0, 0.5)
    method = SSM(SSM.make_config({"parametrisation": parametrisation, "loss": loss, "n_projections": 2,
                                  "n_levels": 3, "steps_per_level": 2}), spec)
    factory = BackboneFactory("unet", UNet, spec.shape, {"ch": 8, "ch_mult": (1,), "attention": False})
    with seeded_init(0):
        model = method.build_model(factory)
    g = torch.Generator().manual_seed(11)
    out = method.loss(model, torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, g)
    assert out.shape == (4,) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    res = method.sample(model, 3, g)
    assert res.samples.shape == (3, 1, 8, 8) and torch.isfinite(res.samples).all() and res.nfe == 3 * 2 + 1


OVERLAP = GaussianMixture(torch.tensor([[-0.8, 0.0], [0.8, 0.3]]), torch.tensor([0.3, 0.4]), torch.tensor([0.3, 0.7]))


def test_short_plain_ssm_training_samples_the_target():
    """Plain SSM-VR (the vector default), 400 AdamW steps, 1000 Langevin steps from the broad uniform init, on two
    overlapping modes (plain Langevin cannot re-weight separated ones): MMD below 1.5 × the floor."""
    method = SSM(SSMConfig(), SPEC2)
    with seeded_init(0):
        model = method.build_model(mlp_factory())
    train(method, model, OVERLAP, steps=400, seed=0)
    n, g = 1000, torch.Generator().manual_seed(12)
    res = method.sample(model, n, g)
    assert mmd2(res.samples, OVERLAP.sample(n, g)) < 1.5 * mmd_floor(OVERLAP.sample, n, g)


def test_short_fd_ssm_ladder_training_samples_separated_modes():
    """FD-SSM over a 10-level ladder (2.0 → 0.05), 400 steps, annealed Langevin: three separated modes with their
    weights, MMD below 2 × the floor (annealed Langevin with a briefly trained net is slightly biased in weights)."""
    method = SSM(SSMConfig(loss="fd_ssm", noise="ladder", sigma_max=2.0, sigma_min=0.05), SPEC2)
    with seeded_init(0):
        model = method.build_model(mlp_factory())
    train(method, model, MIX3, steps=400, seed=0)
    n, g = 1000, torch.Generator().manual_seed(13)
    res = method.sample(model, n, g)
    assert mmd2(res.samples, MIX3.sample(n, g)) < 2 * mmd_floor(MIX3.sample, n, g)


@pytest.mark.parametrize("options", [{}, {"noise": "ladder", "loss": "fd_ssm"}, {"parametrisation": "energy"}])
def test_runs_through_the_runner(host, tiny_config, tmp_path, options):
    from harness.config import load_suite
    from harness.runner import run_job

    sets = ["suite.methods=['ssm']", "methods.ssm.langevin_steps=5", "methods.ssm.steps_per_level=2"]
    sets += [f"methods.ssm.{k}='{v}'" for k, v in options.items()]
    suite = load_suite(tiny_config, sets, all_methods=host.registries["methods"].names())
    out = run_job(host, suite.jobs[0], tmp_path, progress=False)
    assert out.status == "ok", out.message


@pytest.mark.parametrize("parametrisation", ["score", "energy"])
@pytest.mark.parametrize("noise", ["ladder", "none"])
def test_chain_contract_counts_readouts_and_input_gradients(parametrisation, noise):
    """Long-run Langevin: trace = x (free), the Tweedie readout (ladder) once at the end, and one input gradient per
    step for the energy parametrisation (s = −∇E), also reported per sample by `sample`."""
    method = SSM(SSMConfig(parametrisation=parametrisation, noise=noise, n_levels=2, steps_per_level=2,
                           langevin_steps=3), SPEC2)
    with seeded_init(0):
        model = method.build_model(mlp_factory(width=8, depth=1))
    chain = method.chain(model)
    g = torch.Generator().manual_seed(0)
    x = chain.step(chain.init(4, g), g)
    assert chain.trace(x) is x and chain.readout_every is None
    energy, ladder = parametrisation == "energy", noise == "ladder"
    assert (chain.grad_evals_per_step, chain.readout_nfe) == (int(energy), int(ladder))
    res = method.sample(model, 3, g)
    nfe = (2 * 2 + 1) if ladder else 3
    assert res.nfe == nfe and res.info.get("grad_evals", 0) == nfe * energy and res.info["total_nfe"] == 3 * nfe
