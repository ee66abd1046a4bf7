"""Remote outputs (``s3://``, ``gs://``, ...): tried before any work, and a failed upload at the end
of a run recorded as such.

Outputs are written locally and uploaded when a job ends (:func:`kitaeru.core.storage.output_dir`).
Without a check first, missing credentials or a wrong bucket surfaced only then, after a whole
training run, which was recorded ``completed`` although nothing arrived.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError, KitaeruError
from .storage import atomic_write_json, filesystem, read_json, upload_dir


def check_remote_output(url: str, *, setting: str, kind: str = "dir") -> None:
    """Refuse, before any work, a remote output (``s3://``, ``gs://`` ...) that cannot be written:
    no driver, no credentials, no such bucket, no permission, no network. Tried, not guessed: a
    probe object is written where the output will go (inside a folder URL, beside a file URL) and
    removed again, which is what the upload at the end will need. One line naming ``setting``."""
    import uuid

    try:
        fs, path = filesystem(url)
    except KitaeruError as exc:  # no driver for the protocol: the same one line, naming the flag
        raise KitaeruError(f"{setting} {exc}") from None
    path = path.rstrip("/")
    folder = path if kind == "dir" else path.rpartition("/")[0]  # a file URL: the folder it will land in
    probe = "/".join(p for p in (folder, f".kitaeru-probe-{uuid.uuid4().hex[:12]}") if p)
    try:
        fs.touch(probe)
        fs.rm(probe)
    except Exception as exc:  # noqa: BLE001 - every back-end raises its own errors; each is a refusal here
        raise KitaeruError(f"{setting} {url}: cannot write there ({_one_line(exc)})") from None


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
