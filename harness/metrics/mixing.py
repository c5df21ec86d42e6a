"""Mixing diagnostics of stationary MCMC chains: integrated autocorrelation time, ESS, R̂, nested R̂, mode hopping,
and what the chain costs, charged the way a user pays it.

C parallel chains run for a burn-in, then K recorded steps. Mixing is diagnosed on the chain's own position,
``Chain.trace(state)`` (walk-jump: the mean measurement ȳ; Langevin: x), at every recorded step: a readout that is a
deterministic function of the state (a jump, a Tweedie denoise) adds cost, not mixing, so none is paid per step.
After every recorded step a `statistic_fn` maps the traces [C, *shape] to S scalar statistics [C, S] (fixed random
unit projections, the coordinates of 2-D data, classifier logits for images). On each statistic's [C, K] trace:

- τ, the integrated autocorrelation time in steps, with Sokal's automatic window (c = 5), as emcee computes it, with
  the Madras–Sokal standard error; τ from a chain shorter than 50 τ is only a lower bound (emcee's rule);
- bulk and tail effective sample size and rank-normalised split-R̂ (Vehtari et al. 2021), and nested R̂ for many
  short chains (Margossian et al. 2024) on superchains of consecutive chains, from ArviZ's ``arviz_stats``;
- where states can be labelled (mixture components, classifier classes): label changes per 1,000 steps per chain.

Cost. Readouts happen where the method's own protocol pays for them: every `readout_every` steps (walk-jump: one jump
every k walk steps), or once at the end of the chain when it is None. Chain-step NFE = C · K · nfe_per_step (burn-in
excluded) is what ESS per 1,000 NFE charges; readout NFE = C · (number of readouts) · readout_nfe is reported apart.
Chain steps and readouts are timed apart (CUDA events, one synchronisation); statistics and labels are not timed.
Mode labels use the readouts where the chain has a paid readout during the chain, else the (free) trace every step.

The run summary takes the worst statistic: max τ, min ESS, max R̂.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from harness.metrics.throughput import IntervalClock, count_flops
from harness.progress import track

if TYPE_CHECKING:
    from harness.method import Chain

SOKAL_C = 5.0
AUTOCORR_TOL = 50  # emcee's rule: trust τ when the chain is longer than 50 τ
TAIL_PROB = (0.05, 0.95)  # ESS of the 5% and 95% quantiles (Vehtari et al. 2021), the smaller reported
SUPERCHAINS = 4  # nested R̂: superchains of consecutive chains (at most this many, at least 2)
MAX_TRACE_ROWS = 2000  # chain.npz keeps at most this many trace rows per chain
MAX_ACF_LAG = 200
MAX_READOUTS_KEPT = 64
CHAIN_NPZ = "chain.npz"


def autocorrelation_1d(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function ρ(t) of a 1-D series, t = 0..N−1, by FFT with zero padding to a
    power of two ≥ 2N (no circular wrap-around): ρ(t) = Σ_s (x_s − x̄)(x_{s+t} − x̄) / Σ_s (x_s − x̄)²."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x - x.mean(), n=size)
    acov = np.fft.irfft(f * np.conj(f), n=size)[:n]
    return acov / acov[0] if acov[0] > 0 else np.full(n, np.nan)


def mean_autocorrelation(x: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """ρ(t) of a [chains, steps] trace averaged over chains, t = 0..max_lag (default: all lags)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    rho = np.mean([autocorrelation_1d(row) for row in x], axis=0)
    return rho if max_lag is None else rho[: max_lag + 1]


def sokal_window(taus: np.ndarray, c: float = SOKAL_C) -> int:
    """Sokal's automatic window: the smallest M with M ≥ c τ̂(M) (or the last lag when none qualifies)."""
    m = np.arange(len(taus)) < c * taus
    return int(np.argmin(m)) if np.any(~m) else len(taus) - 1


