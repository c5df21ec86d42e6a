"""The runner: turns jobs into trained models, samples, metrics and run records.

It owns seeds, optimiser, EMA, budget, checkpoints, devices and timing; it never knows a method's formulas.
Everything random is drawn from `torch.Generator`s derived from the job seed, so a CPU run is bit-for-bit
repeatable and a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import records
from harness.backbones import BackboneFactory, count_parameters
from harness.config import Job, Suite
from harness.datasets import Dataset
from harness.errors import ConfigError, UsageError, did_you_mean
from harness.method import Method
from harness.metrics import EvalContext, MetricValue
from harness.metrics import throughput as T
from harness.plugins import PluginHost

CHECKPOINT = "checkpoint.pt"
WARMUP_STEPS_EXCLUDED = 5  # first optimiser steps left out of steps/s (allocator and kernel warm-up)


class Diverged(Exception):
    def __init__(self, step: int, reason: str):
        super().__init__(f"diverged at step {step}: {reason}")
        self.step, self.reason = step, reason


def derive_seed(seed: int, tag: str) -> int:
    """Independent 63-bit seeds per purpose (init, data, sampling, metrics) from one job seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{tag}".encode()).digest()[:8], "little") >> 1


def make_generator(seed: int, tag: str, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, tag))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Module constructors draw from the global RNG: fork it so initialisation is seeded without leaking."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        yield


# components --------------------------------------------------------------------------------------------

@dataclass
class Components:
    dataset: Dataset
    method: Method
    model: nn.Module
    backbone: BackboneFactory


def backbone_options(host: PluginHost, name: str, options: dict[str, dict]) -> tuple[type, dict[str, Any]]:
    """The backbone class and its resolved options (defaults + [backbones.<name>]); unknown keys are errors."""
    cls = host.registries["backbones"].get(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "in_shape", "out_channels", "conditional")]
    opts = dict(options.get(name, {}))
    for key in opts:
        if key not in valid:
            raise ConfigError(did_you_mean(f"option of backbone {name!r} in [backbones.{name}]", key, valid))
    resolved = {p: params[p].default for p in valid if params[p].default is not inspect.Parameter.empty}
    return cls, {**resolved, **opts}


def backbone_factory(host: PluginHost, name: str, dataset: Dataset, options: dict[str, dict]) -> BackboneFactory:
    if name == "auto":
        name = "mlp" if dataset.kind == "vector" else "unet"
    cls, resolved = backbone_options(host, name, options)
    return BackboneFactory(name, cls, dataset.spec.shape, resolved)


_DATASETS: dict[tuple, Dataset] = {}


def load_dataset(host: PluginHost, job: Job) -> Dataset:
    """One loaded instance per (data set, root, download) per process: jobs on one data set share it."""
    cls = host.registries["datasets"].get(job.dataset)
    key = (cls, job.suite.data_root, job.suite.download)
    if key not in _DATASETS:
        _DATASETS[key] = cls(root=job.suite.data_root or None, download=job.suite.download)
    return _DATASETS[key]


def build_components(host: PluginHost, job: Job, device: torch.device) -> Components:
    dataset = load_dataset(host, job)
    method_cls = host.registries["methods"].get(job.method)
    config = method_cls.make_config(job.method_options)
    method = method_cls(config, dataset.spec)
    factory = backbone_factory(host, config.backbone, dataset, job.backbone_options)
    with seeded_init(job.seed):
        model = method.build_model(factory)
    return Components(dataset, method, model.to(device), factory)


def validate_suite(host: PluginHost, suite: Suite) -> None:
    """Check every name and option before anything runs, so a typo costs nothing (exit code 2)."""
    regs = host.registries
    for name in suite.suite.methods:
        regs["methods"].entry(name)
    for name in suite.suite.datasets:
        regs["datasets"].entry(name)
    # a misspelled [methods.<name>] or [datasets.<name>] table must not be silently ignored
    named = (("methods", "method", suite.method_tables), ("datasets", "data set", suite.dataset_tables))
    for kind, noun, tables in named:
        for name in sorted(tables):
            if name not in regs[kind]:
                raise ConfigError(f"{suite.source}: [{kind}.{name}]: " + did_you_mean(noun, name, regs[kind].names()))
    for job in suite.jobs:
        regs["methods"].get(job.method).make_config(job.method_options)
        for bname in job.backbone_options:
            backbone_options(host, bname, job.backbone_options)
        for mname, opts in job.metric_options.items():
            metric = regs["metrics"].get(mname)
            unknown = sorted(set(opts) - set(metric.options)) if metric.options is not None else []
            if unknown:
                raise ConfigError(f"{suite.source}: [metrics.{mname}]: unknown option(s) {unknown}; valid: "
                                  f"{', '.join(sorted(metric.options)) or '(none)'}")
        for mname in job.eval.metrics:
            if mname != "auto":
                regs["metrics"].entry(mname)
    resolve_device(suite.suite.device)
    for job in {j.dataset: j for j in suite.jobs}.values():
        load_dataset(host, job).split("train")  # a missing or corrupt data set is a usage error (DataError)


