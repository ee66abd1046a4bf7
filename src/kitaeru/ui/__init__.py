"""The Streamlit dashboard of ``kitaeru ui``: read-only over run folders, except where it starts a run.

* ``runs``: finds every kitaeru run under the given roots and reads its evidence (status, epochs,
  key metric, resolved config, resource plan, OOM recoveries, skipped inputs, files), safely:
  a missing or corrupt file is a message, and no file outside the roots is ever read.
* ``jobs``: starts a training as ``python -m kitaeru ...``, tails its log, stops it with SIGINT.
* ``maps``: the scene map of a multimodal output or a ``kitaeru map --json-out`` document, and the
  search backends of ``kitaeru serve`` behind it.
* ``app``: the pages (Runs, Training, Map & search, Floor plans); ``streamlit run`` executes it.

Nothing here imports streamlit except ``app``, so the readers are usable (and tested) without it.
"""
