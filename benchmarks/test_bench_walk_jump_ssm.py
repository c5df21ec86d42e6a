"""Speed of SSM / SSM-VR / FD-SSM training steps (same network, same batch) and of one walk step per walk-jump
parametrisation, each group with the plain backbone forward+backward as its baseline.

    pytest benchmarks/test_bench_walk_jump_ssm.py --benchmark-enable --benchmark-columns=mean,stddev,rounds

FD-SSM speed-up = mean(ssm) / mean(fd_ssm) in the same group; walk steps/s = 1 / mean (all chains advance at once:
chain-steps/s = chains / mean).
"""

import pytest
import torch

from harness.backbones import BackboneFactory
from harness.datasets import DataSpec
from plugins.backbones import ResidualMLP, UNet
from plugins.ssm import SSM
from plugins.walk_jump import WalkJump

CASES = {
    "mlp-2d": (ResidualMLP, DataSpec("toy", "vector", (2,), (-4.0, 4.0), None, 1, 1, 8.0, 1.5),
               {"width": 128, "depth": 3}, 256),
    "unet-digits": (UNet, DataSpec("digits", "image", (1, 8, 8), (-1.0, 1.0), 10, 1, 1, 20.0, 0.6),
                    {"ch": 16, "ch_mult": (1, 2), "attention": False}, 64),
}


def _build(method_cls, options, case):
    cls, spec, opts, batch = CASES[case]
    method = method_cls(method_cls.make_config(options), spec)
    torch.manual_seed(0)  # benchmarks only: module init draws from the global RNG
    model = method.build_model(BackboneFactory(cls.name, cls, spec.shape, opts))
    return method, model, spec, batch


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", ["ssm", "ssm_vr", "fd_ssm", "energy-ssm_vr", "energy-fd_ssm"])
def test_ssm_training_step(benchmark, case, variant):
    param, loss = variant.split("-") if "-" in variant else ("score", variant)
    method, model, spec, batch = _build(SSM, {"parametrisation": param, "loss": loss}, case)
    x = torch.rand(batch, *spec.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    benchmark.group = f"ssm-train-step-{case}"

    def step():
        model.zero_grad(set_to_none=True)
        method.loss(model, x, torch.Generator().manual_seed(2)).mean().backward()

    benchmark(step)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("parametrisation", ["universal", "mdae", "energy"])
def test_walk_step(benchmark, case, parametrisation):
    method, model, spec, batch = _build(WalkJump, {"parametrisation": parametrisation}, case)
    model.eval()
    chain, g = method.chain(model), torch.Generator().manual_seed(3)
    state = chain.init(batch, g)
    benchmark.group = f"walk-step-{case}-M{method.config.M}-{batch}chains"
    benchmark.extra_info.update(M=method.config.M, chains=batch, nfe_per_step=chain.nfe_per_step)
    benchmark(chain.step, state, g)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("group", ["ssm-train-step", "walk-step"])
def test_baseline_forward_backward(benchmark, case, group):
    """The shared backbone's plain forward+backward on the data shape, in each group."""
    cls, spec, opts, batch = CASES[case]
    torch.manual_seed(0)
    net = BackboneFactory(cls.name, cls, spec.shape, opts)()
    x, c = torch.randn(batch, *spec.shape), torch.rand(batch)
    m = WalkJump(WalkJump.make_config(), spec).config.M
    benchmark.group = f"{group}-{case}" if group == "ssm-train-step" else f"walk-step-{case}-M{m}-{batch}chains"

    def step():
        net.zero_grad(set_to_none=True)
        net(x, c).pow(2).mean().backward()

    benchmark(step)
