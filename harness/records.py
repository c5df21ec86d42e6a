"""Run records: typed JSON written atomically, plus the environment they were measured in.

Layout: ``<out>/runs/<run_id>/record.json`` beside ``samples.png``, ``samples.npz`` and ``checkpoint.pt``.
Every write goes to a unique temporary file in the same folder and is then renamed over the target, so a
crash never leaves a half-written record and concurrent writers never interleave bytes; the file gets the usual
mode from the umask (0644 under 022), like one written with `open`.

A record in progress says where it runs (`host`, `pid`) and when it last showed life (`heartbeat_utc`);
`effective_status` tells a live `running` record from one whose process is gone (`interrupted`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
STATUSES = ("running", "ok", "diverged", "failed", "interrupted")
# a `running` record whose heartbeat is older than this is reported `interrupted` when its process cannot be
# checked (another host); the runner refreshes the heartbeat every HEARTBEAT_SECONDS while a job runs
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0
REQUIRED_FIELDS = ("schema_version", "run_id", "method", "dataset", "seed", "status", "config", "metrics")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through `write(fileobj)` into a temporary sibling, fsync, then rename over `path`. The file gets
    mode 0666 minus the umask, applied by the kernel when the unique temporary file is created (mkstemp's private
    0600 would make shared result folders unreadable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    """Make a record JSON-safe: NaN/Inf become strings (JSON has no such numbers), tuples lists, paths str."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text))


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(run_dir) / "record.json"
    write_json(path, record)
    return path


class RecordError(Exception):
    """A record file that cannot be used (truncated JSON, unknown schema, missing fields)."""


def read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"{path}: unknown schema_version {data.get('schema_version')!r} "
                          f"(this scorebench reads {SCHEMA_VERSION})")
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise RecordError(f"{path}: missing fields {', '.join(missing)}")
    return data


def iter_records(results: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All readable records under `results` (sorted by path) and a message per unreadable one."""
    records, problems = [], []
    for path in sorted(Path(results).glob("runs/*/record.json")):
        try:
            rec = read_record(path)
        except (RecordError, OSError) as exc:
            problems.append(str(exc))
            continue
        rec["_path"] = str(path)
        records.append(rec)
    return records, problems


# environment -------------------------------------------------------------------------------------------

def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(plugin_dists: dict[str, str | None] | None = None) -> dict[str, Any]:
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _dist_version("torchvision"),
        "torch-fidelity": _dist_version("torch-fidelity"),
        "numpy": _dist_version("numpy"),
        "scorebench": _dist_version("scorebench"),
    }
    if plugin_dists:
        out["plugins"] = dict(sorted(plugin_dists.items()))
    return out


def git_state(path: Path | None = None, exclude: Path | str | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the git work tree holding the scorebench sources (None outside git).

    `exclude` is the results folder being written: its files (tracked reference results rewritten with
    `--out results`) do not make the tree dirty, so a run from a clean checkout says `dirty: false`."""
    path = path or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        commit, top = git("rev-parse", "HEAD", "--show-toplevel").split("\n")[:2]
        pathspec = ["--", "."]
        if exclude is not None:
            try:
                rel = Path(exclude).resolve().relative_to(Path(top).resolve())
            except ValueError:  # the results folder lies outside the work tree
                rel = None
            if rel is not None and rel.parts:
                pathspec.append(f":(top,exclude){rel.as_posix()}")
            elif rel is not None:  # the work tree itself is the results folder: nothing else to compare
                pathspec = None
        status = "" if pathspec is None else git("-C", top, "status", "--porcelain", "--untracked-files=no",
                                                 *pathspec)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"commit": None, "dirty": None}
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hostname() -> str:
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def _parse_utc(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def effective_status(rec: dict[str, Any], now: datetime | None = None,
                     stale_after: float = STALE_AFTER_SECONDS) -> str:
    """The record's status, except that a `running` record whose job is gone is `interrupted`: on this host
    when its process (`pid`) no longer exists, on any host when its heartbeat (`heartbeat_utc`, else
    `started_utc` for records without one) is older than `stale_after` seconds. A kill -9 leaves such records."""
    status = rec.get("status")
    if status != "running":
        return status
    if rec.get("host") == hostname() and rec.get("pid") is not None and not process_alive(rec["pid"]):
        return "interrupted"
    beat = _parse_utc(rec.get("heartbeat_utc")) or _parse_utc(rec.get("started_utc"))
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if beat is None or (now - beat).total_seconds() > stale_after:
        return "interrupted"
    return "running"


def hardware(device: torch.device | str | None = None) -> dict[str, Any]:
    dev = torch.device(device) if device is not None else None
    gpu = torch.cuda.get_device_name(dev) if dev is not None and dev.type == "cuda" else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
    }
