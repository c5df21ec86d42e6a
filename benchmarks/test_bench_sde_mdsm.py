"""sde and mdsm: one training step and one sampler step on CPU, next to the backbone's plain forward+backward in
the same group (report ratios from one run). `pytest benchmarks/test_bench_sde_mdsm.py --benchmark-enable`."""

import pytest
import torch

from harness.backbones import BackboneFactory
from harness.datasets import DataSpec
from plugins.backbones import ResidualMLP, UNet
from plugins.mdsm import MDSM, MDSMConfig, langevin_step
from plugins.sde import (
    ScoreSDE,
    SDEConfig,
    euler_maruyama,
    predictor_corrector,
    probability_flow_drift,
)

CASES = {  # the same backbones and batch sizes as benchmarks/test_bench_backbones.py
    "mlp-2d": (ResidualMLP, (2,), {"width": 128, "depth": 3}, 256, "vector"),
    "unet-digits": (UNet, (1, 8, 8), {"ch": 16, "ch_mult": (1, 2), "attention": False}, 64, "image"),
}


def setup(case, method_cls, config):
    cls, shape, opts, batch, kind = CASES[case]
    spec = DataSpec(case, kind, shape, (-1.0, 1.0), None, 1000, 100, 4.0, 0.5)
    method = method_cls(config, spec)
    torch.manual_seed(0)
    model = method.build_model(BackboneFactory(cls.name, cls, shape, opts))
    x = torch.randn(batch, *shape)
    return method, model, x


def train_step(method, model, x, g):
    model.zero_grad(set_to_none=True)
    method.loss(model, x, g).mean().backward()


@pytest.mark.parametrize("case", CASES)
def test_baseline_forward_backward(benchmark, case):
    cls, shape, opts, batch, _ = CASES[case]
    torch.manual_seed(0)
    net = BackboneFactory(cls.name, cls, shape, opts)()
    x, c = torch.randn(batch, *shape), torch.rand(batch)
    benchmark.group = f"sde-mdsm-{case}"

    def step():
        net.zero_grad(set_to_none=True)
        net(x, c).pow(2).mean().backward()

    benchmark(step)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["sde", "mdsm"])
def test_train_step(benchmark, case, method):
    """loss (per example, reduced) + backward; mdsm's includes the double backprop through ∇E."""
    cls, cfg = (ScoreSDE, SDEConfig(sde="vp")) if method == "sde" else (MDSM, MDSMConfig())
    m, model, x = setup(case, cls, cfg)
    g = torch.Generator().manual_seed(0)
    benchmark.group = f"sde-mdsm-{case}"
    benchmark(train_step, m, model, x, g)


SDE_STEPS = {  # one step of each sampler: NFE per call in the name
    "pc-2nfe": lambda m, model, x, g: predictor_corrector(m.sde, model, x, g, m.config),
    "euler_maruyama-1nfe": lambda m, model, x, g: euler_maruyama(m.sde, model, x, g, m.config),
    "ode_rhs-1nfe": lambda m, model, x, g: probability_flow_drift(m.sde, model, x, torch.full((x.shape[0],), 0.5)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("step", SDE_STEPS)
def test_sde_sampler_step(benchmark, case, step):
    m, model, x = setup(case, ScoreSDE, SDEConfig(sde="vp", steps=1))
    model.eval()
    g = torch.Generator().manual_seed(0)
    benchmark.group = f"sde-mdsm-{case}"
    with torch.no_grad():
        benchmark(SDE_STEPS[step], m, model, x, g)


@pytest.mark.parametrize("case", CASES)
def test_mdsm_langevin_step(benchmark, case):
    """One annealed-Langevin step: an energy gradient with respect to the samples (forward + input backward)."""
    m, model, x = setup(case, MDSM, MDSMConfig())
    model.eval()
    g = torch.Generator().manual_seed(0)
    benchmark.group = f"sde-mdsm-{case}"
    benchmark(langevin_step, model, x, 0.02, 1.0, g)
