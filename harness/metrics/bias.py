"""Squared bias of a sampler's estimates of E[x] and E[x²] against the exact answer, as a function of the network
(gradient) evaluations spent: the sampler benchmarks' "gradient evaluations until b² < 0.01".

Estimator (pooled). C chains start from the method's own initialisation and run T steps. At step t the estimate of
a per-coordinate expectation E[f(x_i)] is the running average over the C chains and over every recorded position
up to t (no burn-in unless one is asked for: the transient from the initialisation is part of what is measured),

    Ê_t[f_i] = (1 / (C · n_t)) Σ_c Σ_{s ≤ t} f(x_{c,s,i}),        n_t = number of positions recorded by step t,

and its squared bias, normalised per coordinate by the target's variance of the same statistic (Robnik et al. 2023,
"Microcanonical Hamiltonian Monte Carlo", the b² of the blackjax/MCLMC sampler benchmarks):

    b²_1(t) = max_i (Ê_t[x_i] − E[x_i])² / Var[x_i],      b²_2(t) = max_i (Ê_t[x_i²] − E[x_i²])² / Var[x_i²],
    b²(t) = max(b²_1(t), b²_2(t))   (the max over coordinates; the mean over coordinates is kept in the curve too).

Var[x_i²] = E[x_i⁴] − E[x_i²]² needs the fourth moment: closed form for Gaussian mixtures, else a fixed Monte Carlo
estimate from exact target samples (the protocol says which).

Cost. Evaluations are counted over all C chains (the pooled estimate costs what all chains paid), as C · (steps ·
nfe_per_step + readouts · readout_nfe); the evaluations to tolerance are those at the first recorded point after
which b² stays below the tolerance until the end of the run. When the last point is still above it, the value is a
lower bound: the evaluations spent ("> N").

Positions. The method's own protocol: a chain with `readout_every = k` (walk-jump) is estimated from its readouts
(jumps) every k steps, k + 1 evaluations per interval; other stationary chains from their trace every step (the
chain's own position, which for Langevin chains is the sample). A chain with a paid readout is also estimated from
its readout at every step (cost nfe_per_step + readout_nfe per step): the "every step" curve.

Validation (tests/test_bias.py): an AR(1) chain x_t = ρ x_{t−1} + √(1 − ρ²) ξ_t from x_0, whose running mean of the
T positions after the start has E[x̄_T] = x_0 ρ (1 − ρ^T) / ((1 − ρ) T) and running mean of x² has E = 1 +
(x_0² − 1) ρ² (1 − ρ^{2T}) / ((1 − ρ²) T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.progress import track

TOLERANCE = 0.01
CURVE_POINTS = 120  # points kept of each curve (log-spaced in evaluations, first and last always kept)
MONTE_CARLO_N = 200_000  # exact samples for a moment with no closed form
MONTE_CARLO_SEED = 4_000_037


@dataclass
class Moments:
    """Exact per-coordinate moments of a target (float64 arrays [d]): E[x], E[x²], Var[x], Var[x²]."""

    mean: np.ndarray
    second: np.ndarray
    var: np.ndarray
    var2: np.ndarray
    source: str = "exact"

    @classmethod
    def from_moments(cls, mean, second, fourth, source: str = "exact") -> Moments:
        mean, second, fourth = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (mean, second, fourth))
        return cls(mean, second, second - mean**2, fourth - second**2, source)


def mixture_moments(target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E[x_i], E[x_i²], E[x_i⁴] of an isotropic Gaussian mixture Σ_k w_k N(μ_k, s_k² I): per component
    E x = μ, E x² = μ² + s², E x⁴ = μ⁴ + 6 μ² s² + 3 s⁴, averaged with the weights."""
    w = target.weights.double().numpy()[:, None]
    mu = target.means.double().numpy()
    s2 = (target.stds.double().numpy() ** 2)[:, None]
    return ((w * mu).sum(0), (w * (mu**2 + s2)).sum(0), (w * (mu**4 + 6 * mu**2 * s2 + 3 * s2**2)).sum(0))


