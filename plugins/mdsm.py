"""Multiscale denoising score matching energy model (Li, Chen & Sommer, Entropy 2023; "MDSM").

One noise-unconditional scalar energy E_θ(x) (the shared backbone with an energy head, `conditional=False`).
Training: each batch element i gets its own noise level σ_i, tied to its position in the batch and spread over
[σ_min, σ_max] (linearly, as the paper's CIFAR-10 run, or geometrically); x̃ = x + σ_i ε, and every level regresses
to the σ0-scale denoising target (the paper's eq. for L_MDSM):

    ℓ_i = ‖x − x̃ + σ0² ∇E(x̃)‖² / (σ_i² σ0⁴),

so −∇E matches the score of the data smoothed at σ0 near the data, while the large levels shape the energy far
from it. The gradient ∇E is taken with create_graph=True: training is double backprop.

Sampling (the paper's sampler): Langevin dynamics on the tempered energy E/T,

    x ← x − ½ ε² ∇E(x) + sqrt(T) ε ξ,

along the annealing schedule hot phase at T_max → exponential cooling to T = 1 → linear cooling to 0, then one
denoising step x − σ0² ∇E(x) (Tweedie at σ0). Gradients are taken with respect to the samples only; parameter
gradients are never touched (the reference code accumulates them, a defect not copied here).

Energy head: ``norm`` by default, E = ½‖x − f(x)‖² ≥ 0. It is bounded below, so the hot phase at T = 100 cannot
run off towards E → −∞, and at initialisation (f ≈ 0) it is close to the confining ½‖x‖². The paper's quadratic
head (w₁·h)(w₂·h) + w₃·h² is an indefinite quadratic form of the features h, unbounded below; it is available as
``head = "quadratic"``. Activations come from the backbone options and are smooth (SiLU by default; the paper
uses ELU, also offered), since the loss differentiates the network twice.

Scales (README, "Rescaling the papers' defaults to [-1, 1]"): the paper's σ0 = 0.1, σ ∈ [0.05, 1.2], ε = 0.02 and
start 0.5 + N(0, 1) are for images in [0, 1]. Every one of them is a length, so on [-1, 1] each doubles: σ0 = 0.2,
σ ∈ [0.1, 2.4], ε = 0.04, start N(0, 2²) (the centre of the data); the dimensionless ε²/σ0² is unchanged, and so
the sampler is the paper's up to the map x -> 2x − 1. Vectors have no reference range; their unit of length is the
data's std (the convention of dsm, walk_jump and ssm): σ0 = 0.1·std, σ_min = 0.05·std, ε = 0.02·std, start
N(centre, std²), and σ_max = the largest pairwise distance / √d. So every default scales with the data (rescaling
vector data by c rescales them all by c) and keeps ε/σ0 = 0.2 as the paper; unit-std data keep the paper's numbers.
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
from harness.method import Chain, Method, MethodConfig, SampleResult, expand_as_batch, randn
from harness.oracles import FixedEnergyNet, check_target
from harness.progress import track

PAPER_RANGE = 1.0  # width of the value range the paper's lengths are stated for (images in [0, 1])

# noise levels tied to batch position: (σ_min, σ_max, B) -> [B]
SPACINGS: dict[str, Callable[[float, float, int], Tensor]] = {
    "linear": lambda lo, hi, n: torch.linspace(lo, hi, n),
    "geometric": lambda lo, hi, n: torch.logspace(math.log10(lo), math.log10(hi), n),
}


def energy_grad(model: nn.Module, x: Tensor, create_graph: bool = False) -> Tensor:
    """∇ₓE(x) for an energy model E(x, c=None) -> [B]; with respect to x only (no parameter gradients)."""
    return -energy_score(model, x, None, create_graph)


def annealing_schedule(t_max: float, hot_steps: int, cool_steps: int, final_steps: int) -> Tensor:
    """Temperatures of Li, Chen & Sommer's sampler: `hot_steps` at T_max, `cool_steps` of exponential cooling
    T_k = T_max exp(−k log(T_max)/cool_steps), k = 0..cool_steps − 1 (ending just above 1), then `final_steps`
    linearly from 1 to 0."""
    hot = torch.full((hot_steps,), float(t_max), dtype=torch.float64)
    k = torch.arange(cool_steps, dtype=torch.float64)
    cool = t_max * torch.exp(-k * math.log(t_max) / max(cool_steps, 1))
    final = torch.linspace(1.0, 0.0, final_steps, dtype=torch.float64)
    return torch.cat([hot, cool, final])


def langevin_step(model: nn.Module, x: Tensor, step: float, temperature: float, generator: torch.Generator) -> Tensor:
    """x ← x − ½ ε² ∇E(x) + sqrt(T) ε ξ: unadjusted Langevin x ← x − h ∇(E/T) + sqrt(2h) ξ on exp(−E/T)
    with step h = T ε²/2 (at T = 0, gradient descent)."""
    grad = energy_grad(model, x)
    return x - 0.5 * step**2 * grad + math.sqrt(temperature) * step * randn(x.shape, generator)


def denoise(model: nn.Module, x: Tensor, sigma0: float) -> Tensor:
    """One denoising step x − σ0² ∇E(x): Tweedie's E[x | x̃ = x] when −∇E is the score of the σ0-smoothed data."""
    return x - sigma0**2 * energy_grad(model, x)


