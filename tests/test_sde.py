"""The sde plugin against known answers: its exact model (`ScoreSDE.oracle`, the target's marginal scores in the
network slot of its own ScoreModel) drives every sampler, the loss and the likelihood through their real code path.

The known answers (tests/oracle_sde_mdsm.py) are written from the paper's kernels, independently of plugins/sde.py;
the oracle is checked against them first.
"""

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
    marginal_log_prob,
    marginal_score,
    mmd2,
    mmd_threshold,
    ref_kernel,
    sample_marginal,
    seeded_model,
    train,
)

from harness.datasets import DataSpec
from harness.errors import ConfigError
from harness.toy import GaussianMixture
from plugins.sde import PARAMETRISATIONS, SDES, MarginalScoreNet, ScoreModel, ScoreSDE, SDEConfig

SIGMA_MAX = 20.0  # VE's σ_max in these tests (the prior N(0, σ_max²) then nearly equals p_1)


def make(sde: str, **overrides) -> ScoreSDE:
    return ScoreSDE(SDEConfig(sde=sde, sigma_max=overrides.pop("sigma_max", SIGMA_MAX), **overrides), SPEC)


def oracle_model(method: ScoreSDE, mix=MIX, convention: str | None = None) -> ScoreModel:
    """The method's own oracle; with `convention`, the exact net emitting that other convention in its ScoreModel."""
    if convention is None:
        return method.oracle(mix)
    return method.score_model(MarginalScoreNet(mix, method.sde, convention))


@pytest.mark.parametrize("convention", sorted(PARAMETRISATIONS))
@pytest.mark.parametrize("name", SDES)
def test_oracle_is_the_exact_marginal_score_of_the_papers_kernel(name, convention):
    """`ScoreSDE.oracle` against the independent reference: the mixture's marginal under the paper's kernel
    (eq. 29-34), at random (x, t) in float64 and through float32 inputs; its raw output is that convention's."""
    method = make(name, parametrisation=convention)
    model = oracle_model(method)
    g = torch.Generator().manual_seed(0)
    t = 1e-5 + (1 - 1e-5) * torch.rand(256, generator=g, dtype=torch.float64)
    x = 3 * torch.randn(256, 2, generator=g, dtype=torch.float64)
    alpha, sigma = ref_kernel(name, t, sigma_max=SIGMA_MAX)
    exact = marginal_score(MIX, x, alpha, sigma)
    torch.testing.assert_close(model(x, t), exact, rtol=1e-9, atol=1e-9)
    out = PARAMETRISATIONS[convention].to_output(exact, sigma[:, None])
    torch.testing.assert_close(model.net(x, t), out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model(x.float(), t.float()).double(), exact, rtol=2e-4, atol=1e-4)
    assert not list(model.parameters()) and model.net.calls == 3


# the SDEs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SDES)
def test_kernel_is_the_papers_and_solves_the_moment_equations(name):
    """(α_t, σ_t) equal eq. 29-34, and they solve the moment ODEs of dx = a x dt + g dw:
    dα/dt = a α and dσ²/dt = 2 a σ² + g² (checked by central differences in float64)."""
    sde = make(name).sde
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    alpha, sigma = sde.marginal(t)
    ra, rs = ref_kernel(name, t, sigma_max=SIGMA_MAX)
    torch.testing.assert_close(alpha, ra, rtol=1e-10, atol=0)
    torch.testing.assert_close(sigma, rs, rtol=1e-10, atol=0)
    h = 1e-5
    (ap, sp), (am, sm) = sde.marginal(t + h), sde.marginal(t - h)
    torch.testing.assert_close((ap - am) / (2 * h), sde.drift_coef(t) * alpha, rtol=1e-6, atol=1e-9)
    dvar = (sp**2 - sm**2) / (2 * h)
    torch.testing.assert_close(dvar, 2 * sde.drift_coef(t) * sigma**2 + sde.diffusion(t) ** 2, rtol=1e-6, atol=1e-9)


def test_vp_std_is_accurate_at_tiny_t():
    """σ_t² = 1 − e^{−B(t)} ≈ β_min t for t → 0: float32 must not round it to 0 or to a few ulps."""
    t = torch.tensor([1e-5, 1e-6])
    _, sigma = make("vp").sde.marginal(t)
    torch.testing.assert_close(sigma**2, 0.1 * t, rtol=1e-3, atol=0)


