"""The `scorebench` command line. Each command parses options and calls one function."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from harness import __version__
from harness.config import DEFAULT_OUT
from harness.errors import ScorebenchError, UsageError

KINDS = ("methods", "datasets", "backbones", "metrics")


class Group(click.Group):
    """Maps the harness's usage errors to exit code 2 with a one-line message (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except ScorebenchError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


def given_args(ctx: click.Context, skip: tuple[str, ...] = ()) -> list[str]:
    """The arguments and options given to this command (not defaults), as a command line, without `skip`: what
    `run --nproc N` hands on to torchrun's processes."""
    from click.core import ParameterSource

    given = [p for p in ctx.command.params if p.name not in skip
             and ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    args = [str(ctx.params[p.name]) for p in given if isinstance(p, click.Argument)]
    for p in given:
        value = ctx.params[p.name]
        if isinstance(p, click.Argument):
            continue
        if p.is_flag:
            args += [p.opts[0]] if value else p.secondary_opts[:1]
        elif p.multiple:
            for v in value:
                args += [p.opts[0], str(v)]
        else:
            args += [p.opts[0], str(value)]
    return args


def _host(plugins_dir: str | None):
    from harness.plugins import get_plugin_host

    return get_plugin_host(plugins_dir)


plugins_dir_option = click.option(
    "--plugins-dir", type=click.Path(file_okay=False), default=None,
    help="Also load every .py file in this folder as a plugin.")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scorebench")
def cli():
    """scorebench: train score-based generative methods under equal budgets and backbones, and measure
    sample quality, MCMC mixing and throughput into run records and leaderboards.

    Start with `scorebench run` (the packaged quick config: CPU, offline, minutes; records in results/local),
    then `scorebench leaderboard`.
    """


@cli.command("list")
@click.argument("kind", type=click.Choice(KINDS), required=False)
@plugins_dir_option
def list_cmd(kind, plugins_dir):
    """List registered components (all kinds, or one): name, description, providing plugin."""
    host = _host(plugins_dir)
    for k in [kind] if kind else KINDS:
        reg = host.registries[k]
        click.echo(f"{k}:")
        width = max((len(e.name) for e in reg), default=0)
        for e in reg:
            click.echo(f"  {e.name:<{width}}  {e.description}  [{e.provider}]")
        if not len(reg):
            click.echo("  (none)")
    for info in host.failures():
        click.echo(f"warning: plugin {info.name!r} failed to load: {info.error}", err=True)


@cli.command()
@plugins_dir_option
def plugins(plugins_dir):
    """JSON list of loaded plugins: name, version, hooks, and the error of any that failed to load."""
    host = _host(plugins_dir)
    host.registries  # noqa: B018 - registering runs the hooks: duplicate names and wrong types show up as errors
    click.echo(json.dumps([i.as_dict() for i in host.infos.values()], indent=2))


class DeviceName(click.ParamType):
    """auto, cpu, cuda or cuda:N (N a device index); whether the device exists is checked when the run starts."""

    name = "auto|cpu|cuda|cuda:N"
    PATTERN = re.compile(r"(auto|cpu|cuda)|cuda:(\d+)")

    def convert(self, value, param, ctx):
        if isinstance(value, str) and self.PATTERN.fullmatch(value.strip()):
            return value.strip()
        self.fail(f"{value!r}: expected auto, cpu, cuda or cuda:N with N a device index (e.g. cuda:0)", param, ctx)


@cli.command()
@click.argument("config", required=False, metavar="[CONFIG]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.steps=200 --set methods.dsm.sigma=0.2 (repeatable).")
@click.option("--methods", help="Comma-separated methods to run (default: the config's; 'all' for every one).")
@click.option("--datasets", help="Comma-separated data sets to run.")
@click.option("--seeds", help="Comma-separated integer seeds, e.g. 0,1,2.")
@click.option("--device", type=DeviceName(), default=None, metavar="DEVICE",
              help="Where to train: auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="CPU threads for torch and numpy (default: suite.threads; 0: the cores this process may use).")
@click.option("--out", type=click.Path(file_okay=False),
              help=f"Results folder (default: the config's suite.out, else {DEFAULT_OUT}, untracked).")
@click.option("--resume", is_flag=True, help="Continue interrupted jobs from their checkpoints; skip finished ones.")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Where data sets live (default: $SCOREBENCH_DATA, then the user cache).")
@click.option("--download", is_flag=True, help="Download missing data sets (needs internet).")
@plugins_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-job lines.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where jobs run: local (one after another in this process) or ray (each job a Ray task; needs "
                   'pip install -e ".[ray]").')
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to join (started with `ray start --head`); default: a local Ray instance.")
@click.option("--gpus-per-job", type=click.FloatRange(min=0), default=None,
              help="GPUs each Ray task asks for (default: 1 where the cluster has GPUs and --device is not cpu).")
@click.option("--cpus-per-job", type=click.FloatRange(min=0), default=None,
              help="CPUs each Ray task asks for (default: 1).")
@click.option("--max-retries", type=click.IntRange(min=0), default=None,
              help="Times Ray re-runs a job whose worker process died (default: 1); then it is recorded failed.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train each job data-parallel over N processes (one per GPU with --device cuda; gloo on CPU): "
                   "re-runs this command under `torchrun --standalone --nproc-per-node N -m harness run ...`.")
def run(config, sets, methods, datasets, seeds, device, threads, out, resume, data_root, download, plugins_dir,
        quiet, executor, address, gpus_per_job, cpus_per_job, max_retries, nproc):
    """Train and evaluate every method × data set × seed of CONFIG: a TOML file, or the name of a packaged
    config (`quick`, the default: works from any folder).

    Writes <out>/runs/<run_id>/record.json (+ samples.png, samples.npz, checkpoint.pt) per job, <out> being
    results/local unless --out or suite.out says otherwise, and ends with a table of each job's status and time.
    Exit code 0 on success, 1 if any job failed (the others still ran), 2 on a usage or config error,
    130 on Ctrl-C (it prints the --resume command that continues).
    """
    if nproc is not None and nproc > 1:
        if executor != "local":
            raise UsageError("--nproc spreads one job over several processes (torchrun); it does not combine with "
                             f"--executor {executor}, which spreads whole jobs")
        from harness.distributed import launch

        sys.exit(launch(nproc, given_args(click.get_current_context(), skip=("nproc",))))
    from harness.runner import run_config

    code = run_config(config, sets=list(sets), methods=methods, datasets=datasets, seeds=seeds, device=device,
                      out=out, resume=resume, data_root=data_root, download=download, plugins_dir=plugins_dir,
                      quiet=quiet, threads=threads, log=click.echo, err_log=lambda m: click.echo(m, err=True),
                      executor=executor, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                      max_retries=max_retries)
    sys.exit(code)


@cli.command()
@click.option("--data-root", type=click.Path(file_okay=False), help="Data root to check.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--datasets", help="Comma-separated data sets to check (default: every registered one), e.g. "
              "ring8,digits for the quick config.")
@plugins_dir_option
def doctor(data_root, as_json, datasets, plugins_dir):
    """Python/torch/CUDA versions, device, CPU load, data root and data sets found (checksums verified),
    FID weights status, and plugins (with load errors).

    Exit code 0 when nothing is wrong; 1 when a problem was found: a checked data set that is missing, fails its
    checksum or cannot be read, or a plugin that failed to load. Missing data sets count, so check only those
    you need with --datasets. A machine whose 1-minute load average already exceeds the cores this process may
    use is a warning (runs will be slow, timings unreliable), as is missing FID weights: neither changes the
    exit code. 2 on a usage error (an unknown --datasets name).
    """
    from harness.doctor import diagnose, exit_code, format_report

    names = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
    rep = diagnose(_host(plugins_dir), data_root, datasets=names)
    click.echo(json.dumps(rep, indent=2, default=str) if as_json else format_report(rep))
    sys.exit(exit_code(rep))


results_option = click.option(
    "--results", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
    help="Results folder holding runs/*/record.json (where `run` writes by default; the committed reference "
         "results are in 'results').")


@cli.command()
@results_option
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "html"]), default=None,
              help="Output format (printed). Only the default view (no --format, --out, --metric, --dataset) "
                   "writes <results>/leaderboard.md and leaderboard.csv.")
