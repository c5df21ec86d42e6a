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

from harness.backbones import energy_score
from harness.errors import ConfigError, did_you_mean
from harness.hookspecs import hookimpl
from harness.method import Chain, Method, MethodConfig, SampleResult, rand, randn
from harness.oracles import PLACEHOLDER, OracleModule, check_target, smoothed_log_prob, smoothed_score
from harness.progress import track


@dataclass
class WalkJumpConfig(MethodConfig):
    parametrisation: str = "universal"  # universal | mdae | energy (see PARAMETRISATIONS)
    # σ of every measurement, model space. 0: auto, images 2.0 (the references' σ = 1 for data in [0, 1], doubled
    # because our images span [-1, 1]); vectors 1.0 × the data's std
    sigma: float = 0.0
    # M measurements. 0: auto, images 16 for one channel (MNIST reference), 8 otherwise (CIFAR-10); vectors 16
    M: int = 0
    step_size: float = 0.0  # walk step δ; 0: 0.5σ (mems and walk-jump)
    # γ; the O-step keeps e^{−γδ} of the velocity (mems' convention; walk-jump's e^{−γ} with γ = 1 is γ = 1/δ
    # here). 0: γ = 0.25/δ, i.e. γδ = 0.25 as in mems (σ = 1, δ = 0.5, γ = 0.5 on [0, 1]); with u = 1 the walk is
    # then scale-covariant: on [-1, 1] (σ = 2, δ = 1, γ = 0.25) it is 2 × the reference walk − 1 (README, Rescaling)
    friction: float = 0.0
    inverse_mass: float = 1.0  # u = 1/mass (mems' "lipschitz" = 1/u); stationary velocity law N(0, u I)
    # how `sample` draws n samples (see PROTOCOLS): "parallel", n chains of `steps` walk steps then one jump each
    # (NFE K + 1); "long_chain", the papers' protocol: `chains` long chains, `burn_in` walk steps, then a jump
    # every `jump_every` walk steps until n jumps (NFE the amortised mean, see `sample`)
    protocol: str = "parallel"
    steps: int = 100  # K: walk steps of each parallel chain (protocol "parallel"), then one jump
    chains: int = 1  # long_chain: independent long chains (the papers show one)
    burn_in: int = 100  # long_chain: walk steps of each chain before its first jump
    jump_every: int = 10  # k: walk steps between jumps of a long chain (mems samples every 10)
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

    `nfe_score` / `nfe_jump`: network evaluations one call costs (a forward+backward of an energy counts as one);
    `grad_evals_score` / `grad_evals_jump`: how many of those differentiate the network with respect to its input.
    """

    nfe_score = 1
    nfe_jump = 1
    grad_evals_score = 0
    grad_evals_jump = 0

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

    grad_evals_score = 1
    grad_evals_jump = 1

    def __init__(self, backbone, spec, sigma: float, m: int, cfg: WalkJumpConfig):
        super().__init__(sigma, m)
        self.in_scale = math.sqrt(spec.std**2 + self.sigma**2)
        c, *rest = spec.shape
        self.energy = backbone.energy(cfg.energy_head, in_shape=(m * c, *rest), conditional=False)

    def free_energy(self, y: Tensor) -> Tensor:
        """f(y) = −log p(y) + const, shape [B]."""
        return self.in_scale**2 / self.sigma**2 * self.energy(stack_measurements(y) / self.in_scale, None)

    def score(self, y: Tensor, create_graph: bool = False) -> Tensor:
        """−∇_y f(y) = −(a/σ²) ∇E(z) at z = stack(y)/a, unstacked: one energy score call."""
        z = stack_measurements(y) / self.in_scale
        s = energy_score(self.energy, z, None, create_graph)
        return unstack_measurements(s, self.M) * (self.in_scale / self.sigma**2)

    def estimates(self, y: Tensor, create_graph: bool = False) -> Tensor:
        return y + self.sigma**2 * self.score(y, create_graph)


PARAMETRISATIONS: dict[str, type[MDensityModel]] = {"universal": Universal, "mdae": MDAE, "energy": MEM}


# exact slots (the `oracle` capability) -------------------------------------------------------------------------
# y_m = x + σ ε_m: Σ_m ‖y_m − x‖² = Σ_m ‖y_m − ȳ‖² + M ‖ȳ − x‖², so ȳ is sufficient for x, E[X | y] is the denoiser
# of ȳ at τ = σ/√M and log p(y) = −Σ_m ‖y_m − ȳ‖²/(2σ²) + log p_τ(ȳ) − (Md/2) log 2πσ² + (d/2) log 2πτ².

class UniversalOracleNet(OracleModule):
    """Universal slot: x̂(ȳ) = ȳ + τ net(ȳ/a) exact, i.e. net(z) = τ ∇log p_τ(ȳ) at ȳ = a z."""

    def __init__(self, target, tau: float, in_scale: float):
        super().__init__(target)
        self.tau, self.a = float(tau), float(in_scale)

    def evaluate(self, z, c):
        ybar = z.flatten(1).to(torch.float64) * self.a
        return (self.tau * smoothed_score(self.target, ybar, self.tau)).reshape(z.shape).to(z.dtype)


class _MeasurementsOracle(OracleModule):
    """An exact slot that sees all M measurements, stacked as channels and scaled by 1/a."""

    def __init__(self, target, sigma: float, m: int, in_scale: float):
        super().__init__(target)
        self.sigma, self.M, self.a = float(sigma), int(m), float(in_scale)
        self.tau = self.sigma / math.sqrt(self.M)


class MDAEOracleNet(_MeasurementsOracle):
    """MDAE slot: x̂_m = y_m + σ net(y/a)_m exact, i.e. net_m = (E[X | y] − y_m)/σ, stacked as channels."""

    def evaluate(self, z, c):
        y = (z.to(torch.float64) * self.a).reshape(z.shape[0], self.M, -1)
        ybar = y.mean(1)
        xhat = ybar + self.tau**2 * smoothed_score(self.target, ybar, self.tau)
        return ((xhat[:, None] - y) / self.sigma).reshape(z.shape).to(z.dtype)


class MEMOracleNet(_MeasurementsOracle):
    """MEM slot: f(y) = (a²/σ²) E(y/a) = −log p(y) exact, i.e. E(z) = −(σ²/a²) log p(a z); differentiable in z."""

    def evaluate(self, z, c):
        y = (z.to(torch.float64) * self.a).reshape(z.shape[0], self.M, -1)
        ybar, d = y.mean(1), y.shape[2]
        spread = (y - ybar[:, None]).pow(2).sum((1, 2))
        const = 0.5 * d * (math.log(2 * math.pi * self.tau**2) - self.M * math.log(2 * math.pi * self.sigma**2))
        log_p = -spread / (2 * self.sigma**2) + smoothed_log_prob(self.target, ybar, self.tau) + const
        return (-(self.sigma**2 / self.a**2) * log_p).to(z.dtype)


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
    discretisation bias. One network evaluation per step; readout is the jump x̂(y) (one more evaluation), paid
    once every `jump_every` walk steps in the papers' protocol; `trace` is the mean measurement ȳ (free)."""

    stationary = True
    nfe_per_step = 1

    def __init__(self, model: MDensityModel, spec, config: WalkJumpConfig):
        self.model, self.spec, self.config = model, spec, config
        self.nfe_per_step = model.nfe_score
        self.grad_evals_per_step = model.grad_evals_score
        self.readout_nfe = model.nfe_jump
        self.readout_every = config.jump_every

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

    def trace(self, state: WalkState) -> Tensor:
        """ȳ = (1/M) Σ_m y_m, [C, *shape]: the walk's own position in x-space, no network evaluation."""
        return state.y.mean(1)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {**super().describe(), "readout": "jump x̂(y) = ȳ + (σ²/M) Σ ∇_{y_m} log p(y)",
                "state": "measurements y in R^{Md} (and velocities)",
                "integrator": "Sachs et al. 2017 (A B O B A), friction e^{-γδ}", "sigma": c.sigma, "M": c.M,
                "step_size": c.step_size, "friction": c.friction, "inverse_mass": c.inverse_mass}


