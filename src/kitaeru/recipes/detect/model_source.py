"""Where the base model comes from: local weights, an architecture for random init, or a download.

``--model`` accepts a ``.pt`` file, a ``.yaml`` architecture (random init; Ultralytics' own
``yolov8n.yaml`` etc. are found by name) or a bare name (``yolov8m`` = ``yolov8m.pt``). A named
checkpoint is looked for locally (the path itself, then Ultralytics' weights folder); offline and
not found, training starts from the same architecture with random weights, with a notice, instead
of waiting on a download. An explicit path that does not exist is an error.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from kitaeru.core.errors import ConfigError, DataError

KNOWN_NAME = re.compile(r"^yolov8[nslmx]$")


@dataclass(frozen=True)
class ModelSource:
    """What Ultralytics is handed (``load``) and how it was found."""

    requested: str
    load: str
    kind: str  # "weights" | "architecture" | "download"
    note: str | None = None

    def as_dict(self) -> dict:
        return {"requested": self.requested, "load": self.load, "kind": self.kind, "note": self.note}


def _is_bare_name(text: str) -> bool:
    return "/" not in text and "\\" not in text


@functools.lru_cache(maxsize=32)
def _find_architecture(name: str) -> str | None:
    """The path of a model YAML Ultralytics ships (e.g. ``yolov8n.yaml``), or None. Cached: the files
    do not change while the process runs, and a training resolves its model twice (a check before the
    run folder exists, then the attempt), each a YAML parse of a few milliseconds."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        # Ultralytics maps a scaled name (yolov8n.yaml) onto its unified file (yolov8.yaml, scale n).
        return str(yaml_model_load(name)["yaml_file"])
    except (FileNotFoundError, AssertionError, OSError, TypeError, KeyError):
        return None


def resolve_model(spec: str, *, offline: bool) -> ModelSource:
    """Turn ``--model`` into something Ultralytics can load without surprises (see module doc)."""
    text = str(spec).strip()
    if not text:
        raise ConfigError("--model: empty")
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix == "":
        if not KNOWN_NAME.match(text):
            raise ConfigError(f"--model {text}: expected .pt weights, a .yaml architecture or a name such as yolov8m")
        path, suffix = Path(text + ".pt"), ".pt"
    if suffix in (".yaml", ".yml"):
        if path.is_file():
            return ModelSource(text, str(path.resolve()), "architecture")
        if _is_bare_name(text):
            found = _find_architecture(path.name)
            if found:
                return ModelSource(text, path.name, "architecture")
        raise DataError(f"--model {text}: architecture file not found")
    if suffix != ".pt":
        raise ConfigError(f"--model {text}: expected .pt weights, a .yaml architecture or a name such as yolov8m")
    if path.is_file():
        return ModelSource(text, str(path.resolve()), "weights")
    if not _is_bare_name(str(path)):
        raise DataError(f"--model {text}: weights file not found")
    from ultralytics.utils import WEIGHTS_DIR

    kept = Path(WEIGHTS_DIR) / path.name
    if kept.is_file():
        return ModelSource(text, str(kept), "weights")
    if not offline:
        return ModelSource(text, path.name, "download", "downloaded by Ultralytics if not cached")
    architecture = path.with_suffix(".yaml").name
    if _find_architecture(architecture):
        return ModelSource(
            text, architecture, "architecture",
            f"no local weights for {path.name}; offline, so training starts from random init ({architecture}). "
            "Pass --model path/to/weights.pt to fine-tune, or set offline: false to let Ultralytics download them",
        )
    raise DataError(f"--model {text}: no local weights and no architecture of that name (offline)")


def model_scale(spec: str) -> str | None:
    """The size letter (n/s/m/l/x) of anything named like yolov8m(.pt/.yaml), else None."""
    match = re.search(r"yolov8([nslmx])", Path(str(spec)).name)
    return match.group(1) if match else None


# ---- checkpoints are data: what an Ultralytics .pt may name when loaded without --trust-checkpoint ----

# Ultralytics pickles whole models: the classes of its model graphs (tasks and building blocks) and
# torch's are let into torch's weights-only unpickler, nothing else (never ``ultralytics.nn.autobackend``
# or ``text_model``, whose constructors load further files); core refuses a file that *calls* any of
# them rather than building it as torch.save does ...
ALLOW_MODULES = ("ultralytics.nn.tasks.", "ultralytics.nn.modules.")
# ... except these plain data holders, named exactly (an unfinished run's last.pt keeps its training
# arguments as an IterableSimpleNamespace; found with torch.serialization.get_unsafe_globals_in_checkpoint).
ALLOW_NAMES = ("ultralytics.utils.IterableSimpleNamespace",)


