"""What a new user meets in the first hour: a GPU or a Hub model that is not there is refused at
once in one line, every extra has its row in ``kitaeru checks``, empty preset lists say so, a key
typo gets a "did you mean", and the final table never shows a stopped server's URL."""

from __future__ import annotations

import tomllib

import pytest
from guards import REPO_ROOT, kitaeru_with_import_probe

from kitaeru.core.device import check_device_available, cuda_gpus_visible
from kitaeru.core.errors import DeviceError


def test_device_cuda_without_a_gpu_is_refused_before_anything_loads(tmp_path):
    out = tmp_path / "run"
    for args in (("multimodal", "train", "--use-sample-data", "--device", "cuda", "--output-dir", out),
                 ("detect", "train", "-d", tmp_path / "missing.yaml", "--device", "0", "-o", out),
                 ("embed", "--image-dir", tmp_path, "--out", out / "e.parquet", "--device", "cuda:1")):
        r, heavy = kitaeru_with_import_probe(*args, env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU, whatever the machine
        assert r.returncode == 2 and "no CUDA GPU is available" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not heavy, (args, sorted(heavy))
        assert not out.exists()


def test_cuda_visibility_is_read_without_torch(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # what CUDA reads as "no GPU"
    if cuda_gpus_visible() is None:
        pytest.skip("the GPU count is told from Linux driver files only; elsewhere torch tells it later")
    assert cuda_gpus_visible() == 0
    for value in ("cuda", "cuda:0", "0", "0,1", "-1"):
        with pytest.raises(DeviceError, match="no CUDA GPU is available"):
            check_device_available(value)
    for value in ("cpu", "auto"):
        check_device_available(value)


def test_an_unreachable_hub_means_offline(monkeypatch):
    from kitaeru.core.hub import offline_when_hub_unreachable

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    assert offline_when_hub_unreachable() is True
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # a proxy: a direct probe proves nothing
    assert offline_when_hub_unreachable() is False and "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.slow
def test_a_hub_model_name_offline_fails_at_once_in_one_whole_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(images / "a.png")
    env = {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": None, "https_proxy": None, "HTTP_PROXY": None, "http_proxy": None}
    r, _ = kitaeru_with_import_probe("embed", "--image-dir", images, "--out", tmp_path / "e.parquet",
                                     "--model", "open_clip:ViT-B-32", env=env)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in r.stderr.splitlines() if "error" in line.lower()], r.stderr  # no ERROR:root:
    assert len(errors) == 1 and errors[0].endswith("(download them once online, or pass --pretrained PATH or none)")
    assert "Retrying" not in r.stderr and "Traceback" not in r.stderr


def test_every_extra_has_a_row_in_checks():
    from kitaeru.core.checks import EXTRAS

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    missing = sorted(set(extras) - {"all"} - set(EXTRAS))
    assert not missing, f"extras without a row in kitaeru checks: {missing}"


def test_presets_of_a_job_without_presets_say_so(cli):
    r = cli("map", "presets")
    assert r.exit_code == 0 and "map: no presets are shipped" in r.stdout and "┏" not in r.stdout
    listed = cli("detect", "presets")
    assert "cpu_quickstart" in listed.stdout and "competition" in listed.stdout


def test_a_detect_key_typo_gets_a_did_you_mean(cli, tmp_path):
    from kitaeru.recipes.detect.sample_detection import write_sample_detection

    data = write_sample_detection(tmp_path / "shapes", train=2, val=1, image_size=64)
    r = cli("detect", "train", "-d", data, "epoch=3", "-o", tmp_path / "runs", "--device", "cpu")
    assert r.exit_code == 2 and "epoch; did you mean epochs?" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_the_final_table_shows_how_to_open_tensorboard_not_a_stopped_url(capsys):
    from kitaeru.recipes.detect.training import print_summary

    print_summary({"run_dir": "/runs/train", "tensorboard_url": "http://localhost:6006",
                   "tensorboard": {"url": "http://localhost:6006", "logdir": "tensorboard"}, "metrics": {}})
    out = capsys.readouterr().out
    assert "localhost:6006" not in out and "tensorboard --logdir /runs/train/tensorboard" in out
