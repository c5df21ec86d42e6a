"""Baselines for every method benchmark: one forward+backward of the shared backbones."""

import pytest
import torch

from harness.backbones import BackboneFactory
from plugins.backbones import ResidualMLP, UNet

CASES = {
    "mlp-2d": (ResidualMLP, (2,), {"width": 128, "depth": 3}, 256),
    "unet-digits": (UNet, (1, 8, 8), {"ch": 16, "ch_mult": (1, 2), "attention": False}, 64),
}


@pytest.mark.parametrize("case", CASES)
def test_backbone_forward_backward(benchmark, case):
    cls, shape, opts, batch = CASES[case]
    torch.manual_seed(0)
    net = BackboneFactory(cls.name, cls, shape, opts)()
    x, c = torch.randn(batch, *shape), torch.rand(batch)
    benchmark.group = f"baseline-{case}"

    def step():
        net.zero_grad(set_to_none=True)
        net(x, c).pow(2).mean().backward()

    benchmark(step)