@click.option("--metric", help="Rank by this metric (default: each data set's primary quality metric; a mixing "
                               "metric ranks the mixing tables). Printed only, or to --out.")
@click.option("--dataset", help="Only this data set. Printed only, or to --out.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write one file here instead (format from --format or the suffix); '-' writes nothing.")
def leaderboard(results, fmt, metric, dataset, out):
    """Leaderboards over the run records: per data set and protocol four tables (quality, sampler cost, mixing,
    training); each value is the mean over distinct seeds ± a 95% interval combining the evaluation's standard
    error and the spread over seeds, and methods whose intervals overlap share a rank ("2–4").

    Records measured under different protocols (feature extractor, weights, n, split, budget) are never ranked
    together. Unreadable records and copies of one run are reported and skipped; stale running records show as
    interrupted. An unknown --dataset/--metric or a folder without records exits 2 and writes nothing.
    """
    from harness.leaderboard import write_leaderboard

    text, written, problems = write_leaderboard(Path(results), fmt=fmt, out=out, metric=metric, dataset=dataset)
    for p in problems:
        click.echo(f"warning: skipped {p}", err=True)
    click.echo(text, nl=not text.endswith("\n"))
    for path in written:
        click.echo(f"wrote {path}", err=True)


@cli.command()
@results_option
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: <results>/report).")
@click.option("--metric", help="Rank the leaderboards by this metric.")
@click.option("--chain-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="0 (default): mixing plots from each run's recorded chain.npz, no model is run. N > 0: re-run "
                   "the chains of runs whose record has a stationary chain from their checkpoints for N steps.")
