"""Read the run folders under the dashboard's roots: never a traceback, never a file outside a root."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

RESULT_JSON = "training_result.json"
MAX_DEPTH = 4  # runs/<recipe-output>/<name>/... is as deep as kitaeru nests them
SKIP_DIRS = {"weights", "tensorboard", "cache", "lora_model", "validation", ".latent_cache", "__pycache__", ".git"}
# The number a run is judged by, per recipe (first present wins), then any final metric.
KEY_METRICS = {
    "detect": ("mAP50-95", "mAP50"),
    "multimodal": ("recall_mean", "t2i_R@1"),
    "docclass": ("auroc", "val_auroc"),
    "lora": ("loss",),
}
TRAINING_RECIPES = ("detect", "multimodal", "docclass", "lora")


class OutsideRoots(PermissionError):
    """A path that leaves every root (``..``, a symlink pointing elsewhere)."""


@dataclass
class Roots:
    """The folders the dashboard may read: each resolved once."""

    paths: list[Path]

    @classmethod
    def of(cls, folders: Iterable[str | os.PathLike]) -> "Roots":
        return cls([Path(os.path.realpath(str(f))) for f in folders])

    @classmethod
    def from_env(cls, default: str = "runs") -> "Roots":
        text = os.environ.get("KITAERU_UI_RUNS") or default
        return cls.of([p for p in text.split(os.pathsep) if p])

    def resolve(self, path: str | os.PathLike) -> Path:
        """The real path of ``path`` if it lies inside a root (symlinks and ``..`` resolved first)."""
        text = str(path)
        if "\x00" in text:
            raise OutsideRoots(f"{text!r}: not a path")
        real = Path(os.path.realpath(text))
        for root in self.paths:
            if real == root or root in real.parents:
                return real
        raise OutsideRoots(f"{text}: outside the run folders this dashboard serves")

    def read_bytes(self, path: str | os.PathLike, *, limit: int = 50_000_000) -> bytes:
        real = self.resolve(path)
        if not real.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if real.stat().st_size > limit:
            raise ValueError(f"{path}: larger than {limit // 1_000_000} MB, not shown")
        return real.read_bytes()


@dataclass
class RunInfo:
    """One run folder and what its ``training_result.json`` says (``error`` when it cannot be read)."""

    path: Path
    root: Path
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str:
        try:
            return str(self.path.relative_to(self.root)) or self.path.name
        except ValueError:
            return self.path.name

    @property
    def recipe(self) -> str:
        recipe = self.result.get("recipe")
        if recipe:
            return str(recipe)
        if (self.path / "vector_db.json").exists():
            return "multimodal"
        if (self.path / "lora_model").exists():
            return "lora"
        return "?"

    @property
    def status(self) -> str:
        if self.error:
            return "unreadable"
        status = str(self.result.get("status") or "?")
        if status == "running" and process_gone(self.result):
            return "died"
        return status

    @property
    def started(self) -> str:
        return str(self.result.get("started_at") or "")

    @property
    def duration_seconds(self) -> float | None:
        started = _parse_time(self.result.get("started_at"))
        if self.status == "running":
            return round((datetime.now() - started).total_seconds(), 1) if started else None
        wall = self.result.get("wall_time_seconds")
        if isinstance(wall, (int, float)) and not isinstance(wall, bool):
            return float(wall)
        # A run killed hard never wrote its wall time: its last heartbeat is when it was last alive.
        beat = _parse_time(self.result.get("heartbeat_at") or self.result.get("finished_at"))
        return round((beat - started).total_seconds(), 1) if started and beat and beat >= started else None

    @property
    def duration(self) -> str:
        return format_duration(self.duration_seconds)

    @property
    def epochs(self) -> str:
        done, planned = self.result.get("epochs_completed"), self.result.get("epochs_planned")
        if done is None and planned is None:
            return ""
        return f"{done if done is not None else '?'}/{planned if planned is not None else '?'}"

    @property
    def key_metric(self) -> tuple[str, float] | None:
        metrics = self.result.get("metrics")
        if not isinstance(metrics, dict):
            metrics = {}
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name in KEY_METRICS.get(self.recipe, ()):
            if name in numbers:
                return name, float(numbers[name])
        if numbers:
            name = next(iter(numbers))
            return name, float(numbers[name])
        return self._last_logged()

    def _last_logged(self) -> tuple[str, float] | None:
        """The key metric's last value in results.csv: a run stopped before its final evaluation
        (an interrupted lora run has losses but no final metrics)."""
        columns, rows, problem = read_curves(self.path)
        if problem:
            return None
        for name in KEY_METRICS.get(self.recipe, ()) + ("loss", "train_loss", "val_loss"):
            values = [r.get(name) for r in rows if isinstance(r.get(name), (int, float))]
            if values:
                return name, float(values[-1])
        return None

    @property
    def tracking(self) -> list[dict[str, str]]:
        """The experiment-tracker runs this run was logged to (``tracking`` in training_result.json)."""
        entries = self.result.get("tracking")
        out = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                out.append({k: str(entry[k]) for k in ("backend", "run_id", "url", "experiment", "error")
                            if entry.get(k) not in (None, "")})
        return out

    def row(self) -> dict[str, Any]:
        metric = self.key_metric
        return {
            "recipe": self.recipe,
            "name": self.name,
            "status": self.status,
            "started": self.started,
            "duration": self.duration,
            "epochs": self.epochs,
            "key metric": f"{metric[0]} = {metric[1]:.4g}" if metric else "",
            "folder": display_path(self.path, [self.root]),
        }


def display_path(path: Path, roots: Sequence[Path] = ()) -> str:
    """A path as the pages show it: ``<root's name>/...`` inside a run folder, else relative to the
    dashboard's working folder when inside it, ``~/...`` under the home folder, else absolute (the
    full path stays one hover away, in the run page's tooltip)."""
    path = Path(path)
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return root.name if str(rel) == "." else f"{root.name}/{rel}"
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return prefix + (str(rel) if str(rel) != "." else "") or "."
    return str(path)


