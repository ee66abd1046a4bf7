"""docker/ scripts without a Docker engine: syntax, shellcheck, the entrypoint's user handling and the
``docker run`` lines of train.sh / to_onnx.sh, with fake system tools first on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from guards import HANG_GUARD_S

DOCKER = Path(__file__).resolve().parents[1] / "docker"
SCRIPTS = ("entrypoint.sh", "train.sh", "to_onnx.sh")

FAKE_GETENT = """#!/bin/bash
# getent DB ID: print the line of $FAKE_GROUP / $FAKE_PASSWD whose third field is ID.
var="FAKE_${1^^}"
printf '%s\\n' "${!var:-}" | awk -F: -v id="$2" '$3 == id { print; found = 1 } END { exit !found }'
"""
FAKE_LOGGER = """#!/bin/bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
"""
FAKE_GOSU = """#!/bin/bash
echo "gosu $* HOME=$HOME" >> "$FAKE_LOG"
"""
FAKE_DOCKER = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG"
"""


@pytest.fixture
def fake_bin(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in (("getent", FAKE_GETENT), ("groupadd", FAKE_LOGGER), ("useradd", FAKE_LOGGER), ("gosu", FAKE_GOSU), ("docker", FAKE_DOCKER)):
        (folder / name).write_text(body)
        (folder / name).chmod(0o755)
    return folder


def run_script(script: str, *args: str, fake_bin: Path, env: dict | None = None, cwd: Path | None = None):
    log = fake_bin.parent / "calls.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("USER_ID", "GROUP_ID", "DATA_DIR", "OUTPUT_DIR", "IPC_MODE", "CPUSET")}
    full_env = {**base, "PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_LOG": str(log), **(env or {})}
    proc = subprocess.run(["bash", str(DOCKER / script), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=HANG_GUARD_S)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(DOCKER / script)], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_is_clean():
    proc = subprocess.run(["shellcheck", *[str(DOCKER / s) for s in SCRIPTS]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_dockerfile_uses_gosu_and_the_entrypoint():
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM ${BASE_IMAGE}" in text and "install -y --no-install-recommends gosu" in text
    assert 'ENTRYPOINT ["/bin/bash", "/entrypoint.sh"]' in text and "COPY docker/entrypoint.sh /entrypoint.sh" in text
    assert 'pip install -c /tmp/constraints-base.txt ".[all]"' in text  # the lock, less the base image's CUDA stack


def test_entrypoint_without_ids_runs_the_command_directly(fake_bin):
    proc, calls = run_script("entrypoint.sh", "echo", "hello", fake_bin=fake_bin)
    assert proc.returncode == 0 and proc.stdout.strip() == "hello" and calls == []


def test_entrypoint_creates_group_and_user(fake_bin):
    proc, calls = run_script("entrypoint.sh", "kitaeru", "--version", fake_bin=fake_bin, env={"USER_ID": "1234", "GROUP_ID": "2345"})
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        "groupadd --gid 2345 kitaeru",
        "useradd --uid 1234 --gid 2345 --create-home --home-dir /home/kitaeru --shell /bin/bash kitaeru",
        "gosu 1234:2345 kitaeru --version HOME=/home/kitaeru",
    ]


def test_entrypoint_reuses_an_existing_group_and_user(fake_bin):
    env = {"USER_ID": "1234", "GROUP_ID": "2345", "FAKE_GROUP": "staff:x:2345:", "FAKE_PASSWD": "bob:x:1234:2345::/home/bob:/bin/bash"}
    proc, calls = run_script("entrypoint.sh", "id", fake_bin=fake_bin, env=env)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["gosu 1234:2345 id HOME=/home/bob"]
    env = {"USER_ID": "1234", "GROUP_ID": "2345", "FAKE_GROUP": "staff:x:2345:", "USER_NAME": "trainer"}
    proc, calls = run_script("entrypoint.sh", "id", fake_bin=fake_bin, env=env)
    assert calls == ["useradd --uid 1234 --gid 2345 --create-home --home-dir /home/trainer --shell /bin/bash trainer",
                     "gosu 1234:2345 id HOME=/home/trainer"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"USER_ID": "abc", "GROUP_ID": "1"}, "USER_ID must be a number"),
        ({"USER_ID": "1", "GROUP_ID": "-3"}, "GROUP_ID must be a number"),
        ({"USER_ID": "1000"}, "give both USER_ID and GROUP_ID"),
    ],
)
def test_entrypoint_rejects_bad_ids(fake_bin, env, message):
    proc, calls = run_script("entrypoint.sh", "true", fake_bin=fake_bin, env=env)
    assert proc.returncode == 2 and message in proc.stderr and calls == []


