"""The runner: turns jobs into trained models, samples, metrics and run records.

It owns seeds, optimiser, EMA, budget, checkpoints, devices and timing; it never knows a method's formulas.
Everything random is drawn from `torch.Generator`s derived from the job seed, so a CPU run is bit-for-bit
repeatable and a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import os
import shlex
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import accel, records
from harness import distributed as D
from harness.backbones import BackboneFactory, count_parameters
from harness.config import Job, Suite
from harness.datasets import Dataset
from harness.errors import ConfigError, UsageError, did_you_mean
from harness.method import Method, has_oracle
from harness.metrics import EvalContext, MetricValue
from harness.metrics import throughput as T
from harness.plugins import PluginHost
from harness.progress import phase

CHECKPOINT = "checkpoint.pt"
WARMUP_STEPS_EXCLUDED = 5  # first optimiser steps left out of steps/s (allocator and kernel warm-up)


class Diverged(Exception):
    def __init__(self, step: int, reason: str):
        super().__init__(f"diverged at step {step}: {reason}")
        self.step, self.reason = step, reason


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job: which job, in which phase, at which step, and the last checkpoint to resume from."""

    def __init__(self, run_id: str, run_dir: Path, phase: str, step: int | None, checkpoint_step: int | None):
        super().__init__(f"{run_id} interrupted during {phase}")
        self.run_id, self.run_dir, self.phase = run_id, run_dir, phase
        self.step, self.checkpoint_step = step, checkpoint_step
        self.outcomes: list[JobOutcome] = []  # the suite's jobs up to and including this one (set by run_suite)


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
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


# threads -----------------------------------------------------------------------------------------------

