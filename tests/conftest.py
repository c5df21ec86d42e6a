"""Shared fixtures. Installed third-party plugins never load by accident: SCOREBENCH_LOAD_PLUGINS is empty."""

from __future__ import annotations

import os
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

os.environ["SCOREBENCH_LOAD_PLUGINS"] = ""
os.environ.setdefault("MPLBACKEND", "Agg")
# one intra-op thread: on the 2-core CI machine two threads fight the other process for cores and run
# small models 10-80x slower
torch.set_num_threads(1)
_BLAS_LIMIT = threadpool_limits(1)  # numpy's BLAS too (FID eigenvalues, arviz): held for the session

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory, tmp_path):
    """Each test gets fresh plugin hosts, a private user cache (no writes to ~/.cache) and runs in its own
    temporary folder, so a default `results/` never lands in the repository."""
    from harness import plugins, runner

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.chdir(tmp_path)
    plugins.reset_plugin_hosts()
    runner._DATASETS.clear()
    yield
    plugins.reset_plugin_hosts()
    runner._DATASETS.clear()


@pytest.fixture
def data_root():
    """The shared offline data root (MNIST, Fashion-MNIST), or skip with the reason."""
    root = Path(os.environ.get("SCOREBENCH_DATA", SHARED_DATA))
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST under {root}: set SCOREBENCH_DATA to the shared data root")
    return root


# a fake plugin: a tiny Gaussian data set and a method that trains in well under a second -------------------

def make_fake_plugin():

    from harness.datasets import Dataset
    from harness.hookspecs import hookimpl
    from harness.method import Chain, Method, MethodConfig, SampleResult, randn
    from harness.toy import GaussianMixture

    class Gauss2(Dataset):
        """2-D standard-ish Gaussian with an exact density (fake, for tests)."""

        name = "gauss2"
        kind = "vector"
        value_range = (-4.0, 4.0)
        _target = GaussianMixture(torch.tensor([[0.5, -0.5]]), 1.0)

        @property
        def target(self):
            return self._target

        def load_split(self, split):
            g = torch.Generator().manual_seed(0 if split == "train" else 1)
            return self._target.sample(512 if split == "train" else 256, g), None

    @dataclass
    class TinyConfig(MethodConfig):
        sigma: float = 0.5
        steps: int = 20
        nan_after: int = -1  # NaN loss after this many evaluations (the first is the runner's FLOPs count)

    class TinyChain(Chain):
        stationary = True

        def __init__(self, model, sigma):
            self.model, self.sigma = model, sigma

        def init(self, n, g):
            return randn((n, 2), g)

        def step(self, x, g):
            with torch.no_grad():
                return x + 0.01 * self.model(x, None) + 0.1414 * randn(x.shape, g)

        def readout(self, x):
            return x

    class Tiny(Method):
        """Tiny single-noise DSM on an MLP (fake, for tests)."""

        name = "tiny"
        Config = TinyConfig
        sampler_length = ("steps",)

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.calls = 0

        def build_model(self, backbone):
            return backbone(conditional=False)

        def loss(self, model, batch, g):
            self.calls += 1
            eps = randn(batch.shape, g)
            out = (model(batch + self.config.sigma * eps, None) * self.config.sigma + eps).pow(2).sum(1)
            if 0 <= self.config.nan_after < self.calls:
                out = out * float("nan")
            return out

        def sample(self, model, n, g):
            c = self.chain(model)
            x = c.init(n, g)
            for _ in range(self.config.steps):
                x = c.step(x, g)
            return SampleResult(x, self.config.steps)

        def chain(self, model):
            return TinyChain(model, self.config.sigma)

    @hookimpl
    def register_methods(register):
        register(Tiny)

    @hookimpl
    def register_datasets(register):
        register(Gauss2)

    mod = types.ModuleType("fake_scorebench_plugin")
    mod.register_methods = register_methods
    mod.register_datasets = register_datasets
    mod.Tiny, mod.Gauss2 = Tiny, Gauss2
    return mod


@pytest.fixture
def host():
    """The default plugin host (built-ins) with the fake plugin added; removed again after the test."""
    from harness.plugins import get_plugin_host

    h = get_plugin_host()
    h.add_plugin(make_fake_plugin(), "fake")
    yield h
    h.remove_plugin("fake")


TINY_CONFIG = """
[suite]
methods = ["tiny"]
datasets = ["gauss2"]
seeds = [0]
device = "cpu"

[train]
steps = 12
batch_size = 32
checkpoint_every = 5
warmup_steps = 2

[eval]
n_samples = 64
metrics = []

[backbones.mlp]
width = 16
depth = 1
"""


@pytest.fixture
def tiny_config(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_CONFIG)
    return p
