"""Mixing diagnostics of stationary MCMC chains: integrated autocorrelation time, ESS, split-R̂, mode hopping.

C parallel chains run for a burn-in, then K recorded steps; after every recorded step a `statistic_fn` maps the
readouts [C, *shape] to S scalar statistics [C, S] (fixed random unit projections, the coordinates of 2-D data,
classifier logits for images). On each statistic's [C, K] trace:

- τ, the integrated autocorrelation time in steps, with Sokal's automatic window (c = 5), as emcee computes it;
- bulk and tail effective sample size and rank-normalised split-R̂ (Vehtari et al. 2021) from ArviZ's
  ``arviz_stats`` (numpy arrays, no xarray needed);
- ESS per second of sampling (step + readout, synchronised, burn-in excluded) and per 1,000 network evaluations;
- where states can be labelled (mixture components, classifier classes): label changes per 1,000 steps per chain.

The run summary takes the worst statistic: max τ, min ESS, max R̂.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from harness.method import Chain

SOKAL_C = 5.0
AUTOCORR_TOL = 50  # emcee's rule: trust τ when the chain is longer than 50 τ
TAIL_PROB = (0.05, 0.95)  # ESS of the 5% and 95% quantiles (Vehtari et al. 2021), the smaller reported


def autocorrelation_1d(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function ρ(t) of a 1-D series, t = 0..N−1, by FFT with zero padding to a
    power of two ≥ 2N (no circular wrap-around): ρ(t) = Σ_s (x_s − x̄)(x_{s+t} − x̄) / Σ_s (x_s − x̄)²."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x - x.mean(), n=size)
    acov = np.fft.irfft(f * np.conj(f), n=size)[:n]
    return acov / acov[0] if acov[0] > 0 else np.full(n, np.nan)


def sokal_window(taus: np.ndarray, c: float = SOKAL_C) -> int:
    """Sokal's automatic window: the smallest M with M ≥ c τ̂(M) (or the last lag when none qualifies)."""
    m = np.arange(len(taus)) < c * taus
    return int(np.argmin(m)) if np.any(~m) else len(taus) - 1


def integrated_autocorr_time(x, c: float = SOKAL_C) -> float:
    """Integrated autocorrelation time τ (in steps) of x, shape [steps] or [chains, steps].

    Sokal (1997), "Monte Carlo methods in statistical mechanics", eq. (3.19) with the automatic window of
    §3 (c = 5): τ̂(M) = 1 + 2 Σ_{t=1}^{M} ρ̂(t), M the smallest lag with M ≥ c τ̂(M). For several chains the
    normalised autocorrelation functions are averaged before summing (as emcee's ``integrated_time`` does with
    walkers). For an AR(1) process with coefficient ρ, τ = (1 + ρ)/(1 − ρ). τ is trustworthy only when the
    chain is much longer than τ (emcee asks for 50 τ, see `AUTOCORR_TOL`).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected shape [steps] or [chains, steps], got {x.shape}")
    rho = np.mean([autocorrelation_1d(row) for row in x], axis=0)
    taus = 2.0 * np.cumsum(rho) - 1.0
    return float(taus[sokal_window(taus, c)])


def ess_rhat(trace: np.ndarray) -> dict[str, float]:
    """Bulk ESS, tail ESS and rank-normalised split-R̂ of a [chains, draws] trace via ``arviz_stats``."""
    from arviz_stats.base import array_stats

    trace = np.asarray(trace, dtype=np.float64)
    kw = dict(chain_axis=0, draw_axis=1)
    return {
        "ess_bulk": float(array_stats.ess(trace, method="bulk", **kw)),
        "ess_tail": float(array_stats.ess(trace, method="tail", prob=TAIL_PROB, **kw)),
        "rhat": float(array_stats.rhat(trace, method="rank", **kw)),
    }


def label_changes_per_1k(labels: np.ndarray) -> float:
    """Mode-hopping rate: label changes between consecutive recorded steps per 1,000 steps per chain."""
    labels = np.asarray(labels)
    changes = (labels[:, 1:] != labels[:, :-1]).sum()
    return float(1000.0 * changes / (labels.shape[0] * max(labels.shape[1] - 1, 1)))


# statistics of readouts ---------------------------------------------------------------------------------------

StatisticFn = Callable[[Tensor], Tensor]  # readouts [B, *shape] -> [B, S]


@dataclass
class Statistics:
    """A statistic function with names for its S outputs."""

    fn: StatisticFn
    names: list[str]

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)


def projection_statistics(dim: int, k: int = 4, seed: int = 0) -> Statistics:
    """k fixed random unit directions u_j (seeded, the same for every run): s_j(x) = u_jᵀ vec(x)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, dim, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    return Statistics(lambda x: x.reshape(x.shape[0], -1).to(torch.float64).cpu() @ u.T,
                      [f"proj{j}" for j in range(k)])


