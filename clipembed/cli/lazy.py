"""A typer group whose commands are imported when they run, not when ``--help`` lists them.

Every command module pulls in what its command needs (the runtime, psycopg, the OpenAI SDK,
``clipembed.eval`` for the evaluation commands): importing them all made ``clipembed --help``
take 1.1 s and loaded evaluation code into every worker. A :class:`LazyGroup` knows each of its
commands by name, by the ``module:attribute`` of its typer app and by the one line ``--help``
shows for it; the module is imported only when that command is resolved (to run it, or to show
its own ``--help``). ``tests/unit/test_cli_lazy.py`` checks that each line equals the loaded
command's own summary, so the listing cannot drift from the commands.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import typer
import typer.main
from typer import core


class Unloaded(core.TyperCommand):
    """A command not imported yet: its name and summary, as the group's help lists them."""

    def __init__(self, name: str, target: str, summary: str) -> None:
        super().__init__(name, help=summary)
        self.target = target

    def load(self) -> core.TyperCommand | core.TyperGroup:
        """Import ``module:attribute`` (a ``typer.Typer``) and build its command."""
        module, _, attribute = self.target.partition(":")
        app = getattr(importlib.import_module(module), attribute)
        if not isinstance(app, typer.Typer):
            raise TypeError(f"{self.target} is not a typer.Typer")
        command = typer.main.get_command(app)
        command.name = self.name
        assert isinstance(command, core.TyperCommand | core.TyperGroup)
        return command


class LazyGroup(core.TyperGroup):
    """A group whose commands listed in ``lazy`` are imported on first use.

    Subclass it per group with ``lazy = {name: ("package.module:app", "summary line")}``; the
    summaries are listed after the group's own commands, in this order. Only the help listing
    sees the :class:`Unloaded` placeholders: :meth:`get_command` loads for every other caller.
    """

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (target, summary) in self.lazy.items():
            self.commands.setdefault(name, Unloaded(name, target, summary))
        self._listing = False

    # ctx: typer's vendored click Context (typer.Context is a subclass), not part of typer's API
    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, Unloaded) and not self._listing:
            command = self.commands[cmd_name] = command.load()
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The help lists the placeholders' summaries without importing their modules."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def group(lazy: dict[str, tuple[str, str]]) -> type[LazyGroup]:
    """A :class:`LazyGroup` subclass with these lazy commands (for ``typer.Typer(cls=...)``)."""
    return type("LazyGroup", (LazyGroup,), {"lazy": lazy})
