"""Ultralytics, offline and private by default.

Out of the box Ultralytics writes a settings file into the user's home, sends usage analytics,
downloads a font for its plots and a checkpoint for its AMP check, and downloads weights named
like ``yolov8m.pt``. Without a network some of these wait on time-outs. Here:

* before the first import, ``YOLO_CONFIG_DIR`` points at a private folder owned by kitaeru
  (``$KITAERU_ULTRALYTICS_DIR``, else ``<tmp>/kitaeru-<uid>/ultralytics``) unless the user opts in
  to their own settings (``ultralytics_home_settings``) or already set ``YOLO_CONFIG_DIR``;
  ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false`` when offline;
* the private settings turn analytics (``sync``) and every third-party logger off and keep
  weights/runs/datasets folders inside the private folder; analytics are off in any case;
* a local font (matplotlib's DejaVu Sans) stands in for Arial, so plots never download one;
* while kitaeru drives Ultralytics (:func:`guarded`), downloads fail at once instead of trying the
  network, so the AMP check is skipped offline exactly as Ultralytics does when it cannot download;
  and Ultralytics' console output goes to stderr, keeping stdout for kitaeru's summary.

Everything kitaeru changes inside Ultralytics that is not its public API is listed here, in
:data:`MONKEYPATCHES`, with why; checked on Ultralytics :data:`CHECKED_ON`. Everything else goes
through Ultralytics' own API: training arguments, ``YOLO.add_callback`` (kitaeru's evidence, the
LLRD setting), a ``DetectionTrainer`` subclass passed as ``trainer=`` (the LLRD optimizer groups),
and ``trainer.csv`` (its CSV moved beside kitaeru's ``results.csv``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from kitaeru.core.errors import require

CHECKED_ON = "8.4.190"

# (where, what it replaces, why). The first group is swapped in only while :func:`guarded` runs and
# restored after; the second is set once by :func:`prepare_ultralytics`; the last is a callback.
MONKEYPATCHES: tuple[tuple[str, str, str], ...] = (
    ("ultralytics.{data.utils,utils.plotting,utils.checks}.check_font", "a local DejaVu Sans",
     "plots and labels would download Arial.ttf (a network wait offline)"),
    ("ultralytics.utils.downloads.safe_download", "refuse at once (offline only)",
     "the AMP check and named weights would wait on network time-outs; Ultralytics skips the AMP check "
     "when the download fails, as it does offline"),
    ("ultralytics.utils.downloads.get_github_assets", "no assets (offline only)", "it asks GitHub for release names"),
    ("ultralytics.utils.checks.check_pip_update_available", "False (offline only)",
     "it asks PyPI for a newer version before training"),
    ("ultralytics.utils.{WEIGHTS_DIR,RUNS_DIR,DATASETS_DIR}", "folders inside kitaeru's private settings folder",
     "the module constants are read at import, before the private settings file is in force"),
    ("ultralytics.utils.events.events.enabled", "False", "no usage analytics, whatever the settings file says"),
    ("ultralytics.utils.SETTINGS['sync'] (user's own settings file)", "False in memory only",
     "no analytics, without writing to the user's file"),
    ("ultralytics.utils.LOGGER's own StreamHandler", "a stream that is always the current sys.stderr",
     "stdout carries kitaeru's results (--json); foreign handlers on that logger are left alone"),
    ("trainer.callbacks (analytics callbacks)", "removed in on_pretrain_routine_start (offline only)",
     "the platform/events callbacks would send training events"),
)

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


def private_dir() -> Path:
    """kitaeru's own folder for Ultralytics' settings, fonts and any weights it keeps."""
    env = os.environ.get("KITAERU_ULTRALYTICS_DIR")
    if env:
        return Path(env).expanduser()
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"kitaeru-{uid}" / "ultralytics"


def _local_font() -> Path | None:
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return font if font.is_file() else None
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        return None


def _install_fonts(config_dir: Path) -> None:
    font = _local_font()
    if font is None:
        return
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        target = config_dir / name
        if not target.exists():
            shutil.copyfile(font, target)


def prepare_ultralytics(*, offline: bool = True, home_settings: bool = False):
    """Import Ultralytics with kitaeru's environment (see module doc) and return the module."""
    first_import = "ultralytics" not in sys.modules
    private = private_dir()
    if first_import:
        if offline:
            os.environ["YOLO_OFFLINE"] = "1"
            os.environ["YOLO_AUTOINSTALL"] = "false"
        if not home_settings and "YOLO_CONFIG_DIR" not in os.environ:
            private.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.environ["YOLO_CONFIG_DIR"] = str(private)
            _install_fonts(private / "Ultralytics")
    if first_import:
        _drop_settings_notice()
    with contextlib.redirect_stdout(sys.stderr):  # its first-import notices are not our output
        ultralytics = require("ultralytics", "detect", "YOLO training")
    import ultralytics.utils as ul_utils
    from ultralytics.utils import SETTINGS

    in_private = _is_inside(ul_utils.USER_CONFIG_DIR, private)
    if in_private:
        _install_fonts(Path(ul_utils.USER_CONFIG_DIR))
        wanted = {
            "sync": False,
            **{key: False for key in INTEGRATIONS},
            "weights_dir": str(private / "weights"),
            "runs_dir": str(private / "runs"),
            "datasets_dir": str(private / "datasets"),
        }
        changed = {k: v for k, v in wanted.items() if SETTINGS.get(k) != v}
        if changed:
            SETTINGS.update(changed)  # our own file: persisting is fine
        ul_utils.WEIGHTS_DIR = Path(SETTINGS["weights_dir"])
        ul_utils.RUNS_DIR = Path(SETTINGS["runs_dir"])
        ul_utils.DATASETS_DIR = Path(SETTINGS["datasets_dir"])
    else:
        # The user's own settings file: change nothing on disk, only keep analytics off in memory.
        dict.__setitem__(SETTINGS, "sync", False)
    from ultralytics.utils import events

    events.events.enabled = False
    _log_to_stderr(ul_utils.LOGGER)
    return ultralytics


class _NoSettingsNotice:
    """Drops Ultralytics' "Creating new Ultralytics Settings … file" notice (three lines on a machine
    where it never ran, printed at import, so before any error kitaeru then reports)."""

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith("Creating new Ultralytics Settings")


def _drop_settings_notice() -> None:
    """Installed on the "ultralytics" logger before its first import: Ultralytics configures that same
    logger object (level, handler) and keeps its filters, and writes the notice in the same import."""
    import logging

    logger = logging.getLogger("ultralytics")
    if not any(isinstance(f, _NoSettingsNotice) for f in logger.filters):
        logger.addFilter(_NoSettingsNotice())


def settings_file() -> Path:
    """Where the Ultralytics settings of this process live."""
    import ultralytics.utils as ul_utils

    return Path(ul_utils.SETTINGS_FILE)


def _is_inside(path: Path | str, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


class _CurrentStderr:
    """A stream that always writes to whatever ``sys.stderr`` is now (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# The console handlers Ultralytics itself attached, remembered the first time we see its logger.
# Only these are redirected: a handler someone else attached later (pytest's log capture, an
# application's own subclass of StreamHandler) is not ours to touch.
_OWN_HANDLERS: dict[int, "object"] = {}


def _log_to_stderr(logger) -> None:
    import logging

    if not _OWN_HANDLERS:
        for handler in logger.handlers:
            # Exact type: Ultralytics makes a plain StreamHandler; subclasses belong to others.
            if type(handler) is logging.StreamHandler:
                _OWN_HANDLERS[id(handler)] = handler
    for handler in logger.handlers:
        if _OWN_HANDLERS.get(id(handler)) is handler and not isinstance(handler.stream, _CurrentStderr):
            handler.setStream(_CurrentStderr())


def _refuse_download(*args, **kwargs):
    url = kwargs.get("url") or (args[0] if args else "")
    raise ConnectionError(f"download of {url} refused: kitaeru runs Ultralytics offline (offline: false allows it)")


def _no_github_assets(*args, **kwargs):
    return "", []


def _no_update_check(*args, **kwargs) -> bool:
    return False  # Ultralytics asks PyPI for a newer version before training when it believes it is online


def _local_font_for(font: str = "Arial.ttf"):
    import ultralytics.utils as ul_utils

    own = Path(ul_utils.USER_CONFIG_DIR) / Path(font).name
    if own.exists():
        return own
    return _local_font()


def guarded_patches(offline: bool = True) -> list[tuple[Any, str, Any]]:
    """(module, attribute, replacement) that :func:`guarded` swaps in; each is in :data:`MONKEYPATCHES`."""
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads
    import ultralytics.utils.plotting as plotting

    patches = [(data_utils, "check_font", _local_font_for), (plotting, "check_font", _local_font_for),
               (checks, "check_font", _local_font_for)]
    if offline:
        patches += [(downloads, "safe_download", _refuse_download), (downloads, "get_github_assets", _no_github_assets),
                    (checks, "check_pip_update_available", _no_update_check)]
    return patches


@contextlib.contextmanager
def guarded(offline: bool = True) -> Iterator[None]:
    """While Ultralytics runs: no downloads when offline, local fonts, its console output on stderr."""
    patches = guarded_patches(offline)
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, replacement in patches:
            setattr(module, name, replacement)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
