"""Jobs over Ray (`scorebench run --executor ray`): a local Ray instance on 2 CPUs runs tiny jobs whose method
comes from a plugins folder shipped to the workers. Known answers: the same job gives the same run id and, on CPU
with one thread, bit-identical metrics, loss curve and samples through Ray as locally; a job that raises is
recorded failed by run_job (not retried); a worker killed once is retried and succeeds; one killed every time is
recorded failed with the reason after --max-retries; Ctrl-C records exactly the unfinished jobs interrupted and
--resume completes them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from harness import records
from harness.cli import cli

PLUGIN = '''
"""Tiny fake methods for the Ray executor tests: shipped to the workers as a plugins-folder file."""
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.datasets import Dataset
from harness.hookspecs import hookimpl
from harness.method import Chain, Method, MethodConfig, SampleResult, randn
from harness.toy import GaussianMixture

MARKS = Path(r"{marks}")


class Gauss2(Dataset):
    """2-D Gaussian with an exact density (fake, for tests)."""

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


class TinyChain(Chain):
    stationary = True

    def __init__(self, model):
        self.model = model

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

    def build_model(self, backbone):
        return backbone(conditional=False)

    def fault(self):
        pass

    def loss(self, model, batch, g):
        self.fault()
        eps = randn(batch.shape, g)
        return (model(batch + self.config.sigma * eps, None) * self.config.sigma + eps).pow(2).sum(1)

    def sample(self, model, n, g):
        c = self.chain(model)
        x = c.init(n, g)
        for _ in range(self.config.steps):
            x = c.step(x, g)
        return SampleResult(x, self.config.steps)

    def chain(self, model):
        return TinyChain(model)


class TinyFail(Tiny):
    """Raises in its loss (fake, for tests)."""

    name = "tiny_fail"

    def fault(self):
        raise RuntimeError("tiny_fail: a bug in the plugin")


class TinyCrashOnce(Tiny):
    """Kills its own process the first time it trains (fake, for tests)."""

    name = "tiny_crash_once"

    def fault(self):
        mark = MARKS / "crashed-once"
        if not mark.exists():
            mark.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class TinyCrash(Tiny):
    """Kills its own process every time (fake, for tests)."""

    name = "tiny_crash"

    def fault(self):
        (MARKS / f"crash-{{os.getpid()}}").write_text("")
        os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def register_methods(register):
    for cls in (Tiny, TinyFail, TinyCrashOnce, TinyCrash):
        register(cls)


@hookimpl
def register_datasets(register):
    register(Gauss2)
'''

CONFIG = """
[suite]
methods = {methods}
datasets = ["gauss2"]
seeds = {seeds}
device = "cpu"
threads = 1

[train]
steps = 12
batch_size = 32
checkpoint_every = 5
warmup_steps = 2

[eval]
n_samples = 64
metrics = ["mmd", "energy_distance"]