def test_entrypoint_root_ids_run_as_root(fake_bin):
    proc, calls = run_script("entrypoint.sh", "echo", "root", fake_bin=fake_bin, env={"USER_ID": "0", "GROUP_ID": "0"})
    assert proc.returncode == 0 and proc.stdout.strip() == "root" and calls == []


def test_train_script_runs_the_seed_equivalent(fake_bin, tmp_path):
    data = tmp_path / "templates"
    data.mkdir()
    proc, args = run_script("train.sh", "lcnet050_cosface_96", str(data), "--epochs", "3", fake_bin=fake_bin, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert args[:2] == ["run", "--rm"] and "--gpus" in args and args[args.index("--gpus") + 1] == "all"
    assert "--ipc=host" in args and "--net=host" in args and not any(a.startswith("--shm-size") for a in args)
    assert f"USER_ID={os.getuid()}" in args and f"GROUP_ID={os.getgid()}" in args
    assert f"{data}:/data/templates:ro" in args and f"{tmp_path / 'runs'}:/data/runs" in args
    assert args[-12:] == ["kitaeru-train:latest", "kitaeru", "docclass", "train", "--cfg-name", "lcnet050_cosface_96",
                          "--data-dir", "/data/templates", "--output-dir", "/data/runs", "--epochs", "3"]


def test_train_script_settings_from_the_environment(fake_bin, tmp_path):
    data = tmp_path / "pool"
    data.mkdir()
    env = {"DATA_DIR": str(data), "IPC_MODE": "private", "SHM_SIZE": "32g", "CPUSET": "0-7", "IMAGE": "me/kitaeru:1", "OUTPUT_DIR": str(tmp_path / "out")}
    proc, args = run_script("train.sh", "lcnet050_arcface_128", fake_bin=fake_bin, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--ipc=private" in args and "--shm-size=32g" in args and "--cpuset-cpus=0-7" in args and "me/kitaeru:1" in args
    assert f"{data}:/data/templates:ro" in args and (tmp_path / "out").is_dir()
    proc, _ = run_script("train.sh", "lcnet050_cosface_96", fake_bin=fake_bin)
    assert proc.returncode != 0 and "DATA_DIR" in proc.stderr
    proc, _ = run_script("train.sh", "lcnet050_cosface_96", str(tmp_path / "missing"), fake_bin=fake_bin)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_to_onnx_script(fake_bin, tmp_path):
    ckpt = tmp_path / "run" / "weights" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    proc, args = run_script("to_onnx.sh", "lcnet050_cosface_96", str(ckpt), str(tmp_path / "export" / "model.onnx"), fake_bin=fake_bin)
    assert proc.returncode == 0, proc.stderr
    assert "--gpus" not in args and f"{ckpt.parent}:/data/checkpoint:ro" in args and f"{tmp_path / 'export'}:/data/out" in args
    assert args[-10:] == ["kitaeru-train:latest", "kitaeru", "docclass", "export-onnx", "--cfg-name", "lcnet050_cosface_96",
                          "--checkpoint", "/data/checkpoint/best.ckpt", "--out", "/data/out/model.onnx"]
    proc, _ = run_script("to_onnx.sh", "lcnet050_cosface_96", str(tmp_path / "nope.ckpt"), fake_bin=fake_bin)
    assert proc.returncode == 2 and "is not a file" in proc.stderr
