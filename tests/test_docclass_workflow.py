"""The docclass workflow through the real CLI on CPU: train → export-onnx → register → classify.

One small model is trained once for the module with the shipped ``cpu_quickstart`` preset (48 px,
2 epochs, a tiny timm backbone, one class per template) on real scans from ../shared/data/documents
plus generated templates, with a corrupt file in the pool and one generated letter that is trained
on but never registered (the "document not in the bank"). The 12-pair class scheme and the seed's
lcnet_050 network are covered without training in test_docclass_data.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from guards import HANG_GUARD_S
import yaml

from kitaeru.recipes.docclass.documents import DocumentAugment, augmented_photo, read_template_pool
from kitaeru.recipes.docclass.sample_documents import generate_documents, render_document

# A photo of a document: mild perspective and lighting, JPEG-compressed on save.
PHOTO = {"perspective": 0.08, "margin": 0.05, "brightness": 0.1, "contrast": 0.1, "saturation": 0.05, "hue": 0.0,
         "shadow_p": 0.0, "blur_p": 0.0, "noise_std": 0.01, "crop_scale": (0.95, 1.0), "scan_p": 0.0}
HELD_OUT = "zz_letter"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """Train once through the CLI; return paths and the parsed training_result.json."""
    from kitaeru.cli import run

    root = tmp_path_factory.mktemp("docclass")
    pool = root / "pool"
    pool.mkdir()
    shutil.copy(shared_data / "documents" / "passport" / "passport-td2.jpg", pool / "passport-td2.jpg")
    # One receipt: at 48 px the shop receipts of the real set are near-duplicates of each other.
    shutil.copy(shared_data / "documents" / "receipt" / "000.jpg", pool / "receipt_000.jpg")
    generate_documents(pool / "generated", 3, seed=11, kinds=["id_card", "passport", "form"])
    render_document("letter", 999).save(pool / f"{HELD_OUT}.png")
    (pool / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")

    args = ["docclass", "train", "--cfg-name", "cpu_quickstart", "--data-dir", str(pool), "--output-dir", str(root / "runs"),
            "--workers", "1", "--seed", "5", "--json"]
    code = run(args)
    assert code == 0
    runs = list((root / "runs").iterdir())
    assert len(runs) == 1
    result = json.loads((runs[0] / "training_result.json").read_text())

    # The bank: every readable template except the held-out letter; the passport in a sub-folder.
    bank_dir = root / "bank_templates"
    (bank_dir / "passport").mkdir(parents=True)
    shutil.copy(pool / "passport-td2.jpg", bank_dir / "passport" / "td2_front.jpg")
    for path in list(pool.glob("receipt_*.jpg")) + list((pool / "generated").glob("*.png")):
        shutil.copy(path, bank_dir / path.name)
    photos = root / "photos"
    photos.mkdir()
    templates = read_template_pool(pool, max_side=512)
    augment = DocumentAugment(144, **PHOTO)
    for index, (image, label) in enumerate(zip(templates.images, templates.labels)):
        expected = "passport" if label == "passport-td2" else label.rsplit("/", 1)[-1]
        augmented_photo(image, augment, seed=100 + index).save(photos / f"{expected}.jpg", quality=90)
    return {"root": root, "pool": pool, "run": runs[0], "result": result, "bank_dir": bank_dir, "photos": photos}


@pytest.fixture(scope="module")
def exported(trained):
    """export-onnx of the best checkpoint (the sidecar JSON comes back on stdout)."""
    from kitaeru.cli import run

    out = trained["root"] / "onnx" / "docclass.onnx"
    code = run(["docclass", "export-onnx", "--checkpoint", str(trained["run"] / "weights" / "best.ckpt"), "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def bank(trained, exported):
    from kitaeru.cli import run

    out = trained["root"] / "bank.npz"
    assert run(["docclass", "register", "--model", str(exported), "--templates", str(trained["bank_dir"]), "--out", str(out)]) == 0
    return out


# ---- training ----------------------------------------------------------------------------------
@pytest.mark.slow  # uses the module's one training run
def test_training_writes_the_evidence(trained):
    run, result = trained["run"], trained["result"]
    assert result["status"] == "completed" and result["epochs_completed"] == 2
    assert (run / "weights" / "best.ckpt").is_file() and (run / "weights" / "last.ckpt").is_file()
    assert Path(result["best_weights"]) == run / "weights" / "best.ckpt"
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["name"] == "cpu_quickstart" and saved["data"]["image_size"] == 48 and saved["onnx"]["input_shape"]["img"]["shape"] == [1, 3, 48, 48]
    assert saved["data"]["data_dir"] == str(trained["pool"]) and saved["data"]["workers"] == 1 and saved["train"]["seed"] == 5
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("seconds", "train_loss", "lr", "val_auroc", "val_tpr_fpr1e-4", "val_tpr_fpr1e-3", "val_tpr_fpr1e-2", "val_tpr_fpr1e-1"):
        assert rows[-1][key] != "", key
    # Each row carries its own epoch's metrics, not the previous epoch's.
    assert float(rows[-1]["val_auroc"]) == pytest.approx(result["last_epoch_metrics"]["auroc"], rel=1e-5)
    skipped = result["skipped_inputs"]
    assert skipped["count"] == 1 and skipped["items"][0]["path"].endswith("corrupt.jpg")
    assert result["classes"]["num_classes"] == 6 and result["classes"]["orientations"] == ["rot0"]
    assert result["resources"]["tier"] == "cpu" and result["resources"]["initial_plan"] == {"batch_size": 16, "workers": 1}
    assert result["oom_recoveries"] == [] and "torch" in result["library_versions"]


@pytest.mark.slow  # uses the module's one training run
def test_trained_model_beats_the_untrained_one(trained):
    result = trained["result"]
    metrics, untrained = result["metrics"], result["untrained_metrics"]
    for key in ("auroc", "tpr_fpr1e-4", "tpr_fpr1e-3", "tpr_fpr1e-2", "tpr_fpr1e-1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["auroc"] > untrained["auroc"] + 0.2
    assert metrics["tpr_fpr1e-2"] > untrained["tpr_fpr1e-2"]
    assert result["unknown_threshold"] == pytest.approx(metrics["threshold"]) and result["threshold_fpr"] == 1e-3


@pytest.mark.slow  # uses the module's one training run
def test_checkpoint_carries_threshold_and_config(trained):
    from kitaeru.recipes.docclass.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(trained["run"] / "weights" / "best.ckpt")
    assert checkpoint.threshold == pytest.approx(trained["result"]["unknown_threshold"])
    assert checkpoint.config.model.backbone == "test_efficientnet" and checkpoint.config.data.image_size == 48
    assert not any(key.startswith("loss_fn") for key in checkpoint.state_dict)  # inference branch only


@pytest.mark.slow  # uses the module's one training run
@pytest.mark.filterwarnings("ignore:The dirpath has changed", "ignore:Checkpoint directory")
def test_resume_and_out_of_memory_recovery(trained, tmp_path):
    """Continue the finished run for a third epoch; an OOM at its start halves the batch and resumes."""
    import lightning as L
    import torch

    from kitaeru.core.config import load_config
    from kitaeru.recipes.docclass.config import TrainConfig
    from kitaeru.recipes.docclass.training import run_training

    run = tmp_path / "resumed"
    shutil.copytree(trained["run"], run)

    class OutOfMemoryOnce(L.Callback):
        raised = 0

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2 and not OutOfMemoryOnce.raised:
                OutOfMemoryOnce.raised += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    config = load_config(TrainConfig, "docclass", config_file=run / "config.yaml",
                         overrides={"resume": str(run), "train.epochs": 3, "data.train_samples_per_class": 8})
    result = run_training(config, callbacks=[OutOfMemoryOnce()])
    assert OutOfMemoryOnce.raised == 1
    assert result["epochs_completed"] == 3 and result["status"] == "completed"
    assert [r["change"] for r in result["oom_recoveries"]] == ["batch_size 16 -> 8"]
    assert result["resources"]["final_plan"]["batch_size"] == 8
    assert result["untrained_metrics"] == trained["result"]["untrained_metrics"]  # kept from the first run
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[0] == list(csv.DictReader((trained["run"] / "results.csv").open()))[0]


def test_every_train_option_reaches_the_saved_config(cli, tmp_path):
    """All flags land in config.yaml (a pool of one unreadable image then stops the run with a clear
    error; an empty pool is refused before the run folder exists)."""
    empty = tmp_path / "unreadable"
    empty.mkdir()
    (empty / "a.jpg").write_bytes(b"garbage")
    r = cli("docclass", "train", "--cfg-name", "lcnet050_cosface_96", "--data-dir", empty, "--output-dir", tmp_path / "runs",
            "--epochs", "3", "--batch-size", "8", "--lr", "0.01", "--image-size", "64", "--device", "cpu", "--loss", "arcface",
            "--pretrained", "none", "--workers", "0", "--seed", "5", "--no-oom-recovery", "--set", "augment.perspective=0.2",
            "--set", "train.monitor=val_tpr_fpr1e-3")
    assert r.exit_code == 2 and "could be read" in r.stderr
    run = next((tmp_path / "runs").iterdir())
    c = yaml.safe_load((run / "config.yaml").read_text())
    assert (c["train"]["epochs"], c["train"]["batch_size"], c["optim"]["learning_rate"], c["data"]["image_size"]) == (3, 8, 0.01, 64)
    assert (c["train"]["device"], c["loss"]["name"], c["model"]["pretrained"], c["data"]["workers"], c["train"]["seed"]) == ("cpu", "arcface", "none", 0, 5)
    assert c["train"]["oom_recovery"] is False and c["augment"]["perspective"] == 0.2 and c["train"]["monitor"] == "val_tpr_fpr1e-3"
    assert c["onnx"]["input_shape"]["img"]["shape"] == [1, 3, 64, 64]
    assert json.loads((run / "training_result.json").read_text())["status"] == "failed"


def test_bad_training_inputs(cli, tmp_path):
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "a.jpg").write_bytes(b"garbage")
    r = cli("docclass", "train", "--data-dir", tmp_path / "pool", "--output-dir", tmp_path / "runs", "--pretrained", "none")
    assert r.exit_code == 2 and "none of the 1 template image(s) could be read" in r.stderr
    r = cli("docclass", "train", "--data-dir", tmp_path / "missing", "--output-dir", tmp_path / "runs", "--pretrained", "none")
    assert r.exit_code == 2 and "template pool not found" in r.stderr
    r = cli("docclass", "train", "--device", "cuda:7", "--output-dir", tmp_path / "runs")
    assert r.exit_code == 2 and "--device" in r.stderr
    r = cli("docclass", "train", "--resume", tmp_path / "pool")
    assert r.exit_code == 2 and "not a docclass run folder" in r.stderr
    r = cli("docclass", "train", "--output-dir", "s3://bucket/runs")
    assert r.exit_code == 2 and "train.output_dir" in r.stderr and "local folder" in r.stderr
    r = cli("docclass", "train", "--set", "no_equals_sign")
    assert r.exit_code == 2 and "key=value" in r.stderr


# ---- export ------------------------------------------------------------------------------------
@pytest.mark.slow  # uses the module's one training run
def test_export_matches_the_spec_and_pytorch(trained, exported):
    import onnx
    import onnxruntime as ort
    import torch

    from kitaeru.recipes.docclass.documents import preprocess_images
    from kitaeru.recipes.docclass.checkpoint import load_network, read_checkpoint

    sidecar = json.loads(Path(str(exported) + ".json").read_text())
    report = sidecar["export"]
    assert report["inputs"] == {"img": ["batch_size", 3, 48, 48]} and report["outputs"] == {"feats": ["batch_size", 128]}
    assert report["checker"] == "passed" and report["max_abs_diff"] <= 1e-4 and report["real_inputs_checked"] == 4
    assert sidecar["unknown_threshold"] == pytest.approx(trained["result"]["unknown_threshold"])
    assert sidecar["image_size"] == 48 and sidecar["embedding_dim"] == 128
    model = onnx.load(str(exported))
    assert model.graph.name == "WarpFeatureLearning"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [16]
    # Independent check on real photos with a batch size of 3 (dynamic batch).
    pictures = [read_template_pool(trained["photos"], max_side=144).images[i] for i in range(3)]
    batch = preprocess_images(pictures, 48)
    got = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(["feats"], {"img": batch})[0]
    net = load_network(read_checkpoint(trained["run"] / "weights" / "best.ckpt"))
    with torch.inference_mode():
        want = net(torch.from_numpy(batch)).numpy()
    assert got.shape == (3, 128) and np.abs(got - want).max() <= 1e-4


@pytest.mark.slow  # uses the module's one training run
def test_export_with_a_checkpoint_of_another_config(cli, trained, tmp_path):
    ckpt = trained["run"] / "weights" / "best.ckpt"
    r = cli("docclass", "export-onnx", "--cfg-name", "lcnet050_cosface_96", "--checkpoint", ckpt, "--out", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "checkpoint of another config" in r.stderr
    assert "model.backbone 'test_efficientnet' vs 'lcnet_050'" in r.stderr and "data.image_size 48 vs 96" in r.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow  # uses the module's one training run
def test_export_with_a_shape_the_model_rejects(cli, trained, tmp_path):
    ckpt = trained["run"] / "weights" / "best.ckpt"
    r = cli("docclass", "export-onnx", "--checkpoint", ckpt, "--out", tmp_path / "x.onnx", "--set", "onnx.input_shape.img.shape=[1, 1, 48, 48]")
    assert r.exit_code == 2 and "the model rejects img [1, 1, 48, 48]" in r.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.onnx.json").exists()
    r = cli("docclass", "export-onnx", "--checkpoint", tmp_path / "none.ckpt")
    assert r.exit_code == 2 and "checkpoint not found" in r.stderr
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    r = cli("docclass", "export-onnx", "--checkpoint", tmp_path / "junk.ckpt")
    assert r.exit_code == 2 and "cannot read checkpoint" in r.stderr


@pytest.mark.slow  # uses the module's one training run
def test_export_options(cli, trained, tmp_path):
    run = trained["run"]
    photo = trained["photos"] / "receipt_000.jpg"
    r = cli("docclass", "export-onnx", "--config", run / "config.yaml", "--checkpoint", run / "weights" / "last.ckpt",
            "--image-size", "48", "--image", photo, "--tolerance", "1e-3", "--out", tmp_path / "m.onnx", "--json")
    assert r.exit_code == 0, r.stderr
    sidecar = json.loads(r.stdout)
    assert sidecar["export"]["real_inputs_checked"] == 1 and sidecar["export"]["tolerance"] == 1e-3
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.onnx.json").is_file()
    r = cli("docclass", "export-onnx", "--config", run / "config.yaml", "--checkpoint", run / "weights" / "last.ckpt", "--image-size", "64")
    assert r.exit_code == 2 and "data.image_size 48 vs 64" in r.stderr
    shutil.copy(run / "weights" / "last.ckpt", tmp_path / "copy.ckpt")
    r = cli("docclass", "export-onnx", "--checkpoint", tmp_path / "copy.ckpt")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "copy.onnx").is_file() and (tmp_path / "copy.onnx.json").is_file()
    assert "WarpFeatureLearning" in r.stdout and "passed" in r.stdout


@pytest.mark.slow  # uses the module's one training run
def test_export_by_its_own_name_with_key_value_settings(cli, trained, tmp_path):
    import onnx

    ckpt = trained["run"] / "weights" / "best.ckpt"
    r = cli("docclass", "export", "--checkpoint", ckpt, "--out", tmp_path / "m17.onnx", "onnx.options.opset_version=17", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["export"]["opset_version"] == 17
    assert [o.version for o in onnx.load(str(tmp_path / "m17.onnx")).opset_import if o.domain in ("", "ai.onnx")] == [17]
    r = cli("docclass", "export", "--checkpoint", ckpt, "--out", tmp_path / "x.onnx", "onnx.colour=red")
    assert r.exit_code == 2 and "onnx.colour: unknown key" in r.stderr and not (tmp_path / "x.onnx").exists()


# ---- evaluate ----------------------------------------------------------------------------------
@pytest.mark.slow  # uses the module's one training run
def test_evaluate_on_fresh_photos_from_the_checkpoint_and_the_onnx_model(cli, trained, exported):
    ckpt = trained["run"] / "weights" / "best.ckpt"
    args = ("--templates", trained["bank_dir"], "--samples-per-class", "4", "--json")
    r = cli("docclass", "evaluate", "--model", ckpt, *args)
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["metrics"]) == {"auroc", "tpr_fpr1e-4", "tpr_fpr1e-3", "tpr_fpr1e-2", "tpr_fpr1e-1"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert (result["templates"], result["orientations"], result["photos"], result["model_kind"]) == (5, ["rot0"], 20, "checkpoint")
    assert result["positive_pairs"] == 5 * 6 and result["negative_pairs"] == 20 * 19 // 2 - 30
    assert result["threshold_fpr"] == 1e-3 and -1.0 <= result["threshold"] <= 1.0
    stored = result["stored_threshold"]
    assert stored["value"] == pytest.approx(trained["result"]["unknown_threshold"]) and 0 <= stored["tpr"] <= 1 and 0 <= stored["fpr"] <= 1
    assert result["metrics"]["auroc"] > 0.7  # the trained features separate documents on photos never seen
    assert result["augment"]["perspective"] == 0.15  # the photos the model was trained on (cpu_quickstart)
    r = cli("docclass", "evaluate", "--model", exported, *args)
    assert r.exit_code == 0, r.stderr
    onnx_result = json.loads(r.stdout)
    assert onnx_result["model_kind"] == "onnx" and onnx_result["augment"] == result["augment"]
    for key, value in result["metrics"].items():
        assert onnx_result["metrics"][key] == pytest.approx(value, abs=1e-3), key
    r = cli("docclass", "evaluate", "--model", exported, "--templates", trained["bank_dir"], "--samples-per-class", "2",
            "rotations=[0, 90]", "augment.perspective=0.05")
    assert r.exit_code == 0, r.stderr
    assert "20 fresh photo(s) of 5 template(s) × 2 orientation(s)" in r.stdout and "auroc" in r.stdout


@pytest.mark.slow  # uses the module's one training run
def test_evaluate_needs_two_classes(cli, trained, exported, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(trained["pool"] / "receipt_000.jpg", one / "receipt.jpg")
    r = cli("docclass", "evaluate", "--model", exported, "--templates", one)
    assert r.exit_code == 2 and "evaluation needs two" in r.stderr


@pytest.mark.slow  # uses the module's one training run
def test_register_from_a_checkpoint(cli, trained, tmp_path):
    ckpt = trained["run"] / "weights" / "best.ckpt"
    r = cli("docclass", "register", "--model", ckpt, "--templates", trained["bank_dir"], "--out", tmp_path / "b.npz", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["templates"] == 5 and summary["feature_dim"] == 128 and "passport" in summary["labels"]


# ---- register and classify ---------------------------------------------------------------------
@pytest.mark.slow  # uses the module's one training run
def test_register_labels_by_stem_and_sub_folder(bank):
    with np.load(bank) as data:
        labels = sorted(data["labels"].tolist())
        assert data["features"].shape == (5, 128) and int(data["feature_dim"]) == 128
    assert labels == ["form_002", "id_card_000", "passport", "passport_001", "receipt_000"]


@pytest.mark.slow  # uses the module's one training run
def test_classify_recognises_each_template_and_rejects_an_unregistered_document(cli, trained, exported, bank):
    r = cli("docclass", "classify", "--model", exported, "--bank", bank, "--image", trained["photos"], "--json")
    assert r.exit_code == 0, r.stderr
    results = {Path(x["image"]).stem: x for x in json.loads(r.stdout)}
    with np.load(bank) as data:  # register's open-set calibration: one threshold per label
        calibrated = dict(zip(data["calibration_labels"].tolist(), data["calibration_thresholds"].tolist()))
    assert len(results) == 6
    for expected, row in results.items():
        threshold = calibrated[row["best_match"]]
        assert row["threshold"] == pytest.approx(threshold, abs=1e-6)
        assert threshold >= trained["result"]["unknown_threshold"] - 1e-6
        if expected == HELD_OUT:
            assert row["label"] == "unknown" and row["score"] < threshold
        else:
            assert row["label"] == expected, row
            assert row["score"] >= threshold


@pytest.mark.slow  # uses the module's one training run
def test_classify_from_the_checkpoint_agrees_with_onnx(cli, trained, exported, bank):
    photos = sorted(trained["photos"].glob("*.jpg"))
    images = [arg for photo in photos for arg in ("--image", photo)]
    onnx_run = json.loads(cli("docclass", "classify", "--model", exported, "--bank", bank, *images, "--json").stdout)
    ckpt = trained["run"] / "weights" / "best.ckpt"
    r = cli("docclass", "classify", "--model", ckpt, "--bank", bank, *images, "--json")
    assert r.exit_code == 0, r.stderr
    torch_run = json.loads(r.stdout)
    assert [x["label"] for x in torch_run] == [x["label"] for x in onnx_run]
    assert np.allclose([x["score"] for x in torch_run], [x["score"] for x in onnx_run], atol=1e-4)
    r = cli("docclass", "classify", "--model", exported, "--bank", bank, "--image", photos[0], "--threshold", "1")
    assert r.exit_code == 0 and "unknown" in r.stdout


@pytest.mark.slow  # uses the module's one training run
def test_classify_runs_on_onnxruntime_without_torch(trained, exported, bank):
    """A separate interpreter where importing torch fails: the ONNX path must not need it."""
    code = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'lightning', 'timm'):\n"
        "    sys.modules[name] = None\n"
        "from kitaeru.cli import run\n"
        f"code = run(['docclass', 'classify', '--model', {str(exported)!r}, '--bank', {str(bank)!r}, '--image', {str(trained['photos'])!r}, '--json'])\n"
        "assert all(sys.modules.get(n) is None for n in ('torch', 'torchvision')), 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env={**os.environ, "KITAERU_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    labels = {Path(x["image"]).stem: x["label"] for x in json.loads(proc.stdout)}
    assert labels[HELD_OUT] == "unknown" and labels["receipt_000"] == "receipt_000"


@pytest.mark.slow  # uses the module's one training run
def test_classify_bad_inputs(cli, trained, exported, bank, tmp_path):
    np.savez(tmp_path / "small.npz", features=np.ones((2, 64), np.float32), labels=np.array(["a", "b"]), paths=np.array(["a", "b"]))
    r = cli("docclass", "classify", "--model", exported, "--bank", tmp_path / "small.npz", "--image", trained["photos"])
    assert r.exit_code == 2 and "bank features are 64-d" in r.stderr and "128-d" in r.stderr
    np.savez(tmp_path / "other.npz", vectors=np.ones((2, 128), np.float32))
    r = cli("docclass", "classify", "--model", exported, "--bank", tmp_path / "other.npz", "--image", trained["photos"])
    assert r.exit_code == 2 and "not a docclass bank" in r.stderr
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    r = cli("docclass", "classify", "--model", exported, "--bank", bank, "--image", tmp_path / "broken.jpg")
    assert r.exit_code == 2 and "cannot read image" in r.stderr
    bare = tmp_path / "bare.onnx"
    shutil.copy(exported, bare)  # no sidecar: no stored threshold
    with np.load(bank) as stored:  # a bank without its open-set calibration: no per-label thresholds either
        np.savez(tmp_path / "uncalibrated.npz", **{k: stored[k] for k in stored.files if not k.startswith("calibration")})
    r = cli("docclass", "classify", "--model", bare, "--bank", tmp_path / "uncalibrated.npz", "--image", trained["photos"])
    assert r.exit_code == 2 and "pass --threshold" in r.stderr
    r = cli("docclass", "classify", "--model", bare, "--bank", bank, "--image", trained["photos"])
    assert r.exit_code == 0, r.stderr  # the calibrated bank carries its own thresholds
    r = cli("docclass", "register", "--model", exported, "--templates", tmp_path / "nothing", "--out", tmp_path / "b.npz")
    assert r.exit_code == 2 and "template pool not found" in r.stderr and not (tmp_path / "b.npz").exists()
