"""Quality against NFE (`nfe_curve`): the sampler is rerun at fractions of its length. Checked with the oracle
score, where the answer is known: Langevin from a broad start is far from the target after a few steps and on it
after many."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_dsm import MIX, SPEC

from harness.datasets import Dataset
from harness.metrics import EvalContext
from harness.metrics.toy import bandwidths_from, mmd2_unbiased
from harness.runner import sample_in_batches
from plugins.dsm import DSM, DSMConfig
from plugins.metrics import compute_nfe_curve
from plugins.sde import ScoreSDE, SDEConfig

SIGMA = 0.3


class Smoothed(Dataset):
    """The mixture smoothed at SIGMA: the law Langevin on the oracle σ-score converges to."""

    name, kind, value_range = "smoothed_mix", "vector", (-4.0, 4.0)

    @property
    def target(self):
        return MIX.smoothed(SIGMA)

    def load_split(self, split):
        return self.target.sample(500, torch.Generator().manual_seed(int(split == "test"))), None


def test_sampler_length_scaling():
    m = DSM(DSMConfig(steps=3000), SPEC)
    assert m.with_sampler_scaled(0.1).config.steps == 300 and m.with_sampler_scaled(1e-9).config.steps == 1
    assert m.config.steps == 3000  # a copy: the run's own method is untouched
    assert ScoreSDE(SDEConfig(sampler="pc"), SPEC).sampler_length == ("steps",)
    assert ScoreSDE(SDEConfig(sampler="ode"), SPEC).with_sampler_scaled(0.5) is None  # adaptive: NFE is not a knob


def test_oracle_langevin_curve_falls_to_the_floor():
    n = 500
    method = DSM(DSMConfig(sigma=SIGMA, steps=3000, step_size=0.005, denoise=False), SPEC)
    model = method.oracle(MIX)  # the exact σ-score of the mixture, in dsm's own parametrisation
    ds = Smoothed()
    samples, nfe = sample_in_batches(method, model, n, n, torch.Generator().manual_seed(0))

    def resample(factor, k):
        return sample_in_batches(method.with_sampler_scaled(factor), model, k, k,
                                 torch.Generator().manual_seed(round(1000 * factor)))

    ctx = EvalContext(dataset=ds, spec=ds.spec, samples=samples, nfe=nfe, generator=torch.Generator().manual_seed(1),
                      device=torch.device("cpu"), cache_dir=Path("."), resample=resample,
                      options={"factors": [0.01, 0.1]})
    out = compute_nfe_curve(ctx)
    assert list(out) == ["mmd_at_0.01x_sampler"]  # the key says what it holds: MMD² at 0.01× the sampler length
    mv = out["mmd_at_0.01x_sampler"]
    curve = mv.details["curve"]
    assert [c["nfe"] for c in curve] == [30, 300, 3000] and [c["factor"] for c in curve] == [0.01, 0.1, 1.0]
    assert mv.value == curve[0]["value"] and mv.protocol["statistic"] == "mmd" and mv.protocol["n"] == n
    assert mv.protocol["metric"] == "nfe_curve" and mv.protocol["label"] == "MMD² at 0.01× sampler length"
    # stderr: the MMD² estimator's own (U-statistic variance), at the shortest length and at every point
    assert mv.stderr == curve[0]["stderr"] and all(c["stderr"] > 0 for c in curve)
    assert mv.details["floor_stderr"] > 0
    # the 99th percentile of real-vs-real MMD² at the same n and bandwidth rule
    g = torch.Generator().manual_seed(2)
    target = ds.target
    null = []
    for _ in range(30):
        y = target.sample(n, g)
        null.append(mmd2_unbiased(target.sample(n, g), y, bandwidths_from(y)))
    threshold = float(torch.quantile(torch.tensor(null), 0.99))
    assert curve[0]["value"] > curve[1]["value"] > curve[2]["value"], curve
    assert curve[2]["value"] < threshold + 2e-3, (curve, threshold)  # O(ε) Langevin bias allowance
    assert curve[0]["value"] > 20 * (threshold + 2e-3), (curve, threshold)  # 30 steps from N(0, 4I): far off


def test_options_are_checked():
    ds = Smoothed()
    ctx = EvalContext(dataset=ds, spec=ds.spec, samples=torch.zeros(4, 2), nfe=1, generator=torch.Generator(),
                      device=torch.device("cpu"), cache_dir=Path("."), resample=lambda f, k: (torch.zeros(k, 2), 1))
    ctx.options = {"factor": [0.5]}
    with pytest.raises(ValueError, match=r"unknown \[metrics.nfe_curve\] option.*'factors'"):
        compute_nfe_curve(ctx)
    ctx.options = {"factors": [0.0]}
    with pytest.raises(ValueError, match="positive"):
        compute_nfe_curve(ctx)
