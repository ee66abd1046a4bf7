"""The same inside for every recipe, checked on the code itself (``tests/code_graph.py``):

* no file of ``src/kitaeru`` over 400 lines, no function or method over 80 lines;
* a recipe's modules use the standard file names for the standard jobs (``inference.py``, not
  ``prediction.py``; ``evaluation.py``, not ``validate.py``; ...);
* shared code has at least two users: each module of the library layer is imported, directly or
  through other library modules, by two or more of: each recipe, ``serve``, ``ui``, ``cli``,
  ``api`` (a module only one recipe uses belongs inside that recipe);
* ``kitaeru --help`` shows each job with exactly its ``Recipe.help`` line.

Each rule is a function returning its offenders; the last test feeds them a small made-up tree so
that a rule which stopped seeing anything would fail here, not pass quietly.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from code_graph import LIBRARY, PACKAGE, consumer, graph, layer, modules, parse

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# A recipe module named like the left side does the job of the right side's standard file.
STANDARD_NAMES = {
    "prediction": "inference", "predict": "inference", "infer": "inference",
    "validate": "evaluation", "eval": "evaluation", "evaluate": "evaluation",
    "onnx_export": "export", "exporting": "export",
    "dataset": "data", "datasets": "data",
    "net": "model", "network": "model",
    "train": "training", "trainer": "training",
}


def long_files(root: Path, limit: int = MAX_FILE_LINES) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            out.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return out


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:Class.method:lines`` for each function (nested ones and methods too) over ``limit`` lines."""
    out = []

    def visit(node: ast.AST, prefix: str, path: Path) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = child.end_lineno - child.lineno + 1  # from ``def`` to its last line
                    if lines > limit:
                        out.append(f"{path.relative_to(root.parent)}:{name}:{lines}")
                visit(child, f"{name}.", path)
            else:
                visit(child, prefix, path)

    for path in sorted(root.rglob("*.py")):
        visit(parse(path), "", path)
    return out


def misnamed_recipe_modules(recipes: Path) -> list[str]:
    """``recipes/<job>/<name>.py -> <standard>.py`` for each module named with a synonym of a standard job."""
    out = []
    for path in sorted(recipes.glob("*/*.py")):
        standard = STANDARD_NAMES.get(path.stem)
        if standard:
            out.append(f"{path.relative_to(recipes.parent)} -> {standard}.py")
    return out


def single_user_modules(imports: dict[str, set[str]], library_modules: list[str]) -> list[str]:
    """Library modules that fewer than two consumers reach (directly or through library modules)."""
    users: dict[str, set[str]] = {m: set() for m in library_modules}
    for module, targets in imports.items():
        who = consumer(module)
        if who is None:
            continue
        todo = [t for t in targets if layer(t) in LIBRARY]
        seen: set[str] = set()
        while todo:
            target = todo.pop()
            if target not in seen:
                seen.add(target)
                todo.extend(t for t in imports.get(target, ()) if layer(t) in LIBRARY)
        for target in seen & users.keys():
            users[target].add(who)
    out = []
    for module, who in sorted(users.items()):
        if len(who) < 2:
            where = f"only {sorted(who)[0]} uses it: move it into that package" if who else "nothing uses it"
            out.append(f"{module}: {where}")
    return out


def root_help_lines(text: str) -> dict[str, str]:
    """Command → its help line, from the Commands panel of ``kitaeru --help`` (wrapped lines joined)."""
    lines: dict[str, str] = {}
    current = None
    inside = False
    for raw in text.splitlines():
        if "Commands" in raw and not inside:
            inside = True
            continue
        if not inside:
            continue
        if raw.lstrip().startswith("╰") or not raw.strip():
            break
        row = raw.strip().strip("│").rstrip()
        match = re.match(r"^ ?(\S+)\s{2,}(.*)$", row)
        if match:  # a row that starts with a name; wrapped lines start with spaces
            current = match.group(1)
            lines[current] = match.group(2)
        elif current is not None:
            lines[current] += " " + row.strip()
    return {name: " ".join(line.split()) for name, line in lines.items()}


