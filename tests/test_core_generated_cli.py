"""The command line generated from a config schema: flags, aliases, key=value, presets, errors."""

from __future__ import annotations

import json
from typing import Literal, Optional

import pytest

from kitaeru.core.config import RecipeConfig, setting
from kitaeru.core.recipe import Mode, Recipe


class Section(RecipeConfig):
    lr0: float = setting(0.01, "Initial learning rate.", aliases=["learning-rate", "lr"], promote=True, gt=0)
    depth: int = setting(3, "Depth.", ge=1)


class ToyConfig(RecipeConfig):
    data_dir: Optional[str] = setting(None, "Data folder.", aliases=["dataset", "data"], short="-d")
    batch_size: int = setting(4, "Images per batch.", aliases=["batch"], ge=1)
    tensorboard: bool = setting(True, "Write TensorBoard scalars.")
    loss: Literal["cosface", "arcface"] = setting("cosface", "Margin loss.")
    prompts: list[str] = setting(default_factory=list, description="Prompts (repeatable).", aliases=["prompt"])
    resume: Optional[str] = setting(None, "Continue a run: latest or its folder.", flag_value="latest")
    train: Section = setting(default_factory=Section, description="Training section.")
    extra: dict = setting(default_factory=dict, description="Pass-through settings.", flag=False)


def toy_train(config: ToyConfig) -> dict:
    return config.model_dump()


TOY = Recipe("toy", "A toy job.", [
    Mode("train", ToyConfig, toy_train, "Train the toy.", ["kitaeru toy train -d data/"], presets=True,
         passthrough_field="extra", aliases=("fit",), preset_switches={"fast": "fast"}),
    Mode("label", ToyConfig, toy_train, "Label things.", ["kitaeru toy label a.jpg b.jpg"], positional_field="prompts"),
])


@pytest.fixture
def toy(monkeypatch, cli):
    import sys
    import types

    import kitaeru.cli as root

    module = types.ModuleType("kitaeru_toy_recipe")
    module.RECIPE = TOY
    monkeypatch.setitem(sys.modules, "kitaeru_toy_recipe", module)
    monkeypatch.setitem(root.COMMANDS, "toy", ("kitaeru_toy_recipe", "A toy job."))
    return cli


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_flags_aliases_and_key_value_overrides(toy):
    got = _json(toy("toy", "train", "-d", "x", "--batch", "8", "--no-tensorboard", "--lr", "0.5",
                    "train.depth=5", "foo=1", "--prompt", "a", "--prompt", "b", "--json"))
    assert got["data_dir"] == "x" and got["batch_size"] == 8 and got["tensorboard"] is False
    assert got["train"] == {"lr0": 0.5, "depth": 5}
    assert got["prompts"] == ["a", "b"]
    assert got["extra"] == {"foo": 1}  # unknown keys go to the pass-through field
    # key=value with aliases, and --set, and the canonical flag names
    got = _json(toy("toy", "train", "data=y", "batch=2", "--set", "learning_rate=0.2", "--json"))
    assert (got["data_dir"], got["batch_size"], got["train"]["lr0"]) == ("y", 2, 0.2)
    assert _json(toy("toy", "train", "--data-dir", "z", "--batch-size", "3", "--json"))["batch_size"] == 3


def test_optional_value_flag_and_mode_alias(toy):
    assert _json(toy("toy", "train", "--resume", "--json"))["resume"] == "latest"
    assert _json(toy("toy", "fit", "--resume", "runs/a", "--json"))["resume"] == "runs/a"


def test_bare_arguments_fill_the_positional_field(toy):
    got = _json(toy("toy", "label", "a.jpg", "batch=2", "b.jpg", "--prompt", "c.jpg", "--json"))
    assert got["prompts"] == ["c.jpg", "a.jpg", "b.jpg"] and got["batch_size"] == 2


def test_print_config_shows_the_resolved_yaml(toy):
    import yaml

    r = toy("toy", "train", "--print-config", "epochs_unknown_goes_to_extra=1", "batch=6")
    assert r.exit_code == 0
    resolved = yaml.safe_load(r.stdout)
    assert resolved["batch_size"] == 6 and resolved["extra"] == {"epochs_unknown_goes_to_extra": 1}


def test_help_has_examples_and_every_spelling(toy):
    r = toy("toy", "train", "--help")
    assert r.exit_code == 0
    for text in ("Examples:", "kitaeru toy train -d data/", "--data-dir", "--dataset", "--batch-size", "--batch",
                 "--lr", "--no-tensorboard", "cosface|arcface", "--cfg-name", "--print-config", "--json", "(default: 4)"):
        assert text in r.stdout, text


@pytest.mark.parametrize("args, fragment", [
    (("toy", "trian"), "did you mean train"),
    (("toy", "train", "--bogus"), "No such option"),
    (("toy", "train", "--batch", "0"), "batch_size"),
    (("toy", "train", "--loss", "x"), "'x' is not one of"),
    (("toy", "train", "--cfg-name", "nope"), "no preset 'nope'"),
    (("toy", "train", "--fast", "--cfg-name", "other"), "not both"),
    (("toy", "train", "notakeyvalue"), "key=value"),
])
def test_bad_input_is_one_line_exit_2(toy, args, fragment):
    r = toy(*args)
    assert r.exit_code == 2, r.stderr
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr and "╭" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1


def test_unknown_key_without_passthrough_suggests_the_field():
    from kitaeru.core.config import resolve_key
    from kitaeru.core.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean batch_size"):
        resolve_key(ToyConfig, "bach_size")
    assert resolve_key(ToyConfig, "lr0") == "train.lr0"  # promoted leaf
    assert resolve_key(ToyConfig, "train.depth") == "train.depth"


def test_root_unknown_command_suggests(cli):
    r = cli("multimodl")
    assert r.exit_code == 2
    assert "did you mean multimodal" in r.stderr
