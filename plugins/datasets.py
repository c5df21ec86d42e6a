"""Built-in data sets: exact toy targets (2-D to 100-D), scikit-learn's 8×8 digits, MNIST, Fashion-MNIST and CIFAR-10.

Model space: toy data in raw coordinates, shape (d,); images float32 [N, C, H, W] in [-1, 1] (u8 / 127.5 − 1, so
`Dataset.to_uint8` inverts it exactly); labels int64. Loaded tensors are cached in memory only (per instance, by
`Dataset.split`), and file MD5s once per process per (path, mtime, size).

Files are looked for under the data root (`--data-root`, then $SCOREBENCH_DATA, then the user cache), in
torchvision's layouts: `MNIST/raw/`, `FashionMNIST/raw/` (the four uncompressed IDX files), and
`cifar-10-batches-bin/` (the official binary version) or `cifar-10-batches-py/` (the python version). Every file is
MD5-checked before use: a missing file raises `MissingDataError` saying where the harness looked and how to get
the data, a wrong checksum raises `ChecksumError` naming the file (both are `DataError`s, exit code 2).

`data_status(root)` reports found / missing / checksum mismatch for every data set without raising (for
`scorebench doctor`); `Dataset.available()` gives the same answer per data set, also without loading tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.datasets import ENV_DATA_ROOT, ChecksumError, Dataset, MissingDataError, Split, default_cache_dir, md5sum
from harness.errors import DataError
from harness.hookspecs import hookimpl
from harness.toy import (
    Banana,
    GaussianMixture,
    ManyWell,
    ToyTarget,
    grid_mixture,
    ring_mixture,
    rotated_gaussian,
    separated_mixture,
    uniform_box_mixture,
)

# toy targets -------------------------------------------------------------------------------------------------
# Mode spacing ≈ 7.5 std for both mixtures: modes are clearly separated (mode metrics are meaningful), yet the
# density between neighbours (≈ e^−7 of the peak) is not so low that a Langevin chain can never hop, and a small
# MLP learns the score in a few hundred CPU steps. A much smaller std (e.g. 0.02) makes both much harder.
RING8_COMPONENTS = 8
RING8_RADIUS = 2.0  # neighbouring means 2 r sin(π/8) ≈ 1.53 apart
RING8_STD = 0.2
GRID25_SIDE = 5
GRID25_SPACING = 1.5  # means at {−3, −1.5, 0, 1.5, 3}²
GRID25_STD = 0.2
# banana: x1 ~ N(0, a²), x2 | x1 ~ N(b (x1² − a²), s²); Var x2 = s² + 2 b² a⁴ = 1.44. About 0.7 % of its mass has
# x2 > 5 (|x1| > 2.69), outside the nominal box below.
BANANA_A = 1.0
BANANA_B = 0.8
BANANA_S = 0.4
# gmm40: the 40-mode 2-D mixture of the sampler benchmarks (FAB, Midgley et al. 2023): means uniform in
# [−40, 40]², unit-variance components, equal weights (see `uniform_box_mixture` for how the seed draws the means).
GMM40_COMPONENTS = 40
GMM40_HALF_WIDTH = 40.0
GMM40_STD = 1.0
GMM40_SEED = 0
# ill_gaussian{32,100}: N(0, Q diag(λ) Qᵀ), λ log-spaced over [0.01, 1] (condition number 100), Q Haar-random.
ILL_GAUSSIAN_VARIANCES = (0.01, 1.0)
ILL_GAUSSIAN_SEED = 2023
# many_well32: ManyWell with 16 double-well pairs (Midgley et al. 2023).
MANY_WELL_WELLS = 16
# unequal{2,10}: 5 unit-std components, weights ∝ 10^(j/4) (largest/smallest = 10), means ≥ 6 std apart, drawn
# uniform in [−h, h]^d one at a time (`separated_mixture`).
UNEQUAL_COMPONENTS = 5
UNEQUAL_WEIGHT_RATIO = 10.0
UNEQUAL_STD = 1.0
UNEQUAL_SEPARATION = 6.0
UNEQUAL_HALF_WIDTH = {2: 8.0, 10: 3.0}
UNEQUAL_SEED = 5
# Fixed splits of every toy data set: split -> (size, seed of the torch.Generator fed to the target's sampler).
# Large, distinct seeds, so that no job seed (0, 1, 2, ...) replays the stream that drew the data.
TOY_SPLITS: dict[str, tuple[int, int]] = {"train": (10_000, 1_000_003), "test": (2_000, 2_000_003)}

# images ------------------------------------------------------------------------------------------------------
# digits: a fixed permutation from numpy's legacy RandomState (its stream is frozen across numpy versions);
# the first 1,497 permuted images train, the last 300 test.
DIGITS_SPLIT_SEED = 1797
DIGITS_TEST_SIZE = 300

# canonical MD5s of the uncompressed IDX files (torchvision layout <root>/<folder>/raw/<file>)
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# the published MD5s of CIFAR-10's binary version; each record is 1 label byte + 1024 R, 1024 G, 1024 B bytes
CIFAR10_BIN_FOLDER = "cifar-10-batches-bin"
CIFAR10_PY_FOLDER = "cifar-10-batches-py"  # torchvision.datasets.CIFAR10's base_folder
CIFAR10_BIN_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
CIFAR10_BIN_SPLITS = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
CIFAR10_RECORD = 1 + 3 * 32 * 32


_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def cached_md5(path: Path) -> str:
    """MD5 of a file, computed once per process per (resolved path, mtime, size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _MD5_CACHE:
        _MD5_CACHE[key] = md5sum(path)
    return _MD5_CACHE[key]


def uint8_to_model(images: Tensor | np.ndarray) -> Tensor:
    """uint8 images to float32 in [-1, 1]: u / 127.5 − 1 (exactly inverted by `Dataset.to_uint8`)."""
    return torch.as_tensor(images).to(torch.float32).div_(127.5).sub_(1.0)


# toy targets -----------------------------------------------------------------------------------------------------

class ToyDataset(Dataset):
    """A synthetic data set drawn from an exact target with fixed seeds (see TOY_SPLITS); `value_range` is the box
    that holds nearly all of its mass (the uniform initialisation box of several samplers)."""

    kind = "vector"
    value_range = (-4.0, 4.0)
    _target: ClassVar[ToyTarget]

    @property
    def target(self) -> ToyTarget:
        return self._target

    def load_split(self, split: Split) -> tuple[Tensor, None]:
        size, seed = TOY_SPLITS[split]
        return self._target.sample(size, torch.Generator().manual_seed(seed)), None

    def check(self) -> tuple[str, str]:
        return "found", "synthetic (exact target, fixed seeds)"


class Ring8(ToyDataset):
    name = "ring8"
    description = (f"8 Gaussians on a circle (radius {RING8_RADIUS}, std {RING8_STD}); exact density, score, "
                   "smoothed versions")
    _target: ClassVar[GaussianMixture] = ring_mixture(RING8_COMPONENTS, RING8_RADIUS, RING8_STD)


class Grid25(ToyDataset):
    name = "grid25"
    description = (f"5×5 grid of Gaussians (spacing {GRID25_SPACING}, std {GRID25_STD}); exact density, score, "
                   "smoothed versions")
    _target: ClassVar[GaussianMixture] = grid_mixture(GRID25_SIDE, GRID25_SPACING, GRID25_STD)


class BananaData(ToyDataset):
    name = "banana"
    description = (f"banana: x1~N(0,{BANANA_A}²), x2|x1~N({BANANA_B}(x1²−{BANANA_A}²),{BANANA_S}²); exact density; "
                   "smoothed by quadrature")
    value_range = (-5.0, 5.0)
    _target: ClassVar[Banana] = Banana(BANANA_A, BANANA_B, BANANA_S)


class GMM40(ToyDataset):
    """The 40-component 2-D GMM of FAB (Midgley et al. 2023, ICLR) and of the "Beyond ELBOs" sampler benchmark
    (Blessing et al. 2024): means (torch.rand((40, 2), generator=torch.Generator().manual_seed(0)) − 0.5)·2·40 on
    CPU in float32, unit-variance isotropic components, equal weights. FAB seeds torch's global generator with 0
    and applies the same formula, so the means are meant to coincide, but they were not checked against FAB's code
    and need not equal them; FAB also sets its component scales through its own log-variance parameter, whereas
    here every component has variance 1 (issue 13)."""

    name = "gmm40"
    description = ("40 unit-variance Gaussians, means uniform in [−40, 40]² (seed 0), equal weights: the FAB / "
                   "sampler-benchmark GMM (Midgley et al. 2023); exact smoothed versions")
    value_range = (-45.0, 45.0)
    _target: ClassVar[GaussianMixture] = uniform_box_mixture(GMM40_COMPONENTS, 2, GMM40_HALF_WIDTH, GMM40_STD,
                                                             GMM40_SEED)


class IllGaussian32(ToyDataset):
    name = "ill_gaussian32"
    description = ("32-D zero-mean Gaussian, variances log-spaced over [0.01, 1] (condition number 100) in a "
                   "random rotation; exact smoothed versions")
    _target: ClassVar[ToyTarget] = rotated_gaussian(32, *ILL_GAUSSIAN_VARIANCES, ILL_GAUSSIAN_SEED)


class IllGaussian100(ToyDataset):
    name = "ill_gaussian100"
    description = ("100-D zero-mean Gaussian, variances log-spaced over [0.01, 1] (condition number 100) in a "
                   "random rotation; exact smoothed versions")
    _target: ClassVar[ToyTarget] = rotated_gaussian(100, *ILL_GAUSSIAN_VARIANCES, ILL_GAUSSIAN_SEED)


class ManyWell32(ToyDataset):
    name = "many_well32"
    description = ("ManyWell (Midgley et al. 2023): 16 independent double wells −x1⁴+6x1²+x1/2−x2²/2, d = 32, "
                   "2¹⁶ modes; smoothed by 1-D quadrature")
    _target: ClassVar[ManyWell] = ManyWell(MANY_WELL_WELLS)


def _unequal(dim: int) -> GaussianMixture:
    return separated_mixture(UNEQUAL_COMPONENTS, dim, UNEQUAL_HALF_WIDTH[dim], UNEQUAL_SEPARATION, UNEQUAL_STD,
                             UNEQUAL_WEIGHT_RATIO, UNEQUAL_SEED)


class Unequal2(ToyDataset):
    name = "unequal2"
    description = ("5 unit-std Gaussians in 2-D, weights spanning 10× (∝ 10^(j/4)), means ≥ 6 apart; exact "
                   "smoothed versions")
    value_range = (-12.0, 12.0)
    _target: ClassVar[GaussianMixture] = _unequal(2)


class Unequal10(ToyDataset):
    name = "unequal10"
    description = ("5 unit-std Gaussians in 10-D, weights spanning 10× (∝ 10^(j/4)), means ≥ 6 apart; exact "
                   "smoothed versions")
    value_range = (-7.0, 7.0)
    _target: ClassVar[GaussianMixture] = _unequal(10)


TOY_DATASETS: tuple[type[ToyDataset], ...] = (Ring8, Grid25, BananaData, GMM40, IllGaussian32, IllGaussian100,
                                              ManyWell32, Unequal2, Unequal10)


# images ------------------------------------------------------------------------------------------------------

class ImageDataset(Dataset):
    """Common parts of the image data sets: 10 classes in [-1, 1], file checks that never load tensors."""

    kind = "image"
    num_classes = 10
    value_range = (-1.0, 1.0)
    how_to_get: ClassVar[str] = ""

    def check(self) -> tuple[str, str]:
        """("found" | "missing" | "checksum mismatch", detail) without raising and without loading tensors."""
        try:
            return "found", self.verify()
        except MissingDataError as e:
            return "missing", str(e)
        except ChecksumError as e:
            return "checksum mismatch", str(e)

    def verify(self) -> str:
        """Check the files (presence, MD5) and return a one-line description of what was found."""
        return "bundled"

    def _verify_files(self, folder: Path, md5s: dict[str, str]) -> None:
        missing = [f for f in md5s if not (folder / f).is_file()]
        if missing:
            raise self._missing(folder, missing)
        for fname, expected in md5s.items():
            got = cached_md5(folder / fname)
            if got != expected:
                raise ChecksumError(
                    f"{self.name}: checksum mismatch for {folder / fname}: md5 {got}, expected {expected}. The file "
                    "is corrupt or not the original release: delete it and rerun with --download, or copy in a "
                    "good copy."
                )

    def _missing(self, folder: Path, files: list[str]) -> MissingDataError:
        return MissingDataError(
            f"{self.name}: data not found: missing {', '.join(files)} in {folder}. Looked in the data root "
            f"{self.root} (from {self.root_source}; the root comes from --data-root, else ${ENV_DATA_ROOT}, else "
            f"the user cache {default_cache_dir() / 'data'}). To get it: rerun with --download (needs internet), "
            f"or {self.how_to_get}"
        )

    def _download_failed(self, exc: BaseException) -> MissingDataError:
        return MissingDataError(
            f"{self.name}: download into {self.root} (from {self.root_source}) failed: {type(exc).__name__}: {exc}. "
            f"Without internet, {self.how_to_get}"
        )


class Digits(ImageDataset):
    name = "digits"
    description = "scikit-learn's 8×8 handwritten digits (1,797 images; fixed 1,497 train / 300 test split)"

    def load_split(self, split: Split) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)  # x: float64 [1797, 64] with integer values 0..16
        perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(x))
        idx = perm[: len(x) - DIGITS_TEST_SIZE] if split == "train" else perm[len(x) - DIGITS_TEST_SIZE:]
        images = torch.as_tensor(x[idx] / 16.0 * 2.0 - 1.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return images, torch.as_tensor(y[idx], dtype=torch.int64)

    def verify(self) -> str:
        return "bundled with scikit-learn"


class _IDXDataset(ImageDataset):
    """MNIST-like: four IDX files in torchvision's layout, loaded through torchvision's own class."""

    folder: ClassVar[str]  # torchvision's class name, which is also its folder name under the root
    md5: ClassVar[dict[str, str]]

    @property
    def raw_folder(self) -> Path:
        return self.root / self.folder / "raw"

    @property
    def how_to_get(self) -> str:
        return (f"copy the four uncompressed IDX files ({', '.join(self.md5)}) into {self.raw_folder} "
                f"(torchvision's layout <root>/{self.folder}/raw/).")

    def verify(self) -> str:
        self._verify_files(self.raw_folder, self.md5)
        return f"{self.raw_folder} (4 files, MD5 verified)"

    def load_split(self, split: Split) -> tuple[Tensor, Tensor]:
        import torchvision.datasets

        tv_class = getattr(torchvision.datasets, self.folder)
        if self.download and any(not (self.raw_folder / f).is_file() for f in self.md5):
            try:
                tv_class(str(self.root), train=True, download=True)
            except Exception as exc:  # no network, a mirror down, a read-only root, ...
                raise self._download_failed(exc) from exc
        self.verify()
        ds = tv_class(str(self.root), train=split == "train", download=False)
        return uint8_to_model(ds.data[:, None]), ds.targets.to(torch.int64)


class MNIST(_IDXDataset):
    name = "mnist"
    description = "MNIST handwritten digits, 28×28 gray (60,000 train / 10,000 test; torchvision layout, MD5 checked)"
    folder = "MNIST"
    md5 = MNIST_MD5


class FashionMNIST(_IDXDataset):
    name = "fashion_mnist"
    description = "Fashion-MNIST, 28×28 gray (60,000 train / 10,000 test; torchvision layout, MD5 checked)"
    folder = "FashionMNIST"
    md5 = FASHION_MNIST_MD5


def read_cifar10_bin(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary-version files to (uint8 [N, 3, 32, 32], int64 [N]): each 3073-byte record is the label byte,
    then the 1024 red, 1024 green and 1024 blue bytes, each plane row-major (row 0 first)."""
    records = []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size % CIFAR10_RECORD:
            raise DataError(f"cifar10: {p} has {raw.size} bytes, not a multiple of the {CIFAR10_RECORD}-byte record")
        records.append(raw.reshape(-1, CIFAR10_RECORD))
    rec = np.concatenate(records)
    labels = rec[:, 0].astype(np.int64)
    if labels.size and labels.max() > 9:
        raise DataError(f"cifar10: labels above 9 in {', '.join(map(str, paths))}")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


class CIFAR10(ImageDataset):
    name = "cifar10"
    description = "CIFAR-10, 32×32 colour (50,000 train / 10,000 test; official binary version, or torchvision's)"

    @property
    def how_to_get(self) -> str:
        return (f"copy the binary version's data_batch_1..5.bin and test_batch.bin into "
                f"{self.root / CIFAR10_BIN_FOLDER} (or torchvision's python version into "
                f"{self.root / CIFAR10_PY_FOLDER}).")

    def _source(self) -> str | None:
        """"bin" when the binary version is complete, else "py" when torchvision's folder exists, else "bin" when a
        partial binary folder exists (so the error lists its missing files), else None."""
        bin_dir, py_dir = self.root / CIFAR10_BIN_FOLDER, self.root / CIFAR10_PY_FOLDER
        if all((bin_dir / f).is_file() for f in CIFAR10_BIN_MD5):
            return "bin"
        if py_dir.is_dir():
            return "py"
        return "bin" if bin_dir.is_dir() else None

    @staticmethod
    def _py_md5s(split: Split | None = None) -> dict[str, str]:
        from torchvision.datasets import CIFAR10 as TV

        lists = {None: [TV.train_list, TV.test_list], "train": [TV.train_list], "test": [TV.test_list]}[split]
        return {**{f: m for lst in lists for f, m in lst}, TV.meta["filename"]: TV.meta["md5"]}

    def verify(self, split: Split | None = None) -> str:
        source = self._source()
        if source is None:
            raise self._missing(self.root / CIFAR10_BIN_FOLDER, list(CIFAR10_BIN_MD5))
        if source == "bin":
            files = CIFAR10_BIN_MD5 if split is None else CIFAR10_BIN_SPLITS[split]
            self._verify_files(self.root / CIFAR10_BIN_FOLDER, {f: CIFAR10_BIN_MD5[f] for f in files})
            return f"{self.root / CIFAR10_BIN_FOLDER} (binary version, MD5 verified)"
        self._verify_files(self.root / CIFAR10_PY_FOLDER, self._py_md5s(split))
        return f"{self.root / CIFAR10_PY_FOLDER} (torchvision's python version, MD5 verified)"

    def load_split(self, split: Split) -> tuple[Tensor, Tensor]:
        if self.download and self._source() is None:
            from torchvision.datasets import CIFAR10 as TV

            try:
                self.root.mkdir(parents=True, exist_ok=True)
                TV(str(self.root), train=True, download=True)  # fetches and extracts the python version
            except Exception as exc:
                raise self._download_failed(exc) from exc
        self.verify(split)
        if self._source() == "bin":
            images, labels = read_cifar10_bin([self.root / CIFAR10_BIN_FOLDER / f for f in CIFAR10_BIN_SPLITS[split]])
        else:
            from torchvision.datasets import CIFAR10 as TV

            ds = TV(str(self.root), train=split == "train", download=False)
            images, labels = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets, dtype=np.int64)  # HWC -> CHW
        return uint8_to_model(np.ascontiguousarray(images)), torch.as_tensor(labels, dtype=torch.int64)


DATASETS: tuple[type[Dataset], ...] = (*TOY_DATASETS, Digits, MNIST, FashionMNIST, CIFAR10)


def data_status(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Per built-in data set: name, kind, status ("found" | "missing" | "checksum mismatch" | "error"), detail,
    and the data root with its source. Never raises and never loads tensors (MD5s are computed, once per file)."""
    out = []
    for cls in DATASETS:
        ds = cls(root)
        try:
            status, detail = ds.check()
        except Exception as exc:  # noqa: BLE001 - a status report must not fail
            status, detail = "error", f"{type(exc).__name__}: {exc}"
        out.append({"name": cls.name, "kind": cls.kind, "status": status, "detail": detail,
                    "root": str(ds.root), "root_source": ds.root_source})
    return out


@hookimpl
def register_datasets(register):
    for cls in DATASETS:
        register(cls)