# the method -------------------------------------------------------------------------------------------

PROTOCOLS = ("parallel", "long_chain")
GAMMA_DELTA = 0.25  # γδ of mems' sampler (γ = 0.5, δ = 0.5): dimensionless, so it survives a change of data scale


class WalkJump(Method):
    name = "walk_jump"
    description = "M-density walk-jump sampling: learn x̂(y) from M noisy measurements, walk in y, jump to x"
    Config = WalkJumpConfig

    @property
    def sampler_length(self) -> tuple[str, ...]:  # type: ignore[override]
        """parallel: the walk length K; long_chain: the burn-in and the spacing k between jumps."""
        return ("steps",) if self.config.protocol == "parallel" else ("burn_in", "jump_every")

    def __init__(self, config: WalkJumpConfig, spec):
        super().__init__(config, spec)
        if config.parametrisation not in PARAMETRISATIONS:
            raise ConfigError(did_you_mean("walk_jump parametrisation", config.parametrisation, PARAMETRISATIONS))
        if config.init not in INITS:
            raise ConfigError(did_you_mean("walk_jump init", config.init, INITS))
        if config.protocol not in PROTOCOLS:
            raise ConfigError(did_you_mean("methods.walk_jump.protocol", config.protocol, PROTOCOLS))
        if config.chains < 1 or config.burn_in < 0 or config.jump_every < 1:
            raise ConfigError(f"methods.walk_jump: need chains >= 1, burn_in >= 0 and jump_every >= 1, got "
                              f"{config.chains}, {config.burn_in}, {config.jump_every}")
        image = spec.kind == "image"
        if config.sigma <= 0:  # resolved values land in the record through self.config
            config.sigma = 2.0 if image else float(spec.std)
        if config.M <= 0:
            config.M = (16 if spec.shape[0] == 1 else 8) if image else 16
        if config.step_size <= 0:
            config.step_size = 0.5 * config.sigma
        if config.friction <= 0:
            config.friction = GAMMA_DELTA / config.step_size

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
        """n samples under `protocol`; nfe is the cost per sample, info the protocol and the whole cost.

        parallel: n chains from noise, K walk steps each, then one jump: NFE = K·nfe_step + nfe_jump per sample.
        long_chain: `chains` chains, `burn_in` walk steps each, then a jump after every k = `jump_every` walk steps
        until n jumps (the last round only runs the chains still owed a jump). Total NFE
        (chains·burn_in + n·k)·nfe_step + n·nfe_jump; nfe is that total / n rounded to the nearest integer (the exact
        mean is info["nfe_mean"], the total info["total_nfe"], which the runner uses). Samples are chain-major, each
        chain's jumps in time order."""
        if self.config.protocol == "long_chain":
            c = self.config
            return self._long_run(model, n, c.chains, c.burn_in, c.jump_every, generator)
        chain = self.chain(model)
        state = chain.init(n, generator)
        for _ in track(range(self.config.steps), desc=f"walk_jump: walk, {n} chains"):
            state = chain.step(state, generator)
        nfe = self.config.steps * chain.nfe_per_step + model.nfe_jump
        grads = self.config.steps * model.grad_evals_score + model.grad_evals_jump
        info = {"protocol": "parallel", "walk_steps": self.config.steps, "total_nfe": n * nfe, "nfe_mean": nfe}
        return SampleResult(chain.readout(state), nfe, {**info, **({"grad_evals": grads} if grads else {})})

    def _long_run(self, model: MDensityModel, n: int, chains: int, burn_in: int, k: int,
                  generator: torch.Generator) -> SampleResult:
        """The long_chain protocol (see `sample`)."""
        chains = min(chains, n)
        chain = self.chain(model)
        state = chain.init(chains, generator)
        for _ in track(range(burn_in), desc=f"walk_jump: burn-in, {chains} chains"):
            state = chain.step(state, generator)
        per_chain: list[list[Tensor]] = [[] for _ in range(chains)]
        left = n
        rounds = -(-n // chains)  # each round: k walk steps, then one jump from every chain still owed one
        for _ in track(range(rounds), desc=f"walk_jump: a jump every {k} steps, {chains} chains", unit="round"):
            active = min(chains, left)
            if active < state.y.shape[0]:
                state = WalkState(state.y[:active], state.v[:active])
            for _ in range(k):
                state = chain.step(state, generator)
            for i, x in enumerate(chain.readout(state)):
                per_chain[i].append(x)
            left -= active
        walk = chains * burn_in + n * k
        total = walk * chain.nfe_per_step + n * model.nfe_jump
        grads = walk * model.grad_evals_score + n * model.grad_evals_jump
        info = {"protocol": "long_chain", "chains": chains, "burn_in": burn_in, "jump_every": k,
                "total_walk_steps": walk, "total_nfe": total, "nfe_mean": total / n}
        if grads:
            info["grad_evals"] = grads / n
        samples = torch.stack([x for xs in per_chain for x in xs])
        return SampleResult(samples, math.floor(total / n + 0.5), info)

    def long_chain(self, model: MDensityModel, n_jumps: int, generator: torch.Generator,
                   jump_every: int | None = None, burn_in: int = 0) -> SampleResult:
        """One chain, as the papers show it: `burn_in` walk steps, then a jump after every k walk steps (the
        long_chain protocol with one chain). samples: the n_jumps jumps in time order; info["total_nfe"] is the
        chain's whole cost, burn-in included."""
        k = self.config.jump_every if jump_every is None else jump_every
        return self._long_run(model, n_jumps, 1, burn_in, k, generator)

    def oracle(self, target) -> MDensityModel:
        """The configured parametrisation with its slot exact: universal, the denoiser of ȳ at
        τ = σ/√M from target.smoothed(τ); MDAE, E[X | y] = that denoiser for every measurement; energy, the exact
        −log p(y) of the M-density. Every M-density score, and the jump, is then exact."""
        check_target(target, self.spec, self.name)
        model = self.build_model(PLACEHOLDER)
        if isinstance(model, Universal):
            model.net = UniversalOracleNet(target, model.tau, model.in_scale)
        elif isinstance(model, MDAE):
            model.net = MDAEOracleNet(target, model.sigma, model.M, model.in_scale)
        else:
            model.energy = MEMOracleNet(target, model.sigma, model.M, model.in_scale)
        return model

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
