"""Sampler cost, pinned for every built-in method: the backbone's forward calls (and backward passes through input
gradients) counted by hooks during `sample`, chain steps and readouts equal the declared NFE (SampleResult.nfe per
sample, Chain.nfe_per_step per step, Chain.readout_nfe per readout, grad_evals where the method reports them), and
the mixing diagnostics charge chain steps only while counting readouts apart (walk-jump: steps/k jumps).

Calls are counted per batched call: one call evaluates the network for every sample (chain) of the batch, so the
per-sample (per-chain) NFE equals the number of calls."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from harness.backbones import BackboneFactory
from harness.metrics import mixing as M
from harness.runner import seeded_init
from plugins.backbones import ResidualMLP
from plugins.datasets import Ring8
from plugins.dsm import DSM
from plugins.mdsm import MDSM
from plugins.sde import ScoreSDE
from plugins.ssm import SSM
from plugins.walk_jump import WalkJump

SPEC = Ring8(root=None, download=False).spec
N = 3  # samples per sample() call

# method, config overrides: tiny samplers on ring8 with the mlp backbone
CASES = {
    "dsm": (DSM, {"steps": 4}),
    "dsm-raw": (DSM, {"steps": 4, "denoise": False}),
    "walk_jump-universal": (WalkJump, {"steps": 4, "jump_every": 3}),
    "walk_jump-mdae": (WalkJump, {"parametrisation": "mdae", "M": 2, "steps": 4, "jump_every": 3}),
    "walk_jump-energy": (WalkJump, {"parametrisation": "energy", "M": 2, "steps": 4, "jump_every": 3}),
    "walk_jump-long_chain": (WalkJump, {"protocol": "long_chain", "chains": 1, "burn_in": 2, "jump_every": 3}),
    "ssm-none": (SSM, {"noise": "none", "langevin_steps": 4}),
    "ssm-ladder": (SSM, {"noise": "ladder", "n_levels": 2, "steps_per_level": 2}),
    "ssm-energy": (SSM, {"parametrisation": "energy", "noise": "ladder", "n_levels": 2, "steps_per_level": 2}),
    "mdsm": (MDSM, {"hot_steps": 2, "cool_steps": 2, "final_steps": 2}),
    "sde-ve-pc": (ScoreSDE, {"sde": "ve", "sampler": "pc", "steps": 3}),
    "sde-vp-em": (ScoreSDE, {"sde": "vp", "sampler": "euler_maruyama", "steps": 3}),
    "sde-ode": (ScoreSDE, {"sde": "vp", "sampler": "ode", "ode_rtol": 1e-2, "ode_atol": 1e-2}),
}


def build(case: str):
    cls, overrides = CASES[case]
    method = cls(cls.make_config(dict(overrides)), SPEC)
    with seeded_init(0):
        model = method.build_model(BackboneFactory("mlp", ResidualMLP, SPEC.shape, {"width": 16, "depth": 1,
                                                                                     "emb_dim": 16}))
    return method, model.eval()


class Counter:
    """Forward calls of every backbone module in a model, and backward passes through them."""

    def __init__(self, model: torch.nn.Module):
        self.nets = [m for m in model.modules() if isinstance(m, ResidualMLP)]
        assert self.nets, "no backbone found in the model"
        self.forward = self.backward = 0
        for net in self.nets:
            net.register_forward_hook(self._fwd)
            net.register_full_backward_hook(self._bwd)

    def _fwd(self, *_):
        self.forward += 1

    def _bwd(self, *_):
        self.backward += 1

    @contextmanager
    def counting(self):
        """Yields a dict that holds the calls made inside the block."""
        f0, b0, out = self.forward, self.backward, {}
        yield out
        out["forward"], out["backward"] = self.forward - f0, self.backward - b0


@pytest.mark.parametrize("case", sorted(CASES))
def test_sample_nfe_equals_backbone_calls(case):
    method, model = build(case)
    counter = Counter(model)
    with counter.counting() as calls:
        res = method.sample(model, N, torch.Generator().manual_seed(0))
    assert res.samples.shape == (N, *SPEC.shape) and isinstance(res.nfe, int)
    # input gradients: every backward pass the sampler runs is declared in info["grad_evals"] (per sample)
    if res.info.get("protocol") == "long_chain":  # `chains` chains: each call evaluates one sample per chain
        chains = res.info["chains"]
        assert res.info["total_nfe"] == chains * calls["forward"], (res.info, calls)
        assert chains * calls["backward"] == pytest.approx(res.info.get("grad_evals", 0) * N), (res.info, calls)
    else:
        assert res.nfe == calls["forward"], (res.nfe, calls)
        assert res.info.get("total_nfe", N * res.nfe) == N * res.nfe
        assert calls["backward"] == res.info.get("grad_evals", 0), (res.info, calls)


CHAIN_CASES = [c for c in sorted(CASES) if not c.startswith("sde") and c != "walk_jump-long_chain"]


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_chain_step_trace_and_readout_cost_what_they_declare(case):
    method, model = build(case)
    chain = method.chain(model)
    counter = Counter(model)
    g = torch.Generator().manual_seed(1)
    state = chain.init(2, g)
    steps = 3
    with counter.counting() as walk:
        for _ in range(steps):
            state = chain.step(state, g)
    assert walk["forward"] == steps * chain.nfe_per_step, (walk, chain.describe())
    assert walk["backward"] == steps * chain.grad_evals_per_step, (walk, chain.describe())
    with counter.counting() as tr:
        t = chain.trace(state)
    assert tr == {"forward": 0, "backward": 0} and t.shape == (2, *SPEC.shape)
    with counter.counting() as ro:
        x = chain.readout(state)
    assert ro["forward"] == chain.readout_nfe and x.shape == (2, *SPEC.shape), (ro, chain.describe())
    if chain.grad_evals_per_step == chain.nfe_per_step:  # an energy model: its readout differentiates it too
        assert ro["backward"] == chain.readout_nfe
    d = chain.describe()
    assert (d["nfe_per_step"], d["readout_nfe"], d["grad_evals_per_step"], d["readout_every"]) == (
        chain.nfe_per_step, chain.readout_nfe, chain.grad_evals_per_step, chain.readout_every)


def test_walk_jump_reads_out_every_jump_every_steps():
    method, model = build("walk_jump-universal")
    chain = method.chain(model)
    assert chain.readout_every == 3 and chain.readout_nfe == 1 and chain.nfe_per_step == 1


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_mixing_charges_chain_steps_and_counts_readouts_apart(case):
    method, model = build(case)
    chain = method.chain(model)
    counter = Counter(model)
    C, burn, steps = 2, 2, 9
    with counter.counting() as calls:
        diag = M.run_chain_diagnostics(chain, C, burn, steps, M.coordinate_statistics(2),
                                       labeler=lambda x: (x[:, 0] > 0).long(),
                                       generator=torch.Generator().manual_seed(2))
    k = chain.readout_every
    readouts = steps // k if k else 1  # walk-jump: one jump every k walk steps; else once, at the end
    assert diag.n_readouts == readouts
    assert calls["forward"] == (burn + steps) * chain.nfe_per_step + readouts * chain.readout_nfe
    assert diag.nfe == C * steps * chain.nfe_per_step  # chain steps only: what ESS per 1k NFE charges
    assert diag.readout_nfe_total == C * readouts * chain.readout_nfe
    s = diag.summary()
    assert s["ess_bulk_per_1k_nfe"] == pytest.approx(1000 * s["ess_bulk"] / (C * steps * chain.nfe_per_step))
    if chain.readout_nfe and k:  # labels of the paid readouts, k steps apart
        assert diag.label_source == "readouts" and diag.label_every == k
        assert diag.recording.labels.shape == (C, readouts)
    else:  # labels of the free trace, every step
        assert diag.label_source == "trace" and diag.recording.labels.shape == (C, steps)


def test_mixing_metric_records_chain_step_and_readout_cost_apart(tmp_path):
    """Through the registered metric: walk-jump on ring8, k = 3: ESS per 1k NFE charges C·steps·1, the readout
    cost is C·(steps/3)·1, both in the record's details, and chain.npz is left in the run folder."""
    import numpy as np

    from harness.metrics import EvalContext
    from plugins.metrics import compute_mixing

    method, model = build("walk_jump-universal")
    ds = Ring8(root=None, download=False)
    ctx = EvalContext(dataset=ds, spec=SPEC, samples=torch.zeros(4, 2), nfe=5,
                      generator=torch.Generator().manual_seed(0), device=torch.device("cpu"), cache_dir=tmp_path,
                      chain=method.chain(model), options={"n_chains": 4, "burn_in": 3, "steps": 30}, run_dir=tmp_path)
    out = compute_mixing(ctx)
    cost = out["ess_per_1k_nfe"].details["cost"]
    assert cost["chain_step_nfe"] == 4 * 30 and cost["readouts_per_chain"] == 10
    assert cost["readout_nfe_total"] == 4 * 10 * 1 and cost["readout_every"] == 3
    assert cost["gflops_per_chain_step"] > 0 and cost["gflops_per_readout"] > 0
    assert out["ess_per_1k_nfe"].value == pytest.approx(1000 * out["ess_bulk"].value / 120)
    assert "nested_rhat" in out and out["iat"].details["cost"] == cost
    # every ESS carries τ's relative standard error (ESS = chains·steps/τ)
    rel = out["iat"].stderr / out["iat"].value
    for name in ("ess_bulk", "ess_per_1k_nfe", "ess_per_second"):
        assert out[name].stderr == pytest.approx(out[name].value * rel)
    assert "chain.npz" in ctx.artifacts
    with np.load(tmp_path / "chain.npz", allow_pickle=False) as z:
        assert int(z["readout_every"]) == 3 and z["labels"].shape == (4, 10) and int(z["label_every"]) == 3
        assert z["readouts"].shape == (10, 2)