def autocorr_time_and_window(x, c: float = SOKAL_C) -> tuple[float, int]:
    """(τ̂, M): the integrated autocorrelation time and the window it was summed over (see
    `integrated_autocorr_time`)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected shape [steps] or [chains, steps], got {x.shape}")
    taus = 2.0 * np.cumsum(mean_autocorrelation(x)) - 1.0
    m = sokal_window(taus, c)
    return float(taus[m]), m


def integrated_autocorr_time(x, c: float = SOKAL_C) -> float:
    """Integrated autocorrelation time τ (in steps) of x, shape [steps] or [chains, steps].

    Sokal (1997), "Monte Carlo methods in statistical mechanics", eq. (3.19) with the automatic window of
    §3 (c = 5): τ̂(M) = 1 + 2 Σ_{t=1}^{M} ρ̂(t), M the smallest lag with M ≥ c τ̂(M). For several chains the
    normalised autocorrelation functions are averaged before summing (as emcee's ``integrated_time`` does with
    walkers). For an AR(1) process with coefficient ρ, τ = (1 + ρ)/(1 − ρ). τ is trustworthy only when the
    chain is much longer than τ (emcee asks for 50 τ, see `AUTOCORR_TOL`).
    """
    return autocorr_time_and_window(x, c)[0]


def autocorr_time_stderr(tau: float, window: int, n: int) -> float:
    """Standard error of τ̂ summed over a window M from n draws: var τ̂ ≈ 2(2M + 1) τ² / n (Madras & Sokal 1988,
    Sokal 1997 eq. 3.20)."""
    return float(tau * math.sqrt(2.0 * (2 * window + 1) / n)) if n > 0 else float("nan")


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


def superchain_ids(n_chains: int, superchains: int = SUPERCHAINS) -> np.ndarray | None:
    """Chain i belongs to superchain i // (C / K), K the largest divisor of C that is ≤ `superchains` (equal
    superchains, as nested R̂ requires); None when fewer than 2 superchains are possible."""
    k = max((d for d in range(2, min(superchains, n_chains) + 1) if n_chains % d == 0), default=0)
    return np.arange(n_chains) // (n_chains // k) if k >= 2 else None


def nested_rhat(trace: np.ndarray, superchains: int = SUPERCHAINS) -> float:
    """Nested R̂ of a [chains, draws] trace (Margossian et al. 2024, "Nested R̂: assessing the convergence of MCMC
    when running many short chains", eq. 8: R̂ν = sqrt(1 + B̂ν / Ŵν), B̂ν the variance of superchain means, Ŵν the
    mean over superchains of within-chain variance plus between-chain variance inside the superchain), rank-
    normalised and split as ``arviz_stats.rhat_nested`` computes it. Superchains are groups of consecutive chains
    (`superchain_ids`), here independently initialised. NaN when fewer than 2 superchains fit."""
    from arviz_stats.base import array_stats

    trace = np.asarray(trace, dtype=np.float64)
    ids = superchain_ids(trace.shape[0], superchains)
    if ids is None:
        return float("nan")
    return float(array_stats.rhat_nested(trace, ids, method="rank", chain_axis=0, draw_axis=1))


def label_changes_per_1k(labels: np.ndarray, every: int = 1) -> float:
    """Mode-hopping rate: label changes between consecutive labelled steps, `every` steps apart, per 1,000 steps
    per chain."""
    labels = np.asarray(labels)
    changes = (labels[:, 1:] != labels[:, :-1]).sum()
    return float(1000.0 * changes / (labels.shape[0] * max(labels.shape[1] - 1, 1) * every))


# statistics of chain positions ---------------------------------------------------------------------------------

StatisticFn = Callable[[Tensor], Tensor]  # traces or readouts [B, *shape] -> [B, S]


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
class ChainRecording:
    """What one diagnosed run of the chains leaves for plots (kept out of the record)."""

    trace: np.ndarray  # [C, K, S] statistics of the trace at every recorded step
    labels: np.ndarray | None  # [C, R] mode labels, `label_every` steps apart
    label_every: int
    readouts: np.ndarray | None  # [R', *shape] float32: up to MAX_READOUTS_KEPT readouts of chain 0, evenly spaced
    readout_steps: list[int]  # recorded step (1-based) of each kept readout


@dataclass
class ChainDiagnostics:
    n_chains: int
    burn_in: int
    steps: int
    nfe_per_step: int  # network evaluations of one chain step (readouts not included)
    seconds: float  # time of the recorded chain steps (readouts not included), synchronised, burn-in excluded
    names: list[str]
    tau: list[float]
    ess_bulk: list[float]
    ess_tail: list[float]
    rhat: list[float]
    tau_stderr: list[float] = field(default_factory=list)
    nested_rhat: list[float] = field(default_factory=list)
    superchains: int = 0  # number of superchains nested R̂ used (0: none)
    grad_evals_per_step: int = 0
    readout_nfe: int = 0  # evaluations of one readout of one chain
    readout_every: int | None = None  # steps between readouts; None: one readout, at the end
    n_readouts: int = 0  # readouts of each chain during the recorded steps
    readout_seconds: float = 0.0  # time of those readouts
    mode_hops_per_1k: float | None = None
    label_source: str | None = None  # "trace" (every step) or "readouts"
    label_every: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    recording: ChainRecording | None = field(default=None, repr=False, compare=False)

    @property
    def nfe(self) -> int:
        """Chain-step network evaluations of the recorded steps over all chains (readouts excluded)."""
        return self.n_chains * self.steps * self.nfe_per_step

    @property
    def readout_nfe_total(self) -> int:
        """Network evaluations of the readouts over all chains."""
        return self.n_chains * self.n_readouts * self.readout_nfe

    def summary(self) -> dict[str, Any]:
        """Worst statistic: max τ (a lower bound when steps < 50 τ), min ESS, max R̂ and nested R̂; ESS rates from
        the worst bulk ESS, charged to chain steps only."""
        ess = float(np.nanmin(self.ess_bulk))
        tau = np.asarray(self.tau, dtype=np.float64)
        worst = int(np.nanargmax(tau)) if np.isfinite(tau).any() else 0
        reliable = bool(self.steps >= AUTOCORR_TOL * tau[worst])
        nested = [r for r in self.nested_rhat if np.isfinite(r)]
        return {
            "tau": float(tau[worst]), "tau_stderr": self.tau_stderr[worst] if self.tau_stderr else None,
            "tau_lower_bound": not reliable,
            "ess_bulk": ess, "ess_tail": float(np.nanmin(self.ess_tail)), "rhat": float(np.nanmax(self.rhat)),
            "nested_rhat": max(nested) if nested else None,
            "ess_bulk_per_second": ess / self.seconds if self.seconds > 0 else None,
            "ess_bulk_per_1k_nfe": 1000.0 * ess / self.nfe if self.nfe > 0 else None,
            "mode_hops_per_1k_steps": self.mode_hops_per_1k,
            "reliable": reliable,
        }

    def cost(self) -> dict[str, Any]:
        """What the diagnosed chains cost, chain steps and readouts apart."""
        return {"chain_step_nfe": self.nfe, "nfe_per_step": self.nfe_per_step,
                "grad_evals_per_step": self.grad_evals_per_step, "chain_step_seconds": self.seconds,
                "readout_nfe": self.readout_nfe, "readout_every": self.readout_every,
                "readouts_per_chain": self.n_readouts, "readout_nfe_total": self.readout_nfe_total,
                "readout_seconds": self.readout_seconds}

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "recording"}
        return {**d, "cost": self.cost(), "summary": self.summary()}


def _trace_fn(chain) -> Callable[[Any], Tensor]:
    """The chain's `trace`; for a duck-typed chain without one, its readout when that is free."""
    trace = getattr(chain, "trace", None)
    if trace is not None:
        return trace
    if int(getattr(chain, "readout_nfe", 0)):
        raise NotImplementedError(f"{type(chain).__name__} has a paid readout; it must define trace(state)")
    return chain.readout