@pytest.mark.parametrize("name", SDES)
def test_prior_log_prob_is_the_gaussian_density(name):
    sde = make(name).sde
    z = sde.prior_sample((20000, 2), torch.Generator().manual_seed(0))
    assert abs(z.std().item() - sde.prior_std) < 0.02 * sde.prior_std
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z[:5]).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(z[:5]), ref)


# output conventions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SDES)
def test_output_convention_gives_the_exact_score_back(name):
    """Data = one point μ: x_t = α μ + σ z has the exact score −z/σ. A noise-predicting network emits z, a
    score-scaling one emits σ s = −z; read through the right convention both return −z/σ exactly, read through the
    other one they return the score with the wrong sign (the silent failure the conventions guard against)."""
    method = make(name)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g) * 0.98 + 0.01
    z = torch.randn(64, 2, generator=g)
    alpha, sigma = method.sde.marginal(t)
    xt = alpha[:, None] * torch.tensor([0.3, -0.2]) + sigma[:, None] * z
    exact = -z / sigma[:, None]
    emitted = {"noise": z, "scaled_score": -z}  # what the ideal network of each convention outputs

    class Emit(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x, c):
            return self.out

    own = method.config.parametrisation
    assert own == ("scaled_score" if name == "ve" else "noise")
    torch.testing.assert_close(method.score_model(Emit(emitted[own]))(xt, t), exact)
    other = next(p for p in PARAMETRISATIONS if p != own)
    wrong = ScoreModel(Emit(emitted[other]), method.sde, own)(xt, t)
    torch.testing.assert_close(wrong, -exact)


def test_a_model_with_another_convention_is_refused():
    ve, vp = make("ve"), make("vp")
    model = oracle_model(vp)
    with pytest.raises(ConfigError, match="convention"):
        ve.sample(model, 4, torch.Generator())
    crossed = make("vp", parametrisation="scaled_score")  # allowed when asked for explicitly...
    with pytest.raises(ConfigError, match="convention"):  # ...but a model built for the other one is refused
        crossed.loss(model, MIX.sample(4, torch.Generator()), torch.Generator())


def test_resolved_config_records_derived_values_and_names_are_checked():
    m = ScoreSDE(SDEConfig(sde="ve"), SPEC)
    cfg = m.resolved_config()
    assert cfg["sigma_max"] == SPEC.max_pairwise_distance  # Song & Ermon's rule, visible in the record
    assert cfg["parametrisation"] == "scaled_score" and cfg["sample_eps"] == 1e-5
    assert ScoreSDE(SDEConfig(sde="subvp"), SPEC).resolved_config()["sample_eps"] == 1e-3
    # VE's σ_min: the paper's 0.01 on [0, 1] is 0.02 on [-1, 1] (lengths double); vectors: 0.01 × std
    image = DataSpec("img", "image", (1, 4, 4), (-1.0, 1.0), None, 100, 100, 9.0, 0.5)
    assert ScoreSDE(SDEConfig(), image).resolved_config()["sigma_min"] == 0.02
    assert cfg["sigma_min"] == 0.01 * SPEC.std and ScoreSDE(SDEConfig(), RING_SPEC).config.sigma_min == 0.01 * 1.42
    with pytest.raises(ConfigError, match="did you mean 'subvp'"):
        ScoreSDE(SDEConfig(sde="sub_vp"), SPEC)
    with pytest.raises(ConfigError, match="euler_maruyama"):
        ScoreSDE(SDEConfig(sampler="euler"), SPEC)


@pytest.mark.parametrize(("sde", "sampler", "nfe"), [("ve", "pc", 2 * 7 + 1), ("vp", "euler_maruyama", 7 + 1),
                                                     ("subvp", "euler_maruyama", 7 + 1)])
def test_default_sampler_is_the_papers_configuration_per_sde(sde, sampler, nfe):
    """Song et al. (2021): VE with predictor-corrector, VP and sub-VP with Euler-Maruyama and no corrector; the
    resolved sampler is in the record, the final denoising step stays and is counted (network calls counted)."""
    method = ScoreSDE(SDEConfig(sde=sde, steps=7), SPEC)
    assert method.resolved_config()["sampler"] == sampler
    assert ScoreSDE(SDEConfig(sde=sde, sampler="ode"), SPEC).config.sampler == "ode"  # an explicit choice wins
    calls = []

    class Net(torch.nn.Module):
        def forward(self, x, t):
            calls.append(1)
            return torch.zeros_like(x)

    res = method.sample(method.score_model(Net()), 3, torch.Generator().manual_seed(0))
    assert res.nfe == len(calls) == nfe and res.info["sampler"] == sampler


