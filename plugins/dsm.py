"""Baseline: single-noise denoising score matching (Vincent 2011) with Langevin sampling.

The simplest score-based method, and the pipeline's smoke test: one noise level σ, the score of the data
smoothed by N(0, σ²I) learned by regression, unadjusted Langevin dynamics on that score, and a final
Tweedie denoising step x + σ² s(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.hookspecs import hookimpl
from harness.method import Chain, Method, MethodConfig, SampleResult, rand, randn
from harness.oracles import FixedScoreNet, check_target
from harness.progress import track


@dataclass
class DSMConfig(MethodConfig):
    sigma: float = 0.0  # noise level; 0 picks 0.1 for images in [-1, 1] and 0.1 × data std for vectors
    steps: int = 500  # Langevin steps of the sampler
    step_size: float = 0.0  # Langevin step ε (x += ε/2·s + √ε·ξ); 0: 0.1·σ²
    denoise: bool = True  # final Tweedie step x + σ² s(x)


class ScoreNet(nn.Module):
    """s(x) = net(x)/σ: the network predicts −ε, the standardised noise, so its output is O(1)."""

    def __init__(self, net: nn.Module, sigma: float):
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, None) / self.sigma


class LangevinChain(Chain):
    """Unadjusted Langevin at the single noise level: stationary (up to O(ε) discretisation bias) for p_σ.
    Readout applies the Tweedie denoising step, so states are read in data space; it costs one extra NFE."""

    stationary = True
    nfe_per_step = 1

    def __init__(self, model: ScoreNet, spec, step_size: float, denoise: bool):
        self.model, self.spec, self.eps, self.denoise = model, spec, step_size, denoise
        self.readout_nfe = int(denoise)

    def init(self, n: int, generator: torch.Generator) -> Tensor:
        lo, hi = self.spec.value_range
        return lo + (hi - lo) * rand((n, *self.spec.shape), generator)

    @torch.no_grad()
    def step(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x + 0.5 * self.eps * self.model(x) + math.sqrt(self.eps) * randn(x.shape, generator)

    @torch.no_grad()
    def readout(self, x: Tensor) -> Tensor:
        return x + self.model.sigma**2 * self.model(x) if self.denoise else x

    def trace(self, x: Tensor) -> Tensor:
        """The chain's own position x (no denoise: the readout is a deterministic function of it)."""
        return x

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "readout": "tweedie denoise" if self.denoise else "raw state",
                "step_size": self.eps}


class DSM(Method):
    name = "dsm"
    description = "Single-noise denoising score matching with Langevin sampling (baseline)"
    Config = DSMConfig
    sampler_length = ("steps",)

    def __init__(self, config: DSMConfig, spec):
        super().__init__(config, spec)
        if config.sigma <= 0:  # resolved values land in the record through self.config
            config.sigma = 0.1 if spec.kind == "image" else 0.1 * spec.std
        if config.step_size <= 0:
            config.step_size = 0.1 * config.sigma**2

    def build_model(self, backbone) -> nn.Module:
        return ScoreNet(backbone(conditional=False), self.config.sigma)

    def loss(self, model: ScoreNet, batch: Tensor, generator: torch.Generator) -> Tensor:
        """‖σ s(x + σε) + ε‖², per example (λ = σ² weighting of the DSM objective)."""
        eps = randn(batch.shape, generator)
        pred = model(batch + self.config.sigma * eps) * self.config.sigma
        return (pred + eps).flatten(1).pow(2).sum(1)

    def chain(self, model: ScoreNet) -> LangevinChain:
        return LangevinChain(model, self.spec, self.config.step_size, self.config.denoise)

    @torch.no_grad()
    def sample(self, model: ScoreNet, n: int, generator: torch.Generator) -> SampleResult:
        chain = self.chain(model)
        x = chain.init(n, generator)
        for _ in track(range(self.config.steps), desc=f"dsm: Langevin, {n} chains"):
            x = chain.step(x, generator)
        x = chain.readout(x)
        nfe = self.config.steps * chain.nfe_per_step + chain.readout_nfe
        return SampleResult(x, nfe, {"total_nfe": n * nfe})

    def score_fn(self, model: ScoreNet):
        return model, self.config.sigma

    def oracle(self, target) -> ScoreNet:
        """ScoreNet with net(x) = σ ∇log p_σ(x), p_σ = target.smoothed(σ): s(x) is the exact smoothed score."""
        check_target(target, self.spec, self.name)
        sigma = self.config.sigma
        return ScoreNet(FixedScoreNet(target, sigma, sigma), sigma)


@hookimpl
def register_methods(register):
    register(DSM)
