"""The conformance kit for method plugins: ``check_method(MyMethod)`` from pytest, ``scorebench check-plugin NAME``
from the command line.

What it checks, on a 2-D Gaussian data set (exact density and score) and on tiny 1×8×8 images:

- contract: ``name`` is an identifier, ``Config`` is a dataclass subclass of `MethodConfig` whose defaults build;
- loss: a tensor of shape [B] (one value per example), finite, with finite gradients that reach the parameters;
  the same generator state gives the same loss whatever the global RNG holds (all randomness from the generator);
- sampler: a `SampleResult` of shape [n, *shape] for any n, finite (after the brief training on vectors: within
  the data range up to the runner's divergence rule), NFE an int > 0, identical under an equally seeded generator
  whatever the global RNG holds, no parameter gradients accumulated and no parameters changed; images (an
  untrained model on a tiny U-Net) get the shape, finiteness, NFE, determinism and gradient checks only;
- chain (where the method has one): the `Chain` contract (init/step/readout shapes, ``nfe_per_step``,
  JSON-able ``describe()``, determinism);
- declared capabilities: ``score_fn`` returns (callable, s ≥ 0; s = 0 for an unsmoothed score) whose output,
  after brief training on the Gaussian, approximates the exact score of the Gaussian smoothed at s (relative
  squared error below ``score_tolerance``); ``log_likelihood`` returns [n] finite values that rank typical points
  above far outliers and whose mean on test points is within ``nll_tolerance`` nats of the exact mean log-density;
- a chain marked ``stationary`` leaves its distribution invariant (`check_chain`, below);
- oracle (where the method implements ``oracle(target)``, `harness.method.has_oracle`): on vectors the kit builds
  ``method.oracle(target)`` of its Gaussian and uses it *instead of* the brief training for the sampler-range,
  score, likelihood and stationarity checks; the score check is then held to float tolerance
  (``ORACLE_SCORE_TOLERANCE``) since the oracle's score is exact. Methods without an oracle are trained briefly.

How stationarity is tested, and its power. A chain's state is opaque to the kit, so the exact score can be put
into a method's network only by the method itself (its ``oracle``, used when present). Otherwise the kit trains the
method briefly on the Gaussian
N(μ, s²I) (AdamW with an EMA of the weights, as the runner trains; when the method also declares ``score_fn``,
the score check above confirms the model is close to the oracle), then runs C parallel chains from ``init`` and
compares the readout distribution at successive times t₀ < t₁ < t₂, K = max(250, b/2) steps apart, after a
burn-in b that doubles until the laws at b and 2b agree (and, when the comparison below fails while b is under
``max_burn_in``, everything run so far becomes the burn-in and the comparison is repeated: a slow chain still
relaxing is not mistaken for one that is not invariant):
  1. invariance: per-coordinate means at t₁, t₂ equal those at t₀ within 4 standard errors of a difference
     (4·sd·√(2/C)), and standard deviations within a ratio of 1 ± 4·√(1/C);
  2. anchoring to the known target: the readout mean lies within ``mean_tolerance``·s of μ and the readout
     standard deviation within [``std_range``]·s (wide enough for a Tweedie read-out, which shrinks the spread,
     or a raw noisy state, which inflates it).
This catches chains marked stationary that are annealed (a schedule inside ``step``; the law keeps changing, or
collapses to points), that drift or diverge, or whose readout is not in data space. It does not detect an O(step)
discretisation bias of an unadjusted sampler, nor errors that move the law by less than the tolerances. With the
exact score (as in the kit's own tests, `check_chain` on an oracle Langevin chain) the same function is a tight
test: a Metropolis-adjusted oracle chain passes, and one whose drift uses a wrong variance fails anchoring.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from harness.datasets import Dataset
from harness.method import Chain, Method, MethodConfig, SampleResult, has_oracle
from harness.toy import GaussianMixture

PASS, FAIL, SKIP = "pass", "fail", "skip"
GAUSS_MEAN = (0.5, -0.5)
GAUSS_STD = 0.7
ORACLE_SCORE_TOLERANCE = 1e-6  # relative squared error of an oracle's score (exact up to float32 rounding)
SMALL_BACKBONES = {"mlp": {"width": 64, "depth": 2}, "unet": {"ch": 8, "ch_mult": [1], "num_res_blocks": 1,
                                                              "attention": False}}


# kit data sets -----------------------------------------------------------------------------------------------

class GaussianData(Dataset):
    """2-D isotropic Gaussian N(μ, s²I), μ = (0.5, −0.5), s = 0.7, with exact density and score (kit data)."""

    name = "kit_gauss"
    kind = "vector"
    value_range = (-4.0, 4.0)
    _target = GaussianMixture(torch.tensor([GAUSS_MEAN]), GAUSS_STD)

    @property
    def target(self) -> GaussianMixture:
        return self._target

    def load_split(self, split):
        g = torch.Generator().manual_seed(11 if split == "train" else 12)
        return self._target.sample(2048 if split == "train" else 512, g), None


class TinyImages(Dataset):
    """1×8×8 smooth random images in [−1, 1] (kit data for shape checks only)."""

    name = "kit_images"
    kind = "image"
    num_classes = 2

    def load_split(self, split):
        g = torch.Generator().manual_seed(21 if split == "train" else 22)
        n = 256 if split == "train" else 64
        low = torch.randn(n, 1, 4, 4, generator=g)
        x = torch.tanh(torch.nn.functional.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False))
        return x, (x.mean((1, 2, 3)) > 0).long()


KIT_DATASETS = {"vector": GaussianData, "image": TinyImages}


# report ------------------------------------------------------------------------------------------------------

@dataclass
class CheckResult:
    name: str
    status: str  # pass | fail | skip
    message: str = ""


@dataclass
class ConformanceReport:
    method: str
    results: list[CheckResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    def summary(self) -> str:
        lines = [f"conformance of method {self.method!r}: "
                 f"{sum(r.status == PASS for r in self.results)} passed, {len(self.failures)} failed, "
                 f"{sum(r.status == SKIP for r in self.results)} skipped"]
        for r in self.results:
            lines.append(f"  {r.status.upper():4}  {r.name}" + (f": {r.message}" if r.message else ""))
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        if self.failures:
            raise AssertionError(self.summary())


class _Checks:
    """Collects results; `check(name)` is a context manager that turns AssertionError into a failure."""

    def __init__(self, report: ConformanceReport):
        self.report = report

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.report.results.append(CheckResult(name, FAIL, str(exc) or "assertion failed"))
        except Exception as exc:  # noqa: BLE001 - a crash inside the plugin is a failed check, reported
            self.report.results.append(CheckResult(name, FAIL, f"raised {type(exc).__name__}: {exc}"))
        else:
            self.report.results.append(CheckResult(name, PASS))

    def failed(self, name: str) -> bool:
        return any(r.name == name and r.status == FAIL for r in self.report.results)


def _same(a: Tensor, b: Tensor) -> bool:
    """Bitwise equal, NaNs in the same places counting as equal."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@contextmanager