def format_duration(seconds: float | None) -> str:
    """``45.2 s``, ``2 min 58 s``, ``1 h 05 min``; ``–`` when unknown (one format on every page)."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _parse_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None


def process_gone(result: dict[str, Any]) -> bool:
    """A ``running`` run whose process no longer exists on this host (killed hard, machine rebooted)."""
    pid, host = result.get("pid"), result.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's live process
        return False
    return False


def read_json(path: Path) -> tuple[Any, str | None]:
    """``(data, None)`` or ``(None, one-line reason)``."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path}: not found"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def find_runs(roots: Roots) -> list[RunInfo]:
    """Every folder holding a ``training_result.json`` under the roots, newest first."""
    runs: list[RunInfo] = []
    seen: set[Path] = set()
    for root in roots.paths:
        if not root.is_dir():
            continue
        for folder in _walk(root, MAX_DEPTH):
            if folder in seen or not (folder / RESULT_JSON).is_file():
                continue
            seen.add(folder)
            data, error = read_json(folder / RESULT_JSON)
            if error is None and not isinstance(data, dict):
                data, error = None, f"{folder / RESULT_JSON}: not a JSON object"
            runs.append(RunInfo(path=folder, root=root, result=data or {}, error=error))
    runs.sort(key=lambda r: r.started or "", reverse=True)
    return runs


def _walk(root: Path, depth: int) -> Iterable[Path]:
    """Folders under ``root`` (itself included), not following symlinks out of it."""
    yield root
    if depth <= 0:
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in SKIP_DIRS)
    except OSError:
        return
    for child in children:
        yield from _walk(child, depth - 1)


def read_curves(run_dir: Path) -> tuple[list[str], list[dict[str, Any]], str | None]:
    """``(columns, rows, None)`` of a run's results.csv, or ``([], [], message)``."""
    from kitaeru.core.plots import read_results_csv

    path = run_dir / "results.csv"
    if not path.is_file():
        return [], [], f"{path}: no results.csv yet"
    try:
        columns, rows = read_results_csv(path)
    except (OSError, ValueError) as exc:
        return [], [], str(exc)
    if not rows:
        return columns, [], f"{path}: no rows yet"
    return columns, rows, None


def run_files(run_dir: Path, limit: int = 500) -> list[dict[str, Any]]:
    """The files a run wrote (relative path, size), symlinks left out."""
    files = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink():
                continue
            try:
                size = full.stat().st_size
            except OSError:
                continue
            files.append({"file": str(full.relative_to(run_dir)), "bytes": size})
            if len(files) >= limit:
                return files
    return files


def resource_plan(result: dict[str, Any]) -> dict[str, Any]:
    """The resource decisions a run recorded, whatever the recipe called them."""
    keys = ("device", "tier", "resources", "plan", "resource_plan", "initial_plan", "final_plan", "latent_cache")
    return {k: result[k] for k in keys if k in result}


def oom_recoveries(result: dict[str, Any]) -> list[Any]:
    for key in ("oom_recoveries", "oom_steps", "out_of_memory"):
        value = result.get(key)
        if isinstance(value, list):
            return value
    resources = result.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("oom_recoveries"), list):
        return resources["oom_recoveries"]
    return []


def skipped_inputs(result: dict[str, Any]) -> list[dict[str, Any]]:
    skipped = result.get("skipped_inputs")
    if isinstance(skipped, dict):
        items = skipped.get("items")
        return list(items) if isinstance(items, list) else []
    return list(skipped) if isinstance(skipped, list) else []


def validation_images(run_dir: Path) -> list[tuple[int, Path]]:
    """A lora run's validation images as ``(epoch or step, path)``, in order."""
    import re

    folder = run_dir / "validation"
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp") or path.is_symlink():
            continue
        match = re.search(r"(?:epoch|step|checkpoint)[-_]?(\d+)", path.stem)
        out.append((int(match.group(1)) if match else 0, path))
    return sorted(out, key=lambda t: (t[0], t[1].name))


def adapters(runs: Sequence[RunInfo]) -> list[tuple[str, Path]]:
    """LoRA adapters to generate with: each lora run's final adapter and its checkpoints, only those
    whose weights the generator's own resolver finds (what is listed can generate)."""
    from kitaeru.core.errors import KitaeruError
    from kitaeru.models.diffusion import resolve_adapter

    out = []
    for run in runs:
        model = run.path / "lora_model"
        if not model.is_dir():
            continue
        for candidate in [model / "final", *sorted(model.glob("checkpoint-*"), key=lambda p: _tail_number(p.name))]:
            if not candidate.is_dir() or candidate.is_symlink():
                continue
            try:
                if resolve_adapter(candidate).folder != candidate:
                    continue
            except KitaeruError:
                continue
            out.append((f"{run.name} / {candidate.name}", candidate))
    return out


def _tail_number(name: str) -> int:
    digits = name.rsplit("-", 1)[-1]
    return int(digits) if digits.isdigit() else 0
