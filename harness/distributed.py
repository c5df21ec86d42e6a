"""One job over several processes (torchrun): the small data-parallel helper the runner uses.

`torchrun --nproc-per-node N -m harness run CONFIG` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK in their
environment; `current(device)` turns that into a `Group` (NCCL on CUDA, one GPU per process at cuda:LOCAL_RANK;
gloo on CPU). A process started any other way is the one-process `SINGLE` group, on which every operation below is
the identity, so a single-process run computes exactly what it computed before this module existed.

Gradients are synchronised explicitly: after `backward`, `average_gradients` sums every gradient over the ranks in
one flattened all-reduce (one bucket per dtype) and divides by N. With the global batch split evenly, that is the
gradient of the global batch's mean loss, what `torch.nn.parallel.DistributedDataParallel` computes (Li et al. 2020,
"PyTorch Distributed", VLDB, sec. 3). The DDP module itself is not used: methods call arbitrary methods of the model
(`score`, `denoise`, an energy's input gradient), not only `forward`, which DDP's reducer must see before each
backward, and several losses differentiate the network twice (create_graph), which DDP does not support.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from harness.errors import ConfigError, UsageError

GRADIENT_SYNC = ("all-reduce of the flattened gradients after backward (sum over ranks / world size, one bucket per "
                 "dtype): data-parallel training, the gradient DistributedDataParallel computes; the DDP module is not "
                 "used because methods call model methods other than forward and some losses differentiate twice")
TIMEOUT_ENV = "SCOREBENCH_DIST_TIMEOUT"  # seconds a rank waits in a collective (rank 0 evaluating metrics: long)
DEFAULT_TIMEOUT_S = 4 * 3600


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def world_size() -> int:
    """Processes in this job (WORLD_SIZE, set by torchrun; 1 otherwise)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's rank in the job (RANK; 0 otherwise)."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its node (LOCAL_RANK): the GPU it uses."""
    return _env_int("LOCAL_RANK", 0)


def share(n: int, size: int, r: int) -> int:
    """Rank r's part of n items split over `size` ranks as evenly as possible (the first n % size get one more)."""
    return n // size + (1 if r < n % size else 0)


@dataclass(frozen=True)
class Group:
    """The processes training one job. Every method is a no-op (or the identity) on a one-process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None  # this rank's device (where NCCL collectives run)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that writes into the results folder."""
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def share(self, n: int) -> int:
        return share(n, self.world_size, self.rank)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of the global batch (rows r·b to (r+1)·b, b = len / world size)."""
        if not self.distributed:
            return rows
        b = rows.shape[0] // self.world_size
        return rows[self.rank * b:(self.rank + 1) * b]

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks: one all-reduce (sum) of the flattened gradients per
        dtype, then / world size. No host synchronisation. Parameters without a gradient must be the same on every
        rank (checked by the collective's size: a mismatch raises instead of hanging or mixing tensors)."""
        if not self.distributed:
            return
        buckets: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                buckets.setdefault(p.grad.dtype, []).append(p.grad)
        self._check_same_layout(tuple((str(k), tuple(g.numel() for g in v)) for k, v in buckets.items()))
        for grads in buckets.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.world_size)
            for g, chunk in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(chunk.view_as(g))

    def _check_same_layout(self, layout: tuple) -> None:
        """Every rank must send gradients of the same parameters; checked once per layout (a host round trip only
        the first time a rank sees a layout)."""
        if layout in _LAYOUTS:
            return
        layouts = self.gather_objects(layout)
        if any(other != layouts[0] for other in layouts):
            raise RuntimeError("data-parallel training: the ranks computed gradients for different parameters "
                               "(a loss that uses some parameters on some ranks only); every rank's loss must use "
                               "the same parameters")
        _LAYOUTS.add(layout)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean over ranks of equally sized tensors (sum all-reduce / N: gloo has no AVG)."""
        if not self.distributed:
            return values
        out = values.detach().to(self._comm_device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return (out / self.world_size).to(values.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on some rank (one small all-reduce, read back on the host)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (decisions that must agree: skip a job, the checkpoint to resume from)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (any count per rank, same trailing shape and dtype) in rank order, on the
        CPU of every rank."""
        if not self.distributed:
            return rows
        sizes = self.gather_objects(int(rows.shape[0]))
        padded = torch.zeros((max(sizes), *rows.shape[1:]), dtype=rows.dtype, device=self._comm_device)
        padded[:rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n].cpu() for p, n in zip(parts, sizes, strict=True)])

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def describe(self, batch_size: int) -> dict[str, Any]:
        """The record's "distributed" entry: how the job ran."""
        if not self.distributed:
            return {"world_size": 1, "backend": None, "global_batch": batch_size, "per_rank_batch": batch_size,
                    "gradient_sync": "none (one process)"}
        return {"world_size": self.world_size, "backend": self.backend, "launcher": "torchrun",
                "global_batch": batch_size, "per_rank_batch": batch_size // self.world_size,
                "gradient_sync": GRADIENT_SYNC,
                "data": "the global batch's example indices come from the shared train stream (the same on every "
                        "rank); rank r trains on rows r*b to (r+1)*b; the methods' noise comes from a stream per "
                        "rank derived from (seed, rank, step at which the segment started)",
                "sampling": "eval.n_samples split over ranks, rank r drawing its share from (seed, 'sample/rank{r}'), "
                            "gathered in rank order; metrics evaluated on rank 0",
                "writes": "rank 0 only (record, checkpoint, samples)"}


