"""The one run-setup step every training mode shares (core.run_setup): folders, resume, the saved
config with what was given on top, and command lines spelled from the schema."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import pytest

from kitaeru.core.config import RecipeConfig, setting
from kitaeru.core.errors import ConfigError
from kitaeru.core.run_setup import (
    RunLayout,
    command_line,
    given_keys,
    given_settings,
    open_run,
    resume_command,
)


class Optim(RecipeConfig):
    learning_rate: float = setting(0.1, "Learning rate.", aliases=["lr"])


class Demo(RecipeConfig):
    output_dir: str = setting("runs", "Folder of runs.")
    name: Optional[str] = setting(None, "Run folder name.")
    resume: Optional[str] = setting(None, "Continue a run.")
    exist_ok: bool = setting(False, "Reuse a named folder.")
    epochs: int = setting(3, "Epochs.", aliases=["max_epochs"])
    data: str = setting("a", "Data.")
    optim: Optim = setting(default_factory=Optim, description="Optimizer.")


LAYOUT = RunLayout("demo", "demo", pinned={"data": "--data"})


def _saved_run(root: Path, name: str, text: str, status: str | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(text)
    if status:
        (run / "training_result.json").write_text(json.dumps({"status": status}))
    return run


def test_given_means_set_even_when_equal_to_the_default():
    config = Demo.model_validate({"epochs": 3, "optim": {"learning_rate": 0.1}})
    assert given_keys(config) == {"epochs", "optim"}
    assert given_settings(config) == {"epochs": 3, "optim": {"learning_rate": 0.1}}
    assert given_settings(Demo()) == {}


def test_new_runs_are_numbered_and_a_given_name_is_exact(tmp_path):
    first = open_run(Demo(), LAYOUT, root=tmp_path)
    assert first.run_dir == tmp_path / "train" and not first.resumed
    _saved_run(tmp_path, "train", "epochs: 3\n")
    assert open_run(Demo(), LAYOUT, root=tmp_path).run_dir == tmp_path / "train2"
    assert open_run(Demo(), LAYOUT, root=tmp_path, name="mine").run_dir == tmp_path / "mine"
    (tmp_path / "train" / "training_result.json").write_text(json.dumps({"status": "completed", "epochs_completed": 3}))
    with pytest.raises(ConfigError, match="already holds a run"):
        open_run(Demo(), LAYOUT, root=tmp_path, name="train")
    assert open_run(Demo(), LAYOUT, root=tmp_path, name="train", exist_ok=True).run_dir == tmp_path / "train"
    with pytest.raises(ConfigError, match="--name"):
        open_run(Demo(), LAYOUT, root=tmp_path, name="../elsewhere")
    numbered = RunLayout("demo", "demo", numbered_names=True)  # Ultralytics' name=: exp, exp2 ...
    assert open_run(Demo(), numbered, root=tmp_path, name="train").run_dir == tmp_path / "train2"


def test_resume_latest_takes_the_saved_config_with_the_given_settings_on_top(tmp_path):
    _saved_run(tmp_path, "train", "epochs: 9\ndata: a\noptim: {learning_rate: 0.5}\n")
    newer = _saved_run(tmp_path, "train2", "max_epochs: 7\ndata: a\n")  # an old spelling in a saved run
    given = Demo.model_validate({"epochs": 3, "resume": "latest"})  # 3 is the default, and still given
    opened = open_run(given, LAYOUT, root=tmp_path, resume="latest")
    assert opened.resumed and opened.run_dir == newer
    assert opened.config.epochs == 3 and opened.config.resume == str(newer)
    older = open_run(Demo.model_validate({"optim": {"learning_rate": 0.2}}), LAYOUT, root=tmp_path, resume=str(tmp_path / "train"))
    assert older.config.epochs == 9 and older.config.optim.learning_rate == 0.2


def test_resume_refusals_are_one_line(tmp_path):
    _saved_run(tmp_path, "train", "data: a\n", status="completed")
    with pytest.raises(ConfigError, match=r"--data cannot change when resuming \(the run used 'a'\)"):
        open_run(Demo(data="b"), LAYOUT, root=tmp_path, resume="latest")
    unfinished = RunLayout("demo", "demo", unfinished_only=True)
    with pytest.raises(ConfigError, match="no unfinished demo run under"):
        open_run(Demo(), unfinished, root=tmp_path, resume="latest")
    with pytest.raises(ConfigError, match="not found"):
        open_run(Demo(), LAYOUT, root=tmp_path, resume=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a demo run folder"):
        open_run(Demo(), LAYOUT, root=tmp_path, resume=str(tmp_path / "empty"))
    _saved_run(tmp_path, "bad", "epochs: many\n")
    with pytest.raises(ConfigError, match=r"bad/config.yaml \+ command line"):
        open_run(Demo(), LAYOUT, root=tmp_path, resume=str(tmp_path / "bad"))


def test_locate_maps_a_file_inside_a_run_to_the_run(tmp_path):
    run = _saved_run(tmp_path, "train", "epochs: 4\n")
    (run / "weights").mkdir()
    (run / "weights" / "last.pt").write_bytes(b"x")
    layout = RunLayout("demo", "demo", locate=lambda p: p.parent.parent if p.is_file() else p)
    assert open_run(Demo(), layout, root=tmp_path, resume=str(run / "weights" / "last.pt")).run_dir == run


def test_command_lines_are_spelled_from_the_schema_and_parse_back(tmp_path):
    run = tmp_path / "my runs" / "train"
    assert shlex.split(resume_command("demo", run)) == ["kitaeru", "demo", "train", "--resume", str(run)]
    line = command_line("demo", "train", Demo, {"epochs": 4, "exist_ok": True, "optim": {"learning_rate": 0.2},
                                                 "name": "a b", "resume": None})
    assert shlex.split(line) == ["kitaeru", "demo", "train", "--epochs", "4", "--exist-ok",
                                 "optim.learning_rate=0.2", "--name", "a b", "resume=null"]
    opened = open_run(Demo(), LAYOUT, root=tmp_path / "my runs")
    words = shlex.split(opened.restart_command())
    assert words[:5] == ["kitaeru", "demo", "train", "--config", str(run / "config.yaml")]
    assert words[5:] == ["--output-dir", str(tmp_path / "my runs"), "--name", "train", "--exist-ok"]


def test_every_training_recipe_uses_the_one_run_setup():
    """No recipe keeps its own copy of the run-folder/resume logic: each declares a RunLayout."""
    from kitaeru.core import run_setup

    src = Path(run_setup.__file__).resolve().parents[1] / "recipes"
    for recipe in ("detect", "docclass", "multimodal", "lora"):
        text = "".join(p.read_text(encoding="utf-8") for p in (src / recipe).glob("*.py"))
        assert "RunLayout(" in text, f"{recipe}: no RunLayout (its runs are not opened through core.run_setup)"
        assert "run_setup" in text


def test_a_weights_file_stands_for_its_run(tmp_path):
    from kitaeru.core.run_setup import weights_file_run

    run = _saved_run(tmp_path, "train", "epochs: 4\n")
    (run / "weights").mkdir()
    for name in ("last.pt", "last.ckpt"):
        (run / "weights" / name).write_bytes(b"x")
    (run / "best.pt").write_bytes(b"x")
    pt = weights_file_run(".pt")
    assert pt(run / "weights" / "last.pt") == run and pt(run / "best.pt") == run and pt(run) == run
    assert pt(run / "weights" / "last.ckpt") == run / "weights" / "last.ckpt"  # not a .pt: refused later
    assert weights_file_run()(run / "config.yaml") == run


def test_the_other_processes_of_a_run_join_rank_zeros_folder(tmp_path, monkeypatch):
    from kitaeru.core.distributed import RUN_DIR_ENV

    shared = RunLayout("demo", "demo", joins_rank_zero=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="share one run folder: give --name"):  # torchrun: no one may number alone
        open_run(Demo(), shared, root=tmp_path)
    _saved_run(tmp_path, "mine", "epochs: 4\n", status="completed")
    with pytest.raises(ConfigError, match="already holds a run"):  # rank 0 refuses a used name
        open_run(Demo(), shared, root=tmp_path, name="mine")
    monkeypatch.setenv("RANK", "1")
    assert open_run(Demo(), shared, root=tmp_path, name="mine").run_dir == tmp_path / "mine"  # rank 0 checked it
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "mine"))  # a ddp child handed rank 0's folder
    joined = open_run(Demo(), shared, root=tmp_path / "elsewhere")
    assert joined.run_dir == tmp_path / "mine" and not joined.resumed
    resumed = open_run(Demo.model_validate({"resume": "latest"}), shared, root=tmp_path / "elsewhere", resume="latest")
    assert resumed.run_dir == tmp_path / "mine" and resumed.config.epochs == 4
