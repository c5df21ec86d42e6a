"""Score-based generative modelling through stochastic differential equations (Song et al., ICLR 2021).

Forward SDE dx = f(x, t) dt + g(t) dw on t ∈ [0, 1]; all three SDEs here have an affine drift f(x, t) = a(t) x and
a Gaussian perturbation kernel x_t | x_0 ~ N(α_t x_0, σ_t² I):

- VE (eq. 30-31):  σ(t) = σ_min (σ_max/σ_min)^t,  α = 1,  a = 0,  g² = dσ²/dt = 2 σ(t)² log(σ_max/σ_min).
  As in the paper's code the marginal std is σ(t) itself, i.e. p_0 is the data smoothed by σ_min.
- VP (eq. 32-33):  β(t) = β_min + t (β_max − β_min),  B(t) = ∫₀ᵗ β,  α = e^{−B/2},  σ² = 1 − e^{−B},
  a = −β/2,  g² = β.
- sub-VP (eq. 34):  same α,  σ = 1 − e^{−B},  a = −β/2,  g² = β (1 − e^{−2B}).

Network-output conventions (`PARAMETRISATIONS`), chosen per SDE by default and recorded in the run config:
- ``noise`` (VP, sub-VP; DDPM's ε-prediction): the network predicts the standardised noise z of x_t = α x_0 + σ z,
  so s(x, t) = −out/σ_t;
- ``scaled_score`` (VE; NCSN++'s output scaling): the network predicts σ_t s, so s(x, t) = out/σ_t.
Either way the regression target has unit scale and the λ(t) = σ_t² loss is ‖σ_t s + z‖². The network is
conditioned on t ∈ [ε, 1] (not log σ): for VE, log σ(t) is an affine function of t, so the information is the same,
and t matches the range the shared Fourier embedding (frequencies 1..1000) is built for.

Samplers (`SAMPLERS`): Euler-Maruyama on the reverse SDE, predictor-corrector (reverse-diffusion predictor and a
Langevin corrector, Algorithms 2-5), and the probability-flow ODE (eq. 13) with scipy's adaptive RK45. All of them
integrate from t = 1 down to t = ε and then (by default) apply the Tweedie denoising step
E[x_0 | x_ε] = (x_ε + σ_ε² s(x_ε, ε))/α_ε, which costs one network evaluation. Likelihoods come from the
probability-flow ODE with the Hutchinson trace estimator (Appendix D.2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor, nn

from harness.errors import ConfigError, did_you_mean
from harness.hookspecs import hookimpl
from harness.method import Method, MethodConfig, SampleResult, expand_as_batch, rand, randn
from harness.oracles import OracleModule, check_target, smoothed_score
from harness.progress import track

ScoreFn = Callable[[Tensor, Tensor], Tensor]  # (x [B, ...], t [B]) -> s(x, t)


# SDEs ------------------------------------------------------------------------------------------------------

class SDE(ABC):
    """A forward SDE dx = a(t) x dt + g(t) dw on [0, 1] with kernel N(α_t x_0, σ_t² I) and a Gaussian prior."""

    name: ClassVar[str]
    parametrisation: ClassVar[str]  # the network-output convention used with this SDE by default
    default_sampler: ClassVar[str]  # the sampler of the paper's configuration for this SDE
    sample_eps: ClassVar[float]  # smallest time the samplers reach (the paper's code: 1e-5 VE, 1e-3 VP/sub-VP)
    prior_std: float = 1.0

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: SDEConfig) -> SDE:
        """Build from the method's Config (each SDE reads its own fields)."""

    @abstractmethod
    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) of the perturbation kernel x_t | x_0 ~ N(α_t x_0, σ_t² I), each shaped like t."""

    @abstractmethod
    def drift_coef(self, t: Tensor) -> Tensor:
        """a(t) of the affine drift f(x, t) = a(t) x."""

    @abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """g(t)."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return expand_as_batch(self.drift_coef(t), x) * x

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """(f_i, G_i) of the forward step x_{i+1} = x_i + f_i + G_i z over [t − dt, t]; default Euler-Maruyama."""
        return self.drift(x, t) * dt, self.diffusion(t) * math.sqrt(dt)

    def langevin_alpha(self, t: Tensor, dt: float) -> Tensor:
        """α_i of the Langevin corrector's step size ε = 2 α_i (r ‖z‖/‖s‖)² (Algorithms 4-5): 1 unless VP-like."""
        return torch.ones_like(t)

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return self.prior_std * randn(shape, generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I) per example."""
        d = z[0].numel()
        var = self.prior_std**2
        return -0.5 * z.flatten(1).pow(2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)

    def noise_ratio(self, t: Tensor) -> Tensor:
        """σ_t/α_t: p_t is the data smoothed by N(0, (σ_t/α_t)²) and rescaled by α_t. Increasing in t."""
        alpha, sigma = self.marginal(t)
        return sigma / alpha

    def time_of_noise_ratio(self, tau: float) -> float:
        """The t ∈ [0, 1] with σ_t/α_t = τ, by bisection (clipped to the ends of [0, 1])."""
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if float(self.noise_ratio(torch.tensor([mid], dtype=torch.float64))[0]) < tau:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


class VESDE(SDE):
    """Variance exploding SDE (SMLD's continuous limit), eq. 30-31 of Song et al. (2021)."""

    name, parametrisation, sample_eps = "ve", "scaled_score", 1e-5
    default_sampler = "pc"  # the paper's VE configuration: reverse diffusion + Langevin corrector

    def __init__(self, sigma_min: float, sigma_max: float):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)
        self.prior_std = sigma_max

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.sigma_min, cfg.sigma_max)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def marginal(self, t):
        return torch.ones_like(t), self.sigma(t)

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self.log_ratio)

    def discretize(self, x, t, dt):
        """SMLD's step: f = 0, G = sqrt(σ(t)² − σ(t − dt)²) (exact variance increment)."""
        g2 = self.sigma(t) ** 2 - self.sigma(t - dt) ** 2
        return torch.zeros_like(x), g2.sqrt()


