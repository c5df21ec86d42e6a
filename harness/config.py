"""Configuration: typed defaults in dataclasses, TOML files that only override them, and the list of jobs.

Resolution order for one job (later wins): dataclass defaults < the file's top-level tables <
the file's ``[datasets.<name>.*]`` tables for the job's data set < ``--set key=value`` overrides.
The fully resolved configuration of every job is saved in its run record.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, did_you_mean

PRECISIONS = ("fp32", "bf16")
MODELS = ("trained", "oracle")  # suite.model
ORACLE_TRACK = "sampler-oracle"  # record["track"] of runs with suite.model = "oracle"


def _at_least(key: str, value: float, low: float, note: str = "") -> None:
    """Refuse a size, count or budget below `low` (and NaN), naming the key and what is valid."""
    if not value >= low:  # also catches NaN
        kind = "an integer" if isinstance(low, int) else "a number"
        raise ConfigError(f"{key} = {value!r}: expected {kind} >= {low}" + (f" {note}" if note else ""))


def _positive(key: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key} = {value!r}: expected a finite number > 0")


# where `scorebench run` writes and `leaderboard` / `report` read by default: an untracked folder, so that a user's
# runs never rewrite the committed reference results under results/ (regenerated with --out results)
DEFAULT_OUT = "results/local"


@dataclass
class SuiteConfig:
    methods: list[str] = field(default_factory=lambda: ["all"])  # "all": every registered method
    datasets: list[str] = field(default_factory=lambda: ["ring8"])
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out: str = DEFAULT_OUT
    data_root: str = ""  # empty: $SCOREBENCH_DATA, then the user cache
    download: bool = False
    plugins_dir: str = ""
    threads: int = 0  # CPU threads (torch, BLAS); 0: the cores this process may use, at most torch's setting
    # "trained": train each method's model, then sample and evaluate (the default); "oracle": the sampler track, no
    # training: each method's sampler runs on `method.oracle(dataset.target)`, its parametrisation of the exact
    # target (every method needs an oracle, every data set an exact target); records carry track "sampler-oracle"
    model: str = "trained"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(did_you_mean("suite.model", self.model, MODELS))


@dataclass
class TrainConfig:
    steps: int = 1000  # budget in optimiser steps (0: no step limit, then `seconds` must be set)
    seconds: float = 0.0  # budget in wall-clock seconds of training (0: no time limit)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100  # linear learning-rate warm-up
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    ema: float = 0.999  # EMA rate of the weights used for sampling (0: no EMA)
    checkpoint_every: int = 500  # steps between checkpoints (a checkpoint is also written at the end)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the loss; fp32 master weights)
    log_every: int = 50  # steps between read-backs of the loss from the device (the only host-device syncs)
    # execution options: each changes numerics a little (or compiles), so each is off unless asked for, and recorded
    compile: bool = False  # torch.compile of the model (eager if compilation fails; the record says why)
    channels_last: bool = False  # NHWC memory format for image models and batches
    tf32: bool = False  # TensorFloat-32 matmuls and convolutions on CUDA (no effect on CPU)

    def __post_init__(self):
        _at_least("train.steps", self.steps, 0)
        _at_least("train.seconds", self.seconds, 0.0)
        if self.steps == 0 and self.seconds == 0:
            raise ConfigError("train: set train.steps > 0 or train.seconds > 0 (the budget); both are 0")
        _at_least("train.batch_size", self.batch_size, 1)
        _positive("train.lr", self.lr)
        _at_least("train.weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas = {self.betas!r}: expected two numbers in [0, 1), e.g. [0.9, 0.999]")
        _at_least("train.warmup_steps", self.warmup_steps, 0)
        _at_least("train.grad_clip", self.grad_clip, 0.0, "(0: off)")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"train.ema = {self.ema!r}: expected a rate in [0, 1) (0: no EMA; e.g. 0.999)")
        _at_least("train.checkpoint_every", self.checkpoint_every, 0, "(0: only at the end)")
        if self.precision not in PRECISIONS:
            raise ConfigError(did_you_mean("train.precision", self.precision, PRECISIONS))
        _at_least("train.log_every", self.log_every, 1)


@dataclass
class EvalConfig:
    n_samples: int = 1000
    sample_batch: int = 1000  # samples drawn per sampler call
    metrics: list[str] = field(default_factory=lambda: ["auto"])  # "auto": every applicable metric
    divergence_factor: float = 100.0  # samples beyond this many data ranges from the data mark divergence
    cuda_graphs: bool = False  # replay the network evaluations of fixed-shape sampler steps as CUDA graphs (CUDA only)

    def __post_init__(self):
        _at_least("eval.n_samples", self.n_samples, 1)
        _at_least("eval.sample_batch", self.sample_batch, 1)
        _positive("eval.divergence_factor", self.divergence_factor)


# settings added after records were first published: left out of a job's fingerprint (its run id) while they keep
# their default, so a run id names the same job across versions; log_every never changes the maths at all
FINGERPRINT_LATER = {"train": {"log_every": None, "compile": False, "channels_last": False, "tf32": False},
                     "eval": {"cuda_graphs": False}}
FINGERPRINT_NEVER = {"train": {"log_every"}, "eval": set()}


def _fingerprint_section(section: str, values: dict[str, Any]) -> dict[str, Any]:
    later = FINGERPRINT_LATER.get(section, {})
    return {k: v for k, v in values.items()
            if k not in FINGERPRINT_NEVER.get(section, set()) and not (k in later and v == later[k])}


SECTIONS = {"suite": SuiteConfig, "train": TrainConfig, "eval": EvalConfig}
FREE_TABLES = ("methods", "backbones", "metrics")  # keyed by component name, checked against registries
PER_DATASET = ("train", "eval", "methods", "backbones", "metrics")


# dataclass building with clear errors ------------------------------------------------------------------

def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and gently coerce: int -> float, list -> tuple) a TOML value against a field type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)), float(value) if isinstance(
            value, int | float) else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp in (bool, str):
        return isinstance(value, tp), value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            return False, value
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        out = []
        for item in value:
            ok, v = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(v)
        return True, (tuple(out) if (origin or tp) is tuple else out)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _how_to_write(key: str, tp: Any) -> str:
    """How to type a list on the command line, for the 'expected list' error."""
    if (typing.get_origin(tp) or tp) not in (list, tuple):
        return ""
    return (f"; in a file write {key.rsplit('.', 1)[-1]} = [\"a\", \"b\"], on the command line "
            f"--set {key}=[a,b] or --set '{key}=[\"a\", \"b\"]'")


def build_dataclass(cls: type, overrides: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from defaults plus `overrides`, rejecting unknown keys and wrong types."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {overrides!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(did_you_mean(f"key in [{where}]", key, fields))
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(f"{where}.{key} = {value!r}: expected {_type_name(hints[key])}"
                              + _how_to_write(f"{where}.{key}", hints[key]))
        kwargs[key] = coerced
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


# files and overrides -----------------------------------------------------------------------------------

def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def parse_set(item: str) -> tuple[list[str], Any]:
    """``train.steps=10`` -> (["train", "steps"], 10). Values are TOML values; bare words are strings."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=100")
    key, raw = item.split("=", 1)
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"--set {item!r}: empty key segment")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = _bare_list(item, raw) if raw.startswith("[") else raw
    return keys, value


