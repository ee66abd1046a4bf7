"""The real import graph of ``src/kitaeru`` and its parsed modules, for the tests that keep the
inside in shape (``test_code_layers.py``, ``test_code_shape.py``).

Every ``import`` and ``from`` statement counts, lazy ones inside functions included; those inside an
``if TYPE_CHECKING:`` block do not (they never run). A ``from pkg import name`` of a submodule counts
as importing that submodule, and a relative import is resolved like Python does, so neither a
relative spelling nor a lazy import hides an edge.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "kitaeru"
LIBRARY = ("models", "data", "index", "export", "viz")
# Above the library layer: nothing below may import these.
TOP = ("cli", "recipes", "serve", "ui", "api")


def modules() -> dict[str, Path]:
    """Every module of ``src/kitaeru`` by dotted name (a package by its own name, not ``.__init__``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@lru_cache(maxsize=None)
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The kitaeru modules ``name`` imports (a ``from pkg import name`` of a submodule counts as it)."""
    tree = parse(path)
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
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("kitaeru") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    """Module → the kitaeru modules it imports."""
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer(module: str) -> str:
    """``kitaeru.recipes.map.build`` → ``recipes``; ``kitaeru`` → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def consumer(module: str) -> str | None:
    """Who a top-layer module speaks for: its recipe (``recipes.map``) or its front end (``serve``,
    ``ui``, ``cli``, ``api``); None for ``core``, the library layer and the package root."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in TOP:
        return None
    if parts[1] == "recipes":
        # recipes/catalog.py and recipes/__init__.py name the jobs; they are no job themselves
        return f"recipes.{parts[2]}" if len(parts) > 2 and parts[2] != "catalog" else None
    return parts[1]
