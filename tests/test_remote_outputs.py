"""Remote outputs are tried before any work (credentials, bucket), and a run whose upload fails at
the end is ``failed``, never ``completed``."""

from __future__ import annotations

import json

import fsspec
import pytest
from guards import kitaeru_with_import_probe

from kitaeru.core.errors import KitaeruError
from kitaeru.core.remote import check_remote_output, upload_run_dir
from kitaeru.core.storage import check_output_path

# No credentials anywhere botocore looks (environment, files, the instance metadata service).
NO_AWS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
          "AWS_DEFAULT_PROFILE": None,
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
          "AWS_EC2_METADATA_DISABLED": "true"}


def test_s3_output_without_credentials_is_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    r, heavy = kitaeru_with_import_probe("multimodal", "train", "--use-sample-data", "--output-dir", out,
                                         "--s3-output", "s3://kitaeru-test-bucket/runs/one", env=NO_AWS)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --s3-output s3://kitaeru-test-bucket/runs/one: cannot write there (")
    assert "NoCredentialsError" in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not out.exists(), "no run folder for a run that cannot deliver its outputs"
    assert not heavy & {"torch", "lightning"}, sorted(heavy)  # refused before any model could load


def test_a_writable_remote_output_passes_and_keeps_nothing_of_the_probe():
    fs = fsspec.filesystem("memory")
    check_remote_output("memory://probe-bucket/runs/one", setting="--s3-output")
    check_output_path("memory://probe-bucket/vectors/e.parquet", setting="--out")
    assert not [p for p in fs.find("/probe-bucket") if ".kitaeru-probe-" in p]


def test_a_driver_that_is_missing_is_one_line():
    with pytest.raises(KitaeruError, match=r"--out nosuchproto://b/x: "):
        check_remote_output("nosuchproto://b/x", setting="--out")


def test_a_failed_upload_marks_the_run_failed(tmp_path, monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    run = tmp_path / "run"
    run.mkdir()
    (run / "training_result.json").write_text(json.dumps({"status": "completed", "epochs_completed": 2}))
    (run / "vector_db.json").write_text("{}")

    def denied(self, lpath, rpath, **kwargs):  # what a bucket policy without PutObject answers
        raise PermissionError("Access Denied")

    monkeypatch.setattr(MemoryFileSystem, "put_file", denied)
    with pytest.raises(KitaeruError, match=r"^--s3-output memory://upload-bucket/run: upload failed \(PermissionError: Access Denied\)$"):
        upload_run_dir(run, "memory://upload-bucket/run", setting="--s3-output")
    result = json.loads((run / "training_result.json").read_text())
    assert result["status"] == "failed" and "upload failed" in result["error"] and result["epochs_completed"] == 2


@pytest.mark.slow
def test_multimodal_run_whose_upload_fails_ends_failed(tmp_path, monkeypatch, cli):
    from fsspec.implementations.memory import MemoryFileSystem

    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

    scenes = write_sample_scenes(tmp_path / "scenes", 8, seed=0)
    real_put = MemoryFileSystem.put_file

    def denied_for_weights(self, lpath, rpath, **kwargs):  # the probe passes; the upload of weights does not
        if str(rpath).endswith(".pt"):
            raise PermissionError("Access Denied")
        return real_put(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", denied_for_weights)
    out = tmp_path / "run"
    r = cli("multimodal", "train", "--data-dir", scenes, "--output-dir", out, "--epochs", "1", "--embed-dim", "8",
            "--val-fraction", "0.25", "--s3-output", "memory://mm-upload/run")
    assert r.exit_code != 0 and "--s3-output memory://mm-upload/run: upload failed" in r.stderr, r.stderr
    result = json.loads((out / "training_result.json").read_text())
    assert result["status"] == "failed" and "upload failed" in result["error"]
