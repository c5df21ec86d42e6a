"""Sliced score matching (Song, Garg, Shi & Ermon, UAI 2019), its finite-difference form (Pang, Xu, Li, Song,
Ermon & Zhu, NeurIPS 2020), and the noise-conditional use of it in NCSN (Song & Ermon, NeurIPS 2019).

Score matching minimises J(θ) = E_x[tr ∇ₓs_θ(x) + ½‖s_θ(x)‖²]. Slicing replaces the trace by random projections,
tr A = E_v[vᵀAv] for E[vvᵀ] = I, so only a Jacobian-vector product is needed:
- SSM (eq. 8 of Song et al.):    E_v[vᵀ∇s v + ½(vᵀs)²];
- SSM-VR (the variance-reduced form): E_v[vᵀ∇s v] + ½‖s‖² (exact in the second term since E[vvᵀ] = I);
- FD-SSM (Pang et al.): the directional derivatives by central differences at x ± hv, no second-order autograd.

Inputs are flattened per example: every projection and reduction runs over the flattened dimensions [B, d]
(reducing over the last axis of an image tensor is the known silent bug).

Noise: "none" is plain SSM on the data (vector data); "ladder" trains a net conditioned on log σ over a geometric
ladder σ_1 > … > σ_L with weight σ² per level, NCSN's recipe for images, sampled with annealed Langevin dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.backbones import energy_score
from harness.errors import ConfigError, did_you_mean
from harness.hookspecs import hookimpl
from harness.method import Chain, Method, MethodConfig, SampleResult, expand_as_batch, rand, randn
from harness.oracles import PLACEHOLDER, FixedEnergyNet, FixedScoreNet, LevelEnergyNet, LevelScoreNet, check_target
from harness.progress import track


@dataclass
class SSMConfig(MethodConfig):
    # score: s(x, σ) = net(x, log σ)/σ | energy: s = −∇E, E(x, σ) = head(net)(x, log σ)/σ² (see PARAMETRISATIONS)
    parametrisation: str = "score"
    loss: str = "ssm_vr"  # ssm | ssm_vr | fd_ssm (see LOSSES); NCSN trained with SSM-VR
    # rademacher | gaussian | sphere (see PROJECTIONS). All have E[vvᵀ] = I: the sphere has radius √d, so the
    # paper's unit-sphere projection, which estimates J/d, is this loss divided by d
    projection: str = "rademacher"
    n_projections: int = 1  # projections per example (the loss averages them)
    fd_step: float = 0.1  # FD-SSM: evaluations at x ± hv with ‖hv‖ = fd_step·σ (σ: the level; data std without noise)
    noise: str = "auto"  # none (plain SSM) | ladder (NCSN); auto: none for vectors, ladder for images
    # ladder top/bottom. 0: auto, images 2.0 / 0.02 (NCSN's 1 / 0.01 for data in [0, 1], doubled for [-1, 1]);
    # vectors: data std / 0.01 × data std
    sigma_max: float = 0.0
    sigma_min: float = 0.0
    n_levels: int = 10  # L, geometric (NCSN)
    energy_head: str = "norm"  # head of the energy parametrisation (harness.backbones.EnergyModel)
    steps_per_level: int = 100  # T of annealed Langevin (NCSN Algorithm 1)
    langevin_steps: int = 1000  # noise "none": steps of plain long-run Langevin from the broad init
    # Langevin step. 0: auto, ladder: ε = 0.2·σ_L² in α_i = ε σ_i²/σ_L² (NCSN's 2e-5 at σ_L = 0.01);
    # none: 0.005 × data variance
    step_size: float = 0.0
    denoise: bool = True  # ladder: final Tweedie step x + σ_L² s(x, σ_L) (one more NFE)


# parametrisations -------------------------------------------------------------------------------------

class ScoreModel(nn.Module):
    """s(x, σ) = net(x, log σ)/σ: the net's output is O(1) at every level (σ is a data scale when unconditional)."""

    def __init__(self, backbone, cfg: SSMConfig, conditional: bool):
        super().__init__()
        self.conditional = conditional
        self.net = backbone(conditional=conditional)

    def score(self, x: Tensor, sigma: Tensor, create_graph: bool = False) -> Tensor:
        c = sigma.log() if self.conditional else None
        return self.net(x, c) / expand_as_batch(sigma, x)

    def fd_directional(self, x: Tensor, sigma: Tensor, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Central differences from two score evaluations (one batched call): vᵀ∇s v ≈ vᵀ(s₊ − s₋)/(2h),
        vᵀs ≈ vᵀ(s₊ + s₋)/2, both O(h²)."""
        hv = (h[:, None] * v).view_as(x)
        s = self.score(torch.cat([x + hv, x - hv]), torch.cat([sigma, sigma])).flatten(1)
        sp, sm = s.chunk(2)
        return ((sp - sm) * v).sum(1) / (2 * h), ((sp + sm) * v).sum(1) / 2

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.score(x, sigma)


class EnergyScoreModel(nn.Module):
    """E(x, σ) = E_head(x, log σ)/σ² (``norm`` head: ‖x − f‖²/(2σ²), a Gaussian of scale σ at initialisation);
    s = −∇ₓE by autograd, so vᵀ∇s v is a Hessian-vector product of E. Use smooth activations."""

    def __init__(self, backbone, cfg: SSMConfig, conditional: bool):
        super().__init__()
        self.conditional = conditional
        self.energy_net = backbone.energy(cfg.energy_head, conditional=conditional)

    def energy(self, x: Tensor, sigma: Tensor) -> Tensor:
        c = sigma.log() if self.conditional else None
        return self.energy_net(x, c) / sigma**2

    def score(self, x: Tensor, sigma: Tensor, create_graph: bool = False) -> Tensor:
        """−∇ₓE(x, σ) = −∇ₓE_head(x, log σ)/σ²: one energy score call."""
        c = sigma.log() if self.conditional else None
        return energy_score(self.energy_net, x, c, create_graph) / expand_as_batch(sigma**2, x)

    def fd_directional(self, x: Tensor, sigma: Tensor, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """From three energies, no gradient in x (Pang et al. 2020): vᵀ∇s v = −vᵀ∇²E v ≈ −(E₊ − 2E₀ + E₋)/h²,
        vᵀs ≈ −(E₊ − E₋)/(2h), both O(h²)."""
        hv = (h[:, None] * v).view_as(x)
        e = self.energy(torch.cat([x + hv, x, x - hv]), torch.cat([sigma, sigma, sigma]))
        ep, e0, em = e.chunk(3)
        return -(ep - 2 * e0 + em) / h**2, -(ep - em) / (2 * h)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.score(x, sigma)


PARAMETRISATIONS: dict[str, type[nn.Module]] = {"score": ScoreModel, "energy": EnergyScoreModel}


# projections v with E[vvᵀ] = I, shape [N, d] --------------------------------------------------------------

def rademacher(shape, g: torch.Generator, dtype) -> Tensor:
    return 2.0 * (rand(shape, g, dtype=dtype) < 0.5).to(dtype) - 1.0


def gaussian(shape, g: torch.Generator, dtype) -> Tensor:
    return randn(shape, g, dtype=dtype)


def sphere(shape, g: torch.Generator, dtype) -> Tensor:
    """Uniform on the sphere of radius √d (E[vvᵀ] = I); the paper's unit sphere gives E[vvᵀ] = I/d."""
    v = randn(shape, g, dtype=dtype)
    return v * (math.sqrt(shape[-1]) / v.norm(dim=-1, keepdim=True))


PROJECTIONS: dict[str, Callable] = {"rademacher": rademacher, "gaussian": gaussian, "sphere": sphere}


# losses, per row: (model, x [N, *shape], σ [N], v [N, d], h [N]) -> [N] ------------------------------------

def _jvp_terms(model, x: Tensor, sigma: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(vᵀ∇ₓs v, s flattened): one extra backward for a score net, a Hessian-vector product for an energy."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = model.score(x, sigma, create_graph=True)
        (g,) = torch.autograd.grad((s.flatten(1) * v).sum(), x, create_graph=True)
    return (g.flatten(1) * v).sum(1), s.flatten(1)


def sliced_score_matching(model, x, sigma, v, h) -> Tensor:
    """SSM (Song et al. 2019, eq. 8): vᵀ∇s v + ½(vᵀs)²."""
    quad, s = _jvp_terms(model, x, sigma, v)
    return quad + 0.5 * (s * v).sum(1) ** 2


def sliced_score_matching_vr(model, x, sigma, v, h) -> Tensor:
    """SSM-VR (Song et al. 2019, eq. 9): vᵀ∇s v + ½‖s‖²."""
    quad, s = _jvp_terms(model, x, sigma, v)
    return quad + 0.5 * s.pow(2).sum(1)


def finite_difference_ssm(model, x, sigma, v, h) -> Tensor:
    """FD-SSM (Pang et al. 2020): SSM with both directional derivatives by central differences at x ± hv."""
    quad, sv = model.fd_directional(x, sigma, v, h)
    return quad + 0.5 * sv**2


LOSSES: dict[str, Callable] = {"ssm": sliced_score_matching, "ssm_vr": sliced_score_matching_vr,
                               "fd_ssm": finite_difference_ssm}
NOISES = ("none", "ladder")


# samplers ---------------------------------------------------------------------------------------------

def langevin_step(x: Tensor, score: Tensor, alpha: float, noise: Tensor) -> Tensor:
    """Unadjusted Langevin: x + (α/2) s(x) + √α ξ."""
    return x + 0.5 * alpha * score + math.sqrt(alpha) * noise


class LongRunLangevin(Chain):
    """Langevin at one fixed level (the smallest of the ladder, or the data without noise): stationary up to O(α)
    bias. Readout applies the Tweedie step x + σ² s(x, σ) when denoising (one more NFE)."""

    stationary = True
    nfe_per_step = 1

    def __init__(self, model: nn.Module, spec, sigma: float, alpha: float, denoise: bool):
        self.model, self.spec, self.sigma, self.alpha, self.denoise = model, spec, sigma, alpha, denoise
        self.readout_nfe = int(denoise)
        self.grad_evals_per_step = int(isinstance(model, EnergyScoreModel))  # s = −∇E: one input gradient

    def _sigma(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), self.sigma, device=x.device, dtype=x.dtype)

    def init(self, n: int, generator: torch.Generator) -> Tensor:
        """Broad init: uniform over the data's value range."""
        lo, hi = self.spec.value_range
        return lo + (hi - lo) * rand((n, *self.spec.shape), generator)

    @torch.no_grad()
    def step(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return langevin_step(x, self.model.score(x, self._sigma(x)), self.alpha, randn(x.shape, generator))

    @torch.no_grad()
    def readout(self, x: Tensor) -> Tensor:
        return x + self.sigma**2 * self.model.score(x, self._sigma(x)) if self.denoise else x

    def trace(self, x: Tensor) -> Tensor:
        """The chain's own position x (no denoise: the readout is a deterministic function of it)."""
        return x

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "readout": "tweedie denoise" if self.denoise else "raw state",
                "sigma": self.sigma, "step_size": self.alpha}


@torch.no_grad()
def annealed_langevin(model: nn.Module, x: Tensor, sigmas: list[float], eps: float, steps: int,
                      generator: torch.Generator) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): for σ_1 > … > σ_L, T steps each of size
    α_i = ε σ_i²/σ_L²."""
    for s in track(sigmas, desc=f"ssm: annealed Langevin, {x.shape[0]} chains", unit="level"):
        alpha = eps * s**2 / sigmas[-1] ** 2
        sig = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
        for _ in range(steps):
            x = langevin_step(x, model.score(x, sig), alpha, randn(x.shape, generator))
    return x


# the method -------------------------------------------------------------------------------------------

class SSM(Method):
    name = "ssm"
    description = "Sliced score matching (SSM, SSM-VR, FD-SSM), plain or over an NCSN noise ladder"
    Config = SSMConfig
    sampler_length = ("steps_per_level", "langevin_steps")  # ladder / no-noise sampler

    def __init__(self, config: SSMConfig, spec):
        super().__init__(config, spec)
        for field_, table in (("parametrisation", PARAMETRISATIONS), ("loss", LOSSES), ("projection", PROJECTIONS)):
            if getattr(config, field_) not in table:
                raise ConfigError(did_you_mean(f"ssm {field_}", getattr(config, field_), table))
        image = spec.kind == "image"
        if config.noise == "auto":  # resolved values land in the record through self.config
            config.noise = "ladder" if image else "none"
        if config.noise not in NOISES:
            raise ConfigError(did_you_mean("ssm noise", config.noise, NOISES))
        if config.sigma_max <= 0:
            config.sigma_max = 2.0 if image else float(spec.std)
        if config.sigma_min <= 0:
            config.sigma_min = 0.02 if image else 0.01 * float(spec.std)
        if config.step_size <= 0:
            config.step_size = 0.2 * config.sigma_min**2 if config.noise == "ladder" else 0.005 * spec.std**2

    @property
    def sigmas(self) -> list[float]:
        """The ladder σ_1 > … > σ_L (geometric); without noise, [data std], used only as the score's scale."""
        c = self.config
        if c.noise == "none":
            return [float(self.spec.std)]
        if c.n_levels == 1:
            return [c.sigma_min]
        r = (c.sigma_min / c.sigma_max) ** (1 / (c.n_levels - 1))
        return [c.sigma_max * r**i for i in range(c.n_levels)]

    def build_model(self, backbone) -> nn.Module:
        return PARAMETRISATIONS[self.config.parametrisation](backbone, self.config, self.config.noise == "ladder")

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        """Per example: the chosen SSM estimator averaged over n projections, at a random ladder level with weight
        σ² (NCSN), or on the clean data with weight 1."""
        c, b = self.config, batch.shape[0]
        levels = torch.tensor(self.sigmas, device=batch.device, dtype=batch.dtype)
        if c.noise == "ladder":
            sigma = levels[torch.randint(len(levels), (b,), generator=generator, device=generator.device)]
            x = batch + expand_as_batch(sigma, batch) * randn(batch.shape, generator, dtype=batch.dtype)
            weight = sigma**2
        else:
            sigma, x, weight = levels.expand(b), batch, torch.ones_like(levels).expand(b)
        n = c.n_projections
        x, sigma = x.repeat(n, *([1] * (x.dim() - 1))), sigma.repeat(n)
        v = PROJECTIONS[c.projection]((x.shape[0], x[0].numel()), generator, x.dtype)
        h = c.fd_step * sigma / v.norm(dim=1)
        per = LOSSES[c.loss](model, x, sigma, v, h)
        return weight * per.view(n, b).mean(0)

    def chain(self, model: nn.Module) -> LongRunLangevin:
        """Long-run Langevin at the smallest level (ladder: step ε = α_L, Tweedie readout) or on the data."""
        ladder = self.config.noise == "ladder"
        return LongRunLangevin(model, self.spec, self.sigmas[-1], self.config.step_size,
                               self.config.denoise and ladder)

    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> SampleResult:
        """Ladder: annealed Langevin from uniform noise over the value range, L·T steps (+1 Tweedie step).
        None: plain long-run Langevin, `langevin_steps` steps from the same broad uniform init."""
        c, chain = self.config, self.chain(model)
        x = chain.init(n, generator)
        if c.noise == "ladder":
            x = annealed_langevin(model, x, self.sigmas, c.step_size, c.steps_per_level, generator)
            nfe = len(self.sigmas) * c.steps_per_level
        else:
            for _ in track(range(c.langevin_steps), desc=f"ssm: Langevin, {n} chains"):
                x = chain.step(x, generator)
            nfe = c.langevin_steps
        nfe += chain.readout_nfe
        info = {"total_nfe": n * nfe}
        if chain.grad_evals_per_step:  # every evaluation of an energy parametrisation is an input gradient
            info["grad_evals"] = nfe
        return SampleResult(chain.readout(x), nfe, info)

    def score_fn(self, model: nn.Module):
        """(x -> s(x, σ_L), σ_L) on the ladder; (x -> s(x), 0) for plain SSM (the data's own score)."""
        ladder = self.config.noise == "ladder"
        level = self.sigmas[-1]

        @torch.no_grad()
        def score(x: Tensor) -> Tensor:
            return model.score(x, torch.full((x.shape[0],), level, device=x.device, dtype=x.dtype))

        return score, (level if ladder else 0.0)

    def oracle(self, target) -> nn.Module:
        """The configured parametrisation with an exact slot. Ladder (conditional on log σ): score net(x, log σ) =
        σ ∇log p_σ(x), energy net(x, log σ) = −σ² log p_σ(x), p_σ = target.smoothed(σ), at any σ it is asked for.
        No noise: the data's own score, scaled by the method's fixed σ = data std (score: std·∇log p; energy:
        −std²·log p), so s(x, std) = ∇log p(x) exactly."""
        check_target(target, self.spec, self.name)
        model = self.build_model(PLACEHOLDER)
        ladder, energy = self.config.noise == "ladder", isinstance(model, EnergyScoreModel)
        scale = self.sigmas[0]
        if energy:
            model.energy_net = LevelEnergyNet(target) if ladder else FixedEnergyNet(target, 0.0, scale**2)
        else:
            model.net = LevelScoreNet(target) if ladder else FixedScoreNet(target, 0.0, scale)
        return model


@hookimpl
def register_methods(register):
    register(SSM)
