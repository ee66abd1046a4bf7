"""kitaeru (鍛える): train, fine-tune, embed, index, search and export vision and multimodal models.

Every command is also a Python function with the same options (see :mod:`kitaeru.api`)::

    import kitaeru
    run = kitaeru.multimodal.train(use_sample_data=True, epochs=2, output_dir="runs/q")
    kitaeru.detect.predict(model="best.pt", source="images/")

Importing kitaeru is light: a job's code (and torch, Ultralytics, diffusers ...) loads when called.
"""

__version__ = "0.1.0"

_ERRORS = ("KitaeruError", "ConfigError", "DataError", "DeviceError", "OutputError", "RunInterrupted")


def __getattr__(name: str):
    """``kitaeru.<job>`` (a :class:`kitaeru.api.Job`) and the error classes, loaded on first use."""
    if name in _ERRORS:
        from kitaeru.core import errors

        return getattr(errors, name)
    from kitaeru.recipes.catalog import JOBS

    if name in JOBS:
        from kitaeru.api import job

        return job(name)
    raise AttributeError(f"module 'kitaeru' has no attribute '{name}'")


def __dir__() -> list[str]:
    from kitaeru.recipes.catalog import JOBS

    return sorted([*globals(), *_ERRORS, *JOBS])
