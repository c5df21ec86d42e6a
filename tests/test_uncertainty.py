"""Standard errors of metric values (harness.metrics.uncertainty) against known answers: σ/√n for means, the
spread of each statistic over many independent repetitions for the U-statistic variance (MMD², energy distance,
KID) and the FID bootstrap, and exact identities (trace of the matrix square root both ways, torch-fidelity's FID).
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.metrics import toy as T
from harness.metrics import uncertainty as U


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mean_stderr_is_sigma_over_root_n():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert U.mean_stderr(v) == pytest.approx(float(v.std()) / 2)
    sigma, n = 0.7, 400
    ses = [U.mean_stderr(sigma * torch.randn(n, generator=gen(s))) for s in range(20)]
    assert sum(ses) / 20 == pytest.approx(sigma / math.sqrt(n), rel=0.05)


def _repeat(stat_and_se, sample, reps, seed):
    g = gen(seed)
    vals, ses = zip(*(stat_and_se(*sample(g)) for _ in range(reps)), strict=True)
    vals, ses = torch.tensor(vals, dtype=torch.float64), torch.tensor(ses, dtype=torch.float64)
    return float(vals.std()), float(ses.median()), float((ses**2).mean().sqrt())


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_mmd2_stderr_matches_spread_over_repetitions(shift):
    """Same Gaussian (degenerate U-statistic, where a naive bootstrap is about 2× too wide) and shifted."""
    bw, m, n = (0.3, 1.0, 3.0), 150, 200

    def sample(g):
        return torch.randn(m, 2, generator=g) + shift, torch.randn(n, 2, generator=g)

    emp, med, rms = _repeat(lambda x, y: T.mmd2_with_stderr(x, y, bw), sample, 150, 1)
    assert med == pytest.approx(emp, rel=0.3) and rms == pytest.approx(emp, rel=0.4), (emp, med, rms)


def test_u_statistic_variance_is_unbiased_for_the_energy_distance():
    """F + S (unclamped) averages to the variance of the statistic over repetitions."""
    g, vals, var = gen(2), [], []
    for _ in range(200):
        x, y = torch.randn(120, 1, generator=g) + 0.3, torch.randn(100, 1, generator=g)
        vals.append(T.energy_distance(x, y))
        f, s = U.u_statistic_variance(-torch.cdist(x, x), -torch.cdist(y, y), -torch.cdist(x, y))
        var.append(f + s)
    emp = torch.tensor(vals, dtype=torch.float64).var()
    assert sum(var) / len(var) == pytest.approx(float(emp), rel=0.25)
    x, y = torch.randn(60, 2, generator=g), torch.randn(50, 2, generator=g)
    assert U.u_statistic(-torch.cdist(x, x).double(), -torch.cdist(y, y).double(),
                         -torch.cdist(x, y).double()) == pytest.approx(T.energy_distance(x, y), rel=1e-6)


def _gaussians(d, shift, scale, seed=0):
    a = torch.randn(d, d, generator=gen(seed), dtype=torch.float64) / math.sqrt(d)
    return lambda n, g: torch.randn(n, d, generator=g, dtype=torch.float64) @ a * scale + shift, \
        lambda n, g: torch.randn(n, d, generator=g, dtype=torch.float64) @ a


def test_fid_bootstrap_stderr_against_independent_draws():
    """Away from the floor the bootstrap agrees with the spread over independent draws; at P = Q (the floor) it is
    conservative (documented: up to ~2×), never too small."""
    n, g = 300, gen(3)
    for shift, scale, lo, hi in ((0.3, 1.2, 0.7, 1.3), (0.0, 1.0, 1.0, 2.5)):
        p, q = _gaussians(8, shift, scale)
        vals = [U.frechet_distance(p(n, g), q(n, g)) for _ in range(60)]
        boot = [U.fid_bootstrap_stderr(p(n, g), q(n, g), g, replicates=50) for _ in range(8)]
        ratio = sum(boot) / len(boot) / float(torch.tensor(vals).std())
        assert lo < ratio < hi, (shift, ratio)


def test_frechet_distance_both_routes_and_torch_fidelity():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = gen(4)
    f1, f2 = torch.randn(40, 60, generator=g, dtype=torch.float64), torch.randn(50, 60, generator=g,
                                                                                dtype=torch.float64) + 0.2
    c1, c2 = f1 - f1.mean(0), f2 - f2.mean(0)
    wide = float(U._trace_sqrt_product(c1, c2))  # n < d: nuclear norm of c1 c2ᵀ
    s1, s2 = c1.T @ c1 / 39, c2.T @ c2 / 49
    e, v = torch.linalg.eigh(s1)
    root = (v * e.clamp(min=0).sqrt()) @ v.T
    assert wide == pytest.approx(float(torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum()), rel=1e-8)
    f1, f2 = f1[:, :20].float(), f2[:, :20].float()
    ref = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    assert U.frechet_distance(f1, f2) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)


def test_kid_stderr_against_independent_draws():
    """KID over subsets that are the whole set (n ≤ subset size): torch-fidelity's std is 0, the stderr is the
    U-statistic's and matches the spread of KID over independent draws."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    n, g = 150, gen(5)
    p, q = _gaussians(16, 0.15, 1.0)
    vals, ses = [], []
    for _ in range(80):
        a, b = p(n, g).float(), q(n, g).float()
        out = kid_features_to_metric(a, b, kid_subsets=3, kid_subset_size=n, verbose=False)
        assert out["kernel_inception_distance_std"] < 1e-5  # float32 round-off only
        vals.append(out["kernel_inception_distance_mean"])
        ses.append(U.kid_stderr(a, b, out["kernel_inception_distance_std"], 3, n))
    emp = float(torch.tensor(vals, dtype=torch.float64).std())
    assert float(torch.tensor(ses).median()) == pytest.approx(emp, rel=0.3), (emp, ses[:5])


def test_subset_part_of_kid_stderr():
    a, b = torch.randn(50, 4, generator=gen(6)), torch.randn(50, 4, generator=gen(7))
    full = U.kid_stderr(a, b, 0.0, 100, 50)
    assert U.kid_stderr(a, b, 0.3, 101, 20) == pytest.approx(math.sqrt(full**2 + 0.09 / 100))


def test_sliced_wasserstein_and_mode_stderr_are_deterministic_and_scale():
    from harness.toy import ring_mixture

    target = ring_mixture(8, 2.0, 0.2)
    x, y = target.sample(400, gen(8)), target.sample(400, gen(9))
    a = T.sliced_wasserstein_stderr(x, y + 0.3, generator=gen(10), replicates=30)
    assert a == T.sliced_wasserstein_stderr(x, y + 0.3, generator=gen(10), replicates=30) and a > 0
    # mode weight error of a two-mode 50/50 mixture with weights (1/2, 1/2): TV = |f − 1/2|, f ~ Bin(n, 1/2)/n,
    # so its spread is that of |f − 1/2|: at f = 1/2 the bootstrap gives E|f* − 1/2| scale ≈ 0.6 σ_f, σ_f = 1/(2√n)
    from harness.toy import GaussianMixture

    two = GaussianMixture(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), 0.3)
    n = 1000
    xs = torch.cat([two.means[k].float() + 0.3 * torch.randn(n // 2, 2, generator=gen(11)) for k in range(2)])
    se = T.mode_coverage_stderr(xs, two, gen(12), replicates=400)
    sd_abs = math.sqrt(1 - 2 / math.pi) / (2 * math.sqrt(n))  # sd of |N(0, σ_f²)|
    assert se["weight_error"] == pytest.approx(sd_abs, rel=0.2) and se["coverage"] == 0.0
