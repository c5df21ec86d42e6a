"""The metric contract. Metrics see samples, chains and data; never the method that produced them.

A metric declares its direction (`higher_is_better`), the data kinds it applies to (`applies_to`, a subset of
{"vector", "image"}) and what else it requires (`requires`, a subset of):
- ``chain``: a stationary chain (mixing diagnostics);
- ``target``: an exact target density (toy data);
- ``score`` / ``likelihood``: the method's optional score or likelihood capability;
- ``resample``: drawing fresh samples with the sampler shortened or lengthened (the method declares
  `sampler_length`), for quality as a function of NFE.
`compute(ctx)` returns a `MetricValue`, or a dict of them keyed by full metric name when one computation yields
several numbers (e.g. ``ess_bulk``, ``ess_tail``, ``rhat``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from harness.datasets import Dataset, DataSpec
    from harness.method import Chain

DATA_KINDS = frozenset({"vector", "image"})
CAPABILITIES = frozenset({"chain", "target", "score", "likelihood", "resample"})


@dataclass
class MetricValue:
    """One number for the record. `floor` is the real-vs-real value at the same n where one exists;
    `protocol` is everything that must match for two values to be comparable (extractor, weights hash, n, split).
    `stderr` is the standard error of `value` from the sampling of the evaluation itself (bootstrap over samples
    and reference draws, or the estimator's known variance); None where it is not known. `lower_bound` marks a
    value that is only a bound (an IACT from a chain shorter than 50τ): it is printed as "> value", never ranked."""

    value: float
    higher_is_better: bool | None = None  # None: the metric's declared direction
    floor: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    stderr: float | None = None
    lower_bound: bool = False


@dataclass
class EvalContext:
    """Everything a metric may use. Fields a run cannot provide are None."""

    dataset: Dataset
    spec: DataSpec
    samples: Tensor  # model space, on CPU, [n, *spec.shape]
    nfe: int  # network evaluations per sample
    generator: torch.Generator  # CPU generator seeded from the job seed, for the metric's own randomness
    device: torch.device
    cache_dir: Path
    chain: Chain | None = None
    score_fn: Callable[[Tensor], Tensor] | None = None  # learned score at noise level score_sigma
    score_sigma: float | None = None
    log_likelihood: Callable[[Tensor], Tensor] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # factor -> (n fresh samples in model space on CPU, NFE per sample) from the sampler with its length scaled
    resample: Callable[[float, int], tuple[Tensor, int]] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # [metrics.<name>] from the config
    requested: bool = False  # the metric was named in eval.metrics (not chosen by "auto"): expensive or
    # default-off metrics (fid_inception on CPU) run when requested and skip (return None) under "auto"
    # the run's own folder: a metric may leave files there that the report needs (chain.npz), named in
    # `artifacts` (file name -> what it holds), which the runner copies into the record; None outside a run
    run_dir: Path | None = None
    artifacts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    higher_is_better: bool
    applies_to: frozenset[str]  # data kinds
    compute: Callable[[EvalContext], MetricValue | dict[str, MetricValue]]
    requires: frozenset[str] = frozenset()  # capabilities that must all be present
    options: frozenset[str] | None = None  # the [metrics.<name>] keys it reads; None: not checked
    # checks the values of [metrics.<name>] before any job runs (raises ConfigError naming key, value, what is valid)
    check_options: Callable[[dict[str, Any]], Any] | None = None

    def __post_init__(self):
        if not self.applies_to <= DATA_KINDS or not self.requires <= CAPABILITIES:
            raise ValueError(
                f"metric {self.name!r}: applies_to must be within {sorted(DATA_KINDS)} and requires within "
                f"{sorted(CAPABILITIES)}; got {sorted(self.applies_to)} and {sorted(self.requires)}"
            )

    def applicable(self, ctx: EvalContext) -> bool:
        have = set()
        if ctx.chain is not None and ctx.chain.stationary:
            have.add("chain")
        if ctx.dataset.target is not None:
            have.add("target")
        if ctx.score_fn is not None:
            have.add("score")
        if ctx.log_likelihood is not None:
            have.add("likelihood")
        if ctx.resample is not None:
            have.add("resample")
        return ctx.spec.kind in self.applies_to and self.requires <= have
