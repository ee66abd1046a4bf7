"""The inside keeps its shape, checked on the real imports (every ``import`` and ``from`` statement of
``src/kitaeru``, lazy ones inside functions included, ``if TYPE_CHECKING:`` blocks excluded), not on
a text search that a relative import would pass:

* layers point one way: ``cli`` → ``recipes`` → (``models``, ``data``, ``index``, ``export``,
  ``viz``) → ``core``; ``core`` imports no task code; a recipe never imports another recipe;
* no import circles, lazy or not.
"""

from __future__ import annotations

from code_graph import LIBRARY, TOP
from code_graph import graph as _graph
from code_graph import layer as _layer

# The job-name packages hand unknown attributes to the Python API (kitaeru.index.build(...)):
# the one upward import allowed, inside their package __init__ only.
JOB_NAME_PACKAGES = {"kitaeru.index", "kitaeru.serve", "kitaeru.ui"}


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
