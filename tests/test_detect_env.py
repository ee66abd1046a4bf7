"""detect: Ultralytics kept offline and private, LLRD groups, the TensorBoard server, key=value parsing."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from guards import guard



@pytest.fixture(scope="module")
def ultralytics_module():
    from kitaeru.recipes.detect.ultralytics_env import prepare_ultralytics

    return prepare_ultralytics(offline=True)


def test_settings_are_private_and_analytics_off(ultralytics_module):
    import ultralytics.utils as ul_utils
    from ultralytics.utils import SETTINGS, events

    from kitaeru.recipes.detect.ultralytics_env import private_dir, settings_file

    if os.environ.get("YOLO_CONFIG_DIR") != str(private_dir()):
        pytest.skip("YOLO_CONFIG_DIR was chosen by the environment; kitaeru leaves it alone")
    home = Path.home().resolve()
    settings = settings_file().resolve()
    assert settings.is_relative_to(private_dir().resolve())
    assert not settings.is_relative_to(home / ".config")
    assert SETTINGS["sync"] is False and events.events.enabled is False
    assert all(SETTINGS[k] is False for k in ("wandb", "mlflow", "comet", "clearml", "dvc", "raytune", "tensorboard"))
    assert Path(ul_utils.WEIGHTS_DIR).resolve().is_relative_to(private_dir().resolve())
    assert ul_utils.ONLINE is False  # YOLO_OFFLINE was set before the first import


def test_guard_refuses_downloads_and_supplies_a_local_font(ultralytics_module):
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads

    from kitaeru.recipes.detect.ultralytics_env import guarded

    original = downloads.safe_download
    with guarded(offline=True):
        # Our guard's own message: refused before any socket is opened, so there is no time-out to wait for.
        with pytest.raises(ConnectionError, match="offline"):
            downloads.attempt_download_asset("yolo26n.pt")
        font = checks.check_font("Arial.ttf")
        assert font is not None and Path(font).is_file()
    assert downloads.safe_download is original  # restored afterwards


def test_amp_check_is_skipped_offline_without_waiting(ultralytics_module, monkeypatch, capsys):
    """On CUDA, Ultralytics' AMP check loads yolo26n.pt; offline it must give up at once, keeping AMP on."""
    import torch
    import ultralytics.utils.checks as checks

    from kitaeru.recipes.detect.ultralytics_env import guarded

    class FakeCudaModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

    model = FakeCudaModel()
    monkeypatch.setattr(type(next(model.parameters())), "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA H100")
    with guarded(offline=True):
        assert checks.check_amp(model) is True  # AMP stays on, as Ultralytics does offline
    assert "checks skipped. Offline" in capsys.readouterr().err


def test_llrd_groups_follow_depth_from_the_head(ultralytics_module):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from kitaeru.recipes.detect.llrd import apply_llrd, layer_depths

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    weights = [p for n, p in model.named_parameters() if p.ndim > 1]
    biases = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([
        {"params": weights, "lr": 0.01, "weight_decay": 5e-4, "param_group": "weight"},
        {"params": biases, "lr": 0.01, "weight_decay": 0.0, "param_group": "bias"},
    ])
    groups = apply_llrd(optimizer, model, 0.9)
    depths = layer_depths(model)
    head = len(model.model) - 1
    assert depths[f"model.{head}.cv2.0.0.conv.weight"] == 0 and depths["model.0.conv.weight"] == head
    # Layers without parameters (upsample, concat) have no group; every other depth has one.
    assert {g["depth"] for g in groups} == set(depths.values()) and max(depths.values()) == head
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.01 * 0.9 ** group["depth"])
    assert optimizer.param_groups[0]["depth"] == 0 and optimizer.param_groups[0]["param_group"] == "weight"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    # The settings of the group each part came from are kept.
    assert {g["weight_decay"] for g in optimizer.param_groups if g["param_group"] == "bias"} == {0.0}
    with pytest.raises(ValueError):
        apply_llrd(optimizer, model, 0.0)


