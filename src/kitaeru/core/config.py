"""Configs are data: a Pydantic schema per recipe, YAML presets shipped in the package, flags on top.

Precedence (later wins): the schema's defaults < a preset (``--cfg-name NAME`` = the shipped
``kitaeru/configs/<recipe>/NAME.yaml``, or ``--config FILE``) < command-line values. Unknown keys
and wrong types are reported all at once in one :class:`ConfigError` line. The resolved config is
written into the run folder as ``config.yaml``.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

C = TypeVar("C", bound=BaseModel)

# Upper bounds shared by every recipe: far above any real run, low enough that a typo (an extra
# zero, an exponent) is refused at the schema instead of allocating for hours or being OOM-killed.
MAX_EPOCHS = 1_000_000
MAX_IMAGE_SIZE = 8192


def _one_folder_name(value: str | None) -> str | None:
    """A run name becomes one folder under the output folder, so it may not walk out of it."""
    if value is None:
        return value
    if value.strip() in ("", ".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise ValueError("must be a single folder name (no '/', '\\', '..' or surrounding spaces)")
    return value


# Shared field types: the bounds live here once, recipes only name them.
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
RunName = Annotated[str, AfterValidator(_one_folder_name)]


def _non_finite(value: Any, where: str = "") -> str | None:
    """The dotted place of the first NaN/infinite number inside a free-form value (dict, list,
    or a string such as 'inf' that a library would turn into one), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "value")
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return None if math.isfinite(number) else (where or "value")
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]" if where else f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for place, item in items:
        found = _non_finite(item, place)
        if found:
            return found
    return None


class RecipeConfig(BaseModel):
    """Base of every recipe's config: unknown keys are errors, assignments are validated, and every
    number is finite (``inf`` is refused wherever ``nan`` is, typed field or free-form section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _finite_inside(cls, value: Any) -> Any:
        # Typed floats (lists and tuples of them too) are covered by allow_inf_nan; free-form
        # sections (arguments handed to Ultralytics, say) hold untyped numbers that would otherwise
        # reach a library as inf/nan. Typed lists of strings (file names, topics) are left alone.
        if isinstance(value, Mapping):
            found = _non_finite(value)
            if found:
                raise ValueError(f"{found} must be a finite number")
        return value


def setting(
    default: Any = ...,
    description: str = "",
    *,
    aliases: tuple[str, ...] | list[str] = (),
    short: str | None = None,
    flag: bool = True,
    promote: bool = False,
    flag_value: Any = None,
    metavar: str | None = None,
    **constraints: Any,
) -> Any:
    """A config field with what the command line needs to know about it, declared once.

    ``aliases``: other names of the field, usable as ``--alias`` and as ``alias=value`` (the guides'
    spellings: ``dataset`` for ``data_dir``). ``short``: a one-letter flag (``-d``). ``flag=False``:
    reachable only as ``key=value`` / in YAML. ``promote``: a field of a nested section that gets a
    flag of its own name (``--data-dir`` for ``data.data_dir``). ``flag_value``: the value of a bare
    flag that can also take one (``--resume`` = ``--resume latest``). Everything else (``ge``,
    ``le``, ``default_factory`` ...) goes to Pydantic.
    """
    cli = {"aliases": list(aliases), "short": short, "flag": flag, "promote": promote,
           "flag_value": flag_value, "metavar": metavar}
    if default is ... and "default_factory" in constraints:
        return Field(description=description, json_schema_extra={"cli": cli}, **constraints)
    return Field(default, description=description, json_schema_extra={"cli": cli}, **constraints)


def cli_meta(field_info) -> dict[str, Any]:
    """The command-line metadata of a field (defaults for fields declared with plain ``Field``)."""
    extra = field_info.json_schema_extra if isinstance(field_info.json_schema_extra, dict) else {}
    meta = {"aliases": [], "short": None, "flag": True, "promote": False, "flag_value": None, "metavar": None}
    meta.update(extra.get("cli", {}))
    return meta


def section_schema(annotation: Any) -> type[BaseModel] | None:
    """The nested config model behind an annotation (``Section`` or ``Optional[Section]``), if any."""
    import typing

    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def field_paths(schema: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every settable key of a schema, dotted (``train.lr0``), mapped to its field info."""
    out: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        path = f"{prefix}{name}"
        out[path] = info
        nested = section_schema(info.annotation)
        if nested is not None:
            out.update(field_paths(nested, f"{path}."))
    return out


def key_aliases(schema: type[BaseModel]) -> dict[str, str]:
    """``alias -> dotted key`` for every alias a schema declares (and ``leaf -> key`` of promoted fields)."""
    out: dict[str, str] = {}
    for path, info in field_paths(schema).items():
        meta = cli_meta(info)
        for alias in meta["aliases"]:
            out[alias.replace("-", "_")] = path
        if meta["promote"] and "." in path:
            out.setdefault(path.rsplit(".", 1)[1], path)
    return out


def canonical_keys(schema: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each top-level key that is an alias renamed to its field (a run's saved
    config or a checkpoint's plan written before a setting was renamed keeps its meaning)."""
    aliases = key_aliases(schema)
    return {(k if k in schema.model_fields else aliases.get(k, k)): v for k, v in values.items()}


def resolve_key(schema: type[BaseModel], key: str, *, passthrough: str | None = None) -> str:
    """The dotted field path a user's ``key`` means: a path, an alias, or (with ``passthrough``)
    ``<passthrough>.<key>``. Unknown keys get a "did you mean" from the known names."""
    import difflib

    paths = field_paths(schema)
    normal = key.replace("-", "_")
    if normal in paths:
        return normal
    aliases = key_aliases(schema)
    head, dot, rest = normal.partition(".")
    if head in aliases:
        return aliases[head] + (dot + rest if dot else "")
    # An old spelling inside a section (``optim.lr`` for ``optim.learning_rate``) keeps working.
    parent, _, leaf = normal.rpartition(".")
    inner = section_schema(paths[parent].annotation) if parent in paths else None
    for name, info in (inner.model_fields.items() if inner is not None else ()):
        if leaf in (alias.replace("-", "_") for alias in cli_meta(info)["aliases"]):
            return f"{parent}.{name}"
    if passthrough is not None:
        return f"{passthrough}.{key}"
    known = sorted(set(paths) | set(aliases))
    close = difflib.get_close_matches(normal, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(f"unknown setting '{key}'{hint}")


def parse_assignments(items: list[str] | tuple[str, ...], what: str = "setting") -> dict[str, Any]:
    """``["epochs=3", "train.lr0=0.01"]`` → ``{"epochs": 3, "train.lr0": 0.01}`` (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"unexpected argument '{item}': a {what} is written key=value, e.g. epochs=3")
        try:
            out[key] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            out[key] = value
    return out


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
        if len(err["loc"]) == 1 and isinstance(err["loc"][0], str) and err["type"] != "extra_forbidden" \
                and not isinstance(err.get("input"), (dict, list)):  # sections are key=value, not a flag
            loc = f"{loc} (--{loc.replace('_', '-')})"  # the spelling the user typed on the command line
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


def preset_summary(recipe: str, name: str) -> str:
    """The first comment line of a shipped preset (each starts with the command that uses it)."""
    for line in preset_path(recipe, name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


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
    if field.is_required():
        return text
    default = field.get_default(call_default_factory=True)
    if default is not None and default != "" and not isinstance(default, (dict, list, BaseModel)):
        shown = default.value if hasattr(default, "value") else default
        # Parentheses, not brackets: Typer renders help as Rich markup, where [..] would vanish.
        text = f"{text} (default: {shown})" if text else f"(default: {shown})"
    return text
