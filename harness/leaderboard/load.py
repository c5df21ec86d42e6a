"""Reading run records into two tidy frames, with copies of one run and repeated seeds removed.

`load_runs(results)` gives one row per run and one row per run × metric. Before that, `dedupe` keeps one record per
run id (copies from two machines or folders are one run) and one record per (data set, method variant, budget,
seed) (a seed counts once, however often it was run): the newest complete record wins (status ok or diverged
before failed, before interrupted or running; then the later ended_utc, then started_utc). Every dropped record is
named in the problems list.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.records import iter_records

TRAIN_KEYS_OUTSIDE_VARIANT = ("steps", "seconds", "checkpoint_every")  # budget (in the protocol) and bookkeeping
COMPLETE_ORDER = {"ok": 0, "diverged": 0, "failed": 1, "interrupted": 2, "running": 3}
ESS_METRICS = ("ess_bulk", "ess_tail", "ess_per_1k_nfe", "ess_per_second")


def to_number(v: Any) -> float:
    """Record values are JSON numbers, or strings 'nan'/'inf' for non-finite floats (records._jsonable)."""
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:n]


def effective_status(rec: dict[str, Any]) -> str:
    """The record's status, with a stale "running" record reported as "interrupted" where the runner can tell
    (harness.records.effective_status); the recorded status otherwise."""
    try:
        from harness.records import effective_status as eff
    except ImportError:
        return str(rec.get("status"))
    return str(eff(rec))


def sampling_protocol(rec: dict[str, Any]) -> dict[str, Any] | None:
    """How the samples were drawn where a method records it (walk-jump: parallel short chains or one long chain),
    from rec["sampling"] or the method config's `protocol`."""
    s = rec.get("sampling")
    if isinstance(s, dict) and s:
        return s
    proto = ((rec.get("config") or {}).get("method") or {}).get("protocol")
    return {"protocol": proto} if proto is not None else None


SAMPLING_COST_KEYS = ("batches", "nfe_mean", "grad_evals")