@plugins_dir_option
def report(results, out, metric, chain_steps, plugins_dir):
    """Static HTML report (index.html with images beside it; no server, no internet): leaderboards, metric
    validity (validity.json), sample grids, quality against training time, NFE and FLOPs with the Pareto front,
    autocorrelation, traces and mode hopping of stationary chains, throughput, and the environment the numbers
    came from. It regenerates from the run folders alone (records, samples, chain.npz)."""
    from harness.report import build_report

    index, problems = build_report(Path(results), Path(out) if out else None, metric=metric,
                                   chain_steps=chain_steps, plugins_dir=plugins_dir,
                                   log=lambda m: click.echo(m, err=True))
    for p in problems:
        click.echo(f"warning: skipped {p}", err=True)
    click.echo(f"wrote {index}")


@cli.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Folder to write (default: ./scorebench-NAME).")
def new_plugin(name, directory):
    """Write an installable method plugin package NAME: pyproject.toml with the `scorebench` entry point, a
    working minimal method, a conformance test and a README. `pip install -e` it to make the method appear."""
    from harness.scaffold import new_plugin as scaffold

    folder, written = scaffold(name, Path(directory) if directory else None)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: scorebench check-plugin {name} --plugins-dir {folder}   "
               f"(or install it: pip install --no-build-isolation -e {folder})")


@cli.command("check-plugin")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a method config value for the checks, e.g. --set steps=50 (repeatable).")
@click.option("--kinds", default="vector,image", show_default=True,
              help="Comma-separated kit data kinds to check on.")
@click.option("--train-steps", type=click.IntRange(min=0), default=300, show_default=True,
              help="Brief training before the trained checks (stationarity, sample range).")
@plugins_dir_option
def check_plugin(name, sets, kinds, train_steps, plugins_dir):
    """Run the conformance kit (harness.testing.check_method) on method NAME, or on every method of plugin NAME:
    per-example loss, finite gradients, sampler shape/range/NFE, determinism, declared capabilities.
    Exit code 0 when every check passed, 1 otherwise."""
    from harness.config import apply_set, parse_set
    from harness.testing import check_plugin as run_checks

    overrides: dict = {}
    for item in sets:
        apply_set(overrides, *parse_set(item))
    code = run_checks(name, plugins_dir=plugins_dir, overrides=overrides or None,
                      kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), train_steps=train_steps,
                      log=click.echo)
    sys.exit(code)


@cli.command()
@click.option("--datasets", default="digits", show_default=True, help="Comma-separated image data sets.")
@click.option("--extractors", default="fid_cnn", show_default=True,
              help="Comma-separated feature spaces: fid_cnn, fid_inception.")
@click.option("--n", type=click.IntRange(min=10), default=300, show_default=True,
              help="Images per set (capped by the test split).")
@click.option("--out", type=click.Path(dir_okay=False), default="results/validity.json", show_default=True,
              help="Where to write the JSON results ('-': nowhere); entries of other data set × extractor pairs "
                   "already in the file are kept.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Where data sets live.")
@plugins_dir_option
def validity(datasets, extractors, n, out, data_root, plugins_dir):
    """Metric validity suite (Heusel et al. 2017, Fig. 1): FID of real test images under increasing Gaussian noise,
    salt-and-pepper, blur, saturation and dropped classes must rise from the real-vs-real floor with the strength.
    Exit code 0 when every extractor passes, 1 if any fails, 2 on an unknown data set or extractor."""
    from harness.errors import did_you_mean
    from harness.metrics import validity as V
    from harness.records import write_json

    names = [s.strip() for s in extractors.split(",") if s.strip()]
    for name in names:
        if name not in V.EXTRACTORS:
            raise UsageError(did_you_mean("extractor", name, V.EXTRACTORS))
    reg = _host(plugins_dir).registries["datasets"]
    classes = [reg.get(s.strip()) for s in datasets.split(",") if s.strip()]  # UsageError with did-you-mean
    sets = [cls(root=data_root) for cls in classes]
    for ds in sets:
        if ds.kind != "image":
            raise UsageError(f"data set {ds.name!r} is not an image data set; the validity suite needs images")
    result = V.run_suite(sets, names, n=n, log=lambda m: click.echo(m, err=True))
    click.echo(V.format_table(result))
    if out != "-":
        write_json(Path(out), V.merge_results(Path(out), result))
        click.echo(f"wrote {out}", err=True)
    sys.exit(0 if all(r["passed"] for r in result["results"]) else 1)


def main() -> None:
    """Console-script entry point: plugin commands are added before click parses the arguments."""
    try:
        _host(None).register_commands(cli)
    except Exception as exc:  # noqa: BLE001 - a broken command plugin must not break the CLI
        click.echo(f"warning: registering plugin commands failed: {exc}", err=True)
    cli()