_LAYOUTS: set = set()
SINGLE = Group()
_GROUP: Group | None = None


def check_split(batch_size: int, n_samples: int, where: str = "", size: int | None = None) -> None:
    """Refuse a global batch that does not split evenly over the ranks (the batch would change meaning with N)."""
    size = world_size() if size is None else size
    if size <= 1:
        return
    prefix = f"{where}: " if where else ""
    if batch_size % size:
        raise ConfigError(f"{prefix}train.batch_size = {batch_size} does not split evenly over {size} processes: the "
                          f"global batch is divided equally between ranks; use a multiple of {size} (e.g. "
                          f"{max(size, batch_size - batch_size % size)}) or another process count")
    if n_samples < size:
        raise ConfigError(f"{prefix}eval.n_samples = {n_samples} is fewer than the {size} processes that share "
                          "the sampling; use at least one sample per process")


def _rank_device(name: str, size: int, lrank: int) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK for auto (with CUDA) and cuda, the CPU for cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda:"):
        raise UsageError(f"device {name!r} names one GPU, but the {size} processes of a data-parallel job each need "
                         "their own; use --device cuda (rank r on a node uses cuda:LOCAL_RANK) or --device cpu")
    if name != "cuda":
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda for a data-parallel job")
    if not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    if lrank >= torch.cuda.device_count():
        raise UsageError(f"local rank {lrank} needs cuda:{lrank}, but this node has {torch.cuda.device_count()} "
                         "CUDA device(s): start at most one process per GPU (--nproc-per-node)")
    return torch.device("cuda", lrank)


def current(device: str) -> Group:
    """The process group of this job: `SINGLE` unless started by torchrun with WORLD_SIZE > 1, else initialised
    once from torchrun's environment (NCCL on CUDA, gloo on CPU) and destroyed at exit."""
    global _GROUP
    size = world_size()
    if size == 1:
        return SINGLE
    dev = _rank_device(device, size, local_rank())
    if _GROUP is not None:
        if _GROUP.device.type != dev.type:
            raise UsageError(f"this process group runs on {_GROUP.device.type}; a job asked for {device!r}")
        return _GROUP
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))
        dist.init_process_group(backend, timeout=timeout, device_id=dev if dev.type == "cuda" else None)
        atexit.register(shutdown)
    _GROUP = Group(dist.get_rank(), dist.get_world_size(), local_rank(), backend, dev)
    return _GROUP


def shutdown() -> None:
    """Destroy the process group (idempotent): torchrun's processes end cleanly."""
    global _GROUP
    _GROUP = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# launching ---------------------------------------------------------------------------------------------

def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m harness run ARGS`: torchrun with a
    local rendezvous on a free port, one process per rank, each running `harness run ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "harness", "run", *args]


def launch(nproc: int, args: list[str]) -> int:
    """`scorebench run --nproc N ARGS`: run ARGS under torchrun and return its exit code."""
    if world_size() > 1:
        raise UsageError("--nproc inside a torchrun process: the job is already data-parallel "
                         f"(WORLD_SIZE={world_size()}); drop --nproc")
    return subprocess.run(torchrun_command(nproc, args), check=False).returncode
