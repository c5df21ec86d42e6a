"""The sampler track (suite.model = "oracle"): configs/samplers.toml run tiny, no training, records of track
"sampler-oracle" with the bias, mixing, mode and MMD metrics, the leaderboard's samplers table and the report's plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import ORACLE_TRACK, SuiteConfig, load_suite, load_toml
from harness.errors import ConfigError
from harness.method import has_oracle
from harness.runner import run_suite, validate_suite

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "samplers.toml"


def _suite(host, sets=()):
    return load_suite(CONFIG, list(sets), all_methods=host.registries["methods"].names())


def test_model_switch_is_checked():
    assert SuiteConfig().model == "trained"
    with pytest.raises(ConfigError, match="suite.model.*'orcale'.*oracle"):
        SuiteConfig(model="orcale")


def test_oracle_jobs_have_their_own_run_ids(host):
    sets = ["suite.methods=[dsm]", "suite.datasets=[ring8]"]
    trained = load_suite(ROOT / "configs" / "quick.toml", sets)
    oracle = load_suite(ROOT / "configs" / "quick.toml", [*sets, "suite.model=oracle"])
    assert trained.jobs[0].run_id != oracle.jobs[0].run_id
    assert "model" not in trained.jobs[0].fingerprint()  # trained run ids are unchanged


def test_oracle_suite_needs_oracles_and_targets(host):
    assert all(has_oracle(e.obj) for e in host.registries["methods"] if e.name != "tiny")  # every built-in
    with pytest.raises(ConfigError, match=r"method\(s\) tiny.*have none"):  # the fake test method has none
        validate_suite(host, _suite(host, ["suite.methods=[tiny]", "suite.datasets=[ring8]"]))
    with pytest.raises(ConfigError, match="exact target; digits have none"):
        validate_suite(host, _suite(host, ["suite.methods=[dsm]", "suite.datasets=[ring8,digits]"]))


def test_samplers_config_runs_tiny_without_training(host, tmp_path):
    raw = load_toml(CONFIG)
    assert raw["suite"]["model"] == "oracle"
    assert set(raw["suite"]["datasets"]) <= set(host.registries["datasets"].names())
    datasets = ["banana", "ring8", "unequal10"]  # a non-mixture, a 2-D mixture, a 10-D mixture with unequal weights
    methods = ["dsm", "mdsm", "sde", "ssm", "walk_jump"]
    sets = [f"suite.methods=[{','.join(methods)}]", f"suite.datasets=[{','.join(datasets)}]",
            "eval.n_samples=64", "eval.sample_batch=64", "metrics.bias.n_chains=4", "metrics.bias.steps=40",
            "metrics.mixing.n_chains=4", "metrics.mixing.burn_in=10", "metrics.mixing.steps=60",
            "metrics.nll.n=16", "methods.dsm.steps=20", "methods.walk_jump.steps=10", "methods.walk_jump.jump_every=4",
            "methods.sde.steps=10", "methods.mdsm.hot_steps=5", "methods.mdsm.cool_steps=5",
            "methods.mdsm.final_steps=5", "methods.ssm.steps_per_level=2"]
    suite = _suite(host, sets)
    outs = run_suite(host, suite, out=tmp_path, progress=False, log=lambda *a: None)
    assert [o.status for o in outs] == ["ok"] * len(outs), [o.message for o in outs]
    from harness.records import iter_records

    recs, _ = iter_records(tmp_path)
    assert len(recs) == len(methods) * len(datasets)
    for r in recs:
        assert r["track"] == ORACLE_TRACK and r["model"]["kind"] == "oracle"
        assert r["train"]["steps"] == 0 and r["timings"]["train_seconds"] == 0
        assert "checkpoint" not in r["artifacts"] and not (tmp_path / "runs" / r["run_id"] / "checkpoint.pt").exists()
        m = r["metrics"]
        assert "mmd" in m
        if r["dataset"] in ("ring8", "unequal10"):
            assert "mode_weight_error" in m
        stationary = r["method"] in ("dsm", "walk_jump", "ssm", "mdsm")
        if stationary:
            for name in ("bias_evals", "bias_gflops", "iat", "ess_per_1k_nfe", "rhat", "nested_rhat"):
                assert name in m, (r["method"], name, r["metric_errors"])
            curve = m["bias_evals"]["details"]["curve"]
            assert len(curve["evals"]) == len(curve["bias2"]) > 1
        else:
            assert "bias_evals" not in m
    wj = next(r for r in recs if r["method"] == "walk_jump")
    assert wj["metrics"]["bias_evals"]["protocol"]["positions"] == "readout every 4 steps"
    assert wj["metrics"]["bias_evals_every_step"]["protocol"]["positions"] == "readout every step"
    # walk-jump's protocol: (k + 1) evaluations per jump interval, over 4 chains
    assert wj["metrics"]["bias_evals"]["details"]["curve"]["evals"][0] == 4 * 5

    from harness.leaderboard import build_tables, render

    tables, _ = build_tables(tmp_path)
    samplers = [t for t in tables if t.kind == "samplers"]
    assert [t.dataset for t in samplers] == sorted(datasets) and len(tables) == len(samplers)
    assert {r.method for r in samplers[0].rows} == set(methods)
    assert "samplers with exact scores" in render(tables, [], "md")

    from harness.report import build_report

    index, _ = build_report(tmp_path, log=lambda *a: None)
    assert "Samplers with exact scores" in index.read_text()
    assert (index.parent / "img" / "plots" / f"{datasets[0]}_bias.png").exists()


def test_packaged_copy_is_the_config():
    from harness.runner import packaged_configs

    assert packaged_configs()["samplers"].read_text() == CONFIG.read_text()


def test_bias_not_applicable_without_a_stationary_chain():
    from plugins.metrics import METRICS

    bias = next(m for m in METRICS if m.name == "bias")
    assert bias.requires == frozenset({"chain", "target"}) and bias.higher_is_better is False
