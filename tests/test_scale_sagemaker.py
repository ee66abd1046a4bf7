"""kitaeru as a SageMaker estimator entry point, with the SageMaker environment simulated by
variables and local channel folders: hyperparameters as ``--key value``, each recipe's outputs in
``SM_MODEL_DIR``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from guards import HANG_GUARD_S

from kitaeru.core.errors import ConfigError
from kitaeru.core.sagemaker import read_environment, sagemaker_argv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def entry():
    spec = importlib.util.spec_from_file_location("sagemaker_entry", REPO / "examples" / "sagemaker_entry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def sagemaker(tmp_path, monkeypatch):
    """A SageMaker training container's environment on this machine: returns (channel, model_dir)."""
    channel, model, output = tmp_path / "input" / "data" / "training", tmp_path / "model", tmp_path / "output"
    for folder in (channel, model, output):
        folder.mkdir(parents=True)
    for key, value in {"SM_CHANNEL_TRAINING": channel, "SM_MODEL_DIR": model, "SM_OUTPUT_DATA_DIR": output,
                       "SM_NUM_GPUS": "0", "SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}.items():
        monkeypatch.setenv(key, str(value))
    return channel, model


def test_environment_to_command_line():
    env = {"SM_CHANNEL_TRAINING": "/opt/ml/input/data/training", "SM_MODEL_DIR": "/opt/ml/model", "SM_NUM_GPUS": "8",
           "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    argv = sagemaker_argv(["--recipe", "multimodal", "--epochs", "30", "--batch_size", "64", "--include_timeseries", "True",
                           "--normalize", "False"], env)
    assert argv == ["multimodal", "train", "--epochs", "30", "--batch-size", "64", "--include-timeseries", "--no-normalize",
                    "--data-dir", "/opt/ml/input/data/training", "--output-dir", "/opt/ml/model", "--devices", "8",
                    "--num-nodes", "2"]
    sm = read_environment(env)
    assert sm.launcher_environment() == {"MASTER_ADDR": "algo-1", "MASTER_PORT": "29500", "NODE_RANK": "1"}
    # what the hyperparameters give wins; flags the recipe does not take are not added
    argv = sagemaker_argv(["--recipe", "lora", "--use-sample-data", "--output-dir", "/x"], env, accepts=["data-dir", "output-dir"])
    assert argv == ["lora", "train", "--use-sample-data", "--output-dir", "/x"]
    # lora trains on several GPUs too: the instance's GPUs and hosts become its --devices/--num-nodes
    from kitaeru.cli.generate import command_flags
    from kitaeru.recipes.lora.config import TrainConfig as LoraTrainConfig

    flags = command_flags(LoraTrainConfig)
    assert {"devices", "num-nodes", "pretrained-model", "no-gradient-checkpointing"} <= set(flags)
    argv = sagemaker_argv(["--recipe", "lora", "--pretrained-model", "base"], env, accepts=flags)
    assert argv[-4:] == ["--devices", "8", "--num-nodes", "2"]
    with pytest.raises(ConfigError, match="give recipe"):
        sagemaker_argv(["--epochs", "3"], env)


@pytest.mark.slow
def test_multimodal_outputs_land_in_the_model_dir(entry, sagemaker, capsys):
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

    channel, model = sagemaker
    write_sample_scenes(channel, 16, seed=3)
    code = entry(["--recipe", "multimodal", "--epochs", "1", "--batch_size", "8", "--embed_dim", "16",
                  "--device", "cpu", "--json", "True"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((model / "training_result.json").read_text())
    assert result["status"] == "completed" and result["data"]["scenes"] == 16
    assert (model / "vector_db.json").is_file() and (model / "weights" / "last.ckpt").is_file()


@pytest.mark.slow  # a whole training run, like the multimodal one above
def test_docclass_outputs_land_in_the_model_dir(entry, sagemaker, capsys):
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    channel, model = sagemaker
    generate_documents(channel, 3, seed=11)
    code = entry(["--recipe", "docclass", "--cfg_name", "cpu_quickstart", "--epochs", "1", "--workers", "0",
                  "--device", "cpu", "--set", "data.train_samples_per_class=16"])
    assert code == 0, capsys.readouterr().err
    runs = [p for p in model.iterdir() if (p / "training_result.json").is_file()]
    assert len(runs) == 1 and json.loads((runs[0] / "training_result.json").read_text())["status"] == "completed"
    assert (runs[0] / "weights" / "best.ckpt").is_file()


@pytest.mark.slow  # a whole training run, like the multimodal one above
def test_lora_outputs_land_in_the_model_dir(entry, sagemaker, shared_data, capsys):
    from kitaeru.recipes.lora.data import prepare_dataset
    from kitaeru.recipes.lora.tiny_pipeline import write_tiny_pipeline

    channel, model = sagemaker
    raw = channel.parent / "raw"
    raw.mkdir()
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:4]:
        shutil.copyfile(path, raw / path.name)
    prepare_dataset(raw, channel, val_fraction=0.0, seed=0, min_size=64)
    tiny = write_tiny_pipeline(channel.parent / "tiny-sd", seed=0)
    code = entry(["--recipe", "lora", "--pretrained_model", str(tiny), "--epochs", "1", "--resolution", "32",
                  "--batch_size", "2", "--device", "cpu", "--validation_every", "0"])
    assert code == 0, capsys.readouterr().err
    runs = [p for p in model.iterdir() if (p / "training_result.json").is_file()]
    assert len(runs) == 1 and (runs[0] / "lora_model" / "final" / "pytorch_lora_weights.safetensors").is_file()


def test_unknown_recipe_is_one_line(entry, sagemaker, capsys):
    assert entry(["--recipe", "nope"]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_colab_notebook_runs_the_quick_start_and_shows_the_map(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KITAERU_NOTEBOOK_OUT", str(tmp_path / "output"))
    monkeypatch.setenv("KITAERU_NOTEBOOK_SCENES", "24")
    monkeypatch.setenv("KITAERU_NOTEBOOK_EPOCHS", "2")
    notebook = nbformat.read(REPO / "examples" / "colab_quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=HANG_GUARD_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "status: completed" in text and "recall before:" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the map is shown
    assert (tmp_path / "output" / "map.png").is_file()


def test_estimator_example_runs_a_valid_kitaeru_command(cli, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "examples" / "sagemaker_train.py"), "--dry-run",
                           "--instance-type", "ml.g5.12xlarge", "--instance-count", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:3] == ["kitaeru", "multimodal", "train"] and "--devices" in words and "--num-nodes" in words
    r = cli(*words[1:], "--print-config")
    assert r.exit_code == 0, r.stderr
    assert "num_nodes: 2" in r.stdout and "include_timeseries: true" in r.stdout
