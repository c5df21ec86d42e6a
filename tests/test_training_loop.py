"""The training loop that keeps a device busy: loss read back once per window, divergence found at its step,
no non-finite checkpoint, the budget that stopped training, execution options recorded, FLOPs and MFU."""

from __future__ import annotations

import pytest
import torch

from harness import records
from harness.config import load_suite
from harness.metrics import throughput as T
from harness.runner import build_components, run_job


def _suite(host, path, *sets):
    return load_suite(path, list(sets), all_methods=host.registries["methods"].names())


def _ckpt(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)


def test_the_window_does_not_change_the_numbers(host, tiny_config, tmp_path):
    """Reading the loss back every step or every 50 steps gives the same loss curve and the same weights."""
    a = run_job(host, _suite(host, tiny_config, "train.log_every=1").jobs[0], tmp_path / "a", progress=False)
    b = run_job(host, _suite(host, tiny_config, "train.log_every=50").jobs[0], tmp_path / "b", progress=False)
    ra, rb = records.read_record(a.run_dir / "record.json"), records.read_record(b.run_dir / "record.json")
    assert ra["run_id"] == rb["run_id"]  # log_every is not part of what a job computes
    assert ra["train"]["loss_curve"] == rb["train"]["loss_curve"] and len(ra["train"]["loss_curve"]) == 12
    ca, cb = _ckpt(a.run_dir), _ckpt(b.run_dir)
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert ca["losses"] == cb["losses"]
    assert ra["timings"]["steps_per_second"] > 0 and rb["timings"]["steps_per_second"] > 0


def test_the_loop_reads_the_loss_back_once_per_window(host, tiny_config, tmp_path, monkeypatch):
    """No host-device round trip inside a step: outside torch itself (whose optimiser reads its step counters, CPU
    tensors even for CUDA parameters), `.item()` is never called, `.tolist()` once per window (the end of warm-up
    at step 5, then every log_every = 10 steps: 5, 10, 20, 30), and `bool()` of a tensor only where the weights are
    checked before the final checkpoint."""
    import sys

    calls = {"item": 0, "tolist": 0, "bool": 0}
    counting = {"on": False}
    for name, key in (("item", "item"), ("tolist", "tolist"), ("__bool__", "bool")):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _key=key, **kwargs):
            if counting["on"] and not sys._getframe(1).f_globals.get("__name__", "").startswith("torch"):
                calls[_key] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapped)

    from harness import runner

    job = _suite(host, tiny_config, "train.steps=30", "train.log_every=10", "train.checkpoint_every=0").jobs[0]
    original_train = runner.train

    def counted_train(*args, **kwargs):
        counting["on"] = True
        try:
            return original_train(*args, **kwargs)
        finally:
            counting["on"] = False
    monkeypatch.setattr(runner, "train", counted_train)
    out = run_job(host, job, tmp_path, progress=False)
    assert out.status == "ok"
    assert calls == {"item": 0, "tolist": 4, "bool": 1}


