"""Exact 2-D (or d-D) targets: log-density, score, sampler, and the target smoothed by N(0, s²I).

A Gaussian mixture convolved with N(0, s²I) is again a Gaussian mixture (component variances grow by s²), so
its smoothed versions have exact scores. The banana (a non-mixture) has an exact density, score and sampler; its
smoothed versions are computed by 1-D quadrature to ~1e-12 in log-density (`SmoothedBanana`). These are the
oracles that samplers are tested against. Constructors: `ring_mixture`, `grid_mixture`, `Banana`.
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


def ring_mixture(k: int, radius: float, std: float) -> GaussianMixture:
    """k equally weighted isotropic Gaussians N(μ_j, std² I), μ_j = radius·(cos 2πj/k, sin 2πj/k), j = 0..k−1."""
    angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return GaussianMixture(radius * torch.stack([angle.cos(), angle.sin()], dim=1), std)


def grid_mixture(n: int, spacing: float, std: float) -> GaussianMixture:
    """n×n equally weighted isotropic Gaussians N(μ, std² I) on a square grid centred at 0:
    μ = spacing·(i, j) with i, j ∈ {−(n−1)/2, ..., (n−1)/2}."""
    ticks = spacing * (torch.arange(n, dtype=torch.float64) - (n - 1) / 2)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return GaussianMixture(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), std)


def _log_normal(x: Tensor, mean: Tensor | float, var: Tensor | float) -> Tensor:
    """log N(x; mean, var), elementwise (1-D Gaussian)."""
    return -0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * torch.as_tensor(var, dtype=x.dtype))


class Banana(ToyTarget):
    """The banana ("twisted Gaussian", Haario, Saksman & Tamminen 2001) in 2-D:

        x1 ~ N(0, a²),   x2 | x1 ~ N(b (x1² − a²), s²).

    Exact density, score and sampler. Moments: E x = 0, Var x1 = a², Var x2 = s² + 2 b² a⁴, Cov(x1, x2) = 0,
    E[x1² x2] = 2 b a⁴. Not a mixture: no `modes`, `component` is None. Its smoothed versions have no closed form
    and are computed by quadrature (`SmoothedBanana`).
    """

    def __init__(self, a: float, b: float, s: float):
        if a <= 0 or s <= 0:
            raise ValueError(f"banana needs a > 0 and s > 0, got a={a}, s={s}")
        self.a, self.b, self.s = float(a), float(b), float(s)

    def _mean2(self, x1: Tensor) -> Tensor:
        return self.b * (x1**2 - self.a**2)

    def log_prob(self, x: Tensor) -> Tensor:
        x64 = x.to(torch.float64)
        x1, x2 = x64[:, 0], x64[:, 1]
        lp = _log_normal(x1, 0.0, self.a**2) + _log_normal(x2, self._mean2(x1), self.s**2)
        return lp.to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        """∂/∂x1 = −x1/a² + 2 b x1 (x2 − m(x1))/s²,  ∂/∂x2 = −(x2 − m(x1))/s²,  m(x1) = b (x1² − a²)."""
        x64 = x.to(torch.float64)
        x1, x2 = x64[:, 0], x64[:, 1]
        e = (x2 - self._mean2(x1)) / self.s**2
        return torch.stack([-x1 / self.a**2 + 2 * self.b * x1 * e, -e], dim=1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        eps = torch.randn(n, 2, generator=generator, device=generator.device, dtype=torch.float64)
        x1 = self.a * eps[:, 0]
        x2 = self._mean2(x1) + self.s * eps[:, 1]
        return torch.stack([x1, x2], dim=1).to(torch.float32)

    def smoothed(self, s: float) -> ToyTarget:
        return self if s == 0 else SmoothedBanana(self, s)


# Trapezoid nodes over x1 in SmoothedBanana (see its docstring for the accuracy this gives).
BANANA_QUADRATURE_NODES = 128
BANANA_QUADRATURE_DROP = 46.0  # integrate where P ≥ max P − 46
SMOOTHED_BANANA_CHUNK = 16384  # points per vectorised block


def _real_cubic_extreme_roots(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest and largest real roots of z³ + p z + q = 0, elementwise (Cardano; Viète's trigonometric form when
    there are three real roots). Where there is a single real root both outputs are that root."""
    disc = (q / 2) ** 2 + (p / 3) ** 3
    sq = torch.sqrt(disc.clamp(min=0))
    u, w = -q / 2 + sq, -q / 2 - sq
    one = torch.sign(u) * u.abs() ** (1 / 3) + torch.sign(w) * w.abs() ** (1 / 3)
    neg_p = (-p).clamp(min=1e-300)
    m = 2 * torch.sqrt(neg_p / 3)
    theta = torch.acos((1.5 * q / -neg_p * torch.sqrt(3 / neg_p)).clamp(-1, 1)) / 3
    three = disc <= 0
    lo = torch.where(three, m * torch.cos(theta - 4 * math.pi / 3), one)
    hi = torch.where(three, m * torch.cos(theta), one)
    return lo, hi