def variant_config(rec: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs of one method the same treatment: resolved method, backbone and training settings, and
    the sampling protocol where recorded (the budget is part of the protocol instead)."""
    cfg = rec.get("config") or {}
    train = {k: v for k, v in (cfg.get("train") or {}).items() if k not in TRAIN_KEYS_OUTSIDE_VARIANT}
    out = {"method": cfg.get("method") or {}, "backbone": cfg.get("backbone") or {}, "train": train}
    sampling = rec.get("sampling")
    if isinstance(sampling, dict):
        # the protocol only: totals and batch counts follow n and the batch size, costs are columns of their own
        protocol = {k: v for k, v in sampling.items() if k not in SAMPLING_COST_KEYS and not k.startswith("total_")}
        if protocol:
            out["sampling"] = protocol
    return out


def budget(rec: dict[str, Any]) -> dict[str, Any]:
    """The training budget; a record of another track (the sampler track's "sampler-oracle": no training) names its
    track too, so its runs are never grouped, deduplicated or ranked with trained ones."""
    b = rec.get("budget") or {}
    out = {"steps": b.get("steps"), "seconds": b.get("seconds")}
    if rec.get("track"):
        out["track"] = str(rec["track"])
    return out


def _newest_first(rec: dict[str, Any]) -> tuple:
    return (COMPLETE_ORDER.get(rec["_status"], 4), _neg(str(rec.get("ended_utc") or "")),
            _neg(str(rec.get("started_utc") or "")), str(rec.get("_path")))


def _neg(s: str) -> tuple:
    """Sort key putting later ISO times first (a missing time last)."""
    return (s == "", tuple(-ord(c) for c in s))


def dedupe(recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(kept records, one message per dropped record): one record per run id, then one per seed of a variant."""
    problems = []

    def keep_best(groups: dict[Any, list[dict[str, Any]]], why: str) -> list[dict[str, Any]]:
        kept = []
        for _, g in sorted(groups.items(), key=lambda kv: canonical(kv[0])):
            g = sorted(g, key=_newest_first)
            kept.append(g[0])
            for r in g[1:]:
                problems.append(f"{r.get('_path')}: dropped, {why(r)} (kept {g[0].get('_path')}, "
                                f"status {g[0]['_status']}, ended {g[0].get('ended_utc') or '?'})")
        return kept

    by_id: dict[Any, list] = {}
    for r in recs:
        by_id.setdefault(str(r["run_id"]), []).append(r)
    recs = keep_best(by_id, lambda r: f"a copy of run {r['run_id']}")
    by_seed: dict[Any, list] = {}
    for r in recs:
        key = (str(r["dataset"]), str(r["method"]), short_hash(variant_config(r)), canonical(budget(r)), r["seed"])
        by_seed.setdefault(key, []).append(r)
    recs = keep_best(by_seed, lambda r: f"run {r['run_id']} repeats seed {r['seed']} of the same variant "
                                        "(a seed counts once)")
    return sorted(recs, key=lambda r: str(r.get("_path"))), problems


RUN_COLS = ["run_id", "path", "method", "dataset", "seed", "status", "variant", "variant_config", "budget", "error",
            "nfe", "train_seconds", "params", "metric_errors", "train_steps", "steps_per_second", "sample_seconds",
            "gflops_per_sample", "grad_evals_per_sample", "sampling", "train_pflops", "mfu", "track"]
VAL_COLS = ["run_id", "method", "dataset", "seed", "variant", "budget", "metric", "value", "higher_is_better",
            "floor", "protocol", "protocol_key", "reliable", "stderr", "lower_bound", "label", "status", "bound"]


def load_runs(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs: one row per kept record, values: one row per record × metric, problems: one message per unreadable,
    malformed or dropped record)."""
    recs, problems = iter_records(Path(results))
    good = []
    for r in recs:
        try:
            r["_status"] = effective_status(r)
            _record_rows(r)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:  # a field of the wrong type: skip, say where
            problems.append(f"{r.get('_path')}: malformed record ({type(exc).__name__}: {exc})")
            continue
        good.append(r)
    good, dropped = dedupe(good)
    runs, values = [], []
    for r in good:
        run, vals = _record_rows(r)
        runs.append(run)
        values.extend(vals)
    runs_df = pd.DataFrame(runs, columns=RUN_COLS).sort_values(["dataset", "method", "variant", "seed", "run_id"])
    vals_df = pd.DataFrame(values, columns=VAL_COLS).sort_values(["dataset", "metric", "method", "seed", "run_id"])
    return runs_df.reset_index(drop=True), vals_df.reset_index(drop=True), sorted(problems) + dropped


def _record_rows(r: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    vcfg = variant_config(r)
    b = budget(r)
    err = r.get("error") or None
    t = r.get("timings") or {}
    if not isinstance(t, dict):
        raise TypeError(f"timings is {type(t).__name__}, expected an object")
    sps = to_number(t.get("samples_per_second"))
    nfe = to_number(r.get("nfe"))
    run = {
        "run_id": str(r["run_id"]), "path": r.get("_path"), "method": str(r["method"]), "dataset": str(r["dataset"]),
        "seed": int(r["seed"]), "status": r.get("_status", str(r["status"])), "variant": short_hash(vcfg),
        "variant_config": vcfg, "budget": canonical(b),
        "error": (err.get("message") if isinstance(err, dict) else str(err)) if err else None,
        "nfe": nfe if math.isfinite(nfe) else to_number(t.get("nfe_per_sample")),
        "train_seconds": to_number(t.get("train_seconds")),
        "params": to_number(r.get("params")), "metric_errors": dict(r.get("metric_errors") or {}),
        "train_steps": to_number(t.get("train_steps", b.get("steps"))),
        "steps_per_second": to_number(t.get("steps_per_second")),
        "sample_seconds": 1.0 / sps if math.isfinite(sps) and sps > 0 else math.nan,
        "gflops_per_sample": to_number(t.get("sample_gflops_per_sample")),
        "grad_evals_per_sample": to_number(t.get("grad_evals_per_sample", r.get("grad_evals_per_sample"))),
        "train_pflops": to_number(t.get("train_pflops")), "mfu": to_number(t.get("mfu")),
        "sampling": sampling_protocol(r), "track": str(r.get("track") or ""),
    }
    metrics = r.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics is {type(metrics).__name__}, expected an object")
    vals = []
    for name, m in sorted(metrics.items()):
        if not isinstance(m, dict):
            raise TypeError(f"metric {name!r} is {type(m).__name__}, expected an object")
        details = m.get("details") if isinstance(m.get("details"), dict) else {}
        protocol = {**(m.get("protocol") or {}), "budget": b}
        label = m.get("label") or (m.get("protocol") or {}).get("label") or details.get("label")
        vals.append({
            "run_id": run["run_id"], "method": run["method"], "dataset": run["dataset"], "seed": run["seed"],
            "variant": run["variant"], "budget": run["budget"], "metric": str(name), "value": to_number(m.get("value")),
            "higher_is_better": m.get("higher_is_better"), "floor": to_number(m.get("floor")),
            "protocol": protocol, "protocol_key": canonical(protocol), "reliable": details.get("reliable"),
            "stderr": to_number(m.get("stderr")), "lower_bound": bool(m.get("lower_bound")),
            "label": str(label) if label else None, "status": run["status"],
        })
    # an IACT from too short a chain (flagged lower_bound, or reliable: false in older records) bounds the ESS
    # of the same chain from above: ESS = N / τ
    iat_bound = any(v["metric"] == "iat" and (v["lower_bound"] or v["reliable"] is False) for v in vals)
    for v in vals:
        v["bound"] = ("lower" if v["lower_bound"] or (v["metric"] == "iat" and iat_bound)
                      else "upper" if iat_bound and v["metric"] in ESS_METRICS else "")
    return run, vals

