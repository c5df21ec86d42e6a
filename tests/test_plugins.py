"""Plugin loading: built-ins, fake plugins in a fixture, broken and misspelled plugins, entry points."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from harness.errors import UsageError
from harness.hookspecs import hookimpl
from harness.plugins import PluginHost, get_plugin_host


def test_builtins_register_and_fake_plugin_is_removed_after(host):
    methods = host.registries["methods"]
    assert "tiny" in methods and "dsm" in methods
    assert methods.entry("tiny").provider == "fake"
    assert "mlp" in host.registries["backbones"] and "unet" in host.registries["backbones"]
    host.remove_plugin("fake")
    assert "tiny" not in host.registries["methods"]


def test_unknown_name_suggests_and_lists(host):
    with pytest.raises(UsageError) as e:
        host.registries["methods"].get("tinny")
    msg = str(e.value)
    assert "unknown method 'tinny'" in msg and "did you mean 'tiny'" in msg and "available:" in msg and "dsm" in msg


def _write(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_plugins_dir_broken_plugin_does_not_take_others_down(tmp_path):
    _write(tmp_path, "broken", "import does_not_exist_anywhere\n")
    _write(tmp_path, "good", """
        from harness.hookspecs import hookimpl
        from harness.method import Method

        class Good(Method):
            name = "good_method"
            description = "a method from a plugins folder"
            def build_model(self, backbone): ...
            def loss(self, model, batch, g): ...
            def sample(self, model, n, g): ...

        @hookimpl
        def register_methods(register):
            register(Good)
    """)
    h = PluginHost(plugins_dir=tmp_path, entry_points=False)
    assert h.infos["broken"].error.startswith("ModuleNotFoundError")
    assert "does_not_exist_anywhere" in h.infos["broken"].error
    assert h.infos["good"].error is None and h.infos["good"].hooks == ["register_methods"]
    assert h.registries["methods"].entry("good_method").provider == "good"
    with pytest.raises(UsageError, match="failed to load.*broken"):
        h.registries["methods"].get("broken_method")


def test_misspelled_hook_is_rejected_loudly(tmp_path):
    _write(tmp_path, "typo", """
        from harness.hookspecs import hookimpl

        @hookimpl
        def register_method(register):
            pass
    """)
    h = PluginHost(plugins_dir=tmp_path, entry_points=False)
    err = h.infos["typo"].error
    assert "PluginValidationError" in err and "register_method" in err and "register_methods" in err
    assert not h.pm.has_plugin("typo")
    # the known hooks come from the hookspecs only: the misspelling is not offered as one of them
    known = err.split("available: ")[1].split(", ")
    assert known == ["register_backbones", "register_commands", "register_datasets", "register_methods",
                     "register_metrics"]
    assert "did you mean 'register_methods'" in err
    assert "register_method" not in h.hook_names()


def test_plugin_calling_sys_exit_is_a_load_error(tmp_path):
    """Before: SystemExit escaped the loader and ended the CLI silently."""
    _write(tmp_path, "quitter", "import sys\n\nsys.exit(3)\n")
    _write(tmp_path, "hookquitter", """
        import sys
        from harness.hookspecs import hookimpl

        @hookimpl
        def register_methods(register):
            sys.exit("bye")
    """)
    h = PluginHost(plugins_dir=tmp_path, entry_points=False)
    assert h.infos["quitter"].error == "SystemExit: the plugin called sys.exit(3) while loading (at quitter.py:3)"
    assert "dsm" in h.registries["methods"]  # the others still load
    assert "sys.exit('bye')" in h.infos["hookquitter"].error and "register_methods" in h.infos["hookquitter"].error


def test_plugin_exit_does_not_end_the_cli(tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    _write(tmp_path, "quitter", "import sys\nsys.exit(0)\n")
    out = CliRunner().invoke(cli, ["list", "methods", "--plugins-dir", str(tmp_path)])
    assert out.exit_code == 0 and "dsm" in out.output and "quitter" in out.output and "SystemExit" in out.output


def test_syntax_error_is_located_in_the_plugin(tmp_path):
    """Before: the location was the harness's loader (plugins.py), not the plugin's own file and line."""
    _write(tmp_path, "broken_syntax", "x = 1\n\ndef f(:\n    pass\n")
    _write(tmp_path, "bad_indent", "def f():\nreturn 1\n")
    h = PluginHost(plugins_dir=tmp_path, entry_points=False)
    assert h.infos["broken_syntax"].error.startswith(f"{tmp_path / 'broken_syntax.py'}:3: SyntaxError: ")
    assert h.infos["bad_indent"].error.startswith(f"{tmp_path / 'bad_indent.py'}:2: IndentationError: ")
    assert "plugins.py" not in h.infos["broken_syntax"].error


def test_duplicate_names_name_both_providers():
    from harness.method import Method

    class Dup(Method):
        name = "dsm"

        def build_model(self, b): ...
        def loss(self, m, b, g): ...
        def sample(self, m, n, g): ...

    mod = types.SimpleNamespace(register_methods=hookimpl(lambda register: register(Dup)))
    h = PluginHost(entry_points=False)
    info = h.add_plugin(mod, "dupe")
    _ = h.registries
    assert "registered twice" in info.error and "plugins.dsm" in info.error and "dupe" in info.error
    assert h.registries["methods"].entry("dsm").provider == "plugins.dsm"


def test_rejected_registrations_show_in_plugins_and_doctor(tmp_path):
    """The error of a plugin that imports fine but registers a duplicate name reaches `plugins` and `doctor`."""
    import json

    from click.testing import CliRunner

    from harness.cli import cli

    folder = tmp_path / "plugs"
    folder.mkdir()
    (folder / "dupe.py").write_text(textwrap.dedent("""
        from harness.hookspecs import hookimpl
        from plugins.dsm import DSM

        class Again(DSM):
            pass

        @hookimpl
        def register_methods(register):
            register(Again)
    """))
    for args in (["plugins"], ["doctor", "--json", "--data-root", str(tmp_path), "--datasets", "ring8"]):
        out = CliRunner().invoke(cli, [*args, "--plugins-dir", str(folder)])
        assert out.exit_code == (0 if args == ["plugins"] else 1), out.output  # doctor: a failed plugin is a problem
        rep = json.loads(out.output)
        infos = {i["name"]: i for i in (rep if args == ["plugins"] else rep["plugins"])}
        assert "registered twice" in infos["dupe"]["error"] and "plugins.dsm" in infos["dupe"]["error"], args


def test_wrong_type_is_rejected():
    mod = types.SimpleNamespace(register_methods=hookimpl(lambda register: register(object)))
    h = PluginHost(entry_points=False)
    info = h.add_plugin(mod, "wrongtype")
    _ = h.registries
    assert "expected a subclass of harness.method.Method" in info.error


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A fake installed distribution with a `scorebench` entry point, found through importlib.metadata."""
    site = tmp_path / "site"
    pkg = site / "sb_fake_ep"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from harness.hookspecs import hookimpl
        from harness.method import Method

        class EpMethod(Method):
            name = "ep_method"
            description = "from an entry point"
            def build_model(self, b): ...
            def loss(self, m, b, g): ...
            def sample(self, m, n, g): ...

        @hookimpl
        def register_methods(register):
            register(EpMethod)
    """))
    dist = site / "sb_fake_ep-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sb-fake-ep\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[scorebench]\nfake_ep = sb_fake_ep\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("sb_fake_ep", None)


def test_entry_point_discovery_and_env_filter(installed_plugin, monkeypatch):
    monkeypatch.setenv("SCOREBENCH_LOAD_PLUGINS", "fake_ep")
    h = PluginHost()
    info = h.infos["fake_ep"]
    assert (info.source, info.distribution, info.version, info.error) == ("entry point", "sb-fake-ep", "1.2.3", None)
    assert h.registries["methods"].entry("ep_method").provider == "fake_ep"

    monkeypatch.setenv("SCOREBENCH_LOAD_PLUGINS", "")
    assert "fake_ep" not in PluginHost().infos  # tests never load installed plugins by accident


def test_every_hook_is_documented_and_called():
    """Each hookspec has a one-line docstring, and the host calls every registration hook."""
    from harness import hookspecs

    h = get_plugin_host()
    for name in h.hook_names():
        doc = getattr(hookspecs, name).__doc__
        assert doc and len(doc.strip().splitlines()) == 1, name
    assert set(h.registries) == {n.removeprefix("register_") for n in h.hook_names() if n != "register_commands"}


def test_register_commands_hook_adds_a_command():
    import click
    from click.testing import CliRunner

    group = click.Group()

    @hookimpl
    def register_commands(cli):
        @cli.command()
        def hello():
            click.echo("hello from a plugin")

    h = PluginHost(entry_points=False)
    h.add_plugin(types.SimpleNamespace(register_commands=register_commands), "cmd")
    h.register_commands(group)
    assert CliRunner().invoke(group, ["hello"]).output.strip() == "hello from a plugin"
