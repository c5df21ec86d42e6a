"""`scorebench new-plugin NAME`: write an installable method-plugin package from the templates in
``harness/templates/plugin/``.

The package (default folder ``./scorebench-NAME``) holds ``pyproject.toml`` with the entry point
``[project.entry-points.scorebench] NAME = "NAME"``, the module ``NAME.py`` with a working minimal method
(single-noise denoising score matching with a stationary Langevin chain), ``tests/test_NAME.py`` running the
conformance kit (`harness.testing.check_method`), and a README. ``pip install --no-build-isolation -e DIR`` makes
the method appear in ``scorebench list methods``; ``--plugins-dir DIR`` loads it without installing.
"""

from __future__ import annotations

import keyword
import sys
from importlib import resources
from pathlib import Path
from string import Template

from harness.errors import UsageError

TEMPLATES = {  # template file -> path in the package (formatted with the template variables)
    "pyproject.toml.tmpl": "pyproject.toml",
    "module.py.tmpl": "{name}.py",
    "test_module.py.tmpl": "tests/test_{name}.py",
    "README.md.tmpl": "README.md",
}


def class_name(name: str) -> str:
    """my_method -> MyMethod."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Method"


def check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name) or not name.islower():
        raise UsageError(f"plugin name {name!r} must be a lower-case Python identifier such as 'my_method' "
                         "(it names the method, the module and the entry point)")
    if name in sys.stdlib_module_names or name in ("harness", "plugins", "scorebench", "torch", "tests"):
        raise UsageError(f"plugin name {name!r} would shadow an existing module; choose another")


def template_variables(name: str) -> dict[str, str]:
    return {"name": name, "class_name": class_name(name), "dist": "scorebench-" + name.replace("_", "-")}


def render(template: str, variables: dict[str, str]) -> str:
    text = resources.files("harness").joinpath("templates", "plugin", template).read_text(encoding="utf-8")
    return Template(text).substitute(variables)


def new_plugin(name: str, directory: Path | None = None) -> tuple[Path, list[Path]]:
    """Write the package for method NAME into `directory` (default ``./scorebench-NAME``); refuses to overwrite
    existing files. Returns the folder and the files written."""
    check_name(name)
    variables = template_variables(name)
    folder = Path(directory) if directory is not None else Path(variables["dist"])
    targets = {t: folder / p.format(**variables) for t, p in TEMPLATES.items()}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing:
        raise UsageError(f"not overwriting existing files: {', '.join(existing)}")
    written = []
    for template, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(template, variables), encoding="utf-8")
        written.append(path)
    return folder, written
