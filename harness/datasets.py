"""Data set contract, data-root resolution and checksum helpers.

Concrete data sets are plugins (`plugins/datasets.py`). Every data set states its `DataSpec` and fixed
train/test splits; methods see model space (images in [-1, 1], shape (C, H, W)); metrics get uint8 images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor

from harness.errors import DataError
from harness.toy import ToyTarget


class MissingDataError(DataError):
    """A data set's files are not under the data root."""


class ChecksumError(DataError):
    """A data file's MD5 differs from the published one."""

ENV_DATA_ROOT = "SCOREBENCH_DATA"
Split = Literal["train", "test"]


def default_cache_dir() -> Path:
    """The user cache folder: $XDG_CACHE_HOME/scorebench or ~/.cache/scorebench."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scorebench"


def resolve_data_root(explicit: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The data root and where it came from: --data-root, then $SCOREBENCH_DATA, then the user cache."""
    if explicit:
        return Path(explicit).expanduser(), "--data-root"
    if os.environ.get(ENV_DATA_ROOT):
        return Path(os.environ[ENV_DATA_ROOT]).expanduser(), f"${ENV_DATA_ROOT}"
    return default_cache_dir() / "data", "user cache"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    """Raise `DataError` when the file's MD5 differs: a corrupt file is never used silently."""
    got = md5sum(path)
    if got != expected:
        raise DataError(f"checksum mismatch for {path}: md5 {got}, expected {expected}; delete or replace the file")


