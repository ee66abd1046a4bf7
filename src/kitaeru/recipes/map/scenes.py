"""Map points from a multimodal training output: one point per scene of its ``vector_db.json``.

Either of the DB's embeddings can be mapped (``modality``: the image side by default, or the scenes'
description embeddings). Thumbnails are read from the data folder the DB records (or
``data_dir``), where the scenes' relative ``image_path`` values point.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from kitaeru.core.errors import DataError
from kitaeru.data.vector_db import VECTOR_DB_FILE, load_vector_db

from .points import MapPoints, flatten_metadata, sample_rows

HIDDEN_COLUMNS = ("umap_coords", "image_url")


def vector_db_path(output_dir: str) -> str:
    from kitaeru.core.storage import join

    return join(output_dir, VECTOR_DB_FILE)


def load_scene_points(
    output_dir: str,
    *,
    modality: str,
    data_dir: str | None,
    wanted_for: Callable[[int], int | None],
    random_state: int | None,
) -> MapPoints:
    """The scenes of ``output_dir``'s vector DB; ``wanted_for(total)`` says how many to sample."""
    from kitaeru.core.storage import exists, is_remote, join

    path = vector_db_path(output_dir)
    if not exists(path):
        raise DataError(f"{path}: not found; is '{output_dir}' the --output-dir of 'kitaeru multimodal train'?")
    db = load_vector_db(path)
    total = len(db)
    rows = sample_rows(total, wanted_for(total), random_state)
    picked = list(range(total)) if rows is None else rows.tolist()
    matrix = db.image_embeddings if modality == "image" else db.text_embeddings
    vectors = matrix if rows is None else matrix[rows]
    folder = data_dir or db.extra.get("data_dir")
    records = [db.scenes[i] for i in picked]
    flat = [flatten_metadata(r) for r in records]
    names = [n for n in dict.fromkeys(k for f in flat for k in f) if n not in HIDDEN_COLUMNS]
    columns = {n: [f.get(n) for f in flat] for n in names}
    labels = []
    for r in records:
        text = str(r.get("description") or "")
        labels.append(f"{r.get('scene_id')}: {text}" if text else str(r.get("scene_id")))
    images = []
    for r in records:
        stored = str(r.get("image_path") or "").replace("\\", "/")
        if not stored:
            images.append(None)
        elif is_remote(stored) or os.path.isabs(stored) or not folder:
            images.append(stored)
        else:
            images.append(join(str(folder), stored))
    saved = [r.get("umap_coords") for r in records]
    coords = None
    if saved and all(isinstance(xy, (list, tuple)) and len(xy) == 2 for xy in saved):
        coords = np.asarray(saved, dtype=np.float64)
    return MapPoints(vectors=vectors, ids=[str(r.get("scene_id")) for r in records], labels=labels, images=images,
                     columns=columns, total=total, source=path, coords=coords)
