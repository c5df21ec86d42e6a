"""Checks that `validate_suite` runs before any job, so that bad input costs nothing (exit code 2).

What a job will need and can be known without training is checked here: every split the job reads is present and
passes its checksum, and every metric named in ``eval.metrics`` applies to the data set and the method. A metric's
applicability is declared by `Metric.applies_to` (data kinds) and `Metric.requires` (capabilities); see
`known_capabilities` for which capabilities are decided before training and which only after it.
"""

from __future__ import annotations

from harness.datasets import Dataset
from harness.errors import ConfigError
from harness.method import Method
from harness.metrics import Metric

# The splits every job reads: training draws from "train"; the data spec (`Dataset.spec`: sizes, spread) and the
# metrics' reference sets (FID, class KL, NLL of test points) read "test". Both are loaded, and so MD5-checked,
# before the first job starts: a corrupt test file must not surface after training.
SPLITS_READ = ("train", "test")

# what each capability is, for error messages
NEEDS = {
    "target": "an exact target density",
    "score": "the method's score (Method.score_fn)",
    "likelihood": "the method's likelihood (Method.log_likelihood)",
    "chain": "a stationary MCMC chain (Method.chain)",
    "resample": "a sampler of adjustable length (Method.sampler_length)",
}


def check_splits(dataset: Dataset) -> None:
    """Load every split a job reads (`SPLITS_READ`); a missing or corrupt file raises `DataError` naming it."""
    for split in SPLITS_READ:
        dataset.split(split)


def _overrides(method_cls: type[Method], name: str) -> bool:
    return getattr(method_cls, name) is not getattr(Method, name)


def known_capabilities(dataset: Dataset, method_cls: type[Method], method: Method | None) -> set[str]:
    """The capabilities (`harness.metrics.CAPABILITIES`) a job of this method on this data set will have, decided
    before training, without building a model:

    - ``target``: the data set has an exact density (`Dataset.target` is not None);
    - ``score`` / ``likelihood``: the method class overrides `Method.score_fn` / `Method.log_likelihood` (the runner
      offers a likelihood on exactly this test; a score_fn that returns None for some configs is still caught
      after training, as a metric error);
    - ``chain``: the class overrides `Method.chain`. Whether that chain is *stationary* is a property of the chain
      object, which needs the trained model: a method whose chain turns out not to be stationary is reported after
      training, as a metric error;
    - ``resample``: the method, built from its config and the data spec (cheap: no model), declares a
      `sampler_length` (for sde it depends on the sampler); when the method could not be built (`method` None) it
      is assumed present and left to the run.
    """
    have = set()
    if dataset.target is not None:
        have.add("target")
    for cap, attr in (("score", "score_fn"), ("likelihood", "log_likelihood"), ("chain", "chain")):
        if _overrides(method_cls, attr):
            have.add(cap)
    if method is None or method.sampler_length:
        have.add("resample")
    return have


def applies(metric: Metric, kind: str, have: set[str]) -> bool:
    return kind in metric.applies_to and metric.requires <= have


def check_metrics(names: list[str], metrics: list[Metric], dataset: Dataset, method_name: str,
                  have: set[str]) -> None:
    """Refuse a metric named in eval.metrics that cannot apply to this data set and method, naming the metric, the
    data set, what it needs, and the metrics that do apply (`have` from `known_capabilities`)."""
    by_name = {m.name: m for m in metrics}
    for name in names:
        metric = by_name.get(name)
        if metric is None or applies(metric, dataset.kind, have):
            continue
        if dataset.kind not in metric.applies_to:
            kinds = " and ".join(sorted(metric.applies_to))
            why = f"it applies to {kinds} data; {dataset.name!r} is {dataset.kind} data"
        else:
            owner = {"target": f"data set {dataset.name!r}"}
            why = "it needs " + "; ".join(f"{NEEDS.get(c, c)}, which {owner.get(c, f'method {method_name!r}')} "
                                          "does not provide" for c in sorted(metric.requires - have))
        valid = sorted(m.name for m in metrics if applies(m, dataset.kind, have))
        raise ConfigError(
            f"eval.metrics: metric {name!r} does not apply to method {method_name!r} on data set {dataset.name!r} "
            f"({why}). Metrics that apply here: {', '.join(valid) or '(none)'}; or use \"auto\" for all of them "
            f"(per data set: [datasets.{dataset.name}.eval] metrics = [...])"
        )