@dataclass
class MDSMConfig(MethodConfig):
    """Defaults from Li, Chen & Sommer (2023) and their CIFAR-10 scripts; 0 means "derive from the data"."""

    head: str = "norm"  # energy head: norm (E = ½‖x − f(x)‖², ≥ 0, default) | quadratic (the paper's) | linear
    # lengths (see "Scales" above; the paper's [0, 1] values doubled for images, in units of the std for vectors)
    sigma0: float = 0.0  # the fixed target noise level σ0; 0: images 0.2 (paper 0.1), vectors 0.1·std
    sigma_min: float = 0.0  # smallest training noise level; 0: images 0.1 (paper 0.05), vectors 0.05·std
    sigma_max: float = 0.0  # largest training level; 0: images 2.4 (paper 1.2), vectors max pairwise distance/√d
    spacing: str = "linear"  # linear | geometric spacing of σ_i over the batch positions
    t_max: float = 100.0  # temperature of the hot phase
    hot_steps: int = 500  # Langevin steps at T_max
    cool_steps: int = 2000  # steps of exponential cooling from T_max to 1
    final_steps: int = 200  # steps of linear cooling from 1 to 0
    step_size: float = 0.0  # Langevin ε (x ← x − ½ε²∇E + √T ε ξ); 0: images 0.04 (paper 0.02), vectors 0.02·std
    denoise: bool = True  # final step x − σ0²∇E(x) (one more energy gradient)
    init_std: float = 0.0  # sampler start N(centre of the value range, init_std² I); 0: 2 for images (the
    # paper's 0.5 + N(0, 1) on [0, 1]), the data std for vectors
    chain_step_size: float = 0.0  # ε of the stationary T = 1 chain; 0: step_size


