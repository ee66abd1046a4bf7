"""Search over a multimodal training output: its ``vector_db.json`` and its trained query encoders.

Text and image queries are encoded by the frozen encoders plus the trained projectors
(:func:`kitaeru.models.scene_query.load_query_encoder`), into the space of the DB's embeddings.
A query is compared with (``search_in``):

* ``image`` (default): the scenes' image-side embeddings — what training teaches both text and
  image queries to match;
* ``text``: the embeddings of the scenes' own descriptions;
* ``both``: the better of the two for each scene (what the original backend did by searching its
  flat list of text and image vectors together).

Both matrices are L2-normalised once at start-up, so a request is one matrix-vector product and a
top-k selection over the scenes. Both run in torch, on the thread pool that has just encoded the
query: a NumPy (OpenBLAS) product right after a torch forward pass competes with torch's still
spinning OpenMP threads and was 5-10× slower on a busy CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kitaeru.core.console import info as say
from kitaeru.core.errors import ConfigError, DataError

from .backend import SearchBackend, normalize_rows
from .safe_files import ImageRoot


class MultimodalBackend(SearchBackend):
    """Scenes with text and image embeddings, and the encoders that embed new queries like them."""

    kind = "multimodal"
    search_targets = ("image", "text", "both")

    def __init__(self, db: Any, encoder: Any, image_root: ImageRoot, *, db_path: Path, versioned_on_disk: bool):
        super().__init__(image_root)
        self.db = db
        self.encoder = encoder
        self.db_path = db_path
        self.versioned_on_disk = versioned_on_disk
        self.query_image_size = int(encoder.image_encoder.image_size)
        import torch

        self.image_matrix = torch.from_numpy(normalize_rows(db.image_embeddings))
        self.text_matrix = torch.from_numpy(normalize_rows(db.text_embeddings))
        self.records = [{k: v for k, v in scene.items() if k not in ("text_embedding", "image_embedding")}
                        for scene in db.scenes]
        self.rows_by_scene_id = {str(r.get("scene_id")): i for i, r in enumerate(self.records)}
        self._converted: bytes | None = None

    @classmethod
    def load(cls, output_dir: str | os.PathLike, *, device: str = "cpu",
             data_dir: str | os.PathLike | None = None) -> "MultimodalBackend":
        """Read the vector DB and load the query encoders once."""
        from kitaeru.models.scene_query import load_query_encoder
        from kitaeru.data.vector_db import VECTOR_DB_FILE, load_vector_db

        root = Path(output_dir)
        if not root.is_dir():
            raise DataError(f"--output-dir {output_dir}: not found or not a folder")
        db_path = root / VECTOR_DB_FILE
        if not db_path.is_file():
            raise DataError(f"{db_path}: not found; is '{output_dir}' the --output-dir of 'kitaeru multimodal train'?")
        db = load_vector_db(str(db_path))
        encoder = load_query_encoder(root, device)
        for what, matrix in (("image", db.image_embeddings), ("text", db.text_embeddings)):
            if matrix.shape[1] != encoder.embed_dim:
                raise ConfigError(
                    f"{db_path}: {what} embeddings are {matrix.shape[1]}-d but the query encoder of {output_dir} "
                    f"makes {encoder.embed_dim}-d vectors (DB and projectors from different runs?)"
                )
        folder = data_dir if data_dir is not None else db.extra.get("data_dir")
        image_root = ImageRoot(str(folder) if folder else None)
        if image_root.root is None:
            say("images of results are not served (the vector DB records no local data folder; give one with --data-dir)")
        else:
            say(f"serving scene images from {image_root.root} only")
        return cls(db, encoder, image_root, db_path=db_path, versioned_on_disk=db.version != "flat")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def supports_text(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        info = self.encoder.info
        return {
            # names, never absolute server paths: what is served is the client's business, where it lives is not
            "output_dir": self.db_path.parent.name,
            "vector_db_version": self.db.version,
            "score": "cosine similarity (higher is closer)",
            "text_encoder": info.get("text_encoder"),
            "image_encoder": info.get("image_encoder"),
            "dim": int(self.encoder.embed_dim),
            "data_dir": Path(str(self.image_root.root)).name if self.image_root.root else None,
        }

    def search_text(self, query: str, top_k: int, target: str) -> list[dict[str, Any]]:
        vector = self.encode(lambda: self.encoder.encode_text([query]))
        return self._nearest(vector[0], top_k, target)

    def search_image(self, image: Image.Image, top_k: int, target: str) -> list[dict[str, Any]]:
        vector = self.encode(lambda: self.encoder.encode_images([image]))
        return self._nearest(vector[0], top_k, target)

    def _nearest(self, query: np.ndarray, k: int, target: str) -> list[dict[str, Any]]:
        import torch

        q = torch.from_numpy(normalize_rows(query)[0])
        matched = None
        with torch.inference_mode():
            if target == "image":
                scores = self.image_matrix @ q
            elif target == "text":
                scores = self.text_matrix @ q
            else:
                by_image, by_text = self.image_matrix @ q, self.text_matrix @ q
                scores = torch.maximum(by_image, by_text)
                matched = by_image >= by_text
            best, rows = torch.topk(scores, min(k, scores.shape[0]))
        results = []
        for rank, (score, row) in enumerate(zip(best.tolist(), rows.tolist()), 1):
            record = self.records[row]
            hit = {"rank": rank, "id": row, "score": float(score), **record}
            if matched is not None:
                hit["matched"] = "image" if bool(matched[row]) else "text"
            hit["image_url"] = f"/image/{row}" if self.image_root.root is not None and record.get("image_path") else None
            results.append(hit)
        return results

    def stored_image_path(self, item_id: str) -> str:
        # A number is a result's row id (what image_url uses); anything else is a scene_id.
        row = int(item_id) if item_id.isdigit() else self.rows_by_scene_id.get(item_id)
        if row is None:
            raise KeyError(item_id)
        if not 0 <= row < len(self.records) or not self.records[row].get("image_path"):
            raise KeyError(item_id)
        return str(self.records[row]["image_path"])

    def vector_db_file(self) -> Path | None:
        return None  # always served through vector_db(): the file names absolute server paths

    def vector_db(self) -> bytes:
        """The versioned DB (a legacy flat list converted), with server paths reduced to folder names;
        built once, on first request."""
        if self._converted is None:
            text = json.dumps(self.db.to_dict(), ensure_ascii=False)
            for folder in {str(v) for v in (self.db.extra.get("data_dir"), self.image_root.root, self.db_path.parent) if v}:
                if "://" not in folder and Path(folder).is_absolute():
                    text = text.replace(json.dumps(folder)[1:-1], Path(folder).name)
            self._converted = text.encode("utf-8")
        return self._converted
