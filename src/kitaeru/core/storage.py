"""Paths that may be local or remote (fsspec URLs), and writes that never leave half a file.

* Every input path may be a local path or a URL that fsspec understands (``s3://``, ``gs://``,
  ``memory://``, ``file://``...). :func:`local_copy` gives a local path for libraries that need one.
* Outputs are always produced in a local folder and uploaded afterwards (:func:`output_dir`), so a
  crashed run never leaves a partial object in a bucket.
* :func:`atomic_write` and friends write to a temporary file beside the target and ``os.replace``
  it into place, so readers see either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import DataError, KitaeruError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def is_remote(path: str | os.PathLike) -> bool:
    """True for fsspec URLs other than plain local files."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def _strip_file_scheme(path: str | os.PathLike) -> str:
    text = str(path)
    return text[len("file://"):] if text.startswith("file://") else text


def filesystem(url: str):
    """The fsspec filesystem and in-filesystem path for ``url`` (clear hint if a back-end is missing)."""
    import fsspec

    try:
        fs, _, paths = fsspec.get_fs_token_paths(url)
    except ImportError as exc:
        protocol = url.split("://", 1)[0]
        raise KitaeruError(
            f"{url}: no filesystem driver for '{protocol}://' ({exc}); "
            "install it with: pip install 'kitaeru[cloud]'"
        ) from exc
    except ValueError as exc:  # fsspec: "Protocol not known: ..."
        raise KitaeruError(f"{url}: {exc}") from None
    return fs, paths[0]


def exists(path: str | os.PathLike) -> bool:
    if is_remote(path):
        fs, p = filesystem(str(path))
        return fs.exists(p)
    return Path(_strip_file_scheme(path)).exists()


def open_input(path: str | os.PathLike, mode: str = "rb") -> IO:
    """Open a local path or fsspec URL for reading."""
    if is_remote(path):
        fs, p = filesystem(str(path))
        if not fs.exists(p):
            raise DataError(f"{path}: not found")
        return fs.open(p, mode)
    local = Path(_strip_file_scheme(path))
    if not local.exists():
        raise DataError(f"{local}: not found")
    return open(local, mode)


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts for local paths and URLs alike."""
    text = str(base)
    if is_remote(text):
        return "/".join([text.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(_strip_file_scheme(text), *parts))


def list_files(
    root: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS, recursive: bool = True
) -> list[str]:
    """Sorted files under ``root`` (local folder or URL) whose suffix is in ``extensions``.

    Remote results keep their protocol prefix so they can be opened with :func:`open_input`.
    """
    exts = tuple(e.lower() for e in extensions)
    if is_remote(root):
        fs, p = filesystem(str(root))
        if not fs.exists(p) or not fs.isdir(p):
            raise DataError(f"{root}: not found or not a folder")
        found = fs.find(p) if recursive else fs.ls(p, detail=False)
        return sorted(fs.unstrip_protocol(f) for f in found if f.lower().endswith(exts))
    local = Path(_strip_file_scheme(root))
    if not local.is_dir():
        raise DataError(f"{local}: not found or not a folder")
    pattern = "**/*" if recursive else "*"
    return sorted(str(f) for f in local.glob(pattern) if f.is_file() and f.suffix.lower() in exts)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[Path]:
    """A local path to ``path``: itself when local, else a temporary download removed afterwards."""
    if not is_remote(path):
        local = Path(_strip_file_scheme(path))
        if not local.exists():
            raise DataError(f"{local}: not found")
        yield local
        return
    fs, p = filesystem(str(path))
    if not fs.exists(p):
        raise DataError(f"{path}: not found")
    with tempfile.TemporaryDirectory(prefix="kitaeru-in-") as tmp:
        target = Path(tmp) / Path(p.rstrip("/")).name
        fs.get(p, str(target), recursive=fs.isdir(p))
        yield target


def upload_dir(local_dir: str | os.PathLike, url: str) -> None:
    """Copy a local folder's contents to a remote URL (objects appear only once complete)."""
    fs, p = filesystem(url)
    local_dir = Path(local_dir)
    for f in sorted(local_dir.rglob("*")):
        if f.is_file():
            rel = f.relative_to(local_dir).as_posix()
            fs.put_file(str(f), f"{p.rstrip('/')}/{rel}")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is writable, with a one-line error otherwise."""
    local = Path(path)
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KitaeruError(f"{local}: cannot create output folder ({exc.strerror or exc})") from exc
    if not local.is_dir():
        raise KitaeruError(f"{local}: exists and is not a folder")
    if not os.access(local, os.W_OK | os.X_OK):
        raise KitaeruError(f"{local}: output folder is not writable")
    return local


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Use it for libraries that write a file themselves (``torch.save``, ``faiss.write_index``,
    ``pq.write_table``): a crash mid-write leaves ``target`` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:  # a full disk names the file it was writing (a failed write() names none)
        from kitaeru.core.errors import disk_error

        mapped = disk_error(exc, target)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()  # read once: os.umask() is process-wide and racy if called from threads


def _umask() -> int:
    return _UMASK


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


class BackgroundWriter:
    """Atomic text writes on a background thread, the newest content of each file winning.

    For evidence rewritten while training runs (``results.csv``, the ``training_result.json``
    heartbeat): the rename of a whole-file rewrite can wait tens of milliseconds on the file system's
    journal right after a checkpoint was saved (and far longer on network storage), which would stall
    the training loop. A version not yet written when a newer one comes is dropped; one file's
    versions land in order. :meth:`flush` waits until everything submitted is on disk and raises the
    first error a write met (which :meth:`submit` also raises, so a full disk still stops the run).
    The thread is not a daemon: the interpreter waits for a write in progress before it exits.
    """

    def __init__(self) -> None:
        import threading

        self._pending: dict[Path, str] = {}
        self._writing = False
        self._thread = None
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def submit(self, target: str | os.PathLike, text: str) -> None:
        import threading

        with self._cond:
            self._raise_error()
            self._pending[Path(target)] = text
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="evidence-writer")
                self._thread.start()

    def flush(self) -> None:
        with self._cond:
            while self._pending or self._writing:
                self._cond.wait()
            self._raise_error()

    def _drain(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None  # under the lock: the next submit starts a new thread
                    self._cond.notify_all()
                    return
                target = next(iter(self._pending))
                text = self._pending.pop(target)
                self._writing = True
            try:
                atomic_write_text(target, text)
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that submits or flushes
                with self._cond:
                    self._error = self._error or exc
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def json_text(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as the JSON text kitaeru writes (UTF-8 kept, paths and arrays as plain values)."""
    return json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default) + "\n"


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(target, json_text(obj, indent))


