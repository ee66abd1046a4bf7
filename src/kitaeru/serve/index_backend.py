"""Search over a Faiss index built by ``kitaeru embed`` + ``kitaeru index build``.

The query encoder is re-created from what the index records (model, weights, pooling, image
size, resize mode), so queries land in the same space as the indexed vectors. Image queries work
with any model; text queries need a CLIP-family model (OpenCLIP), whose text tower shares the
image space.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from kitaeru.core.console import info as say
from kitaeru.core.errors import ConfigError

from .backend import SearchBackend, UnsupportedQuery
from .safe_files import ImageRoot, embed_image_folder, indexed_folder


class IndexBackend(SearchBackend):
    """An index (vectors + metadata table) and the image encoder that made its vectors."""

    kind = "index"
    search_targets = ("index",)

    def __init__(self, index: Any, encoder: Any, image_root: ImageRoot, *, source: str = ""):
        super().__init__(image_root)
        self.index = index
        self.encoder = encoder
        self.source = source
        self.query_image_size = int(encoder.image_size)
        meta = index.metadata
        self._paths: list[str | None] = meta.column("path").to_pylist() if "path" in meta.column_names else [None] * len(meta)

    @classmethod
    def load(
        cls,
        index_path: str | os.PathLike,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        device: str = "cpu",
        data_dir: str | os.PathLike | None = None,
    ) -> "IndexBackend":
        """Load the index and create its query encoder once (``model``/``pretrained`` override the
        recorded ones; a different architecture than the index was built with is refused)."""
        from kitaeru.index.faiss_index import load_index
        from kitaeru.index.queries import create_encoder
        from kitaeru.models.image_encoders import parse_name

        index = load_index(index_path)
        info = index.info
        name = model or info.model
        if not name:
            raise ConfigError(f"--model: {index_path} does not record the model that made its vectors; name it with --model")
        if model and info.model and parse_name(model)[:2] != parse_name(info.model)[:2]:
            raise ConfigError(
                f"--model {model}: {index_path} was built with '{info.model}'; queries from another model "
                "would land in a different space"
            )
        # Same creation path as ``kitaeru embed``: random-init encoders are seeded there and here,
        # so even a ``--pretrained none`` index is searched in its own space.
        encoder = create_encoder(
            name,
            pretrained=pretrained or info.pretrained or "default",
            pool=info.pool,
            image_size=info.image_size,
            resize=info.resize,
            device=device,
        )
        if encoder.dim != index.dim:
            raise ConfigError(f"--model {name}: makes {encoder.dim}-d vectors but {index_path} holds {index.dim}-d vectors")
        if data_dir is None:
            # The folders ``kitaeru embed`` was pointed at, never a folder derived from the stored
            # paths: those may already lead elsewhere (resolved symlinks, ``..``).
            data_dir = indexed_folder(embed_image_folder(source) for source in info.embeddings)
        root = ImageRoot(data_dir)
        if root.root is None:
            say("images of results are not served (the index records no local image folder; give one with --data-dir)")
        else:
            say(f"serving result images from {root.root} only")
        return cls(index, encoder, root, source=str(index_path))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def supports_text(self) -> bool:
        return bool(self.encoder.supports_text)

    def describe(self) -> dict[str, Any]:
        info = self.index.info
        return {
            "index": Path(self.source).name if "://" not in str(self.source) else self.source,
            "index_type": info.type,
            "metric": info.metric,
            "score": "inner product (cosine for normalised vectors; higher is closer)" if info.metric == "ip"
            else "squared L2 distance (lower is closer)",
            "model": self.encoder.name,
            "pretrained": self.encoder.pretrained,
            "pool": self.encoder.pool,
            "dim": int(self.index.dim),
            "data_dir": Path(str(self.image_root.root)).name if self.image_root.root else None,  # a name, not a server path
        }

    def search_text(self, query: str, top_k: int, target: str) -> list[dict[str, Any]]:
        if not self.supports_text:
            raise UnsupportedQuery(
                f"model '{self.encoder.name}' has no text tower: text queries need a CLIP-family model (open_clip:...)"
            )
        return self._nearest(self.encode(lambda: self.encoder.encode_text([query])), top_k)

    def search_image(self, image: Image.Image, top_k: int, target: str) -> list[dict[str, Any]]:
        return self._nearest(self.encode(lambda: self.encoder.encode_images([image])), top_k)

    def _nearest(self, vector, top_k: int) -> list[dict[str, Any]]:
        scores, ids = self.index.search(vector, top_k)
        found = [(float(s), int(i)) for s, i in zip(scores[0].tolist(), ids[0].tolist()) if i >= 0]
        rows = self.index.rows([i for _, i in found])
        results = []
        for rank, ((score, item), row) in enumerate(zip(found, rows), 1):
            row = {k: v for k, v in row.items() if k != "id"}
            results.append({
                "rank": rank,
                "id": item,
                "score": score,
                **row,
                "image_url": f"/image/{item}" if self._servable(row.get("path")) else None,
            })
        return results

    def _servable(self, path: str | None) -> bool:
        return bool(path) and self.image_root.root is not None and "://" not in str(path)

    def stored_image_path(self, item_id: str) -> str:
        try:
            row = int(item_id)
        except ValueError:
            raise KeyError(item_id) from None
        if not 0 <= row < len(self._paths) or not self._paths[row]:
            raise KeyError(item_id)
        return str(self._paths[row])