class SmoothedBanana(ToyTarget):
    """The banana convolved with N(0, t² I): one dimension of numerical quadrature, the rest exact.

    With y = x + t ε, the x1-part is Gaussian-conjugate and x2 | x1 convolved with N(0, t²) stays Gaussian:

        p_t(y) = N(y1; 0, a² + t²) ∫ exp P(x1) dx1,
        P(x1) = log N(x1; μ, τ²) + log N(y2; b (x1² − a²), v),
        μ = a² y1 / (a² + t²),  τ² = a² t² / (a² + t²),  v = s² + t².

    P is a quartic in x1 with at most two local maxima, the outer real roots of the cubic P' = 0 (closed form),
    which give max P. Every x1 with P(x1) ≥ max P − D (D = BANANA_QUADRATURE_DROP = 46) satisfies both
    |x1 − μ| ≤ τ √(2R) and |b x1² − c| ≤ √(2vR), R = max log N(·; μ, τ²) + max log N(·; ·, v) − max P + D, so the
    rule integrates over that interval (outside it the integrand is < e^−46 of its peak) with `nodes` equally
    spaced points: the trapezoid rule converges geometrically for smooth integrands that vanish at both ends.
    Gauss–Hermite on N(μ, τ²) is not used: far from the data the posterior of x1 sits many τ away from μ and
    Gauss–Hermite returns log p_t wrong by O(100) (measured at y = (5, −5), t = 0.1).

    The score uses Fisher's identity, ∇_y log p_t(y) = E[∇_y log h(x1, y) | y] with h the joint integrand:
    ∂_{y1} log h = (x1 − y1)/t², ∂_{y2} log h = (m(x1) − y2)/v, with the same quadrature weights; this is exactly
    the derivative of the quadrature formula with its nodes held fixed, so it equals autograd of `log_prob`.

    Accuracy (float64; a = 1, b = 0.8, s = 0.4; 128 nodes; t ∈ [1e-3, 10]; y on a grid over [−6, 6]² and on
    samples), measured against a dense fixed-grid trapezoid over x1 ∈ [−14, 14] with spacing ≤ t/8:
    |Δ log p_t| ≤ 2e-12; the score agrees with central differences of that reference to 4e-8 relative (limited by
    the differencing). It degrades only at absurd points (|Δ log p| ~ 1e-6 where log p_t ≈ −1e4).
    tests/test_toy.py checks log p_t against adaptive quadrature (scipy) to 1e-9 and against Monte Carlo.
    Sampling is exact: banana sample + t ε.
    """

    def __init__(self, base: Banana, t: float, nodes: int = BANANA_QUADRATURE_NODES):
        if t <= 0:
            raise ValueError(f"smoothing scale must be > 0, got {t}")
        self.base, self.t, self.nodes = base, float(t), nodes

    def _quadrature(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Nodes x1 [N, n], y2 − m(x1) [N, n], log(trapezoid weight × exp P(x1)) [N, n] and log N(y1; 0, a² + t²) [N],
        for y [N, 2] in float64."""
        a2, b, t2 = self.base.a**2, self.base.b, self.t**2
        v = self.base.s**2 + t2
        y1, y2 = y[:, :1], y[:, 1:]
        mu, tau2 = a2 * y1 / (a2 + t2), a2 * t2 / (a2 + t2)
        c = y2 + b * a2  # y2 − m(x1) = c − b x1²
        if b == 0:
            peaks = torch.cat([mu, mu], dim=1)
        else:  # P'(x) = −(x − μ)/τ² + 2 b x (c − b x²)/v = 0  ⇔  x³ + p x + q = 0
            p = (v / tau2 - 2 * b * c) / (2 * b**2)
            q = -mu * v / (2 * b**2 * tau2)
            peaks = torch.cat(_real_cubic_extreme_roots(p, q), dim=1)
        # Every x with P(x) ≥ max P − D lies where both factors are ≥ max P − D − (the other's maximum):
        # |x − μ| ≤ τ √(2R) and |b x² − c| ≤ √(2vR), R = max log N(·; μ, τ²) + max log N(·; ·, v) − max P + D.
        log_f_peaks = _log_normal(peaks, mu, tau2) + _log_normal(y2, b * (peaks**2 - a2), v)
        r = (-0.5 * math.log(4 * math.pi**2 * tau2 * v) - log_f_peaks.max(1, keepdim=True).values
             + BANANA_QUADRATURE_DROP)
        half = torch.sqrt(2 * tau2 * r)
        lo, hi = mu - half, mu + half
        if b != 0:
            reach = torch.sqrt(((math.copysign(1, b) * c + torch.sqrt(2 * v * r)) / abs(b)).clamp(min=0))
            lo, hi = torch.maximum(lo, -reach), torch.minimum(hi, reach)
        lo, hi = lo.detach(), hi.detach()  # fixed nodes: autograd of log_prob then equals the Fisher-identity score
        step = (hi - lo) / (self.nodes - 1)
        grid = torch.arange(self.nodes, dtype=y.dtype, device=y.device)
        x1 = torch.addcmul(lo, step, grid)
        # log(step · exp P(x1)) = const − (x1 − μ)²/(2τ²) − e²/(2v), e = y2 − m(x1), fused to save memory passes
        const = torch.log(step) - 0.5 * math.log(4 * math.pi**2 * tau2 * v)
        d = torch.addcmul(lo - mu, step, grid)  # x1 − μ
        e = torch.addcmul(c, x1, x1, value=-b)  # c − b x1² = y2 − m(x1)
        log_terms = torch.addcmul(torch.addcmul(const, d, d, value=-0.5 / tau2), e, e, value=-0.5 / v)
        return x1, e, log_terms, _log_normal(y1[:, 0], 0.0, a2 + t2)

    def log_prob(self, x: Tensor) -> Tensor:
        out = []
        for y in x.to(torch.float64).split(SMOOTHED_BANANA_CHUNK):  # bounded [chunk, nodes] temporaries
            _, _, log_terms, lp1 = self._quadrature(y)
            out.append(lp1 + torch.logsumexp(log_terms, dim=1))
        return torch.cat(out).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        """Fisher's identity: E[(x1 − y1)/t², (m(x1) − y2)/v | y] with the quadrature's posterior weights."""
        out = []
        for y in x.to(torch.float64).split(SMOOTHED_BANANA_CHUNK):
            x1, e, log_terms, _ = self._quadrature(y)
            r = torch.softmax(log_terms, dim=1)
            d1 = ((r * x1).sum(1) - y[:, 0]) / self.t**2
            d2 = -(r * e).sum(1) / (self.base.s**2 + self.t**2)
            out.append(torch.stack([d1, d2], dim=1))
        return torch.cat(out).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        x = self.base.sample(n, generator).to(torch.float64)
        eps = torch.randn(n, 2, generator=generator, device=generator.device, dtype=torch.float64)
        return (x + self.t * eps).to(torch.float32)

    def smoothed(self, s: float) -> ToyTarget:
        """Smoothing twice adds variances: (banana * N(0, t²)) * N(0, s²) = banana * N(0, t² + s²)."""
        return self if s == 0 else SmoothedBanana(self.base, math.sqrt(self.t**2 + s**2), self.nodes)
