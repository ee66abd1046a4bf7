"""detect on the shared run step (``kitaeru.core.run_setup``): which folder a run gets, what
``--resume`` finds (``latest`` or a path), which settings win on resume (the ones given, whatever
their value), what may not change, and that the commands a run prints parse back to that run.

No training here: the runs are folders with the evidence a detect run leaves (``config.yaml``,
``training_result.json``, ``data.yaml``, a ``weights/last.pt`` with an epoch and optimizer state),
so every case is cheap.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from kitaeru.core.config import config_to_yaml
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.recipes.detect.config import TrainConfig
from kitaeru.recipes.detect.continuation import continue_command, restart_command, resume_command
from kitaeru.recipes.detect.training import find_resumed, open_new, resume_detector, resumed_config, resumed_plan


def fake_run(root: Path, name: str, *, status: str = "interrupted", stamp: float = 1_000_000.0,
             last: bool = True, saved: dict | None = None) -> Path:
    """A run folder as ``detect train`` leaves it (no real weights: nothing here loads them)."""
    run = root / name
    (run / "weights").mkdir(parents=True)
    config = TrainConfig(data_dir="data.yaml", output_dir=str(root), epochs=5, device="cpu", tensorboard=False)
    text = config_to_yaml(config) if saved is None else yaml.safe_dump(saved)
    (run / "config.yaml").write_text(text)
    result = run / "training_result.json"
    result.write_text(json.dumps({"status": status, "epochs_completed": 2, "resource_plan": {
        "values": {"epochs": 5}, "final": {"model": "yolov8n.yaml", "batch": 8, "imgsz": 64, "workers": 0, "cache": False}}}))
    (run / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: {0: thing}\n")
    if last:  # what Ultralytics' last.pt of an unfinished run holds for the resume check
        torch.save({"epoch": 1, "optimizer": {"state": {}}}, run / "weights" / "last.pt")
    os.utime(result, (stamp, stamp))
    return run


def resumed(config: TrainConfig) -> tuple[Path, TrainConfig]:
    """The run ``--resume`` finds and the config it continues with."""
    run_dir = find_resumed(config)
    return run_dir, resumed_config(config, run_dir)


@pytest.fixture
def parsed(cli, monkeypatch):
    """The config the real command line builds from a printed command, as the mode would get it
    (what was given stays given): ``parsed("kitaeru detect train ...")``."""

    def parse(command: str) -> TrainConfig:
        words = shlex.split(command)
        assert words[:3] == ["kitaeru", "detect", "train"], command
        seen: list[TrainConfig] = []
        monkeypatch.setattr("kitaeru.cli.generate.execute_mode", lambda mode, config: seen.append(config))
        r = cli(*words[1:])
        assert r.exit_code == 0, r.stderr
        (config,) = seen
        return config

    return parse


def test_resume_latest_is_the_newest_unfinished_run_and_a_path_names_its_run(tmp_path):
    fake_run(tmp_path, "train", stamp=1_000_000)
    newest = fake_run(tmp_path, "train2", stamp=2_000_000)
    fake_run(tmp_path, "train3", status="completed", stamp=3_000_000)  # finished: never "latest"
    assert find_resumed(TrainConfig(resume="latest", output_dir=str(tmp_path))) == newest.resolve()
    run_dir, config = resumed(TrainConfig(resume=str(tmp_path / "train" / "weights" / "last.pt")))
    assert run_dir == (tmp_path / "train").resolve() and config.resume == str(run_dir)
    with pytest.raises(ConfigError, match="no unfinished detect run under"):
        find_resumed(TrainConfig(resume="latest", output_dir=str(tmp_path / "empty")))
    (tmp_path / "stray").mkdir()
    with pytest.raises(ConfigError, match=r"is not a detect run folder \(no training_result.json\)"):
        find_resumed(TrainConfig(resume=str(tmp_path / "stray")))


def test_a_setting_given_on_resume_wins_even_when_it_is_the_default(tmp_path, parsed):
    run = fake_run(tmp_path, "train")  # saved with device cpu and TensorBoard off
    _, given = resumed(TrainConfig(resume="latest", output_dir=str(tmp_path), device="auto", tensorboard=True))
    assert (given.device, given.tensorboard) == ("auto", True)
    flags = parsed(shlex.join(["kitaeru", "detect", "train", "--resume", str(run), "--device", "auto", "--tensorboard"]))
    _, given_as_flags = resumed(flags)
    assert (given_as_flags.device, given_as_flags.tensorboard) == ("auto", True)
    _, kept = resumed(TrainConfig(resume="latest", output_dir=str(tmp_path)))
    assert (kept.device, kept.tensorboard, kept.epochs) == ("cpu", False, 5)


def test_given_plan_knobs_change_the_resumed_plan_and_nothing_else_does(tmp_path):
    run = fake_run(tmp_path, "train")
    previous = json.loads((run / "training_result.json").read_text())
    config = TrainConfig(batch_size=4, image_size=64)
    plan = resumed_plan(previous, config, {"batch_size"}, run)  # only the batch size was given
    assert plan["final"]["batch"] == 4 and plan["final"]["imgsz"] == 64
    assert resumed_plan(previous, config, set(), run)["final"] == previous["resource_plan"]["final"]


@pytest.mark.parametrize(("flags", "flag"), [(["--epochs", "9"], "--epochs"), (["--data-dir", "other.yaml"], "--data-dir"),
                                             (["--model", "yolov8s.yaml"], "--model")])
def test_data_model_and_epochs_cannot_change_on_resume(tmp_path, cli, flags, flag):
    run = fake_run(tmp_path, "train")
    r = cli("detect", "train", "--resume", run, *flags)
    assert r.exit_code == 2 and f"{flag} cannot change when resuming" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert json.loads((run / "training_result.json").read_text())["status"] == "interrupted"  # untouched


def test_the_same_value_of_a_pinned_setting_is_accepted(tmp_path):
    fake_run(tmp_path, "train")
    _, config = resumed(TrainConfig(resume="latest", output_dir=str(tmp_path), epochs=5, data_dir="data.yaml"))
    assert config.epochs == 5


def test_the_printed_resume_command_parses_back_to_the_same_run(tmp_path, cli, parsed):
    run = fake_run(tmp_path / "my runs", "train")  # a space in the path: the command is quoted
    command = continue_command(run)
    assert command == resume_command(run) == shlex.join(["kitaeru", "detect", "train", "--resume", str(run)])
    config = parsed(command)
    assert find_resumed(config) == run.resolve()


def test_before_the_first_checkpoint_the_restart_command_starts_the_same_run_in_its_folder(tmp_path, cli, parsed):
    run = fake_run(tmp_path / "my runs", "train", last=False)
    command = continue_command(run)
    assert command == restart_command(run) and "--resume" not in command
    dead = cli("detect", "train", "--resume", run)  # what users try first: pointed to the command
    assert dead.exit_code == 2 and command in dead.stderr and len(dead.stderr.strip().splitlines()) == 1
    with pytest.raises(DataError, match="no weights/last.pt"):
        resume_detector(TrainConfig(resume=str(run)))
    config = parsed(command)
    assert (config.name, config.exist_ok, config.epochs, config.data_dir) == ("train", True, 5, "data.yaml")
    assert open_new(config, Path(config.output_dir)).run_dir == run  # not train2


def test_ultralytics_name_names_the_run_and_is_numbered_when_taken(tmp_path, cli, parsed):
    for spelling in (["name=exp"], ["--name", "exp"], ["--run-prefix", "exp"], ["run_prefix=exp"]):
        assert parsed(shlex.join(["kitaeru", "detect", "train", "-d", "d.yaml", *spelling])).name == "exp"
    config = TrainConfig(name="exp")
    assert open_new(config, tmp_path).run_dir == tmp_path / "exp"
    fake_run(tmp_path, "exp")
    assert open_new(config, tmp_path).run_dir == tmp_path / "exp2"  # as Ultralytics numbers name=
    assert open_new(TrainConfig(), tmp_path).run_dir == tmp_path / "train"
    assert open_new(TrainConfig(name="exp", exist_ok=True), tmp_path).run_dir == tmp_path / "exp"


def test_a_run_saved_with_the_old_run_prefix_spelling_still_resumes_and_restarts(tmp_path, cli, parsed):
    saved = {"data_dir": "data.yaml", "output_dir": str(tmp_path), "run_prefix": "old", "epochs": 5, "device": "cpu"}
    run = fake_run(tmp_path, "old", saved=saved)
    _, config = resumed(TrainConfig(resume=str(run)))
    assert (config.name, config.epochs, config.device) == ("old", 5, "cpu")
    restarted = parsed(restart_command(run))  # --config of the old config.yaml
    assert restarted.name == "old" and open_new(restarted, Path(restarted.output_dir)).run_dir == run


def test_the_run_location_given_to_find_a_run_does_not_change_its_saved_one(tmp_path):
    fake_run(tmp_path, "train")
    _, config = resumed(TrainConfig(resume="latest", output_dir=str(tmp_path), name="elsewhere"))
    assert (config.output_dir, config.name) == (str(tmp_path), None)
