"""Exact 2-D (or d-D) targets: log-density, score, sampler, and the target smoothed by N(0, s²I).

A Gaussian mixture convolved with N(0, s²I) is again a Gaussian mixture (component variances grow by s²), so
every smoothed target has an exact score. These are the oracles that samplers are tested against.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class ToyTarget(ABC):
    """A density on R^d with exact log-density, score and sampler, and its Gaussian-smoothed versions."""

    dim: int = 2
    modes: Tensor | None = None  # [K, d] component centres where the target has known modes

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape [N], for x of shape [N, d]."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n exact samples, shape [n, d]."""

    @abstractmethod
    def smoothed(self, s: float) -> ToyTarget:
        """The target convolved with N(0, s² I)."""

    def score(self, x: Tensor) -> Tensor:
        """∇ log p(x), shape [N, d]. Default: autograd of `log_prob`; mixtures override with the closed form."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_prob(x).sum(), x)
        return g

    def denoiser(self, y: Tensor, s: float) -> Tensor:
        """E[X | X + sN = y] by Tweedie's formula: y + s² ∇ log p_s(y)."""
        return y + s**2 * self.smoothed(s).score(y)

    def component(self, x: Tensor) -> Tensor | None:
        """Index of the most responsible mode for each point, or None where modes are not defined."""
        return None


class GaussianMixture(ToyTarget):
    """Mixture of isotropic Gaussians: weights [K], means [K, d], stds [K]."""

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k, self.dim = self.means.shape
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.modes = self.means

    def _log_joint(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; μ_k, σ_k² I), shape [N, K], in float64."""
        x = x.to(torch.float64)
        d2 = torch.cdist(x, self.means.to(x.device)) ** 2
        var = self.stds.to(x.device) ** 2
        return (
            torch.log(self.weights.to(x.device))
            - d2 / (2 * var)
            - 0.5 * self.dim * torch.log(2 * math.pi * var)
        )

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._log_joint(x), dim=1).to(x.dtype)

    def responsibilities(self, x: Tensor) -> Tensor:
        """p(k | x), shape [N, K]."""
        return torch.softmax(self._log_joint(x), dim=1)

    def score(self, x: Tensor) -> Tensor:
        """Σ_k p(k|x) (μ_k − x)/σ_k²: the exact score."""
        r = self.responsibilities(x)
        x64 = x.to(torch.float64)
        var = self.stds.to(x.device) ** 2
        mean_term = (r / var) @ self.means.to(x.device)
        return (mean_term - (r / var).sum(1, keepdim=True) * x64).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        k = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, device=dev, dtype=torch.float64)
        x = self.means.to(dev)[k] + self.stds.to(dev)[k, None] * eps
        return x.to(torch.float32)

    def smoothed(self, s: float) -> GaussianMixture:
        return GaussianMixture(self.means, torch.sqrt(self.stds**2 + s**2), self.weights)

    def component(self, x: Tensor) -> Tensor:
        return self.responsibilities(x).argmax(dim=1)
