"""Executors: where a suite's jobs run.

The suite yields jobs; an executor decides where `harness.runner.run_job` runs and brings the records back
(DESIGN.md, "Where the next capabilities belong"). The runner stays one job in one process and knows nothing of
Ray.

- `LocalExecutor` (the default): the jobs one after another in this process, exactly as `scorebench run` always
  did.
- `RayExecutor`: each job a Ray task with its resource request (CPUs, GPUs), on a local Ray instance or a
  cluster (`address`). A worker runs `run_job` and returns the record and the files of the run folder; the driver
  writes them atomically into the results folder, so the folder looks as if the jobs had run locally. Where the
  results folder is shared storage (the worker can read a marker with a random token the driver wrote there)
  the worker writes into it directly: checkpoints included, records live while the job runs. Ray is an optional
  extra (`pip install -e ".[ray]"`).

Seeds and run ids come from the job alone (`harness.config.Job.run_id`, `harness.runner.derive_seed`), so the
executor changes where a job runs, never what it computes: on CPU a job gives the same metrics bit for bit
through either executor when it runs with the same intra-op threads.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness import records
from harness.config import Job, Suite
from harness.errors import UsageError
from harness.plugins import ENV_LOAD_PLUGINS, PluginHost
from harness.progress import active as progress_active
from harness.progress import is_active as progress_is_active

EXECUTORS = ("local", "ray")
RAY_EXTRA = 'pip install -e ".[ray]"'
MARKER_PREFIX = ".scorebench-executor-"  # the driver's marker file in the results folder (shared-storage check)
RESULTS_MODES = ("auto", "shared", "returned")


class Executor:
    """Runs the jobs of a validated suite and returns one `JobOutcome` per job, in the suite's order. Ctrl-C
    raises `harness.runner.Interrupted` carrying the outcomes so far (unfinished jobs recorded `interrupted`)."""

    name = "base"

    def run(self, host: PluginHost, suite: Suite, out: Path, *, resume: bool = False, progress: bool = True,
            log=print) -> list:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class LocalExecutor(Executor):
    """The jobs one after another in this process with `suite.threads` intra-op threads (today's loop)."""

    name = "local"

    def run(self, host, suite, out, *, resume=False, progress=True, log=print):
        from harness.runner import Interrupted, JobOutcome, resolve_threads, run_job, using_threads

        threads = resolve_threads(suite.suite.threads)
        outcomes: list[JobOutcome] = []
        with ExitStack() as stack:
            stack.enter_context(using_threads(threads))
            if progress and not progress_is_active():
                stack.enter_context(progress_active(True))
            for i, job in enumerate(suite.jobs, 1):
                log(f"[{i}/{len(suite.jobs)}] {job.method} on {job.dataset} (seed {job.seed}) -> "
                    f"{out / 'runs' / job.run_id}")
                t0 = time.perf_counter()
                try:
                    res = run_job(host, job, out, resume=resume, progress=progress)
                except Interrupted as exc:
                    outcomes.append(JobOutcome(job.run_id, "interrupted", exc.run_dir, str(exc),
                                               time.perf_counter() - t0))
                    exc.outcomes = outcomes
                    raise
                line = f"    {res.status}" + (f": {res.message}" if res.message else "")
                log(line)
                outcomes.append(res)
        return outcomes


def require_ray():
    """The `ray` module, or a usage error (exit 2) naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"--executor ray needs Ray, which is not installed ({exc}); install the extra: "
                         f"{RAY_EXTRA}") from None
    return ray


def make_executor(kind: str = "local", *, address: str | None = None, gpus_per_job: float | None = None,
                  cpus_per_job: float | None = None, max_retries: int | None = None) -> Executor:
    """The executor `scorebench run --executor KIND` asks for; Ray options without `ray` are a usage error."""
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    ray_options = {"--address": address, "--gpus-per-job": gpus_per_job, "--cpus-per-job": cpus_per_job,
                   "--max-retries": max_retries}
    if kind == "local":
        given = [flag for flag, value in ray_options.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --executor ray (the local executor runs the jobs "
                             "one after another in this process)")
        return LocalExecutor()
    require_ray()
    return RayExecutor(address=address, gpus_per_job=gpus_per_job,
                       cpus_per_job=1.0 if cpus_per_job is None else cpus_per_job,
                       max_retries=1 if max_retries is None else max_retries)


# Ray ---------------------------------------------------------------------------------------------------

class _Attempts:
    """A tiny Ray actor: which jobs started, how often (the attempt number a worker records), and where."""

    def __init__(self):
        self.started: dict[str, int] = {}
        self.hosts: dict[str, str] = {}

    def start(self, run_id: str, host: str) -> int:
        self.started[run_id] = self.started.get(run_id, 0) + 1
        self.hosts[run_id] = host
        return self.started[run_id]

    def snapshot(self) -> tuple[dict[str, int], dict[str, str]]:
        return dict(self.started), dict(self.hosts)


@dataclass
class _Task:
    """One job's place in the driver's bookkeeping."""

    index: int
    job: Job
    ref: Any = None
    t0: float = 0.0


@dataclass
class RayExecutor(Executor):
    """Each job a Ray task (`num_cpus=cpus_per_job`, `num_gpus=gpus_per_job`, `max_retries`); a worker process
    that dies is retried by Ray up to `max_retries` times, then the job is recorded `failed` with the reason. A job
    that fails inside `run_job` is recorded by `run_job` and not retried.

    `address`: None starts a local Ray instance on this machine (`num_cpus`, default: Ray's count of the cores)
    and shuts it down afterwards; "auto" or "HOST:PORT" joins a running cluster (`ray start --head`). An already
    initialised Ray (a test, a notebook) is used as it is. `gpus_per_job` None: 1 where the cluster has GPUs and
    the suite's device is not cpu, else 0. `results`: "auto" detects whether the workers see the results folder
    (shared storage), "shared"/"returned" force one mode (returned: the worker runs in a temporary folder and
    returns the files, without the checkpoint). `on_update(counts)` is called about twice a second and after each
    finished job with {"total", "done", "running", "failed"}."""

    address: str | None = None
    gpus_per_job: float | None = None
    cpus_per_job: float = 1.0
    max_retries: int = 1
    results: str = "auto"
    num_cpus: int | None = None
    on_update: Callable[[dict[str, int]], None] | None = None
    poll_seconds: float = 0.5
    name = "ray"
    _resources_used: dict[str, float] | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        return f"ray ({self.address or 'local instance'})"

    # setup ---------------------------------------------------------------------------------------------

    def _init(self, ray) -> bool:
        """Connect to (or start) Ray; True when this call started it (and must shut it down)."""
        import logging

        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at --address {self.address}" if self.address else "a local Ray instance"
            raise UsageError(f"could not start or reach {where}: {exc}") from None
        return True

    def _resources(self, ray, suite: Suite) -> tuple[float, float]:
        device = suite.suite.device
        if device.startswith("cuda:"):
            raise UsageError(f"--device {device} with --executor ray: Ray assigns each task its GPU(s); use "
                             "--device cuda (or auto) with --gpus-per-job")
        cluster = ray.cluster_resources()
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = 1.0 if device != "cpu" and cluster.get("GPU", 0) > 0 else 0.0
        if gpus < 0 or self.cpus_per_job < 0 or self.max_retries < 0:
            raise UsageError("--gpus-per-job, --cpus-per-job and --max-retries must be >= 0")
        if device == "cuda" and gpus == 0:
            raise UsageError("--device cuda with --gpus-per-job 0: Ray hides the GPUs from tasks that ask for "
                             "none; give --gpus-per-job (e.g. 1)")
        for name, want in (("GPU", gpus), ("CPU", self.cpus_per_job)):
            if want > cluster.get(name, 0):
                raise UsageError(f"each job asks for {want:g} {name}(s) but the Ray cluster has "
                                 f"{cluster.get(name, 0):g} in all; lower --{name.lower()}s-per-job")
        return float(self.cpus_per_job), float(gpus)

    # the run -------------------------------------------------------------------------------------------

    def run(self, host, suite, out, *, resume=False, progress=True, log=print):
        from harness.runner import Interrupted, JobOutcome

        if self.results not in RESULTS_MODES:
            raise UsageError(f"results mode {self.results!r}; valid: {', '.join(RESULTS_MODES)}")
        ray = require_ray()
        started_ray = self._init(ray)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        marker = out / f"{MARKER_PREFIX}{secrets.token_hex(8)}"
        token = secrets.token_hex(16)
        bar = None
        try:
            cpus, gpus = self._resources(ray, suite)
            self._resources_used = {"num_cpus": cpus, "num_gpus": gpus}
            records.atomic_write(marker, lambda f: f.write(token))
            outcomes: dict[int, JobOutcome] = {}
            tasks: list[_Task] = []
            seen: dict[str, int] = {}
            for i, job in enumerate(suite.jobs):
                if job.run_id in seen:  # the same job twice (e.g. a repeated seed): run once, report twice
                    continue
                seen[job.run_id] = i
                skipped = _skip_on_resume(job, out) if resume else None
                if skipped is not None:
                    outcomes[i] = skipped
                    log(f"[{i + 1}/{len(suite.jobs)}] {job.run_id}: {skipped.status} ({skipped.message})")
                else:
                    tasks.append(_Task(i, job))
            counter = ray.remote(num_cpus=0)(_Attempts).remote()
            remote = ray.remote(_ray_worker)
            options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.max_retries, "retry_exceptions": False}
            shipped = _plugin_files(host)
            expected = sorted(name for name, info in host.infos.items() if not info.error)
            pending: dict[Any, _Task] = {}
            counts = {"total": len(tasks), "done": 0, "running": 0, "failed": 0}
            try:
                for t in tasks:
                    payload = {"job": t.job, "out": str(out), "marker": marker.name, "token": token,
                               "results": self.results, "resume": resume, "plugins": shipped,
                               "expected_plugins": expected, "load_plugins": os.environ.get(ENV_LOAD_PLUGINS),
                               "counter": counter, "max_retries": self.max_retries, "resources": self._resources_used}
                    t.ref = remote.options(name=f"scorebench {t.job.run_id}", **options).remote(payload)
                    t.t0 = time.perf_counter()
                    pending[t.ref] = t
                log(f"{len(tasks)} job(s) submitted to {self.describe()}: {cpus:g} CPU and {gpus:g} GPU per job, "
                    f"--max-retries {self.max_retries}; records in {out / 'runs'}")
                if progress and tasks:
                    from tqdm import tqdm

                    bar = tqdm(total=len(tasks), desc="jobs", unit="job", file=sys.stderr, dynamic_ncols=True)
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_seconds)
                    for ref in ready:
                        t = pending.pop(ref)
                        res = self._collect(ray, host, t, out, counter)
                        outcomes[t.index] = res
                        counts["done"] += 1
                        counts["failed"] += res.status == "failed"
                        if bar is not None:
                            bar.update(1)
                        log(f"[{counts['done']}/{len(tasks)}] {t.job.run_id}: {res.status}"
                            + (f": {res.message}" if res.message else ""))
                    counts["running"] = _running(ray, counter, pending)
                    if bar is not None:
                        bar.set_postfix(running=counts["running"], failed=counts["failed"], refresh=True)
                    if self.on_update is not None:
                        self.on_update(dict(counts))
            except KeyboardInterrupt:
                unfinished = self._cancel(ray, host, pending, out, counter, outcomes)
                ordered = _ordered(suite, outcomes, seen)
                if not unfinished:  # everything finished while the cancellations went out
                    return ordered
                first = unfinished[0]
                exc = Interrupted(first.run_id, first.run_dir, "a Ray task", None, _checkpoint_step(first.run_dir))
                exc.outcomes = ordered
                raise exc from None
            return _ordered(suite, outcomes, seen)
        finally:
            if bar is not None:
                bar.close()
            marker.unlink(missing_ok=True)
            if started_ray:
                ray.shutdown()

    def _collect(self, ray, host, t: _Task, out: Path, counter):
        """The finished task's outcome; its files written into the results folder (returned mode), or a failed
        record where the worker died past its retries or raised."""
        from harness.runner import JobOutcome

        run_dir = out / "runs" / t.job.run_id
        seconds = time.perf_counter() - t.t0
        try:
            result = ray.get(t.ref)
        except ray.exceptions.RayTaskError as exc:  # raised inside the worker, outside run_job's own recording
            cause = getattr(exc, "cause", None) or exc
            error = {"type": type(cause).__name__, "message": str(cause).strip().splitlines()[-1] if str(cause)
                     else type(cause).__name__}
        except ray.exceptions.RayError as exc:  # the worker process or its node died, past max_retries
            attempts, hosts = _attempts(ray, counter, t.job.run_id)
            error = {"type": type(exc).__name__, "attempts": attempts,
                     "message": f"the worker died in each of {attempts} attempt(s) (--max-retries "
                                f"{self.max_retries}); last on {hosts or 'an unknown host'}: "
                                + _first_line(str(exc))}
        else:
            if result["files"]:
                for name, data in result["files"].items():
                    records.atomic_write(run_dir / name, lambda f, d=data: f.write(d), mode="wb")
            if result["record"] is not None and result["results"] == "returned":
                records.write_record(run_dir, result["record"])
            return JobOutcome(t.job.run_id, result["status"], run_dir, result["message"], seconds)
        attempts, worker_host = _attempts(ray, counter, t.job.run_id)
        executor = _executor_info(worker_host, None, attempts, self.max_retries, self._resources_used)
        _write_final(host, t.job, out, "failed", error, executor)
        return JobOutcome(t.job.run_id, "failed", run_dir, error["message"], seconds)

    def _cancel(self, ray, host, pending: dict, out: Path, counter, outcomes: dict) -> list:
        """Ctrl-C: cancel every unfinished task (killing its worker), wait for the cancellations to land, and
        record each unfinished job `interrupted` so that `--resume` runs exactly those."""
        from harness.runner import JobOutcome

        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone: the wait below sorts it out
                pass
        refs = list(pending)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=30)
        unfinished = []
        for ref in refs:
            t = pending[ref]
            if ref in done:
                try:
                    result = ray.get(ref, timeout=1)
                except Exception:  # noqa: BLE001 - cancelled or crashed: unfinished
                    result = None
                if result is not None and result["status"] in ("ok", "diverged", "failed"):
                    outcomes[t.index] = self._collect(ray, host, t, out, counter)
                    continue
            attempts, worker_host = _attempts(ray, counter, t.job.run_id)
            run_dir = out / "runs" / t.job.run_id
            prev = _read(run_dir)
            ckpt = prev.get("checkpoint_step") if prev else None
            saved = f"last checkpoint at step {ckpt}" if ckpt is not None else "no checkpoint yet"
            where = f"on {worker_host}" if worker_host else "before it started"
            error = {"type": "KeyboardInterrupt", "phase": "ray task", "step": None, "checkpoint_step": ckpt,
                     "message": f"interrupted (Ctrl-C in the driver) {where}; {saved}; rerun with --resume"}
            # a `running` record in the results folder was written there by the worker itself: shared storage
            mode = (prev or {}).get("executor", {}).get("results") or ("shared" if prev and prev["status"] == "running"
                                                                       else None)
            executor = _executor_info(worker_host, mode, attempts, self.max_retries, self._resources_used)
            _write_final(host, t.job, out, "interrupted", error, executor)
            outcomes[t.index] = JobOutcome(t.job.run_id, "interrupted", run_dir, error["message"],
                                           time.perf_counter() - t.t0)
            unfinished.append(outcomes[t.index])
        return unfinished


# driver helpers ----------------------------------------------------------------------------------------

def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _read(run_dir: Path) -> dict[str, Any] | None:
    try:
        return records.read_record(run_dir / "record.json")
    except records.RecordError:
        return None


def _checkpoint_step(run_dir: Path) -> int | None:
    rec = _read(run_dir)
    return rec.get("checkpoint_step") if rec else None


def _skip_on_resume(job: Job, out: Path):
    """What `run_job(resume=True)` would answer without running: a finished job (ok/diverged) is skipped, and so
    is one whose record belongs to another live process. None: the job must run."""
    from harness.runner import _resume_skip

    return _resume_skip(job, out / "runs" / job.run_id)


def _ordered(suite: Suite, outcomes: dict[int, Any], seen: dict[str, int]) -> list:
    """Outcomes in the suite's order (a repeated job reports its first occurrence's outcome)."""
    result = []
    for i, job in enumerate(suite.jobs):
        res = outcomes.get(seen.get(job.run_id, i))
        if res is not None:
            result.append(res)
    return result


def _attempts(ray, counter, run_id: str) -> tuple[int, str | None]:
    try:
        started, hosts = ray.get(counter.snapshot.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - bookkeeping only
        return 0, None
    return started.get(run_id, 0), hosts.get(run_id)


def _running(ray, counter, pending: dict) -> int:
    """Jobs started on a worker and not finished yet (the rest of `pending` wait for resources)."""
    try:
        started, _ = ray.get(counter.snapshot.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - bookkeeping only
        return 0
    return sum(1 for t in pending.values() if t.job.run_id in started)


def _executor_info(worker_host: str | None, results: str | None, attempt: int, max_retries: int,
                   resources: dict[str, float] | None) -> dict[str, Any]:
    info = {"kind": "ray", "worker_host": worker_host, "results": results, "attempt": attempt,
            "max_retries": max_retries}
    if resources is not None:
        info["resources"] = resources
    return info


def _write_final(host: PluginHost, job: Job, out: Path, status: str, error: dict[str, Any],
                 executor: dict[str, Any]) -> None:
    """The driver's record for a job that ended without the worker's own final record (died, cancelled): the
    partial record where the worker wrote one into shared storage, else a fresh one; never `running`."""
    from harness.runner import _base_record

    run_dir = out / "runs" / job.run_id
    rec = _read(run_dir)
    if rec is None:
        rec = _base_record(host, job, torch.device("cpu"), out)
        rec["device"] = job.suite.device
        rec["host"], rec["pid"] = executor.get("worker_host"), None
    prev = rec.get("executor") or {}
    rec["executor"] = {**prev, **{k: v for k, v in executor.items() if v is not None}}
    rec["status"], rec["error"], rec["ended_utc"] = status, error, records.utc_now()
    records.write_record(run_dir, rec)


def _plugin_files(host: PluginHost) -> dict[str, str]:
    """The plugins folder's *.py files that the driver loaded (name -> source text), shipped to every worker."""
    files = {}
    for info in host.infos.values():
        path = Path(info.source)
        if info.source not in ("builtin", "entry point") and path.suffix == ".py" and path.is_file():
            files[path.name] = path.read_text(encoding="utf-8")
    return files


# worker ------------------------------------------------------------------------------------------------

@contextmanager
def _env(name: str, value: str | None):
    saved = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def worker_plugin_host(files: dict[str, str], load_plugins: str | None) -> PluginHost:
    """The same plugins as the driver: built-ins, entry points (the same `SCOREBENCH_LOAD_PLUGINS` selection)
    and the shipped plugins-folder files, written to a folder named by their content (reused by later tasks in
    the same worker process)."""
    from harness.plugins import get_plugin_host

    folder = None
    if files:
        digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / f"scorebench-plugins-{digest}"
        for name, text in files.items():
            if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text:
                records.atomic_write(folder / name, lambda f, t=text: f.write(t))
    with _env(ENV_LOAD_PLUGINS, load_plugins):
        host = get_plugin_host(folder)
        host.registries  # noqa: B018 - register while the driver's plugin selection is in force
    return host


def _shared(out: Path, marker: str, token: str) -> bool:
    try:
        return (out / marker).read_text(encoding="utf-8") == token
    except OSError:
        return False


def _ray_worker(task: dict[str, Any]) -> dict[str, Any]:
    """One job on a Ray worker: load the driver's plugins, run `run_job` with the suite's threads into the shared
    results folder or a temporary one, stamp the record with where and how it ran, and return it (and, from a
    temporary folder, every file of the run folder but the checkpoint)."""
    import ray

    from harness.runner import resolve_threads, run_job, using_threads

    job: Job = task["job"]
    worker_host = records.hostname()
    attempt = ray.get(task["counter"].start.remote(job.run_id, worker_host)) if task.get("counter") else 1
    host = worker_plugin_host(task["plugins"], task["load_plugins"])
    loaded = {name for name, info in host.infos.items() if not info.error}
    missing = sorted(set(task["expected_plugins"]) - loaded)
    if missing:
        raise UsageError(f"worker {worker_host} lacks plugin(s) {', '.join(missing)} that the driver loaded: "
                         "install the same packages on every node")
    out = Path(task["out"])
    mode = task["results"]
    if mode == "auto":
        mode = "shared" if _shared(out, task["marker"], task["token"]) else "returned"
    executor = _executor_info(worker_host, mode, attempt, task["max_retries"], task["resources"])
    with using_threads(resolve_threads(job.suite.threads)), ExitStack() as stack:
        if mode == "shared":
            run_dir = out / "runs" / job.run_id
            if attempt > 1:  # the previous attempt's worker died: its `running` record is no live job
                _mark_dead(run_dir)
            res = run_job(host, job, out, resume=task["resume"] or attempt > 1, progress=False)
            rec = _read(run_dir)
            if rec is not None and rec.get("pid") == os.getpid():  # this process ran it (not skipped)
                rec["executor"] = executor
                rec["executor"]["checkpoint"] = "kept (shared results folder)"
                records.write_record(run_dir, rec)
            return {"status": res.status, "message": res.message, "record": rec, "files": {}, "results": mode}
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scorebench-job-")))
        _link_cache(tmp, out)
        res = run_job(host, job, tmp, resume=False, progress=False)
        run_dir = tmp / "runs" / job.run_id
        rec = _read(run_dir)
        files = {}
        for path in sorted(run_dir.rglob("*")):
            rel = path.relative_to(run_dir).as_posix()
            if path.is_file() and rel not in ("record.json", "checkpoint.pt") and not path.name.startswith("."):
                files[rel] = path.read_bytes()
        if rec is not None:
            rec.get("artifacts", {}).pop("checkpoint", None)
            rec["executor"] = executor
            rec["executor"]["checkpoint"] = "not kept: the worker does not share the results folder"
        return {"status": res.status, "message": res.message, "record": rec, "files": files, "results": mode}


def _mark_dead(run_dir: Path) -> None:
    rec = _read(run_dir)
    if rec is not None and rec.get("status") == "running":
        rec["status"] = "interrupted"
        rec["error"] = {"type": "WorkerDied", "message": "the worker running this job died; Ray retried it"}
        records.write_record(run_dir, rec)


def _link_cache(tmp_out: Path, out: Path) -> None:
    """Metric caches (e.g. reference feature statistics) of a temporary results folder live in one folder per
    node and results folder, so later jobs on the node reuse them."""
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"scorebench-cache-{digest}"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        (tmp_out / ".cache").symlink_to(cache, target_is_directory=True)
    except OSError:  # no symlinks here: a private cache for this job
        pass
