"""``multimodal train`` opens its runs through the core run setup: ``--output-dir`` is the run folder
(default ``runs/multimodal``, ``runs/multimodal2`` ...), ``--resume`` continues the named folder or the
newest multimodal run with its saved config and what was given now on top, pinned settings cannot
change, and the printed resume command parses back to the same run.

No model is trained here: the runs are saved folders, and the one command line that reaches the
training entry stops there with the config it was given.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from kitaeru.core.config import config_to_yaml
from kitaeru.core.errors import ConfigError
from kitaeru.core.run_setup import resume_command
from kitaeru.recipes.multimodal.config import LAYOUT, MultimodalConfig, handed_run, open_train_run


def _saved_run(folder: Path, config_text: str | None = None, *, recipe: str = "multimodal", stamp: float | None = None,
               **settings) -> Path:
    """A run folder as training leaves it: the resolved config.yaml and the run's result."""
    folder.mkdir(parents=True)
    text = config_text if config_text is not None else config_to_yaml(MultimodalConfig(**settings), "resolved config")
    (folder / "config.yaml").write_text(text, encoding="utf-8")
    (folder / "training_result.json").write_text(json.dumps({"status": "interrupted", "recipe": recipe}))
    if stamp is not None:  # when the run last wrote its evidence: what "latest" goes by
        for name in ("config.yaml", "training_result.json"):
            os.utime(folder / name, (stamp, stamp))
    return folder


def _opened(**given):
    return open_train_run(MultimodalConfig(**given))


def test_resume_latest_is_the_newest_multimodal_run_and_a_path_names_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    _saved_run(runs / "multimodal", use_sample_data=True, stamp=1_000)
    newest = _saved_run(runs / "multimodal2", use_sample_data=True, stamp=2_000)
    _saved_run(runs / "lora-like", "epochs: 1\n", recipe="lora", stamp=3_000)  # another job's run: never "latest"
    opened = _opened(resume="latest")
    assert opened.resumed and opened.run_dir == Path("runs/multimodal2")
    assert opened.config.output_dir == opened.config.resume == "runs/multimodal2"

    # a run folder, a file inside it, or --output-dir with --resume alone: that run
    (newest / "weights").mkdir()
    (newest / "weights" / "last.ckpt").write_bytes(b"x")
    older = runs / "multimodal"
    assert _opened(resume=str(older)).run_dir == older
    assert _opened(resume=str(newest / "weights" / "last.ckpt")).run_dir == newest
    assert _opened(resume="latest", output_dir=str(older)).run_dir == older
    assert _opened(resume=str(newest / "weights" / "last.ckpt"), output_dir=str(newest)).run_dir == newest

    # sagemaker: --resume alone continues the model folder
    monkeypatch.setenv("SM_MODEL_DIR", str(older))
    assert _opened(resume="latest", cloud="sagemaker").run_dir == older


def test_refusals_name_the_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--resume latest: no multimodal run under runs"):
        _opened(resume="latest")
    with pytest.raises(ConfigError, match=r"--skip-training: no run under runs/ to use \(give --output-dir RUN_FOLDER\)"):
        _opened(skip_training=True)
    with pytest.raises(ConfigError, match="no checkpoint to continue from"):
        _opened(resume="latest", output_dir=str(tmp_path / "never-ran"))
    run = _saved_run(tmp_path / "a", use_sample_data=True)
    with pytest.raises(ConfigError, match="give one run folder"):
        _opened(resume=str(run), output_dir=str(tmp_path / "b"))


def test_an_option_given_on_resume_wins_even_when_it_equals_the_default(tmp_path):
    run = _saved_run(tmp_path / "run", use_sample_data=True, epochs=9, learning_rate=0.01, seed=5)
    default_epochs = MultimodalConfig.model_fields["epochs"].default
    merged = _opened(resume=str(run), epochs=default_epochs).config
    assert merged.epochs == default_epochs  # given, so it counts, though it is the default
    assert merged.learning_rate == 0.01 and merged.seed == 5 and merged.use_sample_data  # the rest is the run's
    assert not merged.exist_ok and merged.resume == str(run)


