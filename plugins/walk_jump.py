"""M-density walk-jump sampling (Saremi & Srivastava, ICLR 2022; Saremi, Srivastava, Yoon, ... 2023,
"Universal smoothed score functions for generative modeling").

M measurements y_m = x + σ ε_m (m = 1..M, one σ) define the M-density p(y) on R^{Md}. Its score gives the Bayes
estimator of x from each measurement, x̂_m(y) = y_m + σ² ∇_{y_m} log p(y), learned by regression on
‖x − x̂_m(y)‖². Sampling *walks* in y-space with underdamped Langevin (a stationary MCMC chain on the smooth,
well-conditioned M-density) and *jumps* to x-space with x̂ = (1/M) Σ_m x̂_m = ȳ + (σ²/M) Σ_m ∇_{y_m} log p(y).

Shapes: data x [B, *shape]; measurements y [B, M, *shape]; "stacked" y [B, M·C, ...] (the M copies as channels,
C = shape[0], which for vectors (d,) gives (M·d,)).

Scale convention: the references use σ = 1 for data in [0, 1] (MNIST M = 16, CIFAR-10 M = 8). Our images live in
[-1, 1], twice the range, so the same signal-to-noise ratio needs σ = 2: the image default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import ConfigError, did_you_mean
from harness.hookspecs import hookimpl
from harness.method import Chain, Method, MethodConfig, SampleResult, rand, randn


@dataclass
class WalkJumpConfig(MethodConfig):
    parametrisation: str = "universal"  # universal | mdae | energy (see PARAMETRISATIONS)
    # σ of every measurement, model space. 0: auto, images 2.0 (the references' σ = 1 for data in [0, 1], doubled
    # because our images span [-1, 1]); vectors 1.0 × the data's std
    sigma: float = 0.0
    # M measurements. 0: auto, images 16 for one channel (MNIST reference), 8 otherwise (CIFAR-10); vectors 16
    M: int = 0
    step_size: float = 0.0  # walk step δ; 0: 0.5σ (mems and walk-jump)
    # γ; the O-step keeps e^{−γδ} of the velocity (mems' convention, γ = 0.5 there; walk-jump's e^{−γ} with γ = 1
    # is γ = 1/δ here)
    friction: float = 0.5
    inverse_mass: float = 1.0  # u = 1/mass (mems' "lipschitz" = 1/u); stationary velocity law N(0, u I)
    steps: int = 100  # K: walk steps of each parallel chain in `sample`, then one jump
    jump_every: int = 10  # k: walk steps between jumps of one long chain (`long_chain`; mems samples every 10)
    # walk start: x0 ~ U(data value range) ("uniform", as mems) or N(0, std²) ("gaussian"), one x0 shared by the
    # M measurements, then y_m = x0 + σ ε_m and v = 0
    init: str = "uniform"
    energy_head: str = "norm"  # head of the energy parametrisation (harness.backbones.EnergyModel)


# parametrisations of the M-density score ------------------------------------------------------------------

def stack_measurements(y: Tensor) -> Tensor:
    """[B, M, C, ...] -> [B, M·C, ...]: the M measurements as channels (measurement-major)."""
    b, m, c, *rest = y.shape
    return y.reshape(b, m * c, *rest)


def unstack_measurements(z: Tensor, m: int) -> Tensor:
    """Inverse of `stack_measurements`."""
    b, mc, *rest = z.shape
    return z.reshape(b, m, mc // m, *rest)


class MDensityModel(nn.Module):
    """A learned M-density: Bayes estimates x̂_m(y), scores ∇_{y_m} log p(y) = (x̂_m(y) − y_m)/σ², and the jump.

    `nfe_score` / `nfe_jump`: network evaluations one call costs (a forward+backward of an energy counts as one).
    """

    nfe_score = 1
    nfe_jump = 1

    def __init__(self, sigma: float, m: int):
        super().__init__()
        self.sigma, self.M = float(sigma), int(m)

    def estimates(self, y: Tensor, create_graph: bool = False) -> Tensor:
        """x̂_m(y) = y_m + σ² ∇_{y_m} log p(y), shape [B, M, *shape]."""
        raise NotImplementedError

    def score(self, y: Tensor, create_graph: bool = False) -> Tensor:
        """∇_y log p(y), shape [B, M, *shape]."""
        return (self.estimates(y, create_graph) - y) / self.sigma**2

    def jump(self, y: Tensor) -> Tensor:
        """x̂(y) = (1/M) Σ_m x̂_m(y) = ȳ + (σ²/M) Σ_m ∇_{y_m} log p(y), shape [B, *shape]."""
        return self.estimates(y).mean(1)

    def forward(self, y: Tensor) -> Tensor:
        return self.score(y)


class Universal(MDensityModel):
    """Saremi et al. (2023): log p(y) = −Σ_m ‖y_m − ȳ‖²/(2σ²) + log π_τ(ȳ) + const, τ = σ/√M, so one denoiser of ȳ
    at noise τ gives every score, ∇_{y_m} log p(y) = (x̂(ȳ) − y_m)/σ²: permutation-equivariant by construction.

    x̂(ȳ) = ȳ + τ net(ȳ / a), a = √(std² + τ²) (the net predicts −ε̄, unit-scale in and out); unconditional net.
    """

    def __init__(self, backbone, spec, sigma: float, m: int, cfg: WalkJumpConfig):
        super().__init__(sigma, m)
        self.tau = self.sigma / math.sqrt(self.M)
        self.in_scale = math.sqrt(spec.std**2 + self.tau**2)
        self.net = backbone(conditional=False)

    def denoise(self, ybar: Tensor) -> Tensor:
        """E[X | X + τ ε = ȳ], the denoiser at noise level τ = σ/√M."""
        return ybar + self.tau * self.net(ybar / self.in_scale, None)

    def estimates(self, y: Tensor, create_graph: bool = False) -> Tensor:
        return self.denoise(y.mean(1)).unsqueeze(1).expand_as(y)

    def jump(self, y: Tensor) -> Tensor:
        return self.denoise(y.mean(1))


class MDAE(MDensityModel):
    """Saremi & Srivastava (2022), mems' MDAE: a network on the M measurements stacked as channels emits M
    estimates, x̂_m(y) = y_m + σ net(y / a)_m, a = √(std² + σ²). Neither equivariant nor conservative."""

    def __init__(self, backbone, spec, sigma: float, m: int, cfg: WalkJumpConfig):
        super().__init__(sigma, m)
        self.in_scale = math.sqrt(spec.std**2 + self.sigma**2)
        c, *rest = spec.shape
        self.net = backbone(in_shape=(m * c, *rest), out_channels=m * c, conditional=False)

    def estimates(self, y: Tensor, create_graph: bool = False) -> Tensor:
        out = self.net(stack_measurements(y) / self.in_scale, None)
        return y + self.sigma * unstack_measurements(out, self.M)


class MEM(MDensityModel):
    """Saremi & Srivastava (2022), mems' MEM: a scalar energy f(y) = (a²/σ²) E(y/a) of the stacked measurements, with
    E the shared energy head (``norm``: f = ‖y − ν(y)‖²/(2σ²), ν = a·net); scores −∇f by autograd, so training
    back-propagates twice. a = √(std² + σ²)."""

    def __init__(self, backbone, spec, sigma: float, m: int, cfg: WalkJumpConfig):
        super().__init__(sigma, m)
        self.in_scale = math.sqrt(spec.std**2 + self.sigma**2)
        c, *rest = spec.shape
        self.energy = backbone.energy(cfg.energy_head, in_shape=(m * c, *rest), conditional=False)

    def free_energy(self, y: Tensor) -> Tensor:
        """f(y) = −log p(y) + const, shape [B]."""
        return self.in_scale**2 / self.sigma**2 * self.energy(stack_measurements(y) / self.in_scale, None)

    def score(self, y: Tensor, create_graph: bool = False) -> Tensor:
        with torch.enable_grad():
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.free_energy(y).sum(), y, create_graph=create_graph)
        return -g

    def estimates(self, y: Tensor, create_graph: bool = False) -> Tensor:
        return y + self.sigma**2 * self.score(y, create_graph)


PARAMETRISATIONS: dict[str, type[MDensityModel]] = {"universal": Universal, "mdae": MDAE, "energy": MEM}


# the walk ---------------------------------------------------------------------------------------------

def underdamped_langevin_step(y: Tensor, v: Tensor, score: Callable[[Tensor], Tensor], delta: float,
                              friction: float, u: float, noise: Tensor) -> tuple[Tensor, Tensor]:
    """One step of the splitting of Sachs, Leimkuhler & Danos (2017) as in mems (`MEM.underdamped`) and walk-jump
    (`sachsetal`), for dy = v dt, dv = u ∇log p(y) dt − γ v dt + √(2γu) dW:

        y ← y + δ/2 v;  ψ = ∇log p(y);  v ← v + uδ/2 ψ;  v ← e^{−γδ} v + √(u(1 − e^{−2γδ})) ξ;  v ← v + uδ/2 ψ;
        y ← y + δ/2 v.

    One score evaluation per step (both half kicks use ψ at the same position)."""
    y = y + 0.5 * delta * v
    psi = score(y)
    c = math.exp(-friction * delta)
    v = v + 0.5 * u * delta * psi
    v = c * v + math.sqrt(u * (1.0 - c * c)) * noise
    v = v + 0.5 * u * delta * psi
    y = y + 0.5 * delta * v
    return y, v


@dataclass
class WalkState:
    y: Tensor  # measurements [C, M, *shape]
    v: Tensor  # velocities, same shape


def _uniform_init(spec, n: int, g: torch.Generator) -> Tensor:
    lo, hi = spec.value_range
    return lo + (hi - lo) * rand((n, *spec.shape), g)


def _gaussian_init(spec, n: int, g: torch.Generator) -> Tensor:
    return spec.std * randn((n, *spec.shape), g)


INITS: dict[str, Callable] = {"uniform": _uniform_init, "gaussian": _gaussian_init}


class WalkChain(Chain):
    """The walk: underdamped Langevin on the M-density in R^{Md}, stationary for p(y) ⊗ N(0, uI) up to O(δ²)
    discretisation bias. One network evaluation per step; readout is the jump x̂(y) (one more evaluation)."""

    stationary = True
    nfe_per_step = 1

    def __init__(self, model: MDensityModel, spec, config: WalkJumpConfig):
        self.model, self.spec, self.config = model, spec, config
        self.nfe_per_step = model.nfe_score
        self.readout_nfe = model.nfe_jump

    def init(self, n: int, generator: torch.Generator) -> WalkState:
        x0 = INITS[self.config.init](self.spec, n, generator)
        y = x0.unsqueeze(1) + self.model.sigma * randn((n, self.model.M, *self.spec.shape), generator)
        return WalkState(y, torch.zeros_like(y))

    @torch.no_grad()
    def step(self, state: WalkState, generator: torch.Generator) -> WalkState:
        c = self.config
        y, v = underdamped_langevin_step(state.y, state.v, self.model.score, c.step_size, c.friction,
                                         c.inverse_mass, randn(state.y.shape, generator))
        return WalkState(y, v)

    @torch.no_grad()
    def readout(self, state: WalkState) -> Tensor:
        return self.model.jump(state.y)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {**super().describe(), "readout": "jump x̂(y) = ȳ + (σ²/M) Σ ∇_{y_m} log p(y)",
                "state": "measurements y in R^{Md} (and velocities)",
                "integrator": "Sachs et al. 2017 (A B O B A), friction e^{-γδ}", "sigma": c.sigma, "M": c.M,
                "step_size": c.step_size, "friction": c.friction, "inverse_mass": c.inverse_mass}


# the method -------------------------------------------------------------------------------------------

class WalkJump(Method):
    name = "walk_jump"
    description = "M-density walk-jump sampling: learn x̂(y) from M noisy measurements, walk in y, jump to x"
    Config = WalkJumpConfig
    sampler_length = ("steps",)

    def __init__(self, config: WalkJumpConfig, spec):
        super().__init__(config, spec)
        if config.parametrisation not in PARAMETRISATIONS:
            raise ConfigError(did_you_mean("walk_jump parametrisation", config.parametrisation, PARAMETRISATIONS))
        if config.init not in INITS:
            raise ConfigError(did_you_mean("walk_jump init", config.init, INITS))
        image = spec.kind == "image"
        if config.sigma <= 0:  # resolved values land in the record through self.config
            config.sigma = 2.0 if image else float(spec.std)
        if config.M <= 0:
            config.M = (16 if spec.shape[0] == 1 else 8) if image else 16
        if config.step_size <= 0:
            config.step_size = 0.5 * config.sigma

    def build_model(self, backbone) -> MDensityModel:
        cls = PARAMETRISATIONS[self.config.parametrisation]
        return cls(backbone, self.spec, self.config.sigma, self.config.M, self.config)

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """y_m = x + σ ε_m, shape [B, M, *shape]."""
        eps = randn((x.shape[0], self.config.M, *x.shape[1:]), generator, dtype=x.dtype)
        return x.unsqueeze(1) + self.config.sigma * eps

    def loss(self, model: MDensityModel, batch: Tensor, generator: torch.Generator) -> Tensor:
        """(1/M) Σ_m ‖x − x̂_m(y)‖², per example."""
        y = self.measure(batch, generator)
        err = model.estimates(y, create_graph=True) - batch.unsqueeze(1)
        return err.flatten(2).pow(2).sum(2).mean(1)

    def chain(self, model: MDensityModel) -> WalkChain:
        return WalkChain(model, self.spec, self.config)

    def sample(self, model: MDensityModel, n: int, generator: torch.Generator) -> SampleResult:
        """n parallel chains from noise, K walk steps each, then one jump: NFE = K + 1 per sample."""
        chain = self.chain(model)
        state = chain.init(n, generator)
        for _ in range(self.config.steps):
            state = chain.step(state, generator)
        nfe = self.config.steps * chain.nfe_per_step + model.nfe_jump
        return SampleResult(chain.readout(state), nfe, {"walk_steps": self.config.steps})

    def long_chain(self, model: MDensityModel, n_jumps: int, generator: torch.Generator,
                   jump_every: int | None = None, burn_in: int = 0) -> SampleResult:
        """One chain, as the papers show it: `burn_in` walk steps, then a jump after every k walk steps.

        samples: the n_jumps jumps in time order, [n_jumps, *shape]. nfe: the amortised cost per jump,
        k·nfe_per_step + 1; info["total_nfe"] is the chain's whole cost, burn-in included."""
        k = self.config.jump_every if jump_every is None else jump_every
        chain = self.chain(model)
        state = chain.init(1, generator)
        for _ in range(burn_in):
            state = chain.step(state, generator)
        jumps = []
        for _ in range(n_jumps):
            for _ in range(k):
                state = chain.step(state, generator)
            jumps.append(chain.readout(state)[0])
        per_jump = k * chain.nfe_per_step + model.nfe_jump
        total = burn_in * chain.nfe_per_step + n_jumps * per_jump
        return SampleResult(torch.stack(jumps), per_jump, {"total_nfe": total, "jump_every": k, "burn_in": burn_in})

    def score_fn(self, model: MDensityModel):
        """Universal only: s_τ(x) = (x̂(x) − x)/τ², the learned score of the data smoothed at τ = σ/√M. (For the
        other parametrisations the score at y_1 = … = y_M = x would query the net far off its training law.)"""
        if not isinstance(model, Universal):
            return None

        @torch.no_grad()
        def score(x: Tensor) -> Tensor:
            return (model.denoise(x) - x) / model.tau**2

        return score, model.tau


@hookimpl
def register_methods(register):
    register(WalkJump)
