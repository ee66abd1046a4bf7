"""docker/compose.yaml: every service builds the shipped Dockerfile and runs a real kitaeru command.

No Docker engine runs on the build machines, so the file is checked as data: it parses, the build
points at the repository's Dockerfile, and each kitaeru service's sub-command exists and answers
``--help`` through the real CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_build_points_at_the_dockerfile(compose):
    build = compose["x-kitaeru"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    assert compose["x-kitaeru"]["ipc"] == "host"


def test_every_kitaeru_service_runs_a_real_command(compose, cli):
    from kitaeru.cli import COMMANDS

    kitaeru_services = {name: s for name, s in compose["services"].items() if "kitaeru" in s["entrypoint"]}
    assert {"detect", "embed", "serve", "docclass", "multimodal", "index"} <= set(kitaeru_services)
    for name, service in kitaeru_services.items():
        assert service["entrypoint"][:2] == ["/bin/bash", "/entrypoint.sh"]
        sub = service["entrypoint"][service["entrypoint"].index("kitaeru") + 1]
        assert sub in COMMANDS, name
        assert cli(sub, "--help").exit_code == 0, name
    assert "--host" in compose["services"]["serve"]["command"]  # reachable from outside the container
