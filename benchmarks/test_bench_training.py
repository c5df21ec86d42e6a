"""Training speed, each case against a baseline in its own group (ratios in the same run, issue 11):

1. the runner's training loop (`harness.runner.train`) against a bare PyTorch loop of the same method, model, AdamW,
   gradient clipping, warm-up schedule, EMA and batch sampling: the quick suite's digits and ring8 jobs, whole
   trainings from the same fresh state (goal: runner steps/s ÷ bare steps/s ≥ 0.97, on CPU and on CUDA);
2. `torch.compile` (as `train.compile` applies it) against eager, and bf16 autocast against fp32, for one training
   step of each built-in method on the CIFAR-10 U-Net of configs/cifar10.toml;
3. training MFU with compile and bf16 on the CIFAR-10 U-Net (CUDA only; goal on an H100/H200: ≥ 40%).

    cpu pytest benchmarks/test_bench_training.py --benchmark-enable \
        --benchmark-json=results/benchmarks/cpu-2core-issue11-training-<date>.json -q

Each group's baseline case carries ``extra_info["baseline"] = True``; benchmarks/conftest.py writes every other
case's speed ratio (baseline median time ÷ case median time, with the interval q1_base/q3_case .. q3_base/q1_case)
into the JSON under "ratios" and prints them. Speed is measured, never asserted; what is asserted is that the bare
loop does the same arithmetic as the runner. The CPU run takes ~3 min with a warm inductor cache and ~7 min cold
(torch.compile of the CIFAR-10 U-Net: 45-90 s per graph on one core).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from harness import accel
from harness.backbones import BackboneFactory
from harness.config import load_toml, resolve_suite
from harness.datasets import DataSpec
from harness.metrics import throughput as T
from harness.plugins import get_plugin_host
from harness.runner import (
    apply_execution_options,
    backbone_options,
    build_components,
    load_dataset,
    make_generator,
    make_train_state,
    train,
)

REPO = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA case: no CUDA device here")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def _host():
    return get_plugin_host()


# 1. the runner's loop against a bare loop ---------------------------------------------------------------------

# (method, data set, rounds): the quick suite's jobs as configs/quick.toml runs them (small U-Net on the 8x8 digits,
# 150 steps at batch 64; residual MLP on ring8, 400 steps at batch 128), log_every at its default, checkpoint_every
# = 0 (the one checkpoint at the end only)
LOOP_CASES = {
    "dsm-digits": ("dsm", "digits", 5),
    "walk_jump-digits": ("walk_jump", "digits", 5),
    "dsm-ring8": ("dsm", "ring8", 7),
}
# runner and bare loop of a case run back to back (load on a shared machine drifts between tests far apart)
LOOP_PARAMS = [pytest.param(case, device, loop, id=f"{case}-{device}-{loop}",
                            marks=[needs_cuda] if device == "cuda" else [])
               for device in ("cpu", "cuda") for case in LOOP_CASES for loop in ("runner", "bare")]


def _loop_job(case: str, device: str, steps: int | None = None):
    method, dataset, _ = LOOP_CASES[case]
    host = _host()
    raw = load_toml(REPO / "configs" / "quick.toml")
    sets = ["train.checkpoint_every=0"] + ([f"train.steps={steps}"] if steps else [])
    cli = {"methods": [method], "datasets": [dataset], "device": device}
    (job,) = resolve_suite(raw, "configs/quick.toml", sets, cli, all_methods=host.registries["methods"].names()).jobs
    return host, job


def _fresh(host, job, device: torch.device):
    """Components, the runner's train state and the training data on the device, exactly as `run_job` makes them
    (seeded initialisation, the train generator)."""
    comp = build_components(host, job, device)
    state = make_train_state(job, comp.model, device)
    data = load_dataset(host, job).split("train")[0].to(device)
    return comp, state, data


def bare_loop(job, comp, data: torch.Tensor, device: torch.device) -> tuple[list[float], list[torch.Tensor]]:
    """The baseline: a plain PyTorch loop doing what `train` does, written as one would by hand: AdamW with the
    job's lr/betas/weight decay, linear warm-up, the method's loss on a batch drawn on the device, global-norm
    clipping, EMA by lerp. Losses stay on the device and are read back once, at the end. Returns the losses and
    the EMA weights."""
    t, model, method = job.train, comp.model, comp.method
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    warm = max(1, t.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    g = make_generator(job.seed, "train", device)
    losses = []
    model.train()
    for _ in range(t.steps):
        batch = data[torch.randint(data.shape[0], (t.batch_size,), generator=g, device=device)]
        loss = method.loss(model, batch, g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - t.ema)
        losses.append(loss.detach())
    return torch.stack(losses).tolist(), ema  # one read-back (and the only synchronisation)


@pytest.mark.parametrize(("case", "device", "loop"), LOOP_PARAMS)
def test_training_loop(benchmark, case, device, loop, tmp_path):
    """One round = the case's whole training from a fresh state (components built as `run_job` builds them, before
    the round, untimed). "runner": `harness.runner.train` after `apply_execution_options` at its defaults, the
    checkpoint written at the end timed with it, as a run pays it. "bare": `bare_loop`, the group's baseline, first
    checked on 12 steps to compute what the runner computes (the same losses and EMA weights from the same seed)."""
    dev, ckpt = torch.device(device), tmp_path / "checkpoint.pt"
    host, job = _loop_job(case, device)
    if loop == "bare":
        _, short = _loop_job(case, device, steps=12)
        comp, state, data = _fresh(host, short, dev)
        train(short, comp, state, data, dev, ckpt, progress=False)
        losses, ema = bare_loop(short, _fresh(host, short, dev)[0], data, dev)
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(state.losses))
        torch.testing.assert_close(ema, list(state.ema.parameters()))

    def setup():
        comp, state, data = _fresh(host, job, dev)
        if loop == "bare":
            return (job, comp, data, dev), {}
        execution = apply_execution_options(job, comp, state, dev)
        return (job, comp, state, data, dev, ckpt), {"progress": False, "execution": execution}

    benchmark.group = f"train-loop-{case}-{device}-{job.train.steps}steps"
    benchmark.extra_info.update(steps_per_round=job.train.steps, batch_size=job.train.batch_size,
                                log_every=job.train.log_every, baseline=loop == "bare",
                                unit="one round = the whole training of the job from a fresh state")
    benchmark.pedantic(bare_loop if loop == "bare" else train, setup=setup, rounds=LOOP_CASES[case][2],
                       warmup_rounds=1, iterations=1)


# 2. torch.compile against eager, bf16 against fp32: one training step on the CIFAR-10 U-Net ------------------

METHODS = ["dsm", "walk_jump", "ssm", "mdsm", "sde"]
# configs/cifar10.toml's [backbones.unet] when it is there; else the stand-in, named in extra_info
FALLBACK_UNET = {"ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attention": True}
# CIFAR-10 in model space, for the methods' data-dependent defaults only (speed does not depend on them): 3x32x32 in
# [-1, 1]; the pixel std of CIFAR-10's training split is about 0.25 on [0, 1], 0.5 on [-1, 1]; the largest pairwise
# distance only sets the VE SDE's σ_max, which the cifar10 config derives from the data (a stand-in value here)
CIFAR10 = DataSpec("cifar10", "image", (3, 32, 32), (-1.0, 1.0), 10, 50000, 10000, 100.0, 0.5)
BATCH = {"cpu": 4, "cuda": 128}  # CPU: a small batch so that every case stays within seconds per step
STEPS_PER_ROUND = {"cpu": 1, "cuda": 10}  # CUDA: several asynchronous steps, one synchronisation per round


def cifar10_setup() -> tuple[dict, dict, str]:
    """(U-Net options, [methods.*] tables, where they came from)."""
    path = REPO / "configs" / "cifar10.toml"
    if path.exists():
        raw = load_toml(path)
        return raw["backbones"]["unet"], raw.get("methods", {}), str(path.relative_to(REPO))
    return FALLBACK_UNET, {}, "stand-in (configs/cifar10.toml absent): " + str(FALLBACK_UNET)


def cifar10_method_and_model(method_name: str, device: torch.device):
    """The method with its configs/cifar10.toml table, its model on the suite's U-Net (seeded), and the source of
    the U-Net options."""
    host = _host()
    unet, tables, source = cifar10_setup()
    cls = host.registries["methods"].get(method_name)
    method = cls(cls.make_config(tables.get(method_name, {})), CIFAR10)
    bcls, opts = backbone_options(host, "unet", {"unet": unet})
    torch.manual_seed(0)  # benchmarks only: module init draws from the global RNG
    model = method.build_model(BackboneFactory("unet", bcls, CIFAR10.shape, opts)).to(device)
    return method, model, source


def _cifar_parts(method_name: str, device: torch.device, batch: int):
    """Method (its cifar10 config table), model (seeded), optimiser, EMA copy, a fixed batch, a generator."""
    method, model, source = cifar10_method_and_model(method_name, device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    ema = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator(device).manual_seed(1)
    x = torch.rand(batch, *CIFAR10.shape, generator=g, device=device) * 2 - 1
    return method, model, opt, ema, x, g, source


def make_step(method, model, opt, ema, x, g, bf16: bool, steps: int, device: torch.device):
    """`steps` training steps as the runner takes them (loss under autocast when bf16, backward, clipping at 1,
    AdamW, EMA), then one synchronisation."""
    params = list(model.parameters())

    def step():
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = method.loss(model, x, g).float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1e-3)
        T.synchronize(device)
    return step


def compile_and_warm(model: torch.nn.Module, step) -> dict:
    """Compile as `train.compile` does (`accel.compile_model`: the backbone networks inside the model), run the
    first step (compilation, excluded from timing), and fall back to eager when torch.compile refuses it, as the
    runner does. Returns what happened: used, graphs compiled, note."""
    before = counters["stats"]["unique_graphs"]
    accel.compile_model(model)
    t0 = time.perf_counter()
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - e.g. double backward, which torch.compile does not support
        accel.uncompile_model(model)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        step()
        return {"compile_used": False, "compile_seconds": time.perf_counter() - t0,
                "compile_note": f"torch.compile refused the step, eager fallback (ratio ~ 1): "
                                f"{type(exc).__name__}: {first}"}
    graphs = counters["stats"]["unique_graphs"] - before
    note = "" if graphs else ("no new graph compiled in this process: the networks' code was already compiled by an "
                              "earlier case (dynamo reuses it for the same architecture), or the loss bypasses them")
    return {"compile_used": graphs > 0, "compile_seconds": time.perf_counter() - t0, "graphs_compiled": graphs,
            "compile_note": note}


# variant -> (compiled, bf16)
VARIANTS = {"eager-fp32": (False, False), "compile": (True, False), "bf16": (False, True)}
STEP_CASES = [(m, v) for m in METHODS for v in VARIANTS]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("method", "variant"), STEP_CASES, ids=[f"{m}-{v}" for m, v in STEP_CASES])
def test_cifar10_train_step(benchmark, method, variant, device):
    dev = torch.device(device)
    compiled, bf16 = VARIANTS[variant]
    method_, model, opt, ema, x, g, source = _cifar_parts(method, dev, BATCH[device])
    step = make_step(method_, model, opt, ema, x, g, bf16, STEPS_PER_ROUND[device], dev)
    benchmark.group = f"cifar10-unet-train-step-{method}-{device}-batch{BATCH[device]}"
    benchmark.extra_info.update(unet=source, batch_size=BATCH[device], steps_per_round=STEPS_PER_ROUND[device],
                                precision="bf16" if bf16 else "fp32", baseline=variant == "eager-fp32")
    if compiled:
        benchmark.extra_info.update(compile_and_warm(model, step))
    benchmark.pedantic(step, rounds=5 if device == "cpu" else 10, warmup_rounds=1, iterations=1)


# 3. training MFU with compile and bf16 (CUDA) ----------------------------------------------------------------

MFU_VARIANTS = {"eager-fp32": (False, False), "compile-bf16": (True, True)}


@needs_cuda
@pytest.mark.parametrize("variant", MFU_VARIANTS)
@pytest.mark.parametrize("method", ["dsm", "sde"])
def test_cifar10_training_mfu(benchmark, method, variant):
    """Achieved training FLOP/s (FlopCounterMode's count of a step, `throughput.train_flops`) over the device's
    peak for the precision (`throughput.training_compute`), at the suite's batch of 128; eager fp32 is the group's
    baseline (its MFU against the fp32 peak)."""
    mfu_case(benchmark, method, variant, torch.device("cuda"), BATCH["cuda"])


def mfu_case(benchmark, method: str, variant: str, dev: torch.device, batch: int) -> None:
    compiled, bf16 = MFU_VARIANTS[variant]
    method_, model, opt, ema, x, g, source = _cifar_parts(method, dev, batch)
    flops = T.train_flops(method_, model, x, batch, torch.Generator(dev).manual_seed(2))
    steps = STEPS_PER_ROUND[dev.type]
    step = make_step(method_, model, opt, ema, x, g, bf16, steps, dev)
    benchmark.group = f"cifar10-unet-train-mfu-{method}-{dev.type}-batch{batch}"
    benchmark.extra_info.update(unet=source, batch_size=batch, steps_per_round=steps,
                                precision="bf16" if bf16 else "fp32", baseline=variant == "eager-fp32", **flops)
    if compiled:
        benchmark.extra_info.update(compile_and_warm(model, step))
    benchmark.pedantic(step, rounds=10, warmup_rounds=2, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        sps = steps / benchmark.stats.stats.median
        benchmark.extra_info.update(T.training_compute(flops["train_gflops_per_step"], steps, sps, dev,
                                                       "bf16" if bf16 else "fp32"))
