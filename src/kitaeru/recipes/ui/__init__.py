"""The dashboard: one Streamlit app over the run folders of every recipe (``kitaeru ui``).

The job, in order:

1. **Check** the run folders (``--runs DIR``, repeatable) exist, Streamlit is installed (extra
   ``[ui]``) and the address: 127.0.0.1 by default, another ``--host`` is served with a warning.
2. **Start** ``streamlit run kitaeru/ui/app.py`` as a subprocess on ``--host``/``--port`` (0 = any
   free port) with the folders in ``KITAERU_UI_RUNS``; print its URL once it answers.
3. **Serve** until Ctrl-C: pages Runs (status, epochs, key metric, config, resources, OOM recoveries,
   skipped inputs, files), Training (curves from results.csv, several runs overlaid; start and stop a
   training), Map & search (the UMAP map coloured by metadata, lasso selection, text/image search
   through ``kitaeru serve``'s backends) and Floor plans (validation images, generation with an adapter).

The dashboard reads only files inside the given folders (symlinks and ``..`` are resolved and
refused) plus the image folder a multimodal run records; it writes only the runs it starts.
Entry function: :func:`ui`. Light imports only here.
"""

from __future__ import annotations

import os
from typing import Any

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

from .config import UiConfig

__all__ = ["RECIPE", "UiConfig", "ui"]


def check(config: UiConfig) -> None:
    """Cheap checks before Streamlit starts: the folders exist and Streamlit is installed."""
    import importlib.util

    from kitaeru.core.errors import ConfigError

    for folder in config.runs:
        if "://" in folder:
            raise ConfigError(f"--runs {folder}: the dashboard reads local folders only")
        if not os.path.isdir(folder):
            raise ConfigError(f"--runs {folder}: no such folder (give the folder your runs are written to)")
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("kitaeru ui needs Streamlit: pip install 'kitaeru[ui]'")


def ui(config: UiConfig) -> dict[str, Any]:
    """Start the dashboard and serve until Ctrl-C; returns the URL and Streamlit's exit code."""
    check(config)
    from .launch import serve_dashboard

    return serve_dashboard(config)


def _summary(result: dict[str, Any]) -> None:
    from kitaeru.core.console import info

    info(f"kitaeru ui stopped (streamlit exit {result.get('exit_code')})")


RECIPE = Recipe(
    name="ui",
    help=JOBS["ui"],
    modes=[
        Mode(
            "ui", UiConfig, ui,
            "Start the dashboard on 127.0.0.1 and print its URL; Ctrl-C stops it.",
            examples=[
                "kitaeru ui --runs runs",
                "kitaeru ui --runs runs --runs /data/old-runs --port 8502",
                "kitaeru ui --runs runs --host 0.0.0.0 --port 0",
            ],
            summary=_summary, check=check,
        ),
    ],
)
