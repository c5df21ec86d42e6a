"""Shared backbones: the factory methods build networks with, the energy head, and the noise embedding.

Every method builds its network through a `BackboneFactory`, so two methods compared on one data set use the
same architecture and width. A backbone maps ``(x [B, *in_shape], c [B] or None) -> [B, out_channels, ...]``
where ``c`` is the scalar the method conditions on (noise level, log σ or time: the method chooses).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import ConfigError


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


ACTIVATIONS = {"silu": nn.SiLU, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """Smooth activations only: energy methods differentiate twice, so piecewise-linear ones are not offered."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; available: {', '.join(ACTIVATIONS)}") from None


class ScalarEmbedding(nn.Module):
    """Fourier features of a scalar condition followed by a 2-layer MLP (DDPM's timestep embedding)."""

    def __init__(self, dim: int, act: str = "silu", max_freq: float = 1000.0):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(max_freq), half)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), activation(act), nn.Linear(dim, dim))

    def forward(self, c: Tensor) -> Tensor:
        arg = c.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))


class EnergyModel(nn.Module):
    """Turns any backbone into a scalar energy E(x, c), shape [B]; the score is −∇ₓE.

    Heads:
    - ``norm``: E = ½‖x − f(x, c)‖², the form of Saremi's MEM and of Salimans & Ho (2021);
    - ``quadratic``: h = flatten f(x, c), E = (w₁·h)(w₂·h) + w₃·h², the head of Li, Chen & Sommer (2023);
    - ``linear``: E = w·h.
    """

    heads = ("norm", "quadratic", "linear")

    def __init__(self, net: nn.Module, in_shape: tuple[int, ...], head: str = "norm"):
        super().__init__()
        if head not in self.heads:
            raise ConfigError(f"unknown energy head {head!r}; available: {', '.join(self.heads)}")
        self.net, self.head = net, head
        d = math.prod(in_shape)
        if head != "norm":
            self.w = nn.Parameter(torch.randn(3 if head == "quadratic" else 1, d) / math.sqrt(d))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self.net(x, c).flatten(1)
        if self.head == "norm":
            return 0.5 * (x.flatten(1) - h).pow(2).sum(1)
        if self.head == "linear":
            return h @ self.w[0]
        return (h @ self.w[0]) * (h @ self.w[1]) + h.pow(2) @ self.w[2]

    def score(self, x: Tensor, c: Tensor | None = None, create_graph: bool = False) -> Tensor:
        """−∇ₓE(x, c). With create_graph=True (training), the graph is kept for double backprop."""
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(x, c).sum(), x, create_graph=create_graph)
        return -g


def energy_score(energy: nn.Module, x: Tensor, c: Tensor | None = None, create_graph: bool = False) -> Tensor:
    """−∇ₓE(x, c) for any scalar energy module E(x, c) -> [B]: `EnergyModel.score` where it is one (the call that
    CUDA-graphed sampling replays, `harness.accel`), else by autograd (e.g. the exact energies of the tests)."""
    if isinstance(energy, EnergyModel):
        return energy.score(x, c, create_graph=create_graph)
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(x, c).sum(), x, create_graph=create_graph)
    return -g


class BackboneFactory:
    """Builds instances of one registered backbone class with one configuration, for one data spec."""

    def __init__(self, name: str, cls: type[nn.Module], data_shape: tuple[int, ...], options: dict[str, Any]):
        self.name, self.cls, self.data_shape, self.options = name, cls, tuple(data_shape), dict(options)

    def __call__(
        self, in_shape: tuple[int, ...] | None = None, out_channels: int | None = None, conditional: bool = True
    ) -> nn.Module:
        """A network on inputs of `in_shape` (default: the data's) with `out_channels` outputs (default: same)."""
        in_shape = tuple(in_shape or self.data_shape)
        net = self.cls(in_shape=in_shape, out_channels=out_channels or in_shape[0],
                       conditional=conditional, **self.options)
        net._scorebench_backbone = True  # a network sampler steps evaluate repeatedly (harness.accel CUDA graphs)
        return net

    def energy(
        self, head: str = "norm", in_shape: tuple[int, ...] | None = None, conditional: bool = True
    ) -> EnergyModel:
        """A scalar energy on the backbone (see `EnergyModel`)."""
        in_shape = tuple(in_shape or self.data_shape)
        return EnergyModel(self(in_shape, None, conditional), in_shape, head)
