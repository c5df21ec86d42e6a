"""Runner: determinism, resume equivalence, divergence, failure isolation, atomic records, record contents."""

from __future__ import annotations

import json
import os
import re
import threading

import pytest
import torch

from harness import records
from harness.config import load_suite
from harness.errors import ConfigError
from harness.runner import run_job, run_suite


def _suite(host, path, *sets):
    return load_suite(path, list(sets), all_methods=host.registries["methods"].names())


def _weights(run_dir):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return ckpt["step"], ckpt["model"], ckpt["ema"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cpu_runs_are_bit_for_bit_repeatable(host, tiny_config, tmp_path):
    job = _suite(host, tiny_config).jobs[0]
    a = run_job(host, job, tmp_path / "a", progress=False)
    b = run_job(host, job, tmp_path / "b", progress=False)
    assert a.status == b.status == "ok"
    sa, ma, ea = _weights(a.run_dir)
    sb, mb, eb = _weights(b.run_dir)
    assert sa == sb == 12 and _same(ma, mb) and _same(ea, eb)
    na = torch.from_numpy(__import__("numpy").load(a.run_dir / "samples.npz")["samples"])
    nb = torch.from_numpy(__import__("numpy").load(b.run_dir / "samples.npz")["samples"])
    assert torch.equal(na, nb)


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(host, tiny_config, tmp_path, monkeypatch):
    job = _suite(host, tiny_config).jobs[0]  # 12 steps, checkpoint every 5
    ref = run_job(host, job, tmp_path / "ref", progress=False)

    tiny = host.registries["methods"].get("tiny")
    original = tiny.loss
    calls = {"n": 0}

    def crashing_loss(self, model, batch, g):
        calls["n"] += 1
        # call 1 is the training-FLOPs count (on a copy of the model); call 9 is step 8: after the step-5
        # checkpoint, before the end
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return original(self, model, batch, g)

    monkeypatch.setattr(tiny, "loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        run_job(host, job, tmp_path / "res", progress=False)
    run_dir = tmp_path / "res" / "runs" / job.run_id
    rec = records.read_record(run_dir / "record.json")
    assert rec["status"] == "interrupted" and "interrupted" in rec["error"]["message"]
    assert rec["error"]["step"] == 7 and rec["checkpoint_step"] == 5
    assert _weights(run_dir)[0] == 5

    monkeypatch.setattr(tiny, "loss", original)
    res = run_job(host, job, tmp_path / "res", resume=True, progress=False)
    assert res.status == "ok"
    rec = records.read_record(run_dir / "record.json")
    assert rec["resumed_from_step"] == 5
    s1, m1, e1 = _weights(ref.run_dir)
    s2, m2, e2 = _weights(run_dir)
    assert s1 == s2 == 12 and _same(m1, m2) and _same(e1, e2)
    # a finished job is skipped on --resume
    again = run_job(host, job, tmp_path / "res", resume=True, progress=False)
    assert again.status == "ok" and "skipped" in again.message


def test_nan_loss_marks_the_job_diverged_with_its_step(host, tiny_config, tmp_path):
    # evaluation 1 counts FLOPs; evaluations 2-4 are steps 0-2; step 3 (read back at the end of warm-up, step 5)
    # is the first NaN, and no checkpoint holds the weights it produced
    job = _suite(host, tiny_config, "methods.tiny.nan_after=4").jobs[0]
    out = run_job(host, job, tmp_path, progress=False)
    rec = records.read_record(out.run_dir / "record.json")
    assert rec["status"] == "diverged" and rec["error"]["step"] == 3
    assert rec["checkpoint_step"] is None and not (out.run_dir / "checkpoint.pt").exists()
    assert "loss is nan" in rec["error"]["message"]


def test_a_failing_job_is_recorded_and_the_suite_goes_on(host, tiny_config, tmp_path):
    # the U-Net cannot take 2-D vectors: tiny fails at build time, dsm still runs
    suite = _suite(host, tiny_config, "suite.methods=['tiny', 'dsm']", "methods.tiny.backbone='unet'",
                   "methods.dsm.steps=5")
    outs = run_suite(host, suite, out=tmp_path, progress=False, log=lambda *a: None)
    assert [o.status for o in outs] == ["failed", "ok"]
    rec = records.read_record(outs[0].run_dir / "record.json")
    assert rec["error"]["type"] and rec["error"]["traceback"]


def test_record_has_the_promised_fields(host, tiny_config, tmp_path):
    job = _suite(host, tiny_config).jobs[0]
    out = run_job(host, job, tmp_path, progress=False)
    rec = records.read_record(out.run_dir / "record.json")
    for key in ("schema_version", "run_id", "method", "dataset", "seed", "config", "status", "metrics",
                "timings", "params", "versions", "git", "hardware", "started_utc", "ended_utc"):
        assert key in rec, key
    assert rec["config"]["method"] == {"backbone": "auto", "sigma": 0.5, "steps": 20, "nan_after": -1}
    assert rec["config"]["backbone"]["name"] == "mlp" and rec["config"]["backbone"]["width"] == 16
    assert rec["config"]["train"]["steps"] == 12 and rec["config"]["train"]["lr"] == 1e-3  # defaults included
    assert rec["params"] == sum(p.numel() for p in torch.load(out.run_dir / "checkpoint.pt",
                                                              weights_only=False)["model"].values())
    assert {"torch", "python", "scorebench", "torch-fidelity", "torchvision"} <= set(rec["versions"])
    assert set(rec["git"]) == {"commit", "dirty"} and rec["hardware"]["cores"] >= 1
    assert rec["timings"]["train_steps"] == 12 and rec["nfe"] == 20
    assert (out.run_dir / "samples.png").stat().st_size > 1000
    import numpy as np

    assert np.load(out.run_dir / "samples.npz")["samples"].shape == (64, 2)


def test_atomic_write_leaves_the_old_record_when_a_write_fails(tmp_path, monkeypatch):
    records.write_record(tmp_path, {"a": 1})
    monkeypatch.setattr(records.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        records.write_record(tmp_path, {"a": 2})
    assert json.loads((tmp_path / "record.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary left behind


def test_concurrent_writers_never_corrupt_a_record(tmp_path):
    big = {f"k{i}": list(range(200)) for i in range(50)}
    errors = []

    def writer(tag):
        for _ in range(20):
            records.write_record(tmp_path, {**big, "tag": tag})

    def reader():
        for _ in range(100):
            try:
                json.loads((tmp_path / "record.json").read_text())
            except FileNotFoundError:
                pass
            except json.JSONDecodeError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads((tmp_path / "record.json").read_text())["tag"] in range(4)


def test_non_finite_metrics_are_stored_as_strings(tmp_path):
    records.write_record(tmp_path, {"x": float("nan"), "y": [float("inf")]})
    assert json.loads((tmp_path / "record.json").read_text()) == {"x": "nan", "y": ["inf"]}


def test_diverging_samples_mark_the_job_diverged(host, tiny_config, tmp_path, monkeypatch):
    from harness.method import SampleResult

    tiny = host.registries["methods"].get("tiny")
    monkeypatch.setattr(tiny, "sample", lambda self, model, n, g: SampleResult(torch.full((n, 2), 1e6), 1))
    out = run_job(host, _suite(host, tiny_config).jobs[0], tmp_path, progress=False)
    rec = records.read_record(out.run_dir / "record.json")
    assert rec["status"] == "diverged" and "sample magnitude" in rec["error"]["message"]
    assert rec["error"]["step"] == 12  # the training step reached (tiny_config: 12 steps)
    assert (out.run_dir / "samples.npz").exists()  # the evidence is kept
    job = _suite(host, tiny_config, "train.steps=0", "train.seconds=0.2").jobs[0]  # a time budget
    rec = records.read_record(run_job(host, job, tmp_path, progress=False).run_dir / "record.json")
    assert rec["status"] == "diverged" and rec["error"]["step"] == rec["train"]["steps"] > 0


def test_record_timings_are_consistent(host, tiny_config, tmp_path):
    """The rates in the record follow from its counts: examples/s = steps/s × batch, NFE/s = NFE × samples/s,
    samples/s × sampling seconds = n; warm-up steps are excluded and said so; every metric's seconds recorded."""
    job = _suite(host, tiny_config, "eval.metrics=['mmd', 'nfe_curve']").jobs[0]
    rec = records.read_record(run_job(host, job, tmp_path, progress=False).run_dir / "record.json")
    t = rec["timings"]
    assert rec["status"] == "ok" and t["train_steps"] == 12 and t["warmup_steps_excluded"] > 0
    assert t["examples_per_second"] == pytest.approx(t["steps_per_second"] * 32)
    assert t["nfe_per_second"] == pytest.approx(t["nfe_per_sample"] * t["samples_per_second"])
    assert t["samples_per_second"] * t["sample_seconds"] == pytest.approx(64)
    assert t["train_peak_memory_bytes"] > 0 and t["sample_peak_memory_bytes"] > 0 and t["peak_memory_kind"]
    assert set(t["metric_seconds"]) == {"mmd", "nfe_curve"} and all(v > 0 for v in t["metric_seconds"].values())
    assert rec["nfe"] == t["nfe_per_sample"] == 20  # the tiny sampler's 20 steps


def test_seconds_budget_stops_training(host, tiny_config, tmp_path):
    job = _suite(host, tiny_config, "train.steps=0", "train.seconds=0.3").jobs[0]
    out = run_job(host, job, tmp_path, progress=False)
    rec = records.read_record(out.run_dir / "record.json")
    assert rec["status"] == "ok" and rec["timings"]["train_steps"] > 0 and rec["timings"]["train_seconds"] >= 0.3


def test_cuda_request_without_cuda_is_a_usage_error(host, tiny_config):
    from harness.errors import UsageError
    from harness.runner import validate_suite

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="CUDA is not available"):
        validate_suite(host, _suite(host, tiny_config, "suite.device='cuda'"))


def test_every_phase_and_metric_shows_its_time_and_the_summary_lists_every_job(host, tiny_config, tmp_path):
    """With progress on, training, sampling and each metric print a line when they start and their seconds when
    they end; the summary has a row per job with its status and wall time."""
    from harness import progress
    from harness.runner import summary_table

    lines: list[str] = []
    suite = _suite(host, tiny_config, "suite.seeds=[0, 1]", "eval.metrics=['mmd', 'energy_distance']")
    with progress.active(True, log=lines.append):
        outs = run_suite(host, suite, out=tmp_path, progress=True, log=lambda *a: None)
    text = "\n".join(lines)
    for name in ("training", "sampling 64", "saving samples", "metric mmd", "metric energy_distance"):
        assert text.count(f"    {name} ...") == 2, (name, text)  # once per job
        assert len(re.findall(rf"^    {name}: done in \d+\.\d s$", text, re.M)) == 2, (name, text)
    table = summary_table(outs).splitlines()
    assert table[0].split() == ["job", "status", "seconds"]
    for out, row in zip(outs, table[1:3], strict=True):
        run_id, status, seconds = row.split()
        assert (run_id, status) == (out.run_id, "ok") and float(seconds) == pytest.approx(out.seconds, abs=0.05)
        assert out.seconds > 0
    assert table[3].split()[0] == "total"


def test_threads_are_applied_for_the_run_and_recorded(host, tiny_config, tmp_path, monkeypatch):
    from harness.runner import resolve_threads

    tiny = host.registries["methods"].get("tiny")
    original, seen = tiny.loss, []

    def spying_loss(self, model, batch, g):
        seen.append(torch.get_num_threads())
        return original(self, model, batch, g)

    monkeypatch.setattr(tiny, "loss", spying_loss)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outs = run_suite(host, _suite(host, tiny_config, "suite.threads=1"), out=tmp_path, progress=False,
                         log=lambda *a: None)
        assert torch.get_num_threads() == 2  # the caller's setting comes back after the run
    finally:
        torch.set_num_threads(before)
    assert set(seen) == {1}
    rec = records.read_record(outs[0].run_dir / "record.json")
    assert rec["threads"] == rec["hardware"]["threads"] == 1
    # 0 (the default): the cores this process may use, not the machine's count, nor more than torch was set to
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    torch.set_num_threads(8)
    try:
        assert resolve_threads(0) == 3 and resolve_threads(2) == 2
        torch.set_num_threads(1)  # e.g. OMP_NUM_THREADS=1, or this test session
        assert resolve_threads(0) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="suite.threads"):
        resolve_threads(-1)


def test_the_record_says_where_it_runs_and_beats_while_running(host, tiny_config, tmp_path):
    import time

    from harness.runner import RecordWriter

    rec = records.read_record(run_job(host, _suite(host, tiny_config).jobs[0], tmp_path, progress=False).run_dir
                              / "record.json")
    assert rec["host"] == records.hostname() and rec["pid"] == os.getpid() and rec["heartbeat_utc"]
    assert rec["checkpoint_step"] == 12
    # the heartbeat thread re-writes the last saved state while the job runs, and nothing after the final write
    writer = RecordWriter(tmp_path / "beat", interval=0.02)
    state = {"status": "running", "metrics": {}}
    writer.save(state)
    state["metrics"]["half-done"] = 1  # changed after the save: a heartbeat must not write it
    (tmp_path / "beat" / "record.json").unlink()
    deadline = time.monotonic() + 5
    while not (tmp_path / "beat" / "record.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    beat = json.loads((tmp_path / "beat" / "record.json").read_text())
    assert beat["status"] == "running" and beat["metrics"] == {} and beat["heartbeat_utc"]
    writer.close({"status": "ok", "metrics": {"m": 1}})
    (tmp_path / "beat" / "record.json").unlink()
    time.sleep(0.1)
    assert not (tmp_path / "beat" / "record.json").exists()


def test_a_killed_job_reads_as_interrupted_and_resume_picks_it_up(host, tiny_config, tmp_path, monkeypatch):
    """kill -9 leaves `status: running` with the pid of a dead process: it is `interrupted`, and --resume
    continues it from its checkpoint to the same weights as an uninterrupted run."""
    import subprocess
    import sys

    job = _suite(host, tiny_config).jobs[0]
    ref = run_job(host, job, tmp_path / "ref", progress=False)
    tiny = host.registries["methods"].get("tiny")
    original, calls = tiny.loss, {"n": 0}

    def crashing_loss(self, model, batch, g):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, model, batch, g)

    monkeypatch.setattr(tiny, "loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        run_job(host, job, tmp_path / "res", progress=False)
    monkeypatch.setattr(tiny, "loss", original)
    run_dir = tmp_path / "res" / "runs" / job.run_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec = records.read_record(run_dir / "record.json")
    rec.update(status="running", error=None, ended_utc=None, pid=dead.pid)  # what kill -9 leaves behind
    records.write_record(run_dir, rec)
    assert records.effective_status(records.read_record(run_dir / "record.json")) == "interrupted"

    # a record of a live process elsewhere is not resumed over
    rec["pid"] = os.getppid()
    records.write_record(run_dir, rec)
    busy = run_job(host, job, tmp_path / "res", resume=True, progress=False)
    assert busy.status == "running" and "still running" in busy.message

    rec["pid"] = dead.pid
    records.write_record(run_dir, rec)
    res = run_job(host, job, tmp_path / "res", resume=True, progress=False)
    assert res.status == "ok"
    assert records.read_record(run_dir / "record.json")["resumed_from_step"] == 5
    s1, m1, e1 = _weights(ref.run_dir)
    s2, m2, e2 = _weights(run_dir)
    assert s1 == s2 == 12 and _same(m1, m2) and _same(e1, e2)


def test_a_plugin_calling_sys_exit_during_a_job_fails_that_job_only(host, tiny_config, tmp_path, monkeypatch):
    """sys.exit inside a method is one job's failure, recorded like any exception: it neither ends the suite nor
    sets the process's exit code (a plugin's sys.exit(0) used to end `scorebench run` with 0)."""
    job = _suite(host, tiny_config).jobs[0]
    tiny = host.registries["methods"].get("tiny")

    def exiting_loss(self, model, batch, g):
        raise SystemExit(0)

    monkeypatch.setattr(tiny, "loss", exiting_loss)
    res = run_job(host, job, tmp_path, progress=False)
    rec = records.read_record(res.run_dir / "record.json")
    assert res.status == rec["status"] == "failed" and rec["error"]["type"] == "SystemExit"


def test_sampling_info_reaches_the_timings_as_gradient_evaluations(host, tiny_config, tmp_path):
    """The gradient evaluations a sampler reports (energy models) sit beside NFE in the timings; 0 otherwise."""
    job = _suite(host, tiny_config).jobs[0]
    rec = records.read_record(run_job(host, job, tmp_path, progress=False).run_dir / "record.json")
    assert rec["timings"]["grad_evals_per_sample"] == rec["sampling"].get("grad_evals", 0)
