"""The method plugin contract.

A method owns only its mathematics: a `Config` dataclass (its defaults are the single source of truth), how its
model is built on a shared backbone, a per-example loss, a sampler that reports its number of network evaluations
(NFE), and optionally an MCMC chain. The runner owns everything else (seeds, optimiser, EMA, budget, checkpoints,
devices, timing); metrics see samples and chains, never the method.

Conventions
- Data are in *model space*: images scaled to [-1, 1] with shape (C, H, W); vectors as (d,).
- All randomness comes from the `torch.Generator` passed in (on the model's device): never the global RNG.
- `loss` returns one value per example, shape [B]; the runner reduces.
- Sampling never accumulates parameter gradients: take gradients with respect to samples only
  (`torch.autograd.grad(..., inputs=x)`), inside `torch.enable_grad()` where needed.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from harness.backbones import BackboneFactory
    from harness.datasets import DataSpec
    from harness.toy import ToyTarget


@dataclass
class SampleResult:
    """Samples in model space, shape [n, *spec.shape], and the network evaluations each sample cost."""

    samples: Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class Chain(ABC):
    """An MCMC chain over C parallel states: ``state = init(C, g); state = step(state, g); x = readout(state)``.

    `stationary` is True when the transition leaves a fixed distribution invariant (walk-jump's walk, long-run
    Langevin at T = 1): mixing diagnostics apply only to those. `readout` maps a state to model space, shape
    [C, *spec.shape]; `trace` maps it to the chain's own position in model-space shape without any network
    evaluation (walk-jump: the mean measurement ȳ; Langevin: x itself). Mixing is diagnosed on `trace`: a readout
    that is a deterministic function of the state adds cost, not mixing.

    Cost accounting (what a user of the chain pays):
    - `nfe_per_step`: network evaluations per chain per step (an energy model's forward + backward counts as one);
    - `grad_evals_per_step`: how many of those differentiate the network with respect to its input (energy
      parametrisations: score = −∇E), so that NFE of score and energy models are not read as equal compute;
    - `readout_nfe`: evaluations of one readout (a jump, a final Tweedie denoise), and `readout_every`: walk steps
      between the readouts the method's own sampling protocol pays for (walk-jump: one jump every k steps), or
      None when it reads out once, at the end of the chain.
    """

    stationary: bool = False
    nfe_per_step: int = 1
    grad_evals_per_step: int = 0
    readout_nfe: int = 0
    readout_every: int | None = None

    @abstractmethod
    def init(self, n: int, generator: torch.Generator) -> Any: ...

    @abstractmethod
    def step(self, state: Any, generator: torch.Generator) -> Any: ...

    @abstractmethod
    def readout(self, state: Any) -> Tensor: ...

    def trace(self, state: Any) -> Tensor:
        """The chain's own position, [C, *spec.shape], with no network evaluation. The default serves chains whose
        readout is free (readout_nfe == 0); a chain with a paid readout must override it."""
        if self.readout_nfe:
            raise NotImplementedError(f"{type(self).__name__} has a paid readout; it must define trace(state)")
        return self.readout(state)

    def describe(self) -> dict[str, Any]:
        """What the chain is, for the run record (e.g. whether readout applies a final denoising step)."""
        return {"stationary": self.stationary, "nfe_per_step": self.nfe_per_step,
                "grad_evals_per_step": self.grad_evals_per_step, "readout_nfe": self.readout_nfe,
                "readout_every": self.readout_every}


@dataclass
class MethodConfig:
    """Base of every method's Config: fields shared by all methods."""

    backbone: str = "auto"  # "auto": mlp for vectors, unet for images


class Method(ABC):
    """Base class of a method plugin. Subclasses set `name`, `description` and `Config`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # Integer Config fields that set how long `sample` runs (e.g. ("steps",)). The harness scales them all by one
    # factor to measure quality as a function of NFE; () when the length is not a knob (an adaptive ODE solver).
    sampler_length: tuple[str, ...] = ()

    def __init__(self, config: MethodConfig, spec: DataSpec):
        self.config = config
        self.spec = spec

    @classmethod
    def make_config(cls, overrides: dict[str, Any] | None = None) -> MethodConfig:
        """Build this method's Config from overrides; unknown keys are a `ConfigError` naming the valid ones."""
        from harness.config import build_dataclass

        return build_dataclass(cls.Config, overrides or {}, where=f"methods.{cls.name}")

    def resolved_config(self) -> dict[str, Any]:
        """Every value the method actually uses (defaults and values derived from the data included)."""
        return dataclasses.asdict(self.config)

    def with_sampler_scaled(self, factor: float) -> Method | None:
        """A copy of this method whose sampler runs `factor` times as long (each `sampler_length` field scaled and
        rounded, at least 1); None when the method declares no sampler length."""
        if not self.sampler_length:
            return None
        fields = {f: max(1, round(getattr(self.config, f) * factor)) for f in self.sampler_length}
        return type(self)(dataclasses.replace(self.config, **fields), self.spec)

    @abstractmethod
    def build_model(self, backbone: BackboneFactory) -> nn.Module:
        """Build the trainable model on the shared backbone (choose a parametrisation, not a private net)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        """Per-example training loss, shape [B], for a batch in model space."""

    @abstractmethod
    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> SampleResult:
        """Draw n samples in model space, reporting the NFE per sample."""

    def chain(self, model: nn.Module) -> Chain | None:
        """The method's MCMC chain, if it has one."""
        return None

    # Optional capabilities, used by metrics when present -----------------------------------------------

    def score_fn(self, model: nn.Module) -> tuple[Callable[[Tensor], Tensor], float] | None:
        """(x -> learned score of the data smoothed at noise level s, s) where the method defines one."""
        return None

    def log_likelihood(self, model: nn.Module, x: Tensor, generator: torch.Generator) -> Tensor | None:
        """Per-example log-likelihood in nats, where the method provides one: for vectors the density in model
        space; for images the log-probability of the 8-bit image (a dequantised bound), so that the `nll` metric's
        bits/dim is −log₂ P / d."""
        return None

    def oracle(self, target: ToyTarget) -> nn.Module:
        """A model in this method's own parametrisation built from the exact `target` (a `harness.toy.ToyTarget`
        of the data's dimension), such that `sample`, `chain` and `score_fn` run on it unchanged and every score,
        denoiser or energy gradient it gives is exact at every noise level the method uses (from
        `target.smoothed(s)`). It needs no trained parameters (it may hold buffers), runs on the device of its
        inputs, takes float32 inputs (computing in float64 inside), is differentiable with respect to x where the
        method differentiates it (energies), and costs what the network costs: the exact module sits in the
        network's slot, so one call is one NFE and an energy's gradient one NFE plus one input gradient.
        Optional: `has_oracle` tells whether a method provides one; the default raises NotImplementedError."""
        raise NotImplementedError(f"method {self.name!r} has no oracle(target)")


def has_oracle(method_or_cls: Method | type[Method]) -> bool:
    """Whether a method (instance or class) overrides `Method.oracle` (as the runner detects `log_likelihood`)."""
    cls = method_or_cls if isinstance(method_or_cls, type) else type(method_or_cls)
    return getattr(cls, "oracle", Method.oracle) is not Method.oracle


def randn(shape, generator: torch.Generator, like: Tensor | None = None, dtype=None) -> Tensor:
    """Standard normal noise from an explicit generator, on the generator's device."""
    if like is not None:
        shape, dtype = like.shape, like.dtype
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype or torch.float32)


def rand(shape, generator: torch.Generator, like: Tensor | None = None, dtype=None) -> Tensor:
    """Uniform [0, 1) noise from an explicit generator, on the generator's device."""
    if like is not None:
        shape, dtype = like.shape, like.dtype
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype or torch.float32)


def expand_as_batch(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example tensor [B] to broadcast against x [B, ...]."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))
