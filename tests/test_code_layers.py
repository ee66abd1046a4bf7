"""The inside keeps its shape, checked on the real imports (every ``import`` and ``from`` statement of
``src/kitaeru``, lazy ones inside functions included, ``if TYPE_CHECKING:`` blocks excluded), not on
a text search that a relative import would pass:

* layers point one way: ``cli`` → ``recipes`` → (``models``, ``data``, ``index``, ``export``,
  ``viz``) → ``core``; ``core`` imports no task code; a recipe never imports another recipe;
* no import circles, lazy or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LIBRARY = ("models", "data", "index", "export", "viz")
# Above the library layer: nothing below may import these.
TOP = ("cli", "recipes", "serve", "ui", "api")
# The job-name packages hand unknown attributes to the Python API (kitaeru.index.build(...)):
# the one upward import allowed, inside their package __init__ only.
JOB_NAME_PACKAGES = {"kitaeru.index", "kitaeru.serve", "kitaeru.ui"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "kitaeru").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The kitaeru modules ``name`` imports (a ``from pkg import name`` of a submodule counts as it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("kitaeru") and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_point_one_way():
    problems = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target in targets:
            other = _layer(target)
            if module in JOB_NAME_PACKAGES and target == "kitaeru.api":
                continue
            if layer == "core" and other not in ("core", ""):
                problems.append(f"{module} (core) imports {target}")
            elif layer in LIBRARY and other in TOP:
                problems.append(f"{module} ({layer}) imports {target}")
            elif layer == "recipes" and other == "recipes":
                mine, theirs = module.split(".")[2:3], target.split(".")[2:3]
                if theirs != ["catalog"] and mine and theirs and mine != theirs:
                    problems.append(f"{module} imports another recipe: {target}")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)
