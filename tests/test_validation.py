"""Bad input is refused before any work: sizes and budgets, metrics that cannot apply, every split the job reads."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.config import EvalConfig, TrainConfig, load_suite, resolve_suite
from harness.errors import ConfigError, DataError
from harness.runner import validate_suite


def _run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)], catch_exceptions=False)


# sizes, budgets and rates ------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, match", [
    ("train.batch_size=0", r"train.batch_size = 0: expected an integer >= 1"),
    ("eval.n_samples=0", r"eval.n_samples = 0: expected an integer >= 1"),
    ("eval.sample_batch=-2", r"eval.sample_batch = -2: expected an integer >= 1"),
    ("train.lr=-0.001", r"train.lr = -0.001: expected a finite number > 0"),
    ("train.lr=nan", r"train.lr = nan: expected a finite number > 0"),
    ("train.ema=1.0", r"train.ema = 1.0: expected a rate in \[0, 1\)"),
    ("train.ema=-0.5", r"train.ema = -0.5: expected a rate in \[0, 1\)"),
    ("train.precision='fp16'", r"unknown train.precision 'fp16'.*available: bf16, fp32"),
    ("train.steps=-5", r"train.steps = -5: expected an integer >= 0"),
    ("train.warmup_steps=-1", r"train.warmup_steps = -1: expected an integer >= 0"),
    ("train.betas=[0.9, 1.5]", r"train.betas = \[0.9, 1.5\]: expected two numbers in \[0, 1\)"),
    ("eval.divergence_factor=0", r"eval.divergence_factor = 0.0: expected a finite number > 0"),
])
def test_bad_sizes_and_rates_name_the_key_and_what_is_valid(setting, match):
    with pytest.raises(ConfigError, match=match):
        resolve_suite({"suite": {"methods": ["a"], "datasets": ["x"]}}, sets=[setting])


def test_the_dataclasses_refuse_on_construction():
    """Every entry point (files, --set, the kit, a direct construction) gets the same checks."""
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="budget"):
        TrainConfig(steps=0, seconds=0.0)
    with pytest.raises(ConfigError, match="eval.n_samples"):
        EvalConfig(n_samples=0)
    assert TrainConfig(steps=0, seconds=1.0).seconds == 1.0  # a time budget alone is a budget
    assert TrainConfig(ema=0.0, grad_clip=0.0, checkpoint_every=0).ema == 0.0  # 0 switches these off


@pytest.mark.parametrize("setting, key", [("train.batch_size=0", "train.batch_size"),
                                          ("eval.n_samples=0", "eval.n_samples")])
def test_run_refuses_before_any_job(host, tiny_config, tmp_path, setting, key):
    """Before: batch_size=0 was recorded as the method diverging, n_samples=0 failed after training."""
    r = _run(tiny_config, "--out", tmp_path / "out", "--set", setting)
    assert r.exit_code == 2 and key in r.output, r.output
    assert not (tmp_path / "out" / "runs").exists()


# metrics that cannot apply -----------------------------------------------------------------------------------

def _suite(tiny_config, *sets):
    return load_suite(tiny_config, sets=list(sets))


def test_metric_for_the_wrong_data_kind_names_metric_dataset_and_what_applies(host, tiny_config):
    with pytest.raises(ConfigError) as err:
        validate_suite(host, _suite(tiny_config, "eval.metrics=[fid_cnn]"))
    msg = str(err.value)
    assert "'fid_cnn'" in msg and "'gauss2'" in msg and "vector data" in msg
    applies = msg.split("Metrics that apply here: ")[1].split(";")[0].split(", ")
    # gauss2 has an exact target; tiny has a stationary chain and a sampler length, but no score or likelihood
    assert applies == ["bias", "energy_distance", "mixing", "mmd", "mode_coverage", "nfe_curve", "sliced_wasserstein"]


def test_image_metric_list_for_digits(host, tiny_config):
    with pytest.raises(ConfigError, match=r"metric 'mmd' does not apply to method 'dsm' on data set 'digits' "
                                          r"\(it applies to vector data; 'digits' is image data\)"
                                          r".*apply here: class_kl, fid_cnn, fid_inception, mixing, nfe_curve;"):
        validate_suite(host, _suite(tiny_config, "suite.methods=['dsm']", "suite.datasets=['digits']",
                                    "eval.metrics=[mmd]"))


@pytest.mark.parametrize("metric, needs", [("nll", "likelihood"), ("fisher_divergence", "score")])
def test_metric_needing_a_capability_the_method_lacks(host, tiny_config, metric, needs):
    with pytest.raises(ConfigError, match=rf"'{metric}'.*needs the method's {needs}.*method 'tiny' does not"):
        validate_suite(host, _suite(tiny_config, f"eval.metrics=['mmd', '{metric}']"))


def test_resample_depends_on_the_method_config(host, tiny_config):
    """sde declares a sampler length for pc, none for the adaptive ODE: decided from the built method, no model."""
    base = ("suite.methods=['sde']", "eval.metrics=['nfe_curve', 'nll', 'fisher_divergence']")
    validate_suite(host, _suite(tiny_config, *base))  # pc: everything applies
    with pytest.raises(ConfigError, match=r"'nfe_curve'.*sampler of adjustable length.*method 'sde'"):
        validate_suite(host, _suite(tiny_config, *base, "methods.sde.sampler='ode'"))


def test_applicable_metrics_and_auto_pass(host, tiny_config):
    validate_suite(host, _suite(tiny_config, "eval.metrics=[mmd,mixing,nfe_curve]"))
    validate_suite(host, _suite(tiny_config, "eval.metrics=[auto]"))


def test_inapplicable_metric_stops_the_run_before_training(host, tiny_config, tmp_path):
    r = _run(tiny_config, "--out", tmp_path / "out", "--set", "eval.metrics=[fid_cnn]")
    assert r.exit_code == 2 and "fid_cnn" in r.output and "gauss2" in r.output, r.output
    assert not (tmp_path / "out" / "runs").exists()


# every split the job reads -----------------------------------------------------------------------------------

@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in the official binary layout (3 records per file) whose published MD5s are patched to the
    fake files'; the test file is then corrupted, so only a check of the test split can find it."""
    import numpy as np

    import plugins.datasets as D

    folder = tmp_path / "data" / D.CIFAR10_BIN_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(D.CIFAR10_BIN_MD5):
        rec = rng.integers(0, 256, (3, D.CIFAR10_RECORD), dtype=np.uint8)
        rec[:, 0] = [i % 10, (i + 1) % 10, (i + 2) % 10]
        (folder / name).write_bytes(rec.tobytes())
        monkeypatch.setitem(D.CIFAR10_BIN_MD5, name, hashlib.md5(rec.tobytes()).hexdigest())
    test = folder / "test_batch.bin"
    data = bytearray(test.read_bytes())
    data[5] ^= 0xFF
    test.write_bytes(bytes(data))
    return tmp_path / "data", test


