"""Exact toy metrics against closed forms (Gaussian kernels and Gaussians, energy distance of 1-D Gaussians,
sliced Wasserstein of a translate, Fisher divergence of shifted/scaled exact scores, Gaussian entropy) and the
floor behaviour the harness relies on."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from harness.metrics import EvalContext
from harness.metrics import toy as T
from harness.toy import GaussianMixture, ring_mixture


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(mean, std=1.0):
    return GaussianMixture(torch.tensor([mean], dtype=torch.float64), std)


def test_mmd2_unbiased_matches_closed_form_for_gaussians():
    """X ~ N(0, s²I), Y ~ N(Δ, s²I) in d dims, kernel Σ_h exp(−‖a−b‖²/2h²):
    MMD² = Σ_h 2 (h²/(h²+2s²))^{d/2} (1 − exp(−‖Δ‖²/(2(h²+2s²)))); under the null its expectation is 0."""
    s, d, bws = 1.0, 2, (0.5, 1.0, 2.0)
    delta = torch.tensor([0.6, 0.0])
    d2 = float(delta @ delta)
    exact = sum(2 * (h * h / (h * h + 2 * s * s)) ** (d / 2) * (1 - math.exp(-d2 / (2 * (h * h + 2 * s * s))))
                for h in bws)
    g = gen(0)
    alt = torch.tensor([T.mmd2_unbiased(torch.randn(150, d, generator=g), torch.randn(150, d, generator=g) + delta,
                                        bws) for _ in range(60)])
    null = torch.tensor([T.mmd2_unbiased(torch.randn(150, d, generator=g), torch.randn(150, d, generator=g), bws)
                         for _ in range(60)])
    se_a, se_n = alt.std() / math.sqrt(60), null.std() / math.sqrt(60)
    assert abs(alt.mean() - exact) < 4 * se_a, (float(alt.mean()), exact)
    assert abs(null.mean()) < 4 * se_n  # unbiased: can be negative, centred on 0
    assert (null < 0).any()


def test_energy_distance_matches_closed_form_in_1d():
    """1-D: E|Z| for Z ~ N(m, σ²) is σ√(2/π) e^{−m²/2σ²} + m(1 − 2Φ(−m/σ)); with σ = √2 s,
    ED = 2 E|X − Y| − E|X − X'| − E|Y − Y'| = 2 (E|Z|_{m=Δ} − E|Z|_{m=0})."""
    s, delta = 1.0, 0.8
    sig = math.sqrt(2) * s

    def eabs(m):
        return sig * math.sqrt(2 / math.pi) * math.exp(-m * m / (2 * sig * sig)) + m * (1 - 2 * norm.cdf(-m / sig))

    exact = 2 * (eabs(delta) - eabs(0.0))
    g = gen(1)
    vals = torch.tensor([T.energy_distance(torch.randn(300, 1, generator=g), torch.randn(300, 1, generator=g) + delta)
                         for _ in range(40)])
    assert abs(vals.mean() - exact) < 4 * vals.std() / math.sqrt(40), (float(vals.mean()), exact)


def test_sliced_wasserstein_of_a_translate_is_exact():
    """Projected onto θ, a translate by Δ moves every sorted value by θᵀΔ: SW₂² = mean_θ (θᵀΔ)² exactly,
    which approaches ‖Δ‖²/d for uniform directions."""
    x = torch.randn(500, 3, generator=gen(2))
    delta = torch.tensor([0.5, -1.0, 2.0])
    sw = T.sliced_wasserstein(x, x + delta, generator=gen(3), n_projections=2000)
    theta = T.random_directions(3, 2000, gen(3))
    assert sw == pytest.approx(float((theta @ delta.double()).pow(2).mean().sqrt()), rel=1e-6)  # x + Δ in float32
    assert sw**2 == pytest.approx(float(delta @ delta) / 3, rel=0.05)
    assert T.sliced_wasserstein(x, x, generator=gen(3)) == 0.0


def test_sliced_wasserstein_unequal_sizes():
    x = torch.randn(400, 2, generator=gen(4))
    sw = T.sliced_wasserstein(x, x[::2] + torch.tensor([3.0, 0.0]), generator=gen(5), n_projections=500)
    assert sw == pytest.approx(3 / math.sqrt(2), rel=0.1)


def test_mmd_floor_behaviour_and_two_sample_threshold():
    """Exact samples stay below the calibrated threshold and near their floor; a shifted sample is far above."""
    target = ring_mixture(8, 2.0, 0.2)
    n, g = 400, gen(6)
    thr = T.mmd_threshold(target.sample, n, generator=g, trials=30, quantile=0.99)
    same = T.mmd_two_sample(target.sample(n, g), target.sample(n, g))
    floor = T.mmd_two_sample(target.sample(n, g), target.sample(n, g))
    shifted = T.mmd_two_sample(target.sample(n, g) + torch.tensor([0.5, 0.0]), target.sample(n, g))
    assert same <= thr and floor <= thr
    assert shifted > 5 * thr, (shifted, thr)


def test_mode_coverage_on_a_known_mixture():
    target = GaussianMixture(torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, -4.0]]), 0.3)
    g = gen(7)
    # 300 exact points from each of modes 0..2, none from mode 3: 3 of 4 covered, TV = ½(3·|1/3 − 1/4| + 1/4) = 1/4
    x = torch.cat([target.means[k].float() + 0.3 * torch.randn(300, 2, generator=g) for k in range(3)])
    got = T.mode_coverage(x, target)
    assert got["coverage"] == 0.75 and got["modes_covered"] == 3
    assert got["weight_error"] == pytest.approx(0.25, abs=1e-12)
    exact = T.mode_coverage(target.sample(4000, g), target)
    assert exact["coverage"] == 1.0 and exact["weight_error"] < 0.03
    # points assigned to a mode but far from it do not cover it
    far = torch.tensor([[0.0, -40.0]]).repeat(300, 1)
    got = T.mode_coverage(torch.cat([x, far]), target)
    assert got["modes_covered"] == 3 and got["fractions"][3] == pytest.approx(0.25)
    assert T.is_mixture(target)


def test_fisher_divergence_zero_for_exact_score_and_known_for_perturbations():
    target, sigma = ring_mixture(8, 2.0, 0.2), 0.3
    exact = target.smoothed(sigma).score
    assert T.fisher_divergence(exact, target, sigma, 1000, gen(8))["fisher"] < 1e-10
    c = torch.tensor([0.3, -0.4])
    shifted = T.fisher_divergence(lambda x: exact(x) + c, target, sigma, 1000, gen(8))
    assert shifted["fisher"] == pytest.approx(0.25, rel=1e-5)  # ‖c‖² for every point
    scaled = T.fisher_divergence(lambda x: 1.1 * exact(x), target, sigma, 1000, gen(8))
    assert scaled["relative"] == pytest.approx(0.01, rel=1e-5)  # (0.1)² E‖s‖² / E‖s‖²


def test_mean_nll_of_exact_gaussian_is_its_entropy():
    s = 0.7
    target = gaussian([1.0, -2.0], s)
    x = target.sample(20000, gen(9))
    vals = -target.log_prob(x).double()
    entropy = 0.5 * 2 * math.log(2 * math.pi * math.e * s * s)
    assert T.mean_nll(target.log_prob, x, batch=3000) == pytest.approx(float(vals.mean()), rel=1e-12)
    assert abs(vals.mean() - entropy) < 4 * vals.std() / math.sqrt(20000)


# the registered metrics -------------------------------------------------------------------------------------------

class ExactChain:
    """Langevin-free exact 'chain': independent exact draws each step (τ = 1), for wiring tests."""

    stationary, nfe_per_step = True, 1

    def __init__(self, target):
        self.target = target

    def init(self, n, g):
        return self.target.sample(n, g)

    def step(self, x, g):
        return self.target.sample(x.shape[0], g)

    def readout(self, x):
        return x

    def describe(self):
        return {"stationary": True, "nfe_per_step": 1}


def _ring_ctx(host, samples, **kw):
    ds = host.registries["datasets"].get("ring8")(root=None, download=False)
    return EvalContext(dataset=ds, spec=ds.spec, samples=samples, nfe=1, generator=gen(10),
                       device=torch.device("cpu"), cache_dir=__import__("pathlib").Path("."), **kw)


def test_registered_toy_metrics_on_exact_samples(host):
    metrics = {e.name: e.obj for e in host.registries["metrics"]}
    ds = host.registries["datasets"].get("ring8")(root=None, download=False)
    target, sigma = ds.target, 0.25
    ctx = _ring_ctx(host, target.sample(600, gen(11)), chain=ExactChain(target),
                    score_fn=target.smoothed(sigma).score, score_sigma=sigma, log_likelihood=target.log_prob,
                    options={})
    ctx.options = {"steps": 300, "burn_in": 10}
    for name in ("mmd", "energy_distance", "sliced_wasserstein", "mode_coverage", "fisher_divergence", "nll",
                 "mixing"):
        assert metrics[name].applicable(ctx), name
    assert not metrics["fid_cnn"].applicable(ctx)
    mix = metrics["mixing"].compute(ctx)
    assert mix["iat"].value == pytest.approx(1.0, abs=0.3)  # independent draws
    assert max(mix["rhat"].value, 1.0) < 1.02
    # exact draws hop between the 8 modes with probability 7/8 per step
    assert mix["mode_hops_per_1k_steps"].value == pytest.approx(875, rel=0.05)
    ctx.options = {}
    for name in ("mmd", "energy_distance", "sliced_wasserstein"):
        mv = metrics[name].compute(ctx)
        assert mv.floor is not None and abs(mv.value - mv.floor) < 3 * max(abs(mv.floor), 1e-3), (name, mv)
        # exact samples: value and floor agree within their standard errors, which every two-sample value carries
        assert mv.stderr > 0 and mv.details["floor_stderr"] > 0 and "stderr" in mv.protocol, name
        assert abs(mv.value - mv.floor) < 4 * math.hypot(mv.stderr, mv.details["floor_stderr"]), (name, mv)
    modes = metrics["mode_coverage"].compute(ctx)
    assert modes["mode_coverage"].value == 1.0 and modes["mode_weight_error"].higher_is_better is False
    assert modes["mode_weight_error"].stderr > 0 and modes["mode_coverage"].stderr is not None
    assert metrics["fisher_divergence"].compute(ctx).value < 1e-10
    nll = metrics["nll"].compute(ctx)
    assert nll.value == pytest.approx(nll.floor)
    x_test = ds.split("test")[0][:nll.protocol["n"]]
    assert nll.stderr == pytest.approx(float((-target.log_prob(x_test)).double().std()) / math.sqrt(x_test.shape[0]))
    # a collapsed sampler: everything on one mode
    ctx.samples = target.means[:1].float().repeat(600, 1) + 0.2 * torch.randn(600, 2, generator=gen(12))
    collapsed = metrics["mode_coverage"].compute(ctx)
    assert collapsed["mode_coverage"].value == 1 / 8
    assert collapsed["mode_weight_error"].value == pytest.approx(7 / 8)
    mmd = metrics["mmd"].compute(ctx)
    assert mmd.value > 20 * abs(mmd.floor)


def test_quick_run_records_all_applicable_metrics(host, tiny_config, tmp_path):
    from harness.config import load_suite
    from harness.runner import run_job

    text = tiny_config.read_text().replace('metrics = []', 'metrics = ["auto"]')
    tiny_config.write_text(text + "\n[metrics.mixing]\nsteps = 200\nburn_in = 20\n")
    job = load_suite(tiny_config, [], all_methods=host.registries["methods"].names()).jobs[0]
    res = run_job(host, job, tmp_path / "out", progress=False)
    rec = __import__("json").loads((res.run_dir / "record.json").read_text())
    assert rec["status"] == "ok", rec["error"]
    assert rec["metric_errors"] == {}
    want = {"mmd", "energy_distance", "sliced_wasserstein", "mode_coverage", "mode_weight_error", "iat",
            "ess_bulk", "ess_tail", "rhat", "ess_per_second", "ess_per_1k_nfe", "mode_hops_per_1k_steps"}
    assert want <= set(rec["metrics"]), set(rec["metrics"])
    assert rec["metrics"]["mmd"]["floor"] is not None
