"""Leaderboards from hand-written run records: statistics against known answers, protocol separation, failed
runs shown, bad records skipped by path, formats, determinism, and the command line."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from harness import leaderboard as lb
from harness.cli import cli
from harness.records import SCHEMA_VERSION, write_record

# Student t quantiles in closed form: df = 1 is Cauchy, t_p = tan(π(p − ½)); df = 2: t_p = (2p − 1)/√(2p(1 − p))
T_975_1 = math.tan(math.pi * (0.975 - 0.5))  # 12.7062...
T_975_2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)  # 4.3027...


def make_record(method="alpha", dataset="ring8", seed=0, status="ok", metrics=None, method_cfg=None,
                steps=400, nfe=100, train_seconds=2.0, run_id=None, **extra):
    cfg = {"method": method_cfg or {"sigma": 0.1}, "backbone": {"name": "mlp", "width": 16},
           "train": {"steps": steps, "seconds": 0.0, "batch_size": 32, "lr": 1e-3}}
    return {
        "schema_version": SCHEMA_VERSION, "method": method, "dataset": dataset, "seed": seed, "status": status,
        "run_id": run_id or f"{method}-{dataset}-s{seed}-{lb.short_hash([cfg, steps])}", "config": cfg,
        "budget": {"steps": steps, "seconds": 0.0}, "metrics": metrics or {}, "metric_errors": {},
        "error": None if status == "ok" else {"type": "X", "message": f"it {status}"},
        "timings": {"train_seconds": train_seconds}, "nfe": nfe, "params": 1000, **extra,
    }


def metric(value, hib=False, floor=None, n=500, stderr=None, lower_bound=None, details=None, **protocol):
    out = {"value": value, "higher_is_better": hib, "floor": floor, "protocol": {"n": n, **protocol},
           "details": details or {}}
    if stderr is not None:
        out["stderr"] = stderr
    if lower_bound is not None:
        out["lower_bound"] = lower_bound
    return out


def put(results, rec):
    write_record(results / "runs" / rec["run_id"], rec)


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    for seed, v in enumerate([1.0, 2.0, 3.0]):
        put(res, make_record("alpha", seed=seed, metrics={"mmd": metric(v, floor=0.1 * (seed + 1)),
                                                           "sw": metric(10.0 + seed, n=8)}))
    for seed, v in enumerate([0.5, 1.5]):
        put(res, make_record("beta", seed=seed, metrics={"mmd": metric(v, floor=0.2)}))
    put(res, make_record("gamma", seed=0, status="diverged"))
    put(res, make_record("gamma", seed=1, status="failed"))
    return res


def kind(tables, k="quality"):
    return [t for t in tables if t.kind == k]


def table_rows(table):
    return {r.label: r for r in table.rows}


Z975 = 1.959963984540054  # standard normal 0.975 quantile


def test_mean_and_t_interval_match_known_values():
    mean, ci, sd, n = lb.mean_ci([1.0, 2.0, 3.0])
    assert (mean, sd, n) == (2.0, 1.0, 3)
    assert ci == pytest.approx(T_975_2 * 1.0 / math.sqrt(3), rel=1e-12)
    mean, ci, sd, n = lb.mean_ci([0.5, 1.5, float("nan")])  # non-finite values are not averaged
    assert (mean, n) == (1.0, 2) and ci == pytest.approx(T_975_1 * math.sqrt(0.5) / math.sqrt(2), rel=1e-12)
    assert math.isnan(lb.mean_ci([4.0])[1]) and lb.mean_ci([])[3] == 0


def test_ranks_follow_the_metric_direction():
    assert lb.ranks([3.0, 1.0, 2.0, math.nan], higher_is_better=False) == [3, 1, 2, None]
    assert lb.ranks([3.0, 1.0, 2.0], higher_is_better=True) == [1, 3, 2]
    assert lb.ranks([1.0, 1.0, 2.0], higher_is_better=False) == [1, 1, 3]


# 1. uncertainty ---------------------------------------------------------------------------------------------

def test_combined_interval_formula():
    nan = math.nan
    # one seed: ± z · stderr; unknown stderr: no interval
    mean, half, _, k, rms = lb.combined_interval([0.03], [0.002])
    assert (mean, k, rms) == (0.03, 1, 0.002) and half == pytest.approx(Z975 * 0.002, rel=1e-9)
    assert math.isnan(lb.combined_interval([0.03], [nan])[1])
    # seeds spread more than the evaluation noise: the t-interval over seeds
    _, half, sd, k, _ = lb.combined_interval([1.0, 2.0, 3.0], [0.1, 0.1, 0.1])
    assert (sd, k) == (1.0, 3) and half == pytest.approx(T_975_2 / math.sqrt(3), rel=1e-12)
    # seeds agree by chance: the evaluation variance is the floor, t_{0.975,1} · sqrt(mean s² / k)
    _, half, _, _, rms = lb.combined_interval([1.0, 1.0], [0.3, 0.4])
    assert rms == pytest.approx(math.sqrt(0.125)) and half == pytest.approx(T_975_1 * math.sqrt(0.125 / 2))
    # old records (no stderr): the plain t-interval over seeds
    assert lb.combined_interval([1.0, 2.0, 3.0], [nan] * 3)[1] == pytest.approx(T_975_2 / math.sqrt(3))


def test_one_seed_with_stderr_has_an_interval_and_overlapping_values_share_a_rank(tmp_path):
    # the ring8 case: gaps smaller than the evaluation's own noise are no ranking
    res = tmp_path / "r"
    for m, v in (("dsm", 0.0311), ("sde", 0.0315), ("walk_jump", 0.0318), ("ssm", 0.0511)):
        put(res, make_record(m, metrics={"mmd": metric(v, stderr=0.002 if m != "ssm" else 0.001)}))
    (t,) = kind(lb.build_tables(res)[0])
    rows = table_rows(t)
    assert rows["dsm"].value.ci95 == pytest.approx(Z975 * 0.002)
    assert [(rows[m].rank, rows[m].rank_hi) for m in ("dsm", "sde", "walk_jump")] == [(1, 3)] * 3
    assert (rows["ssm"].rank, rows["ssm"].rank_hi) == (4, 4)
    md = lb.to_markdown([t], [])
    assert "| 1–3 | dsm | 0.0311 ± 0.0039 | 1 |" in md and "| 4 | ssm | 0.0511 ± 0.0020 | 1 |" in md


def test_digits_follow_the_interval_and_bare_values_have_three():
    assert lb.fmt_interval(0.031123, 0.00431) == "0.0311 ± 0.0043"
    assert lb.fmt_interval(1228.3, 123.0) == "1230 ± 120"
    assert lb.fmt_interval(2.981, 1.31) == "3.0 ± 1.3"
    assert lb.fmt_sig(0.0311234) == "0.0311" and lb.fmt_sig(22.3) == "22.3" and lb.fmt_sig(-0.00054313) == "-0.000543"
    assert lb.fmt_sig(1228.4, direction="down") == "1220" and lb.fmt_sig(0.09223, direction="up") == "0.0923"
    # without uncertainty, values equal to 3 significant digits tie; others are ranked apart
    assert lb.rank_ranges([lb.Cell(0.03112).interval(), lb.Cell(0.03114).interval(), lb.Cell(0.0318).interval()],
                          False) == [(1, 2), (1, 2), (3, 3)]


def test_seed_spread_widens_the_interval_in_the_table(results):
    rows = table_rows(kind(lb.build_tables(results)[0])[0])
    assert rows["alpha"].value.mean == 2.0 and rows["alpha"].value.n == 3
    assert rows["alpha"].value.ci95 == pytest.approx(T_975_2 / math.sqrt(3))
    # alpha 2 ± 2.5 and beta 1 ± 6.4 overlap: they share places 1–2
    assert (rows["alpha"].rank, rows["alpha"].rank_hi) == (rows["beta"].rank, rows["beta"].rank_hi) == (1, 2)


# 2. four tables ---------------------------------------------------------------------------------------------

def mixing_metrics(iat, ess, reliable=None, lower_bound=None, hops=5.0):
    det = {} if reliable is None else {"reliable": reliable}
    proto = {"steps": 1000, "n_chains": 4}
    return {"iat": metric(iat, details=det, lower_bound=lower_bound, **proto),
            "ess_per_1k_nfe": metric(ess, hib=True, **proto), "rhat": metric(1.01, **proto),
            "mode_hops_per_1k_steps": metric(hops, hib=True, **proto)}


def test_four_tables_with_units_and_lower_bound_iact_never_ranked(tmp_path):
    res = tmp_path / "r"
    timings = {"train_seconds": 2.0, "steps_per_second": 200.0, "samples_per_second": 50.0,
               "sample_gflops_per_sample": 1.5}
    put(res, make_record("alpha", metrics={"mmd": metric(0.1, stderr=0.01), **mixing_metrics(40.0, 9.0)},
                         timings=timings))
    put(res, make_record("beta", metrics={"mmd": metric(0.5, stderr=0.01),
                                          **mixing_metrics(1228.4, 20.0, lower_bound=True)}))
    put(res, make_record("gamma", metrics={"mmd": metric(0.9, stderr=0.01),
                                           **mixing_metrics(300.0, 30.0, reliable=False)}))  # an older record
    put(res, make_record("sde", metrics={"mmd": metric(0.3, stderr=0.01)}))  # no chain
    tables, _ = lb.build_tables(res)
    assert [t.kind for t in tables] == ["quality", "cost", "mixing", "training"]
    q, cost, mix, train = tables
    assert all(c not in q.columns for c in ("IACT (steps)", "ESS / 1k NFE", "R̂"))
    assert cost.columns == ["NFE / sample", "GFLOPs / sample", "s / sample"]
    assert table_rows(cost)["alpha"].extra["s / sample"].mean == pytest.approx(0.02)
    assert train.columns == ["steps", "train s", "steps / s", "parameters"]
    assert mix.metric == "ess_per_1k_nfe" and mix.columns == ["IACT (steps)", "mode hops / 1k steps", "R̂"]
    rows = table_rows(mix)
    assert rows["alpha"].rank == 1 and rows["beta"].rank is None and rows["gamma"].rank is None
    assert "sde" not in rows and any("no mixing chain: sde" in n for n in mix.notes)
    md = lb.to_markdown(tables, [])
    assert "| — | beta | < 20.0 | 1 | 1 ok | > 1220 |" in md and "| — | gamma | < 30.0 | 1 | 1 ok | > 300 |" in md
    assert "ESS / 1k NFE (95% CI)" in md and "### ring8: mixing (ranked by ESS / 1k NFE, higher is better)" in md
    assert "| alpha | 1 | 1 ok | 100 | 1.50 | 0.0200 |" in md and "| alpha | 1 | 1 ok | 400 | 2.00 | 200 | 1000 |" in md


def test_fisher_divergence_only_at_one_common_sigma(tmp_path):
    res = tmp_path / "r"
    put(res, make_record("alpha", metrics={"mmd": metric(0.1), "fisher_divergence": metric(2.0, sigma=0.5)}))
    put(res, make_record("beta", metrics={"mmd": metric(0.2), "fisher_divergence": metric(3.0, sigma=0.5)}))
    (q,) = kind(lb.build_tables(res)[0])
    assert q.columns == ["Fisher divergence (σ=0.500)"] and table_rows(q)["beta"].extra[q.columns[0]].mean == 3.0
    put(res, make_record("gamma", metrics={"mmd": metric(0.3), "fisher_divergence": metric(1.0, sigma=0.1)}))
    (q,) = kind(lb.build_tables(res)[0])
    assert q.columns == [] and any("Fisher divergence left out: measured at different σ" in n for n in q.notes)
    put(res, make_record("delta", metrics={"mmd": metric(0.4)}))
    (q,) = kind(lb.build_tables(res)[0])
    assert not any(c.startswith("Fisher") for c in q.columns)


def test_column_names_say_what_they_hold(tmp_path):
    res = tmp_path / "r"
    curve = metric(0.05, statistic="mmd", factors=[0.1, 0.25, 0.5])
    put(res, make_record("alpha", metrics={"mmd": metric(0.1), "nfe_curve": curve}))
    (q,) = kind(lb.build_tables(res)[0])
    assert q.columns == ["MMD² at 0.1× sampler length"] and q.metric_label == "MMD²"
    put(res, make_record("beta", metrics={"mmd": metric(0.1), "nfe_curve": {**curve, "label": "MMD² at 10% NFE"}}))
    put(res, make_record("alpha", metrics={"mmd": metric(0.1), "nfe_curve": {**curve, "label": "MMD² at 10% NFE"}}))
    (q,) = kind(lb.build_tables(res)[0])
    assert q.columns == ["MMD² at 10% NFE"]  # the record's own label wins


# 3. sampling protocols --------------------------------------------------------------------------------------

def test_walk_jump_protocols_are_named_in_labels_and_notes(tmp_path):
    res = tmp_path / "r"
    for proto, v in (("parallel", 0.1), ("long_chain", 0.2)):
        put(res, make_record("walk_jump", method_cfg={"sigma": 1.0, "protocol": proto, "chains": 8},
                             metrics={"mmd": metric(v)}, sampling={"protocol": proto}))
    (q,) = kind(lb.build_tables(res)[0])
    assert {r.label for r in q.rows} == {"walk_jump [method.protocol=long_chain, sampling.protocol=long_chain]",
                                         "walk_jump [method.protocol=parallel, sampling.protocol=parallel]"}
    assert any("walk_jump rows were sampled under different protocols" in n for n in q.notes)


# 4. dedup ---------------------------------------------------------------------------------------------------

def test_copies_of_one_run_and_repeated_seeds_count_once(tmp_path):
    res = tmp_path / "r"
    rec = make_record("alpha", metrics={"mmd": metric(1.0)}, ended_utc="2026-01-02T00:00:00Z")
    write_record(res / "runs" / "machine-a", rec)
    write_record(res / "runs" / "machine-b", {**rec, "metrics": {"mmd": metric(3.0)},
                                              "ended_utc": "2026-01-03T00:00:00Z"})  # newer copy
    write_record(res / "runs" / "machine-c", {**rec, "status": "running", "ended_utc": None,
                                              "started_utc": "2026-02-01T00:00:00Z"})  # incomplete copy
    put(res, make_record("alpha", metrics={"mmd": metric(5.0)}, run_id="alpha-rerun-same-seed",
                         ended_utc="2025-01-01T00:00:00Z"))
    put(res, make_record("alpha", seed=1, metrics={"mmd": metric(2.0)}))
    tables, problems = lb.build_tables(res)
    row = table_rows(kind(tables)[0])["alpha"]
    assert (row.value.n, row.value.mean, row.runs) == (2, 2.5, "2 ok")  # seeds 0 (3.0, the newest) and 1
    dropped = sorted(p.split(":")[0].split("/runs/")[1] for p in problems)
    assert dropped == ["alpha-rerun-same-seed/record.json", "machine-a/record.json", "machine-c/record.json"]
    assert all("kept" in p and "machine-b" in p for p in problems if "machine-" in p.split(":")[0])


# 5. command line --------------------------------------------------------------------------------------------

def test_stale_running_records_are_interrupted_and_unranked(tmp_path, monkeypatch):
    from harness import records

    res = tmp_path / "r"
    put(res, make_record("alpha", metrics={"mmd": metric(1.0)}))
    put(res, make_record("beta", status="running", metrics={"mmd": metric(0.5)}, heartbeat_utc="2020-01-01T00:00:00Z"))
    monkeypatch.setattr(records, "effective_status", lambda rec: "interrupted" if rec["status"] == "running"
                        else rec["status"], raising=False)
    (q,) = kind(lb.build_tables(res)[0])
    rows = table_rows(q)
    assert rows["beta"].rank is None and rows["beta"].runs == "1 interrupted" and rows["beta"].note == "interrupted"
    assert rows["alpha"].rank == 1


def test_filters_print_only_and_unknown_names_exit_2(results):
    put(results, make_record("alpha", dataset="banana", metrics={"mmd": metric(4.0)}))
    assert {t.dataset for t in lb.build_tables(results)[0]} == {"banana", "ring8"}
    assert {t.dataset for t in lb.build_tables(results, dataset="banana")[0]} == {"banana"}
    runner = CliRunner()
    base = ["leaderboard", "--results", str(results)]
    assert runner.invoke(cli, base).exit_code == 0
    default = {p: p.read_bytes() for p in results.glob("leaderboard.*")}
    assert len(default) == 2
    for args in (["--dataset", "banana"], ["--metric", "sw"], ["--format", "csv"]):
        r = runner.invoke(cli, base + args)
        assert r.exit_code == 0 and "wrote" not in r.stderr, args
        assert {p: p.read_bytes() for p in results.glob("leaderboard.*")} == default, args
    r = runner.invoke(cli, base + ["--dataset", "ring"])
    assert r.exit_code == 2 and "did you mean 'ring8'" in r.stderr and "available: banana, ring8" in r.stderr
    r = runner.invoke(cli, base + ["--metric", "mdm"])
    assert r.exit_code == 2 and "did you mean 'mmd'" in r.stderr and "available: mmd, sw" in r.stderr
    r = runner.invoke(cli, base + ["--dataset", "banana", "--metric", "sw"])
    assert r.exit_code == 2 and "available: mmd" in r.stderr
    assert {p: p.read_bytes() for p in results.glob("leaderboard.*")} == default


def test_a_folder_without_records_is_an_error_and_stays_untouched(tmp_path):
    runner = CliRunner()
    missing = tmp_path / "nothing"
    r = runner.invoke(cli, ["leaderboard", "--results", str(missing)])
    assert r.exit_code == 2 and "no run records" in r.stderr and not missing.exists()
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    r = runner.invoke(cli, ["leaderboard", "--results", str(empty)])
    assert r.exit_code == 2 and [p.name for p in empty.rglob("*")] == ["runs"]


# protocols, variants, bad records, formats (kept from before) -----------------------------------------------

def test_table_rows_stats_rank_failed_and_floor(results):
    tables, problems = lb.build_tables(results)
    assert problems == []
    (t,) = kind(tables)  # one data set, one protocol, ranked by mmd (a primary metric) by default
    assert (t.dataset, t.metric, t.higher_is_better) == ("ring8", "mmd", False)
    rows = table_rows(t)
    assert rows["gamma"].rank is None and rows["gamma"].note == "diverged/failed"
    assert rows["gamma"].runs == "1 diverged, 1 failed"
    floor = rows[lb.FLOOR_LABEL]
    # one floor per seed (the methods of a seed share the reference samples), averaged over seeds 0, 1, 2
    assert floor.is_floor and floor.value.n == 3 and floor.runs == "3 seeds"
    assert floor.value.mean == pytest.approx(((0.1 + 0.2) / 2 + (0.2 + 0.2) / 2 + 0.3) / 3)
    assert [r.label for r in t.rows] == ["beta", "alpha", "gamma", lb.FLOOR_LABEL]
    assert t.columns == ["sw"] and rows["alpha"].extra["sw"].mean == 11.0
    assert rows["beta"].extra["sw"].n == 0  # beta has no sw: empty cell, not zero


def test_higher_is_better_metric_ranks_the_other_way(results):
    put(results, make_record("beta", seed=5, metrics={"ess": metric(50.0, hib=True)}))
    put(results, make_record("alpha", seed=5, metrics={"ess": metric(5.0, hib=True)}))
    (t,) = kind(lb.build_tables(results, metric="ess")[0])
    assert t.higher_is_better is True and table_rows(t)["beta"].rank == 1 and table_rows(t)["alpha"].rank == 2


def test_different_protocols_are_separate_tables_naming_the_difference(results):
    put(results, make_record("alpha", seed=7, metrics={"mmd": metric(0.01, n=1000)}))  # a bigger n
    put(results, make_record("delta", seed=0, steps=800, metrics={"mmd": metric(0.02)}))  # another budget
    tables = kind(lb.build_tables(results)[0])
    by_diff = {lb.describe(t.differs): t for t in tables}
    assert len(tables) == 3
    assert set(by_diff) == {"budget.steps=400, n=500", "budget.steps=400, n=1000", "budget.steps=800, n=500"}
    small = by_diff["budget.steps=400, n=500"]
    assert table_rows(small)["alpha"].value.n == 3  # the n=1000 value is not averaged in
    big = by_diff["budget.steps=400, n=1000"]
    assert table_rows(big)["alpha"].value.mean == 0.01 and table_rows(big)["alpha"].runs == "1 ok"
    assert "beta" not in table_rows(big)  # beta was measured, under the other protocol
    assert table_rows(big)["gamma"].note == table_rows(small)["gamma"].note == "diverged/failed"
    assert "delta" not in table_rows(small) and table_rows(by_diff["budget.steps=800, n=500"])["delta"].rank == 1
    md = lb.to_markdown(tables, [])
    assert "Not comparable with the other ring8 tables: they differ in budget.steps, n." in md


def test_config_variants_are_separate_rows_labelled_by_what_differs(tmp_path):
    res = tmp_path / "r"
    put(res, make_record("alpha", method_cfg={"sigma": 0.1}, metrics={"mmd": metric(1.0)}))
    put(res, make_record("alpha", method_cfg={"sigma": 0.2}, metrics={"mmd": metric(2.0)}))
    (t,) = kind(lb.build_tables(res)[0])
    assert [r.label for r in t.rows] == ["alpha [method.sigma=0.1]", "alpha [method.sigma=0.2]"]  # no floor given
    assert len({r.variant for r in t.rows}) == 2


def test_bad_records_are_reported_by_path_and_skipped(results):
    bad = {"truncated": '{"schema_version": 1, "run_id": "x", "meth',
           "future": json.dumps({**make_record("zeta"), "schema_version": 99}),
           "missing": json.dumps({k: v for k, v in make_record("eta").items() if k != "metrics"}),
           "wrongtype": json.dumps({**make_record("theta"), "metrics": {"mmd": 3.0}})}
    for name, text in bad.items():
        (results / "runs" / name).mkdir(parents=True)
        (results / "runs" / name / "record.json").write_text(text)
    tables, problems = lb.build_tables(results)
    assert len(problems) == 4
    for name in bad:
        assert any(f"runs/{name}/record.json" in p for p in problems), (name, problems)
    assert any("schema_version 99" in p for p in problems) and any("missing fields metrics" in p for p in problems)
    assert {r.label for r in tables[0].rows} == {"alpha", "beta", "gamma", lb.FLOOR_LABEL}
    assert "## Skipped records" in lb.to_markdown(tables, problems)


def test_only_failed_runs_still_give_a_table(tmp_path):
    res = tmp_path / "r"
    put(res, make_record("alpha", status="failed"))
    (t,) = kind(lb.build_tables(res)[0])
    assert t.metric is None and t.rows[0].runs == "1 failed" and t.rows[0].note == "failed"
    assert "run status" in lb.to_markdown([t], [])


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.cells = 0, []

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"

    def handle_data(self, data):
        self.cells.append(data)


def test_formats_carry_the_same_numbers(results):
    tables, problems = lb.build_tables(results)
    rows = [r for r in csv.DictReader(io.StringIO(lb.to_csv(tables))) if r["table"] == "quality"]
    alpha = next(r for r in rows if r["label"] == "alpha")
    assert float(alpha["mean"]) == 2.0 and float(alpha["ci95"]) == pytest.approx(T_975_2 / math.sqrt(3), rel=1e-5)
    assert (alpha["rank"], alpha["rank_worst"]) == ("1", "2") and float(alpha["sw.mean"]) == 11.0
    assert next(r for r in rows if r["label"] == "gamma")["note"] == "diverged/failed"
    data = json.loads(lb.to_json(tables, problems))
    jt = data["tables"][0]
    assert (jt["kind"], jt["metric"]) == ("quality", "mmd")
    assert [r["label"] for r in jt["rows"]][:2] == ["beta", "alpha"]
    assert jt["rows"][1]["mean"] == 2.0 and jt["rows"][2]["mean"] is None  # JSON null, not NaN
    parser = _Tables()
    parser.feed(lb.to_html(tables, problems))
    assert parser.tables == len(tables) == 3 and "2.0 ± 2.5" in parser.cells and "beta" in parser.cells
    md = lb.to_markdown(tables, problems)
    assert "| 1–2 | alpha | 2.0 ± 2.5 | 3 | 3 ok | 11.0 ± 2.5 |" in md


def test_regeneration_is_byte_identical_whatever_the_order_of_records(results, tmp_path):
    text, written, _ = lb.write_leaderboard(results)
    assert [p.name for p in written] == ["leaderboard.md", "leaderboard.csv"]
    first = {p.name: p.read_bytes() for p in written}
    assert text.encode() == first["leaderboard.md"]
    other = tmp_path / "other"
    recs = [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/record.json"))]
    random.Random(3).shuffle(recs)
    for r in recs:
        put(other, r)
    lb.write_leaderboard(other)
    for name, data in first.items():
        assert (other / name).read_bytes() == data
    lb.write_leaderboard(results)
    assert {p.name: p.read_bytes() for p in written} == first


def test_write_single_format_to_a_path(results, tmp_path):
    text, written, _ = lb.write_leaderboard(results, out=tmp_path / "b.json")
    assert written == [tmp_path / "b.json"] and json.loads(text)["tables"]
    text, written, _ = lb.write_leaderboard(results, fmt="html")
    assert written == [] and text.startswith("<!DOCTYPE html>")


def test_leaderboard_command(results, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["leaderboard", "--results", str(results)], catch_exceptions=False)
    assert r.exit_code == 0 and "| 1–2 | beta |" in r.output
    assert (results / "leaderboard.md").read_text() == r.stdout and "wrote " in r.stderr
    r = runner.invoke(cli, ["leaderboard", "--results", str(results), "--format", "csv", "--metric", "sw"])
    assert r.exit_code == 0 and r.output.startswith("dataset,table,metric,") and ",sw," in r.output
    r = runner.invoke(cli, ["leaderboard", "--results", str(results), "--format", "json", "--dataset", "ring8",
                            "--out", str(tmp_path / "lb.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "lb.json").read_text())["tables"]
    shutil.copytree(results, tmp_path / "copy")
    (tmp_path / "copy" / "runs" / "broken").mkdir()
    (tmp_path / "copy" / "runs" / "broken" / "record.json").write_text("{")
    (tmp_path / "copy" / "runs" / "binary").mkdir()
    (tmp_path / "copy" / "runs" / "binary" / "record.json").write_bytes(b"\xff\xfe\x00garbage")
    r = runner.invoke(cli, ["leaderboard", "--results", str(tmp_path / "copy")])
    assert r.exit_code == 0 and "runs/broken/record.json" in r.stderr and "runs/binary/record.json" in r.stderr


def test_ok_run_without_the_metric_is_shown_as_na(results):
    put(results, make_record("eps", metrics={"sw": metric(3.0, n=8)}))  # e.g. a sampler with no mmd
    (t,) = kind(lb.build_tables(results)[0])
    row = table_rows(t)["eps"]
    assert row.rank is None and row.note == "n/a" and row.runs == "1 ok" and row.extra["sw"].mean == 3.0


def test_extra_columns_split_by_protocol_short_names_or_legend(tmp_path):
    res = tmp_path / "r"
    long_a = {"chain": {"integrator": "BAOAB splitting", "step_size": 0.5}}
    long_b = {"chain": {"integrator": "Euler-Maruyama", "step_size": 0.01}}
    put(res, make_record("alpha", metrics={"mmd": metric(1.0), "sw": metric(5.0, n=8, **long_a),
                                           "ess": metric(9.0, hib=True, n=100)}))
    put(res, make_record("beta", metrics={"mmd": metric(2.0), "sw": metric(7.0, n=8, **long_b),
                                          "ess": metric(4.0, hib=True, n=200)}))
    (t,) = kind(lb.build_tables(res)[0])
    assert t.columns == ["ess [n=100]", "ess [n=200]", "sw [p1]", "sw [p2]"]
    rows = table_rows(t)
    assert rows["alpha"].extra["ess [n=100]"].mean == 9.0 and rows["alpha"].extra["ess [n=200]"].n == 0
    assert rows["alpha"].extra["sw [p1]"].mean == 5.0 and rows["beta"].extra["sw [p2]"].mean == 7.0
    assert rows["alpha"].extra["sw [p2]"].n == 0  # never averaged across the two protocols
    legend = [n for n in t.notes if n.startswith("sw [p")]
    assert len(legend) == 2 and all("chain.integrator=" in n for n in legend)


# 6. what harness/report.py uses -----------------------------------------------------------------------------

def test_the_names_the_report_uses_still_exist(results):
    runs, values, problems = lb.load_runs(results)
    assert {"run_id", "method", "dataset", "variant", "status", "seed"} <= set(runs.columns)
    labels = lb.variant_labels(runs)
    tables, problems = lb.build_tables(results, None)
    t = tables[0]
    assert (t.dataset, t.metric, t.higher_is_better, t.kind) == ("ring8", "mmd", False, "quality") and t.title
    r = t.rows[0]
    assert (r.label, r.is_floor) == (labels[(r.method, r.variant)], False)
    assert all(math.isfinite(x) for x in (r.value.mean, r.value.ci95, r.nfe, r.train_seconds)) and r.value.n == 2
    assert "<table" in lb.to_html_fragment(tables, problems, heading_level=3) and lb.HTML_STYLE
    assert lb.status_summary(["ok", "failed", "ok"]) == "2 ok, 1 failed" and lb.to_number("nan") != 0
    assert lb.canonical({"b": 1, "a": 2}) == '{"a":2,"b":1}' and lb.flatten({"a": {"b": 1}}) == {"a.b": 1}


def test_sampling_totals_and_batches_do_not_split_variants():
    """Two runs differing only in n or the sample batch (so in total NFE and batch count) are one treatment; a
    different sampling protocol is another."""
    from harness.leaderboard.load import variant_config

    def rec(**sampling):
        return {"config": {"method": {"a": 1}, "train": {}}, "sampling": sampling}

    a = rec(protocol="parallel", total_nfe=500, batches=1, nfe_mean=101, grad_evals=0)
    b = rec(protocol="parallel", total_nfe=1000, batches=4, nfe_mean=101.0, grad_evals=0)
    assert variant_config(a) == variant_config(b)
    assert variant_config(a) != variant_config(rec(protocol="long_chain", total_nfe=500))
