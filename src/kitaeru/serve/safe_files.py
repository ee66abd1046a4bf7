"""Serve files from one folder only: every candidate is resolved (symlinks, ``..``) and checked.

The search results point at images by the paths stored in the vector DB or the index metadata.
Those paths are data, not trusted: a ``../../etc/passwd`` entry or a symlink inside the data folder
that points elsewhere must never make the server read a file outside the folder it was started on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from kitaeru.core.storage import IMAGE_EXTENSIONS


class OutsideRootError(PermissionError):
    """The path resolves to a place outside the served folder."""


class ImageRoot:
    """The folder images may be served from (``None`` = this server serves no images)."""

    def __init__(self, root: str | os.PathLike | None):
        if root is None or "://" in str(root) and not str(root).startswith("file://"):
            # Remote data folders are searched but their images are not proxied by this server.
            self.root: Path | None = None
        else:
            text = str(root)
            self.root = Path(os.path.realpath(text[len("file://"):] if text.startswith("file://") else text))

    def __repr__(self) -> str:
        return f"ImageRoot({str(self.root)!r})"

    def resolve(self, stored_path: str) -> Path:
        """The real path of ``stored_path`` (relative to the root, or absolute) if it may be served.

        Raises :class:`OutsideRootError` for anything that leaves the root after resolving, and
        :class:`FileNotFoundError` for a missing file, a folder or a non-image file.
        """
        if self.root is None:
            raise FileNotFoundError("this server was started without a local image folder")
        if not stored_path or "\x00" in stored_path:
            raise FileNotFoundError("no image path")
        # The original data used Windows separators ("images\\scene-0001.jpg").
        candidate = Path(stored_path.replace("\\", "/"))
        if not candidate.is_absolute():
            candidate = self.root / candidate
        real = Path(os.path.realpath(candidate))
        if not is_within(real, self.root):
            raise OutsideRootError(f"{stored_path}: outside the served folder")
        if not real.is_file():
            raise FileNotFoundError(f"{stored_path}: no such image")
        if real.suffix.lower() not in IMAGE_EXTENSIONS:
            raise FileNotFoundError(f"{stored_path}: not an image file")
        return real


def embed_image_folder(embeddings_source: str) -> str | None:
    """The ``--image-dir`` that ``kitaeru embed`` read to make ``embeddings_source``, from the run
    summary it writes beside its output (``X.summary.json``, or ``DIR/_summary.json`` for shards)."""
    import json

    from kitaeru.index.embeddings_io import summary_path

    text = str(embeddings_source)
    if "://" in text and not text.startswith("file://"):
        return None
    summary = summary_path(text)
    try:
        config = json.loads(summary.read_text(encoding="utf-8")).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return None
    folder = config.get("image_dir")
    return str(folder) if isinstance(folder, str) and folder else None


def indexed_folder(folders: Iterable[str | None]) -> Path | None:
    """One folder covering every local folder in ``folders`` (several after ``index add``).

    URLs and missing entries take no part; a result that is a filesystem root is refused, so
    ``None`` then means "serve no images unless a folder is given explicitly".
    """
    local = [f[len("file://"):] if f.startswith("file://") else f for f in folders if f]
    real = [os.path.realpath(f) for f in local if "://" not in f]
    if not real:
        return None
    try:
        common = Path(os.path.commonpath(real))
    except ValueError:  # mixed drives
        return None
    if common == Path(common.anchor):
        return None
    return common


def is_within(path: Path, root: Path) -> bool:
    """True when the (already resolved) ``path`` is ``root`` itself or lies below it."""
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:  # different drives on Windows
        return False
