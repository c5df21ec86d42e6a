"""The embedded default, `scorebench run configs/quick.toml` (the packaged `quick`), end to end at a reduced budget:
every built-in method on the 2-D ring and on digits, through the real CLI, records with every applicable metric,
and the leaderboard."""

from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner
from conftest import REPO

from harness.cli import cli

REDUCED = [  # the quick config's structure, a fraction of its budget
    "train.steps=12", "datasets.digits.train.steps=12", "train.warmup_steps=2", "train.checkpoint_every=6",
    "eval.n_samples=64", "eval.sample_batch=64",
    "methods.dsm.steps=10", "methods.sde.steps=8", "methods.mdsm.hot_steps=4", "methods.mdsm.cool_steps=8",
    "methods.mdsm.final_steps=4", "methods.ssm.steps_per_level=2", "methods.ssm.langevin_steps=20",
    "methods.walk_jump.steps=10",
    "metrics.mixing.n_chains=4", "metrics.mixing.burn_in=10", "metrics.mixing.steps=60",
]
METHODS = ("dsm", "mdsm", "sde", "ssm", "walk_jump")
TOY_METRICS = {"mmd", "energy_distance", "sliced_wasserstein", "mode_coverage"}
IMAGE_METRICS = {"fid_cnn", "kid_cnn", "class_kl"}
MIXING = {"iat", "ess_bulk", "ess_tail", "rhat", "ess_per_second", "ess_per_1k_nfe"}


def test_quick_config_runs_end_to_end(tmp_path):
    out = tmp_path / "results"
    args = ["run", str(REPO / "configs" / "quick.toml"), "--out", str(out), "--quiet"]
    for item in REDUCED:
        args += ["--set", item]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    recs = {(rec["method"], rec["dataset"]): rec
            for rec in (json.loads(p.read_text()) for p in out.glob("runs/*/record.json"))}
    assert set(recs) == {(m, d) for m in METHODS for d in ("ring8", "digits")}
    for (method, ds), rec in recs.items():
        where = f"{method} on {ds}"
        assert rec["status"] == "ok", (where, rec["error"])
        assert rec["metric_errors"] == {}, (where, rec["metric_errors"])
        assert rec["params"] > 0 and rec["nfe"] > 0 and rec["timings"]["train_peak_memory_bytes"] > 0
        assert (out / "runs" / rec["run_id"] / "samples.png").stat().st_size > 0
        wanted = set(TOY_METRICS if ds == "ring8" else IMAGE_METRICS)
        wanted |= MIXING if method != "sde" else set()  # sde has no stationary chain
        missing = wanted - set(rec["metrics"])
        assert not missing, f"{where}: metrics {sorted(missing)} missing from the record"
        # nfe_curve records its value as <statistic>_at_<factor>x_sampler (the shortest sampler it ran)
        assert any(name.endswith("x_sampler") for name in rec["metrics"]), (where, sorted(rec["metrics"]))
        for name, m in rec["metrics"].items():
            assert isinstance(m["value"], float) and m["higher_is_better"] in (True, False), (where, name)
    for ds, metric in (("ring8", "mmd"), ("ring8", "energy_distance"), ("digits", "fid_cnn")):
        floors = {recs[(m, ds)]["metrics"][metric]["floor"] for m in METHODS}
        assert len(floors) == 1, f"{metric} on {ds}: every method must face the same reference samples: {floors}"
    assert "nll" in recs[("sde", "ring8")]["metrics"]
    img = recs[("sde", "digits")]["metrics"]  # bits/dim of the 8-bit digits through the probability-flow ODE
    assert img["bits_per_dim"]["value"] == pytest.approx(img["nll"]["value"] / (64 * math.log(2)))
    assert "fisher_divergence" in recs[("walk_jump", "ring8")]["metrics"]

    board = CliRunner().invoke(cli, ["leaderboard", "--results", str(out)])
    assert board.exit_code == 0, board.output
    for ds in ("ring8", "digits"):  # each data set's table under its primary quality metric
        assert re.search(rf"^## {ds}: \w+", board.stdout, re.M), board.stdout
        section = re.split(rf"^## {ds}: \w+", board.stdout, flags=re.M)[1].split("\n## ")[0]
        # ranks are places, or a range ("2–4") where intervals overlap; rows in order of their best place
        ranked = re.findall(r"^\| (\d)(?:–(\d))? \| (\w+) \|", section, re.M)
        assert sorted(m for _, _, m in ranked) == sorted(METHODS), section
        places = [(int(lo), int(hi or lo)) for lo, hi, _ in ranked]
        assert all(1 <= lo <= hi <= 5 for lo, hi in places) and places == sorted(places), section
        assert "| floor | real vs real" in section