def _readout_every(chain) -> int | None:
    k = getattr(chain, "readout_every", None)
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{type(chain).__name__}.readout_every must be a positive int or None, got {k!r}")
    return k


def run_chain_diagnostics(chain: Chain, n_chains: int, burn_in: int, steps: int, statistic_fn: StatisticFn,
                          labeler: Callable[[Tensor], Tensor] | None = None, *,
                          generator: torch.Generator, names: list[str] | None = None,
                          chunk: int = 100, superchains: int = SUPERCHAINS) -> ChainDiagnostics:
    """Run `n_chains` parallel chains for `burn_in` + `steps` steps and diagnose the statistics of their traces.

    `statistic_fn` maps traces [B, *shape] to [B, S], at every recorded step (`chunk` steps at a time, B = chunk·C).
    Readouts run only where the chain's protocol pays for them: after every `chain.readout_every`-th recorded step,
    or once after the last one when it is None. `labeler` (optional) maps positions [B, *shape] to integer labels
    [B] for the mode-hopping rate: applied to the readouts when the chain's readout is paid and happens at least
    twice during the chain, else to the trace at every step. `generator` drives the chain (on the chain's device).
    Chain steps and readouts are timed apart (synchronised on CUDA); burn-in, statistics and labels are not.
    """
    device = generator.device
    trace_of = _trace_fn(chain)
    every = _readout_every(chain)
    readout_nfe = int(getattr(chain, "readout_nfe", 0))
    n_readouts = steps // every if every else 1
    kept = set(np.linspace(0, n_readouts - 1, min(n_readouts, MAX_READOUTS_KEPT)).round().astype(int).tolist()) \
        if n_readouts else set()
    label_readouts = labeler is not None and readout_nfe > 0 and every is not None and n_readouts >= 2
    stats, trace_labels, readout_labels, gallery, gallery_steps, buffer = [], [], [], [], [], []
    step_clock, read_clock = IntervalClock(device), IntervalClock(device)

    def flush():
        x = torch.cat(buffer)  # [k·C, *shape], step-major
        k = len(buffer)
        stats.append(torch.as_tensor(statistic_fn(x)).detach().to(torch.float64).cpu().reshape(k, n_chains, -1))
        if labeler is not None and not label_readouts:
            trace_labels.append(torch.as_tensor(labeler(x)).detach().cpu().reshape(k, n_chains))
        buffer.clear()

    def read(state, step: int):
        with read_clock:
            x = chain.readout(state)
        r = step // every - 1 if every else 0  # index of this readout
        if label_readouts:
            readout_labels.append(torch.as_tensor(labeler(x)).detach().cpu().reshape(n_chains))
        if r in kept:
            gallery.append(x[0].detach().float().cpu())
            gallery_steps.append(step)

    with torch.no_grad():
        state = chain.init(n_chains, generator)
        for _ in track(range(burn_in), burn_in, desc="mixing: burn-in"):
            state = chain.step(state, generator)
        for i in track(range(1, steps + 1), steps, desc="mixing: chain"):
            with step_clock:
                state = chain.step(state, generator)
            buffer.append(trace_of(state).detach())
            if len(buffer) == chunk:
                flush()
            if (every and i % every == 0) or (every is None and i == steps):
                read(state, i)
        if buffer:
            flush()
    trace = torch.cat(stats).permute(1, 0, 2).numpy()  # [C, K, S]
    if names is None:
        names = getattr(statistic_fn, "names", None) or [f"s{j}" for j in range(trace.shape[2])]
    if label_readouts:
        labels, label_every, label_source = torch.stack(readout_labels, 1).numpy().astype(np.int64), every, "readouts"
    elif trace_labels:
        labels, label_every, label_source = torch.cat(trace_labels).T.numpy().astype(np.int64), 1, "trace"
    else:
        labels, label_every, label_source = None, 1, None
    per = [ess_rhat(trace[:, :, j]) for j in range(trace.shape[2])]
    tw = [autocorr_time_and_window(trace[:, :, j]) for j in range(trace.shape[2])]
    ids = superchain_ids(n_chains, superchains)
    return ChainDiagnostics(
        n_chains=n_chains, burn_in=burn_in, steps=steps, nfe_per_step=int(getattr(chain, "nfe_per_step", 1)),
        seconds=step_clock.seconds, names=list(names),
        tau=[t for t, _ in tw], tau_stderr=[autocorr_time_stderr(t, m, trace.shape[0] * trace.shape[1])
                                           for t, m in tw],
        ess_bulk=[p["ess_bulk"] for p in per], ess_tail=[p["ess_tail"] for p in per], rhat=[p["rhat"] for p in per],
        nested_rhat=[nested_rhat(trace[:, :, j], superchains) for j in range(trace.shape[2])],
        superchains=0 if ids is None else int(ids.max()) + 1,
        grad_evals_per_step=int(getattr(chain, "grad_evals_per_step", 0)), readout_nfe=readout_nfe,
        readout_every=every, n_readouts=n_readouts, readout_seconds=read_clock.seconds,
        mode_hops_per_1k=label_changes_per_1k(labels, label_every) if labels is not None else None,
        label_source=label_source, label_every=label_every,
        recording=ChainRecording(trace, labels, label_every, torch.stack(gallery).numpy() if gallery else None,
                                 gallery_steps),
    )