def test_a_corrupt_test_split_is_refused_before_any_job(host, tiny_config, tmp_path, fake_cifar):
    root, test_file = fake_cifar
    suite = _suite(tiny_config, "suite.datasets=['cifar10']", f"suite.data_root='{root}'")
    with pytest.raises(DataError, match="checksum mismatch") as err:
        validate_suite(host, suite)
    assert str(test_file) in str(err.value)
    r = _run(tiny_config, "--out", tmp_path / "out", "--datasets", "cifar10", "--data-root", root)
    assert r.exit_code == 2 and "test_batch.bin" in r.output, r.output
    assert not (tmp_path / "out" / "runs").exists()  # no failed method record


def test_intact_fake_cifar_passes(host, tiny_config, fake_cifar):
    import plugins.datasets as D

    root, test_file = fake_cifar
    D.CIFAR10_BIN_MD5["test_batch.bin"] = hashlib.md5(test_file.read_bytes()).hexdigest()
    validate_suite(host, _suite(tiny_config, "suite.datasets=['cifar10']", f"suite.data_root='{root}'"))


def test_a_bad_fid_option_value_is_refused_before_anything_trains(host, tmp_path):
    from harness.config import resolve_suite
    from harness.errors import ConfigError
    from harness.runner import validate_suite

    raw = {"suite": {"methods": ["dsm"], "datasets": ["digits"], "device": "cpu"},
           "metrics": {"fid_cnn": {"reference": "tran"}}}
    suite = resolve_suite(raw, "bad.toml", all_methods=host.registries["methods"].names())
    with pytest.raises(ConfigError, match=r"bad.toml.*fid_cnn.*reference = 'tran'.*'test', 'train'"):
        validate_suite(host, suite)
