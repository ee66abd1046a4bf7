"""docclass runs opened through the shared run setup (core.run_setup): numbered and exact run
folders, ``--resume latest|RUN`` with the saved config as the base and what was given on top, the
network a run's checkpoints hold kept fixed, old spellings in saved configs, and the printed resume
command that leads back to the same run. No training here: the entry is replaced by a probe that
reports the run it would train."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from kitaeru.core.config import config_to_yaml, load_config
from kitaeru.core.errors import ConfigError
from kitaeru.recipes.docclass.checks import open_training_run
from kitaeru.recipes.docclass.config import TrainConfig


def _config(**given) -> TrainConfig:
    """The config the command line builds from dotted ``given`` settings (``train.epochs=3`` ...)."""
    return load_config(TrainConfig, "docclass", overrides={k.replace("__", "."): v for k, v in given.items()})


def _saved_run(root: Path, name: str, *, status: str | None = "completed", stamp: float | None = None,
               old_spelling: bool = False, **settings) -> Path:
    """A run folder as training leaves it: config.yaml (+ training_result.json, weights/)."""
    run = root / name
    (run / "weights").mkdir(parents=True)
    text = config_to_yaml(_config(**settings))
    if old_spelling:  # a run written before optim.lr became optim.learning_rate
        data = yaml.safe_load(text)
        data["optim"]["lr"] = data["optim"].pop("learning_rate")
        text = yaml.safe_dump(data)
    (run / "config.yaml").write_text(text)
    if status:
        (run / "training_result.json").write_text(json.dumps({"status": status}))
    if stamp is not None:
        for file in run.iterdir():
            os.utime(file, (stamp, stamp))
    return run


@pytest.fixture
def probe(monkeypatch):
    """Replace the training itself by a report of the run it would continue or start."""
    import kitaeru.recipes.docclass.training as training

    def report(config: TrainConfig, *, callbacks=()):
        opened = open_training_run(config)
        return {"run_dir": str(opened.run_dir), "resumed": opened.resumed, "epochs": opened.config.train.epochs,
                "learning_rate": opened.config.optim.learning_rate, "seed": opened.config.train.seed}

    monkeypatch.setattr(training, "run_training", report)


def test_new_runs_are_numbered_after_the_config_name_and_run_name_is_exact(tmp_path):
    first = open_training_run(_config(train__output_dir=str(tmp_path)))
    assert first.run_dir == tmp_path / "docclass" and not first.resumed
    _saved_run(tmp_path, "docclass")
    assert open_training_run(_config(train__output_dir=str(tmp_path))).run_dir == tmp_path / "docclass2"
    preset = load_config(TrainConfig, "docclass", cfg_name="cpu_quickstart", overrides={"train.output_dir": str(tmp_path)})
    assert open_training_run(preset).run_dir == tmp_path / "cpu_quickstart"
    with pytest.raises(ConfigError, match="already holds a run"):
        open_training_run(_config(train__output_dir=str(tmp_path), run_name="docclass"))
    again = open_training_run(_config(train__output_dir=str(tmp_path), run_name="docclass", exist_ok=True))
    assert again.run_dir == tmp_path / "docclass" and not again.resumed
    # --exist-ok without --run-name still numbers the config's name: it never reuses a run by accident
    assert open_training_run(_config(train__output_dir=str(tmp_path), exist_ok=True)).run_dir == tmp_path / "docclass2"


def test_exist_ok_replaces_the_earlier_evidence_of_a_named_run(tmp_path):
    from kitaeru.recipes.docclass.training import _prepare_run

    run = _saved_run(tmp_path, "mine", train__epochs=2)
    for stale in ("results.csv", "weights/last.ckpt", "weights/best.ckpt"):
        (run / stale).write_text("old")
    opened = open_training_run(_config(train__output_dir=str(tmp_path), run_name="mine", exist_ok=True, train__epochs=4))
    _prepare_run(opened)
    assert not any((run / stale).exists() for stale in ("results.csv", "training_result.json", "weights/last.ckpt"))
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 4


def test_resume_latest_takes_the_newest_run_and_a_path_may_be_a_checkpoint(tmp_path):
    old = _saved_run(tmp_path, "docclass", stamp=1_000_000, train__epochs=2)
    new = _saved_run(tmp_path, "docclass2", status="interrupted", stamp=2_000_000, train__epochs=5)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.yaml").write_text("name: notes\n")  # a config alone is not a run
    os.utime(tmp_path / "notes" / "config.yaml", (3_000_000, 3_000_000))
    latest = open_training_run(_config(train__output_dir=str(tmp_path), resume="latest"))
    assert latest.resumed and latest.run_dir == new and latest.config.train.epochs == 5
    assert latest.config.resume == str(new)
    (old / "weights" / "last.ckpt").write_bytes(b"")
    by_checkpoint = open_training_run(_config(resume=str(old / "weights" / "last.ckpt")))
    assert by_checkpoint.run_dir == old and by_checkpoint.config.train.epochs == 2
    with pytest.raises(ConfigError, match="not a docclass run folder"):
        open_training_run(_config(resume=str(tmp_path / "notes")))
    with pytest.raises(ConfigError, match="--resume latest: no docclass run under"):
        open_training_run(_config(train__output_dir=str(tmp_path / "empty"), resume="latest"))


def test_a_setting_given_on_resume_wins_even_when_it_is_the_default(tmp_path):
    run = _saved_run(tmp_path, "docclass", train__epochs=3, train__seed=7, optim__learning_rate=0.01)
    kept = open_training_run(_config(resume=str(run)))
    assert (kept.config.train.epochs, kept.config.train.seed, kept.config.optim.learning_rate) == (3, 7, 0.01)
    default_epochs = TrainConfig().train.epochs
    given = open_training_run(_config(resume=str(run), train__epochs=default_epochs, optim__learning_rate=1e-3))
    assert given.config.train.epochs == default_epochs and given.config.optim.learning_rate == 1e-3
    assert given.config.train.seed == 7  # not given: the run's own


def test_a_resume_that_changes_the_network_is_refused(tmp_path, cli):
    run = _saved_run(tmp_path, "docclass", model__embedding_dim=64)
    assert open_training_run(_config(resume=str(run), model__embedding_dim=64)).resumed  # the same value is fine
    with pytest.raises(ConfigError, match=r"another network \(model.embedding_dim 64 vs 32\)"):
        open_training_run(_config(resume=str(run), model__embedding_dim=32))
    before = sorted(p.name for p in run.rglob("*"))
    r = cli("docclass", "train", "--resume", run, "model.backbone=resnet18")
    assert r.exit_code == 2 and "another network" in r.stderr and "model.backbone" in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1
    assert sorted(p.name for p in run.rglob("*")) == before  # refused before anything was written


def test_old_spellings_in_saved_configs_and_presets_keep_working(tmp_path):
    run = _saved_run(tmp_path, "docclass", old_spelling=True, optim__learning_rate=0.02)
    assert "lr" in yaml.safe_load((run / "config.yaml").read_text())["optim"]
    assert open_training_run(_config(resume=str(run))).config.optim.learning_rate == 0.02
    assert open_training_run(_config(resume=str(run), optim__lr=0.5)).config.optim.learning_rate == 0.5
    old_file = tmp_path / "old.yaml"
    old_file.write_text("optim:\n  lr: 0.004\ntrain:\n  precision: bf16\n")
    config = load_config(TrainConfig, "docclass", config_file=old_file)
    assert config.optim.learning_rate == 0.004 and config.train.precision == "bf16-mixed"
    assert _config(train__precision="fp16").train.precision == "16-mixed"
    assert _config(train__precision="no").train.precision == "32"


def test_the_printed_resume_command_leads_back_to_the_same_run(tmp_path, cli, probe):
    run = _saved_run(tmp_path / "my runs", "docclass", status="interrupted", train__epochs=4, train__seed=9)
    command = open_training_run(_config(resume=str(run))).resume_command
    words = shlex.split(command)
    assert words == ["kitaeru", "docclass", "train", "--resume", str(run)]
    r = cli(*words[1:], "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"run_dir": str(run), "resumed": True, "epochs": 4, "learning_rate": 1e-3, "seed": 9}
    r = cli(*words[1:], "--epochs", str(TrainConfig().train.epochs), "--lr", "0.05", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["epochs"] == TrainConfig().train.epochs and json.loads(r.stdout)["learning_rate"] == 0.05
    r = cli("docclass", "train", "--resume", "--output-dir", tmp_path / "my runs", "--json")  # bare --resume: latest
    assert r.exit_code == 0 and json.loads(r.stdout)["run_dir"] == str(run)
