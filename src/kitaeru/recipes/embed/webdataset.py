"""Webdataset tar shards as an image source (what img2dataset writes), read with :mod:`tarfile`.

A source is one ``.tar`` file, a brace pattern of them (``shards/{00000..00127}.tar``, the
webdataset spelling), or a folder whose only inputs are ``.tar`` shards; local paths or fsspec URLs.
Each image member becomes one input named ``<shard>::<member>`` (``/data/shards/00003.tar::000317.jpg``):
the name is stable, so ``--resume`` and the output's ``path`` column work as for plain files.
Captions and JSON beside the images in a sample are ignored here.

Members are read by seeking to their offset: a shard is indexed once per process (worker
processes open their own handles, never one inherited across a fork).
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import Any

from kitaeru.core.errors import DataError
from kitaeru.core.storage import IMAGE_EXTENSIONS, filesystem, is_remote, open_input

SEPARATOR = "::"
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_open: dict[tuple[int, str], tuple[Any, tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` → ``a-000.tar, a-001.tar, a-002.tar`` (zero padding kept; several braces nest)."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first) if first.startswith("0") or len(first) == len(last) else 0
    out: list[str] = []
    for n in range(int(first), int(last) + 1):
        out.extend(expand_braces(pattern[: match.start()] + str(n).zfill(width) + pattern[match.end():]))
    return out


def _strip(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def shard_paths(source: str) -> list[str]:
    """The tar shards a source names (sorted when listed from a folder); [] when it is not a tar source."""
    text = str(source)
    if _BRACE.search(text) and text.endswith(".tar"):
        return expand_braces(text)
    if text.endswith(".tar"):
        return [text]
    if is_remote(text):
        fs, p = filesystem(text)
        if not fs.isdir(p):
            return []
        names = fs.ls(p, detail=False)
        tars = sorted(fs.unstrip_protocol(n) for n in names if n.endswith(".tar"))
        images = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        return tars if tars and not images else []
    local = Path(_strip(text))
    if not local.is_dir():
        return []
    tars = sorted(str(f) for f in local.glob("*.tar") if f.is_file())
    if not tars or any(f.suffix.lower() in IMAGE_EXTENSIONS for f in local.rglob("*") if f.is_file()):
        return []
    return tars


def is_tar_source(source: str) -> bool:
    return bool(shard_paths(source))


def is_member(path: str) -> bool:
    return SEPARATOR in path and path.split(SEPARATOR, 1)[0].endswith(".tar")


def _canonical(shard: str) -> str:
    return shard if is_remote(shard) else str(Path(_strip(shard)).resolve())


def list_members(source: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """``<shard>::<member>`` of every image member of every shard, shard by shard in tar order."""
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    for shard in shard_paths(source):
        canonical = _canonical(shard)
        _, _, index = _handle(canonical)
        found.extend(f"{canonical}{SEPARATOR}{name}" for name in index if name.lower().endswith(exts))
    return found


def _handle(shard: str):
    key = (os.getpid(), shard)
    if key not in _open:
        try:
            raw = open_input(shard, "rb") if is_remote(shard) else open(shard, "rb")  # noqa: SIM115 - kept open, cached
            archive = tarfile.open(fileobj=raw, mode="r:")
        except FileNotFoundError:
            raise DataError(f"{shard}: tar shard not found") from None
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{shard}: not a readable tar shard ({str(exc).splitlines()[0]})") from None
        index = {m.name: m for m in archive.getmembers() if m.isfile()}
        _open[key] = (raw, archive, index)
    return _open[key]


def read_member(path: str) -> bytes:
    """The bytes of ``<shard>::<member>``."""
    shard, member = path.split(SEPARATOR, 1)
    _, archive, index = _handle(shard)
    info = index.get(member)
    if info is None:
        raise DataError(f"{path}: no member {member} in {shard}")
    handle = archive.extractfile(info)
    if handle is None:
        raise DataError(f"{path}: not a file member")
    return handle.read()


def write_shards(images: list[str | os.PathLike], out_dir: str | os.PathLike, per_shard: int) -> list[Path]:
    """Pack image files into ``out_dir/00000.tar``, ... the way img2dataset does (``<key>.<ext>`` per
    sample); for tests, benchmarks and examples."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    for start in range(0, len(images), per_shard):
        target = out / f"{len(shards):05d}.tar"
        with tarfile.open(target, "w") as archive:
            for offset, image in enumerate(images[start: start + per_shard]):
                key = f"{start + offset:09d}"
                archive.add(str(image), arcname=f"{key}{Path(image).suffix.lower()}")
        shards.append(target)
    return shards
