"""`scorebench doctor`: what this machine has, what data was found, and which plugins loaded."""

from __future__ import annotations

import platform
from typing import Any

import torch

from harness import records
from harness.datasets import resolve_data_root
from harness.plugins import PluginHost


def fid_weights_status() -> dict[str, Any]:
    from harness.metrics.inception import weights_status

    try:
        return weights_status()
    except Exception as exc:  # noqa: BLE001 - doctor reports, never fails
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}


def diagnose(host: PluginHost, data_root: str | None = None, check_data: bool = True) -> dict[str, Any]:
    root, source = resolve_data_root(data_root)
    host.registries  # noqa: B018 - run the register hooks first, so rejected registrations are reported below
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({records.cpu_model()})",
        "versions": records.versions(),
        "data_root": {"path": str(root), "source": source, "exists": root.is_dir()},
        "datasets": {},
        "fid_weights": fid_weights_status(),
        "plugins": [i.as_dict() for i in host.infos.values()],
    }
    if check_data:
        for entry in host.registries["datasets"]:
            ds = entry.obj(root=data_root or None)
            status, detail = ds.check()
            report["datasets"][entry.name] = {"found": status == "found", "status": status, "detail": detail}
    return report


def format_report(rep: dict[str, Any]) -> str:
    lines = [
        f"python       {rep['python']}",
        f"torch        {rep['torch']} (CUDA build {rep['cuda_version'] or 'none'}; "
        f"CUDA available: {'yes' if rep['cuda_available'] else 'no'})",
        f"device       {rep['device']}",
        "versions     " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if k != "python"),
        f"data root    {rep['data_root']['path']} (from {rep['data_root']['source']}; "
        f"{'exists' if rep['data_root']['exists'] else 'does not exist'})",
    ]
    for name, d in rep["datasets"].items():
        mark = {"found": "ok", "missing": "MISSING", "checksum mismatch": "BAD MD5"}.get(d["status"], "ERROR")
        lines.append(f"  {mark:<7} {name}" + ("" if d["found"] else f": {d['detail']}"))
    fw = rep["fid_weights"]
    lines.append(f"fid weights  {fw.get('status')}" + (f": {fw['detail']}" if fw.get("detail") else ""))
    lines.append("plugins")
    for p in rep["plugins"]:
        state = "FAILED " if p["error"] else "ok     "
        ver = f" {p['distribution']} {p['version']}" if p.get("distribution") else ""
        lines.append(f"  {state} {p['name']} ({p['source']}{ver})" + (f": {p['error']}" if p["error"] else ""))
    return "\n".join(lines)
