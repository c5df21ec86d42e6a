"""The dsm baseline against exact answers: Langevin sampling with its exact model (`DSM.oracle`) and the irreducible
DSM loss."""

from __future__ import annotations

import torch
from torch import nn

from harness.datasets import DataSpec
from harness.metrics.toy import mmd2_unbiased
from harness.toy import GaussianMixture
from plugins.dsm import DSM, DSMConfig, ScoreNet

# overlapping modes, so Langevin equilibrates the weights in the test's budget (mode hopping is not under test)
MIX = GaussianMixture(torch.tensor([[-0.8, 0.0], [0.8, 0.3]]), torch.tensor([0.3, 0.4]), torch.tensor([0.3, 0.7]))
SPEC = DataSpec("mix", "vector", (2,), (-4.0, 4.0), None, 1000, 100, 4.0, 1.0)


def mmd2(x, y, bandwidths=(0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels of these bandwidths (harness.metrics.toy's estimator)."""
    return mmd2_unbiased(x, y, tuple(bandwidths))


def test_langevin_with_the_oracle_score_samples_the_smoothed_target():
    sigma, n = 0.3, 600
    method = DSM(DSMConfig(sigma=sigma, steps=3000, step_size=0.005, denoise=False), SPEC)
    g = torch.Generator().manual_seed(0)
    res = method.sample(method.oracle(MIX), n, g)
    assert res.nfe == 3000
    target = MIX.smoothed(sigma)
    # threshold: the 99th percentile of real-vs-real MMD² at the same n, plus the O(ε) Langevin bias allowance
    floor = sorted(mmd2(target.sample(n, g), target.sample(n, g)) for _ in range(20))[-1]
    got = mmd2(res.samples, target.sample(n, g))
    assert got < 2 * floor + 1e-3, (got, floor)
    # and it is not trivially small: samples from the wrong (unsmoothed, re-weighted) target are far
    wrong = GaussianMixture(MIX.means, MIX.stds, torch.tensor([0.7, 0.3]))
    assert mmd2(wrong.sample(n, g), target.sample(n, g)) > 5 * (2 * floor + 1e-3)


def test_dsm_loss_at_the_exact_score_is_the_irreducible_value():
    """E‖σ s*(x̃) + ε‖² = d − σ² E‖s*(x̃)‖² at the exact smoothed score s* (expand and use Stein's identity
    E[εᵀ s*(x + σε)] = −σ E‖s*‖²... estimated here from independent x̃ ~ p_σ); a perturbed score is worse."""
    sigma, n = 0.4, 200_000
    g = torch.Generator().manual_seed(1)
    method = DSM(DSMConfig(sigma=sigma), SPEC)
    x = MIX.sample(n, g)
    model = method.oracle(MIX)
    torch.testing.assert_close(model(x[:100].double()), MIX.smoothed(sigma).score(x[:100].double()), rtol=1e-12,
                               atol=1e-12)
    loss = method.loss(model, x, g).mean().item()
    y = MIX.smoothed(sigma).sample(n, g)
    irreducible = 2 - sigma**2 * MIX.smoothed(sigma).score(y).pow(2).sum(1).mean().item()
    assert abs(loss - irreducible) < 0.02, (loss, irreducible)

    class Perturbed(nn.Module):
        def forward(self, x, c=None):
            return model.net(x, c) + 0.1

    worse = method.loss(ScoreNet(Perturbed(), sigma), x, g).mean().item()
    assert worse > loss + 0.015  # exactly 2·0.1² = 0.02 more in expectation


def test_chain_traces_its_own_position_and_pays_one_readout_at_the_end():
    """Chain contract: trace = x (no network call), the Tweedie readout (1 NFE) once at the end (readout_every None),
    no input gradients (a score network); `sample` reports steps + 1 NFE per sample and the batch's total."""
    sigma = 0.3
    method = DSM(DSMConfig(sigma=sigma, steps=5), SPEC)
    calls = []
    model = method.oracle(MIX)
    model.net.register_forward_hook(lambda *a: calls.append(1))
    chain = method.chain(model)
    g = torch.Generator().manual_seed(0)
    x = chain.step(chain.init(4, g), g)
    calls.clear()
    assert chain.trace(x) is x and not calls
    assert (chain.nfe_per_step, chain.readout_nfe, chain.readout_every, chain.grad_evals_per_step) == (1, 1, None, 0)
    assert chain.describe()["readout_every"] is None
    res = method.sample(model, 3, g)
    assert res.nfe == len(calls) == 5 + 1 and res.info == {"total_nfe": 3 * 6}
