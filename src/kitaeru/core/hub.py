"""Offline by default when the model hub cannot be reached.

Hugging Face's libraries retry a hub that does not answer for about a minute (five retries with
back-off) before they look in the local cache, so on a machine without network a model name that
is not cached took half a minute or more to fail, and one that is cached waited just as long.
Before a command loads models, one TCP connection to the hub (a few seconds at most, usually
milliseconds) tells whether it is reachable; when it is not, ``HF_HUB_OFFLINE=1`` is set for this
process (and the processes it starts), so cached models load at once and missing ones fail at once
with the library's own "not in the local cache" answer.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def hub_address() -> tuple[str, int]:
    """Host and port of the hub (``HF_ENDPOINT`` when set, else huggingface.co)."""
    parts = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme != "http" else 80)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds."""
    try:
        with socket.create_connection(hub_address(), timeout=timeout):
            return True
    except OSError:
        return False


def offline_when_hub_unreachable() -> bool:
    """Set ``HF_HUB_OFFLINE=1`` when the hub cannot be reached; True when it did. Nothing is tried
    when the user already chose (an offline variable is set) or a proxy is configured (a direct
    connection says nothing about the proxy's way out)."""
    if any(os.environ.get(v) for v in (*OFFLINE_VARIABLES, *PROXY_VARIABLES)):
        return False
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    return True