[backbones.mlp]
width = 16
depth = 1
"""


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray instance on 2 CPUs for the module; the executor uses it as it is and leaves it running."""
    ray = pytest.importorskip("ray")
    cache = tmp_path_factory.mktemp("ray-xdg-cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning",
             runtime_env={"env_vars": {"SCOREBENCH_LOAD_PLUGINS": "", "XDG_CACHE_HOME": str(cache),
                                       "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def plugin_dir(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "tiny_ray.py").write_text(PLUGIN.format(marks=marks))
    return folder


def _config(tmp_path, methods, seeds=(0,)):
    path = tmp_path / f"cfg-{'-'.join(methods)}-{len(seeds)}.toml"
    path.write_text(CONFIG.format(methods=json.dumps(list(methods)), seeds=json.dumps(list(seeds))))
    return path


def _suite(config, plugin_dir):
    from harness.config import load_suite
    from harness.plugins import get_plugin_host

    host = get_plugin_host(plugin_dir)
    return host, load_suite(config, all_methods=host.registries["methods"].names())


def _by_method(out):
    recs, problems = records.iter_records(out)
    assert not problems
    return {r["method"]: r for r in recs}


def _same_result(a: dict, b: dict, a_dir, b_dir) -> None:
    """Bit-identical results: run id, metric values and errors, loss curve, NFE, samples (timings/host aside)."""
    assert a["run_id"] == b["run_id"] and a["status"] == b["status"] == "ok"
    assert {k: v["value"] for k, v in a["metrics"].items()} == {k: v["value"] for k, v in b["metrics"].items()}
    assert {k: v["stderr"] for k, v in a["metrics"].items()} == {k: v["stderr"] for k, v in b["metrics"].items()}
    assert a["train"]["loss_curve"] == b["train"]["loss_curve"] and a["train"]["steps"] == b["train"]["steps"] == 12
    assert a["nfe"] == b["nfe"] and a["params"] == b["params"] and a["threads"] == b["threads"] == 1
    with np.load(a_dir / "samples.npz") as x, np.load(b_dir / "samples.npz") as y:
        assert np.array_equal(x["samples"], y["samples"])


@pytest.mark.slow  # a Ray instance and worker processes
def test_a_suite_over_ray_records_every_job_as_a_local_run_would(ray_local, plugin_dir, tmp_path):
    cfg = _config(tmp_path, ["tiny", "tiny_fail", "tiny_crash_once", "tiny_crash"])
    out = tmp_path / "ray"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--executor", "ray", "--max-retries", "1", "--plugins-dir",
                                   str(plugin_dir), "--out", str(out), "--quiet"])
    assert res.exit_code == 1, res.output  # a job failed; the suite went on
    recs = _by_method(out)
    assert {m: r["status"] for m, r in recs.items()} == {
        "tiny": "ok", "tiny_fail": "failed", "tiny_crash_once": "ok", "tiny_crash": "failed"}
    host = records.hostname()
    ok = recs["tiny"]
    assert ok["host"] == ok["executor"]["worker_host"] == host and ok["executor"]["kind"] == "ray"
    assert ok["executor"]["results"] == "shared" and ok["executor"]["attempt"] == 1  # same machine: shared folder
    assert ok["executor"]["resources"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    run_dir = out / "runs" / ok["run_id"]
    for name in ("record.json", "samples.npz", "samples.png", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    assert not list(out.glob(".scorebench-executor-*"))  # the driver's marker is gone
    # a job's own failure is recorded by run_job and not retried
    assert recs["tiny_fail"]["error"]["type"] == "RuntimeError" and recs["tiny_fail"]["executor"]["attempt"] == 1
    # killed once: retried, and the retry's result is the job's result
    assert recs["tiny_crash_once"]["executor"]["attempt"] == 2
    # killed every time: failed with the reason after 1 + max_retries attempts
    crash = recs["tiny_crash"]
    assert crash["error"]["type"] == "WorkerCrashedError" and crash["error"]["attempts"] == 2
    assert "died in each of 2 attempt(s)" in crash["error"]["message"] and crash["executor"]["worker_host"] == host
    assert len(list((plugin_dir.parent / "marks").glob("crash-*"))) == 2
    assert "failed" in res.output and "4 jobs: 2 ok, 0 diverged, 2 failed" in res.output

    # the same job locally (this process, one thread): same run id, same numbers bit for bit
    local = tmp_path / "local"
    res = CliRunner().invoke(cli, ["run", str(_config(tmp_path, ["tiny"])), "--plugins-dir", str(plugin_dir),
                                   "--out", str(local), "--quiet"])
    assert res.exit_code == 0, res.output
    loc = _by_method(local)["tiny"]
    assert "executor" not in loc  # the local executor writes today's record
    _same_result(ok, loc, run_dir, local / "runs" / loc["run_id"])
    rec_crash_once = recs["tiny_crash_once"]
    assert rec_crash_once["train"]["loss_curve"] == loc["train"]["loss_curve"]  # a retry starts the same job again


@pytest.mark.slow  # a Ray instance and worker processes
def test_a_worker_without_the_results_folder_returns_the_files(ray_local, plugin_dir, tmp_path):
    """results="returned" (no shared storage): the worker runs in a temporary folder and returns the record and
    every file but the checkpoint; the driver writes them, and the numbers are those of the shared mode."""
    from harness.executors import RayExecutor
    from harness.runner import run_suite

    host, suite = _suite(_config(tmp_path, ["tiny"]), plugin_dir)
    shared = run_suite(host, suite, out=tmp_path / "shared", progress=False, log=lambda *a: None,
                       executor=RayExecutor())
    returned = run_suite(host, suite, out=tmp_path / "returned", progress=False, log=lambda *a: None,
                         executor=RayExecutor(results="returned"))
    assert [o.status for o in shared] == [o.status for o in returned] == ["ok"]
    a_dir, b_dir = shared[0].run_dir, returned[0].run_dir
    assert b_dir == tmp_path / "returned" / "runs" / suite.jobs[0].run_id
    a, b = records.read_record(a_dir / "record.json"), records.read_record(b_dir / "record.json")
    _same_result(a, b, a_dir, b_dir)
    assert b["executor"]["results"] == "returned" and "checkpoint" not in b["artifacts"]
    assert sorted(p.name for p in b_dir.iterdir()) == ["record.json", "samples.npz", "samples.png"]
    assert a["artifacts"]["checkpoint"] == "checkpoint.pt" and (a_dir / "checkpoint.pt").is_file()


@pytest.mark.slow  # a Ray instance and worker processes
def test_ctrl_c_records_the_unfinished_jobs_interrupted_and_resume_completes_them(ray_local, plugin_dir,
                                                                                 tmp_path):
    from harness.executors import RayExecutor
    from harness.runner import Interrupted, run_suite

    host, suite = _suite(_config(tmp_path, ["tiny"], seeds=(0, 1, 2, 3)), plugin_dir)
    out = tmp_path / "out"

    def ctrl_c_after_the_first_job(counts):
        if counts["done"] >= 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        run_suite(host, suite, out=out, progress=False, log=lambda *a: None,
                  executor=RayExecutor(on_update=ctrl_c_after_the_first_job))
    statuses = {o.run_id: o.status for o in info.value.outcomes}
    assert len(statuses) == 4 and set(statuses.values()) <= {"ok", "interrupted"}
    # 2 CPUs, 4 jobs: when the first finishes the third has only just started, the fourth not at all
    assert list(statuses.values()).count("interrupted") >= 2
    on_disk = {r["run_id"]: r for r in records.iter_records(out)[0]}
    assert {k: r["status"] for k, r in on_disk.items()} == statuses  # exactly what the outcomes say, none running
    for rec in on_disk.values():
        if rec["status"] == "interrupted":
            assert "rerun with --resume" in rec["error"]["message"]

    outcomes = run_suite(host, suite, out=out, resume=True, progress=False, log=lambda *a: None,
                         executor=RayExecutor())
    assert [o.status for o in outcomes] == ["ok"] * 4
    for o in outcomes:  # the finished ones were skipped, the interrupted ones ran
        assert ("already complete" in o.message) == (statuses[o.run_id] == "ok")


@pytest.mark.slow  # a Ray worker process
def test_a_worker_without_a_plugin_the_driver_loaded_records_the_job_failed_naming_it(ray_local, host, tiny_config,
                                                                                      tmp_path):
    """The conftest's fake plugin lives only in this process (added by hand, not installed, not a file of the
    plugins folder): a worker cannot load it, so the job is recorded failed, naming the plugin."""
    from harness.config import load_suite
    from harness.executors import RayExecutor
    from harness.runner import run_suite

    suite = load_suite(tiny_config, ["suite.threads=1"], all_methods=host.registries["methods"].names())
    (res,) = run_suite(host, suite, out=tmp_path / "out", progress=False, log=lambda *a: None,
                       executor=RayExecutor())
    rec = records.read_record(res.run_dir / "record.json")
    assert res.status == rec["status"] == "failed" and rec["error"]["type"] == "UsageError"
    assert "lacks plugin(s) fake" in rec["error"]["message"] and rec["executor"]["worker_host"] == records.hostname()


def test_ray_options_need_the_ray_executor_and_ray_itself(tmp_path, monkeypatch):
    """Without Ray installed, --executor ray is a usage error (exit 2) naming the extra; Ray options with the
    local executor are usage errors too."""
    cfg = _config(tmp_path, ["tiny"])
    res = CliRunner().invoke(cli, ["run", str(cfg), "--gpus-per-job", "1", "--quiet"])
    assert res.exit_code == 2 and "only apply to --executor ray" in res.output
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    res = CliRunner().invoke(cli, ["run", str(cfg), "--executor", "ray", "--quiet"])
    assert res.exit_code == 2, res.output
    assert 'pip install -e ".[ray]"' in res.output


def test_the_resume_command_keeps_the_executor_options():
    from harness.runner import resume_command

    line = resume_command("c.toml", out="o", extra=["--executor", "ray", "--max-retries", "2"])
    assert line == "scorebench run c.toml --out o --executor ray --max-retries 2 --resume"