class VPSDE(SDE):
    """Variance preserving SDE (DDPM's continuous limit), eq. 32-33 of Song et al. (2021)."""

    name, parametrisation, sample_eps = "vp", "noise", 1e-3
    default_sampler = "euler_maruyama"  # the paper's VP (and sub-VP) configuration: no corrector

    def __init__(self, beta_min: float, beta_max: float):
        if not 0 < beta_min <= beta_max:
            raise ConfigError(f"VP SDE needs 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.beta_min, cfg.beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        """B(t) = ∫₀ᵗ β(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def marginal(self, t):
        b = self.integral_beta(t)
        return torch.exp(-0.5 * b), torch.sqrt(-torch.expm1(-b))  # expm1: accurate for B ≈ 1e-6 at t = 1e-5

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def discretize(self, x, t, dt):
        """DDPM's step with β_i = β(t) dt: f = (sqrt(1 − β_i) − 1) x, G = sqrt(β_i)."""
        b = self.beta(t) * dt
        return expand_as_batch(torch.sqrt(1 - b) - 1, x) * x, b.sqrt()

    def langevin_alpha(self, t, dt):
        return 1 - self.beta(t) * dt


class SubVPSDE(VPSDE):
    """sub-VP SDE, eq. 34 of Song et al. (2021): VP's mean, variance (1 − e^{−B})² ≤ VP's."""

    name, parametrisation, sample_eps = "subvp", "noise", 1e-3

    def marginal(self, t):
        b = self.integral_beta(t)
        return torch.exp(-0.5 * b), -torch.expm1(-b)

    def diffusion(self, t):
        return (self.beta(t) * -torch.expm1(-2 * self.integral_beta(t))).sqrt()

    def discretize(self, x, t, dt):
        return SDE.discretize(self, x, t, dt)


SDES: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


# network-output conventions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parametrisation:
    """How a network output maps to a score at noise std σ_t, and back (the back map is what an exact oracle emits)."""

    to_score: Callable[[Tensor, Tensor], Tensor]  # (out, σ) -> s
    to_output: Callable[[Tensor, Tensor], Tensor]  # (s, σ) -> out


PARAMETRISATIONS: dict[str, Parametrisation] = {
    "noise": Parametrisation(lambda out, std: -out / std, lambda s, std: -std * s),  # out ≈ E[z | x_t]
    "scaled_score": Parametrisation(lambda out, std: out / std, lambda s, std: std * s),  # out ≈ σ_t s
}


class ScoreModel(nn.Module):
    """s_θ(x, t) = to_score(net(x, t), σ_t): a backbone conditioned on t, read through one output convention.
    The SDE and convention are recorded on the module so a model is never read with another convention."""

    def __init__(self, net: nn.Module, sde: SDE, parametrisation: str):
        super().__init__()
        self.net, self.sde, self.parametrisation = net, sde, parametrisation
        self._to_score = PARAMETRISATIONS[parametrisation].to_score

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        _, std = self.sde.marginal(t)
        return self._to_score(self.net(x, t), expand_as_batch(std, x))


class MarginalScoreNet(OracleModule):
    """The exact network of `ScoreModel` for a target: x_t = α_t x_0 + σ_t z has density
    p_t(x) = α_t^{-d} q(x/α_t), q = target.smoothed(σ_t/α_t), so s(x, t) = ∇log q(x/α_t)/α_t, emitted in the
    output convention (`Parametrisation.to_output`) with (α_t, σ_t) from the SDE's own kernel, in float64."""

    def __init__(self, target, sde: SDE, parametrisation: str):
        super().__init__(target)
        self.sde, self._to_output = sde, PARAMETRISATIONS[parametrisation].to_output

    def evaluate(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.sde.marginal(t.to(torch.float64))
        a = alpha[:, None]
        s = smoothed_score(self.target, x.flatten(1).to(torch.float64) / a, sigma / alpha) / a
        return self._to_output(s, sigma[:, None]).reshape(x.shape).to(x.dtype)


# samplers ----------------------------------------------------------------------------------------------------

def time_grid(n: int, eps: float, device) -> Tensor:
    """n + 1 decreasing times 1 = t_0 > ... > t_n = ε."""
    return torch.linspace(1.0, eps, n + 1, device=device)


def _full(t: Tensor, x: Tensor) -> Tensor:
    return t.expand(x.shape[0])


def euler_maruyama(sde: SDE, score: ScoreFn, x: Tensor, generator: torch.Generator,
                   cfg: SDEConfig) -> tuple[Tensor, int]:
    """Reverse-time SDE dx = [f − g² s] dt + g dw̄ (eq. 6) by Euler-Maruyama from t = 1 to ε in `steps` steps."""
    ts = time_grid(cfg.steps, cfg.sample_eps, x.device)
    for i in track(range(cfg.steps), desc=f"sde: Euler-Maruyama, {x.shape[0]} samples"):
        t, h = _full(ts[i], x), float(ts[i] - ts[i + 1])
        g = expand_as_batch(sde.diffusion(t), x)
        x = x - (sde.drift(x, t) - g**2 * score(x, t)) * h + g * math.sqrt(h) * randn(x.shape, generator)
    return x, cfg.steps


def reverse_diffusion_predictor(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, dt: float,
                                generator: torch.Generator) -> Tensor:
    """One reverse-diffusion step (eq. 46, Algorithms 2-3): x ← x − f_i + G_i² s(x, t) + G_i z."""
    f, G = sde.discretize(x, t, dt)
    G = expand_as_batch(G, x)
    return x - f + G**2 * score(x, t) + G * randn(x.shape, generator)


def langevin_corrector(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, dt: float, snr: float,
                       generator: torch.Generator) -> Tensor:
    """One Langevin corrector step (Algorithms 4-5): ε = 2 α (r ‖z‖/‖s‖)², x ← x + ε s + sqrt(2ε) z.
    As in the paper's code, ‖z‖ and ‖s‖ are averaged over the batch (per-example norms make the step blow up
    where the score vanishes in low dimension)."""
    s = score(x, t)
    z = randn(x.shape, generator)
    ratio = z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
    step = expand_as_batch(2 * sde.langevin_alpha(t, dt) * (snr * ratio) ** 2, x)
    return x + step * s + (2 * step).sqrt() * z


def predictor_corrector(sde: SDE, score: ScoreFn, x: Tensor, generator: torch.Generator,
                        cfg: SDEConfig) -> tuple[Tensor, int]:
    """PC sampling (Algorithm 1): at each t_i, `corrector_steps` Langevin corrections then one reverse-diffusion
    prediction to t_{i+1}."""
    ts = time_grid(cfg.steps, cfg.sample_eps, x.device)
    for i in track(range(cfg.steps), desc=f"sde: predictor-corrector, {x.shape[0]} samples"):
        t, h = _full(ts[i], x), float(ts[i] - ts[i + 1])
        for _ in range(cfg.corrector_steps):
            x = langevin_corrector(sde, score, x, t, h, cfg.snr, generator)
        x = reverse_diffusion_predictor(sde, score, x, t, h, generator)
    return x, cfg.steps * (1 + cfg.corrector_steps)


def probability_flow_drift(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """f̃(x, t) = f(x, t) − ½ g(t)² s(x, t), the probability-flow ODE (eq. 13)."""
    return sde.drift(x, t) - 0.5 * expand_as_batch(sde.diffusion(t) ** 2, x) * score(x, t)


def _solve(fun: Callable[[float, np.ndarray], np.ndarray], y0: np.ndarray, t0: float, t1: float,
           cfg: SDEConfig) -> tuple[np.ndarray, int]:
    sol = solve_ivp(fun, (t0, t1), y0, method=cfg.ode_method, rtol=cfg.ode_rtol, atol=cfg.ode_atol)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    return sol.y[:, -1], int(sol.nfev)


def probability_flow_ode(sde: SDE, score: ScoreFn, x: Tensor, generator: torch.Generator,
                         cfg: SDEConfig) -> tuple[Tensor, int]:
    """Integrate the probability-flow ODE from t = 1 to ε with an adaptive solver (scipy's RK45 by default) on
    the whole batch at once (one error norm for the batch, as in the paper's code); NFE = solver evaluations."""
    shape, dev, dtype = x.shape, x.device, x.dtype

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(y, device=dev).reshape(shape).to(dtype)
        tt = torch.full((shape[0],), t, device=dev, dtype=dtype)
        return probability_flow_drift(sde, score, xt, tt).double().flatten().cpu().numpy()

    y, nfe = _solve(fun, x.double().flatten().cpu().numpy(), 1.0, cfg.sample_eps, cfg)
    return torch.as_tensor(y, device=dev).reshape(shape).to(dtype), nfe


Sampler = Callable[[SDE, ScoreFn, Tensor, torch.Generator, "SDEConfig"], tuple[Tensor, int]]
SAMPLERS: dict[str, Sampler] = {"euler_maruyama": euler_maruyama, "pc": predictor_corrector,
                                "ode": probability_flow_ode}


def tweedie_denoise(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """E[x_0 | x_t] = (x_t + σ_t² s(x_t, t))/α_t (Tweedie's formula for the kernel N(α_t x_0, σ_t² I))."""
    alpha, sigma = sde.marginal(t)
    return (x + expand_as_batch(sigma**2, x) * score(x, t)) / expand_as_batch(alpha, x)


# likelihood --------------------------------------------------------------------------------------------------

def rademacher_probe(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.sign(randn(shape, generator))  # the sign of a Gaussian: ±1 with probability ½ each


def gaussian_probe(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return randn(shape, generator)


def divergence_hutchinson(fn: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(fn(x), vᵀ ∂fn/∂x v) per example: an unbiased estimate of div fn when E[v vᵀ] = I (Hutchinson 1990).
    The gradient is taken with respect to x only."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        (jv,) = torch.autograd.grad((out * v).sum(), x)
    return out.detach(), (jv * v).flatten(1).sum(1)


def divergence_exact(fn: Callable[[Tensor], Tensor], x: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(fn(x), tr ∂fn/∂x) per example with one backward pass per dimension (small d only)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        flat = out.flatten(1)
        div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i in range(flat.shape[1]):
            (gi,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
            div = div + gi.flatten(1)[:, i]
    return out.detach(), div


Probe = Callable[[tuple[int, ...], torch.Generator], Tensor]
Divergence = Callable[[Callable[[Tensor], Tensor], Tensor, Tensor | None], tuple[Tensor, Tensor]]
TRACE_ESTIMATORS: dict[str, tuple[Probe | None, Divergence]] = {
    "rademacher": (rademacher_probe, divergence_hutchinson),
    "gaussian": (gaussian_probe, divergence_hutchinson),
    "exact": (None, divergence_exact),
}


def ode_log_likelihood(sde: SDE, score: ScoreFn, x: Tensor, generator: torch.Generator, cfg: SDEConfig,
                       t0: float) -> tuple[Tensor, int]:
    """log p_{t0}(x) = log p_1(x(1)) + ∫_{t0}^1 div f̃(x(t), t) dt along the probability-flow ODE (eq. 39), with
    p_1 replaced by the prior. The trace uses one probe v per example held fixed along the path (Appendix D.2)."""
    shape, dev, dtype, n = x.shape, x.device, x.dtype, x.shape[0]
    d = x[0].numel()
    probe, div_fn = TRACE_ESTIMATORS[cfg.trace_estimator]
    v = probe(shape, generator) if probe is not None else None

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(y[: n * d], device=dev).reshape(shape).to(dtype)
        tt = torch.full((n,), t, device=dev, dtype=dtype)
        drift, div = div_fn(lambda z: probability_flow_drift(sde, score, z, tt), xt, v)
        return torch.cat([drift.flatten(), div]).double().cpu().numpy()

    y0 = np.concatenate([x.double().flatten().cpu().numpy(), np.zeros(n)])
    y, nfe = _solve(fun, y0, t0, 1.0, cfg)
    x1 = torch.as_tensor(y[: n * d], device=dev, dtype=torch.float64).reshape(shape)
    delta = torch.as_tensor(y[n * d:], device=dev, dtype=torch.float64)
    return (sde.prior_log_prob(x1) + delta).to(dtype), nfe


def dequantize(x: Tensor, generator: torch.Generator) -> Tensor:
    """Model-space 8-bit images (k/255 mapped to [-1, 1]) to y = (k + u)/128 − 1, u ~ U[0, 1)^d (uniform
    dequantisation; y fills the bin [k/128 − 1, (k + 1)/128 − 1) of width 2/256)."""
    k = ((x + 1) / 2 * 255).round().clamp(0, 255)
    return (k + rand(x.shape, generator)) / 128 - 1


# the method --------------------------------------------------------------------------------------------------

@dataclass
class SDEConfig(MethodConfig):
    """Defaults follow Song et al. (2021) and their code (configs/default_*); 0 means "derive from the data"."""

    sde: str = "ve"  # ve | vp | subvp (the paper's best FID: VE with PC sampling)
    parametrisation: str = "auto"  # auto: the SDE's convention (VE: scaled_score, VP/sub-VP: noise); or set one
    # VE: σ(0); 0: images 0.02 (the paper's 0.01 for VE data in [0, 1], doubled for [-1, 1]: README, Rescaling),
    # vectors 0.01 × the data's std. (VP/sub-VP's β are rates for data centred in [-1, 1], as in the paper's code.)
    sigma_min: float = 0.0
    sigma_max: float = 0.0  # VE: σ(1); 0: the training data's largest pairwise distance (Song & Ermon 2020)
    beta_min: float = 0.1  # VP/sub-VP: β(0)
    beta_max: float = 20.0  # VP/sub-VP: β(1)
    train_eps: float = 1e-5  # t ~ U(train_eps, 1) in the loss
    likelihood_weighting: bool = False  # λ(t) = g(t)² instead of σ_t² (eq. 7; Song et al. 2021b)
    # pc | euler_maruyama | ode; auto: the paper's configuration per SDE, VE pc (predictor-corrector), VP and sub-VP
    # euler_maruyama without corrector. Every sampler ends with the counted denoising step when `denoise`
    sampler: str = "auto"
    steps: int = 1000  # N: time steps of the pc / euler_maruyama samplers
    corrector_steps: int = 1  # Langevin corrector steps per predictor step (pc)
    snr: float = 0.16  # corrector's signal-to-noise ratio r
    sample_eps: float = 0.0  # last time the samplers reach; 0: the SDE's (1e-5 VE, 1e-3 VP/sub-VP)
    denoise: bool = True  # final Tweedie step E[x_0 | x_ε] (one more network evaluation)
    ode_method: str = "RK45"  # scipy.integrate.solve_ivp method for the probability-flow ODE
    ode_rtol: float = 1e-5
    ode_atol: float = 1e-5
    trace_estimator: str = "rademacher"  # rademacher | gaussian (Hutchinson) | exact (d backward passes)
    likelihood_eps: float = 1e-5  # the likelihood is that of p_ε, the data smoothed at t = ε
    score_sigma: float = 0.1  # noise level at which score_fn reports the learned score of the smoothed data


class ScoreSDE(Method):
    name = "sde"
    description = "Score-based generative modelling through SDEs (VE/VP/sub-VP; PC, Euler-Maruyama, ODE samplers)"
    Config = SDEConfig

    @property
    def sampler_length(self) -> tuple[str, ...]:  # type: ignore[override]
        """The time steps of pc / euler_maruyama; none for the adaptive probability-flow ODE."""
        return () if self.config.sampler == "ode" else ("steps",)

    def __init__(self, config: SDEConfig, spec):
        super().__init__(config, spec)
        if config.sde in SDES and config.sampler == "auto":  # resolved into the config, so the record shows it
            config.sampler = SDES[config.sde].default_sampler
        for field, table in (("sde", SDES), ("sampler", [*SAMPLERS, "auto"]), ("trace_estimator", TRACE_ESTIMATORS)):
            if getattr(config, field) not in table:
                raise ConfigError(did_you_mean(f"methods.sde.{field}", getattr(config, field), table))
        if config.steps < 1 or config.corrector_steps < 0:
            raise ConfigError(f"methods.sde: need steps >= 1 and corrector_steps >= 0, got {config.steps}, "
                              f"{config.corrector_steps}")
        sde_cls = SDES[config.sde]
        # resolved values land in self.config, so the run record shows what was used
        if config.parametrisation == "auto":
            config.parametrisation = sde_cls.parametrisation
        if config.parametrisation not in PARAMETRISATIONS:
            raise ConfigError(did_you_mean("methods.sde.parametrisation", config.parametrisation, PARAMETRISATIONS))
        if config.sigma_max <= 0:
            config.sigma_max = float(spec.max_pairwise_distance)
        if config.sigma_min <= 0:
            config.sigma_min = 0.02 if spec.kind == "image" else 0.01 * float(spec.std)
        if config.sample_eps <= 0:
            config.sample_eps = sde_cls.sample_eps
        self.sde = sde_cls.from_config(config)

    def score_model(self, net: nn.Module) -> ScoreModel:
        """Wrap a network net(x, t) with this method's SDE and output convention."""
        return ScoreModel(net, self.sde, self.config.parametrisation)

    def build_model(self, backbone) -> ScoreModel:
        return self.score_model(backbone(conditional=True))

    def oracle(self, target) -> ScoreModel:
        """ScoreModel (this SDE, this output convention) around `MarginalScoreNet`: s(x, t) is the exact score of
        the target's marginal at t, for VE, VP and sub-VP alike."""
        check_target(target, self.spec, self.name)
        return self.score_model(MarginalScoreNet(target, self.sde, self.config.parametrisation))

    def _check(self, model: ScoreModel) -> ScoreModel:
        got = getattr(model, "parametrisation", None)
        if got != self.config.parametrisation or getattr(model.sde, "name", None) != self.sde.name:
            raise ConfigError(f"model reads its network with the {got!r} convention for the "
                              f"{getattr(model.sde, 'name', '?')!r} SDE, but this method uses "
                              f"{self.config.parametrisation!r} for {self.sde.name!r}")
        return model

    def loss(self, model: ScoreModel, batch: Tensor, generator: torch.Generator) -> Tensor:
        """Continuous DSM (eq. 7): λ(t) ‖s(x_t, t) + z/σ_t‖² with x_t = α_t x + σ_t z, t ~ U(ε, 1).
        λ = σ_t² gives ‖σ_t s + z‖²; likelihood weighting λ = g(t)² gives (g²/σ_t²) ‖σ_t s + z‖². Summed over dims."""
        self._check(model)
        eps = self.config.train_eps
        t = eps + (1 - eps) * rand((batch.shape[0],), generator)
        z = randn(batch.shape, generator)
        alpha, sigma = self.sde.marginal(t)
        xt = expand_as_batch(alpha, batch) * batch + expand_as_batch(sigma, batch) * z
        loss = (expand_as_batch(sigma, batch) * model(xt, t) + z).flatten(1).pow(2).sum(1)
        if self.config.likelihood_weighting:
            loss = loss * self.sde.diffusion(t) ** 2 / sigma**2
        return loss

    @torch.no_grad()
    def sample(self, model: ScoreModel, n: int, generator: torch.Generator) -> SampleResult:
        self._check(model)
        x = self.sde.prior_sample((n, *self.spec.shape), generator)
        x, nfe = SAMPLERS[self.config.sampler](self.sde, model, x, generator, self.config)
        if self.config.denoise:
            x = tweedie_denoise(self.sde, model, x, torch.full((n,), self.config.sample_eps, device=x.device))
            nfe += 1
        return SampleResult(x, nfe, {"sampler": self.config.sampler, "sde": self.sde.name})

    def score_fn(self, model: ScoreModel):
        """The learned score of the data smoothed by N(0, τ²), τ = score_sigma: with p_t(y) = α^{-d} q(y/α),
        ∇ log q(x) = α s(α x, t) at the t where σ_t/α_t = τ."""
        self._check(model)
        tau = self.config.score_sigma
        t_val = self.sde.time_of_noise_ratio(tau)

        def fn(x: Tensor) -> Tensor:
            t = torch.full((x.shape[0],), t_val, device=x.device, dtype=x.dtype)
            alpha, _ = self.sde.marginal(t)
            a = expand_as_batch(alpha, x)
            with torch.no_grad():
                return a * model(a * x, t)

        return fn, tau

    def log_likelihood(self, model: ScoreModel, x: Tensor, generator: torch.Generator) -> Tensor:
        """Per-example log-likelihood in nats by the probability-flow ODE (of p_ε, ε = likelihood_eps).

        Vectors: log p_ε(x), a density in model space. Images: the log-probability of the 8-bit image (a
        dequantised lower bound, Theis et al. 2016): y = (k + u)/128 − 1 is the dequantised point in model space
        and v = 128 (y + 1) = k + u its value on the 0..256 pixel scale, so log p_v(v) = log p_y(y) − d log 128 and
        log P(k) ≥ E_u log p_v(k + u). `bits_per_dim` divides by −d log 2, which gives the paper's
        bits/dim = −log p_y(y)/(d log 2) + 7 (the 7 = log₂ 128 is where the [-1, 1] scaling enters)."""
        self._check(model)
        if self.spec.kind == "image":
            y = dequantize(x, generator)
            ll, _ = ode_log_likelihood(self.sde, model, y, generator, self.config, self.config.likelihood_eps)
            return ll - y[0].numel() * math.log(128)
        ll, _ = ode_log_likelihood(self.sde, model, x, generator, self.config, self.config.likelihood_eps)
        return ll

    def bits_per_dim(self, model: ScoreModel, x: Tensor, generator: torch.Generator) -> Tensor:
        """−log₂ P(x)/d per example (images; for vectors the same transform of the density, rarely meaningful)."""
        return -self.log_likelihood(model, x, generator) / (x[0].numel() * math.log(2))


@hookimpl
def register_methods(register):
    register(ScoreSDE)