class LangevinChain(Chain):
    """Long-run Langevin on exp(−E) at T = 1: stationary (up to the O(ε²) discretisation bias) for the model's
    σ0-smoothed density. Readout applies the denoising step x − σ0²∇E(x) when `denoise` (one extra gradient)."""

    stationary = True
    nfe_per_step = 1
    grad_evals_per_step = 1  # ∇E of the energy network at every step

    def __init__(self, model: nn.Module, method: MDSM, step_size: float):
        self.model, self.method, self.eps = model, method, step_size

    @property
    def readout_nfe(self) -> int:  # type: ignore[override]
        return int(self.method.config.denoise)

    def init(self, n: int, generator: torch.Generator) -> Tensor:
        return self.method.initial_state(n, generator)

    def step(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return langevin_step(self.model, x, self.eps, 1.0, generator).detach()

    def readout(self, x: Tensor) -> Tensor:
        cfg = self.method.config
        return denoise(self.model, x, cfg.sigma0).detach() if cfg.denoise else x

    def trace(self, x: Tensor) -> Tensor:
        """The chain's own position x (no denoise: the readout is a deterministic function of it)."""
        return x

    def describe(self) -> dict[str, Any]:
        readout = "denoise x - sigma0^2 grad E(x)" if self.method.config.denoise else "raw state"
        return {**super().describe(), "temperature": 1.0, "step_size": self.eps, "readout": readout}


class MDSM(Method):
    name = "mdsm"
    description = "Multiscale denoising score matching energy model with annealed Langevin sampling"
    Config = MDSMConfig
    sampler_length = ("hot_steps", "cool_steps", "final_steps")  # the schedule keeps its shape

    def __init__(self, config: MDSMConfig, spec):
        super().__init__(config, spec)
        if config.spacing not in SPACINGS:
            raise ConfigError(did_you_mean("methods.mdsm.spacing", config.spacing, SPACINGS))
        # resolved values land in self.config, so the run record shows what was used
        for name, value in self.default_lengths(spec).items():
            if getattr(config, name) <= 0:
                setattr(config, name, value)
        if config.chain_step_size <= 0:
            config.chain_step_size = config.step_size
        if not 0 < config.sigma_min <= config.sigma_max:
            raise ConfigError(f"methods.mdsm: need 0 < sigma_min <= sigma_max, got {config.sigma_min}, "
                              f"{config.sigma_max}")

    @staticmethod
    def default_lengths(spec) -> dict[str, float]:
        """The paper's lengths for data in [0, 1] (σ0 0.1, σ ∈ [0.05, 1.2], ε 0.02, start std 1) rescaled to the data:
        images in [-1, 1] double them; vectors measure them in units of the data's std, σ_max = max distance/√d."""
        if spec.kind == "image":
            unit = (spec.value_range[1] - spec.value_range[0]) / PAPER_RANGE  # 2 on [-1, 1]
            return {"sigma0": 0.1 * unit, "sigma_min": 0.05 * unit, "sigma_max": 1.2 * unit, "step_size": 0.02 * unit,
                    "init_std": 1.0 * unit}
        std = float(spec.std)
        return {"sigma0": 0.1 * std, "sigma_min": 0.05 * std,
                "sigma_max": float(spec.max_pairwise_distance) / math.sqrt(spec.dim), "step_size": 0.02 * std,
                "init_std": std}

    def build_model(self, backbone) -> nn.Module:
        return backbone.energy(head=self.config.head, conditional=False)

    def noise_levels(self, batch_size: int, device=None) -> Tensor:
        """σ_i for batch positions i = 0..B−1 over [σ_min, σ_max] (the paper ties levels to positions)."""
        cfg = self.config
        return SPACINGS[cfg.spacing](cfg.sigma_min, cfg.sigma_max, batch_size).to(device)

    def loss(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        """ℓ_i = ‖x − x̃ + σ0²∇E(x̃)‖²/(σ_i² σ0⁴), x̃ = x + σ_i ε, with double backprop through ∇E."""
        s0 = self.config.sigma0
        sig = expand_as_batch(self.noise_levels(batch.shape[0], batch.device), batch)
        noisy = batch + sig * randn(batch.shape, generator)
        grad = energy_grad(model, noisy, create_graph=True)
        resid = batch - noisy + s0**2 * grad
        return resid.flatten(1).pow(2).sum(1) / (sig.flatten() ** 2 * s0**4)

    def initial_state(self, n: int, generator: torch.Generator) -> Tensor:
        lo, hi = self.spec.value_range
        return 0.5 * (lo + hi) + self.config.init_std * randn((n, *self.spec.shape), generator)

    def schedule(self) -> Tensor:
        cfg = self.config
        return annealing_schedule(cfg.t_max, cfg.hot_steps, cfg.cool_steps, cfg.final_steps)

    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> SampleResult:
        """Annealed Langevin along `schedule()`, then the denoising step; NFE counts energy gradients."""
        cfg = self.config
        x = self.initial_state(n, generator)
        temps = self.schedule().tolist()
        for temp in track(temps, desc=f"mdsm: annealed Langevin, {n} chains"):
            x = langevin_step(model, x, cfg.step_size, temp, generator).detach()
        if cfg.denoise:
            x = denoise(model, x, cfg.sigma0).detach()
        nfe = len(temps) + int(cfg.denoise)  # every evaluation is an energy gradient
        return SampleResult(x, nfe, {"t_max": cfg.t_max, "grad_evals": nfe, "total_nfe": n * nfe})

    def chain(self, model: nn.Module) -> LangevinChain:
        return LangevinChain(model, self, self.config.chain_step_size)

    def oracle(self, target) -> nn.Module:
        """The exact energy E(x) = −log p_σ0(x) of the target smoothed at σ0 (target.smoothed(σ0).log_prob), so
        that −∇E (autograd, as for a learned energy) is its exact score and the denoising step is Tweedie's."""
        check_target(target, self.spec, self.name)
        return FixedEnergyNet(target, self.config.sigma0)

    # No score_fn: the loss mixes noise levels in one noise-unconditional energy, so at its optimum −∇E is a
    # level-weighted blend of (σ_i/σ0)²·∇log p_σi, not the score of the data smoothed at σ0. Declaring it as a
    # σ0 score would make the Fisher-divergence metric compare against the wrong target.


@hookimpl
def register_methods(register):
    register(MDSM)
