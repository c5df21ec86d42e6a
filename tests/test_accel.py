"""Execution options: CUDA-graphed sampling finds what to capture, is a recorded no-op off CUDA, and on a GPU gives
the eager samples from the same generator state."""

from __future__ import annotations

import pytest
import torch

from harness import accel
from harness.config import resolve_suite
from harness.runner import build_components, make_generator, sample_in_batches

METHODS = ["dsm", "ssm", "sde", "mdsm", "walk_jump"]
SHORT = {"dsm": {"steps": 6}, "ssm": {"steps_per_level": 2}, "sde": {"steps": 6},
         "mdsm": {"hot_steps": 2, "cool_steps": 3, "final_steps": 2}, "walk_jump": {"steps": 6}}


def _components(host, method, device="cpu", **method_options):
    raw = {"suite": {"methods": [method], "datasets": ["digits"], "device": device},
           "methods": {method: {**SHORT[method], **method_options}},
           "backbones": {"unet": {"ch": 8, "ch_mult": [1, 2], "attention": True}}}
    job = resolve_suite(raw, all_methods=host.registries["methods"].names()).jobs[0]
    return build_components(host, job, torch.device(device))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_a_network_to_capture(host, method):
    comp = _components(host, method)
    nets, energies = accel.graphable_modules(comp.model)
    assert nets, "the backbone network is tagged by BackboneFactory"
    assert bool(energies) == (method == "mdsm")  # mdsm's model is an energy; the others default to scores


def test_energy_parametrisations_are_found_too(host):
    comp = _components(host, "walk_jump", parametrisation="energy")
    nets, energies = accel.graphable_modules(comp.model)
    assert nets and energies


def test_off_cuda_it_is_a_recorded_no_op(host):
    comp = _components(host, "dsm")
    g = make_generator(0, "sample", torch.device("cpu"))
    with accel.cuda_graph_sampling(comp.model, True, torch.device("cpu")) as entry:
        samples, _ = sample_in_batches(comp.method, comp.model, 4, 4, g)
    assert entry["requested"] and not entry["used"] and "need a CUDA device" in entry["note"]
    nets, _ = accel.graphable_modules(comp.model)
    assert all("forward" not in m.__dict__ for m in nets)
    with accel.cuda_graph_sampling(comp.model, False, torch.device("cpu")) as entry:
        pass
    assert entry == {"requested": False, "used": False, "note": ""}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_graphed_sampling_gives_the_eager_samples(host, method):
    """Same generator state, same samples (network evaluations replayed, noise drawn eagerly), to float
    tolerance; the graphs were replayed; nothing stays patched."""
    comp = _components(host, method, device="cuda")
    model = comp.model.eval()
    dev = torch.device("cuda")
    eager, _ = sample_in_batches(comp.method, model, 32, 32, make_generator(0, "s", dev))
    with accel.cuda_graph_sampling(model, True, dev) as entry:
        graphed, _ = sample_in_batches(comp.method, model, 32, 32, make_generator(0, "s", dev))
    assert entry["used"] and entry["graphs"] >= 1 and entry["replays"] > 0
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)
    assert all(p.requires_grad for p in model.parameters())
