"""Hook declarations of the `scorebench` plugin system. Declarations only: no logic lives here."""

import pluggy

hookspec = pluggy.HookspecMarker("scorebench")
hookimpl = pluggy.HookimplMarker("scorebench")


@hookspec
def register_methods(register):
    """Register method classes: ``register(MethodSubclass)``."""


@hookspec
def register_datasets(register):
    """Register data sets: ``register(DatasetSubclass)``; the class carries ``name`` and ``description``."""


@hookspec
def register_backbones(register):
    """Register backbones: ``register(ModuleSubclass)``; the class carries ``name``, ``description``, ``kinds``."""


@hookspec
def register_metrics(register):
    """Register metrics: ``register(Metric(...))``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``scorebench`` command group."""
