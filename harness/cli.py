"""The `scorebench` command line. Each command parses options and calls one function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness import __version__
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

    Start with `scorebench run configs/quick.toml` (CPU, offline, minutes), then `scorebench leaderboard`.
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


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False), default="configs/quick.toml", required=False)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.steps=200 --set methods.dsm.sigma=0.2 (repeatable).")
@click.option("--methods", help="Comma-separated methods to run (default: the config's; 'all' for every one).")
@click.option("--datasets", help="Comma-separated data sets to run.")
@click.option("--seeds", help="Comma-separated integer seeds, e.g. 0,1,2.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train.")
@click.option("--out", type=click.Path(file_okay=False), help="Results folder (default: the config's, 'results').")
@click.option("--resume", is_flag=True, help="Continue interrupted jobs from their checkpoints; skip finished ones.")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Where data sets live (default: $SCOREBENCH_DATA, then the user cache).")
@click.option("--download", is_flag=True, help="Download missing data sets (needs internet).")
@plugins_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-job lines.")
def run(config, sets, methods, datasets, seeds, device, out, resume, data_root, download, plugins_dir, quiet):
    """Train and evaluate every method × data set × seed of CONFIG (default configs/quick.toml).

    Writes results/runs/<run_id>/record.json (+ samples.png, samples.npz, checkpoint.pt) per job.
    Exit code 0 on success, 1 if any job failed (the others still ran), 2 on a usage or config error.
    """
    from harness.runner import run_config

    code = run_config(config, sets=list(sets), methods=methods, datasets=datasets, seeds=seeds, device=device,
                      out=out, resume=resume, data_root=data_root, download=download, plugins_dir=plugins_dir,
                      quiet=quiet, log=click.echo)
    sys.exit(code)


@cli.command()
@click.option("--data-root", type=click.Path(file_okay=False), help="Data root to check.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@plugins_dir_option
def doctor(data_root, as_json, plugins_dir):
    """Python/torch/CUDA versions, device, data root and data sets found (checksums verified),
    FID weights status, and plugins (with load errors)."""
    from harness.doctor import diagnose, format_report

    rep = diagnose(_host(plugins_dir), data_root)
    click.echo(json.dumps(rep, indent=2, default=str) if as_json else format_report(rep))


results_option = click.option(
    "--results", type=click.Path(file_okay=False), default="results", show_default=True,
    help="Results folder holding runs/*/record.json.")


@cli.command()
@results_option
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "html"]), default=None,
              help="Output format. Without --format and --out: print Markdown and write "
                   "<results>/leaderboard.md and leaderboard.csv.")
@click.option("--metric", help="Rank by this metric (default: each data set's primary quality metric).")
@click.option("--dataset", help="Only this data set.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write one file here instead (format from --format or the suffix); '-' writes nothing.")
def leaderboard(results, fmt, metric, dataset, out):
    """Leaderboards over the run records: one table per data set and protocol, mean ± 95% CI over seeds,
    ranked by the metric's direction; failed and diverged runs and the real-vs-real floor are rows.

    Records measured under different protocols (feature extractor, weights, n, split, budget) are never ranked
    together: they go into separate tables with the difference named. Unreadable records are reported and skipped.
    The same records always give byte-identical files.
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
@click.option("--chain-steps", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Steps of the stationary chains re-run from checkpoints for the mixing plots (0 skips them).")
@plugins_dir_option
def report(results, out, metric, chain_steps, plugins_dir):
    """Static HTML report (index.html with images beside it; no server, no internet): leaderboards, sample grids,
    quality against training time and NFE with the Pareto front, autocorrelation, traces and mode hopping of
    stationary chains, throughput, and the environment the numbers came from."""
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


def main() -> None:
    """Console-script entry point: plugin commands are added before click parses the arguments."""
    try:
        _host(None).register_commands(cli)
    except Exception as exc:  # noqa: BLE001 - a broken command plugin must not break the CLI
        click.echo(f"warning: registering plugin commands failed: {exc}", err=True)
    cli()