def test_old_spellings_in_a_saved_config_and_a_new_data_source(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    run = _saved_run(tmp_path / "old", f"data: {scenes}\nlr: 0.02\nbatch: 8\noutput: {tmp_path / 'old'}\n")
    merged = _opened(resume=str(run)).config
    assert (merged.data_dir, merged.learning_rate, merged.batch_size) == (str(scenes), 0.02, 8)
    # a data source given now replaces the saved one (not "give one data source")
    merged = _opened(resume=str(run), use_sample_data=True).config
    assert merged.use_sample_data and merged.data_dir is None and merged.learning_rate == 0.02


def test_a_pinned_setting_cannot_change_on_resume(tmp_path, cli):
    run = _saved_run(tmp_path / "run", use_sample_data=True, embed_dim=16)
    before = (run / "training_result.json").read_text()
    with pytest.raises(ConfigError, match=r"--embed-dim cannot change when resuming \(the run used 16\)"):
        _opened(resume=str(run), embed_dim=32)
    assert _opened(resume=str(run), embed_dim=16).config.embed_dim == 16  # the same value is no change
    r = cli("multimodal", "train", "--resume", run, "--text-encoder", "text:e5-small-multilingual")
    assert r.exit_code == 2 and "--text-encoder cannot change when resuming" in r.stderr and "Traceback" not in r.stderr
    assert (run / "training_result.json").read_text() == before  # refused before the run was touched


def test_the_printed_resume_command_parses_back_to_the_same_run(tmp_path, cli, monkeypatch):
    from kitaeru.recipes.multimodal import training
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

    scenes = write_sample_scenes(tmp_path / "scenes", 4, seed=1)
    run = _saved_run(tmp_path / "my runs" / "run", data_dir=str(scenes), embed_dim=16, epochs=9, seed=5)
    command = resume_command(LAYOUT.recipe, run)  # what the run lifecycle records and prints
    assert _opened(resume=str(run)).resume_command == command

    seen = {}

    def stop_with_the_config(config):
        seen["config"] = config
        return {"status": "stopped before training"}

    monkeypatch.setattr(training, "train_scene_search", stop_with_the_config)
    words = shlex.split(command)
    assert words[:4] == ["kitaeru", "multimodal", "train", "--resume"]
    r = cli(*words[1:], "--epochs", "30", "--json")
    assert r.exit_code == 0, r.stderr
    config = seen["config"]
    assert config.output_dir == config.resume == str(run)
    assert (config.data_dir, config.embed_dim, config.seed) == (str(scenes), 16, 5)  # the saved config came back
    assert config.epochs == 30  # and the option given now is on top


def test_a_ddp_process_takes_rank_zeros_folder(tmp_path):
    run = _saved_run(tmp_path / "run", use_sample_data=True, embed_dim=16, epochs=9)
    fresh = handed_run(MultimodalConfig(use_sample_data=True), str(run))
    assert fresh.config.output_dir == str(run) and not fresh.resumed and fresh.config.embed_dim == 256
    resumed = handed_run(MultimodalConfig(resume="latest", epochs=12), str(run))
    assert resumed.resumed and resumed.config.resume == str(run)
    assert (resumed.config.embed_dim, resumed.config.epochs) == (16, 12)


def test_skip_training_says_when_a_given_encoder_is_not_the_trained_one():
    from kitaeru.recipes.multimodal.export import encoders_not_trained_with

    trained = {"text_encoder": "text:e5-small-multilingual", "image_encoder": "torchvision:mobilenet_v2"}
    assert encoders_not_trained_with(MultimodalConfig(), trained) == []  # nothing given: the trained ones, silently
    assert encoders_not_trained_with(MultimodalConfig(text_encoder="default"), trained) == ["--text-encoder"]
    assert encoders_not_trained_with(MultimodalConfig(image_encoder="torchvision:mobilenet_v2"), trained) == []
