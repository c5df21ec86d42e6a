"""Known answers and a two-sample test for the sde and mdsm tests (the methods' exact models come from their own
`oracle(target)` capability and are checked against these).

The answers are written from the formulas, independently of the plugins' own code: the perturbation kernels of
the three SDEs (Song et al. 2021, eq. 29-34) and the exact marginal of a Gaussian mixture under x_t = α x_0 + σ z,
which is again a Gaussian mixture with means α μ_k and variances α² s_k² + σ².

`mmd2`/`mmd_threshold` are a small local two-sample test (unbiased MMD² with a multi-bandwidth Gaussian kernel and
a threshold calibrated from real-vs-real draws at the same n); swap them for harness.metrics.toy once it exists.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness.datasets import DataSpec
from harness.metrics.toy import mmd2_unbiased
from harness.toy import GaussianMixture

# three unequal, moderately separated components: weights and modes are both under test
MIX = GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5]]), torch.tensor([0.3, 0.2, 0.4]),
                      torch.tensor([0.5, 0.3, 0.2]))
SPEC = DataSpec("mix3", "vector", (2,), (-4.0, 4.0), None, 10_000, 1000, 4.5, 1.0)
BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)

# for the short trainings: eight modes on a circle of radius 2 (like the ring8 data set), and the Gaussian with the
# same first two moments, N(0, (r²/2 + s²) I), as the reference a multimodal fit must beat
RING = GaussianMixture(2.0 * torch.tensor([[math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)] for k in range(8)]),
                       0.15)
RING_SPEC = DataSpec("ring", "vector", (2,), (-3.0, 3.0), None, 10_000, 1000, 4.3, 1.42)
RING_GAUSSIAN = GaussianMixture(torch.zeros(1, 2), math.sqrt(2.0 + 0.15**2))


# reference perturbation kernels: t -> (α_t, σ_t), written from the paper ------------------------------------

def ref_kernel(sde: str, t: Tensor, sigma_min=0.01, sigma_max=20.0, beta_min=0.1, beta_max=20.0):
    t = t.to(torch.float64)
    if sde == "ve":
        return torch.ones_like(t), sigma_min * (sigma_max / sigma_min) ** t
    log_mean = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
    alpha = torch.exp(log_mean)
    if sde == "vp":
        return alpha, torch.sqrt(1.0 - torch.exp(2.0 * log_mean))
    return alpha, 1.0 - torch.exp(2.0 * log_mean)  # subvp


def _log_joint(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log w_k + log N(x; α μ_k, (α² s_k² + σ²) I) per example (α, σ per example), float64, and the pieces."""
    x = x.flatten(1).to(torch.float64)
    a, s = alpha.to(torch.float64)[:, None], sigma.to(torch.float64)[:, None]
    var = a**2 * mix.stds[None] ** 2 + s**2  # [N, K]
    means = a[:, :, None] * mix.means[None]  # [N, K, d]
    d2 = (x[:, None, :] - means).pow(2).sum(-1)
    lj = torch.log(mix.weights)[None] - d2 / (2 * var) - 0.5 * mix.dim * torch.log(2 * math.pi * var)
    return lj, var, means


def marginal_log_prob(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return torch.logsumexp(_log_joint(mix, x, alpha, sigma)[0], dim=1)


def marginal_score(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Σ_k r_k(x) (α μ_k − x)/v_k, in float64, shaped like x."""
    lj, var, means = _log_joint(mix, x, alpha, sigma)
    r = torch.softmax(lj, dim=1)
    xf = x.flatten(1).to(torch.float64)
    s = (r[:, :, None] * (means - xf[:, None, :]) / var[:, :, None]).sum(1)
    return s.reshape(x.shape)


# two-sample test ---------------------------------------------------------------------------------------------

def mmd2(x: Tensor, y: Tensor, bandwidths=BANDWIDTHS) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels of these bandwidths (harness.metrics.toy's estimator)."""
    return mmd2_unbiased(x, y, tuple(bandwidths))


def mmd_threshold(target, n: int, generator: torch.Generator, reps: int = 40, q: float = 0.95) -> float:
    """The q-quantile of real-vs-real MMD² between two independent n-samples of `target`."""
    vals = torch.tensor([mmd2(target.sample(n, generator), target.sample(n, generator)) for _ in range(reps)])
    return float(torch.quantile(vals, q))


def sample_marginal(mix: GaussianMixture, alpha: Tensor, sigma: Tensor, generator: torch.Generator) -> Tensor:
    """Exact draws of x_t for per-example (α, σ): component k ~ w, x_t = α μ_k + sqrt(α² s_k² + σ²) ξ."""
    n = alpha.shape[0]
    k = torch.multinomial(mix.weights, n, replacement=True, generator=generator)
    a, s = alpha.to(torch.float64)[:, None], sigma.to(torch.float64)[:, None]
    std = torch.sqrt(a**2 * mix.stds[k, None] ** 2 + s**2)
    return (a * mix.means[k] + std * torch.randn(n, mix.dim, generator=generator, dtype=torch.float64)).float()


# short trainings -------------------------------------------------------------------------------------------

def mlp_factory(width: int = 64, depth: int = 2):
    from harness.backbones import BackboneFactory
    from plugins.backbones import ResidualMLP

    return BackboneFactory("mlp", ResidualMLP, (2,), {"width": width, "depth": depth})


def seeded_model(method, seed: int, **backbone):
    """method.build_model on a small residual MLP, with the parameter initialisation seeded (global RNG forked)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return method.build_model(mlp_factory(**backbone))


def train(method, model: nn.Module, target, steps: int, batch: int, lr: float, seed: int) -> nn.Module:
    """A minimal seeded training loop: AdamW with a one-cycle schedule, gradient clipping at 1, the per-example
    losses averaged, fresh exact target draws each step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        loss = method.loss(model, target.sample(batch, g), g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model