def test_tensorboard_server_starts_answers_and_stops(tmp_path):
    from kitaeru.recipes.detect.tensorboard_server import start_tensorboard

    server = start_tensorboard(tmp_path / "tb", 0, log_file=tmp_path / "tb.log")
    try:
        assert server.url and server.url.startswith("http://localhost:")
        assert server.wait_ready(guard()) and server.process is None  # TensorBoard itself starts on the first request
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=guard()) as response:
            assert response.status == 200, (tmp_path / "tb.log").read_text()
        assert server.process is not None and server.ready_after_seconds is not None
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_tensorboard_busy_port_is_reported(tmp_path):
    import socket

    from kitaeru.recipes.detect.tensorboard_server import start_tensorboard

    import threading

    with socket.socket() as sock:  # another program on the port: it answers, but not as TensorBoard
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]

        def answer_garbage():
            conn, _ = sock.accept()
            conn.sendall(b"hello\n")
            conn.close()

        threading.Thread(target=answer_garbage, daemon=True).start()
        server = start_tensorboard(tmp_path / "tb", port)
    assert server.url is None and f"port {port} is in use" in server.reason


def test_passthrough_arguments_are_parsed_as_yaml_scalars(cli):
    import yaml

    r = cli("detect", "train", "-d", "data.yaml", "lr0=0.01", "cos_lr=true", "optimizer=SGD", "freeze=10", "--print-config")
    assert r.exit_code == 0, r.stderr
    assert yaml.safe_load(r.stdout)["ultralytics"] == {"lr0": 0.01, "cos_lr": True, "optimizer": "SGD", "freeze": 10}
    for bad in ("oops", "=3"):
        r = cli("detect", "train", "-d", "data.yaml", bad, "--print-config")
        assert r.exit_code == 2 and "key=value" in r.stderr, (bad, r.stderr)


def test_tensorboard_already_running_on_the_port_is_reused(tmp_path):
    from kitaeru.recipes.detect.tensorboard_server import start_tensorboard

    first = start_tensorboard(tmp_path / "first", 0, log_file=tmp_path / "tb.log")
    try:
        second = start_tensorboard(tmp_path / "second", first.port)  # its probe starts first's TensorBoard
        assert second.reused and second.process is None and second.url == first.url
        assert second.serving and "first" in second.serving
        second.stop()  # leaves the server it did not start running
        assert first.process.poll() is None
    finally:
        first.stop()
    assert first.process.poll() is not None


def test_tensorboard_start_does_not_wait_for_the_server(tmp_path):
    from kitaeru.recipes.detect.tensorboard_server import start_tensorboard

    server = start_tensorboard(tmp_path / "tb", 0)
    try:
        assert server.url and server.process is None  # nothing runs (or is waited for) until asked
    finally:
        server.stop()


def test_every_patch_is_listed_with_why_and_the_version(ultralytics_module):
    """Each module-level patch of Ultralytics is in ultralytics_env.MONKEYPATCHES; LLRD has no side channel."""
    import re

    import ultralytics

    from kitaeru.recipes.detect import ultralytics_env

    listed = " ".join(where for where, _, _ in ultralytics_env.MONKEYPATCHES)
    for module, name, _ in ultralytics_env.guarded_patches(offline=True):
        short = module.__name__.removeprefix("ultralytics.")
        assert name in listed and short.split(".")[-1] in listed, (module.__name__, name)
    assert all(why for _, _, why in ultralytics_env.MONKEYPATCHES)
    assert ultralytics_env.CHECKED_ON == "8.4.190"
    if ultralytics.__version__ != ultralytics_env.CHECKED_ON:
        pytest.skip(f"Ultralytics {ultralytics.__version__} installed; the list was checked on {ultralytics_env.CHECKED_ON}")
    recipe = Path(ultralytics_env.__file__).parent
    for source in recipe.glob("*.py"):
        text = source.read_text()
        assert "KITAERU_LLRD" not in text, source.name  # the decay travels by Ultralytics' callback API
        if source.name != "ultralytics_env.py":
            assert not re.search(r"os\.environ\[", text), f"{source.name} sets an environment variable"
