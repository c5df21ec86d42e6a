"""Built-in data sets: registration, specs, fixed splits, scaling, checksums and the errors for missing or corrupt
files. MNIST and Fashion-MNIST come from the shared data root ($SCOREBENCH_DATA) and are skipped, with the reason,
where it is absent; CIFAR-10 is tested on tiny synthetic files in both of its layouts."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.datasets import ENV_DATA_ROOT
from harness.errors import DataError
from harness.plugins import PluginHost
from harness.toy import ToyTarget
from plugins import datasets as ds

REPO = Path(__file__).resolve().parent.parent
IDX = {"mnist": ("MNIST", ds.MNIST), "fashion_mnist": ("FashionMNIST", ds.FashionMNIST)}


def shared_root() -> Path | None:
    root = os.environ.get(ENV_DATA_ROOT)
    return Path(root) if root else None


def idx_root_or_skip(folder: str) -> Path:
    root = shared_root()
    if root is None:
        pytest.skip(f"${ENV_DATA_ROOT} is not set: point it at a data root with {folder}/raw (e.g. ../shared/datasets)")
    if not (root / folder / "raw").is_dir():
        pytest.skip(f"no {folder}/raw under ${ENV_DATA_ROOT}={root}")
    return root


def read_idx(path: Path, header: int) -> np.ndarray:
    """An independent IDX reader: big-endian header, then unsigned bytes."""
    return np.fromfile(path, dtype=np.uint8)[header:]


# registration and specs -----------------------------------------------------------------------------------------

def test_every_builtin_data_set_is_registered():
    host = PluginHost(entry_points=False, builtins=("plugins.datasets",))
    reg = host.registries["datasets"]
    assert not host.failures()
    assert reg.names() == sorted(["ring8", "grid25", "banana", "gmm40", "ill_gaussian32", "ill_gaussian100",
                                  "many_well32", "unequal2", "unequal10", "digits", "mnist", "fashion_mnist",
                                  "cifar10"])
    for entry in reg:
        assert entry.provider == "plugins.datasets" and entry.description and "\n" not in entry.description


def test_data_status_reports_without_raising(tmp_path):
    status = {s["name"]: s for s in ds.data_status(tmp_path / "empty")}
    assert set(status) == {c.name for c in ds.DATASETS}
    for name in ("ring8", "grid25", "banana", "digits"):
        assert status[name]["status"] == "found"
    for name in ("mnist", "fashion_mnist", "cifar10"):
        assert status[name]["status"] == "missing" and str(tmp_path / "empty") in status[name]["detail"]
        assert status[name]["root_source"] == "--data-root"


# digits -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return ds.Digits()


def test_digits_split_scaling_and_determinism(digits):
    from sklearn.datasets import load_digits

    xtr, ytr = digits.split("train")
    xte, yte = digits.split("test")
    assert xtr.shape == (1497, 1, 8, 8) and xte.shape == (300, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) == -1.0 and float(xtr.max()) == 1.0
    # the two splits are a permutation of scikit-learn's data, scaled as x / 16 · 2 − 1
    x, y = load_digits(return_X_y=True)
    perm = np.random.RandomState(ds.DIGITS_SPLIT_SEED).permutation(len(x))
    ours = torch.cat([xtr, xte]).reshape(-1, 64).double()
    np.testing.assert_array_equal(ours.numpy(), x[perm] / 16 * 2 - 1)
    np.testing.assert_array_equal(torch.cat([ytr, yte]).numpy(), y[perm])
    assert set(perm[:1497]).isdisjoint(perm[1497:])
    # to_uint8 maps the 17 grey levels to round(v / 16 · 255)
    levels = torch.unique(digits.to_uint8(xtr)).tolist()
    assert levels == [round(v / 16 * 255 + 1e-9) for v in range(17)]
    again = ds.Digits()
    assert torch.equal(again.split("train")[0], xtr) and torch.equal(again.split("test")[1], yte)
    spec = digits.spec
    assert (spec.kind, spec.shape, spec.value_range, spec.num_classes, spec.train_size, spec.test_size) == (
        "image", (1, 8, 8), (-1.0, 1.0), 10, 1497, 300)


def test_to_uint8_rounds_and_clamps(digits):
    def model(u):  # the model-space value whose uint8 image is u (possibly fractional)
        return torch.tensor([u / 255 * 2 - 1])

    assert digits.to_uint8(model(127.6)).item() == 128
    assert digits.to_uint8(model(127.4)).item() == 127
    assert digits.to_uint8(model(0.0)).item() == 0 and digits.to_uint8(model(255.0)).item() == 255
    assert digits.to_uint8(torch.tensor([-1.5, 1.5])).tolist() == [0, 255]
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(digits.to_uint8(ds.uint8_to_model(u)), u)  # exact round trip of the loaders' scaling


# toy data sets ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [ds.Ring8, ds.Grid25, ds.BananaData])
def test_toy_splits_come_from_the_documented_seeds(cls):
    d = cls(download=True)
    assert isinstance(d.target, ToyTarget) and d.available() == (True, "synthetic (exact target, fixed seeds)")
    for split, (size, seed) in ds.TOY_SPLITS.items():
        x, y = d.split(split)
        assert y is None and x.shape == (size, 2)
        assert torch.equal(x, d.target.sample(size, torch.Generator().manual_seed(seed)))
    assert ds.TOY_SPLITS["train"][1] != ds.TOY_SPLITS["test"][1]


def test_mixture_targets_have_modes():
    assert ds.Ring8().target.modes.shape == (8, 2) and ds.Grid25().target.modes.shape == (25, 2)
    assert ds.BananaData().target.component(torch.zeros(3, 2)) is None


# MNIST and Fashion-MNIST from the shared root ----------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(IDX))
def idx_data(request):
    folder, cls = IDX[request.param]
    root = idx_root_or_skip(folder)
    d = cls(root)
    return d, root / folder / "raw"


def test_idx_data_sets_shapes_range_labels_and_bytes(idx_data):
    d, raw = idx_data
    xtr, ytr = d.split("train")
    xte, yte = d.split("test")
    assert xtr.shape == (60_000, 1, 28, 28) and xte.shape == (10_000, 1, 28, 28)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) == -1.0 and float(xtr.max()) == 1.0
    assert torch.equal(torch.bincount(ytr) > 5000, torch.ones(10, dtype=torch.bool))
    # the model-space images are the raw IDX bytes (read independently here), scaled to [-1, 1]
    np.testing.assert_array_equal(d.to_uint8(xte).numpy().reshape(-1), read_idx(raw / "t10k-images-idx3-ubyte", 16))
    np.testing.assert_array_equal(yte.numpy(), read_idx(raw / "t10k-labels-idx1-ubyte", 8))
    spec = d.spec
    assert (spec.kind, spec.shape, spec.num_classes, spec.train_size, spec.test_size) == (
        "image", (1, 28, 28), 10, 60_000, 10_000)


def test_idx_checksums_are_verified(idx_data):
    d, raw = idx_data
    for fname, expected in d.md5.items():
        assert hashlib.md5((raw / fname).read_bytes()).hexdigest() == expected  # our table is the canonical one
    status, detail = d.check()
    assert status == "found" and "MD5 verified" in detail


def test_a_corrupt_idx_file_is_refused_and_named(tmp_path):
    root = idx_root_or_skip("MNIST")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ds.MNIST_MD5:
        if f != "t10k-labels-idx1-ubyte":
            (raw / f).symlink_to(root / "MNIST" / "raw" / f)
    data = bytearray((root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes())
    data[100] = (data[100] + 1) % 10
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        ds.MNIST(tmp_path).split("test")
    assert str(raw / "t10k-labels-idx1-ubyte") in str(err.value)
    assert ds.MNIST(tmp_path).check()[0] == "checksum mismatch"
    assert ds.MNIST(tmp_path).available()[0] is False
    from click.testing import CliRunner

    from harness.cli import cli

    out = CliRunner().invoke(cli, ["doctor", "--data-root", str(tmp_path)]).output
    assert "BAD MD5 mnist" in out and "t10k-labels-idx1-ubyte" in out  # doctor tells corrupt from missing
    assert "MISSING fashion_mnist" in out


@pytest.mark.parametrize("name", list(IDX) + ["cifar10"])
def test_missing_data_says_where_it_looked_and_how_to_get_it(name, tmp_path, monkeypatch):
    cls = {"mnist": ds.MNIST, "fashion_mnist": ds.FashionMNIST, "cifar10": ds.CIFAR10}[name]
    where = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        cls(where).split("train")
    msg = str(err.value)
    assert str(where) in msg and "--data-root" in msg and "--download" in msg and "copy" in msg
    monkeypatch.setenv(ENV_DATA_ROOT, str(tmp_path / "env-root"))
    with pytest.raises(DataError) as err:
        cls().split("test")
    assert str(tmp_path / "env-root") in str(err.value) and f"from ${ENV_DATA_ROOT}" in str(err.value)


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DataError, match="download into .* failed: OSError: network is unreachable") as err:
        ds.MNIST(tmp_path, download=True).split("train")
    assert str(tmp_path) in str(err.value) and "copy" in str(err.value)


def test_download_fetches_then_verifies(tmp_path, monkeypatch):
    """--download calls torchvision's downloader only when files are missing, then checks the MD5s as usual."""
    import torchvision.datasets

    shared = idx_root_or_skip("MNIST")
    real, calls = torchvision.datasets.MNIST, []

    class MNIST(real):  # torchvision names the folder after the class
        def __init__(self, root, train=True, download=False):
            if download:  # "download": place the files where torchvision would
                calls.append(root)
                raw = Path(root) / "MNIST" / "raw"
                raw.mkdir(parents=True, exist_ok=True)
                for f in ds.MNIST_MD5:
                    (raw / f).symlink_to(shared / "MNIST" / "raw" / f)
            super().__init__(root, train=train, download=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", MNIST)
    x, y = ds.MNIST(tmp_path, download=True).split("test")
    assert x.shape == (10_000, 1, 28, 28) and calls == [str(tmp_path)]
    ds.MNIST(tmp_path, download=True).split("test")  # files present: no second download
    assert len(calls) == 1


# CIFAR-10 on tiny synthetic files ----------------------------------------------------------------------------------

PER_FILE = 3


def fake_cifar_records(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(PER_FILE, 3, 32, 32)).astype(np.uint8), rng.randint(0, 10, PER_FILE)


@pytest.fixture
def fake_cifar_bin(tmp_path, monkeypatch):
    """The official binary layout with 3 records per file; the MD5 table patched to the fake files' MD5s."""
    folder = tmp_path / ds.CIFAR10_BIN_FOLDER
    folder.mkdir()
    table, truth = {}, {}
    for i, fname in enumerate(ds.CIFAR10_BIN_MD5):
        images, labels = fake_cifar_records(i)
        images[0, :, 5, 7] = (11, 22, 33)  # a known pixel: row 5, column 7 is (R, G, B) = (11, 22, 33)
        rec = np.concatenate([labels[:, None].astype(np.uint8), images.reshape(PER_FILE, -1)], axis=1)
        (folder / fname).write_bytes(rec.tobytes())
        table[fname] = hashlib.md5(rec.tobytes()).hexdigest()
        truth[fname] = (images, labels)
    monkeypatch.setattr(ds, "CIFAR10_BIN_MD5", table)
    return tmp_path, truth


def test_cifar10_binary_loader(fake_cifar_bin):
    root, truth = fake_cifar_bin
    d = ds.CIFAR10(root)
    xtr, ytr = d.split("train")
    xte, yte = d.split("test")
    assert xtr.shape == (5 * PER_FILE, 3, 32, 32) and xte.shape == (PER_FILE, 3, 32, 32)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) >= -1 and float(xtr.max()) <= 1
    train_truth = [truth[f] for f in ds.CIFAR10_BIN_SPLITS["train"]]
    np.testing.assert_array_equal(ytr.numpy(), np.concatenate([lab for _, lab in train_truth]))
    np.testing.assert_array_equal(d.to_uint8(xtr).numpy(), np.concatenate([img for img, _ in train_truth]))
    np.testing.assert_array_equal(yte.numpy(), truth["test_batch.bin"][1])
    # pixel order: R plane, then G, then B, each row-major; byte 1 + c·1024 + 5·32 + 7 of the first record
    raw = np.fromfile(root / ds.CIFAR10_BIN_FOLDER / "test_batch.bin", np.uint8)
    assert [raw[1 + c * 1024 + 5 * 32 + 7] for c in range(3)] == [11, 22, 33]
    assert d.to_uint8(xte)[0, :, 5, 7].tolist() == [11, 22, 33]
    assert d.check() == ("found", f"{root / ds.CIFAR10_BIN_FOLDER} (binary version, MD5 verified)")
    spec = d.spec
    assert (spec.kind, spec.shape, spec.num_classes, spec.train_size, spec.test_size) == (
        "image", (3, 32, 32), 10, 15, 3)