# the loss ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ve", "vp"])
def test_dsm_loss_at_the_exact_score_is_the_irreducible_value(name):
    """At the exact score, E‖σ_t s* + z‖² = E_t[d − σ_t² E‖s*(x_t, t)‖²] (expand the square; Tweedie gives
    E[z | x_t] = −σ_t s*). The right side is estimated independently, from exact draws of x_t. Adding δ to the
    network output raises the loss by exactly ‖δ‖² in expectation (E[σ s* + z] = 0); reading the network with the
    wrong convention raises it to about d + 3 σ² E‖s*‖²."""
    n = 100_000
    method = make(name)
    x0 = MIX.sample(n, torch.Generator().manual_seed(1))
    loss = method.loss(oracle_model(method), x0, torch.Generator().manual_seed(2)).mean().item()

    g = torch.Generator().manual_seed(3)
    eps = method.config.train_eps
    t = eps + (1 - eps) * torch.rand(n, generator=g, dtype=torch.float64)
    alpha, sigma = ref_kernel(name, t, sigma_max=SIGMA_MAX)
    xt = sample_marginal(MIX, alpha, sigma, g)
    irreducible = (2 - sigma**2 * marginal_score(MIX, xt, alpha, sigma).pow(2).sum(1)).mean().item()
    assert abs(loss - irreducible) < 0.03, (loss, irreducible)

    class Shifted(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(x, t) + 0.1

    shifted = method.score_model(Shifted(oracle_model(method).net))
    worse = method.loss(shifted, x0, torch.Generator().manual_seed(2)).mean().item()
    assert abs(worse - loss - 0.02) < 0.004, (worse, loss)  # ‖δ‖² = 2 · 0.1²

    other = next(p for p in PARAMETRISATIONS if p != method.config.parametrisation)
    mismatched = method.loss(oracle_model(method, convention=other), x0, torch.Generator().manual_seed(2))
    assert mismatched.mean().item() > 1.5 * irreducible


def test_likelihood_weighting_for_ve_is_a_constant_factor():
    """For VE, g(t)²/σ_t² = 2 log(σ_max/σ_min) at every t: the weighted loss is exactly that multiple."""
    x0 = MIX.sample(256, torch.Generator().manual_seed(0))
    plain, weighted = make("ve"), make("ve", likelihood_weighting=True)
    a = plain.loss(oracle_model(plain), x0, torch.Generator().manual_seed(1))
    b = weighted.loss(oracle_model(weighted), x0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(b, a * 2 * math.log(SIGMA_MAX / 0.01), rtol=1e-4, atol=0)
    assert a.shape == (256,)


# the runner's bookkeeping over sampling batches ---------------------------------------------------------------

def test_sample_in_batches_reports_the_mean_nfe_over_samples_and_merges_the_infos():
    """A fake method whose NFE grows with the batch (10·b + 1): 10 samples in batches of 4, 4, 2 cost
    (4·41 + 4·41 + 2·21)/10 = 37 NFE per sample (the last batch alone says 21). Infos merge: total_* summed,
    agreed values kept, other numbers averaged over samples."""
    from harness.method import Method, SampleResult
    from harness.runner import sample_in_batches

    class PerBatch(Method):
        name = "per_batch"

        def build_model(self, backbone):
            return torch.nn.Identity()

        def loss(self, model, batch, generator):
            return batch.sum(1)

        def sample(self, model, n, generator):
            return SampleResult(torch.zeros(n, 2), 10 * n + 1, {"kind": "fake", "size": n, "total_rows": n})

    method = PerBatch(PerBatch.make_config(), SPEC)
    samples, nfe, info = sample_in_batches(method, None, 10, 4, torch.Generator(), with_info=True)
    assert samples.shape == (10, 2) and nfe == 37 and isinstance(nfe, int)
    assert info == {"kind": "fake", "size": pytest.approx(3.6), "total_rows": 10, "batches": 3}
    assert sample_in_batches(method, None, 9, 4, torch.Generator())[1] == pytest.approx((8 * 41 + 11) / 9)


def test_ode_nfe_over_batches_is_the_mean_over_samples():
    """The adaptive probability-flow ODE spends a different NFE on each batch; the runner reports their mean over
    samples, each batch's NFE counted at the network."""
    from harness.runner import sample_in_batches

    method = make("vp", sampler="ode")
    model = oracle_model(method)
    seen = []
    calls = []
    model.net.register_forward_hook(lambda *a: calls.append(1))
    sample = method.sample

    def spy(m, n, g):
        calls.clear()
        res = sample(m, n, g)
        seen.append((n, res.nfe, len(calls)))
        return res

    method.sample = spy
    _, nfe = sample_in_batches(method, model, 7, 4, torch.Generator().manual_seed(0))
    assert [n for n, _, _ in seen] == [4, 3] and all(got == counted for _, got, counted in seen)
    assert seen[0][1] != seen[1][1]  # the batches did cost differently
    assert nfe == pytest.approx(sum(n * k for n, k, _ in seen) / 7)


# samplers with the exact score ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def threshold():
    """95th percentile of real-vs-real MMD² at n = 500 (40 pairs)."""
    return mmd_threshold(MIX, 500, torch.Generator().manual_seed(123))


@pytest.mark.parametrize("sampler", ["euler_maruyama", "pc", "ode"])
@pytest.mark.parametrize("name", SDES)
def test_each_sampler_with_the_exact_score_samples_the_target(name, sampler, threshold):
    """Samples match the mixture: MMD² below twice the real-vs-real 95th percentile at the same n (n = 500,
    N = 250 steps; over 5 seeds per case the largest ratio to the percentile was 1.26). The reported NFE equals the
    number of network calls the oracle counted."""
    method = make(name, sampler=sampler, steps=250)
    model = oracle_model(method)
    res = method.sample(model, 500, torch.Generator().manual_seed(7))
    assert res.samples.shape == (500, 2)
    assert res.nfe == model.net.calls
    if sampler != "ode":
        assert res.nfe == 250 * (2 if sampler == "pc" else 1) + 1
    got = mmd2(res.samples, MIX.sample(500, torch.Generator().manual_seed(8)))
    assert got < 2 * threshold, (got, threshold)


def test_the_two_sample_threshold_rejects_plausible_mistakes(threshold):
    """The test above can fail: samples with reversed weights, and a VE sampler whose network is read with the
    VP (noise) convention, are far above its bound (2 × the percentile)."""
    g = torch.Generator().manual_seed(9)
    swapped = GaussianMixture(MIX.means, MIX.stds, MIX.weights.flip(0))
    assert mmd2(swapped.sample(500, g), MIX.sample(500, g)) > 10 * threshold
    method = make("ve", sampler="euler_maruyama", steps=250)
    crossed = oracle_model(method, convention="noise")
    bad = method.sample(crossed, 500, g).samples
    assert not torch.isfinite(bad).all() or mmd2(bad, MIX.sample(500, g)) > 10 * threshold


def test_no_denoise_skips_the_final_step():
    method = make("vp", sampler="euler_maruyama", steps=20, denoise=False)
    assert method.sample(oracle_model(method), 8, torch.Generator()).nfe == 20


# likelihood ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SDES)
def test_ode_log_likelihood_with_the_exact_trace_matches_the_exact_density(name):
    """log p_ε(x) by the probability-flow ODE equals the exact marginal log-density at t = ε within 0.03 nats per
    point (the residual is the prior's mismatch with p_1: VE uses σ_max = 50 here)."""
    method = make(name, trace_estimator="exact", sigma_max=50.0)
    x = MIX.sample(64, torch.Generator().manual_seed(0))
    ll = method.log_likelihood(oracle_model(method), x, torch.Generator().manual_seed(1)).double()
    alpha, sigma = ref_kernel(name, torch.full((64,), method.config.likelihood_eps), sigma_max=50.0)
    exact = marginal_log_prob(MIX, x, alpha, sigma)
    assert ll.shape == (64,)
    assert (ll - exact).abs().max() < 0.03, (ll - exact).abs().max()


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_likelihood_is_unbiased(probe):
    """Each of 8 points repeated 64 times (one probe per copy, fixed along the path): the mean over probes is
    within 4 standard errors (plus 0.01 nats) of the exact log-density."""
    method = make("vp", trace_estimator=probe)
    x = MIX.sample(8, torch.Generator().manual_seed(0)).repeat_interleave(64, 0)
    ll = method.log_likelihood(oracle_model(method), x, torch.Generator().manual_seed(1)).double().reshape(8, 64)
    alpha, sigma = ref_kernel("vp", torch.full((8,), method.config.likelihood_eps))
    exact = marginal_log_prob(MIX, x[::64], alpha, sigma)
    se = ll.std(1) / 8
    assert ((ll.mean(1) - exact).abs() < 4 * se + 0.01).all(), (ll.mean(1) - exact, se)
    assert (ll.std(1) > 0).all()  # the estimator is random, so the check above is not vacuous


def test_bits_per_dim_of_8bit_images_uses_the_dequantisation_change_of_variables():
    """A 2×2 'image' Gaussian in [-1, 1]; x on the 8-bit grid k/255 → [-1, 1]. Then
    bits/dim = −log p_y(y)/(d log 2) + 7 with y in x's dequantisation bin; the density varies little within a bin
    of width 2/256, so the bin centre's exact density predicts it within 0.02 bits/dim (a wrong offset, e.g. 8 for
    data in [0, 1], would be off by 1)."""
    d_shape = (1, 2, 2)
    mix = GaussianMixture(torch.tensor([[0.2, -0.1, 0.0, 0.3]]), 0.3)
    spec = DataSpec("img", "image", d_shape, (-1.0, 1.0), None, 100, 100, 4.0, 0.3)
    method = ScoreSDE(SDEConfig(sde="vp", trace_estimator="exact"), spec)
    g = torch.Generator().manual_seed(0)
    x = mix.sample(16, g).clamp(-1, 1)
    x = ((x + 1) / 2 * 255).round() / 255 * 2 - 1  # what an 8-bit data set gives in model space
    model = method.oracle(mix)
    bpd = method.bits_per_dim(model, x.reshape(16, *d_shape), torch.Generator().manual_seed(1)).double()
    k = ((x + 1) / 2 * 255).round()
    centre = (k + 0.5) / 128 - 1
    alpha, sigma = ref_kernel("vp", torch.full((16,), method.config.likelihood_eps))
    expected = -marginal_log_prob(mix, centre, alpha, sigma) / (4 * math.log(2)) + 7
    assert (bpd - expected).abs().max() < 0.02, (bpd - expected)


@pytest.mark.parametrize("name", SDES)
def test_score_fn_is_the_score_of_the_data_smoothed_at_score_sigma(name):
    method = make(name, score_sigma=0.2)
    fn, tau = method.score_fn(oracle_model(method))
    assert tau == 0.2
    x = MIX.smoothed(0.2).sample(256, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fn(x), MIX.smoothed(0.2).score(x), rtol=2e-3, atol=2e-3)


# with a real network ------------------------------------------------------------------------------------------

def test_sampling_and_likelihood_never_touch_parameter_gradients():
    method = make("vp", steps=3, trace_estimator="rademacher")
    model = seeded_model(method, 0, width=16, depth=1)
    for sampler in ("euler_maruyama", "pc", "ode"):
        method.config.sampler = sampler
        method.sample(model, 4, torch.Generator().manual_seed(0))
    method.log_likelihood(model, MIX.sample(4, torch.Generator()), torch.Generator().manual_seed(0))
    method.score_fn(model)[0](MIX.sample(4, torch.Generator()))
    assert all(p.grad is None for p in model.parameters())
    loss = method.loss(model, MIX.sample(8, torch.Generator()), torch.Generator())
    assert loss.shape == (8,) and loss.requires_grad


def test_short_training_learns_the_ring():
    """800 steps of a 2×64 residual MLP (VP, seeded): PC samples reach MMD² < 0.35 × that of the moment-matched
    Gaussian N(0, (r²/2 + s²) I), i.e. the eight modes are learned (the real-vs-real floor is reported)."""
    method = ScoreSDE(SDEConfig(sde="vp", sampler="pc", steps=100), RING_SPEC)
    model = train(method, seeded_model(method, 0), RING, steps=800, batch=256, lr=3e-3, seed=0)
    g = torch.Generator().manual_seed(1)
    samples = method.sample(model, 500, g).samples
    got = mmd2(samples, RING.sample(500, g))
    baseline = mmd2(RING_GAUSSIAN.sample(500, g), RING.sample(500, g))
    floor = mmd_threshold(RING, 500, g, reps=10)
    print(f"ring8-like, vp/pc N=100: MMD² {got:.4f}, moment-matched Gaussian {baseline:.4f}, floor {floor:.4f}")
    assert got < 0.35 * baseline, (got, baseline)