def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` restrict), not the
    machine's: more intra-op threads than that fight each other and other processes for cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int) -> int:
    """suite.threads / --threads: N > 0 as given; 0 for `available_cores()`, or fewer where torch was already
    set lower (OMP_NUM_THREADS, or a program or test harness that embeds the runner)."""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ConfigError(f"suite.threads = {requested!r}: expected an integer >= 0 (0: the {available_cores()} "
                          "cores this process may use)")
    return requested or min(available_cores(), torch.get_num_threads())


@contextmanager
def using_threads(n: int) -> Iterator[int]:
    """Run the block with `n` intra-op threads in torch and in numpy's BLAS (threadpoolctl, when installed);
    the previous settings come back afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with ExitStack() as stack:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                pass
            else:  # BLAS only: torch's own OpenMP pool is set above (and restored last, below)
                stack.enter_context(threadpool_limits(n, user_api="blas"))
            yield n
    finally:
        torch.set_num_threads(saved)


# packaged configs --------------------------------------------------------------------------------------

def packaged_configs() -> dict[str, Path]:
    """Configs shipped inside the package (harness/configs/*.toml), by name: `scorebench run quick`."""
    from importlib.resources import files

    folder = Path(str(files("harness") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


DEFAULT_CONFIG = "quick"


def find_config(name: str | Path | None) -> Path:
    """The config file for `scorebench run [CONFIG]`: an existing file, else a packaged config by name (no
    argument: `quick`). Anything else is a usage error that lists the packaged names."""
    packaged = packaged_configs()
    if name is None or str(name) == "":
        name = DEFAULT_CONFIG
    path = Path(name)
    if path.is_file():
        return path
    if str(name) in packaged:
        return packaged[str(name)]
    if path.is_dir():
        raise ConfigError(f"config {str(name)!r} is a folder; give a .toml file or a packaged config: "
                          f"{', '.join(packaged)}")
    raise ConfigError(f"config file {str(name)!r} not found, and it is not a packaged config; packaged: "
                      f"{', '.join(packaged) or '(none)'} (e.g. `scorebench run {DEFAULT_CONFIG}`)")


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


def check_oracle_suite(host: PluginHost, suite: Suite) -> None:
    """suite.model = "oracle" runs each method's sampler on its model of the exact target: every method must implement
    `oracle(target)` and every data set must have an exact target (the toy targets); otherwise a ConfigError names
    the ones that do not and those that do."""
    regs = host.registries
    methods = {m: regs["methods"].get(m) for m in suite.suite.methods}
    missing = sorted(m for m, cls in methods.items() if not has_oracle(cls))
    if missing:
        able = sorted(n for n in regs["methods"].names() if has_oracle(regs["methods"].get(n)))
        raise ConfigError(f"{suite.source}: suite.model = \"oracle\" needs Method.oracle(target); method(s) "
                          f"{', '.join(missing)} have none. Methods with an oracle: {', '.join(able) or '(none)'}; "
                          "or set suite.model = \"trained\"")
    no_target = []
    for ds in suite.suite.datasets:
        job = next((j for j in suite.jobs if j.dataset == ds), None)
        if job is not None and load_dataset(host, job).target is None:
            no_target.append(ds)
    if no_target:
        raise ConfigError(f"{suite.source}: suite.model = \"oracle\" needs data sets with an exact target; "
                          f"{', '.join(no_target)} have none (use toy targets such as ring8, grid25, banana)")


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
    if suite.suite.model == "oracle":
        check_oracle_suite(host, suite)
    for job in suite.jobs:
        regs["methods"].get(job.method).make_config(job.method_options)
        D.check_split(job.train.batch_size, job.eval.n_samples, f"{suite.source}: {job.method} on {job.dataset}")
        for bname in job.backbone_options:
            backbone_options(host, bname, job.backbone_options)
        for mname, opts in job.metric_options.items():
            metric = regs["metrics"].get(mname)
            unknown = sorted(set(opts) - set(metric.options)) if metric.options is not None else []
            if unknown:
                raise ConfigError(f"{suite.source}: [metrics.{mname}]: unknown option(s) {unknown}; valid: "
                                  f"{', '.join(sorted(metric.options)) or '(none)'}")
            check_values = getattr(metric, "check_options", None)
            if check_values is not None:  # values too, before anything trains (e.g. fid_* reference = "tran")
                try:
                    check_values(opts)
                except ConfigError as exc:
                    raise ConfigError(f"{suite.source}: {exc}") from None
        for mname in job.eval.metrics:
            if mname != "auto":
                regs["metrics"].entry(mname)
    resolve_device(suite.suite.device)
    from harness import validation as V

    for job in {j.dataset: j for j in suite.jobs}.values():
        V.check_splits(load_dataset(host, job))  # every split a job reads: missing or corrupt is a DataError
    # each method is built from its config and the data spec (no model): its own config errors surface here, and
    # a named metric that cannot apply to the data set or the method is refused (harness.validation)
    metrics = [e.obj for e in regs["metrics"]]
    for job in {(j.method, j.dataset, str(j.method_options), tuple(j.eval.metrics)): j for j in suite.jobs}.values():
        dataset = load_dataset(host, job)
        method_cls = regs["methods"].get(job.method)
        try:
            method = method_cls(method_cls.make_config(job.method_options), dataset.spec)
        except UsageError:
            raise
        except Exception:  # noqa: BLE001 - a plugin's own bug is recorded by its job, not raised here
            method = None
        have = V.known_capabilities(dataset, method_cls, method)
        V.check_metrics([m for m in job.eval.metrics if m != "auto"], metrics, dataset, job.method, have)


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
    checkpoint_step: int | None = None  # step of the last checkpoint written or restored (not saved in it)
    noise: torch.Generator | None = None  # data-parallel runs: this rank's stream for the methods' noise

    @property
    def loss_generator(self) -> torch.Generator:
        """What `method.loss` draws from: the train stream itself in one process (indices and noise, as always),
        this rank's own noise stream in a data-parallel run."""
        return self.generator if self.noise is None else self.noise

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
        self.checkpoint_step = self.step


def make_train_state(job: Job, model: nn.Module, device: torch.device, group: D.Group = D.SINGLE) -> TrainState:
    t = job.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    warm = max(1, t.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    ema = None
    if t.ema > 0:
        ema = copy.deepcopy(model).requires_grad_(False)
    state = TrainState(model, ema, opt, sched, make_generator(job.seed, "train", device))
    if group.distributed:
        state.noise = noise_generator(job.seed, group.rank, 0, device)
    return state


def noise_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """Rank `rank`'s noise stream of a data-parallel run, for the training segment that starts at `step` (0, or
    the step resumed from under a different number of processes)."""
    return make_generator(seed, f"train/rank{rank}/step{step}", device)


def restore_noise(state: TrainState, ckpt: dict[str, Any], seed: int, group: D.Group, device: torch.device) -> str:
    """After `state.restore(ckpt)`: this rank's noise stream continues where it stopped when the checkpoint was
    written by as many processes ("restored"); otherwise it is derived anew from (seed, rank, step) ("derived")."""
    if not group.distributed:
        return "restored"  # one process: the noise is the train stream, restored with the checkpoint
    states = ckpt.get("noise_states")
    if states is not None and ckpt.get("world_size") == group.world_size:
        state.noise.set_state(states[group.rank])
        return "restored"
    state.noise = noise_generator(seed, group.rank, state.step, device)
    return "derived"


def save_checkpoint(path: Path, state: TrainState, group: D.Group = D.SINGLE) -> None:
    """Rank 0 writes the checkpoint; in a data-parallel run it also holds every rank's noise stream (gathered) and
    the number of processes, so that resuming with as many continues exactly."""
    if group.distributed:
        noise_states = group.gather_objects(state.noise.get_state())
    if group.main:
        ckpt = state.checkpoint()
        if group.distributed:
            ckpt["world_size"], ckpt["noise_states"] = group.world_size, noise_states
        records.atomic_write(path, lambda f: torch.save(ckpt, f), mode="wb")
    state.checkpoint_step = state.step


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, rate: float) -> None:
    EMA(ema, model).update(rate)


class EMA:
    """ema ← rate·ema + (1 − rate)·model for every parameter in one batched `_foreach_lerp_` call, buffers copied;
    the tensor lists are built once (walking the modules every step costs as much as the update on small nets)."""

    def __init__(self, ema: nn.Module, model: nn.Module):
        self.ema_p, self.model_p = list(ema.parameters()), list(model.parameters())
        self.ema_b, self.model_b = list(ema.buffers()), list(model.buffers())
        if len(self.ema_p) != len(self.model_p) or len(self.ema_b) != len(self.model_b):
            raise ValueError("EMA copy and model differ in their parameters or buffers")

    @torch.no_grad()
    def update(self, rate: float) -> None:
        if self.ema_p:
            torch._foreach_lerp_(self.ema_p, self.model_p, 1.0 - rate)
        if self.ema_b:
            torch._foreach_copy_(self.ema_b, self.model_b)


def train(job: Job, comp: Components, state: TrainState, data: torch.Tensor, device: torch.device,
          ckpt_path: Path, progress: bool, on_checkpoint=None, execution: dict[str, Any] | None = None,
          group: D.Group = D.SINGLE) -> str:
    """Optimise until the step or seconds budget is spent, checkpointing every N steps and at the end
    (`on_checkpoint(state)` after each checkpoint: the runner refreshes the record). Returns which budget stopped
    training: "steps" or "seconds".

    The loop never waits for the device inside a step: batches are drawn on the device from the device generator,
    the loss and its finiteness stay on the device, and both are read back once per window of `train.log_every`
    steps (and at the end of warm-up, at checkpoints and at the end), which is also the only synchronisation the
    timing needs. A non-finite loss is found in the window read back, reported at the first step where it occurred,
    and no checkpoint is written after it: checkpoints follow a clean read-back, and the weights are checked finite
    before they are saved. The seconds budget is checked against the host clock at every step and settled exactly
    at each read-back. `execution` (the record's entry) receives what `train.compile` actually did.

    Data-parallel (`group` of N > 1 processes): every rank draws the global batch's indices from the shared train
    stream and trains on its slice of train.batch_size / N rows, with its own noise stream; the gradients are
    averaged over ranks after backward (`Group.average_gradients`), so every rank takes the same optimiser step.
    The losses read back are the global batch's means (one all-reduce per window), and the seconds budget is
    decided at read-backs only, by all ranks together (a few steps past it at most: one window)."""
    t = job.train
    per_rank = t.batch_size // group.world_size
    total = t.steps if t.steps > 0 else None
    bar = _progress_bar(job, total, state.step, progress)
    model, method = comp.model, comp.method
    nhwc = bool(execution and execution.get("channels_last", {}).get("used"))
    compiling = bool(execution and execution.get("compile", {}).get("used"))
    model.train()
    window: list[torch.Tensor] = []  # this window's losses, on the device
    params = list(model.parameters())  # once: walking the modules every step costs ~1 ms on a small U-Net
    ema = EMA(state.ema, model) if state.ema is not None else None
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if t.precision == "bf16" else nullcontext
    over_time = [False]  # data-parallel: the seconds budget as all ranks agreed at the last read-back
    _sync(device)
    w0 = time.perf_counter()

    def within_seconds() -> bool:
        if t.seconds <= 0:
            return True
        if group.distributed:
            return not over_time[0]
        return state.seconds + time.perf_counter() - w0 < t.seconds

    def flush(checkpoint: bool = False) -> None:
        """Read the window's losses back (one synchronisation), settle its time, then checkpoint if due."""
        nonlocal w0
        if window:
            values = group.mean(torch.stack(window)).tolist()  # the global batch's mean losses
            dt = time.perf_counter() - w0
            first = state.step - len(window)
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            if bad is not None:
                raise Diverged(first + bad, f"loss is {values[bad]}")
            state.seconds += dt
            if first >= WARMUP_STEPS_EXCLUDED:  # windows end at the warm-up's last step, never straddle it
                state.timed_steps += len(values)
                state.timed_seconds += dt
            state.losses.extend(values)
            window.clear()
            if bar is not None:
                sps = state.timed_steps / state.timed_seconds if state.timed_seconds else float("nan")
                bar.set_postfix(loss=f"{values[-1]:.4g}", steps_s=f"{sps:.1f}")
        if group.distributed and t.seconds > 0:
            over_time[0] = group.any(state.seconds >= t.seconds)
        if checkpoint:
            _check_finite_weights(model, state.step)
            save_checkpoint(ckpt_path, state, group)
            if on_checkpoint is not None:
                on_checkpoint(state)
        _sync(device)
        w0 = time.perf_counter()

    def step() -> None:
        idx = torch.randint(data.shape[0], (t.batch_size,), generator=state.generator, device=device)
        batch = accel.batch_format(data[group.shard(idx)], nhwc)
        with autocast():
            loss = method.loss(model, batch, state.loss_generator).float()
        if loss.dim() != 1 or loss.shape[0] != per_rank:
            raise TypeError(f"method {job.method!r}: loss must be per-example with shape [{per_rank}], "
                            f"got {tuple(loss.shape)}")
        loss = loss.mean()
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        group.average_gradients(params)  # no-op in one process
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        if ema is not None:
            ema.update(t.ema)
        window.append(loss.detach())

    try:
        with accel.tf32(t.tf32):
            while (total is None or state.step < total) and within_seconds():
                if compiling:  # the first compiled step: fall back to eager if torch.compile cannot take it
                    compiling = False
                    _compiled_first_step(step, model, state, execution["compile"])
                else:
                    step()
                state.step += 1
                if bar is not None:
                    bar.update(1)
                due = t.checkpoint_every > 0 and state.step % t.checkpoint_every == 0
                if due or state.step % t.log_every == 0 or state.step == WARMUP_STEPS_EXCLUDED:
                    flush(checkpoint=due)
            flush()
    finally:
        if bar is not None:
            bar.close()
    flush(checkpoint=True)
    return "steps" if total is not None and state.step >= total else "seconds"


def apply_execution_options(job: Job, comp: Components, state: TrainState, device: torch.device) -> dict[str, Any]:
    """Apply train.channels_last and train.compile to the model (and channels_last to its EMA); return the record's
    ``execution`` entry: precision, and for each option what was requested, what is used and why not."""
    t = job.train
    image = comp.dataset.kind == "image"
    nhwc = t.channels_last and image
    if nhwc:
        for m in (state.model, state.ema):
            if m is not None:
                accel.channels_last(m, image)
    compiled = accel.compile_model(state.model) if t.compile else []  # the EMA copy samples eagerly
    cuda = device.type == "cuda"
    return {
        "precision": t.precision,
        "compile": accel.option_entry(t.compile, t.compile, f"torch.compile (inductor) of {len(compiled)} "
                                      "backbone network(s) of the trained model; the EMA weights sample eagerly"
                                      if t.compile else ""),
        "channels_last": accel.option_entry(t.channels_last, nhwc, "" if nhwc or not t.channels_last
                                            else "vector data: no memory format to change"),
        "tf32": accel.option_entry(t.tf32, t.tf32 and cuda, "" if cuda or not t.tf32
                                   else f"TF32 is a CUDA option; no effect on {device.type}"),
        "cuda_graphs": accel.option_entry(job.eval.cuda_graphs, False),
    }


def _compute_precision(job: Job, device: torch.device) -> str:
    """The arithmetic the training matmuls ran in, for the MFU's peak: bf16, tf32 or fp32."""
    if job.train.precision == "bf16":
        return "bf16"
    return "tf32" if job.train.tf32 and device.type == "cuda" else "fp32"


def _check_finite_weights(model: nn.Module, step: int) -> None:
    """Refuse to checkpoint non-finite weights (a gradient can overflow while the loss read back was finite)."""
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(finite):
        raise Diverged(step, "weights became non-finite (checkpoint not written)")


def _compiled_first_step(step, model: nn.Module, state: TrainState, entry: dict[str, Any]) -> None:
    """Run the first step through the compiled model; if compilation fails, restore the generator, drop the
    compiled call and run the step eagerly, recording why (the weights are untouched: the failure comes before the
    optimiser step)."""
    saved = state.generator.get_state()
    saved_noise = state.noise.get_state() if state.noise is not None else None
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - e.g. double backward, which torch.compile does not support
        accel.uncompile_model(model)
        state.optimizer.zero_grad(set_to_none=True)
        state.generator.set_state(saved)
        if saved_noise is not None:
            state.noise.set_state(saved_noise)
        entry["used"] = False
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        entry["note"] = f"torch.compile failed on the first step, trained eagerly: {type(exc).__name__}: {first_line}"
        step()


def _progress_bar(job: Job, total: int | None, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"{job.method}/{job.dataset}/s{job.seed}", unit="step",
                leave=True, dynamic_ncols=True, file=sys.stderr)


# sampling and evaluation -------------------------------------------------------------------------------

def draw_samples(job: Job, comp: Components, model: nn.Module, device: torch.device,
                 group: D.Group = D.SINGLE) -> tuple[torch.Tensor, float, float, dict[str, Any]]:
    """n samples (model space, CPU), NFE per sample (mean over samples), sampling seconds, and the sampler's info
    merged over batches (e.g. walk_jump's protocol; see `merge_sample_info`).

    Data-parallel: rank r draws its share of n (`distributed.share`) from its own stream (seed, "sample/rank{r}");
    every rank gets all n samples, in rank order, the NFE and info merged over ranks, and the seconds of the whole
    (sampling and gathering, as rank 0 sees them)."""
    tag = f"sample/rank{group.rank}" if group.distributed else "sample"
    g = make_generator(job.seed, tag, device)
    model.eval()
    _sync(device)
    t0 = time.perf_counter()
    samples, nfe, info = sample_in_batches(comp.method, model, group.share(job.eval.n_samples),
                                           job.eval.sample_batch, g, with_info=True)
    if group.distributed:
        samples, nfe, info = _gather_samples(group, samples, nfe, info)
    _sync(device)
    return samples, nfe, time.perf_counter() - t0, info


def _gather_samples(group: D.Group, samples: torch.Tensor, nfe: float,
                    info: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Every rank's samples concatenated in rank order, the NFE per sample averaged over all of them, the infos
    merged like batches (`merge_sample_info`), "batches" summed."""
    parts = group.gather_objects((int(samples.shape[0]), nfe, info))
    sizes = [n for n, _, _ in parts]
    mean = sum(n * f for n, f, _ in parts) / sum(sizes)
    merged = merge_sample_info([i for _, _, i in parts], sizes)
    merged["batches"] = sum(i.get("batches", 1) for _, _, i in parts)
    return group.gather_rows(samples), (int(mean) if float(mean).is_integer() else mean), merged


def merge_sample_info(infos: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """One info for several batches: keys named total_* are summed; a value every batch agrees on is kept; other
    numbers become their mean over samples (weighted by batch size), anything else the list of per-batch values.
    "batches" counts the batches."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for info in infos for k in info):
        values = [info.get(key) for info in infos]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if key.startswith("total_") and numeric:
            merged[key] = sum(values)
        elif all(v == values[0] for v in values):
            merged[key] = values[0]
        elif numeric:
            merged[key] = sum(v * b for v, b in zip(values, sizes, strict=True)) / sum(sizes)
        else:
            merged[key] = values
    merged["batches"] = len(infos)
    return merged


def sample_in_batches(method: Method, model: nn.Module, n: int, batch: int, generator: torch.Generator,
                      with_info: bool = False):
    """n samples (model space, float32 on CPU) drawn `batch` at a time, and the NFE per sample: the mean over all
    n samples (a batch's cost is its info["total_nfe"] where the method reports one, else nfe × batch size), an int
    when whole. With `with_info`, also the batches' infos merged (`merge_sample_info`)."""
    out, infos, sizes, total, left = [], [], [], 0, n
    while left > 0:
        res = method.sample(model, min(left, batch), generator)
        out.append(res.samples.detach().float().cpu())
        size = res.samples.shape[0]
        total += res.info.get("total_nfe", res.nfe * size)
        infos.append(res.info)
        sizes.append(size)
        left -= size
    mean = total / sum(sizes)
    nfe = int(mean) if float(mean).is_integer() else mean
    samples = torch.cat(out)[:n]
    return (samples, nfe, merge_sample_info(infos, sizes)) if with_info else (samples, nfe)


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
    from harness.metrics import classifier as domain_classifier

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
        domain_classifier.pop_build_seconds()  # a classifier trained or loaded before this metric is not its cost
        try:
            with phase(f"metric {metric.name}"), T.Timer(device) as clock:
                out = metric.compute(ctx)
        except Exception as exc:  # noqa: BLE001 - a metric's failure is data for the record
            errors[metric.name] = f"{type(exc).__name__}: {exc}"
            continue
        finally:  # training (or loading) the domain classifier is its own timing, not the first metric's
            clf_seconds = domain_classifier.pop_build_seconds()
            if clf_seconds:
                timings["domain_classifier_seconds"] = timings.get("domain_classifier_seconds", 0.0) + clf_seconds
        if out is None:
            continue
        # seconds per evaluation of each metric (an FID's includes its feature extraction, not classifier training)
        timings.setdefault("metric_seconds", {})[metric.name] = max(0.0, clock.seconds - clf_seconds)
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
    seconds: float = 0.0  # wall time of the job in this invocation (0 for a job skipped on --resume)


class RecordWriter:
    """Writes one job's record, stamping `heartbeat_utc` on every write. While the job runs, a daemon thread
    re-writes the last saved state with a fresh heartbeat every `interval` seconds (never an older state: it
    keeps its own copy of what the job last saved), so the record of a job killed with -9 goes stale and
    `records.effective_status` reports it `interrupted`, even during a metric that runs for minutes."""

    def __init__(self, run_dir: Path, interval: float = records.HEARTBEAT_SECONDS):
        self.run_dir, self.interval = Path(run_dir), interval
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def save(self, rec: dict[str, Any]) -> None:
        with self._lock:
            rec["heartbeat_utc"] = records.utc_now()
            self._last = records._jsonable(rec)  # a copy: the job goes on changing `rec`
            records.write_record(self.run_dir, self._last)
        if self._thread is None and rec.get("status") == "running" and self.interval > 0:
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.run_dir.name}", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set() or self._last is None:
                    return
                self._last["heartbeat_utc"] = records.utc_now()
                try:
                    records.write_record(self.run_dir, self._last)
                except OSError:  # a full disk must not kill the job; the next beat tries again
                    pass

    def close(self, rec: dict[str, Any] | None = None) -> None:
        """Stop the heartbeat, then write the final state (`rec`), which no heartbeat can overwrite."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if rec is not None:
            self.save(rec)


def _base_record(host: PluginHost, job: Job, device: torch.device, out: Path | None = None) -> dict[str, Any]:
    dists = {i.name: (f"{i.distribution}=={i.version}" if i.distribution else "builtin")
             for i in host.infos.values() if not i.error}
    hardware = records.hardware(device)
    hardware["threads"] = torch.get_num_threads()  # intra-op threads of this run (--threads / suite.threads)
    return {
        "schema_version": records.SCHEMA_VERSION, "run_id": job.run_id, "method": job.method,
        "dataset": job.dataset, "seed": job.seed, "status": "running", "error": None,
        "config": {"suite": asdict(job.suite), "train": asdict(job.train), "eval": asdict(job.eval),
                   "method": dict(job.method_options), "backbone": {}, "metrics": job.metric_options},
        "budget": {"steps": job.train.steps, "seconds": job.train.seconds},
        "metrics": {}, "metric_errors": {}, "timings": {}, "nfe": None, "params": None, "artifacts": {},
        "versions": records.versions(dists), "git": records.git_state(exclude=out), "hardware": hardware,
        "device": str(device), "threads": hardware["threads"], "started_utc": records.utc_now(), "ended_utc": None,
        # where the job runs and when it last showed life: a `running` record of a killed job is `interrupted`
        "host": records.hostname(), "pid": os.getpid(), "heartbeat_utc": records.utc_now(), "checkpoint_step": None,
    }


@dataclass
class _NoTraining:
    """What the rest of `run_job` reads of a TrainState, for an oracle model that is never trained."""

    model: nn.Module
    ema: nn.Module | None = None
    step: int = 0
    seconds: float = 0.0
    timed_steps: int = 0
    timed_seconds: float = 0.0
    checkpoint_step: int | None = None


def _oracle_setup(job: Job, rec: dict[str, Any], comp: Components,
                  device: torch.device) -> tuple[_NoTraining, dict[str, Any], dict[str, Any]]:
    """suite.model = "oracle": the method's model of the exact target (`method.oracle(dataset.target)`) replaces
    training. The record says so (track "sampler-oracle", model "oracle", no training, no checkpoint); training
    timings are zero."""
    from harness.config import ORACLE_TRACK

    target = comp.dataset.target
    if target is None:
        raise ConfigError(f"suite.model = \"oracle\": data set {job.dataset!r} has no exact target")
    with seeded_init(job.seed):
        model = comp.method.oracle(target)
    model = model.to(device).eval()
    comp.model = model
    rec["track"] = ORACLE_TRACK
    rec["model"] = {"kind": "oracle", "class": type(model).__name__,
                    "what": "the method's own parametrisation built from the exact target (Method.oracle); "
                            "its sample, chain and score_fn run unchanged on it"}
    rec["params"] = count_parameters(model)
    rec["budget"] = {"steps": 0, "seconds": 0.0}
    rec["train"] = {"steps": 0, "seconds": 0.0, "stopped_by": "oracle (no training)", "final_loss": None,
                    "loss_curve": []}
    rec["execution"] = {"precision": "fp32", "compile": accel.option_entry(False, False),
                        "channels_last": accel.option_entry(False, False), "tf32": accel.option_entry(False, False),
                        "cuda_graphs": accel.option_entry(job.eval.cuda_graphs, False)}
    T.reset_peak_memory(device)
    return _NoTraining(model), {}, T.peak_memory(device)


def run_job(host: PluginHost, job: Job, out: Path, *, resume: bool = False, progress: bool = True) -> JobOutcome:
    """Train, sample, evaluate and record one job. Never raises for a job's own failure: it is recorded.

    Started by torchrun with N > 1 processes, every process calls it for the same job: they train data-parallel
    (`train`), share the sampling (`draw_samples`), and rank 0 alone measures, evaluates the metrics and writes the
    record, checkpoint and samples; the other ranks return once the samples are drawn."""
    group = D.current(job.suite.device)  # one process unless started by torchrun
    device = group.device if group.distributed else resolve_device(job.suite.device)
    progress = progress and group.main
    run_dir = out / "runs" / job.run_id
    skip = group.broadcast(_resume_skip(job, run_dir) if resume and group.main else None)  # rank 0 decides
    if skip is not None:
        return skip
    started = time.perf_counter()
    if group.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    rec = _base_record(host, job, device, out)
    rec["distributed"] = group.describe(job.train.batch_size)
    if group.distributed:
        rec["distributed"]["ranks"] = group.gather_objects(
            {"rank": group.rank, "host": records.hostname(), "pid": os.getpid(), "device": str(device)})
    writer = RecordWriter(run_dir) if group.main else _SilentWriter()
    writer.save(rec)
    ckpt_path = run_dir / CHECKPOINT
    state: TrainState | None = None
    current = "setup"

    def checkpointed(st: TrainState) -> None:
        rec["checkpoint_step"] = st.checkpoint_step
        writer.save(rec)

    try:
        comp = build_components(host, job, device)
        rec["config"]["method"] = comp.method.resolved_config()
        rec["config"]["backbone"] = {"name": comp.backbone.name, **comp.backbone.options}
        rec["params"] = count_parameters(comp.model)
        rec["spec"] = asdict(comp.dataset.spec)
        if job.suite.model == "oracle":  # the sampler track: exact scores in the method's parametrisation
            state, train_flops, train_peak = _oracle_setup(job, rec, comp, device)
            execution = rec["execution"]
            writer.save(rec)
            sample_model = state.model
        else:
            state = make_train_state(job, comp.model, device, group)
            ckpt = _load_checkpoint(ckpt_path, device, group) if resume else None
            if ckpt is not None:
                state.restore(ckpt)
                rec["resumed_from_step"] = rec["checkpoint_step"] = state.step
                noise = restore_noise(state, ckpt, job.seed, group, device)
                rec["distributed"]["resumed"] = {"from_world_size": ckpt.get("world_size", 1), "noise": noise}
            del ckpt
            data = comp.dataset.split("train")[0].to(device)  # on the device for the whole run: no host round trip
            # training FLOPs per step: FlopCounterMode on a copy of the eager model, a few examples, scaled to the
            # batch
            train_flops = T.train_flops(comp.method, comp.model, data, job.train.batch_size,
                                        make_generator(job.seed, "flops/train", device))
            rec["execution"] = execution = apply_execution_options(job, comp, state, device)
            writer.save(rec)
            T.reset_peak_memory(device)
            current = "training"
            with phase("training"):
                stopped_by = train(job, comp, state, data, device, ckpt_path, progress, on_checkpoint=checkpointed,
                                   execution=execution, group=group)
            train_peak = T.peak_memory(device)
            rec["artifacts"]["checkpoint"] = CHECKPOINT
            rec["train"] = {"steps": state.step, "seconds": state.seconds, "stopped_by": stopped_by,
                            "final_loss": state.losses[-1] if state.losses else None,
                            "loss_curve": _thin(state.losses, 200)}
            writer.save(rec)
            sample_model = state.ema if state.ema is not None else state.model
        T.reset_peak_memory(device)
        current = "sampling"
        with phase(f"sampling {job.eval.n_samples}"), \
                accel.cuda_graph_sampling(sample_model, job.eval.cuda_graphs, device) as graphs:
            samples, nfe, sample_s, rec["sampling"] = draw_samples(job, comp, sample_model, device, group)
        execution["cuda_graphs"] = graphs
        if not group.main:  # rank 0 measures, saves and evaluates; this rank has trained and drawn its share
            check_samples(job, samples, comp.dataset.spec, state.step)
            return JobOutcome(job.run_id, "ok", run_dir, f"rank {group.rank} of {group.world_size}: trained and "
                              "sampled; rank 0 records", time.perf_counter() - started)
        sample_peak = T.peak_memory(device)
        timings = {
            "train_seconds": state.seconds, "train_steps": state.step,
            "steps_per_second": state.timed_steps / state.timed_seconds if state.timed_seconds else None,
            "examples_per_second": (state.timed_steps * job.train.batch_size / state.timed_seconds
                                    if state.timed_seconds else None),
            "warmup_steps_excluded": WARMUP_STEPS_EXCLUDED,
            "sample_seconds": sample_s, "samples_per_second": samples.shape[0] / sample_s if sample_s else None,
            "nfe_per_sample": nfe, "nfe_per_second": nfe * samples.shape[0] / sample_s if sample_s else None,
            # evaluations that differentiate the network w.r.t. its input (energy models), beside NFE
            "grad_evals_per_sample": rec["sampling"].get("grad_evals", 0),
            "train_peak_memory_bytes": train_peak["peak_memory_bytes"],
            "sample_peak_memory_bytes": sample_peak["peak_memory_bytes"],
            "peak_memory_kind": train_peak["peak_memory_kind"],
            "timing": "wall clock, device synchronised; the first steps of training are warm-up, excluded from rates",
        }
        # sampling GFLOPs per sample (FlopCounterMode on 2 samples of the shortened sampler, scaled), own stream
        timings.update(T.sample_flops(comp.method, sample_model, make_generator(job.seed, "flops", device), nfe))
        timings.update(train_flops)
        timings.update(T.training_compute(train_flops.get("train_gflops_per_step"), state.step,
                                          timings["steps_per_second"], device, _compute_precision(job, device)))
        if group.distributed and timings.get("mfu") is not None:  # the FLOP/s of N devices over N peaks
            timings["mfu"] /= group.world_size
            timings["mfu_peak"]["devices"] = group.world_size
        rec["timings"], rec["nfe"] = timings, nfe
        with phase("saving samples"):
            rec["artifacts"].update(save_samples(run_dir, comp.dataset, samples))
        writer.save(rec)
        check_samples(job, samples, comp.dataset.spec, state.step)
        current = "metrics"
        ctx_artifacts: dict[str, str] = {}
        with accel.cuda_graph_sampling(sample_model, job.eval.cuda_graphs, device) as graphs:  # the chains too
            metrics, errors = evaluate(host, job, comp, sample_model, samples, nfe, device, timings,
                                       out / ".cache", run_dir, ctx_artifacts)
        for key in ("graphs", "replays"):
            execution["cuda_graphs"][key] = execution["cuda_graphs"].get(key, 0) + graphs.get(key, 0)
        rec["metrics"], rec["metric_errors"] = metrics, errors
        rec["artifacts"].update(ctx_artifacts)
        rec["status"] = "ok"
    except Diverged as exc:
        rec["status"], rec["error"] = "diverged", {"type": "Diverged", "message": str(exc), "step": exc.step}
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one job's failure (a plugin's sys.exit included) is
        # recorded; the suite goes on
        rec["status"] = "failed"
        rec["error"] = {"type": type(exc).__name__, "message": str(exc),
                        "traceback": traceback.format_exc(limit=8)}
    except KeyboardInterrupt as exc:  # Ctrl-C: record where it stopped, then stop the suite
        step = state.step if state is not None else None
        ckpt_step = state.checkpoint_step if state is not None else None
        rec["status"] = "interrupted"
        rec["checkpoint_step"] = ckpt_step
        where = f"during {current}" + (f" at step {step}" if step is not None else "")
        saved = f"last checkpoint at step {ckpt_step}" if ckpt_step is not None else "no checkpoint yet"
        rec["error"] = {"type": "KeyboardInterrupt", "message": f"interrupted {where}; {saved}; rerun with --resume",
                        "phase": current, "step": step, "checkpoint_step": ckpt_step}
        rec["ended_utc"] = records.utc_now()
        writer.close(rec)
        raise Interrupted(job.run_id, run_dir, current, step, ckpt_step) from exc
    except BaseException as exc:  # anything else (GeneratorExit and the like): record it, then let it through
        rec["status"] = "failed"
        rec["error"] = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
        rec["ended_utc"] = records.utc_now()
        writer.close(rec)
        raise
    rec["ended_utc"] = records.utc_now()
    writer.close(rec)
    msg = rec["error"]["message"] if rec["error"] else ""
    if group.distributed and rec["status"] == "failed":
        # the other ranks may be waiting in a collective this rank will never join: stop the whole group
        # (torchrun ends the other processes); rank 0 has recorded the job failed
        raise RuntimeError(f"job {job.run_id} failed on rank {group.rank} of a data-parallel run: {msg}")
    return JobOutcome(job.run_id, rec["status"], run_dir, msg, time.perf_counter() - started)


def _resume_skip(job: Job, run_dir: Path) -> JobOutcome | None:
    """--resume: the outcome of a job that needs no run (complete, or running in another live process), else None."""
    record_path = run_dir / "record.json"
    if not record_path.exists():
        return None
    try:
        prev = records.read_record(record_path)
    except records.RecordError:
        return None
    if prev["status"] in ("ok", "diverged"):
        return JobOutcome(job.run_id, prev["status"], run_dir, "already complete (resumed: skipped)")
    if _live_elsewhere(prev):
        return JobOutcome(job.run_id, "running", run_dir,
                          f"still running as pid {prev.get('pid')} on {prev.get('host')} (not started again)")
    return None


def _load_checkpoint(path: Path, device: torch.device, group: D.Group) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None. Data-parallel: rank 0 reads it (on the CPU) and sends it to every
    rank, so the other ranks need not see the results folder."""
    if not group.distributed:
        return torch.load(path, map_location=device, weights_only=False) if path.exists() else None
    ckpt = torch.load(path, map_location="cpu", weights_only=False) if group.main and path.exists() else None
    return group.broadcast(ckpt)


class _SilentWriter:
    """The record writer of ranks other than 0 in a data-parallel job: same calls, nothing written."""

    def save(self, rec: dict[str, Any]) -> None:
        pass

    def close(self, rec: dict[str, Any] | None = None) -> None:
        pass


def _live_elsewhere(rec: dict[str, Any]) -> bool:
    """A `running` record of another live process (a concurrent run into the same folder): not to be resumed."""
    if records.effective_status(rec) != "running":
        return False
    return not (rec.get("host") == records.hostname() and rec.get("pid") == os.getpid())


def _thin(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return [float(v) for v in values]
    idx = np.linspace(0, len(values) - 1, n).round().astype(int)
    return [float(values[i]) for i in idx]


def run_suite(host: PluginHost, suite: Suite, *, out: Path | None = None, resume: bool = False,
              progress: bool = True, log=print, executor=None) -> list[JobOutcome]:
    """Run every job of `suite` through `executor` (`harness.executors`; None: the local executor, the jobs one
    after another in this process with `suite.threads` intra-op threads). With `progress`, every phase of every
    job shows (bars for step loops, a line with the seconds of each phase and metric) unless the caller already
    turned progress on (then its settings, e.g. its log, stay); the Ray executor shows one bar over the jobs.
    Ctrl-C raises `Interrupted` carrying the outcomes so far."""
    from harness.executors import LocalExecutor

    resolve_threads(suite.suite.threads)
    validate_suite(host, suite)
    out = Path(out or suite.suite.out)
    return (executor or LocalExecutor()).run(host, suite, out, resume=resume, progress=progress, log=log)


def summary_table(outcomes: list[JobOutcome]) -> str:
    """One line per job: run id, status and wall time in this invocation (skipped jobs: 0 s)."""
    width = max([len(o.run_id) for o in outcomes] + [3])
    lines = [f"{'job':<{width}}  {'status':<11}  {'seconds':>8}"]
    lines += [f"{o.run_id:<{width}}  {o.status:<11}  {o.seconds:>8.1f}" for o in outcomes]
    lines.append(f"{'total':<{width}}  {'':<11}  {sum(o.seconds for o in outcomes):>8.1f}")
    return "\n".join(lines)


def resume_command(config: str | Path | None, *, sets=(), methods=None, datasets=None, seeds=None, device=None,
                   out=None, data_root=None, download=False, plugins_dir=None, threads=None, extra=()) -> str:
    """The `scorebench run ... --resume` line that continues a run with the same config, overrides and folder
    (`extra`: further arguments as given, e.g. the executor's)."""
    args = ["scorebench", "run"] + ([str(config)] if config not in (None, "") else [])
    for item in sets:
        args += ["--set", item]
    for flag, value in (("--methods", methods), ("--datasets", datasets), ("--seeds", seeds),
                        ("--device", device), ("--threads", threads), ("--data-root", data_root),
                        ("--plugins-dir", plugins_dir), ("--out", out)):
        if value not in (None, ""):
            args += [flag, str(value)]
    if download:
        args.append("--download")
    return shlex.join(args + [str(a) for a in extra] + ["--resume"])



def run_config(config: str | Path | None, *, sets: list[str] = (), methods: str | None = None,
               datasets: str | None = None, seeds: str | None = None, device: str | None = None,
               out: str | None = None, resume: bool = False, data_root: str | None = None,
               download: bool = False, plugins_dir: str | None = None, quiet: bool = False,
               threads: int | None = None, log=print, err_log=None, executor: str = "local",
               address: str | None = None, gpus_per_job: float | None = None, cpus_per_job: float | None = None,
               max_retries: int | None = None) -> int:
    """`scorebench run`: resolve the config (a file, or a packaged config by name; none: `quick`), load plugins,
    run every job through the executor (`local`, or `ray` with its options: `harness.executors.make_executor`),
    print a summary. Exit code 0, 1 if any job failed, 130 on Ctrl-C (with the job interrupted, its last
    checkpoint and the command that resumes it)."""
    from harness.config import load_toml, resolve_suite
    from harness.executors import make_executor
    from harness.plugins import get_plugin_host

    err_log = err_log or log
    job_executor = make_executor(executor, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                           max_retries=max_retries)  # before anything loads: Ray missing is a usage error
    executor_args = [] if executor == "local" else ["--executor", executor]
    for flag, value in (("--address", address), ("--gpus-per-job", gpus_per_job),
                        ("--cpus-per-job", cpus_per_job), ("--max-retries", max_retries)):
        if value is not None:
            executor_args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    path = find_config(config)
    raw = load_toml(path)
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
           "out": out, "data_root": data_root, "download": download or None, "threads": threads}
    suite = resolve_suite(raw, str(path), list(sets), cli, host.registries["methods"].names())
    progress = not quiet and sys.stderr.isatty()
    job_log = (lambda *a: None) if quiet else log
    results = Path(suite.suite.out)
    try:
        outcomes = run_suite(host, suite, out=results, resume=resume, progress=progress, log=job_log,
                             executor=job_executor)
    except Interrupted as exc:
        if not quiet:
            log(summary_table(exc.outcomes))
        saved = (f"last checkpoint at step {exc.checkpoint_step} ({exc.run_dir / CHECKPOINT})"
                 if exc.checkpoint_step is not None else "no checkpoint yet (it restarts from step 0)")
        at = f" at step {exc.step}" if exc.step is not None else ""
        unfinished = [o.run_id for o in exc.outcomes if o.status == "interrupted"]
        if len(unfinished) > 1:  # several jobs ran at once (an executor such as ray)
            err_log(f"Interrupted: {len(unfinished)} unfinished jobs recorded as interrupted "
                    f"({', '.join(unfinished)}). Finished jobs are kept.")
        else:
            err_log(f"Interrupted: job {exc.run_id} during {exc.phase}{at}; {saved}. Finished jobs are kept.")
        err_log("Continue with:\n  " + resume_command(
            config, sets=sets, methods=methods, datasets=datasets, seeds=seeds, device=device, out=str(results),
            data_root=data_root, download=download, plugins_dir=plugins_dir, threads=threads, extra=executor_args))
        return 130
    except KeyboardInterrupt:  # between jobs or before the first one started: nothing half-done to name
        err_log("Interrupted before a job was running. Finished jobs are kept. Continue with:\n  " + resume_command(
            config, sets=sets, methods=methods, datasets=datasets, seeds=seeds, device=device, out=str(results),
            data_root=data_root, download=download, plugins_dir=plugins_dir, threads=threads, extra=executor_args))
        return 130
    if not quiet:
        log(summary_table(outcomes))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "diverged", "failed")}
    log(f"{len(outcomes)} jobs: {counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed; "
        f"records in {results / 'runs'}")
    return 1 if counts["failed"] else 0
