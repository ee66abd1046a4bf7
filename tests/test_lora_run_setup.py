"""Where a LoRA run lives and what a resumed one runs with, through the shared run step: --resume
latest|PATH (a run, its lora_model or a checkpoint-N folder), the saved config under what was given
now, the adapter's shape pinned, old spellings of saved settings and checkpoint plans, and the
printed resume command leading back to the same run."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

OLD_PLAN = {"batch": 1, "gradient_accumulation": 2, "gradient_checkpointing": False, "resolution": 32}


def _run(root: Path, name: str, *, steps=(2, 4), plan: dict | None = None, stamp: float = 1_000_000,
         **settings) -> Path:
    """A LoRA run folder as training leaves it: config.yaml, lora_model/checkpoint-N (state.json and
    an adapter file each)."""
    from safetensors.numpy import save_file
    import numpy as np

    from kitaeru.recipes.lora.config import TrainConfig

    run = root / name
    (run / "lora_model").mkdir(parents=True)
    # every setting, as a run saves its resolved config
    saved = TrainConfig(**{"output_dir": str(root), "name": name, "epochs": 10, **settings}).model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    for step in steps:
        checkpoint = run / "lora_model" / f"checkpoint-{step}"
        checkpoint.mkdir()
        state = {"step": step, "world_size": 1,
                 "plan": plan or {"batch_size": 2, "gradient_accumulation": 1, "gradient_checkpointing": False,
                                  "resolution": 32}}
        (checkpoint / "state.json").write_text(json.dumps(state), encoding="utf-8")
        save_file({"w": np.zeros(2, dtype=np.float32)}, str(checkpoint / "adapter_model.safetensors"))
    os.utime(run / "config.yaml", (stamp, stamp))
    return run


def _open(**given):
    from kitaeru.recipes.lora.config import TrainConfig
    from kitaeru.recipes.lora.training import open_lora_run

    return open_lora_run(TrainConfig(**given))


def test_resume_latest_is_the_newest_run_and_its_newest_checkpoint(tmp_path):
    _run(tmp_path, "train", stamp=1_000_000)
    newer = _run(tmp_path, "train2", steps=(3, 6, 9), stamp=2_000_000)
    (tmp_path / "not-a-run").mkdir()  # a folder without config.yaml and lora_model/ is no run
    opened, checkpoint, _ = _open(output_dir=str(tmp_path), resume="latest")
    assert opened.resumed and opened.run_dir == newer
    assert checkpoint == newer / "lora_model" / "checkpoint-9"
    assert opened.config.resume == str(newer) and opened.config.name == "train2"


@pytest.mark.parametrize("given, start", [("run", "checkpoint-4"), ("lora_model", "checkpoint-4"),
                                          ("checkpoint-2", "checkpoint-2")])
def test_resume_path_names_its_run_and_a_named_checkpoint_is_the_one_to_start_from(tmp_path, given, start):
    run = _run(tmp_path / "elsewhere", "mine")
    path = {"run": run, "lora_model": run / "lora_model", "checkpoint-2": run / "lora_model" / "checkpoint-2"}[given]
    opened, checkpoint, _ = _open(resume=str(path))
    assert opened.run_dir == run and checkpoint == run / "lora_model" / start


def test_resume_of_something_else_is_one_line(tmp_path):
    from kitaeru.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no LoRA run under"):
        _open(output_dir=str(tmp_path / "empty"), resume="latest")
    run = _run(tmp_path, "train")
    (run / "lora_model" / "checkpoint-2" / "state.json").unlink()
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        _open(resume=str(run / "lora_model" / "checkpoint-2"))
    (run / "config.yaml").unlink()
    with pytest.raises(ConfigError, match="not a LoRA run folder"):
        _open(resume=str(run))


def test_a_given_setting_wins_on_resume_even_when_it_is_the_default(tmp_path):
    run = _run(tmp_path, "train", epochs=10, learning_rate=0.001)
    assert _open(resume=str(run))[0].config.epochs == 10  # not given: the run's own
    merged = _open(resume=str(run), epochs=5)[0].config  # 5 is the default, and it was given
    assert merged.epochs == 5 and merged.learning_rate == 0.001


def test_giving_epochs_on_resume_drops_the_saved_step_budget(tmp_path):
    run = _run(tmp_path, "train", max_train_steps=6)
    assert _open(resume=str(run))[0].config.max_train_steps == 6
    merged = _open(resume=str(run), epochs=3)[0].config
    assert merged.epochs == 3 and merged.max_train_steps is None


def test_the_adapter_shape_is_pinned_on_resume(tmp_path, cli):
    from kitaeru.core.errors import ConfigError

    run = _run(tmp_path, "train", rank=4)
    assert _open(resume=str(run), rank=4)[0].config.rank == 4  # the same value is no change
    with pytest.raises(ConfigError, match="--rank cannot change when resuming"):
        _open(resume=str(run), rank=8)
    before = sorted(p.name for p in run.rglob("*"))
    result = cli("lora", "train", "--resume", run, "--target-modules", "to_q")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--target-modules cannot change" in result.stderr
    assert sorted(p.name for p in run.rglob("*")) == before


def test_old_spellings_in_a_saved_config_and_a_checkpoint_plan_still_resume(tmp_path):
    from kitaeru.recipes.lora.training import saved_plan

    # settings written under their earlier names (the schema's aliases) and an old checkpoint plan
    run = _run(tmp_path, "train", plan=OLD_PLAN, precision="bf16", learning_rate=0.002, batch_size=2)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for new, old in (("precision", "mixed_precision"), ("learning_rate", "lr"), ("batch_size", "train_batch_size")):
        saved[old] = saved.pop(new)
    (run / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    opened, _, earlier = _open(resume=str(run))
    config = opened.config
    assert (config.precision, config.learning_rate, config.batch_size) == ("bf16", 0.002, 2)
    assert earlier == {"batch_size": 1, "gradient_accumulation": 2, "gradient_checkpointing": False, "resolution": 32}
    # what is given now replaces the ladder's value, whatever spelling the checkpoint used
    assert "batch_size" not in _open(resume=str(run), batch_size=2)[2]
    assert saved_plan({"plan": {"batch": 3, "workers": 9}}) == {"batch_size": 3}


def test_a_given_name_is_used_exactly_and_refused_when_it_holds_a_run(tmp_path):
    from kitaeru.core.errors import ConfigError

    assert _open(output_dir=str(tmp_path), name="mine")[0].run_dir == tmp_path / "mine"
    assert _open(output_dir=str(tmp_path))[0].run_dir == tmp_path / "train"
    run = _run(tmp_path, "mine")
    (run / "training_result.json").write_text(json.dumps({"status": "completed", "epochs_completed": 2}))
    with pytest.raises(ConfigError, match="--exist-ok"):
        _open(output_dir=str(tmp_path), name="mine")
    assert _open(output_dir=str(tmp_path), name="mine", exist_ok=True)[0].run_dir == run


@pytest.fixture
def opened_by_cli(monkeypatch):
    """The command line's real parsing and checks, with training replaced by "where would it run"."""
    import kitaeru.recipes.lora.training as training

    def where(config, **_):
        opened, checkpoint, earlier = training.open_lora_run(config)
        return {"run_dir": str(opened.run_dir), "checkpoint": str(checkpoint), "epochs": opened.config.epochs,
                "resume_command": opened.resume_command, "earlier_plan": earlier}

    monkeypatch.setattr(training, "train_lora", where)


