"""Training on several devices: two CPU processes (ddp over gloo) that Lightning starts itself.

Each run is started as a subprocess (``python -m kitaeru``): Lightning re-launches the command for
rank 1, which cannot happen inside pytest's own process. Rank 0 alone writes the evidence; the
metrics are those of one process with the same effective batch, within tolerance.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from kitaeru.core.distributed import SilentRunFolder, place, shard

DDP = ["--devices", "2", "--strategy", "ddp", "--device", "cpu"]


def _result(path):
    return json.loads((path / "training_result.json").read_text(encoding="utf-8"))


def test_place_from_launcher_environments():
    assert place({}).as_dict() == {"rank": 0, "world_size": 1, "local_rank": 0, "node_rank": 0}
    assert place({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).rank == 3  # torchrun
    assert place({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}).rank == 1  # Lightning's child
    slurm = place({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2"})
    assert (slurm.rank, slurm.world_size, slurm.local_rank) == (5, 8, 1)
    assert shard(list(range(7)), 1, 3) == [1, 4]


def test_silent_run_folder_writes_nothing(tmp_path):
    run = SilentRunFolder(tmp_path)
    with run.lifecycle(resume_command="x"):
        run.save_config(None)
        run.log_epoch({"epoch": 1, "loss": 1.0})
        run.write_result("completed")
    assert list(tmp_path.iterdir()) == [] and run.rows == [{"epoch": 1, "loss": 1.0}]


@pytest.mark.slow
def test_multimodal_two_process_ddp(cli, cli_subprocess, tmp_path):
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

    scenes = write_sample_scenes(tmp_path / "scenes", 32, seed=3)
    common = ["multimodal", "train", "-d", scenes, "--epochs", "3", "--learning-rate", "0.002", "--embed-dim", "32",
              "--val-fraction", "0.5", "--seed", "7", "--device", "cpu", "--json"]
    one = cli(*common, "-o", tmp_path / "one", "--batch-size", "8")
    assert one.exit_code == 0, one.stderr
    two = cli_subprocess(*common, "-o", tmp_path / "two", "--batch-size", "4", *DDP)
    assert two.exit_code == 0, two.stderr[-3000:]
    printed = json.loads(two.stdout)  # rank 1's output never reaches stdout
    result = _result(tmp_path / "two")
    assert result["status"] == "completed" and result["epochs_completed"] == 3 and printed["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "two" / "weights").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list(tmp_path.glob("two?*")) and (tmp_path / "two" / "vector_db.json").is_file()
    # the all-gathered validation recall of the best epoch equals rank 0's one-process recall of its weights
    rows = list(csv.DictReader(open(tmp_path / "two" / "results.csv", newline="")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    best = next(r for r in rows if int(r["epoch"]) == result["best_epoch"])
    assert float(best["recall_mean"]) == pytest.approx(result["metrics"]["recall_mean"], abs=1e-3)
    assert abs(result["metrics"]["recall_mean"] - _result(tmp_path / "one")["metrics"]["recall_mean"]) < 0.2


@pytest.mark.slow
def test_docclass_two_process_ddp(cli, cli_subprocess, tmp_path, shared_data):
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    pool = tmp_path / "pool"
    generate_documents(pool, 4, seed=11)
    shutil.copy(shared_data / "documents" / "receipt" / "000.jpg", pool / "receipt_000.jpg")
    common = ["docclass", "train", "--cfg-name", "cpu_quickstart", "--data-dir", pool, "--output-dir", tmp_path / "runs",
              "--workers", "0", "--seed", "5", "--device", "cpu", "data.train_samples_per_class=64", "--json"]
    one = cli(*common, "--run-name", "one", "--batch-size", "16")
    assert one.exit_code == 0, one.stderr
    two = cli_subprocess(*common, "--run-name", "two", "--batch-size", "8", *DDP)
    assert two.exit_code == 0, two.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]
    result = _result(tmp_path / "runs" / "two")
    assert result["status"] == "completed" and result["epochs_completed"] == 2 and json.loads(two.stdout)["status"] == "completed"
    rows = list(csv.DictReader(open(tmp_path / "runs" / "two" / "results.csv", newline="")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert result["metrics"]["auroc"] > 0.85
    assert abs(result["metrics"]["auroc"] - _result(tmp_path / "runs" / "one")["metrics"]["auroc"]) < 0.1


@pytest.mark.slow
def test_lora_two_process_ddp_resumes_exactly(cli, cli_subprocess, tmp_path, tiny_sd, prepared_floorplans):
    """Fabric starts rank 1 itself; each step takes batch x accumulation x 2 images, shared round-robin;
    a checkpoint gathers both processes' random states, so 1 epoch resumed to 2 equals 2 straight."""
    from safetensors.torch import load_file
    import torch

    # 128 px: 16x16 latents with the tiny pipeline's 8x VAE, enough elements for the loss comparison below
    common = ["lora", "train", "-d", prepared_floorplans, "--pretrained-model", tiny_sd, "-o", tmp_path,
              "--resolution", "128", "--batch-size", "1", "--checkpoint-every", "1", "--learning-rate", "1e-3",
              "--seed", "3", "--validation-every", "0", "--device", "cpu"]
    one = cli(*common, "--name", "one", "--epochs", "2", "--gradient-accumulation", "2", "--json")
    assert one.exit_code == 0, one.stderr
    two = cli_subprocess(*common, "--name", "two", "--epochs", "2", *DDP, "--json")
    assert two.exit_code == 0, two.stderr[-3000:]
    printed = json.loads(two.stdout)  # rank 1's result never reaches stdout
    result = _result(tmp_path / "two")
    assert result["status"] == "completed" and printed["run_dir"] == str(tmp_path / "two")
    assert (result["world_size"], result["effective_batch"], result["steps"]) == (2, 2, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".latent_cache", "one", "two"]  # one run folder, rank 0's
    rows = list(csv.DictReader(open(tmp_path / "two" / "results.csv", newline="")))
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "3"), ("2", "6")]
    rng = torch.load(tmp_path / "two" / "lora_model" / "checkpoint-6" / "rng.pt", weights_only=True)
    assert rng["world_size"] == 2 and len(rng["ranks"]) == 2
    assert not torch.equal(rng["ranks"][0]["generator"], rng["ranks"][1]["generator"])  # other noise on rank 1
    # the same effective batch on one process: the loss is that of the same training, within noise
    assert result["final_loss"] == pytest.approx(_result(tmp_path / "one")["final_loss"], rel=0.2)

    half = cli_subprocess(*common, "--name", "half", "--epochs", "1", *DDP)
    assert half.exit_code == 0, half.stderr[-3000:]
    wrong = cli("lora", "train", "--resume", tmp_path / "half", "--epochs", "2", "--devices", "1")
    assert wrong.exit_code == 2 and "written by 2 process(es), not 1" in wrong.stderr
    assert _result(tmp_path / "half")["status"] == "completed"  # refused before the run was touched
    resumed = cli_subprocess("lora", "train", "--resume", tmp_path / "half", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.stderr[-3000:]
    straight = load_file(str(tmp_path / "two" / "lora_model" / "final" / "adapter_model.safetensors"))
    again = load_file(str(tmp_path / "half" / "lora_model" / "final" / "adapter_model.safetensors"))
    assert straight.keys() == again.keys()
    assert max(float((straight[k] - again[k]).abs().max()) for k in straight) < 1e-6
