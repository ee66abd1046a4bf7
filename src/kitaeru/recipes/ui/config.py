"""The settings of ``kitaeru ui`` (its own module so that the launcher and the recipe share them)."""

from __future__ import annotations

from kitaeru.core.config import RecipeConfig, setting

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class UiConfig(RecipeConfig):
    """Which run folders to show and where to listen."""

    runs: list[str] = setting(default_factory=lambda: ["runs"], description="A folder of kitaeru runs to show "
                              "(repeatable; searched 4 levels deep). Only files inside these folders are served.",
                              metavar="DIR")
    host: str = setting("127.0.0.1", "Address to listen on (127.0.0.1 = this machine only; another address "
                        "makes the dashboard, which can start trainings, reachable from other machines).")
    port: int = setting(8501, "TCP port (0 = any free port).", ge=0, le=65535)
    ready_timeout: float = setting(60.0, "Seconds to wait for Streamlit to answer before giving up.", gt=0)
