"""One job data-parallel over several processes (torchrun, gloo on CPU): the maths of a single-process run with the
same global batch, rank-0-only writes, sampling split over ranks, --resume across a change of the process count, and
`scorebench run --nproc N` as a shortcut for torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO

from harness import distributed as D
from harness.cli import cli

# A method whose loss draws no noise: with the same global batch, one process and two processes compute the same
# mean loss and (averaged) gradient, so their loss curves agree to float rounding. DET_STOP_AFTER=k raises Ctrl-C
# at the k+1-th loss evaluation (the first one counts FLOPs); DET_WATCH/DET_LOG log, per rank, every file written
# under DET_WATCH (a Python audit hook: open for writing, mkdir, rename/replace), to show who writes results.
PLUGIN = '''
import os
from dataclasses import dataclass

import torch

from harness.hookspecs import hookimpl
from harness.method import Method, MethodConfig, SampleResult, randn

if os.environ.get("DET_WATCH"):
    _watch = os.environ["DET_WATCH"]
    _log = os.open(os.path.join(os.environ["DET_LOG"], "rank%s.log" % os.environ.get("RANK", "x")),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _audit(event, args):
        if event == "open":
            path, writing = args[0], bool(args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        elif event in ("os.mkdir", "os.rename", "os.replace"):
            path, writing = args[1] if event != "os.mkdir" else args[0], True
        else:
            return
        if writing and isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(_watch):
            os.write(_log, ("%s %s\\n" % (event, os.fspath(path))).encode())

    import sys
    sys.addaudithook(_audit)


@dataclass
class DetConfig(MethodConfig):
    steps: int = 3


class Det(Method):
    """Deterministic regression loss (no noise): test only."""

    name = "det"
    Config = DetConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.calls = 0

    def build_model(self, backbone):
        return backbone(conditional=False)

    def loss(self, model, batch, generator):
        self.calls += 1
        if 0 <= int(os.environ.get("DET_STOP_AFTER", "-1")) < self.calls:
            raise KeyboardInterrupt
        return (model(batch, None) + 0.5 * batch).pow(2).sum(1)

    @torch.no_grad()
    def sample(self, model, n, generator):
        x = randn((n, *self.spec.shape), generator)
        for _ in range(self.config.steps):
            x = x + 0.1 * model(x, None)
        return SampleResult(x, nfe=self.config.steps)


@hookimpl
def register_methods(register):
    register(Det)
'''

CONFIG = """
[suite]
methods = ["det"]
datasets = ["ring8"]
seeds = [0]
device = "cpu"
threads = 1

[train]
steps = 12
batch_size = 32
lr = 1e-2
warmup_steps = 2
checkpoint_every = 5
log_every = 4

[eval]
n_samples = 33
sample_batch = 8
metrics = []

[backbones.mlp]
width = 16
depth = 1
"""


@pytest.fixture
def det(tmp_path):
    """(config path, plugins folder) of the deterministic test method on ring8."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "det_plugin.py").write_text(PLUGIN)
    config = tmp_path / "det.toml"
    config.write_text(CONFIG)
    return config, plugins


def _record(out):
    (path,) = out.glob("runs/*/record.json")
    return json.loads(path.read_text())


