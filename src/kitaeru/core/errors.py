"""User-facing errors.

Every mistake a user can make (a missing file, a bad field, an impossible option) is raised as a
:class:`KitaeruError`. The CLI prints its message on one line and exits with ``exit_code`` (2), with
no traceback unless ``--debug`` is given. Anything else that escapes is a bug in kitaeru.
"""

from __future__ import annotations


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