def _monte_carlo(target, n: int = MONTE_CARLO_N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(MONTE_CARLO_SEED)
    acc = np.zeros((3, target.dim))
    left = n
    while left > 0:
        x = target.sample(min(left, 20_000), g).double().reshape(-1, target.dim).numpy()
        acc += np.stack([x.sum(0), (x**2).sum(0), (x**4).sum(0)])
        left -= x.shape[0]
    return acc[0] / n, acc[1] / n, acc[2] / n


def target_moments(target) -> Moments:
    """The target's exact E[x] and E[x²] (`ToyTarget.moments()` where it has one, the closed form of a Gaussian
    mixture otherwise) and Var[x²] (the mixture's closed form, a target's own `fourth_moment()`, else Monte Carlo
    from MONTE_CARLO_N exact samples with a fixed seed)."""
    from harness.toy import GaussianMixture

    mix = mixture_moments(target) if isinstance(target, GaussianMixture) else None
    own = getattr(target, "moments", None)
    if callable(own):
        mean, second = (np.asarray(torch.as_tensor(a, dtype=torch.float64)) for a in own())
        source = "ToyTarget.moments()"
    elif mix is not None:
        mean, second, source = mix[0], mix[1], "Gaussian mixture closed form"
    else:
        mc = _monte_carlo(target)
        mean, second, source = mc[0], mc[1], f"Monte Carlo, {MONTE_CARLO_N} exact samples"
    if mix is not None:
        fourth, how4 = mix[2], "closed form"
    elif callable(getattr(target, "fourth_moment", None)):
        fourth, how4 = np.asarray(torch.as_tensor(target.fourth_moment(), dtype=torch.float64)), "exact"
    else:
        fourth, how4 = _monte_carlo(target)[2], f"Monte Carlo, {MONTE_CARLO_N} exact samples"
    return Moments.from_moments(mean, second, fourth, f"E[x], E[x²]: {source}; E[x⁴]: {how4}")


# the estimator ---------------------------------------------------------------------------------------------------

def running_bias2(sum1: np.ndarray, sum2: np.ndarray, n_chains: int, m: Moments,
                  burn_in: int = 0) -> dict[str, np.ndarray]:
    """Squared normalised bias of the pooled running estimates after each recorded point.

    sum1, sum2: [R, d] sums over the C chains of x and x² at each of R recorded points (in order). The estimate at
    point r averages points burn_in..r over all chains. Returns arrays [R] (NaN before burn-in ends): "mean" (b²_1,
    max over coordinates), "second" (b²_2), "bias2" (their max), and "bias2_avg" (the larger of the two means over
    coordinates)."""
    sum1, sum2 = np.asarray(sum1, dtype=np.float64), np.asarray(sum2, dtype=np.float64)
    r = sum1.shape[0]
    c1, c2 = np.cumsum(sum1, 0), np.cumsum(sum2, 0)
    if burn_in > 0:
        c1[burn_in:] -= c1[burn_in - 1]
        c2[burn_in:] -= c2[burn_in - 1]
    count = n_chains * (np.arange(r) - burn_in + 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        e1, e2 = c1 / count, c2 / count
        z1 = (e1 - m.mean) ** 2 / m.var
        z2 = (e2 - m.second) ** 2 / m.var2
    out = {"mean": z1.max(1), "second": z2.max(1), "bias2_avg": np.maximum(z1.mean(1), z2.mean(1))}
    out["bias2"] = np.maximum(out["mean"], out["second"])
    for v in out.values():
        v[: burn_in] = np.nan
    return out


def evals_to_tolerance(bias2: np.ndarray, evals: np.ndarray, tol: float = TOLERANCE) -> tuple[float, bool]:
    """(evaluations, reached): those at the first point after which b² stays below `tol` to the end of the run
    (NaN counts as above). Not reached: (the evaluations at the last point, False), a lower bound."""
    bias2, evals = np.asarray(bias2, dtype=np.float64), np.asarray(evals, dtype=np.float64)
    above = np.nonzero(~(bias2 < tol))[0]
    if len(above) == 0:
        return float(evals[0]), True
    last = int(above[-1])
    if last == len(bias2) - 1:
        return float(evals[-1]), False
    return float(evals[last + 1]), True


def log_spaced(n: int, k: int = CURVE_POINTS) -> np.ndarray:
    """At most k indices of 0..n−1, roughly evenly spaced in log(index + 1), first and last included."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.geomspace(1, n, k) - 1).astype(int))


@dataclass
class BiasCurve:
    """One estimator's curve: recorded points' evaluations (all chains) and b², and what reaching tol cost."""

    positions: str  # "trace every step", "readout every k steps", "readout every step"
    evals: np.ndarray  # [R] evaluations over all chains at each recorded point
    parts: dict[str, np.ndarray]  # running_bias2's arrays
    n_chains: int
    gflops_per_eval: float | None = None
    tol: float = TOLERANCE
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def to_tolerance(self) -> tuple[float, bool]:
        return evals_to_tolerance(self.parts["bias2"], self.evals, self.tol)

    def details(self) -> dict[str, Any]:
        idx = log_spaced(len(self.evals))
        evals, reached = self.to_tolerance

        def kept(a):
            return [None if not math.isfinite(v) else float(v) for v in np.asarray(a)[idx]]

        return {"positions": self.positions, "reached": reached, "evals_per_chain": evals / self.n_chains,
                "final_bias2": float(self.parts["bias2"][-1]), "final_bias2_mean": float(self.parts["mean"][-1]),
                "final_bias2_second": float(self.parts["second"][-1]),
                "curve": {"evals": kept(self.evals), "bias2": kept(self.parts["bias2"]),
                          "bias2_mean": kept(self.parts["mean"]), "bias2_second": kept(self.parts["second"]),
                          "bias2_avg": kept(self.parts["bias2_avg"])}, **self.extra}


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(x.shape[0], -1).to(torch.float64).cpu()


def run_bias(chain, moments: Moments, n_chains: int, steps: int, generator: torch.Generator, *,
             burn_in: int = 0, tol: float = TOLERANCE, every_step: bool = True) -> dict[str, BiasCurve]:
    """Run `n_chains` chains for `steps` steps from `chain.init` and return the bias curves (module docstring):
    "protocol" (the method's own: readouts every `readout_every` steps, else the trace every step) and, for a chain
    with a paid readout and `every_step`, "every_step" (the readout after every step). `burn_in` counts recorded
    points of each curve left out of its estimate (the evaluations still count)."""
    nfe_step = int(getattr(chain, "nfe_per_step", 1))
    readout_nfe = int(getattr(chain, "readout_nfe", 0))
    k = getattr(chain, "readout_every", None)
    trace_of = getattr(chain, "trace", None) or chain.readout
    paid = readout_nfe > 0
    read_all = paid and every_step
    t1, t2, r1, r2, k1, k2 = [], [], [], [], [], []
    with torch.no_grad():
        state = chain.init(n_chains, generator)
        for i in track(range(1, steps + 1), steps, desc="bias: chains"):
            state = chain.step(state, generator)
            x = _flat(trace_of(state))
            t1.append(x.sum(0))
            t2.append((x * x).sum(0))
            due = k is not None and paid and i % k == 0
            if read_all or due:
                y = _flat(chain.readout(state))
                if read_all:
                    r1.append(y.sum(0))
                    r2.append((y * y).sum(0))
                if due:
                    k1.append(y.sum(0))
                    k2.append((y * y).sum(0))
    c = n_chains
    out: dict[str, BiasCurve] = {}
    step_idx = np.arange(1, steps + 1, dtype=np.float64)
    if k is not None and paid:
        if not k1:
            raise ValueError(f"bias: {steps} steps leave no readout of a chain that reads out every {k} steps")
        reads = np.arange(1, len(k1) + 1, dtype=np.float64)
        out["protocol"] = BiasCurve(f"readout every {k} steps", c * reads * (k * nfe_step + readout_nfe),
                                    running_bias2(torch.stack(k1).numpy(), torch.stack(k2).numpy(), c, moments,
                                                  burn_in), c, tol=tol,
                                    extra={"readout_every": k, "nfe_per_interval": k * nfe_step + readout_nfe})
    else:
        out["protocol"] = BiasCurve("trace every step", c * step_idx * nfe_step,
                                    running_bias2(torch.stack(t1).numpy(), torch.stack(t2).numpy(), c, moments,
                                                  burn_in), c, tol=tol)
    if read_all:
        out["every_step"] = BiasCurve("readout every step", c * step_idx * (nfe_step + readout_nfe),
                                      running_bias2(torch.stack(r1).numpy(), torch.stack(r2).numpy(), c, moments,
                                                    burn_in), c, tol=tol)
    if "every_step" in out or out["protocol"].positions != "trace every step":
        out["trace"] = BiasCurve("trace every step (no readout)", c * step_idx * nfe_step,
                                 running_bias2(torch.stack(t1).numpy(), torch.stack(t2).numpy(), c, moments, burn_in),
                                 c, tol=tol)
    return out