def _subprocess(args, tmp_path, **env):
    """`python -m harness ARGS` in a fresh process, one intra-op thread, plus `env`."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp_path, env=full, capture_output=True,
                          text=True, timeout=240)


# the helper's pure parts ------------------------------------------------------------------------------------

def test_shares_split_the_samples_and_the_batch_evenly():
    assert [D.share(33, 2, r) for r in range(2)] == [17, 16]
    assert [D.share(10, 4, r) for r in range(4)] == [3, 3, 2, 2]
    assert sum(D.share(1001, 7, r) for r in range(7)) == 1001
    rows = torch.arange(12)
    parts = [D.Group(rank=r, world_size=3).shard(rows) for r in range(3)]
    assert torch.equal(torch.cat(parts), rows) and all(p.shape[0] == 4 for p in parts)
    assert D.SINGLE.shard(rows) is rows and D.SINGLE.gather_rows(rows) is rows and D.SINGLE.broadcast(7) == 7


def test_a_batch_that_does_not_split_over_the_processes_is_refused(det, tmp_path, monkeypatch):
    config, plugins = det
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc-per-node 3 would set it
    r = CliRunner().invoke(cli, ["run", str(config), "--plugins-dir", str(plugins), "--out", str(tmp_path / "o"),
                                 "-q"])
    assert r.exit_code == 2, r.output
    assert "train.batch_size = 32 does not split evenly over 3 processes" in r.output
    assert "det on ring8" in r.output and not (tmp_path / "o").exists()


def test_nproc_relaunches_the_same_command_under_torchrun(det, tmp_path, monkeypatch):
    """`run --nproc 2 ...` runs `python -m torch.distributed.run --standalone --nproc-per-node 2 -m harness run`
    with the arguments given (not the defaults), without --nproc, and exits with torchrun's code."""
    config, plugins = det
    seen, real_run = {}, subprocess.run

    def fake_run(cmd, *args, **kwargs):  # torchrun is not started; anything else (git) runs
        if cmd[1:3] != ["-m", "torch.distributed.run"]:
            return real_run(cmd, *args, **kwargs)
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 3)
    monkeypatch.setattr(D.subprocess, "run", fake_run)
    out = str(tmp_path / "o")
    r = CliRunner().invoke(cli, ["run", str(config), "--set", "train.steps=3", "--nproc", "2", "--set",
                                 "eval.n_samples=4", "--out", out, "-q", "--plugins-dir", str(plugins)])
    assert r.exit_code == 3, r.output
    assert seen["cmd"] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "harness", "run", str(config), "--set", "train.steps=3", "--set",
                           "eval.n_samples=4", "--out", out, "--plugins-dir", str(plugins), "--quiet"]
    # inside a torchrun process --nproc is refused; --nproc 1 is an ordinary run (nothing relaunched)
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = CliRunner().invoke(cli, ["run", str(config), "--nproc", "2", "--out", out])
    assert r.exit_code == 2 and "already data-parallel" in r.output
    monkeypatch.delenv("WORLD_SIZE")
    seen.clear()
    r = CliRunner().invoke(cli, ["run", str(config), "--nproc", "1", "--plugins-dir", str(plugins), "--out", out,
                                 "-q"])
    assert r.exit_code == 0 and "cmd" not in seen and _record(tmp_path / "o")["distributed"]["world_size"] == 1