def test_run_records_sampling_gflops_per_sample_without_shifting_other_streams(host, tiny_config, tmp_path,
                                                                               monkeypatch):
    """The runner counts the sampler's FLOPs on 2 samples of a shortened sampler and scales them back: for the
    tiny method (20 steps of one MLP evaluation) that is 20 × the FLOPs of one evaluation of one sample. The count
    draws from its own generator: samples and metrics equal those of a run without it."""
    import numpy as np

    from harness import records
    from harness.config import load_suite
    from harness.metrics import throughput as TP
    from harness.runner import run_job

    job = load_suite(tiny_config, ["eval.metrics=['mmd']"], all_methods=host.registries["methods"].names()).jobs[0]
    out = run_job(host, job, tmp_path / "a", progress=False)
    rec = records.read_record(out.run_dir / "record.json")
    assert rec["status"] == "ok", rec["error"]
    t = rec["timings"]
    model = torch.load(out.run_dir / "checkpoint.pt", weights_only=False)["model"]
    net = ResidualMLP(in_shape=(2,), out_channels=2, conditional=False, width=16, depth=1)
    net.load_state_dict(model)
    with torch.no_grad():
        _, one = TP.count_flops(lambda: net(torch.zeros(4, 2), None))
    assert t["sample_gflops_per_sample"] == pytest.approx(20 * one / 4 / 1e9)
    assert "FlopCounterMode" in t["flops_method"] and "scaled by 0.4" in t["flops_method"]

    monkeypatch.setattr(TP, "sample_flops", lambda *a, **k: {})
    bare = run_job(host, job, tmp_path / "b", progress=False)
    rec_b = records.read_record(bare.run_dir / "record.json")
    assert "sample_gflops_per_sample" not in rec_b["timings"]
    np.testing.assert_array_equal(np.load(out.run_dir / "samples.npz")["samples"],
                                  np.load(bare.run_dir / "samples.npz")["samples"])
    assert rec["metrics"]["mmd"]["value"] == rec_b["metrics"]["mmd"]["value"]
