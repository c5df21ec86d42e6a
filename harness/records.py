"""Run records: typed JSON written atomically, plus the environment they were measured in.

Layout: ``<out>/runs/<run_id>/record.json`` beside ``samples.png``, ``samples.npz`` and ``checkpoint.pt``.
Every write goes to a unique temporary file in the same folder and is then renamed over the target, so a
crash never leaves a half-written record and concurrent writers never interleave bytes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1
STATUSES = ("running", "ok", "diverged", "failed")
REQUIRED_FIELDS = ("schema_version", "run_id", "method", "dataset", "seed", "status", "config", "metrics")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through `write(fileobj)` into a temporary sibling, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the git work tree holding the scorebench sources (None outside git)."""
    path = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
