"""Saving an index's three files (``X.faiss``, ``X.index.parquet``, ``X.index.json``) as one set.

The three files cannot be renamed in one step, so a save is a small journal: all new files are
written complete under temporary names, then ``X.index.commit`` (written atomically) lists the
renames; that file appearing is the moment the new set counts. The renames follow and the journal
goes. A save killed before the journal leaves the old set untouched (its temporaries are removed by
the save itself when it fails, or left as dot-files by a kill); one killed after it is finished by
the next load or save (:func:`finish_pending_save`), so a kill -9 at any moment leaves the old index
or the new one usable, never "N vectors but M metadata rows".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from kitaeru.core.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa


def journal_path(index_path: str | os.PathLike) -> Path:
    p = Path(index_path)
    return Path(f"{p.with_suffix('') if p.suffix == '.faiss' else p}.index.commit")


def _disk_full(exc: BaseException) -> BaseException:
    """Faiss reports a failed write as RuntimeError with strerror inside: the OSError it stands for."""
    import errno

    if isinstance(exc, RuntimeError) and os.strerror(errno.ENOSPC) in str(exc):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return exc


def _sync(path: Path) -> None:
    # on disk before the journal names it: after a power cut the journal never points at a hole
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_index_set(target: Path, index: Any, metadata: "pa.Table", info: Mapping[str, Any]) -> None:
    """The journalled save of the three files (``X.faiss`` + sidecars) of ``index``."""
    import uuid

    import pyarrow.parquet as pq

    from kitaeru.core.errors import disk_error
    from kitaeru.core.storage import atomic_write_json, json_text
    from kitaeru.index.faiss_factory import _faiss, sidecar_paths

    faiss_path, meta_path, json_path = sidecar_paths(target)
    faiss_path.parent.mkdir(parents=True, exist_ok=True)
    finish_pending_save(faiss_path)  # an earlier save's journal first: it is older than this one
    _remove_stray_temporaries(faiss_path, meta_path, json_path)
    token = uuid.uuid4().hex[:12]
    temps = {final: final.with_name(f".{final.name}.{token}.tmp") for final in (meta_path, faiss_path, json_path)}
    writers = ((meta_path, lambda tmp: pq.write_table(metadata, tmp)),
               (faiss_path, lambda tmp: _faiss().write_index(index, str(tmp))),
               (json_path, lambda tmp: tmp.write_text(json_text(dict(info)), encoding="utf-8")))
    try:
        for final, write in writers:
            current = final
            write(temps[final])
            _sync(temps[final])
        current = journal_path(faiss_path)
        atomic_write_json(current, {"renames": [[temps[f].name, f.name] for f, _ in writers]})
    except BaseException as exc:
        if journal_path(faiss_path).is_file():  # stopped just after the commit point: the new set counts
            raise
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        mapped = disk_error(_disk_full(exc), current)
        if mapped is not None:
            raise mapped from exc
        raise
    finish_pending_save(faiss_path)


def _remove_stray_temporaries(*finals: Path) -> None:
    """Temporaries of a save killed before its journal (no journal names them): never part of a set."""
    for final in finals:
        for stray in final.parent.glob(f".{final.name}.*.tmp"):
            stray.unlink(missing_ok=True)


def finish_pending_save(index_path: str | os.PathLike) -> bool:
    """Complete the renames of a save that was stopped after its journal was written (idempotent);
    True when there was one."""
    journal = journal_path(index_path)
    if not journal.is_file():
        return False
    try:
        renames = json.loads(journal.read_text(encoding="utf-8"))["renames"]
        for tmp_name, final_name in renames:
            tmp = journal.with_name(tmp_name)
            if tmp.exists():
                os.replace(tmp, journal.with_name(final_name))
        journal.unlink()
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{journal}: not a readable record of an index save ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{journal}: an interrupted save of this index cannot be completed here "
                        f"({exc.strerror or exc}); run the command again where the folder is writable") from exc
    return True