def load_weights(path: str | Path, *, trust: bool = False, what: str = "--model checkpoint"):
    """Load an Ultralytics ``.pt`` as data; a file that names other code is refused in one line
    naming ``--trust-checkpoint`` (with ``trust``: loaded fully, as Ultralytics does)."""
    from kitaeru.core.checkpoints import load_model_checkpoint

    return load_model_checkpoint(path, trust=trust, allow_modules=ALLOW_MODULES, allow_names=ALLOW_NAMES, what=what)


def trained_image_size(weights: str | Path, *, trust: bool = False) -> int | None:
    """The image size a ``.pt`` checkpoint was trained at (its ``train_args``), if recorded.

    The file is loaded as data (:func:`load_weights`): one that names code outside the Ultralytics
    model classes is refused in one line naming ``--trust-checkpoint``.
    """
    ckpt = load_weights(weights, trust=trust)
    args = (ckpt.get("train_args") or {}) if isinstance(ckpt, dict) else {}
    imgsz = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    return int(imgsz) if imgsz else None


_CHECKED: dict[tuple[str, int, int], bool] = {}


def check_weights(path: str | Path, *, trust: bool = False, what: str = "--model checkpoint") -> None:
    """:func:`load_weights` as a check, before Ultralytics (which unpickles with ``weights_only=False``)
    loads a user's file; a file already checked unchanged in this process is not read again."""
    from kitaeru.core.checkpoints import check_model_checkpoint

    file = Path(path)
    try:
        stat = file.stat()
        key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if trust or key is None or key not in _CHECKED:
        check_model_checkpoint(path, trust=trust, allow_modules=ALLOW_MODULES, allow_names=ALLOW_NAMES, what=what)
        if key is not None and not trust:
            _CHECKED[key] = True


def check_user_weights(spec: str | None, *, trust: bool = False, what: str = "--model checkpoint") -> None:
    """Check ``--model`` early when it names an existing ``.pt`` file (before any dataset is read)."""
    if spec and Path(spec).expanduser().suffix.lower() == ".pt" and Path(spec).expanduser().is_file():
        check_weights(Path(spec).expanduser(), trust=trust, what=what)


# ---- pass-through Ultralytics arguments that name files ------------------------------------------

# Ultralytics arguments whose value, when it is a path, is a checkpoint Ultralytics unpickles fully.
WEIGHT_ARGS = ("pretrained",)


def check_model_yaml(spec: str | None, what: str = "--model") -> None:
    """A model YAML file on disk is plain data: a python tag (``!!python/object``) or broken YAML
    is one line before any work (Ultralytics would report it as a bare ValueError after loading)."""
    if not spec or Path(spec).suffix.lower() not in (".yaml", ".yml") or not Path(spec).expanduser().is_file():
        return  # a bare architecture name (yolov8n.yaml) is Ultralytics' own file
    import yaml

    path = Path(spec).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {spec}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        reason = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise DataError(f"{what} {spec}: not a plain YAML model description ({reason})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{what} {spec}: not a YAML mapping (a model description has backbone/head)")


def expand_cfg_argument(extra: dict) -> dict:
    """Ultralytics' ``cfg=FILE.yaml`` replaces every training argument with the file's (``pretrained``,
    ``resume`` and ``model`` included), out of sight of kitaeru's checks. Its keys are read here as
    plain data (a YAML tag such as ``!!python/object`` is refused in one line) and merged under the
    ``key=value`` arguments, so every key goes through the same checks as a command-line one."""
    if not extra.get("cfg"):
        return {k: v for k, v in extra.items() if k != "cfg"}
    import yaml

    path = Path(str(extra["cfg"])).expanduser()
    if not path.is_file():
        raise DataError(f"cfg={extra['cfg']}: file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cfg={extra['cfg']}: not a plain YAML mapping of Ultralytics arguments ({reason})") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise ConfigError(f"cfg={extra['cfg']}: expected a mapping of Ultralytics arguments")
    return {**{k: v for k, v in loaded.items() if k != "cfg"}, **{k: v for k, v in extra.items() if k != "cfg"}}


def check_weight_arguments(extra: dict, *, trust: bool = False) -> None:
    """Every pass-through argument that names a checkpoint (``pretrained=x.pt``) is checked as data,
    like ``--model``, before Ultralytics unpickles it with ``weights_only=False``."""
    for key, value in extra.items():
        if not isinstance(value, (str, Path)) or str(value).lower() in ("true", "false", ""):
            continue
        path = Path(str(value)).expanduser()
        if key in WEIGHT_ARGS and not path.is_file():
            raise DataError(f"{key}={value}: weights file not found")
        if path.suffix.lower() in (".pt", ".pth") and path.is_file():
            check_weights(path, trust=trust, what=f"{key}= checkpoint")
