"""`scorebench doctor`: what this machine has, what data was found, and which plugins loaded.

Exit code (`exit_code`): 0 when nothing is wrong, 1 when a problem was found: a checked data set that is missing,
fails its checksum or cannot be read, or a plugin that failed to load or had a registration rejected. Missing data
sets count: doctor checks every registered data set unless `datasets` names the ones a user needs (`--datasets
ring8,digits` for the quick config). Warnings (a loaded machine; FID weights not available) never change it.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import torch

from harness import records
from harness.datasets import ENV_DATA_ROOT, default_cache_dir, resolve_data_root
from harness.errors import UsageError, did_you_mean
from harness.plugins import PluginHost

MARKS = {"found": "ok", "missing": "MISSING", "checksum mismatch": "BAD MD5"}


def load_status() -> dict[str, Any]:
    """The 1-minute load average against the cores this process may use (its CPU affinity). A load above the
    cores means runnable work already waits for a core: a run will be slower and its timings unreliable."""
    from harness.runner import available_cores

    cores = available_cores()
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return {"load_1min": None, "cores": cores, "overloaded": False}
    return {"load_1min": load1, "cores": cores, "overloaded": load1 > cores}


def fid_weights_status() -> dict[str, Any]:
    from harness.metrics.inception import weights_status

    try:
        return weights_status()
    except Exception as exc:  # noqa: BLE001 - doctor reports, never fails
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}


def diagnose(host: PluginHost, data_root: str | None = None, check_data: bool = True,
             datasets: list[str] | None = None) -> dict[str, Any]:
    """Everything doctor reports, as a dict (the --json output). `datasets`: check only these (default: all);
    unknown names are a `UsageError`. `problems` lists what makes the exit code 1, `warnings` what does not."""
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
        "load": load_status(),
        "data_root": {"path": str(root), "source": source, "exists": root.is_dir()},
        "datasets": {},
        "fid_weights": fid_weights_status(),
        "plugins": [i.as_dict() for i in host.infos.values()],
    }
    if check_data:
        reg = host.registries["datasets"]
        for name in datasets or []:
            if name not in reg:
                raise UsageError(did_you_mean("data set", name, reg.names()))
        for entry in reg:
            if datasets and entry.name not in datasets:
                continue
            try:
                status, detail = entry.obj(root=data_root or None).check()
            except Exception as exc:  # noqa: BLE001 - doctor reports, never fails
                status, detail = "error", f"{type(exc).__name__}: {exc}"
            report["datasets"][entry.name] = {"found": status == "found", "status": status, "detail": detail}
    report["problems"] = problems(report)
    report["warnings"] = warnings(report)
    return report


def problems(rep: dict[str, Any]) -> list[str]:
    """What makes `scorebench doctor` exit 1: checked data sets not found (missing, bad MD5, unreadable) and
    plugins that failed to load or whose registrations were rejected."""
    out = [f"data set {name}: {d['status']}" for name, d in rep["datasets"].items() if not d["found"]]
    out += [f"plugin {p['name']}: failed" for p in rep["plugins"] if p["error"]]
    return out


def warnings(rep: dict[str, Any]) -> list[str]:
    """What doctor points out without failing: a machine already loaded beyond the cores this process may use."""
    load = rep["load"]
    if load["overloaded"]:
        return [f"the 1-minute load average {load['load_1min']:.2f} already exceeds the {load['cores']} cores this "
                "process may use: runs will be slow and their timings (steps/s, samples/s) unreliable"]
    return []


def exit_code(rep: dict[str, Any]) -> int:
    return 1 if rep["problems"] else 0


def first_sentence(text: str) -> str:
    """The first sentence of a message (a period followed by a capitalised word ends it; paths keep their dots),
    without a leading "<data set name>: " prefix."""
    m = re.match(r"(.+?\.)\s+[A-Z]", text, flags=re.S)
    return re.sub(r"^\w+: ", "", m.group(1) if m else text)


def format_report(rep: dict[str, Any]) -> str:
    load = rep["load"]
    lines = [
        f"python       {rep['python']}",
        f"torch        {rep['torch']} (CUDA build {rep['cuda_version'] or 'none'}; "
        f"CUDA available: {'yes' if rep['cuda_available'] else 'no'})",
        f"device       {rep['device']}",
        "versions     " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if k != "python"),
        f"cpu load     {'n/a' if load['load_1min'] is None else format(load['load_1min'], '.2f')} over the last "
        f"minute; {load['cores']} cores usable by this process",
        f"data root    {rep['data_root']['path']} (from {rep['data_root']['source']}; "
        f"{'exists' if rep['data_root']['exists'] else 'does not exist'})",
    ]
    statuses = set()
    for name, d in rep["datasets"].items():
        mark = MARKS.get(d["status"], "ERROR")
        statuses.add(d["status"])
        detail = d["detail"] if d["status"] not in MARKS else first_sentence(d["detail"])
        lines.append(f"  {mark:<7} {name}" + ("" if d["found"] else f": {detail}"))
    # how to get data: once, not on every line
    if "missing" in statuses:
        lines.append(f"  (MISSING: rerun with --download (needs internet), or copy the files listed into the "
                     f"folder named on its line; the data root is --data-root, else ${ENV_DATA_ROOT}, else "
                     f"{default_cache_dir() / 'data'}. `scorebench doctor --json` has the full message.)")
    if "checksum mismatch" in statuses:
        lines.append("  (BAD MD5: the file is corrupt or not the original release: delete it and rerun with "
                     "--download, or copy in a good copy.)")
    fw = rep["fid_weights"]
    lines.append(f"fid weights  {fw.get('status')}" + (f": {fw['detail']}" if fw.get("detail") else ""))
    lines.append("plugins")
    for p in rep["plugins"]:
        state = "FAILED " if p["error"] else "ok     "
        ver = f" {p['distribution']} {p['version']}" if p.get("distribution") else ""
        lines.append(f"  {state} {p['name']} ({p['source']}{ver})" + (f": {p['error']}" if p["error"] else ""))
    lines += [f"warning: {w}" for w in rep.get("warnings", [])]
    probs = rep.get("problems", [])
    lines.append(f"{len(probs)} problem{'s' if len(probs) != 1 else ''} found" + (": " + "; ".join(probs)
                                                                                 if probs else ""))
    return "\n".join(lines)
