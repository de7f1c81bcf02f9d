"""The layout ARCHITECTURE.md promises: one package per layer, imports that only go down, no
circle, a CLI whose groups share nothing but ``cli/common``, and plugins that load nothing but
the standard library inside ``import mlflow``.

Every import counts, at the top of a module or inside a function: a lazy import is a dependency
all the same."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hokusai_mlflow_plugin"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = [
    "core", "config", "monitoring", "client", "plugins", "db", "auth", "mlflow_io", "registration", "events", "operations", "submit", "stack", "cli", "webhook_app",
]


def module_files() -> dict[str, Path]:
    files = {}
    for top in (PACKAGE, "webhook_app"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue  # Alembic's scripts, loaded by Alembic
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imports_of(name: str, path: Path) -> set[str]:
    """The absolute names ``name`` imports (modules, or names inside them), anywhere in the file."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports."""
    files = module_files()
    edges = {}
    for name, path in files.items():
        edges[name] = {target for target in imports_of(name, path) if target in files and target != name}
    return edges


def layer(module: str) -> str:
    if module == PACKAGE or module == f"{PACKAGE}.__main__":
        return "cli" if module.endswith("__main__") else "core"  # __init__ holds the version only
    parts = module.split(".")
    return parts[0] if parts[0] == "webhook_app" else parts[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(
        f"{source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, targets in edges.items()
        for target in targets
        if rank[layer(target)] > rank[layer(source)]
    )


# -- the checks fail when they should ---------------------------------------------------------------


def test_the_cycle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_layer_check_finds_an_import_that_climbs():
    edges = {f"{PACKAGE}.core.gate": {f"{PACKAGE}.cli.common"}, f"{PACKAGE}.cli.common": {f"{PACKAGE}.core.gate"}}
    assert upward(edges) == [f"{PACKAGE}.core.gate (core) imports {PACKAGE}.cli.common (cli)"]


# -- the project ------------------------------------------------------------------------------------


def test_every_module_is_in_a_layer():
    assert {layer(m) for m in graph()} <= set(LAYERS)


def test_no_module_imports_in_a_circle():
    assert cycles(graph()) == []


def test_imports_only_go_down_the_layers():
    assert upward(graph()) == []


def test_nothing_low_imports_the_adapters():
    low = ("core", "plugins", "db", "mlflow_io", "registration")
    offenders = [
        (source, target) for source, targets in graph().items() if layer(source) in low
        for target in targets if layer(target) in ("cli", "webhook_app", "stack")
    ]
    assert offenders == []


def test_command_groups_import_only_cli_common():
    edges = graph()
    for module, targets in edges.items():
        if layer(module) == "cli" and module.startswith(f"{PACKAGE}.cli."):
            cli_imports = {t for t in targets if t == f"{PACKAGE}.cli" or t.startswith(f"{PACKAGE}.cli.")}
            assert cli_imports <= {f"{PACKAGE}.cli.common"}, module
    assert not [m for m, targets in edges.items() if f"{PACKAGE}.cli" in targets and m != f"{PACKAGE}.__main__"]


@pytest.mark.parametrize("module", [
    f"{PACKAGE}", f"{PACKAGE}.core.errors", f"{PACKAGE}.core.gate", f"{PACKAGE}.core.metrics", f"{PACKAGE}.core.tags",
    f"{PACKAGE}.plugins.run_context", f"{PACKAGE}.plugins.registry_store",
])
def test_core_and_the_entry_points_import_only_the_standard_library(module):
    """They load inside every ``import mlflow`` on the machine (the registry store's entry point
    imports its store only when a ``hokusai+`` URI is used, inside the builder)."""
    path = module_files()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = set()
    for node in tree.body:  # the module's own imports, run at import time
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            top_level.add(node.module.split(".")[0])
    assert top_level - set(sys.stdlib_module_names) - {PACKAGE} == set()
    ours = {t for t in imports_of(module, path) if t.startswith(PACKAGE + ".") and t in module_files()}
    assert {layer(t) for t in ours} <= {"core", "plugins"}


def private_uses(path: Path, ours: set[str]) -> list[str]:
    """``from our_module import _name`` and ``our_module._name`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ours:
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in ours:
                    aliases[alias.asname or alias.name] = full
                elif node.module in ours and alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{path.name}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_or_test_uses_another_modules_private_names():
    ours = set(module_files())
    files = [*module_files().values(), *sorted((ROOT / "tests").rglob("*.py"))]
    assert [use for path in files for use in private_uses(path, ours)] == []


def test_the_private_check_finds_a_private_name(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(f"from {PACKAGE}.events.sinks import _x\nfrom {PACKAGE}.events import sinks\nsinks._y\nsinks.__name__\n")
    assert private_uses(path, set(module_files())) == [
        f"m.py: from {PACKAGE}.events.sinks import _x", f"m.py: {PACKAGE}.events.sinks._y",
    ]
