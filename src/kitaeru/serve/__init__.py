"""The HTTP search API."""


def __getattr__(name: str):
    """``kitaeru.serve.<mode>(...)``: this package shares its name with the job, so the job's modes
    (the Python API, :mod:`kitaeru.api`) are reached through it too; loaded on first use."""
    from kitaeru.api import job_attribute

    return job_attribute("serve", name)
