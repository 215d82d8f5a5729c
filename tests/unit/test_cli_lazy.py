"""The command line imports a command's module only when that command runs or shows its help.

``clipembed --help`` lists every command from :data:`clipembed.cli.COMMANDS` without importing
one; each listed line must be the loaded command's own summary, so the listing never drifts.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from clipembed import cli
from clipembed.cli import lazy, model


def summary(command) -> str:
    """The line a group's help shows for a command (typer: the first paragraph of its help)."""
    return inspect.cleandoc(command.help or "").split("\n\n")[0]


@pytest.mark.parametrize(
    ("group", "name"),
    [(cli.COMMANDS, name) for name in cli.COMMANDS]
    + [(model.app.info.cls.lazy, name) for name in model.app.info.cls.lazy],  # type: ignore[union-attr]
)
def test_each_listed_summary_is_the_loaded_commands_own(group, name):
    target, line = group[name]
    loaded = lazy.Unloaded(name, target, line).load()
    assert loaded.name == name
    assert summary(loaded) == line


def test_commands_resolve_to_the_loaded_command_and_help_lists_them_in_order():
    root = typer.main.get_command(cli.app)
    assert isinstance(root, lazy.LazyGroup)
    assert root.list_commands(None) == list(cli.COMMANDS)  # type: ignore[arg-type]
    assert not isinstance(root.get_command(None, "stats"), lazy.Unloaded)
    out = CliRunner().invoke(cli.app, ["model", "--help"])
    assert out.exit_code == 0
    for name in ("list", "add", "sync", "compare"):
        assert f" {name} " in out.stdout


# What each command may load beyond typer, rich and the standard library (checked in a fresh
# interpreter: this one has imported everything already).
FRESH = """
import sys
from clipembed.cli import app
try:
    app({args!r})
except SystemExit:
    pass
print(" ".join(sorted(m for m in sys.modules if m.startswith("clipembed"))))
"""


@pytest.fixture
def loaded_after():
    """``loaded_after(*args)``: the clipembed modules a fresh ``clipembed ARGS`` has imported."""

    def run(*args: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", FRESH.format(args=list(args))],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return set(out.stdout.split("\n")[-2].split())

    return run


def test_help_imports_no_command_module(loaded_after):
    assert loaded_after("--help") == {"clipembed", "clipembed.cli", "clipembed.cli.lazy"}


@pytest.mark.parametrize(
    "args", [("model", "list", "--help"), ("backfill", "--help"), ("search", "--help")]
)
def test_only_the_evaluation_commands_load_the_evaluation_code(loaded_after, args):
    loaded = loaded_after(*args)
    assert f"clipembed.cli.{args[0]}" in loaded
    assert not {m for m in loaded if m.startswith("clipembed.eval")}
    assert "clipembed.cli.compare" not in loaded


def test_the_evaluation_commands_do_load_it(loaded_after):
    assert "clipembed.eval" in loaded_after("eval", "beir", "--help")
    assert "clipembed.cli.compare" in loaded_after("model", "compare", "--help")
