"""Data set contract, data-root resolution and checksum helpers.

Concrete data sets are plugins (`plugins/datasets.py`). Every data set states its `DataSpec` and fixed
train/test splits; methods see model space (images in [-1, 1], shape (C, H, W)); metrics get uint8 images.
"""

from __future__ import annotations

import hashlib
import os
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
    max_pairwise_distance: float  # of the training data in model space (VE SDE's σ_max rule)
    std: float  # overall standard deviation of the training data in model space

    @property
    def dim(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


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
        sub = flat[torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(0))[:2000]].double()
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
            max_pairwise_distance=float(torch.cdist(sub, sub).max()),
            std=std**0.5,
        )

    def to_uint8(self, x: Tensor) -> Tensor:
        """Model-space images to uint8 [N, C, H, W] by rounding (not truncating), for image metrics."""
        lo, hi = self.value_range
        return ((x.float() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
