"""The command line through click's CliRunner: happy paths and each bad-input path with its exit code."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import cli


@pytest.fixture
def invoke(host):
    runner = CliRunner()

    def _invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return _invoke


def test_help_explains_every_command(invoke):
    out = invoke("--help").output
    for cmd in ("run", "list", "plugins", "doctor", "leaderboard"):
        assert cmd in out
    run_help = invoke("run", "--help").output
    for opt in ("--set", "--methods", "--datasets", "--seeds", "--device", "--out", "--resume", "--data-root",
                "--threads"):
        assert opt in run_help


def test_list_shows_name_description_provider(invoke):
    out = invoke("list", "methods").output
    assert "tiny" in out and "[fake]" in out and "dsm" in out and "[plugins.dsm]" in out
    assert "backbones:" in invoke("list").output


def test_plugins_is_json_with_hooks(invoke):
    data = json.loads(invoke("plugins").output)
    by_name = {p["name"]: p for p in data}
    assert by_name["fake"]["hooks"] == ["register_datasets", "register_methods"]
    assert by_name["plugins.dsm"]["error"] is None
    assert {"name", "version", "hooks", "error", "source"} <= set(by_name["fake"])


def test_run_happy_path_then_leaderboard(invoke, tiny_config, tmp_path):
    out = tmp_path / "res"
    r = invoke("run", tiny_config, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    recs = list(out.glob("runs/*/record.json"))
    assert len(recs) == 1 and json.loads(recs[0].read_text())["status"] == "ok"
    r = invoke("run", tiny_config, "--out", out, "--seeds", "0,1", "--set", "train.steps=3")
    assert r.exit_code == 0 and "2 jobs: 2 ok" in r.output
    board = invoke("leaderboard", "--results", out).output
    assert "gauss2" in board and "tiny" in board


def test_unknown_method_exits_2_with_suggestion(invoke, tiny_config):
    r = invoke("run", tiny_config, "--methods", "tinyy")
    assert r.exit_code == 2
    assert "unknown method 'tinyy'; did you mean 'tiny'?" in r.output and "available:" in r.output


def test_unknown_dataset_and_backbone_option(invoke, tiny_config):
    r = invoke("run", tiny_config, "--datasets", "gaus2")
    assert r.exit_code == 2 and "did you mean 'gauss2'" in r.output
    r = invoke("run", tiny_config, "--set", "backbones.mlp.widht=3")
    assert r.exit_code == 2 and "widht" in r.output and "did you mean 'width'" in r.output


def test_malformed_toml_exits_2_with_line(invoke, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[suite]\nmethods = [tiny\n")
    r = invoke("run", bad)
    assert r.exit_code == 2 and "bad.toml: invalid TOML" in r.output and "line 2" in r.output


def test_unknown_config_key_exits_2(invoke, tiny_config):
    r = invoke("run", tiny_config, "--set", "train.learning_rate=0.1")
    assert r.exit_code == 2 and "'learning_rate'" in r.output
    r = invoke("run", tiny_config, "--set", "methods.tiny.sigmaa=0.1")
    assert r.exit_code == 2 and "did you mean 'sigma'" in r.output


def test_misspelled_tables_and_metric_options_exit_2(invoke, tiny_config):
    """A table for a method, data set or metric option that does not exist is an error, never silently ignored."""
    for item, words in (("methods.tinyy.sigma=0.1", ["[methods.tinyy]", "did you mean 'tiny'"]),
                        ("datasets.gaus2.train.steps=3", ["[datasets.gaus2]", "did you mean 'gauss2'"]),
                        ("metrics.mmd.max_nn=3", ["[metrics.mmd]", "'max_nn'", "valid: max_n"]),
                        ("metrics.mmdd.max_n=3", ["unknown metric 'mmdd'", "did you mean 'mmd'"])):
        r = invoke("run", tiny_config, "--set", item)
        assert r.exit_code == 2, (item, r.output)
        for w in words:
            assert w in r.output, (item, w, r.output)
    r = invoke("run", tiny_config, "--set", "methods.dsm.sigma=0.1", "--set", "metrics.mixing.steps=10",
               "--out", "res", "--quiet")  # tables of registered names outside this suite are fine
    assert r.exit_code == 0, r.output


def test_missing_config_file_exits_2(invoke, tmp_path):
    r = invoke("run", tmp_path / "nope.toml")
    assert r.exit_code == 2 and "not found" in r.output


def test_missing_data_exits_2_and_says_where_it_looked(invoke, tiny_config, tmp_path):
    empty = tmp_path / "empty-root"
    r = invoke("run", tiny_config, "--datasets", "mnist", "--data-root", empty)
    assert r.exit_code == 2
    assert str(empty) in r.output and "--download" in r.output


def test_failed_job_exits_1_and_the_others_are_recorded(invoke, tiny_config, tmp_path):
    r = invoke("run", tiny_config, "--out", tmp_path, "--methods", "tiny,dsm",
               "--set", "methods.tiny.backbone='unet'", "--set", "methods.dsm.steps=5")
    assert r.exit_code == 1 and "1 ok" in r.output and "1 failed" in r.output
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("runs/*/record.json"))
    assert statuses == ["failed", "ok"]


def test_doctor_reports_versions_data_and_plugins(invoke, tmp_path):
    out = invoke("doctor", "--data-root", tmp_path).output
    for word in ("python", "torch", "data root", str(tmp_path), "plugins", "fid weights"):
        assert word in out
    rep = json.loads(invoke("doctor", "--json", "--data-root", tmp_path).output)
    assert rep["datasets"]["gauss2"]["found"] is True
    assert rep["datasets"]["mnist"]["found"] is False


def test_bad_plugins_dir_exits_2(invoke, tmp_path):
    r = invoke("list", "--plugins-dir", tmp_path / "missing")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_device_accepts_cuda_with_an_index(invoke, tiny_config):
    """cuda:N passes the command line like it passes the config; without CUDA the run then refuses (exit 2)."""
    import torch

    r = invoke("run", tiny_config, "--device", "gpu0")
    assert r.exit_code == 2 and "expected auto, cpu, cuda or cuda:N" in r.output
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cuda:0", "cuda:1", "cuda"):
        r = invoke("run", tiny_config, "--device", device)
        assert r.exit_code == 2 and "CUDA is not available" in r.output, (device, r.output)


QUICK_TINY = ["--methods", "tiny", "--datasets", "gauss2", "--set", "train.steps=3", "--set", "eval.n_samples=16",
              "--set", "eval.metrics=[]", "--quiet"]


def test_packaged_config_runs_from_any_folder_into_results_local(invoke, tmp_path):
    """No argument and `quick` both use the packaged config from a folder without configs/; records go to the
    untracked results/local."""
    from conftest import REPO

    from harness.runner import packaged_configs

    assert not (tmp_path / "configs").exists()  # the test runs in its own temporary folder
    for args in ([], ["quick"]):
        r = invoke("run", *args, *QUICK_TINY)
        assert r.exit_code == 0, (args, r.output)
    (path,) = tmp_path.glob("results/local/runs/*/record.json")
    rec = json.loads(path.read_text())
    assert rec["config"]["suite"]["out"] == "results/local"
    assert rec["config"]["train"]["lr"] == 2e-3 and rec["config"]["suite"]["device"] == "cpu"  # quick's values
    # one file: the repository's configs/quick.toml is the packaged one
    assert (REPO / "configs" / "quick.toml").resolve() == packaged_configs()["quick"].resolve()
    r = invoke("run", "quik", *QUICK_TINY)
    assert r.exit_code == 2 and "'quik' not found" in r.output and "packaged: cifar10, mnist, quick" in r.output


def test_ctrl_c_names_the_job_its_checkpoint_and_the_resume_command(invoke, host, tiny_config, tmp_path,
                                                                   monkeypatch):
    import shlex

    tiny = host.registries["methods"].get("tiny")
    original, calls = tiny.loss, {"n": 0}

    def crashing_loss(self, model, batch, g):
        calls["n"] += 1
        if calls["n"] == 9:  # call 1 counts training FLOPs; call 9 is step 8 of 12, after the step-5 checkpoint
            raise KeyboardInterrupt
        return original(self, model, batch, g)

    monkeypatch.setattr(tiny, "loss", crashing_loss)
    out = tmp_path / "res"
    r = invoke("run", tiny_config, "--set", "methods.tiny.sigma=0.4", "--out", out, "--threads", "1")
    assert r.exit_code == 130
    (rec_path,) = out.glob("runs/*/record.json")
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "interrupted" and rec["checkpoint_step"] == 5
    assert f"Interrupted: job {rec['run_id']} during training at step 7; last checkpoint at step 5" in r.stderr
    assert "Aborted!" not in r.output
    command = r.stderr.split("Continue with:\n")[1].strip()
    assert shlex.split(command) == ["scorebench", "run", str(tiny_config), "--set", "methods.tiny.sigma=0.4",
                                    "--threads", "1", "--out", str(out), "--resume"]
    assert f"{rec['run_id']}  interrupted" in r.stdout  # the summary so far

    monkeypatch.setattr(tiny, "loss", original)
    r = invoke(*shlex.split(command)[1:])
    assert r.exit_code == 0, r.output
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "ok" and rec["resumed_from_step"] == 5


def test_run_ends_with_a_summary_of_every_job_and_records_the_threads(invoke, tiny_config, tmp_path):
    r = invoke("run", tiny_config, "--out", tmp_path, "--seeds", "0,1", "--threads", "1")
    assert r.exit_code == 0, r.output
    recs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("runs/*/record.json"))]
    assert len(recs) == 2 and all(rec["threads"] == 1 for rec in recs)
    summary = r.stdout.split("job ")[1]
    for rec in recs:
        (row,) = [line for line in summary.splitlines() if line.startswith(rec["run_id"])]
        assert row.split()[1] == "ok" and float(row.split()[2]) > 0