def _json_default(obj: Any):
    """JSON for the values run evidence commonly holds: paths, numpy scalars/arrays, tensors."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and torch tensors
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, with a one-line error naming the file and the position of a syntax error."""
    with open_input(path, "rb") as fh:
        raw = fh.read()
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a (local or remote) file to a local destination atomically."""
    with atomic_path(dst) as tmp:
        with open_input(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return Path(dst)


# Kernel file systems: nothing there is an output, and a write to them fails only at the end of a job.
_KERNEL_ROOTS = (Path("/proc"), Path("/sys"))


def check_output_path(path: str | os.PathLike | None, *, setting: str, kind: str = "file",
                      must_not_exist: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: its parent is a file, a folder on
    the way is not writable (or on a read-only file system), it lies under /proc or /sys, a file is
    named where a folder is (or the reverse), or it exists when it must not. One line naming
    ``setting`` (the flag) and the path. A URL is checked by :func:`check_remote_output`.

    Writability is tried, not asked: a probe file is created in the nearest existing folder and
    removed again, because ``os.access`` says yes to root whatever the permissions and file system.
    """
    if path is None or str(path) == "":
        return
    if is_remote(path):
        check_remote_output(str(path), setting=setting, kind=kind)
        return
    target = Path(_strip_file_scheme(path))
    label = f"{setting} {target}"
    for place in {Path(os.path.abspath(target)), Path(os.path.realpath(target))}:
        kernel = next((k for k in _KERNEL_ROOTS if place == k or k in place.parents), None)
        if kernel is not None:
            raise KitaeruError(f"{label}: {kernel} is a kernel file system, not a place for outputs")
    if target.exists():
        if must_not_exist:
            raise KitaeruError(f"{label}: already exists (choose another path or remove it)")
        if kind == "file" and target.is_dir():
            raise KitaeruError(f"{label}: is a folder, not a file")
        if kind == "dir" and not target.is_dir():
            raise KitaeruError(f"{label}: exists and is not a folder")
        _probe_writable(target if target.is_dir() else target.parent, label)
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KitaeruError(f"{label}: {ancestor} is a file, not a folder")
    _probe_writable(ancestor, label)


def _probe_writable(folder: Path, label: str) -> None:
    """Create and remove a probe file in ``folder``; a one-line refusal naming ``label`` if it fails."""
    import errno

    try:
        fd, probe = tempfile.mkstemp(prefix=".kitaeru-probe-", dir=folder)
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise KitaeruError(f"{label}: {folder} is not writable ({reason})") from None
    os.close(fd)
    os.unlink(probe)


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