def _global_rng(seed: int) -> Iterator[None]:
    """Set the global RNG to `seed` inside, and restore the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# chain check (usable on its own, e.g. with an oracle chain) -------------------------------------------------

@dataclass
class ChainCheck:
    ok_invariant: bool
    ok_target: bool
    burn_in: int
    means: list[list[float]]  # per time: per-coordinate mean of the readouts
    stds: list[list[float]]
    messages: list[str]


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.reshape(x.shape[0], -1).double()
    return x.mean(0), x.std(0)


def _agree(m0, s0, m1, s1, n: int) -> list[str]:
    """Disagreements between two readout laws' moments beyond 4 standard errors (see the module docstring)."""
    out = []
    se = s0 * math.sqrt(2.0 / n)
    for j in range(m0.shape[0]):
        if abs(float(m1[j] - m0[j])) > 4 * float(se[j]) + 1e-12:
            out.append(f"mean[{j}] moved {float(m0[j]):.4g} -> {float(m1[j]):.4g} (4 SE = {4 * float(se[j]):.3g})")
        ratio = float(s1[j] / s0[j]) if float(s0[j]) > 0 else math.inf
        tol = 4 * math.sqrt(1.0 / n)
        if not (1 - tol <= ratio <= 1 + tol):
            out.append(f"std[{j}] changed by a factor {ratio:.3f} (allowed 1 ± {tol:.3f})")
    return out


