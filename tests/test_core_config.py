"""Config precedence, validation messages and presets."""

from __future__ import annotations

import pytest
from pydantic import Field

from kitaeru.core.config import RecipeConfig, deep_merge, field_help, load_config, unflatten
from kitaeru.core.errors import ConfigError


class Inner(RecipeConfig):
    opset: int = Field(16, description="ONNX opset")


class Demo(RecipeConfig):
    epochs: int = Field(30, ge=1, description="Number of epochs.")
    lr: float = Field(1e-4, gt=0, description="Learning rate.")
    name: str = Field("x", description="A name.")
    onnx: Inner = Field(default_factory=Inner)


def test_defaults_preset_file_and_flags_precedence(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 5\nlr: 0.01\nonnx:\n  opset: 17\n")
    cfg = load_config(Demo, "demo", config_file=cfg_file, overrides={"lr": 0.5, "epochs": None, "onnx.opset": 18})
    assert cfg.epochs == 5  # from the file (flag not given)
    assert cfg.lr == 0.5  # flag wins
    assert cfg.onnx.opset == 18  # dotted override reaches nested sections
    assert load_config(Demo, "demo").epochs == 30  # defaults


def test_every_problem_listed_in_one_error(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("epochs: many\nlr: -1\nbogus: 1\nonnx:\n  opset: x\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Demo, "demo", config_file=cfg_file)
    msg = str(exc.value)
    assert "\n" not in msg
    for part in ("epochs", "lr", "bogus: unknown key", "onnx.opset", "4 problem(s)", str(cfg_file)):
        assert part in msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("epochs: [1, 2\nlr: 3\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line"):
        load_config(Demo, "demo", config_file=bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Demo, "demo", config_file=top)


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="no preset 'nope'"):
        load_config(Demo, "multimodal", cfg_name="nope")


def test_cfg_name_and_config_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="either"):
        load_config(Demo, "demo", cfg_name="a", config_file=tmp_path / "b.yaml")


def test_helpers():
    assert unflatten({"a.b": 1, "c": None, "d": 2}) == {"a": {"b": 1}, "d": 2}
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}
    assert field_help(Demo, "epochs") == "Number of epochs. (default: 30)"
