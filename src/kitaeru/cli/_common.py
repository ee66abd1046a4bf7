"""Options and helpers shared by the recipe sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from pydantic import BaseModel

from kitaeru.core.config import load_config
from kitaeru.core.device import DEVICE_CHOICES

C = TypeVar("C", bound=BaseModel)

DEVICE_HELP = f"Device: {'|'.join(DEVICE_CHOICES)} (auto = cuda, then mps, then cpu). Also cuda:N."

CfgNameOption = typer.Option(None, "--cfg-name", help="Name of a preset shipped in kitaeru/configs/<recipe>/.")
ConfigFileOption = typer.Option(None, "--config", help="A YAML config file (same keys as the presets).")


def build_config(schema: type[C], recipe: str, cfg_name: Optional[str], config_file: Optional[Path], **flags: Any) -> C:
    """Defaults < preset/config file < the flags that were actually given (``None`` = not given)."""
    return load_config(schema, recipe, cfg_name=cfg_name, config_file=config_file, overrides=flags)