def _library_modules() -> list[str]:
    return [m for m, p in modules().items() if layer(m) in LIBRARY and p.name != "__init__.py"]


def test_no_file_over_400_lines():
    offenders = long_files(PACKAGE)
    assert not offenders, f"files over {MAX_FILE_LINES} lines (split them by job):\n" + "\n".join(offenders)


def test_no_function_over_80_lines():
    offenders = long_functions(PACKAGE)
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines (file:function:lines; split them "
                           "into well-named helpers):\n" + "\n".join(offenders))


def test_recipe_modules_use_the_standard_file_names():
    offenders = misnamed_recipe_modules(PACKAGE / "recipes")
    assert not offenders, "recipe modules named differently from the standard (rename them):\n" + "\n".join(offenders)


def test_shared_code_has_at_least_two_users():
    offenders = single_user_modules(graph(), _library_modules())
    assert not offenders, "library modules with fewer than two users:\n" + "\n".join(offenders)


def test_the_root_help_shows_each_recipes_help_line_exactly(cli, monkeypatch):
    from kitaeru.recipes.catalog import JOBS, job_module

    monkeypatch.setenv("COLUMNS", "100")
    result = cli("--help")
    assert result.exit_code == 0, result.stderr
    shown = root_help_lines(result.stdout)
    for name in JOBS:
        expected = " ".join(importlib.import_module(job_module(name)).RECIPE.help.split())
        assert shown.get(name) == expected, f"kitaeru --help shows {name!r} as {shown.get(name)!r}, its recipe says {expected!r}"


def test_the_rules_catch_what_they_guard(tmp_path):
    package = tmp_path / "kitaeru"
    (package / "recipes" / "segment").mkdir(parents=True)
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    (package / "recipes" / "segment" / "prediction.py").write_text(f"class A:\n    def long(self):\n{body}\n")
    (package / "recipes" / "segment" / "trainer.py").write_text("\n" * 401)
    (package / "recipes" / "segment" / "inference.py").write_text("x = 1\n")
    (package / "recipes" / "segment" / "sub").mkdir()  # only direct modules of a recipe are named by job
    (package / "recipes" / "segment" / "sub" / "train.py").write_text("")

    assert long_files(package) == ["kitaeru/recipes/segment/trainer.py: 401 lines"]
    assert long_functions(package) == ["kitaeru/recipes/segment/prediction.py:A.long:81"]
    assert misnamed_recipe_modules(package / "recipes") == [
        "recipes/segment/prediction.py -> inference.py", "recipes/segment/trainer.py -> training.py"]

    imports = {
        "kitaeru.recipes.segment.training": {"kitaeru.models.masks", "kitaeru.models.shared"},
        "kitaeru.recipes.detect.training": {"kitaeru.models.shared"},
        "kitaeru.recipes.detect.inference": {"kitaeru.models.via"},  # reaches kitaeru.models.deep through it
        "kitaeru.serve.app": {"kitaeru.models.via"},
        "kitaeru.models.via": {"kitaeru.models.deep"},
        "kitaeru.models.deep": set(),
        "kitaeru.models.masks": set(),
        "kitaeru.models.shared": set(),
        "kitaeru.models.unused": set(),
        "kitaeru.recipes.catalog": {"kitaeru.models.unused"},  # the catalog is no user
    }
    library = [m for m in imports if layer(m) in LIBRARY]
    assert single_user_modules(imports, library) == [
        "kitaeru.models.masks: only recipes.segment uses it: move it into that package",
        "kitaeru.models.unused: nothing uses it",
    ]

    help_text = ("╭─ Commands ──╮\n│ detect   Fine-tune YOLOv8, then │\n│          export to ONNX.  │\n"
                 "│ map      Draw a map. │\n╰──────╯\n")
    assert root_help_lines(help_text) == {
        "detect": "Fine-tune YOLOv8, then export to ONNX.", "map": "Draw a map."}

