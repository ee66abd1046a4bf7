"""Configs are data: a Pydantic schema per recipe, YAML presets shipped in the package, flags on top.

Precedence (later wins): the schema's defaults < a preset (``--cfg-name NAME`` = the shipped
``kitaeru/configs/<recipe>/NAME.yaml``, or ``--config FILE``) < command-line values. Unknown keys
and wrong types are reported all at once in one :class:`ConfigError` line. The resolved config is
written into the run folder as ``config.yaml``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

C = TypeVar("C", bound=BaseModel)


class RecipeConfig(BaseModel):
    """Base of every recipe's config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def presets_dir(recipe: str) -> Path:
    return Path(str(resources.files("kitaeru") / "configs" / recipe))


def list_presets(recipe: str) -> list[str]:
    """Names of the presets shipped for ``recipe`` (file stems under ``configs/<recipe>/``)."""
    folder = presets_dir(recipe)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def preset_path(recipe: str, name: str) -> Path:
    path = presets_dir(recipe) / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(list_presets(recipe)) or "none"
        raise ConfigError(f"--cfg-name: no preset '{name}' for {recipe} (available: {available})")
    return path


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from a local file or URL; a one-line error for anything else."""
    import yaml

    from .storage import open_input

    with open_input(path, "rb") as fh:
        text = fh.read().decode("utf-8-sig", errors="replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict:
    """``top`` over ``base``; nested mappings are merged key by key, everything else replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def unflatten(values: Mapping[str, Any]) -> dict:
    """``{"onnx.opset": 17}`` → ``{"onnx": {"opset": 17}}``; ``None`` values (flag not given) dropped."""
    out: dict = {}
    for key, value in values.items():
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def format_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif err["type"] == "missing":
            problems.append(f"{loc}: required")
        else:
            given = err.get("input")
            shown = f" (got {given!r})" if given is not None and not isinstance(given, (dict, list)) else ""
            problems.append(f"{loc}: {err['msg']}{shown}")
    return f"{source}: {len(problems)} problem(s): " + "; ".join(problems)


def load_config(
    schema: type[C],
    recipe: str,
    *,
    cfg_name: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Resolve a recipe config: defaults < preset (by name or file) < ``overrides`` (dotted keys ok)."""
    if cfg_name and config_file:
        raise ConfigError("give either --cfg-name or --config, not both")
    data: dict = {}
    sources = []
    if cfg_name:
        path = preset_path(recipe, cfg_name)
        data = read_yaml(path)
        sources.append(f"preset '{cfg_name}'")
    elif config_file:
        data = read_yaml(config_file)
        sources.append(str(config_file))
    flags = unflatten(overrides or {})
    if flags:
        sources.append("command line")
    merged = deep_merge(data, flags)
    try:
        return schema.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, " + ".join(sources) or f"{recipe} config")) from None


def validate_preset(schema: type[C], recipe: str, name: str) -> C:
    """Validate one shipped preset (used by tests to check that every preset loads)."""
    return load_config(schema, recipe, cfg_name=name)


def config_to_yaml(config: BaseModel, header: str | None = None) -> str:
    import yaml

    body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return (f"# {header}\n" if header else "") + body


def field_help(schema: type[BaseModel], name: str) -> str:
    """The help text of a schema field with its default, for CLI options (single source of truth)."""
    field = schema.model_fields[name]
    text = field.description or ""
    default = field.get_default(call_default_factory=True)
    if default is not None and default != "" and not isinstance(default, (dict, list, BaseModel)):
        shown = default.value if hasattr(default, "value") else default
        # Parentheses, not brackets: Typer renders help as Rich markup, where [..] would vanish.
        text = f"{text} (default: {shown})" if text else f"(default: {shown})"
    return text
