"""Every job keeps the same shape (as torchtune checks its recipes): a recipe package with a story,
a schema per mode, one entry function per mode under the mode's name, presets that load, a --help
with an example for every command, and a cli/ that imports only recipes and core."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import kitaeru
from kitaeru.cli import COMMANDS
from kitaeru.core.config import list_presets, preset_path, read_yaml
from kitaeru.core.recipe import Recipe

SRC = Path(kitaeru.__file__).parent
RECIPE_DIRS = sorted(p for p in (SRC / "recipes").iterdir() if p.is_dir() and not p.name.startswith("_"))
RECIPE_COMMANDS = {name: module for name, (module, _) in COMMANDS.items() if module.startswith("kitaeru.recipes.")}


def _recipe(module_name: str) -> Recipe:
    return importlib.import_module(module_name).RECIPE


def test_every_recipe_folder_is_a_package_with_a_story():
    assert RECIPE_DIRS
    for folder in RECIPE_DIRS:
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder.name}: no __init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, f"{folder.name}: __init__ needs a docstring telling the job's story"


def _submodules(package) -> set[str]:
    return {p.stem for p in Path(package.__file__).parent.glob("*.py")}


@pytest.mark.parametrize("name", sorted(RECIPE_COMMANDS))
def test_recipe_face(name):
    package = importlib.import_module(RECIPE_COMMANDS[name])
    recipe = package.RECIPE
    assert isinstance(recipe, Recipe) and recipe.name == name
    import kitaeru

    for mode in recipe.modes:
        function = mode.name.replace("-", "_")
        # The entry is the package's function named after the mode. (A submodule of the same name,
        # export.py beside an ``export`` mode, rebinds the package attribute once imported; callers
        # reach modes through RECIPE and the Python API, which hold the function itself.)
        assert mode.run.__name__ == function and mode.run.__module__ == package.__name__, \
            f"{name}: mode '{mode.name}' must be the package's function {function}()"
        if function in _submodules(package):  # the submodule loaded: the public mode must still be the mode
            importlib.import_module(f"{package.__name__}.{function}")
        public = getattr(getattr(kitaeru, name.replace("-", "_")), function)
        assert callable(public) and not isinstance(public, type(importlib)), f"kitaeru.{name}.{function} is not the mode"
        assert mode.examples and all(e.startswith(f"kitaeru {name}") for e in mode.examples), f"{name} {mode.name}: examples"
        assert mode.schema.model_fields, f"{name} {mode.name}: empty schema"
        for field_name, info in mode.schema.model_fields.items():
            assert info.description, f"{name} {mode.name}: field '{field_name}' has no help text"


def test_every_recipe_with_a_cli_entry_is_mounted():
    mounted = {module.rsplit(".", 1)[1] for module in RECIPE_COMMANDS.values()}
    packages = {folder.name for folder in RECIPE_DIRS}
    assert packages <= mounted, f"recipes without a command: {sorted(packages - mounted)}"


@pytest.mark.parametrize("name", sorted(RECIPE_COMMANDS))
def test_every_shipped_preset_loads_and_names_its_command(name):
    recipe = _recipe(RECIPE_COMMANDS[name])
    preset_modes = [m for m in recipe.modes if m.presets]
    for preset in list_presets(recipe.config_dir):
        first = preset_path(recipe.config_dir, preset).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and "kitaeru " in first, f"{preset}: first line must be a comment with its command"
        assert preset_modes, f"{name}: presets shipped but no mode takes --cfg-name"
        schema = preset_modes[0].schema
        try:
            schema.model_validate(read_yaml(preset_path(recipe.config_dir, preset)))
        except ValidationError as exc:
            # A preset leaves the run's own inputs and outputs to the command line (missing fields,
            # whole-config checks such as "give an input"); every key and value it does set must be valid.
            wrong = [e for e in exc.errors() if e["type"] != "missing" and e["loc"]]
            assert not wrong, f"{name} preset {preset}: {wrong}"


def _all_commands():
    out = []
    for name, module in sorted(RECIPE_COMMANDS.items()):
        recipe = _recipe(module)
        if len(recipe.modes) == 1 and recipe.modes[0].name == name:
            out.append((name,))
        else:
            out.append((name,))
            out += [(name, mode.name) for mode in recipe.modes]
    for name, (module, _) in sorted(COMMANDS.items()):
        if name not in RECIPE_COMMANDS:
            out.append((name,))
    return out


@pytest.mark.parametrize("command", _all_commands(), ids=" ".join)
def test_help_has_an_example_and_no_internal_words(cli, command):
    r = cli(*command, "--help")
    assert r.exit_code == 0, r.stderr
    assert "Example" in r.stdout, f"kitaeru {' '.join(command)} --help has no example"
    assert f"kitaeru {command[0]}" in r.stdout
    assert not re.search(r"seed ?00\d", r.stdout, re.IGNORECASE)


def test_cli_imports_only_recipes_and_core():
    allowed = ("kitaeru.cli", "kitaeru.core", "kitaeru.recipes")
    for path in sorted((SRC / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for module in names:
                if module == "kitaeru" or not module.startswith("kitaeru"):
                    continue
                assert module.startswith(allowed), f"cli/{path.name} imports {module}"


def test_recipes_never_import_each_other():
    for folder in RECIPE_DIRS:
        for path in folder.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for other in RECIPE_DIRS:
                if other.name != folder.name:
                    assert f"kitaeru.recipes.{other.name}" not in text, f"{path} imports recipe {other.name}"


def test_no_internal_seed_words_in_the_product():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if re.search(r"seed ?00[0-4]", p.read_text(encoding="utf-8"), re.IGNORECASE)]
    offenders += [str(p.relative_to(SRC)) for p in SRC.rglob("*.yaml")
                  if re.search(r"seed ?00[0-4]", p.read_text(encoding="utf-8"), re.IGNORECASE)]
    assert not offenders, offenders
