"""The dashboard as a workbench, without a browser: the start form from the recipe schema, options
that would move a run refused, the job monitor (progress lines, final states, Ctrl-C restored,
resume), curves (smoothing, ranges, wall time, config diff), run evidence, map selections, image
paths from another working directory and the search upload limits. Fast: no model is trained."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from guards import guard, wait_until

from kitaeru.core.run import RunFolder
from kitaeru.ui import curves as C
from kitaeru.ui import forms as F
from kitaeru.ui import jobs as J
from kitaeru.ui import maps as M
from kitaeru.ui import runs as R

APP = Path(__file__).resolve().parents[1] / "src" / "kitaeru" / "ui" / "app.py"


# ---- the start form -------------------------------------------------------------------------------
def test_form_fields_are_the_schemas_flags_without_the_run_location():
    import click

    from kitaeru.cli.generate import schema_options

    for recipe in F.TRAINING_RECIPES:
        _, mode = F.train_mode(recipe)
        options, targets = schema_options(mode.schema)
        flagged = {targets[o.name] for o in options if isinstance(o, click.Option)}
        fields = {f.path: f for f in F.form_fields(recipe)}
        assert set(fields) == {p for p in flagged if not F.is_location(p)}, recipe
        assert not any(F.is_location(p) for p in fields)
    lora = {f.path: f for f in F.form_fields("lora")}
    assert (lora["resolution"].kind, lora["resolution"].default, lora["resolution"].flag) == ("int", 512, "--resolution")
    assert "multiple of 8" in lora["resolution"].help
    docclass = {f.path: f for f in F.form_fields("docclass")}
    assert docclass["loss.name"].kind == "choice" and set(docclass["loss.name"].choices) == {"cosface", "arcface"}
    assert "tiny_cpu" in F.presets("lora")


def test_a_preset_keeps_its_values_when_the_form_is_left_as_it_is(cli, tmp_path):
    fields = F.form_fields("lora")
    untouched = {f.path: None if f.kind in ("bool", "choice") else "" for f in fields}
    command = F.training_command("lora", F.field_arguments(fields, untouched), str(tmp_path), preset="tiny_cpu")
    assert command[3:] == ["lora", "train", "--output-dir", str(tmp_path), "--cfg-name", "tiny_cpu"]
    r = cli(*command[3:], "--print-config")
    assert r.exit_code == 0, r.stderr
    assert yaml.safe_load(r.stdout)["resolution"] == 32  # tiny_cpu's, not the schema's 512
    # what the user sets is passed, even the schema's default (it overrides the preset's 32)
    assert F.field_arguments(fields, {"resolution": "512", "rank": "", "center_crop": "off"}) == [
        "--resolution", "512", "--no-center-crop"]


def test_every_spelling_of_a_run_location_option_is_refused_in_more_options(tmp_path):
    import click

    from kitaeru.cli.generate import schema_options
    from kitaeru.core.config import key_aliases

    refused = 0
    for recipe in F.TRAINING_RECIPES:
        _, mode = F.train_mode(recipe)
        options, targets = schema_options(mode.schema)
        for option in options:
            if not isinstance(option, click.Option) or not F.is_location(targets[option.name]):
                continue
            for name in option.opts + option.secondary_opts:
                value = "" if option.is_flag and not option.flag_value else " elsewhere"
                if isinstance(option.type, click.Choice):
                    value = f" {option.type.choices[-1]}"
                with pytest.raises(ValueError, match="sets where the run is written"):
                    F.check_extra(recipe, f"{name}{value}")
                refused += 1
        location_keys = [k for k in mode.schema.model_fields if F.is_location(k)]
        location_keys += [a for a, path in key_aliases(mode.schema).items() if F.is_location(path)]
        for key in location_keys:
            for text in (f"{key}=/elsewhere", f"--set {key}=/elsewhere"):
                with pytest.raises(ValueError, match="sets where the run is written"):
                    F.check_extra(recipe, text)
                refused += 1
    assert refused > 40
    config = tmp_path / "other.yaml"
    config.write_text("output_dir: /elsewhere\n")
    with pytest.raises(ValueError, match="output_dir sets where"):
        F.check_extra("lora", f"--config {config}")
    with pytest.raises(ValueError, match="more options: No such option"):
        F.check_extra("lora", "--no-such-option 3")
    assert F.check_extra("docclass", "--seed 3 loss.name=arcface") == ["--seed", "3", "loss.name=arcface"]


# ---- jobs ------------------------------------------------------------------------------------------
def test_progress_lines_reach_a_log_without_progress_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KITAERU_NO_PROGRESS", "1")
    monkeypatch.setenv("KITAERU_PROGRESS_LINES", "1")
    run = RunFolder(tmp_path / "run", tensorboard=False)
    with run.lifecycle(resume_command="kitaeru x train --resume run", recipe="x", epochs_planned=3):
        run.log_epoch({"epoch": 1, "seconds": 2.5, "loss": 0.75})
        run.log_epoch({"epoch": 2, "seconds": 2.5, "loss": 0.5})
    err = capsys.readouterr().err
    assert "epoch 1/3: seconds 2.5, loss 0.75" in err and "epoch 2/3: seconds 2.5, loss 0.5" in err
    monkeypatch.delenv("KITAERU_PROGRESS_LINES")
    quiet = RunFolder(tmp_path / "quiet", tensorboard=False)
    with quiet.lifecycle(resume_command="kitaeru x train --resume quiet", recipe="x"):
        quiet.log_epoch({"epoch": 1, "loss": 0.75})
    assert "epoch 1" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_job_stops_on_ctrl_c_even_when_the_dashboard_ignores_sigint(tmp_path):
    """A dashboard started by nohup/cron inherits SIGINT ignored; its jobs must still stop."""
    root = tmp_path / "runs"
    root.mkdir()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # a long-running kitaeru command that ends cleanly (exit 0) on Ctrl-C
        job = J.start_job("ui", [sys.executable, "-m", "kitaeru", "ui", "--runs", str(root), "--port", "0"], root,
                          str(root))
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        wait_until(lambda: "kitaeru ui: http" in J.log_tail(job), "the dashboard answering", proc=J._PROCESSES[job.pid])
        assert J.stop_job(job)
        assert J.wait(job, guard()) == 0, J.log_tail(job)
    finally:
        if J.poll(job) is None:
            os.killpg(job.pid, signal.SIGKILL)


def _job(tmp_path: Path, log: str, code: int | None, output_dir: Path) -> J.Job:
    path = tmp_path / f"job{len(list(tmp_path.glob('job*.log')))}.log"
    path.write_text(log)
    return J.Job(id="j1", recipe="lora", command=[sys.executable, "-m", "kitaeru", "lora", "train"], pid=-5,
                 log=str(path), started=time.time(), output_dir=str(output_dir), returncode=code)


def test_a_jobs_final_state_and_its_resume_command(tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "lora" / "train"
    run_dir.mkdir(parents=True)
    interrupted = _job(tmp_path, f"epoch 1/9: loss 0.5\nerror: interrupted; resume with: kitaeru lora train --resume "
                                 f"{run_dir}\n", 130, root / "lora")
    state = J.outcome(interrupted)
    assert (state.state, state.resume) == ("interrupted", f"kitaeru lora train --resume {run_dir}")
    failed = J.outcome(_job(tmp_path, "loading\nerror: --data-dir x: not found\n", 2, root))
    assert failed.state == "failed" and failed.message == "failed (exit 2): error: --data-dir x: not found"
    assert J.outcome(_job(tmp_path, "done\n", 0, root)).state == "completed"
    roots = R.Roots.of([root])
    outside = _job(tmp_path, "error: interrupted; resume with: kitaeru lora train --resume /elsewhere/run\n", 130, root)
    with pytest.raises(R.OutsideRoots):
        J.resume_job(outside, roots)
    # Resume runs the printed command as a new job (here the run folder holds no run: a clean failure).
    resumed = J.resume_job(interrupted, roots)
    try:
        assert resumed.command[3:] == ["lora", "train", "--resume", str(run_dir)]
        assert J.job_run_dir(resumed) == run_dir
        assert J.wait(resumed, guard()) == 2
        assert J.outcome(resumed).message.startswith("failed (exit 2): error: ")
        assert "Traceback" not in Path(resumed.log).read_text()
    finally:
        if J.poll(resumed) is None:
            os.killpg(resumed.pid, signal.SIGKILL)


# ---- curves and run evidence --------------------------------------------------------------------------
def test_curve_helpers_smooth_range_and_wall_time():
    assert C.smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, 7 / 3])  # de-biased: starts at the first value
    assert C.smooth([1.0, 3.0], 0.0) == [1.0, 3.0]
    lo, hi = C.y_range([0.001] * 5)
    assert 0 < lo < 0.001 < hi < 0.002  # a constant lr gets its own scale, not -1..1
    assert C.y_range([0.1, 0.5]) is None
    assert C.y_range([1e-4, 1e-4], log_y=True) == pytest.approx([-4.5, -3.5])
    rows = [{"epoch": 1, "seconds": 30.0, "loss": 2.0}, {"epoch": 2, "seconds": 90.0, "loss": -1.0}]
    assert C.x_values(rows, "wall time (min)") == [0.5, 2.0]
    assert C.series(rows, "loss", "epoch", log_y=True) == ([1], [2.0])  # no non-positive values on a log axis
    assert C.x_modes(["epoch", "seconds", "loss"]) == ["epoch", "wall time (min)"]
    assert C.config_diff({"a": 1, "t.lr": 0.1}, {"a": 1, "t.lr": 0.2, "b": None}) == [
        {"setting": "b", "A": "–", "B": "null"}, {"setting": "t.lr", "A": "0.1", "B": "0.2"}]


def test_durations_key_metric_of_a_stopped_run_and_tracker_links(tmp_path):
    assert [R.format_duration(s) for s in (None, 4.25, 178.348, 3725)] == ["–", "4.2 s", "2 min 58 s", "1 h 02 min"]
    stopped = RunFolder(tmp_path / "runs" / "lora" / "train", tensorboard=False)
    with pytest.raises(Exception, match="resume with"):
        with stopped.lifecycle(resume_command="kitaeru lora train --resume x", recipe="lora"):
            stopped.log_epoch({"epoch": 1, "seconds": 1.0, "loss": 0.9})
            stopped.log_epoch({"epoch": 2, "seconds": 1.0, "loss": 0.4})
            raise KeyboardInterrupt
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    died = tmp_path / "runs" / "killed"
    died.mkdir()
    (died / "training_result.json").write_text(json.dumps({
        "status": "running", "recipe": "multimodal", "pid": dead.pid, "host": socket.gethostname(),
        "started_at": "2026-01-01T00:00:00", "heartbeat_at": "2026-01-01T00:03:10",
        "tracking": [{"backend": "mlflow", "run_id": "abc", "url": "http://127.0.0.1:5000/#/runs/abc", "experiment": "x"},
                     {"backend": "wandb", "error": "not logged in"}, "junk"]}))
    runs = {r.name: r for r in R.find_runs(R.Roots.of([tmp_path / "runs"]))}
    lora = runs["lora/train"]
    assert lora.status == "interrupted" and lora.key_metric == ("loss", 0.4)
    assert runs["killed"].status == "died" and runs["killed"].duration == "3 min 10 s"
    assert runs["killed"].row()["duration"] == "3 min 10 s"
    assert runs["killed"].tracking == [
        {"backend": "mlflow", "run_id": "abc", "url": "http://127.0.0.1:5000/#/runs/abc", "experiment": "x"},
        {"backend": "wandb", "error": "not logged in"}]


def test_only_adapters_the_generator_can_load_are_listed(tmp_path):
    run_dir = tmp_path / "runs" / "lora" / "train"
    for folder, name in (("final", "pytorch_lora_weights.safetensors"), ("checkpoint-2", "adapter_model.safetensors"),
                         ("checkpoint-10", "adapter_model.safetensors"), ("checkpoint-3", "notes.txt")):
        (run_dir / "lora_model" / folder).mkdir(parents=True)
        (run_dir / "lora_model" / folder / name).write_bytes(b"x")
    (run_dir / "training_result.json").write_text(json.dumps({"status": "completed", "recipe": "lora"}))
    (run,) = R.find_runs(R.Roots.of([tmp_path / "runs"]))
    assert [label for label, _ in R.adapters([run])] == [
        "lora/train / final", "lora/train / checkpoint-2", "lora/train / checkpoint-10"]


# ---- map selections, image paths, uploads ----------------------------------------------------------
def test_map_images_resolve_when_the_dashboard_runs_elsewhere(tmp_path, monkeypatch):
    """A multimodal run that recorded ``runs/mm/scenes`` (relative to its cwd) shows its images from /tmp."""
    from PIL import Image

    project = tmp_path / "project"
    scenes = project / "runs" / "mm" / "scenes"
    (scenes / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(scenes / "images" / "s0.png")
    out = project / "runs" / "mm"
    (out / "training_result.json").write_text(json.dumps({"status": "completed", "recipe": "multimodal",
                                                          "data": {"source": "runs/mm/scenes"}}))
    (out / "scenes_with_umap.json").write_text(json.dumps([
        {"scene_id": "s0", "description": "red", "descriptions": ["red", "a red square"], "image_path": "images/s0.png",
         "umap_coords": [0.0, 1.0], "metadata": {"vehicles": 3, "weather": "rain"}}]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert M._data_dir(out) == str(scenes)
    data = M.load_map(M.MapSource("multimodal", out, project / "runs"))
    assert data.images == [str(scenes / "images" / "s0.png")] and data.captions == [["red", "a red square"]]
    assert M.image_bytes(R.Roots.of([project / "runs"]), data.images[0]) is not None
    assert M.resolve_recorded("/abs/path", out) == "/abs/path"
    assert M.resolve_recorded("s3://bucket/x", out) == "s3://bucket/x"
    assert M.resolve_recorded("scenes", out, cwd=str(project / "runs" / "mm")) == str(scenes)


def test_selection_rows_downloads_colour_scales_and_hit_labels():
    data = M.MapData(ids=["a", "b", "c"], x=[0.0, 1.0, 2.0], y=[0.0, 1.0, 2.0], labels=["a: x", "b: y", "c: z"],
                     images=["/i/a.png", None, "/i/c.png"], columns={"vehicles": [3, 12, 7], "weather": ["r", "s", None]})
    records = M.selection_rows(data, [2, 0])
    assert records[0] == {"id": "c", "label": "c: z", "x": 2.0, "y": 2.0, "image": "/i/c.png", "vehicles": 7,
                          "weather": None}
    text = M.rows_csv(records)
    assert text.splitlines()[0] == "id,label,x,y,image,vehicles,weather" and len(text.splitlines()) == 3
    assert M.is_continuous("speed", [0.5, 1.25, None])
    assert M.is_continuous("vehicles", list(range(12)))
    assert not M.is_continuous("cluster", list(range(12)))
    assert not M.is_continuous("weather", ["r", "s"]) and not M.is_continuous("flag", [True, False] * 6)
    offsets = M.label_offsets(20)
    assert len(set(offsets)) == 20
    assert min(abs(a[0] - b[0]) + abs(a[1] - b[1]) for i, a in enumerate(offsets) for b in offsets[i + 1:]) > 10


def test_search_uploads_go_through_the_apis_image_limits(monkeypatch):
    from PIL import Image, ImageFile

    from kitaeru.core.errors import DataError

    buffer = io.BytesIO()
    Image.new("L", (32, 500_000)).save(buffer, "PNG")
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixels were decoded before the size was checked")

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)  # refused from the header alone
        with pytest.raises(DataError, match="strip.png: 32x500000 has an aspect ratio"):
            M.open_query_image(buffer.getvalue(), "strip.png")
    with pytest.raises(ValueError, match="empty upload"):
        M.open_query_image(b"", "empty.png")
    ok = io.BytesIO()
    Image.new("RGB", (64, 48), "blue").save(ok, "PNG")
    assert M.open_query_image(ok.getvalue(), "ok.png").size == (64, 48)


# ---- the pages (Streamlit's AppTest) ------------------------------------------------------------------
def _runs_with_curves(root: Path) -> None:
    for name, lr in (("train", 0.001), ("train2", 0.001)):
        run = RunFolder(root / "detect" / name, tensorboard=False)
        (run.path / "config.yaml").write_text(f"epochs: 3\ntrain:\n  lr0: {lr}\n  name: {name}\n")
        with run.lifecycle(resume_command=f"kitaeru detect train --resume {run.path}", recipe="detect", epochs_planned=3):
            for e in (1, 2, 3):
                run.log_epoch({"epoch": e, "seconds": 10.0, "box_loss": 1.0 / e, "mAP50": 0.1 * e, "lr": lr})


def test_training_page_compares_every_run_like_tensorboard(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _runs_with_curves(tmp_path / "runs")
    monkeypatch.setenv("KITAERU_UI_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(APP), default_timeout=guard())
    at.query_params["page"] = "training"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert set(at.multiselect(key="curve-runs-detect").value) == {"detect/train", "detect/train2"}  # all, by default
    at.slider(key="curve-smooth").set_value(0.6)
    at.toggle(key="curve-log").set_value(True)
    at.radio(key="curve-x").set_value("wall time (min)").run()
    figures = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
               for c in at.get("plotly_chart")}
    loss = figures["box_loss"]
    assert len(loss["data"]) == 4  # raw + smoothed per run
    assert len({t["line"]["color"] for t in loss["data"]}) == 2  # a colour per run
    assert loss["layout"]["yaxis"]["type"] == "log" and loss["data"][1]["x"] == [0.1667, 0.3333, 0.5]
    lr = figures["lr"]
    assert lr["layout"]["yaxis"]["range"] == pytest.approx([-3.5, -2.5])  # 0.001 on its own decade, not ±1
    assert "%{y" in loss["data"][1]["hovertemplate"]
    assert any("train.name" in str(d.value.to_dict()) for d in at.dataframe if hasattr(d.value, "to_dict"))