def test_cifar10_wrong_checksum_and_missing_file(fake_cifar_bin):
    root, _ = fake_cifar_bin
    bad = root / ds.CIFAR10_BIN_FOLDER / "data_batch_3.bin"
    data = bytearray(bad.read_bytes())
    data[500] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        ds.CIFAR10(root).split("train")
    assert str(bad) in str(err.value)
    ds.CIFAR10(root).split("test")  # the test split's file is intact and still loads
    assert ds.CIFAR10(root).check()[0] == "checksum mismatch"
    bad.unlink()
    with pytest.raises(DataError, match="missing data_batch_3.bin"):
        ds.CIFAR10(root).split("train")


def test_cifar10_python_version_is_accepted(fake_cifar_bin, tmp_path, monkeypatch):
    """torchvision's layout (pickled batches, HWC after loading) gives the same tensors as the binary version."""
    from torchvision.datasets import CIFAR10 as TV

    bin_root, truth = fake_cifar_bin
    root = tmp_path / "py-root"
    folder = root / ds.CIFAR10_PY_FOLDER
    folder.mkdir(parents=True)
    names = {f"data_batch_{i}": f"data_batch_{i}.bin" for i in range(1, 6)} | {"test_batch": "test_batch.bin"}
    md5 = {}
    for py_name, bin_name in names.items():
        images, labels = truth[bin_name]
        blob = pickle.dumps({"data": images.reshape(PER_FILE, -1), "labels": labels.tolist()})
        (folder / py_name).write_bytes(blob)
        md5[py_name] = hashlib.md5(blob).hexdigest()
    meta = pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    (folder / "batches.meta").write_bytes(meta)
    monkeypatch.setattr(TV, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(TV, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(TV, "meta", {"filename": "batches.meta", "key": "label_names",
                                     "md5": hashlib.md5(meta).hexdigest()})
    py, binary = ds.CIFAR10(root), ds.CIFAR10(bin_root)
    for split in ("train", "test"):
        assert torch.equal(py.split(split)[0], binary.split(split)[0])
        assert torch.equal(py.split(split)[1], binary.split(split)[1])
    assert py.check()[0] == "found"
    data = bytearray((folder / "test_batch").read_bytes())
    data[-20] ^= 0xFF
    (folder / "test_batch").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        ds.CIFAR10(root).split("test")
    assert str(folder / "test_batch") in str(err.value)


def test_md5_is_cached_per_file_version(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"abc")
    assert ds.cached_md5(f) == hashlib.md5(b"abc").hexdigest()
    f.write_bytes(b"abcd")  # new size (and mtime): recomputed, never a stale answer
    assert ds.cached_md5(f) == hashlib.md5(b"abcd").hexdigest()


# the largest pairwise distance (σ_max of VE and mdsm) ----------------------------------------------------------

def brute_force_diameter(x: torch.Tensor) -> float:
    """max ‖x_i − x_j‖ row by row in float64 (no Gram trick)."""
    flat = x.reshape(x.shape[0], -1).double()
    return max(float((flat - row).norm(dim=1).max()) for row in flat)


def far_pair_data(n: int = 5000, d: int = 40, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Gaussian rows with one planted far pair (rows 123 and 4567): the diameter is known to be that pair's
    distance, and a 2,000-row subsample misses one of its ends five times in six."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[123], x[4567] = 4.0 * torch.ones(d) / d**0.5 * 3, -4.0 * torch.ones(d) / d**0.5 * 3
    return x, float((x[123].double() - x[4567].double()).norm())


@pytest.mark.parametrize("case", ["far_pair", "images", "ties", "ring"])
def test_max_pairwise_distance_is_exact(case):
    """Against brute force on data where the float32 Gram trick alone could pick the wrong pair or the norm bound
    prunes most rows: a planted far pair, image-like values on a grid in [-1, 1] (several blocks), binary data
    with many exact ties, and a 2-D ring."""
    from harness.datasets import max_pairwise_distance

    g = torch.Generator().manual_seed(1)
    if case == "far_pair":
        x, known = far_pair_data()
        assert max_pairwise_distance(x) == pytest.approx(known, rel=1e-12)
    elif case == "images":
        x = torch.randint(0, 256, (1500, 1, 8, 8), generator=g).float() / 127.5 - 1
    elif case == "ties":
        x = torch.randint(0, 2, (600, 16), generator=g).float() * 2 - 1
    else:
        angle = torch.rand(4000, generator=g) * 2 * torch.pi
        x = 2 * torch.stack([angle.cos(), angle.sin()], 1) + 0.2 * torch.randn(4000, 2, generator=g)
    assert max_pairwise_distance(x, block=256) == pytest.approx(brute_force_diameter(x), rel=1e-12, abs=0)


def test_spec_uses_the_exact_maximum_over_the_training_split_and_caches_it(monkeypatch, tmp_path):
    """DataSpec.max_pairwise_distance is the maximum over the whole training split (the old 2,000-row subsample
    missed the planted pair), computed once per data fingerprint: a second data set object with the same data
    reads it from the cache, different data do not."""
    import harness.datasets as hd

    x, known = far_pair_data()

    class Planted(hd.Dataset):
        name, kind = "planted", "vector"

        def __init__(self, data):
            super().__init__(tmp_path)
            self.data = data

        def load_split(self, split):
            return (self.data if split == "train" else self.data[:10]), None

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a cache of this test's own: starts empty
    calls = []
    exact = hd.max_pairwise_distance
    monkeypatch.setattr(hd, "max_pairwise_distance", lambda t, **kw: calls.append(t.shape) or exact(t, **kw))
    assert Planted(x).spec.max_pairwise_distance == pytest.approx(known, rel=1e-12)
    assert Planted(x.clone()).spec.max_pairwise_distance == pytest.approx(known, rel=1e-12)
    assert len(calls) == 1  # the second object hit the cache
    files = list((hd.default_cache_dir() / "spec").glob(f"max_pairwise_distance-*{hd.data_fingerprint(x)}.json"))
    assert len(files) == 1  # under the user cache, keyed by the data's fingerprint
    Planted(x[:-1]).spec  # noqa: B018 - other data, another key
    assert len(calls) == 2
