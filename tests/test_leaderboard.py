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
                steps=400, nfe=100, train_seconds=2.0, run_id=None):
    cfg = {"method": method_cfg or {"sigma": 0.1}, "backbone": {"name": "mlp", "width": 16},
           "train": {"steps": steps, "seconds": 0.0, "batch_size": 32, "lr": 1e-3}}
    return {
        "schema_version": SCHEMA_VERSION, "method": method, "dataset": dataset, "seed": seed, "status": status,
        "run_id": run_id or f"{method}-{dataset}-s{seed}-{lb.short_hash([cfg, steps])}", "config": cfg,
        "budget": {"steps": steps, "seconds": 0.0}, "metrics": metrics or {}, "metric_errors": {},
        "error": None if status == "ok" else {"type": "X", "message": f"it {status}"},
        "timings": {"train_seconds": train_seconds}, "nfe": nfe, "params": 1000,
    }


def metric(value, hib=False, floor=None, n=500, **protocol):
    return {"value": value, "higher_is_better": hib, "floor": floor, "protocol": {"n": n, **protocol},
            "details": {}}


def put(results, rec):
    write_record(results / "runs" / rec["run_id"], rec)


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    for seed, v in enumerate([1.0, 2.0, 3.0]):
        put(res, make_record("alpha", seed=seed, metrics={"mmd": metric(v, floor=0.1 * (seed + 1)),
                                                           "iat": metric(10.0 + seed, n=8)}))
    for seed, v in enumerate([0.5, 1.5]):
        put(res, make_record("beta", seed=seed, metrics={"mmd": metric(v, floor=0.2)}))
    put(res, make_record("gamma", seed=0, status="diverged"))
    put(res, make_record("gamma", seed=1, status="failed"))
    return res


def table_rows(table):
    return {r.label: r for r in table.rows}


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


def test_table_rows_stats_rank_failed_and_floor(results):
    tables, problems = lb.build_tables(results)
    assert problems == []
    (t,) = tables  # one data set, one protocol, ranked by mmd (a primary metric) by default
    assert (t.dataset, t.metric, t.higher_is_better) == ("ring8", "mmd", False)
    rows = table_rows(t)
    assert rows["beta"].rank == 1 and rows["alpha"].rank == 2  # lower is better: 1.0 < 2.0
    assert rows["alpha"].value.mean == 2.0 and rows["alpha"].value.n == 3
    assert rows["alpha"].value.ci95 == pytest.approx(T_975_2 / math.sqrt(3))
    assert rows["gamma"].rank is None and rows["gamma"].note == "diverged/failed"
    assert rows["gamma"].runs == "1 diverged, 1 failed"
    floor = rows[lb.FLOOR_LABEL]
    # one floor per seed (the methods of a seed share the reference samples), averaged over seeds 0, 1, 2
    assert floor.is_floor and floor.value.n == 3 and floor.runs == "3 seeds"
    assert floor.value.mean == pytest.approx(((0.1 + 0.2) / 2 + (0.2 + 0.2) / 2 + 0.3) / 3)
    assert [r.label for r in t.rows] == ["beta", "alpha", "gamma", lb.FLOOR_LABEL]
    assert t.columns == ["iat"] and rows["alpha"].extra["iat"].mean == 11.0
    assert rows["beta"].extra["iat"].n == 0  # beta has no iat: empty cell, not zero


def test_higher_is_better_metric_ranks_the_other_way(results):
    (t,) = lb.build_tables(results, metric="iat")[0]
    assert t.higher_is_better is False
    put(results, make_record("beta", seed=5, metrics={"ess": metric(50.0, hib=True)}))
    (t,) = lb.build_tables(results, metric="ess")[0]
    assert t.higher_is_better is True and table_rows(t)["beta"].rank == 1


def test_different_protocols_are_separate_tables_naming_the_difference(results):
    put(results, make_record("alpha", seed=7, metrics={"mmd": metric(0.01, n=1000)}))  # a bigger n
    put(results, make_record("delta", seed=0, steps=800, metrics={"mmd": metric(0.02)}))  # another budget
    tables, _ = lb.build_tables(results)
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
    (t,) = lb.build_tables(res)[0]
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
    (t,) = lb.build_tables(res)[0]
    assert t.metric is None and t.rows[0].runs == "1 failed" and t.rows[0].note == "failed"
    assert "run status" in lb.to_markdown([t], [])