def test_the_printed_resume_command_leads_back_to_the_same_run(tmp_path, tiny_sd, prepared_floorplans, cli,
                                                               opened_by_cli):
    root = tmp_path / "runs with spaces"
    run = _run(root, "train", data_dir=str(prepared_floorplans), pretrained_model=str(tiny_sd))
    first = cli("lora", "train", "--resume", "-o", root, "--json")
    assert first.exit_code == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["run_dir"] == str(run) and answer["checkpoint"] == str(run / "lora_model" / "checkpoint-4")
    words = shlex.split(answer["resume_command"])
    assert words[:3] == ["kitaeru", "lora", "train"]
    again = cli(*words[1:], "--epochs", "5", "--json")
    assert again.exit_code == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["run_dir"] == str(run) and second["checkpoint"] == answer["checkpoint"] and second["epochs"] == 5


def test_a_used_name_is_refused_before_anything_loads(tmp_path, tiny_sd, prepared_floorplans, cli, opened_by_cli):
    run = _run(tmp_path, "mine")
    (run / "training_result.json").write_text(json.dumps({"status": "completed", "epochs_completed": 2}))
    args = ["lora", "train", "-d", prepared_floorplans, "--pretrained-model", tiny_sd, "-o", tmp_path, "--name", "mine"]
    refused = cli(*args)
    assert refused.exit_code == 2 and "--exist-ok" in refused.stderr and refused.stderr.count("\n") == 1
    allowed = cli(*args, "--exist-ok", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["run_dir"] == str(run)


def test_a_checkpoint_with_an_old_style_plan_resumes_with_that_plan(tmp_path, tiny_sd, prepared_floorplans, cli,
                                                                    one_compute_thread):
    """Checkpoints written before the plan was keyed by field names (``batch``) keep what the
    out-of-memory ladder settled on when they are resumed."""
    common = ["--resolution", "32", "--checkpoint-every", "1", "--device", "cpu", "--validation-every", "0",
              "--no-tensorboard", "--seed", "3"]
    first = cli("lora", "train", "-d", prepared_floorplans, "--pretrained-model", tiny_sd, "-o", tmp_path,
                "--batch-size", "2", "--epochs", "1", *common, "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["plan"]["batch_size"] == 2
    for state_file in (tmp_path / "train" / "lora_model").glob("checkpoint-*/state.json"):
        state = json.loads(state_file.read_text())
        state["plan"] = OLD_PLAN  # the same 2 images a step, as the ladder leaves them
        state_file.write_text(json.dumps(state))
    resumed = cli("lora", "train", "--resume", tmp_path / "train", "--epochs", "2", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["resumed_from"].endswith("checkpoint-3") and result["steps"] == 6
    assert result["plan"] == {"batch_size": 1, "gradient_accumulation": 2, "gradient_checkpointing": False,
                              "resolution": 32}
