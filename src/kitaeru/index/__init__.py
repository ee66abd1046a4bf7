"""Vector index build / load / search, with its metadata table."""

from kitaeru.index.embeddings_io import read_embeddings  # noqa: E402,F401  (numpy/pyarrow only)
from kitaeru.index.faiss_index import VectorIndex, build_index, load_index  # noqa: E402,F401

__all__ = ["VectorIndex", "build_index", "load_index", "read_embeddings"]


def __getattr__(name: str):
    """``kitaeru.index.<mode>(...)``: this package shares its name with the job, so the job's modes
    (the Python API, :mod:`kitaeru.api`) are reached through it too; loaded on first use."""
    from kitaeru.api import job_attribute

    return job_attribute("index", name)
