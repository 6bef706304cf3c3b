"""The import layers docs/architecture.md describes: no cycles among
stemdeck's modules, and each folder imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# what each top-level part may import (besides itself); the order of docs/architecture.md
ALLOWED = {
    "engine": {"errors"},           # the one error hierarchy sits under everything
    "errors": set(),
    "threads": set(),
    "config": {"engine", "errors", "platform_info"},
    "platform_info": {"errors"},
    "audio": {"engine", "errors", "config", "platform_info", "threads"},
    "media": {"engine", "errors", "threads"},
    "control": {"engine", "errors", "media", "config", "threads"},
    "service": {"engine", "errors", "audio"},
    "app": {"engine", "errors", "media", "control", "config"},
    "live": {"engine", "errors", "media", "control", "config", "audio", "app", "service", "platform_info",
             "threads"},
}


def _imports() -> dict[str, set[str]]:
    """Module name -> the stemdeck modules it imports (anywhere in it, lazily too)."""
    out = {}
    for path in (SRC / "stemdeck").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stemdeck"):
                # `from pkg import module` imports the module; `from module import name`, the module
                found.update(f"{node.module}.{a.name}" for a in node.names)
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("stemdeck"))
        out[name] = found
    modules = set(out)
    packages = {m for m in modules if (SRC / m.replace(".", "/") / "__init__.py").exists()}
    edges = {}
    for m, deps in out.items():
        deps = {i for i in deps if i in modules and i != m}
        # a package named only because a submodule was imported from it is not an edge
        edges[m] = {i for i in deps if i not in packages or not any(d.startswith(i + ".") for d in deps)}
    return edges


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "stemdeck"


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, deps in _imports().items():
        part = _part(module)
        if part not in ALLOWED:
            continue                   # tools, cli: the top, may import anything
        for dep in deps:
            other = _part(dep)
            if other not in (part, "stemdeck") and other not in ALLOWED[part]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports pointing up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = _imports()
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