def coordinate_statistics(dim: int) -> Statistics:
    return Statistics(lambda x: x.reshape(x.shape[0], -1).to(torch.float64).cpu(), [f"x{j}" for j in range(dim)])


def logit_statistics(classifier) -> Statistics:
    return Statistics(lambda x: classifier.logits(x).to(torch.float64).cpu(),
                      [f"logit{j}" for j in range(classifier.num_classes)])


def concat_statistics(*stats: Statistics) -> Statistics:
    return Statistics(lambda x: torch.cat([s(x) for s in stats], dim=1), [n for s in stats for n in s.names])


# running chains -----------------------------------------------------------------------------------------------

@dataclass
class ChainDiagnostics:
    n_chains: int
    burn_in: int
    steps: int
    nfe_per_step: int  # the chain's step plus its readout (every recorded step is read out)
    seconds: float  # sampling time of the recorded steps (step + readout), synchronised, burn-in excluded
    names: list[str]
    tau: list[float]
    ess_bulk: list[float]
    ess_tail: list[float]
    rhat: list[float]
    mode_hops_per_1k: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nfe(self) -> int:
        """Network evaluations of the recorded steps over all chains."""
        return self.n_chains * self.steps * self.nfe_per_step

    def summary(self) -> dict[str, float | None]:
        """Worst statistic: max τ, min ESS, max R̂; ESS rates from the worst bulk ESS."""
        ess = float(np.nanmin(self.ess_bulk))
        return {
            "tau": float(np.nanmax(self.tau)), "ess_bulk": ess, "ess_tail": float(np.nanmin(self.ess_tail)),
            "rhat": float(np.nanmax(self.rhat)),
            "ess_bulk_per_second": ess / self.seconds if self.seconds > 0 else None,
            "ess_bulk_per_1k_nfe": 1000.0 * ess / self.nfe if self.nfe > 0 else None,
            "mode_hops_per_1k_steps": self.mode_hops_per_1k,
            "reliable": bool(self.steps >= AUTOCORR_TOL * np.nanmax(self.tau)),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_chain_diagnostics(chain: Chain, n_chains: int, burn_in: int, steps: int, statistic_fn: StatisticFn,
                          labeler: Callable[[Tensor], Tensor] | None = None, *,
                          generator: torch.Generator, names: list[str] | None = None,
                          chunk: int = 100) -> ChainDiagnostics:
    """Run `n_chains` parallel chains for `burn_in` + `steps` steps and diagnose the recorded statistics.

    `statistic_fn` maps readouts [B, *shape] to [B, S]; `labeler` (optional) maps readouts to integer labels [B]
    for the mode-hopping rate. Both are applied to `chunk` recorded steps at a time (B = chunk · C), outside the
    timer. `generator` drives the chain (on the chain's device). Timing covers step and readout of the recorded
    steps only (synchronised on CUDA).
    """
    device = generator.device
    stats, labels, buffer, seconds = [], [], [], 0.0

    def flush():
        x = torch.cat(buffer)  # [k·C, *shape], step-major
        k = len(buffer)
        stats.append(torch.as_tensor(statistic_fn(x)).detach().to(torch.float64).cpu().reshape(k, n_chains, -1))
        if labeler is not None:
            labels.append(torch.as_tensor(labeler(x)).detach().cpu().reshape(k, n_chains))
        buffer.clear()

    with torch.no_grad():
        state = chain.init(n_chains, generator)
        for _ in range(burn_in):
            state = chain.step(state, generator)
        for _ in range(steps):
            _sync(device)
            t0 = time.perf_counter()
            state = chain.step(state, generator)
            x = chain.readout(state)
            _sync(device)
            seconds += time.perf_counter() - t0
            buffer.append(x.detach())
            if len(buffer) == chunk:
                flush()
        if buffer:
            flush()
    trace = torch.cat(stats).permute(1, 0, 2).numpy()  # [C, K, S]
    if names is None:
        names = getattr(statistic_fn, "names", None) or [f"s{j}" for j in range(trace.shape[2])]
    per = [ess_rhat(trace[:, :, j]) for j in range(trace.shape[2])]
    # every recorded step is read out, so a readout's evaluations (a jump, a final denoise) count as well
    nfe_per_step = int(getattr(chain, "nfe_per_step", 1)) + int(getattr(chain, "readout_nfe", 0))
    return ChainDiagnostics(
        n_chains=n_chains, burn_in=burn_in, steps=steps, nfe_per_step=nfe_per_step,
        seconds=seconds, names=list(names),
        tau=[integrated_autocorr_time(trace[:, :, j]) for j in range(trace.shape[2])],
        ess_bulk=[p["ess_bulk"] for p in per], ess_tail=[p["ess_tail"] for p in per], rhat=[p["rhat"] for p in per],
        mode_hops_per_1k=label_changes_per_1k(torch.cat(labels).T.numpy()) if labels else None,
    )
