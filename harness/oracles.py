"""Exact networks built from a `ToyTarget`, the shared pieces of the methods' `oracle(target)` capability.

An oracle model is the method's own parametrisation (its score/energy wrapper) with an exact module in the network
slot, so `sample`, `chain` and `score_fn` run the method's real code path and pay the same cost: one call of the
slot is one network evaluation (NFE), and an energy slot is differentiated by autograd exactly as a learned energy
is (one forward + one input gradient). Oracle modules have no parameters; they compute in float64 from inputs of
any float dtype on any device and return the input's dtype, and their energies support autograd with respect to x.

Smoothing: p_s = p * N(0, s² I) is `target.smoothed(s)`. Where a call carries one noise level per example (a
loss with random levels) a plain `GaussianMixture` is smoothed per example in closed form (its smoothed versions
are mixtures with component variances s_k² + s²); any other target is evaluated once per distinct level.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.toy import GaussianMixture, ToyTarget


def check_target(target: ToyTarget, spec, method: str) -> None:
    """An oracle needs a target of the data's dimension (images are flattened); say which method and what was
    given."""
    if not isinstance(target, ToyTarget):
        raise ConfigError(f"{method}.oracle needs a harness.toy.ToyTarget, got {type(target).__name__}")
    if math.prod(spec.shape) != target.dim:
        raise ConfigError(f"{method}.oracle: the target is {target.dim}-dimensional but the data spec "
                          f"{spec.name!r} has shape {tuple(spec.shape)} ({math.prod(spec.shape)} values per example)")


def _plain_mixture(target: ToyTarget) -> bool:
    """A GaussianMixture whose smoothing, density and score are the closed forms of that class."""
    cls = type(target)
    return (isinstance(target, GaussianMixture) and cls.smoothed is GaussianMixture.smoothed
            and cls.log_prob is GaussianMixture.log_prob and cls.score is GaussianMixture.score)


def _mixture_joint(mix: GaussianMixture, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log w_k + log N(x_i; μ_k, (s_k² + s_i²) I), the variances [N, K] and the means, in float64."""
    means = mix.means.to(x.device)
    var = mix.stds.to(x.device)[None] ** 2 + s[:, None] ** 2
    d2 = (x[:, None, :] - means[None]).pow(2).sum(-1)
    lj = torch.log(mix.weights.to(x.device))[None] - d2 / (2 * var) - 0.5 * mix.dim * torch.log(2 * math.pi * var)
    return lj, var, means


def _by_level(fn: Callable[[ToyTarget, Tensor], Tensor], target: ToyTarget, x: Tensor, s: Tensor) -> Tensor:
    """fn(target smoothed at s_i, x_i), evaluated once per distinct level (autograd flows through every row)."""
    levels = s.unique()
    if levels.numel() == 1:
        lv = float(levels[0])
        return fn(target if lv == 0 else target.smoothed(lv), x)
    parts, rows_all = [], []
    for lv in levels.tolist():
        rows = (s == lv).nonzero().squeeze(1)
        parts.append(fn(target if lv == 0 else target.smoothed(lv), x[rows]))
        rows_all.append(rows)
    order = torch.cat(rows_all).argsort()
    return torch.cat(parts)[order]


def _levels(s: Tensor | float, x: Tensor) -> Tensor:
    return torch.as_tensor(s, dtype=torch.float64, device=x.device).expand(x.shape[0])


def smoothed_score(target: ToyTarget, x: Tensor, s: Tensor | float) -> Tensor:
    """∇ log p_s(x) for x [N, d] (any float dtype) and one level s or levels [N], in float64."""
    x64, s64 = x.to(torch.float64), _levels(s, x)
    if _plain_mixture(target):
        lj, var, means = _mixture_joint(target, x64, s64)
        r = torch.softmax(lj, dim=1)
        return (r[:, :, None] * (means[None] - x64[:, None, :]) / var[:, :, None]).sum(1)
    return _by_level(lambda t, y: t.score(y).to(torch.float64), target, x64, s64)


def smoothed_log_prob(target: ToyTarget, x: Tensor, s: Tensor | float) -> Tensor:
    """log p_s(x) for x [N, d] and one level s or levels [N], in float64, differentiable with respect to x."""
    x64, s64 = x.to(torch.float64), _levels(s, x)
    if _plain_mixture(target):
        return torch.logsumexp(_mixture_joint(target, x64, s64)[0], dim=1)
    return _by_level(lambda t, y: t.log_prob(y).to(torch.float64), target, x64, s64)


class OracleModule(nn.Module):
    """An exact module for a network slot: no parameters, `calls` counts its forward calls (each one NFE)."""

    def __init__(self, target: ToyTarget):
        super().__init__()
        self.target = target
        self.calls = 0

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        self.calls += 1
        return self.evaluate(x, c)

    def evaluate(self, x: Tensor, c: Tensor | None) -> Tensor:
        raise NotImplementedError


class FixedScoreNet(OracleModule):
    """net(x, ·) = scale · ∇log p_level(x): the slot of a score parametrisation s = net/scale at one level
    (dsm: level = scale = σ; plain SSM: level 0, scale = the data std)."""

    def __init__(self, target: ToyTarget, level: float, scale: float):
        super().__init__(target)
        self.level, self.scale = float(level), float(scale)
        self.smoothed = target if self.level == 0 else target.smoothed(self.level)

    def evaluate(self, x, c):
        return (self.scale * self.smoothed.score(x.flatten(1).to(torch.float64))).reshape(x.shape).to(x.dtype)


class LevelScoreNet(OracleModule):
    """net(x, log σ) = σ ∇log p_σ(x) per example: the slot of s(x, σ) = net(x, log σ)/σ (NCSN)."""

    def evaluate(self, x, c):
        sigma = c.to(torch.float64).exp()
        out = sigma[:, None] * smoothed_score(self.target, x.flatten(1), sigma)
        return out.reshape(x.shape).to(x.dtype)


class FixedEnergyNet(OracleModule):
    """E(x, ·) = −scale · log p_level(x), shape [N] (mdsm: level σ0, scale 1); −∇E/scale = ∇log p_level."""

    def __init__(self, target: ToyTarget, level: float, scale: float = 1.0):
        super().__init__(target)
        self.level, self.scale = float(level), float(scale)
        self.smoothed = target if self.level == 0 else target.smoothed(self.level)

    def evaluate(self, x, c):
        return (-self.scale * self.smoothed.log_prob(x.flatten(1).to(torch.float64))).to(x.dtype)


class LevelEnergyNet(OracleModule):
    """E(x, log σ) = −σ² log p_σ(x) per example: the slot of E(x, σ) = net(x, log σ)/σ², s = −∇E."""

    def evaluate(self, x, c):
        sigma = c.to(torch.float64).exp()
        return (-(sigma**2) * smoothed_log_prob(self.target, x.flatten(1), sigma)).to(x.dtype)


class Placeholder:
    """A backbone factory whose networks are empty stand-ins, so a method's `build_model` builds its
    parametrisation around slots that `oracle` then fills with exact modules."""

    def __call__(self, in_shape=None, out_channels=None, conditional: bool = True) -> nn.Module:
        return nn.Identity()

    def energy(self, head: str = "norm", in_shape=None, conditional: bool = True) -> nn.Module:
        return nn.Identity()


PLACEHOLDER = Placeholder()
