"""Shared backbones: shapes on every data geometry, conditioning, and the energy head's score."""

from __future__ import annotations

import pytest
import torch

from harness.backbones import BackboneFactory, EnergyModel, count_parameters
from harness.errors import ConfigError
from plugins.backbones import ResidualMLP, UNet


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_unet_shapes_on_every_image_geometry(shape, attention):
    g = torch.Generator().manual_seed(0)
    f = BackboneFactory("unet", UNet, shape, {"ch": 8, "ch_mult": (1, 2, 2), "attention": attention})
    x, c = torch.randn(3, *shape, generator=g), torch.rand(3, generator=g)
    assert f()(x, c).shape == x.shape
    assert f(in_shape=(4 * shape[0], *shape[1:]), out_channels=2)(x.repeat(1, 4, 1, 1), c).shape == (3, 2, *shape[1:])


def test_conditioning_changes_the_output_and_unconditional_ignores_it():
    torch.manual_seed(0)
    f = BackboneFactory("mlp", ResidualMLP, (2,), {"width": 16, "depth": 2})
    x = torch.randn(5, 2)
    net = f()
    assert not torch.allclose(net(x, torch.zeros(5)), net(x, torch.ones(5)))
    flat = f(conditional=False)
    assert torch.equal(flat(x, torch.zeros(5)), flat(x, torch.ones(5)))
    assert count_parameters(flat) < count_parameters(net)


@pytest.mark.parametrize("head", EnergyModel.heads)
def test_energy_head_score_is_minus_the_gradient(head):
    torch.manual_seed(0)
    f = BackboneFactory("mlp", ResidualMLP, (3,), {"width": 16, "depth": 1})
    e = f.energy(head=head).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.rand(4, dtype=torch.float64)
    assert e(x, c).shape == (4,)
    # central finite differences of E against the autograd score
    h, eye = 1e-5, torch.eye(3, dtype=torch.float64)
    fd = torch.stack([(e(x + h * eye[i], c) - e(x - h * eye[i], c)) / (2 * h) for i in range(3)], 1)
    torch.testing.assert_close(e.score(x, c), -fd, rtol=1e-5, atol=1e-7)


def test_bad_head_and_activation_are_config_errors():
    f = BackboneFactory("mlp", ResidualMLP, (2,), {"act": "relu6"})
    with pytest.raises(ConfigError, match="unknown activation 'relu6'"):
        f()
    with pytest.raises(ConfigError, match="unknown energy head"):
        BackboneFactory("mlp", ResidualMLP, (2,), {}).energy(head="cubic")
