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


@cli.command()
@click.option("--results", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Results folder holding runs/*/record.json.")
def leaderboard(results):
    """Markdown leaderboard over the run records (one table per data set)."""
    from harness.leaderboard import markdown

    text, problems = markdown(Path(results))
    for p in problems:
        click.echo(f"warning: skipped {p}", err=True)
    click.echo(text)


def main() -> None:
    """Console-script entry point: plugin commands are added before click parses the arguments."""
    try:
        _host(None).register_commands(cli)
    except Exception as exc:  # noqa: BLE001 - a broken command plugin must not break the CLI
        click.echo(f"warning: registering plugin commands failed: {exc}", err=True)
    cli()
