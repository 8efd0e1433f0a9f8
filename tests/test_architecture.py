"""The package's shape: imports run one way (function-level imports included), and only the
command-line entry points import click."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clip_ebc"
ENTRY_POINTS = {"clip_ebc.cli", "clip_ebc.cli.__main__", "clip_ebc.cli.inputs", "clip_ebc.cli.run", "clip_ebc.cli.ray", "clip_ebc.publish", "clip_ebc.convert.__main__", "clip_ebc.train.__main__",
                "clip_ebc.train.prepare", "clip_ebc.train.evaluate"}
"""Modules that are command lines (the only ones allowed to import click)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str) -> dict[str, int]:
    """Every module of the package that ``name`` imports anywhere in its file -> the first line."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in MODULES:  # `from .x import y`: y may be a name, not a module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("clip_ebc"):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("clip_ebc"):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                add(full if full in MODULES else module, node.lineno)
    return found


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt == "clip_ebc":  # the lazy public API: re-exports, imported by name on first use
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_run_one_way():
    graph = {name: imported(name) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_cycle_check_sees_function_level_imports(tmp_path):
    source = "def f():\n    from .model import CLIPEBC\n"
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "model" for n in ast.walk(tree))
    assert find_cycle({"a": {"b": 1}, "b": {"a": 3}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_the_layers_below_the_model_never_import_it():
    below = {"clip_ebc.constants", "clip_ebc.errors", "clip_ebc.fetch", "clip_ebc.archive", "clip_ebc.registry"}
    for name in below:
        assert not {"clip_ebc.model", "clip_ebc.loading", "clip_ebc.convert", "clip_ebc.counter"} & set(imported(name)), name
    assert set(imported("clip_ebc.constants")) == set()
    assert set(imported("clip_ebc.errors")) == set()


def test_only_command_lines_import_click():
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "click" or n.startswith("click.") for n in names) and name not in ENTRY_POINTS:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_light_imports():
    """``import clip_ebc`` and the registry listing load neither torch nor open_clip."""
    code = ("import sys, clip_ebc, clip_ebc.registry, clip_ebc.fetch, clip_ebc.archive, clip_ebc.errors; "
            "print(sorted(m for m in ('torch', 'open_clip', 'matplotlib', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