# training ----------------------------------------------------------------------------------------------

@dataclass
class TrainState:
    model: nn.Module
    ema: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    step: int = 0
    seconds: float = 0.0  # training wall-clock so far (summed over resumed segments)
    timed_steps: int = 0  # steps counted for steps/s (warm-up excluded)
    timed_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "step": self.step, "seconds": self.seconds, "timed_steps": self.timed_steps,
            "timed_seconds": self.timed_seconds, "losses": self.losses,
            "model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.generator.set_state(ckpt["generator"])
        for key in ("step", "seconds", "timed_steps", "timed_seconds", "losses"):
            setattr(self, key, ckpt[key])


def make_train_state(job: Job, model: nn.Module, device: torch.device) -> TrainState:
    t = job.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    warm = max(1, t.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    ema = None
    if t.ema > 0:
        ema = copy.deepcopy(model).requires_grad_(False)
    return TrainState(model, ema, opt, sched, make_generator(job.seed, "train", device))


def save_checkpoint(path: Path, state: TrainState) -> None:
    ckpt = state.checkpoint()
    records.atomic_write(path, lambda f: torch.save(ckpt, f), mode="wb")


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, rate: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1.0 - rate)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


def train(job: Job, comp: Components, state: TrainState, data: torch.Tensor, device: torch.device,
          ckpt_path: Path, progress: bool) -> None:
    """Optimise until the step or seconds budget is spent, checkpointing every N steps and at the end."""
    t = job.train
    total = t.steps if t.steps > 0 else None
    bar = _progress_bar(job, total, state.step, progress)
    model, method = comp.model, comp.method
    model.train()
    try:
        while (total is None or state.step < total) and (t.seconds <= 0 or state.seconds < t.seconds):
            _sync(device)
            t0 = time.perf_counter()
            idx = torch.randint(data.shape[0], (t.batch_size,), generator=state.generator, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16"):
                loss = method.loss(model, data[idx], state.generator).float()
            if loss.dim() != 1 or loss.shape[0] != t.batch_size:
                raise TypeError(f"method {job.method!r}: loss must be per-example with shape [{t.batch_size}], "
                                f"got {tuple(loss.shape)}")
            loss = loss.mean()
            if not torch.isfinite(loss):
                raise Diverged(state.step, f"loss is {loss.item()}")
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            state.optimizer.step()
            state.scheduler.step()
            if state.ema is not None:
                ema_update(state.ema, model, t.ema)
            _sync(device)
            dt = time.perf_counter() - t0
            state.step += 1
            state.seconds += dt
            if state.step > WARMUP_STEPS_EXCLUDED:
                state.timed_steps += 1
                state.timed_seconds += dt
            value = loss.item()
            state.losses.append(value)
            if bar is not None:
                bar.update(1)
                if state.step % 10 == 0:
                    sps = state.timed_steps / state.timed_seconds if state.timed_seconds else float("nan")
                    bar.set_postfix(loss=f"{value:.4g}", steps_s=f"{sps:.1f}")
            if t.checkpoint_every > 0 and state.step % t.checkpoint_every == 0:
                save_checkpoint(ckpt_path, state)
    finally:
        if bar is not None:
            bar.close()
    save_checkpoint(ckpt_path, state)


def _progress_bar(job: Job, total: int | None, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"{job.method}/{job.dataset}/s{job.seed}", unit="step",
                leave=True, dynamic_ncols=True, file=sys.stderr)


# sampling and evaluation -------------------------------------------------------------------------------

def draw_samples(job: Job, comp: Components, model: nn.Module, device: torch.device) -> tuple[torch.Tensor, int, float]:
    """n samples (model space, CPU), NFE per sample, and sampling seconds."""
    g = make_generator(job.seed, "sample", device)
    model.eval()
    _sync(device)
    t0 = time.perf_counter()
    samples, nfe = sample_in_batches(comp.method, model, job.eval.n_samples, job.eval.sample_batch, g)
    _sync(device)
    return samples, nfe, time.perf_counter() - t0


def sample_in_batches(method: Method, model: nn.Module, n: int, batch: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """n samples (model space, float32 on CPU) drawn `batch` at a time, and the NFE per sample."""
    out, nfe, left = [], 0, n
    while left > 0:
        res = method.sample(model, min(left, batch), generator)
        out.append(res.samples.detach().float().cpu())
        nfe, left = res.nfe, left - res.samples.shape[0]
    return torch.cat(out)[:n], nfe


def check_samples(job: Job, samples: torch.Tensor, spec, step: int) -> None:
    """A sample that is not finite, or lies many data ranges away from the data, marks the job diverged (at the
    training step reached, `step`)."""
    if not torch.isfinite(samples).all():
        raise Diverged(step, "samples contain NaN or Inf")
    lo, hi = spec.value_range
    span = hi - lo
    worst = float(samples.abs().max())
    if worst > max(abs(lo), abs(hi)) + job.eval.divergence_factor * span:
        raise Diverged(step, f"sample magnitude {worst:.3g} exceeds {job.eval.divergence_factor} data ranges")


def _resampler(job: Job, comp: Components, model: nn.Module, device: torch.device):
    """factor, n -> (n samples from the sampler run `factor` times as long, NFE per sample), each factor with its
    own generator stream (the same for every method of a suite)."""

    def resample(factor: float, n: int) -> tuple[torch.Tensor, int]:
        scaled = comp.method.with_sampler_scaled(factor)
        return sample_in_batches(scaled, model, n, job.eval.sample_batch,
                                 make_generator(job.seed, f"resample/{factor:g}", device))

    return resample


def evaluate(host: PluginHost, job: Job, comp: Components, model: nn.Module, samples: torch.Tensor, nfe: int,
             device: torch.device, timings: dict[str, float], cache_dir: Path,
             run_dir: Path | None = None, artifacts: dict[str, str] | None = None) -> tuple[dict, dict]:
    """Run the requested (or all applicable) metrics; a failing metric is recorded, not fatal."""
    method = comp.method
    score = method.score_fn(model)
    g_ll = make_generator(job.seed, "likelihood", device)
    probe = method.log_likelihood
    has_ll = type(method).log_likelihood is not Method.log_likelihood

    ctx = EvalContext(
        dataset=comp.dataset, spec=comp.dataset.spec, samples=samples, nfe=nfe,
        generator=make_generator(job.seed, "metrics", torch.device("cpu")), device=device, cache_dir=cache_dir,
        chain=method.chain(model), score_fn=score[0] if score else None, score_sigma=score[1] if score else None,
        log_likelihood=(lambda x: probe(model, x.to(device), g_ll)) if has_ll else None,
        timings=timings, resample=_resampler(job, comp, model, device) if method.sampler_length else None,
        run_dir=run_dir, artifacts=artifacts if artifacts is not None else {},
    )
    wanted = job.eval.metrics
    regs = host.registries["metrics"]
    chosen = [e.obj for e in regs] if "auto" in wanted else [regs.get(n) for n in wanted]
    results, errors = {}, {}
    for metric in chosen:
        if not metric.applicable(ctx):
            if "auto" not in wanted:
                needs = sorted(metric.applies_to) + [f"a {r}" for r in sorted(metric.requires)]
                errors[metric.name] = f"not applicable to this run (needs {', '.join(needs)})"
            continue
        ctx.options = job.metric_options.get(metric.name, {})
        ctx.requested = metric.name in wanted
        # each metric draws from its own stream: its reference samples and floor do not depend on which other
        # metrics ran before it, so every method of a data set is measured against the same references
        ctx.generator = make_generator(job.seed, f"metrics/{metric.name}", torch.device("cpu"))
        try:
            with T.Timer(device) as clock:
                out = metric.compute(ctx)
        except Exception as exc:  # noqa: BLE001 - a metric's failure is data for the record
            errors[metric.name] = f"{type(exc).__name__}: {exc}"
            continue
        if out is None:
            continue
        # seconds per evaluation of each metric (an FID's includes its feature extraction)
        timings.setdefault("metric_seconds", {})[metric.name] = clock.seconds
        items = out.items() if isinstance(out, dict) else [(metric.name, out)]
        for name, mv in items:
            if not isinstance(mv, MetricValue):
                mv = MetricValue(float(mv))
            hib = metric.higher_is_better if mv.higher_is_better is None else mv.higher_is_better
            results[name] = {"value": mv.value, "stderr": mv.stderr, "lower_bound": mv.lower_bound,
                             "higher_is_better": hib, "floor": mv.floor, "protocol": mv.protocol,
                             "details": mv.details}
    return results, errors


def save_samples(run_dir: Path, dataset: Dataset, samples: torch.Tensor) -> dict[str, str]:
    """samples.npz in data space (uint8 images or raw vectors) and samples.png (grid or scatter)."""
    from harness import plots

    data = dataset.to_uint8(samples).numpy() if dataset.kind == "image" else samples.numpy().astype(np.float32)
    records.atomic_write(run_dir / "samples.npz", lambda f: np.savez_compressed(f, samples=data), mode="wb")
    plots.save_samples_png(run_dir / "samples.png", dataset, samples)
    return {"samples_npz": "samples.npz", "samples_png": "samples.png"}


# jobs and suites ---------------------------------------------------------------------------------------

@dataclass
class JobOutcome:
    run_id: str
    status: str
    run_dir: Path
    message: str = ""


def _base_record(host: PluginHost, job: Job, device: torch.device) -> dict[str, Any]:
    dists = {i.name: (f"{i.distribution}=={i.version}" if i.distribution else "builtin")
             for i in host.infos.values() if not i.error}
    return {
        "schema_version": records.SCHEMA_VERSION, "run_id": job.run_id, "method": job.method,
        "dataset": job.dataset, "seed": job.seed, "status": "running", "error": None,
        "config": {"suite": asdict(job.suite), "train": asdict(job.train), "eval": asdict(job.eval),
                   "method": dict(job.method_options), "backbone": {}, "metrics": job.metric_options},
        "budget": {"steps": job.train.steps, "seconds": job.train.seconds},
        "metrics": {}, "metric_errors": {}, "timings": {}, "nfe": None, "params": None, "artifacts": {},
        "versions": records.versions(dists), "git": records.git_state(), "hardware": records.hardware(device),
        "device": str(device), "started_utc": records.utc_now(), "ended_utc": None,
    }


def run_job(host: PluginHost, job: Job, out: Path, *, resume: bool = False, progress: bool = True) -> JobOutcome:
    """Train, sample, evaluate and record one job. Never raises for a job's own failure: it is recorded."""
    device = resolve_device(job.suite.device)
    run_dir = out / "runs" / job.run_id
    record_path = run_dir / "record.json"
    if resume and record_path.exists():
        try:
            prev = records.read_record(record_path)
            if prev["status"] in ("ok", "diverged"):
                return JobOutcome(job.run_id, prev["status"], run_dir, "already complete (resumed: skipped)")
        except records.RecordError:
            pass
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = _base_record(host, job, device)
    records.write_record(run_dir, rec)
    ckpt_path = run_dir / CHECKPOINT
    try:
        comp = build_components(host, job, device)
        rec["config"]["method"] = comp.method.resolved_config()
        rec["config"]["backbone"] = {"name": comp.backbone.name, **comp.backbone.options}
        rec["params"] = count_parameters(comp.model)
        rec["spec"] = asdict(comp.dataset.spec)
        state = make_train_state(job, comp.model, device)
        if resume and ckpt_path.exists():
            state.restore(torch.load(ckpt_path, map_location=device, weights_only=False))
            rec["resumed_from_step"] = state.step
        data = comp.dataset.split("train")[0].to(device)
        T.reset_peak_memory(device)
        train(job, comp, state, data, device, ckpt_path, progress)
        train_peak = T.peak_memory(device)
        rec["artifacts"]["checkpoint"] = CHECKPOINT
        rec["train"] = {"steps": state.step, "final_loss": state.losses[-1] if state.losses else None,
                        "loss_curve": _thin(state.losses, 200)}
        sample_model = state.ema if state.ema is not None else state.model
        T.reset_peak_memory(device)
        samples, nfe, sample_s = draw_samples(job, comp, sample_model, device)
        sample_peak = T.peak_memory(device)
        timings = {
            "train_seconds": state.seconds, "train_steps": state.step,
            "steps_per_second": state.timed_steps / state.timed_seconds if state.timed_seconds else None,
            "examples_per_second": (state.timed_steps * job.train.batch_size / state.timed_seconds
                                    if state.timed_seconds else None),
            "warmup_steps_excluded": WARMUP_STEPS_EXCLUDED,
            "sample_seconds": sample_s, "samples_per_second": samples.shape[0] / sample_s if sample_s else None,
            "nfe_per_sample": nfe, "nfe_per_second": nfe * samples.shape[0] / sample_s if sample_s else None,
            "train_peak_memory_bytes": train_peak["peak_memory_bytes"],
            "sample_peak_memory_bytes": sample_peak["peak_memory_bytes"],
            "peak_memory_kind": train_peak["peak_memory_kind"],
            "timing": "wall clock, device synchronised; the first steps of training are warm-up, excluded from rates",
        }
        rec["timings"], rec["nfe"] = timings, nfe
        rec["artifacts"].update(save_samples(run_dir, comp.dataset, samples))
        check_samples(job, samples, comp.dataset.spec, state.step)
        ctx_artifacts: dict[str, str] = {}
        metrics, errors = evaluate(host, job, comp, sample_model, samples, nfe, device, timings,
                                   out / ".cache", run_dir, ctx_artifacts)
        rec["metrics"], rec["metric_errors"] = metrics, errors
        rec["artifacts"].update(ctx_artifacts)
        rec["status"] = "ok"
    except Diverged as exc:
        rec["status"], rec["error"] = "diverged", {"type": "Diverged", "message": str(exc), "step": exc.step}
    except Exception as exc:  # noqa: BLE001 - one job's failure is recorded; the suite goes on
        rec["status"] = "failed"
        rec["error"] = {"type": type(exc).__name__, "message": str(exc),
                        "traceback": traceback.format_exc(limit=8)}
    except BaseException as exc:  # KeyboardInterrupt: record what happened, then stop
        rec["status"] = "failed"
        rec["error"] = {"type": type(exc).__name__, "message": "interrupted; rerun with --resume"}
        rec["ended_utc"] = records.utc_now()
        records.write_record(run_dir, rec)
        raise
    rec["ended_utc"] = records.utc_now()
    records.write_record(run_dir, rec)
    msg = rec["error"]["message"] if rec["error"] else ""
    return JobOutcome(job.run_id, rec["status"], run_dir, msg)


def _thin(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return [float(v) for v in values]
    idx = np.linspace(0, len(values) - 1, n).round().astype(int)
    return [float(values[i]) for i in idx]


def run_suite(host: PluginHost, suite: Suite, *, out: Path | None = None, resume: bool = False,
              progress: bool = True, log=print) -> list[JobOutcome]:
    validate_suite(host, suite)
    out = Path(out or suite.suite.out)
    outcomes = []
    for i, job in enumerate(suite.jobs, 1):
        log(f"[{i}/{len(suite.jobs)}] {job.method} on {job.dataset} (seed {job.seed}) -> {out / 'runs' / job.run_id}")
        res = run_job(host, job, out, resume=resume, progress=progress)
        line = f"    {res.status}" + (f": {res.message}" if res.message else "")
        log(line)
        outcomes.append(res)
    return outcomes



def run_config(config: str | Path, *, sets: list[str] = (), methods: str | None = None,
               datasets: str | None = None, seeds: str | None = None, device: str | None = None,
               out: str | None = None, resume: bool = False, data_root: str | None = None,
               download: bool = False, plugins_dir: str | None = None, quiet: bool = False, log=print) -> int:
    """`scorebench run`: resolve the config, load plugins, run every job. Exit code 0, or 1 if any job failed."""
    from harness.config import load_toml, resolve_suite
    from harness.plugins import get_plugin_host

    raw = load_toml(config)
    plugins_dir = plugins_dir or raw.get("suite", {}).get("plugins_dir") or None
    host = get_plugin_host(plugins_dir)
    for info in host.failures():
        log(f"warning: plugin {info.name!r} failed to load: {info.error}")

    def split(value: str | None, conv=str):
        if value is None:
            return None
        try:
            return [conv(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"expected a comma-separated list of integers, got {value!r}") from None

    cli = {"methods": split(methods), "datasets": split(datasets), "seeds": split(seeds, int), "device": device,
           "out": out, "data_root": data_root, "download": download or None}
    suite = resolve_suite(raw, str(config), list(sets), cli, host.registries["methods"].names())
    progress = not quiet and sys.stderr.isatty()
    outcomes = run_suite(host, suite, out=Path(suite.suite.out), resume=resume, progress=progress,
                         log=(lambda *a: None) if quiet else log)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "diverged", "failed")}
    log(f"{len(outcomes)} jobs: {counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed; "
        f"records in {Path(suite.suite.out) / 'runs'}")
    return 1 if counts["failed"] else 0
