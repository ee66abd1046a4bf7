"""Task-agnostic foundation shared by every recipe: errors, device and tier, resource planning and
out-of-memory recovery, config loading, run evidence, storage and atomic writes.

Nothing here knows about a particular model or dataset; heavy libraries (torch, tensorboard,
fsspec back-ends) are imported inside the functions that need them so that importing
``kitaeru.core`` stays cheap.
"""