@dataclass(frozen=True)
class DataSpec:
    """What a method needs to know about its data."""

    name: str
    kind: Literal["vector", "image"]
    shape: tuple[int, ...]  # (d,) for vectors, (C, H, W) for images
    value_range: tuple[float, float]  # range of model-space values (images: (-1, 1))
    num_classes: int | None
    train_size: int
    test_size: int
    # of the whole training split in model space, exact (`max_pairwise_distance`; VE SDE's and mdsm's σ_max rule)
    max_pairwise_distance: float
    std: float  # overall standard deviation of the training data in model space

    @property
    def dim(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


# the largest pairwise distance, exactly -------------------------------------------------------------------------

MAX_DISTANCE_VERSION = 1  # part of the cache key: bump when the computation changes
_U32 = 2.0**-24  # unit roundoff of float32


def _float64_rows(flat: Tensor, chunk: int):
    for start in range(0, flat.shape[0], chunk):
        yield start, flat[start:start + chunk].double()


def max_pairwise_distance(x: Tensor, block: int = 2048) -> float:
    """max_{i,j} ‖x_i − x_j‖ over the rows of x [N, ...], exactly (float64 distances of the given values), in memory
    O(block² + N) and without a float64 copy of x.

    1. Norms r_i = ‖x_i − c‖ about the mean c, and a lower bound L = the largest distance from the point farthest
       from c. A pair farther apart than L has r_i + r_j > L, so both ends have r > L − max r: only those rows
       (all of them for high-dimensional images, a few percent for 2-D targets) are candidates.
    2. Squared distances among candidates by the Gram trick in float32, block by block (upper triangle). Each has
       error at most h = (2d + 64)·u·R² (u = 2⁻²⁴, R = max r: the dot product's bound γ_d‖z_i‖‖z_j‖ plus the
       roundings of centring and of the sums, doubled for safety), so the farthest pair scores at least the best
       float32 value − 2h: every pair within 2h of the running best is kept.
    3. The kept pairs are recomputed in float64; the answer is the largest of them and L."""
    flat = x.reshape(x.shape[0], -1)
    n, d = flat.shape
    if n < 2:
        return 0.0
    centre = sum(c.sum(0) for _, c in _float64_rows(flat, 4096)) / n
    r = torch.cat([(c - centre).norm(dim=1) for _, c in _float64_rows(flat, 4096)])
    far = flat[int(r.argmax())].double()
    lower = max(float((c - far).norm(dim=1).max()) for _, c in _float64_rows(flat, 4096))
    r_max = float(r.max())
    cand = torch.nonzero(r >= lower - r_max - 1e-9 * (lower + r_max)).flatten()
    if cand.numel() < 2:
        return lower
    exact_gram = torch.get_float32_matmul_precision() != "highest"  # reduced-precision matmul: use float64
    dtype = torch.float64 if exact_gram else torch.float32
    z = torch.cat([(flat[cand[s:s + 4096]].double() - centre).to(dtype) for s in range(0, cand.numel(), 4096)])
    sq = r[cand].square().to(dtype)
    h = (2 * d + 64) * (_U32 if dtype == torch.float32 else 2.0**-53) * r_max**2
    best = -math.inf
    kept_i, kept_j, kept_v = [], [], []
    m = z.shape[0]
    for a in range(0, m, block):
        za, sa = z[a:a + block], sq[a:a + block]
        for b in range(a, m, block):
            d2 = sa[:, None] + sq[None, b:b + block] - 2.0 * (za @ z[b:b + block].T)
            best = max(best, float(d2.max()))
            ii, jj = torch.nonzero(d2 >= best - 2 * h, as_tuple=True)
            kept_i.append(ii + a)
            kept_j.append(jj + b)
            kept_v.append(d2[ii, jj])
        i, j, v = torch.cat(kept_i), torch.cat(kept_j), torch.cat(kept_v)
        keep = v >= best - 2 * h
        kept_i, kept_j, kept_v = [i[keep]], [j[keep]], [v[keep]]
    i, j = cand[kept_i[0]], cand[kept_j[0]]
    exact = max((float((flat[i[s:s + 65536]].double() - flat[j[s:s + 65536]].double()).norm(dim=1).max())
                 for s in range(0, i.numel(), 65536)), default=0.0)
    return max(exact, lower)


def data_fingerprint(x: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes: the identity of a training split for caches."""
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    flat = x.detach().cpu().contiguous().reshape(-1)
    for start in range(0, flat.numel(), 1 << 24):
        h.update(flat[start:start + (1 << 24)].numpy().tobytes())
    return h.hexdigest()


def cached_max_pairwise_distance(x: Tensor, cache_dir: Path | None = None) -> float:
    """`max_pairwise_distance(x)`, cached on disk under the user cache (`default_cache_dir()/spec`) keyed by the
    data's fingerprint, so a large data set (MNIST, CIFAR-10) pays for it once per machine."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "spec"
    path = folder / f"max_pairwise_distance-v{MAX_DISTANCE_VERSION}-{data_fingerprint(x)}.json"
    try:
        return float(json.loads(path.read_text())["max_pairwise_distance"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = max_pairwise_distance(x)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
            json.dump({"max_pairwise_distance": value, "shape": list(x.shape)}, f)
        os.replace(f.name, path)
    except OSError:  # a read-only cache costs time, not correctness
        pass
    return value


class Dataset(ABC):
    """A data set plugin. Subclasses set `name`, `description`, `kind` and implement `load_split`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[Literal["vector", "image"]]
    num_classes: ClassVar[int | None] = None
    value_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def __init__(self, root: Path | None = None, download: bool = False):
        self.root, self.root_source = resolve_data_root(root)
        self.download = download

    @abstractmethod
    def load_split(self, split: Split) -> tuple[Tensor, Tensor | None]:
        """(data in model space as float32 [N, *shape], labels [N] or None). Raise `DataError` if missing."""

    def split(self, split: Split) -> tuple[Tensor, Tensor | None]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        cache = self.__dict__.setdefault("_splits", {})
        if split not in cache:
            cache[split] = self.load_split(split)
        return cache[split]

    def check(self) -> tuple[str, str]:
        """("found" | "missing" | "checksum mismatch" | "error", detail) without raising: for `scorebench doctor`.
        This default loads both splits; data sets with files override it to check them without loading."""
        try:
            self.split("train")
            self.split("test")
        except ChecksumError as e:
            return "checksum mismatch", str(e)
        except MissingDataError as e:
            return "missing", str(e)
        except DataError as e:
            return "error", str(e)
        return "found", "ok"

    def available(self) -> tuple[bool, str]:
        """(found, message) without raising."""
        status, detail = self.check()
        return status == "found", detail

    @property
    def target(self) -> ToyTarget | None:
        """The exact density for synthetic targets; None for real data."""
        return None

    @cached_property
    def spec(self) -> DataSpec:
        train, _ = self.split("train")
        test, _ = self.split("test")
        flat = train.reshape(train.shape[0], -1)
        # the overall std in float64, a chunk at a time: no float64 copy of a whole image training set
        total = sq = 0.0
        for chunk in flat.split(4096):
            c = chunk.double()
            total, sq = total + float(c.sum()), sq + float(c.square().sum())
        n = flat.numel()
        std = max(sq - total * total / n, 0.0) / max(n - 1, 1)
        return DataSpec(
            name=self.name,
            kind=self.kind,
            shape=tuple(train.shape[1:]),
            value_range=tuple(self.value_range),
            num_classes=self.num_classes,
            train_size=train.shape[0],
            test_size=test.shape[0],
            max_pairwise_distance=cached_max_pairwise_distance(flat),
            std=std**0.5,
        )

    def to_uint8(self, x: Tensor) -> Tensor:
        """Model-space images to uint8 [N, C, H, W] by rounding (not truncating), for image metrics."""
        lo, hi = self.value_range
        return ((x.float() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