def _toml_or_word(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _bare_list(item: str, raw: str) -> list[Any]:
    """``[fid_cnn,mmd]`` (a list typed without quotes, as a shell leaves it) -> ["fid_cnn", "mmd"]: each item is a
    TOML value where it parses as one, else a bare word. Nested lists and tables must be written in TOML."""
    inner = raw[1:-1] if raw.endswith("]") else None
    if inner is None or any(c in inner for c in "[]{}\"'"):
        key = item.split("=", 1)[0].strip()
        raise ConfigError(f"--set {item!r}: not a TOML value. Write a list as [a, b] with bare words or as TOML in "
                          f"shell quotes, e.g. --set '{key}=[\"fid_cnn\", \"mmd\"]'")
    words = [w.strip() for w in inner.split(",")]
    if words and not words[-1]:  # a trailing comma, as TOML allows
        words.pop()
    if not all(words):
        raise ConfigError(f"--set {item!r}: empty item in the list")
    return [_toml_or_word(w) for w in words]


def apply_set(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {k!r} is a value, not a table")
    node[keys[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# jobs --------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One method × data set × seed under one budget, fully resolved."""

    method: str
    dataset: str
    seed: int
    suite: SuiteConfig
    train: TrainConfig
    eval: EvalConfig
    method_options: dict[str, Any]
    backbone_options: dict[str, dict[str, Any]]
    metric_options: dict[str, dict[str, Any]]

    def fingerprint(self) -> dict[str, Any]:
        """What determines the job's result (the run id hashes it; `out`/`device` do not change the maths)."""
        return {
            "method": self.method, "dataset": self.dataset, "seed": self.seed,
            "train": _fingerprint_section("train", dataclasses.asdict(self.train)),
            "eval": _fingerprint_section("eval", dataclasses.asdict(self.eval)),
            "method_options": self.method_options, "backbone_options": self.backbone_options,
            "metric_options": self.metric_options,
            # the sampler track (exact scores, no training) is another job than training the same method
            **({"model": self.suite.model} if self.suite.model != "trained" else {}),
        }

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.method}-{self.dataset}-s{self.seed}-{digest[:8]}"


@dataclass
class Suite:
    source: str
    suite: SuiteConfig
    jobs: list[Job]
    # every [methods.<name>] and [datasets.<name>] table named in the config, checked against the registries
    method_tables: set[str] = field(default_factory=set)
    dataset_tables: set[str] = field(default_factory=set)


def _check_top(raw: dict[str, Any], where: str) -> None:
    allowed = set(SECTIONS) | set(FREE_TABLES) | {"datasets"}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"{where}: " + did_you_mean("top-level table", key, allowed))
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{key}] must be a table, got {value!r}")


def resolve_suite(raw: dict[str, Any], source: str = "<config>", sets: list[str] = (),
                  cli: dict[str, Any] | None = None, all_methods: list[str] = ()) -> Suite:
    """Turn a parsed config plus overrides into the list of jobs. ``methods = ["all"]`` expands to
    `all_methods`. Names are checked by the runner against the plugin registries."""
    raw = copy.deepcopy(raw)
    parsed_sets = [parse_set(s) for s in sets]
    for keys, value in parsed_sets:
        apply_set(raw, keys, value)
    for key, value in (cli or {}).items():  # --methods, --seeds, --device, ... are suite-level sets
        if value is not None:
            apply_set(raw, ["suite", key], value)
    _check_top(raw, source)
    suite = build_dataclass(SuiteConfig, raw.get("suite", {}), "suite")
    if "all" in suite.methods:
        suite.methods = [m for m in suite.methods if m != "all"] + [m for m in all_methods if m not in suite.methods]
    per_dataset = raw.get("datasets", {})
    jobs = []
    for ds in suite.datasets:
        over = per_dataset.get(ds, {})
        if not isinstance(over, dict):
            raise ConfigError(f"{source}: [datasets.{ds}] must be a table")
        for key in over:
            if key not in PER_DATASET:
                raise ConfigError(f"{source}: " + did_you_mean(f"table in [datasets.{ds}]", key, PER_DATASET))
        merged = deep_merge({k: raw.get(k, {}) for k in PER_DATASET}, over)
        for keys, value in parsed_sets:  # --set wins over per-data-set tables too
            if keys[0] in PER_DATASET:
                apply_set(merged, keys, value)
        train = build_dataclass(TrainConfig, merged["train"], "train")
        ev = build_dataclass(EvalConfig, merged["eval"], "eval")
        for method in suite.methods:
            for seed in suite.seeds:
                jobs.append(Job(method, ds, seed, suite, train, ev,
                                copy.deepcopy(merged["methods"].get(method, {})),
                                copy.deepcopy(merged["backbones"]), copy.deepcopy(merged["metrics"])))
    method_tables = set(raw.get("methods", {}))
    for over in per_dataset.values():
        if isinstance(over, dict):
            method_tables |= set(over.get("methods", {}))
    return Suite(source, suite, jobs, method_tables, set(per_dataset))


def load_suite(path: str | Path, sets: list[str] = (), cli: dict[str, Any] | None = None,
               all_methods: list[str] = ()) -> Suite:
    return resolve_suite(load_toml(path), str(path), sets, cli, all_methods)