def test_a_nan_inside_a_window_is_reported_at_its_step_and_never_checkpointed(host, tiny_config, tmp_path):
    # evaluation 1 counts FLOPs, evaluations 2..8 are steps 0..6, NaN after 7: step 6 is the first NaN, in the window
    # 5..9 that is read back at step 10; the checkpoint at step 5 holds finite weights and stays the last one
    job = _suite(host, tiny_config, "methods.tiny.nan_after=7", "train.log_every=5",
                 "train.checkpoint_every=5", "train.steps=40").jobs[0]
    out = run_job(host, job, tmp_path, progress=False)
    rec = records.read_record(out.run_dir / "record.json")
    assert rec["status"] == "diverged" and rec["error"]["step"] == 6 and "loss is nan" in rec["error"]["message"]
    ckpt = _ckpt(out.run_dir)
    assert ckpt["step"] == rec["checkpoint_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_the_record_names_the_budget_that_stopped_training(host, tiny_config, tmp_path):
    steps = run_job(host, _suite(host, tiny_config).jobs[0], tmp_path / "a", progress=False)
    rec = records.read_record(steps.run_dir / "record.json")
    assert rec["train"]["stopped_by"] == "steps" and rec["train"]["steps"] == 12
    assert rec["budget"] == {"steps": 12, "seconds": 0.0}
    # a seconds budget far below what 100,000 steps take stops training first
    job = _suite(host, tiny_config, "train.steps=100000", "train.seconds=0.3").jobs[0]
    secs = run_job(host, job, tmp_path / "b", progress=False)
    rec = records.read_record(secs.run_dir / "record.json")
    assert rec["status"] == "ok" and rec["train"]["stopped_by"] == "seconds"
    assert 0 < rec["train"]["steps"] < 100000 and rec["train"]["seconds"] >= 0.3
    assert rec["budget"] == {"steps": 100000, "seconds": 0.3}


def test_the_record_holds_execution_options_and_compute(host, tiny_config, tmp_path):
    job = _suite(host, tiny_config, "train.tf32=true", "eval.cuda_graphs=true").jobs[0]
    rec = records.read_record(run_job(host, job, tmp_path, progress=False).run_dir / "record.json")
    ex = rec["execution"]
    assert ex["precision"] == "fp32"
    assert ex["compile"] == {"requested": False, "used": False, "note": ""}
    assert ex["tf32"]["requested"] and not ex["tf32"]["used"] and "no effect on cpu" in ex["tf32"]["note"]
    assert ex["cuda_graphs"]["requested"] and not ex["cuda_graphs"]["used"]
    assert "need a CUDA device" in ex["cuda_graphs"]["note"]
    assert ex["channels_last"]["used"] is False
    t = rec["timings"]
    assert t["train_gflops_per_step"] > 0 and t["sample_gflops_per_sample"] > 0
    assert t["train_pflops"] == pytest.approx(t["train_gflops_per_step"] * 12 / 1e6)
    assert t["mfu"] is None and "cpu" in t["mfu_note"]


def test_training_flops_scale_exactly_to_the_batch(host, tiny_config):
    """train_flops counts 4 examples and scales: equal to FlopCounterMode on the whole batch of 64."""
    job = _suite(host, tiny_config).jobs[0]
    comp = build_components(host, job, torch.device("cpu"))
    data = comp.dataset.split("train")[0]
    est = T.train_flops(comp.method, comp.model, data, 64, torch.Generator().manual_seed(0))
    batch = data[:64]

    def full():
        comp.method.loss(comp.model, batch, torch.Generator().manual_seed(1)).mean().backward()
    _, flops = T.count_flops(full)
    assert est["train_gflops_per_step"] * 1e9 == pytest.approx(flops, rel=1e-12)


def test_energy_training_flops_include_the_double_backward(host):
    """mdsm's step differentiates the energy's input gradient: about twice dsm's FLOPs on the same backbone."""
    from harness.config import resolve_suite

    raw = {"suite": {"methods": ["dsm", "mdsm"], "datasets": ["ring8"], "device": "cpu"},
           "backbones": {"mlp": {"width": 32, "depth": 2}}}
    suite = resolve_suite(raw, all_methods=host.registries["methods"].names())
    counts = {}
    for job in suite.jobs:
        comp = build_components(host, job, torch.device("cpu"))
        data = comp.dataset.split("train")[0]
        counts[job.method] = T.train_flops(comp.method, comp.model, data, 128,
                                           torch.Generator().manual_seed(0))["train_gflops_per_step"]
    assert 1.6 < counts["mdsm"] / counts["dsm"] < 2.6


@pytest.mark.parametrize("name,key", [("NVIDIA H200", "H200 SXM"), ("NVIDIA H100 80GB HBM3", "H100 SXM"),
                                      ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA A100-SXM4-80GB", "A100"),
                                      ("NVIDIA H200 NVL", None), ("NVIDIA GeForce RTX 4090", None)])
def test_device_peak_lookup(name, key):
    assert T.device_peak_key(name) == key


def test_mfu_is_achieved_over_the_peak_of_the_precision_in_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    # 2,000 GFLOPs per step at 100 steps/s: 200 TFLOP/s against H200's dense bf16 peak of 989.4
    out = T.training_compute(2000.0, 500, 100.0, "cuda", "bf16")
    assert out["train_tflops_per_second"] == pytest.approx(200.0)
    assert out["mfu"] == pytest.approx(200.0 / 989.4)
    assert out["mfu_peak"]["precision"] == "bf16" and "NVIDIA" in out["mfu_peak"]["source"]
    assert out["train_pflops"] == pytest.approx(2000.0 * 500 / 1e6)
    assert T.training_compute(2000.0, 500, 100.0, "cuda", "fp32")["mfu"] == pytest.approx(200.0 / 66.9)


@pytest.mark.slow
def test_compile_trains_like_eager_and_falls_back_on_double_backward(host, tmp_path):
    """torch.compile (inductor, on CPU too) of dsm's MLP follows eager's loss curve to float tolerance; mdsm's
    double backward is refused by torch.compile, so it trains eagerly from the same generator state (the same
    curve bit for bit) and the record says why."""
    from harness.config import resolve_suite

    def run(method, compile_, name):
        raw = {"suite": {"methods": [method], "datasets": ["ring8"], "device": "cpu", "threads": 1},
               "train": {"steps": 8, "batch_size": 32, "checkpoint_every": 0, "compile": compile_},
               "eval": {"n_samples": 8, "metrics": []}, "backbones": {"mlp": {"width": 16, "depth": 1}},
               "methods": {"dsm": {"steps": 5}, "mdsm": {"hot_steps": 2, "cool_steps": 2, "final_steps": 2}}}
        job = resolve_suite(raw, all_methods=host.registries["methods"].names()).jobs[0]
        return records.read_record(run_job(host, job, tmp_path / name, progress=False).run_dir / "record.json")

    eager, compiled = run("dsm", False, "e"), run("dsm", True, "c")
    assert compiled["status"] == "ok" and compiled["execution"]["compile"]["used"] is True
    assert compiled["train"]["loss_curve"] == pytest.approx(eager["train"]["loss_curve"], rel=1e-4)
    assert compiled["run_id"] != eager["run_id"]  # compile is part of what the job computes
    m_eager, m_compiled = run("mdsm", False, "me"), run("mdsm", True, "mc")
    entry = m_compiled["execution"]["compile"]
    assert m_compiled["status"] == "ok" and entry["requested"] and not entry["used"]
    assert "torch.compile failed" in entry["note"]
    assert m_compiled["train"]["loss_curve"] == m_eager["train"]["loss_curve"]


def test_channels_last_trains_an_image_model_like_the_default_format(host, tmp_path):
    from harness.config import resolve_suite

    def run(nhwc, name):
        raw = {"suite": {"methods": ["dsm"], "datasets": ["digits"], "device": "cpu", "threads": 1},
               "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 0, "channels_last": nhwc},
               "eval": {"n_samples": 4, "metrics": []}, "methods": {"dsm": {"steps": 2}},
               "backbones": {"unet": {"ch": 8, "ch_mult": [1], "attention": False}}}
        job = resolve_suite(raw, all_methods=host.registries["methods"].names()).jobs[0]
        return records.read_record(run_job(host, job, tmp_path / name, progress=False).run_dir / "record.json")

    a, b = run(False, "a"), run(True, "b")
    assert b["execution"]["channels_last"] == {"requested": True, "used": True, "note": ""}
    assert b["train"]["loss_curve"] == pytest.approx(a["train"]["loss_curve"], rel=1e-4)
