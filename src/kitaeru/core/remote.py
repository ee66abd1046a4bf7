"""Remote outputs (``s3://``, ``gs://``, ...): tried before any work, and a failed upload at the end
of a run recorded as such.

Outputs are written locally and uploaded when a job ends (:func:`output_dir`).
Without a check first, missing credentials or a wrong bucket surfaced only then, after a whole
training run, which was recorded ``completed`` although nothing arrived.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DataError, KitaeruError
from .storage import (  # noqa: F401 - check_remote_output: used from here by callers
    _one_line,
    _strip_file_scheme,
    atomic_write_json,
    check_remote_output,
    ensure_writable_dir,
    is_remote,
    read_json,
    upload_dir,
)


def upload_run_dir(local_dir: str | os.PathLike, url: str, *, setting: str) -> None:
    """:func:`upload_dir` for a finished run folder: if the upload fails, the run's
    ``training_result.json`` says ``failed`` with the reason (never ``completed``), and the error is
    one line naming ``setting``."""
    try:
        upload_dir(local_dir, url)
    except Exception as exc:  # noqa: BLE001 - any back-end error means the outputs did not arrive
        message = f"{setting} {url}: upload failed ({_one_line(exc)})"
        result_file = Path(local_dir) / "training_result.json"
        try:
            record = read_json(result_file) if result_file.is_file() else None
        except DataError:
            record = None
        if isinstance(record, dict):
            record.update(status="failed", error=message, upload={"to": url, "done": False})
            atomic_write_json(result_file, record)
        raise KitaeruError(message) from None


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, *, keep_local: str | os.PathLike | None = None) -> Iterator[Path]:
    """A local folder to write outputs into; uploaded to ``path`` at the end when it is a URL.

    For a local ``path`` the folder itself is created (with a clear error when it cannot be) and
    yielded. For a URL, outputs go to ``keep_local`` (or a temporary folder) and are uploaded only
    when the block finishes without an exception.
    """
    if not is_remote(path):
        local = Path(_strip_file_scheme(path))
        ensure_writable_dir(local)
        yield local
        return
    if keep_local is not None:
        local = Path(keep_local)
        ensure_writable_dir(local)
        yield local
        _upload(local, str(path))
        return
    with tempfile.TemporaryDirectory(prefix="kitaeru-out-") as tmp:
        yield Path(tmp)
        _upload(tmp, str(path))


def _upload(local: str | os.PathLike, url: str) -> None:
    upload_run_dir(local, url, setting="output")