# two processes with gloo against one ---------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(det, tmp_path):
    """2 ranks (gloo on CPU) against 1 process with the same global batch of 32 on a noise-free loss: the same loss
    curve and weights to float rounding (only the summation order differs); rank 0 alone writes into the results
    folder; the 33 samples are rank 0's 17 from (seed, "sample/rank0") then rank 1's 16 from its own stream. Then a
    2-process run stopped at step 8 (checkpoint at 5) resumes in one process and ends on the one-process curve."""
    from harness.plugins import get_plugin_host
    from harness.runner import build_components, make_generator, sample_in_batches

    config, plugins = det
    common = [str(config), "--plugins-dir", str(plugins), "-q"]

    one = CliRunner().invoke(cli, ["run", *common, "--out", str(tmp_path / "one")])  # in this process
    assert one.exit_code == 0, one.output
    logs = tmp_path / "logs"
    logs.mkdir()
    two = _subprocess(["run", *common, "--out", str(tmp_path / "two"), "--nproc", "2"], tmp_path,
                      DET_WATCH=str(tmp_path / "two"), DET_LOG=str(logs))
    assert two.returncode == 0, two.stderr[-3000:]

    a, b = _record(tmp_path / "one"), _record(tmp_path / "two")
    assert a["run_id"] == b["run_id"] and b["status"] == "ok"  # the process count is not part of the job
    assert a["distributed"]["world_size"] == 1
    dist = b["distributed"]
    assert (dist["world_size"], dist["backend"], dist["per_rank_batch"], dist["global_batch"]) == (2, "gloo", 16, 32)
    assert "all-reduce" in dist["gradient_sync"] and [r["rank"] for r in dist["ranks"]] == [0, 1]
    assert b["pid"] == dist["ranks"][0]["pid"]
    np.testing.assert_allclose(b["train"]["loss_curve"], a["train"]["loss_curve"], rtol=1e-5, atol=1e-7)
    assert len(a["train"]["loss_curve"]) == 12 and a["train"]["loss_curve"][-1] < 0.1 * a["train"]["loss_curve"][0]
    ca, cb = (torch.load(next((tmp_path / d).glob("runs/*/checkpoint.pt")), weights_only=False) for d in ("one", "two"))
    for key in ca["model"]:
        torch.testing.assert_close(cb["model"][key], ca["model"][key], rtol=1e-5, atol=1e-6)
    assert cb["world_size"] == 2 and len(cb["noise_states"]) == 2 and "world_size" not in ca

    written = {r: (logs / f"rank{r}.log").read_text() if (logs / f"rank{r}.log").exists() else "" for r in (0, 1)}
    assert "record.json" in written[0] and "checkpoint.pt" in written[0] and "samples.npz" in written[0]
    assert written[1] == ""  # rank 1 wrote nothing under the results folder

    # the gathered samples: rank 0's share then rank 1's, each from its own stream, with the EMA weights
    samples = np.load(next((tmp_path / "two").glob("runs/*/samples.npz")))["samples"]
    assert samples.shape == (33, 2) and b["nfe"] == 3 and b["sampling"]["batches"] == 3 + 2
    host = get_plugin_host(plugins)
    from harness.config import load_suite

    job = load_suite(config, [], all_methods=host.registries["methods"].names()).jobs[0]
    comp = build_components(host, job, torch.device("cpu"))
    comp.model.load_state_dict(cb["ema"])
    comp.model.eval()
    for rank, rows in ((0, slice(0, 17)), (1, slice(17, 33))):
        g = make_generator(0, f"sample/rank{rank}", torch.device("cpu"))
        mine, _ = sample_in_batches(comp.method, comp.model, rows.stop - rows.start, 8, g)
        np.testing.assert_allclose(samples[rows], mine.numpy(), rtol=1e-5, atol=1e-6)

    # resume across a change of N: 2 processes stopped at step 8 (last checkpoint at 5), then 1 process
    stop = _subprocess(["run", *common, "--out", str(tmp_path / "resumed"), "--nproc", "2"], tmp_path,
                       DET_STOP_AFTER="9")  # evaluation 1 counts FLOPs; 2..9 are steps 0..7
    assert stop.returncode != 0
    c = _record(tmp_path / "resumed")
    assert c["status"] == "interrupted" and c["checkpoint_step"] == 5, c["error"]
    resumed = _subprocess(["run", *common, "--out", str(tmp_path / "resumed"), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = _record(tmp_path / "resumed")
    assert c["status"] == "ok" and c["resumed_from_step"] == 5 and c["train"]["steps"] == 12
    assert c["distributed"]["world_size"] == 1 and c["distributed"]["resumed"]["from_world_size"] == 2
    # the shared stream of batch indices continues across the change: the one-process curve, to rounding
    np.testing.assert_allclose(c["train"]["loss_curve"], a["train"]["loss_curve"], rtol=1e-5, atol=1e-7)


def test_the_readme_documents_torchrun():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("One job over several GPUs (torchrun)"):]
    for phrase in ("torchrun --nproc-per-node", "--nproc", "all-reduce", "train.batch_size", "rank 0"):
        assert phrase in section, phrase

