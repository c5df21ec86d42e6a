"""Config resolution: defaults < file < per-data-set tables < --set; unknown keys and bad types are errors."""

from __future__ import annotations

import pytest

from harness.config import TrainConfig, load_suite, parse_set, resolve_suite
from harness.errors import ConfigError


def test_resolution_order():
    raw = {
        "suite": {"methods": ["a"], "datasets": ["x", "y"], "seeds": [0, 1]},
        "train": {"steps": 50, "lr": 1},
        "datasets": {"y": {"train": {"steps": 7}, "methods": {"a": {"k": 1}}}},
    }
    suite = resolve_suite(raw, sets=["train.batch_size=16"])
    assert [(j.dataset, j.seed) for j in suite.jobs] == [("x", 0), ("x", 1), ("y", 0), ("y", 1)]
    x, y = suite.jobs[0], suite.jobs[2]
    assert (x.train.steps, y.train.steps) == (50, 7)
    assert x.train.lr == 1.0 and isinstance(x.train.lr, float)  # int coerced to the field's float
    assert x.train.batch_size == y.train.batch_size == 16
    assert x.train.ema == TrainConfig().ema  # untouched defaults stay
    assert (x.method_options, y.method_options) == ({}, {"k": 1})
    # --set wins over the per-data-set table
    suite = resolve_suite(raw, sets=["train.steps=3"])
    assert {j.train.steps for j in suite.jobs} == {3}


def test_run_ids_are_stable_and_config_sensitive():
    raw = {"suite": {"methods": ["a"], "datasets": ["x"]}}
    a = resolve_suite(raw).jobs[0].run_id
    assert a == resolve_suite(raw).jobs[0].run_id
    assert a != resolve_suite(raw, sets=["train.lr=0.5"]).jobs[0].run_id
    assert a == resolve_suite(raw, sets=["suite.out=elsewhere"]).jobs[0].run_id


def test_all_methods_expands():
    suite = resolve_suite({"suite": {"methods": ["all"], "datasets": ["x"]}}, all_methods=["m1", "m2"])
    assert [j.method for j in suite.jobs] == ["m1", "m2"]


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"trian": {}}, r"unknown top-level table 'trian'; did you mean 'train'"),
        ({"train": {"stepz": 3}}, r"unknown key in \[train\] 'stepz'; did you mean 'steps'.*available:"),
        ({"train": {"steps": "ten"}}, r"train.steps = 'ten': expected int"),
        ({"train": {"steps": 0, "seconds": 0}}, "budget"),
        ({"datasets": {"x": {"suite": {}}}}, r"unknown table in \[datasets.x\] 'suite'"),
        ({"eval": {"metrics": "fid"}}, r"eval.metrics = 'fid': expected list"),
    ],
)
def test_bad_configs_name_the_key(raw, match):
    raw = {"suite": {"methods": ["a"], "datasets": ["x"]}, **raw}
    with pytest.raises(ConfigError, match=match):
        resolve_suite(raw)


def test_malformed_toml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nsteps = 10\nlr = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML: .*line 3"):
        load_suite(p)


def test_parse_set_values():
    assert parse_set("train.steps=10") == (["train", "steps"], 10)
    assert parse_set("suite.device=cpu") == (["suite", "device"], "cpu")
    assert parse_set("eval.metrics=['mmd', 'fid']") == (["eval", "metrics"], ["mmd", "fid"])
    assert parse_set("methods.dsm.denoise=false") == (["methods", "dsm", "denoise"], False)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set("train.steps")


def test_a_list_typed_without_quotes_is_accepted():
    """`--set eval.metrics=[fid_cnn,mmd]` as a shell leaves it: bare words in brackets (before: the string
    "[fid_cnn,mmd]", then "expected list")."""
    assert parse_set("eval.metrics=[fid_cnn,mmd]") == (["eval", "metrics"], ["fid_cnn", "mmd"])
    assert parse_set("eval.metrics=[fid_cnn, mmd,]") == (["eval", "metrics"], ["fid_cnn", "mmd"])
    assert parse_set("train.betas=[0.5, 0.9]") == (["train", "betas"], [0.5, 0.9])
    assert parse_set("suite.seeds=[1,2]") == (["suite", "seeds"], [1, 2])
    suite = resolve_suite({"suite": {"methods": ["a"], "datasets": ["x"]}}, sets=["eval.metrics=[fid_cnn,mmd]"])
    assert suite.jobs[0].eval.metrics == ["fid_cnn", "mmd"]


@pytest.mark.parametrize("item", ["eval.metrics=[a,[b]]", "eval.metrics=[a", "eval.metrics=[a,,b]"])
def test_a_malformed_list_says_how_to_write_one(item):
    with pytest.raises(ConfigError, match=r"--set .*eval.metrics"):
        parse_set(item)


def test_expected_list_says_how_to_write_one():
    how = r"""expected list; .*--set eval.metrics=\[a,b\] or --set 'eval.metrics=\["a", "b"\]'"""
    with pytest.raises(ConfigError, match=how):
        resolve_suite({"suite": {"methods": ["a"], "datasets": ["x"]}}, sets=["eval.metrics=mmd"])
