"""Shared helpers of the walk-jump and SSM tests: a local MMD two-sample statistic with a real-vs-real floor, exact
M-density quantities of a Gaussian mixture computed independently of the factorisation the plugin uses (the known
answers the methods' `oracle(target)` models are checked against), a call counter, and a tiny training loop."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness.backbones import BackboneFactory
from harness.datasets import DataSpec
from harness.metrics.toy import mmd2_unbiased
from harness.toy import GaussianMixture
from plugins.backbones import ResidualMLP

# three separated modes: smoothing visibly changes the law, the M-density walk still crosses between them
MIX3 = GaussianMixture(torch.tensor([[-1.5, 0.0], [1.0, 1.0], [1.0, -1.2]]), torch.tensor([0.25, 0.3, 0.2]),
                       torch.tensor([0.5, 0.3, 0.2]))
SPEC2 = DataSpec("mix3", "vector", (2,), (-3.0, 3.0), None, 1000, 100, 4.0, 1.0)


# two-sample distance ----------------------------------------------------------------------------------

def mmd2(x: Tensor, y: Tensor, bandwidths=(0.1, 0.25, 0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels of these bandwidths (harness.metrics.toy's estimator)."""
    return mmd2_unbiased(x, y, tuple(bandwidths))


def mmd_floor(draw, n: int, g: torch.Generator, reps: int = 20) -> float:
    """The largest of `reps` real-vs-real MMD² values at sample size n (about the 95th percentile)."""
    return max(mmd2(draw(n, g), draw(n, g)) for _ in range(reps))


# exact M-density of a Gaussian mixture, in R^{Md}, without the factorisation ---------------------------------

def m_density_components(mix: GaussianMixture, m: int, sigma: float):
    """For component k, y | k ~ N(1_M ⊗ μ_k, (s_k² 11ᵀ + σ² I_M) ⊗ I_d), y flattened measurement-major."""
    d = mix.dim
    out = []
    for w, mu, s in zip(mix.weights, mix.means, mix.stds, strict=True):
        cov = torch.kron(s**2 * torch.ones(m, m, dtype=torch.float64) + sigma**2 * torch.eye(m, dtype=torch.float64),
                         torch.eye(d, dtype=torch.float64))
        out.append((math.log(w), torch.distributions.MultivariateNormal(mu.repeat(m), cov)))
    return out


def m_density_log_prob(mix: GaussianMixture, y: Tensor, sigma: float) -> Tensor:
    """log p(y) for y [N, M, d], as a mixture over components in R^{Md}."""
    n, m, d = y.shape
    flat = y.reshape(n, m * d).double()
    return torch.logsumexp(torch.stack([lw + mvn.log_prob(flat) for lw, mvn in m_density_components(mix, m, sigma)],
                                       1), 1)


def m_density_score(mix: GaussianMixture, y: Tensor, sigma: float) -> Tensor:
    """∇_y log p(y) by autograd of `m_density_log_prob`."""
    y = y.detach().double().requires_grad_(True)
    (g,) = torch.autograd.grad(m_density_log_prob(mix, y, sigma).sum(), y)
    return g


def posterior_mean(mix: GaussianMixture, y: Tensor, sigma: float) -> Tensor:
    """E[X | y] = Σ_k p(k | y) (μ_k/s_k² + Σ_m y_m/σ²)/(1/s_k² + M/σ²), with p(k | y) from the R^{Md} densities."""
    n, m, d = y.shape
    flat = y.reshape(n, m * d).double()
    logr = torch.stack([lw + mvn.log_prob(flat) for lw, mvn in m_density_components(mix, m, sigma)], 1)
    r = torch.softmax(logr, 1)
    ysum = y.double().sum(1)
    means = torch.stack([(mu / s**2 + ysum / sigma**2) / (1 / s**2 + m / sigma**2)
                         for mu, s in zip(mix.means, mix.stds, strict=True)], 1)  # [N, K, d]
    return (r[:, :, None] * means).sum(1)


class Counting(nn.Module):
    """Wraps a network and counts its forward calls."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *args):
        self.calls += 1
        return self.net(*args)


# building and training ---------------------------------------------------------------------------------

def mlp_factory(spec: DataSpec = SPEC2, width: int = 64, depth: int = 2) -> BackboneFactory:
    return BackboneFactory("mlp", ResidualMLP, spec.shape, {"width": width, "depth": depth, "emb_dim": 32})


def train(method, model: nn.Module, target, steps: int, seed: int, batch: int = 256, lr: float = 3e-3) -> list[float]:
    """AdamW on fresh exact samples each step (seeded, repeatable); returns the loss curve."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        loss = method.loss(model, target.sample(batch, g), g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses
