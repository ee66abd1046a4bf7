"""User-facing errors.

Every mistake a user can make (a missing file, a bad field, an impossible option) is raised as a
:class:`KitaeruError`. The CLI prints its message on one line and exits with ``exit_code`` (2), with
no traceback unless ``--debug`` is given. Anything else that escapes is a bug in kitaeru.
"""

from __future__ import annotations

import errno


class KitaeruError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2


class RunInterrupted(KitaeruError):
    """Ctrl-C or SIGTERM stopped a run; the message carries the command that resumes it."""

    exit_code = 130


class ConfigError(KitaeruError):
    """A config file or command-line value is invalid (unknown key, wrong type, bad value)."""


class DataError(KitaeruError):
    """Input data is missing, unreadable or malformed."""


class DeviceError(KitaeruError):
    """The requested device cannot be used on this machine."""


class OutputError(KitaeruError, OSError):
    """An output cannot be written: a full disk, a read-only filesystem, no permission. Still an
    OSError (same ``errno``), so code that handles a failed write keeps working."""


# The OSErrors that are the machine's state, not a bug: said in one line naming the path (exit 2).
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def disk_error(exc: BaseException, path: object = None) -> "OutputError | None":
    """``exc`` as a one-line :class:`OutputError` naming ``path`` (else the file the OS named), or
    None when it is not a disk/permission error. Writers that know their target pass it: a failed
    ``write()`` on an open file carries no file name of its own."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    if isinstance(exc, OutputError):
        return exc  # already says where
    if path is not None:
        message = f"{path}: cannot write ({DISK_ERRNOS[exc.errno]})"
    else:  # caught far from the code that knew whether it was reading or writing
        message = f"{exc.filename or 'a file'}: {DISK_ERRNOS[exc.errno]}"
    error = OutputError(message)
    error.errno, error.__cause__ = exc.errno, exc
    return error


class MissingExtraError(KitaeruError):
    """An optional dependency of one recipe is not installed."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        what = f" ({purpose})" if purpose else ""
        super().__init__(
            f"{package} is not installed{what}; install it with: pip install 'kitaeru[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional module or raise a one-line install hint naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # a broken transitive import also lands here: keep its cause
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
