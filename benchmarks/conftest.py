"""pytest-benchmark suites: `pytest benchmarks --benchmark-enable` (speed is measured here, never asserted).

Each suite includes a baseline case in the same group (a plain forward+backward of the shared backbone), so
results can be reported as ratios measured in the same run on the same machine. A group whose baseline case sets
``extra_info["baseline"] = True`` gets its ratios computed here (`speed_ratios`): written into the JSON under
"ratios" and printed at the end of the run.
"""

import os

import torch

os.environ.setdefault("SCOREBENCH_LOAD_PLUGINS", "")
# one intra-op thread, as in the tests: stable ratios on a shared 2-core machine
torch.set_num_threads(1)


def speed_ratios(benchmarks: list[dict]) -> list[dict]:
    """For every group with one case marked ``extra_info["baseline"]``: each other case's speed relative to it,
    baseline median time / case median time (> 1: faster than the baseline), with the interval from the quartiles,
    q1_base / q3_case .. q3_base / q1_case (the spread of both, not a confidence interval)."""
    out = []
    groups: dict[str, list[dict]] = {}
    for b in benchmarks:
        groups.setdefault(b["group"], []).append(b)
    for group, cases in groups.items():
        base = [b for b in cases if b.get("extra_info", {}).get("baseline")]
        if len(base) != 1:
            continue
        s0 = base[0]["stats"]
        for b in cases:
            if b is base[0]:
                continue
            s = b["stats"]
            out.append({"group": group, "case": b["name"], "baseline": base[0]["name"],
                        "ratio": s0["median"] / s["median"], "low": s0["q1"] / s["q3"], "high": s0["q3"] / s["q1"],
                        "case_median_s": s["median"], "case_iqr_s": s["iqr"], "baseline_median_s": s0["median"],
                        "baseline_iqr_s": s0["iqr"], "note": b.get("extra_info", {}).get("compile_note", "")})
    return out


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Ratios in the saved JSON (under "ratios") and on the terminal."""
    ratios = speed_ratios(output_json["benchmarks"])
    if not ratios:
        return
    output_json["ratios"] = ratios
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_sep("-", "speed ratios (baseline median time / case median time; quartile interval)")
        for r in ratios:
            tr.write_line(f"{r['case']:<60} {r['ratio']:6.3f}  [{r['low']:.3f}, {r['high']:.3f}]  vs {r['baseline']}"
                          + (f"  ({r['note'][:80]})" if r["note"] else ""))


def pytest_benchmark_update_machine_info(config, machine_info):
    """Name what ran the benchmarks beyond the CPU: torch, its threads, the CUDA device if any."""
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