def test_dataset_and_metric_filters(results):
    put(results, make_record("alpha", dataset="banana", metrics={"mmd": metric(4.0)}))
    assert {t.dataset for t in lb.build_tables(results)[0]} == {"banana", "ring8"}
    assert {t.dataset for t in lb.build_tables(results, dataset="banana")[0]} == {"banana"}
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="no run record has metric 'fid'.*available: iat, mmd"):
        lb.write_leaderboard(results, metric="fid")


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
    rows = list(csv.DictReader(io.StringIO(lb.to_csv(tables))))
    alpha = next(r for r in rows if r["label"] == "alpha")
    assert float(alpha["mean"]) == 2.0 and float(alpha["ci95"]) == pytest.approx(T_975_2 / math.sqrt(3), rel=1e-5)
    assert alpha["rank"] == "2" and float(alpha["iat.mean"]) == 11.0
    assert next(r for r in rows if r["label"] == "gamma")["note"] == "diverged/failed"
    data = json.loads(lb.to_json(tables, problems))
    (jt,) = data["tables"]
    assert jt["metric"] == "mmd" and [r["label"] for r in jt["rows"]][:2] == ["beta", "alpha"]
    assert jt["rows"][1]["mean"] == 2.0 and jt["rows"][2]["mean"] is None  # JSON null, not NaN
    parser = _Tables()
    parser.feed(lb.to_html(tables, problems))
    assert parser.tables == 1 and "2 ± 2.5" in parser.cells and "beta" in parser.cells
    md = lb.to_markdown(tables, problems)
    assert "| 2 | alpha | 2 ± 2.5 | 3 | 3 ok | 100 | 2 | 11 ± 2.5 |" in md


def test_regeneration_is_byte_identical_whatever_the_order_of_records(results, tmp_path):
    text, written, _ = lb.write_leaderboard(results)
    assert [p.name for p in written] == ["leaderboard.md", "leaderboard.csv"]
    first = {p.name: p.read_bytes() for p in written}
    assert text.encode() == first["leaderboard.md"]
    # the same records written again in a shuffled order into a fresh folder
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


# the command line -------------------------------------------------------------------------------------------

def test_leaderboard_command(results, tmp_path):
    runner = CliRunner()
    group = cli
    r = runner.invoke(group, ["leaderboard", "--results", str(results)], catch_exceptions=False)
    assert r.exit_code == 0 and "| 1 | beta |" in r.output
    assert (results / "leaderboard.md").read_text() == r.stdout and "wrote " in r.stderr
    r = runner.invoke(group, ["leaderboard", "--results", str(results), "--format", "csv", "--metric", "iat"])
    assert r.exit_code == 0 and r.output.startswith("dataset,metric,") and ",iat," in r.output
    r = runner.invoke(group, ["leaderboard", "--results", str(results), "--format", "json", "--dataset", "ring8",
                              "--out", str(tmp_path / "lb.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "lb.json").read_text())["tables"]
    shutil.copytree(results, tmp_path / "copy")
    (tmp_path / "copy" / "runs" / "broken").mkdir()
    (tmp_path / "copy" / "runs" / "broken" / "record.json").write_text("{")
    (tmp_path / "copy" / "runs" / "binary").mkdir()
    (tmp_path / "copy" / "runs" / "binary" / "record.json").write_bytes(b"\xff\xfe\x00garbage")
    r = runner.invoke(group, ["leaderboard", "--results", str(tmp_path / "copy")])
    assert r.exit_code == 0 and "runs/broken/record.json" in r.stderr and "runs/binary/record.json" in r.stderr


def test_ok_run_without_the_metric_is_shown_as_na(results):
    put(results, make_record("eps", metrics={"iat": metric(3.0, n=8)}))  # e.g. a sampler with no mmd
    (t,) = lb.build_tables(results)[0]
    row = table_rows(t)["eps"]
    assert row.rank is None and row.note == "n/a" and row.runs == "1 ok" and row.extra["iat"].mean == 3.0


def test_extra_columns_split_by_protocol_short_names_or_legend(tmp_path):
    res = tmp_path / "r"
    long_a = {"chain": {"integrator": "BAOAB splitting", "step_size": 0.5}}
    long_b = {"chain": {"integrator": "Euler-Maruyama", "step_size": 0.01}}
    put(res, make_record("alpha", metrics={"mmd": metric(1.0), "iat": metric(5.0, n=8, **long_a),
                                           "ess": metric(9.0, hib=True, n=100)}))
    put(res, make_record("beta", metrics={"mmd": metric(2.0), "iat": metric(7.0, n=8, **long_b),
                                          "ess": metric(4.0, hib=True, n=200)}))
    (t,) = lb.build_tables(res)[0]
    assert t.columns == ["ess [n=100]", "ess [n=200]", "iat [p1]", "iat [p2]"]
    rows = table_rows(t)
    assert rows["alpha"].extra["ess [n=100]"].mean == 9.0 and rows["alpha"].extra["ess [n=200]"].n == 0
    assert rows["alpha"].extra["iat [p1]"].mean == 5.0 and rows["beta"].extra["iat [p2]"].mean == 7.0
    assert rows["alpha"].extra["iat [p2]"].n == 0  # never averaged across the two protocols
    legend = [n for n in t.notes if n.startswith("iat [p")]
    assert len(legend) == 2 and all("chain.integrator=" in n for n in legend)
