"""The import graph of the runtime: no test doubles, no evaluation code, no dev-only dependency.

Runtime modules are everything under ``clipembed/`` except the public test utilities
(``clipembed.testing``), the evaluation harness (``clipembed.eval`` and its commands,
``clipembed.cli.evaluate`` and ``clipembed.cli.compare``) and the demo. Imports inside functions count too: a lazy import of
a test double is still a dependency of the code that runs in production.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clipembed"
NOT_RUNTIME = ("testing/", "eval/", "demo.py", "demo_data/", "cli/evaluate.py", "cli/compare.py")
FORBIDDEN = (
    "clipembed.testing",
    "clipembed.eval",
    "clipembed.demo",
    "bm25s",
    "Stemmer",
    "pytest",
    "hypothesis",
    "tests",
)


def runtime_modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if not str(p.relative_to(PACKAGE)).startswith(NOT_RUNTIME)
    )


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_runtime_is_most_of_the_package():
    assert len(runtime_modules()) > 40


@pytest.mark.parametrize("path", runtime_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_runtime_module_imports_nothing_forbidden(path):
    bad = sorted(
        name
        for name in imported_names(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    )
    assert bad == [], f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_checker_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from clipembed.testing import servers\n    import bm25s\n")
    assert {"clipembed.testing", "bm25s"} <= imported_names(module)


def test_no_module_imports_itself_back():
    """No import circle, lazy imports included (import-linter's layers see only imports that
    cross a layer; a circle inside a package, such as the evaluation harness and its reference
    BM25 importing each other, passed them). TYPE_CHECKING imports do not count."""
    import grimp

    graph = grimp.build_graph("clipembed", exclude_type_checking_imports=True)
    circles = sorted(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("clipembed")
        and graph.chain_exists(importer=imported, imported=module)
    )
    assert circles == []