@torch.no_grad()
def check_chain(chain: Chain, mean: Tensor | tuple, std: float, *, n_chains: int = 1024, block: int = 250,
                burn_in: int = 500, max_burn_in: int = 8000, mean_tolerance: float = 0.5,
                std_range: tuple[float, float] = (0.25, 2.0), seed: int = 0) -> ChainCheck:
    """Is `chain` stationary with a readout law close to N(mean, std²I)? See the module docstring for the test.

    Runs `n_chains` chains from ``init``; the burn-in b doubles from `burn_in` until the readout moments at b
    and 2b agree (or `max_burn_in` is reached); then compares the moments at t₀ = b, t₁ = t₀ + K and
    t₂ = t₀ + 2K, K = max(`block`, b/2) (invariance), and checks the moments at t₂ against the target (anchoring).
    """
    g = _gen(seed)
    mu = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    state = chain.init(n_chains, g)
    done, b = 0, burn_in

    def run_to(to: int) -> Tensor:
        nonlocal state, done
        for _ in range(to - done):
            state = chain.step(state, g)
        done = to
        return chain.readout(state)

    def advance(to: int):
        return _moments(run_to(to))

    prev = advance(b)
    while b < max_burn_in:  # converged when the moments at b and 2b agree (relaxation time well below b)
        cur = advance(2 * b)
        b *= 2
        if not _agree(*prev, *cur, n_chains):
            break
        prev = cur
    while True:
        m0, s0 = _moments(chain.readout(state))
        block = max(block, b // 2)  # look as far ahead as the burn-in took: slow annealing shows over long spans
        m1, s1 = advance(b + block)
        x2 = run_to(b + 2 * block)
        m2, s2 = _moments(x2)
        msgs = []
        for label, (m, s) in (("t1", (m1, s1)), ("t2", (m2, s2))):
            msgs += [f"{label} vs t0: {d}" for d in _agree(m0, s0, m, s, n_chains)]
        # a slowly relaxing chain can pass the b-vs-2b test while still drifting: treat everything run so far as
        # burn-in and test again, until the burn-in budget is spent (a chain that is not invariant fails every time)
        if not msgs or done >= max_burn_in:
            break
        b = done
    ok_inv = not msgs
    target_msgs = []
    finite = bool(torch.isfinite(x2).all())
    if not finite:
        target_msgs.append("readouts are not finite")
    else:
        for j in range(mu.shape[0]):
            if abs(float(m2[j] - mu[j])) > mean_tolerance * std:
                target_msgs.append(f"readout mean[{j}] = {float(m2[j]):.4g}, target {float(mu[j]):.4g} "
                                   f"(allowed ± {mean_tolerance * std:.3g})")
            lo, hi = std_range[0] * std, std_range[1] * std
            if not lo <= float(s2[j]) <= hi:
                target_msgs.append(f"readout std[{j}] = {float(s2[j]):.4g}, target {std:.4g} "
                                   f"(allowed {lo:.3g}..{hi:.3g})")
    return ChainCheck(ok_inv, not target_msgs, b, [m0.tolist(), m1.tolist(), m2.tolist()],
                      [s0.tolist(), s1.tolist(), s2.tolist()], msgs + target_msgs)


# the method check --------------------------------------------------------------------------------------------

def default_host():
    from harness.plugins import get_plugin_host

    return get_plugin_host()


def kit_components(method_cls: type[Method], kind: str, config: dict[str, Any] | None = None, host=None,
                   seed: int = 0) -> tuple[Dataset, Method, nn.Module]:
    """The kit's data set of `kind`, the method configured with `config` overrides, and its model on a small
    backbone of the shared registry."""
    from harness.runner import backbone_factory, seeded_init

    dataset = KIT_DATASETS[kind]()
    method = method_cls(method_cls.make_config(config or {}), dataset.spec)
    factory = backbone_factory(host or default_host(), method.config.backbone, dataset, SMALL_BACKBONES)
    with seeded_init(seed):
        model = method.build_model(factory)
    return dataset, method, model


def train_briefly(method: Method, model: nn.Module, data: Tensor, steps: int, seed: int = 0,
                  batch_size: int = 128, lr: float = 2e-3, ema: float = 0.99) -> tuple[nn.Module, list[float]]:
    """AdamW on the per-example loss's mean with an EMA of the weights, as the runner does (no warm-up).
    Returns the EMA model (its parameters still require gradients, so the gradient checks keep their power)
    and the losses."""
    import copy

    from harness.runner import ema_update

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    avg = copy.deepcopy(model)
    g = _gen(seed + 1)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(data.shape[0], (batch_size,), generator=g)
        loss = method.loss(model, data[idx], g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(avg, model, ema)
        losses.append(loss.item())
    avg.zero_grad(set_to_none=True)
    avg.eval()
    return avg, losses


def check_method(method_cls: type[Method], *, config: dict[str, Any] | None = None,
                 kinds: tuple[str, ...] = ("vector", "image"), train_steps: int = 300, n_samples: int = 64,
                 chain_options: dict[str, Any] | None = None, score_tolerance: float = 0.25,
                 nll_tolerance: float = 1.0, host=None, seed: int = 0,
                 raise_on_failure: bool = True) -> ConformanceReport:
    """Run the conformance checks on `method_cls` (see the module docstring); `config` overrides its Config
    (e.g. fewer sampler steps to keep a test fast). Raises AssertionError listing every failure unless
    `raise_on_failure` is False; returns the report."""
    name = getattr(method_cls, "name", getattr(method_cls, "__name__", "?"))
    report = ConformanceReport(str(name))
    c = _Checks(report)
    with c.check("contract"):
        _check_contract(method_cls, config)
    if not c.failed("contract"):
        for kind in kinds:
            _check_kind(c, method_cls, kind, config, train_steps, n_samples, chain_options or {}, score_tolerance,
                        nll_tolerance, host, seed)
    if raise_on_failure:
        report.raise_for_failures()
    return report


def _check_contract(method_cls, config) -> None:
    assert isinstance(method_cls, type) and issubclass(method_cls, Method), \
        f"{method_cls!r} is not a subclass of harness.method.Method"
    name = getattr(method_cls, "name", None)
    assert isinstance(name, str) and name.isidentifier(), f"`name` must be a Python identifier, got {name!r}"
    cfg_cls = method_cls.Config
    assert dataclasses.is_dataclass(cfg_cls) and issubclass(cfg_cls, MethodConfig), \
        "`Config` must be a dataclass subclassing harness.method.MethodConfig"
    method_cls.make_config({})
    method_cls.make_config(config or {})


def _check_kind(c: _Checks, method_cls, kind, config, train_steps, n_samples, chain_options, score_tol, nll_tol,
                host, seed) -> None:
    p = f"{kind}: "
    built = {}
    with c.check(p + "build_model"):
        dataset, method, model = kit_components(method_cls, kind, config, host, seed)
        assert isinstance(model, nn.Module), f"build_model returned {type(model).__name__}, expected an nn.Module"
        assert any(True for _ in model.parameters()), "the model has no parameters to train"
        json.dumps(method.resolved_config(), default=str)
        built.update(dataset=dataset, method=method, model=model)
    if not built:
        return
    dataset, method, model = built["dataset"], built["method"], built["model"]
    data = dataset.split("train")[0]
    batch = data[:8]

    with c.check(p + "loss per example"):
        loss = method.loss(model, batch, _gen(seed))
        assert isinstance(loss, Tensor), f"loss returned {type(loss).__name__}, expected a Tensor"
        assert loss.shape == (8,), f"loss must have shape [B] = [8] (one value per example), got {tuple(loss.shape)}"
        assert loss.is_floating_point(), f"loss dtype {loss.dtype} is not floating point"
    with c.check(p + "loss finite with finite gradients"):
        model.zero_grad(set_to_none=True)
        loss = method.loss(model, batch, _gen(seed))
        assert torch.isfinite(loss).all(), f"loss has non-finite values: {loss.tolist()}"
        loss.mean().backward()
        grads = {n: prm.grad for n, prm in model.named_parameters() if prm.requires_grad}
        bad = [n for n, gr in grads.items() if gr is not None and not torch.isfinite(gr).all()]
        assert not bad, f"non-finite gradients in {bad[:5]}"
        assert any(gr is not None and bool(gr.abs().sum() > 0) for gr in grads.values()), \
            "no parameter receives a gradient from the loss"
        model.zero_grad(set_to_none=True)
    with c.check(p + "loss deterministic under a seed"):
        with _global_rng(1):
            a = method.loss(model, batch, _gen(seed + 5)).detach()
        with _global_rng(2):
            b = method.loss(model, batch, _gen(seed + 5)).detach()
        assert _same(a, b), ("the same generator state gave different losses: the loss draws from the global "
                                   "RNG or is otherwise nondeterministic; draw noise with harness.method.randn(..., "
                                   "generator)")
    oracle = _check_oracle(c, p, method, dataset) if kind == "vector" and has_oracle(method) else None
    if oracle is not None:  # the exact model replaces the brief training
        model, score_tol = oracle, ORACLE_SCORE_TOLERANCE
        c.report.info[p + "model"] = "oracle"
    elif kind == "vector" and train_steps > 0:
        with c.check(p + "brief training stays finite"):
            model, losses = train_briefly(method, model, data, train_steps, seed)
            c.report.info[f"{kind}_loss_first_last"] = (losses[0], sum(losses[-20:]) / len(losses[-20:]))
            assert all(math.isfinite(v) for v in losses), "the training loss became non-finite"
        c.report.info[p + "model"] = "trained briefly"
    model.eval()
    trained = kind == "vector" and (train_steps > 0 or oracle is not None)
    _check_sampler(c, p, method, model, dataset, n_samples if kind == "vector" else 2, seed, trained)
    _check_chain_contract(c, p, method, model, dataset, seed)
    _check_score_fn(c, p, method, model, dataset, score_tol, trained)
    _check_likelihood(c, p, method, model, dataset, nll_tol, trained)
    if kind == "vector":
        _check_stationary(c, p, method, model, chain_options, seed, trained)


def _check_oracle(c, p, method, dataset) -> nn.Module | None:
    """Build ``method.oracle(target)`` of the kit's Gaussian; None (a failed check) when that does not work."""
    built = {}
    with c.check(p + "oracle capability"):
        model = method.oracle(dataset.target)
        assert isinstance(model, nn.Module), f"oracle(target) returned {type(model).__name__}, expected an nn.Module"
        trainable = [n for n, prm in model.named_parameters() if prm.requires_grad]
        assert not trainable, f"an oracle needs no trained parameters, but {trainable[:5]} require gradients"
        built["model"] = model
    return built.get("model")


def _check_sampler(c, p, method, model, dataset, n, seed, trained) -> None:
    from harness.config import EvalConfig

    spec = dataset.spec
    res = {}
    with c.check(p + "sampler output shape"):
        model.zero_grad(set_to_none=True)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with _global_rng(1):
            out = method.sample(model, n, _gen(seed + 7))
        assert isinstance(out, SampleResult), f"sample returned {type(out).__name__}, expected SampleResult"
        assert isinstance(out.samples, Tensor), "SampleResult.samples is not a Tensor"
        assert tuple(out.samples.shape) == (n, *spec.shape), \
            f"sample(n={n}) gave shape {tuple(out.samples.shape)}, expected {(n, *spec.shape)}"
        if spec.kind == "vector":
            odd = method.sample(model, 3, _gen(seed + 8)).samples
            assert tuple(odd.shape) == (3, *spec.shape), f"sample(n=3) gave shape {tuple(odd.shape)}"
        res.update(out=out, before=before)
    if not res:
        return
    out = res["out"]
    with c.check(p + "samples finite" + (" and in range" if trained else "")):
        x = out.samples.detach().float()
        assert torch.isfinite(x).all(), f"{int((~torch.isfinite(x)).sum())} non-finite sample values"
        if trained:  # an untrained model's samples may legitimately lie anywhere
            lo, hi = spec.value_range
            limit = max(abs(lo), abs(hi)) + EvalConfig.divergence_factor * (hi - lo)
            worst = float(x.abs().max())
            assert worst <= limit, f"sample magnitude {worst:.3g} beyond the runner's divergence limit {limit:.3g}"
    with c.check(p + "NFE reported"):
        assert isinstance(out.nfe, int) and not isinstance(out.nfe, bool), \
            f"SampleResult.nfe must be an int, got {type(out.nfe).__name__} {out.nfe!r}"
        assert out.nfe > 0, f"SampleResult.nfe must be > 0 (network evaluations per sample), got {out.nfe}"
    with c.check(p + "sampler deterministic under a seed"):
        with _global_rng(2):
            again = method.sample(model, n, _gen(seed + 7)).samples
        assert _same(out.samples, again), ("equally seeded generators gave different samples: the sampler "
                                                 "draws from the global RNG or is otherwise nondeterministic")
    with c.check(p + "sampling leaves parameters and their gradients alone"):
        grads = [n_ for n_, prm in model.named_parameters() if prm.grad is not None]
        assert not grads, (f"sampling accumulated parameter gradients in {grads[:5]}; take gradients with respect "
                           "to samples only (torch.autograd.grad(..., inputs=x))")
        after = model.state_dict()
        changed = [k for k, v in res["before"].items() if not torch.equal(v, after[k])]
        assert not changed, f"sampling changed model state {changed[:5]}"


def _check_chain_contract(c, p, method, model, dataset, seed) -> None:
    chain = method.chain(model)
    if chain is None:
        c.report.results.append(CheckResult(p + "chain contract", SKIP, "the method has no chain"))
        return
    shape = dataset.spec.shape
    with c.check(p + "chain contract"):
        assert isinstance(chain, Chain), f"chain() returned {type(chain).__name__}, expected a harness.method.Chain"
        assert isinstance(chain.stationary, bool), f"Chain.stationary must be a bool, got {chain.stationary!r}"
        assert isinstance(chain.nfe_per_step, int) and chain.nfe_per_step >= 0, \
            f"Chain.nfe_per_step must be an int >= 0, got {chain.nfe_per_step!r}"
        desc = chain.describe()
        assert isinstance(desc, dict), "Chain.describe() must return a dict"
        json.dumps(desc, default=str)
        g = _gen(seed + 3)
        state = chain.init(5, g)
        x0 = chain.readout(state)
        assert tuple(x0.shape) == (5, *shape), f"readout(init(5)) has shape {tuple(x0.shape)}, expected {(5, *shape)}"
        for _ in range(3):
            state = chain.step(state, g)
        x = chain.readout(state)
        assert tuple(x.shape) == (5, *shape), f"readout after step has shape {tuple(x.shape)}"
        assert torch.isfinite(x).all(), "chain readouts are not finite after 3 steps"
    with c.check(p + "chain deterministic under a seed"):
        outs = []
        for rng in (1, 2):
            with _global_rng(rng):
                g = _gen(seed + 4)
                state = chain.init(5, g)
                for _ in range(3):
                    state = chain.step(state, g)
                outs.append(chain.readout(state))
        assert _same(*outs), "equally seeded generators gave different chain states"


def _check_score_fn(c, p, method, model, dataset, tol, trained) -> None:
    out = method.score_fn(model)
    if out is None:
        c.report.results.append(CheckResult(p + "score_fn capability", SKIP, "the method declares no score_fn"))
        return
    with c.check(p + "score_fn capability"):
        assert isinstance(out, tuple) and len(out) == 2, "score_fn must return (callable, noise level) or None"
        fn, s = out
        assert callable(fn), "score_fn()[0] must be callable"
        assert isinstance(s, int | float) and s >= 0, f"score_fn()[1] (the noise level) must be a float >= 0, got {s!r}"
        x = dataset.split("test")[0][:64]
        with torch.no_grad():
            y = fn(x)
        assert tuple(y.shape) == tuple(x.shape), f"score has shape {tuple(y.shape)}, expected {tuple(x.shape)}"
        assert torch.isfinite(y).all(), "score values are not finite"
        if trained and dataset.target is not None:
            smooth = dataset.target.smoothed(float(s))
            pts = smooth.sample(2048, _gen(33))
            with torch.no_grad():
                got = fn(pts).double()
            exact = smooth.score(pts).double()
            rel = float((got - exact).pow(2).sum(1).mean() / exact.pow(2).sum(1).mean())
            c.report.info[p + "score relative squared error"] = rel
            assert rel < tol, (f"the model's score (oracle, or after brief training) differs from the exact "
                               f"score of the data smoothed at s = {s:.4g} by a relative squared error {rel:.3g} "
                               f"(allowed {tol}); is the declared noise level the one the score is learned at?")


def _check_likelihood(c, p, method, model, dataset, tol, trained) -> None:
    x = dataset.split("test")[0][:32]
    ll = method.log_likelihood(model, x, _gen(5))
    if ll is None:
        c.report.results.append(CheckResult(p + "log_likelihood capability", SKIP,
                                            "the method declares no log_likelihood"))
        return
    with c.check(p + "log_likelihood capability"):
        assert isinstance(ll, Tensor) and tuple(ll.shape) == (32,), \
            f"log_likelihood must return a Tensor [n] = [32], got {getattr(ll, 'shape', ll)!r}"
        assert torch.isfinite(ll).all(), "log-likelihood values are not finite"
        if trained and dataset.target is not None:
            far = x + 6 * GAUSS_STD
            ll_far = method.log_likelihood(model, far, _gen(5))
            assert float(ll.mean()) > float(ll_far.mean()), \
                "typical points are not more likely than points 6 standard deviations away"
            exact = float(dataset.target.log_prob(x).double().mean())
            gap = abs(float(ll.double().mean()) - exact)
            c.report.info[p + "mean log-likelihood gap (nats)"] = gap
            assert gap < tol, f"mean log-likelihood {float(ll.mean()):.4g} vs exact {exact:.4g} nats (allowed ± {tol})"


def _check_stationary(c, p, method, model, options, seed, trained) -> None:
    chain = method.chain(model)
    why = ("no chain marked stationary" if chain is None or not getattr(chain, "stationary", False)
           else None if trained else "needs an oracle or brief training first (train_steps > 0)")
    if why:
        c.report.results.append(CheckResult(p + "stationary chain leaves the target invariant", SKIP, why))
        return
    with c.check(p + "stationary chain leaves the target invariant"):
        res = check_chain(chain, GAUSS_MEAN, GAUSS_STD, seed=seed, **options)
        c.report.info[p + "chain burn-in used"] = res.burn_in
        assert res.ok_invariant and res.ok_target, (
            f"on the Gaussian N({GAUSS_MEAN}, {GAUSS_STD}²I) (oracle or after brief training), burn-in {res.burn_in}: "
            + "; ".join(res.messages))


# the command line --------------------------------------------------------------------------------------------

def check_plugin(name: str, plugins_dir: str | None = None, overrides: dict[str, Any] | None = None,
                 kinds: tuple[str, ...] = ("vector", "image"), train_steps: int = 300,
                 log: Callable[[str], None] = print) -> int:
    """`scorebench check-plugin NAME`: NAME is a method, or a plugin whose methods are all checked. Prints each
    report; returns the exit code (0 when every check passed, 1 otherwise)."""
    from harness.errors import UsageError
    from harness.plugins import get_plugin_host

    unknown = [k for k in kinds if k not in KIT_DATASETS]
    if unknown or not kinds:
        raise UsageError(f"unknown kit data kinds {unknown}; choose from {', '.join(KIT_DATASETS)}")
    host = get_plugin_host(plugins_dir)
    methods = host.registries["methods"]
    if name in methods:
        chosen = [methods.get(name)]
    else:
        chosen = [e.obj for e in methods if e.provider == name]
        if not chosen:
            from harness.errors import did_you_mean

            plugins = sorted(set(host.infos) | set(methods.names()))
            msg = did_you_mean("method or plugin", name, plugins)
            broken = [f"{i.name} ({i.error})" for i in host.failures()]
            raise UsageError(msg + ("; these plugins failed to load: " + "; ".join(broken) if broken else ""))
    code = 0
    for cls in chosen:
        rep = check_method(cls, config=overrides, kinds=kinds, train_steps=train_steps, host=host,
                           raise_on_failure=False)
        log(rep.summary())
        code = code or (0 if rep.ok else 1)
    return code
