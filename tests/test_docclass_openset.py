"""Open-set rejection: ``register`` calibrates per-label thresholds on impostor photos, ``classify``
applies them, ``evaluate --bank`` re-measures them on fresh draws; real passports and receipts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kitaeru.recipes.docclass.sample_documents import generate_documents

pytestmark = pytest.mark.slow  # one small training run, then several registrations with their photo draws


@pytest.fixture(scope="module")
def documents(shared_data):
    folder = shared_data / "documents"
    if not (folder / "passport").is_dir() or not (folder / "receipt").is_dir():
        pytest.skip(f"real passports and receipts not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory, documents):
    """A small cpu_quickstart model trained on generated templates (no real document in training)."""
    from kitaeru.cli import run

    root = tmp_path_factory.mktemp("openset")
    generate_documents(root / "pool", 5, seed=21)
    code = run(["docclass", "train", "--cfg-name", "cpu_quickstart", "--data-dir", str(root / "pool"), "--output-dir",
                str(root / "runs"), "--workers", "0", "--seed", "3", "--epochs", "1",
                "data.train_samples_per_class=96", "--json"])
    assert code == 0
    (run_dir,) = list((root / "runs").iterdir())
    return {"root": root, "ckpt": run_dir / "weights" / "best.ckpt",
            "result": json.loads((run_dir / "training_result.json").read_text())}


def _register(cli, model, templates, out, *extra):
    r = cli("docclass", "register", "--model", model["ckpt"], "--templates", templates, "--out", out, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _classify(cli, model, bank, images, *extra):
    r = cli("docclass", "classify", "--model", model["ckpt"], "--bank", bank, "--image", images, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("registered, unregistered", [("passport", "receipt"), ("receipt", "passport")])
def test_an_unregistered_kind_of_real_document_is_unknown(cli, model, documents, tmp_path, registered, unregistered):
    bank = tmp_path / "bank.npz"
    summary = _register(cli, model, documents / registered, bank)
    calibration = summary["calibration"]
    assert calibration["target_fpr"] == pytest.approx(model["result"]["threshold_fpr"])
    assert calibration["achieved_fpr"] <= calibration["target_fpr"] and calibration["impostor_photos"] > 100
    assert all(t >= model["result"]["unknown_threshold"] - 1e-6 for t in calibration["thresholds"])
    with np.load(bank) as data:  # stored with the bank, per label
        assert sorted(data["calibration_labels"].tolist()) == sorted(calibration["labels"])
    rejected = _classify(cli, model, bank, documents / unregistered)
    assert rejected and all(row["label"] == "unknown" for row in rejected), rejected
    accepted = _classify(cli, model, bank, documents / registered)
    assert all(row["label"] == row["best_match"] for row in accepted)  # the templates themselves still pass


def test_calibration_rejects_documents_the_model_threshold_lets_through(cli, model, tmp_path):
    """Fresh rendered documents of no registered template: with only the model's threshold some are
    accepted as a template; with the calibrated thresholds (far fewer) are."""
    templates = tmp_path / "templates"
    generate_documents(templates, 5, seed=21)  # the training templates, registered
    fresh = tmp_path / "fresh"
    generate_documents(fresh, 30, seed=4242)
    calibrated = _classify(cli, model, _register(cli, model, templates, tmp_path / "cal.npz")["bank"], fresh)
    plain = _classify(cli, model, _register(cli, model, templates, tmp_path / "plain.npz", "--no-calibrate")["bank"], fresh)
    model_threshold = model["result"]["unknown_threshold"]
    assert all(row["threshold"] == pytest.approx(model_threshold, abs=1e-6) for row in plain)
    assert any(row["threshold"] > model_threshold + 1e-4 for row in calibrated)
    wrong_plain = sum(row["label"] != "unknown" for row in plain)
    wrong_calibrated = sum(row["label"] != "unknown" for row in calibrated)
    assert wrong_plain > 0 and wrong_calibrated < wrong_plain
    # an explicit --threshold still wins over the calibration, for every label
    forced = _classify(cli, model, tmp_path / "cal.npz", fresh, "--threshold", "0.5")
    assert {row["threshold"] for row in forced} == {0.5}


def test_evaluate_reports_the_fpr_the_bank_achieves(cli, model, tmp_path):
    templates = tmp_path / "templates"
    generate_documents(templates, 5, seed=21)
    _register(cli, model, templates, tmp_path / "bank.npz", "--target-fpr", "0.01")
    r = cli("docclass", "evaluate", "--model", model["ckpt"], "--templates", templates, "--bank", tmp_path / "bank.npz",
            "--samples-per-class", "2", "--json")
    assert r.exit_code == 0, r.stderr
    bank = json.loads(r.stdout)["bank"]
    assert bank["target_fpr"] == 0.01 and bank["labels"] == 5 and bank["impostor_photos"] > 100
    assert 0 <= bank["achieved_fpr"] <= 1 and 0 <= bank["tpr"] <= 1 and bank["calibration_fpr"] <= 0.01
    r = cli("docclass", "evaluate", "--model", model["ckpt"], "--templates", templates, "--bank", tmp_path / "bank.npz",
            "--samples-per-class", "2")
    assert r.exit_code == 0 and "bank thresholds" in r.stdout


def test_banks_without_or_with_broken_calibration(cli, model, tmp_path):
    templates = tmp_path / "templates"
    generate_documents(templates, 3, seed=21)
    _register(cli, model, templates, tmp_path / "bank.npz")
    with np.load(tmp_path / "bank.npz") as data:
        arrays = {k: data[k] for k in data.files}
    # a bank written before calibration existed: the model's threshold, as before
    old = {k: v for k, v in arrays.items() if not k.startswith("calibration")}
    np.savez(tmp_path / "old.npz", **old)
    rows = _classify(cli, model, tmp_path / "old.npz", templates)
    assert all(row["threshold"] == pytest.approx(model["result"]["unknown_threshold"], abs=1e-6) for row in rows)
    np.savez(tmp_path / "broken.npz", **{**arrays, "calibration_thresholds": np.ones(7, np.float32)})
    r = cli("docclass", "classify", "--model", model["ckpt"], "--bank", tmp_path / "broken.npz", "--image", templates)
    assert r.exit_code == 2 and "broken.npz: malformed calibration" in r.stderr and "Traceback" not in r.stderr
    r = cli("docclass", "evaluate", "--model", model["ckpt"], "--templates", templates, "--bank", tmp_path / "old.npz",
            "--samples-per-class", "2")
    assert r.exit_code == 2 and "has no calibration" in r.stderr
    shutil.rmtree(templates)
