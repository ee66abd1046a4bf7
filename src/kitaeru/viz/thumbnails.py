"""Small inline thumbnails (``data:image/jpeg;base64,...``) for the hover of the HTML map.

Images are decoded in parallel threads (PIL releases the GIL while decoding) and JPEGs at reduced
scale (``draft``), so thousands of 1600×900 frames become 64 px thumbnails in seconds. A missing or
unreadable image simply gets no thumbnail; the map is still drawn.
"""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence


def thumbnail_data_uri(source: str, size: int = 64) -> str | None:
    """A JPEG thumbnail of ``source`` (longest side ``size``) as a data URI, or ``None`` if unreadable."""
    from kitaeru.core.errors import KitaeruError
    from kitaeru.data.images import open_image

    try:
        image = open_image(source, min_side=size)
    except KitaeruError:
        return None
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(sources: Sequence[str | None], size: int = 64, limit: int | None = None,
               workers: int | None = None) -> list[str | None]:
    """Data URIs for ``sources`` in order (``None`` where there is no image or beyond ``limit``)."""
    count = len(sources) if limit is None else min(limit, len(sources))
    wanted = [(i, s) for i, s in enumerate(sources[:count]) if s]
    out: list[str | None] = [None] * len(sources)
    if not wanted:
        return out
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (i, _), uri in zip(wanted, pool.map(lambda item: thumbnail_data_uri(item[1], size), wanted)):
            out[i] = uri
    return out
