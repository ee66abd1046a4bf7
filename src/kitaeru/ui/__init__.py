"""The Streamlit dashboard of ``kitaeru ui``: read-only over run folders, except where it starts a run.

* ``runs``: finds every kitaeru run under the given roots and reads its evidence (status, epochs,
  key metric, resolved config, resource plan, OOM recoveries, skipped inputs, files, tracker links),
  safely: a missing or corrupt file is a message, and no file outside the roots is ever read.
* ``forms``: the start form's fields, derived from the recipe's schema; run-location options refused.
* ``jobs``: starts a training as ``kitaeru <recipe> train ...``, tails its log, stops it with SIGINT,
  tells its final state and resumes it.
* ``curves``: x axes, smoothing, y ranges and config differences behind the curves.
* ``maps``: the scene map of a multimodal output or a ``kitaeru map --output-json`` document, selections
  as rows, and the search backends of ``kitaeru serve`` behind it.
* ``app`` (the Runs page and the sidebar; ``streamlit run`` executes it), ``page_*`` and ``widgets``:
  the pages.

Only ``app``, ``page_*`` and ``widgets`` import streamlit, so the readers are usable (and tested)
without it.
"""


def __getattr__(name: str):
    """``kitaeru.ui.<mode>(...)``: this package shares its name with the job, so the job's modes
    (the Python API, :mod:`kitaeru.api`) are reached through it too; loaded on first use."""
    from kitaeru.api import job_attribute

    return job_attribute("ui", name)