# compute per chain step -----------------------------------------------------------------------------------------

def chain_flops(chain: Chain, generator: torch.Generator, n: int = 2) -> dict[str, float | None]:
    """GFLOPs of one chain step and of one readout, per chain: one step (and one readout) of `n` chains counted by
    FlopCounterMode (`throughput.count_flops`), divided by n. Uses `generator` for the chains' start and noise."""
    with torch.no_grad():
        state = chain.init(n, generator)
        state, step = count_flops(lambda: chain.step(state, generator))
        _, read = count_flops(lambda: chain.readout(state)) if int(getattr(chain, "readout_nfe", 0)) else (None, 0)
    return {"gflops_per_chain_step": step / n / 1e9, "gflops_per_readout": read / n / 1e9}


# what the report's plots need -----------------------------------------------------------------------------------

def thin_every(steps: int, max_rows: int = MAX_TRACE_ROWS) -> int:
    """Recorded steps between kept rows so that at most `max_rows` remain."""
    return max(1, math.ceil(steps / max_rows))


def chain_arrays(diag: ChainDiagnostics) -> dict[str, np.ndarray]:
    """The chain.npz arrays (the report reads exactly these):

    trace float32 [C, K', S] (one row every `trace_every` recorded steps, K' ≤ 2,000), trace_every, names [S],
    acf float64 [S, L+1] (chain-averaged autocorrelation of the unthinned trace, L = min(K − 1, 200)), labels int64
    [C, R] with label_every (absent without a labeler), readouts float32 [R', *shape] (up to 64 evenly spaced
    readouts of chain 0, absent when none), readout_every (0: once at the end), nfe_per_step, readout_nfe."""
    rec = diag.recording
    if rec is None:
        raise ValueError("these diagnostics hold no recording (run_chain_diagnostics keeps one)")
    c, k, s = rec.trace.shape
    every = thin_every(k)
    lag = min(k - 1, MAX_ACF_LAG)
    out = {"trace": rec.trace[:, ::every].astype(np.float32), "trace_every": np.int64(every),
           "names": np.asarray(diag.names, dtype=str),
           "acf": np.stack([mean_autocorrelation(rec.trace[:, :, j], lag) for j in range(s)]).astype(np.float64),
           "label_every": np.int64(rec.label_every), "readout_every": np.int64(diag.readout_every or 0),
           "nfe_per_step": np.int64(diag.nfe_per_step), "readout_nfe": np.int64(diag.readout_nfe)}
    if rec.labels is not None:
        out["labels"] = rec.labels.astype(np.int64)
    if rec.readouts is not None:
        out["readouts"] = rec.readouts.astype(np.float32)
    return out


def save_chain_npz(path: Path, diag: ChainDiagnostics) -> None:
    """Write `chain_arrays` to `path` atomically (compressed)."""
    from harness.records import atomic_write

    arrays = chain_arrays(diag)
    atomic_write(Path(path), lambda f: np.savez_compressed(f, **arrays), mode="wb")
