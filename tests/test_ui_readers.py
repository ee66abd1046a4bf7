"""The dashboard's readers and guards, and ``results.png``, on run folders written by the real
:class:`~kitaeru.core.run.RunFolder` (fast: no model is trained here; the pages on real tiny runs of
each recipe are in ``test_ui_pages.py``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from guards import guard, kitaeru_with_import_probe

from kitaeru.core.errors import RunInterrupted
from kitaeru.core.run import RunFolder

APP = Path(__file__).resolve().parents[1] / "src" / "kitaeru" / "ui" / "app.py"
# The columns ``kitaeru detect train`` writes (see recipes/detect/evidence.py).
DETECT_ROWS = [{"epoch": e, "seconds": 1.0, "box_loss": 1.5 / e, "cls_loss": 2.0 / e, "dfl_loss": 1.2 / e,
                "precision": 0.3 * e, "recall": 0.25 * e, "mAP50": 0.2 * e, "mAP50-95": 0.1 * e, "lr": 0.01}
               for e in (1, 2, 3)]


def detect_like_run(path: Path, *, status: str = "completed") -> Path:
    run = RunFolder(path, tensorboard=False)
    (run.path / "config.yaml").write_text("# resolved config of this run\ndata_dir: data.yaml\nepochs: 3\n")
    with run.lifecycle(resume_command=f"kitaeru detect train --resume {path}", recipe="detect", epochs_planned=3,
                       resources={"tier": "cpu", "batch": 4}, oom_recoveries=[{"step": "halve batch", "batch": 2}]):
        for row in DETECT_ROWS:
            run.log_epoch(row)
        run.record_skipped([{"path": "images/bad.jpg", "reason": "corrupt JPEG"}])
        run.write_result(status, metrics={"mAP50": 0.6, "mAP50-95": 0.3})
    return path


def test_every_ending_of_a_run_draws_results_png(tmp_path):
    done = detect_like_run(tmp_path / "done")
    assert (done / "results.png").stat().st_size > 5_000

    stopped = RunFolder(tmp_path / "stopped", tensorboard=False)
    with pytest.raises(RunInterrupted, match="resume with: kitaeru lora train --resume"):
        with stopped.lifecycle(resume_command=f"kitaeru lora train --resume {stopped.path}", recipe="lora"):
            stopped.log_epoch({"epoch": 1, "loss": 1.0})
            raise KeyboardInterrupt
    assert json.loads((stopped.path / "training_result.json").read_text())["status"] == "interrupted"
    assert (stopped.path / "results.png").is_file()


def test_a_plot_never_fails_a_run(tmp_path, capsys):
    run = RunFolder(tmp_path / "run", tensorboard=False)
    with run.lifecycle(resume_command="kitaeru x train --resume run", recipe="x"):
        run.log_epoch({"epoch": 1, "loss": 1.0})
        (run.path / "results.png").mkdir()  # the PNG cannot be written where a folder stands
    assert json.loads(run.result_json.read_text())["status"] == "completed"
    assert "results.png: not drawn" in capsys.readouterr().err


def test_results_png_draws_every_curve_on_round_ticks(tmp_path):
    from PIL import Image

    from kitaeru.core.plots import PANEL, nice_ticks

    assert nice_ticks(2.65, 3.86) == [2.75, 3.0, 3.25, 3.5, 3.75]
    assert nice_ticks(1, 3, integer=True) == [1, 2, 3] and nice_ticks(1, 1, integer=True) == [1]
    assert nice_ticks(0, 0) == [-0.04, -0.02, 0.0, 0.02, 0.04]  # a flat curve still gets a scale
    assert nice_ticks(0, 0.00034) == [0.0, 0.0001, 0.0002, 0.0003]
    for lo, hi in ((1, 300), (-3e-5, 1e6), (0.1, 0.1000001)):
        ticks = nice_ticks(lo, hi, integer=True) if lo == 1 else nice_ticks(lo, hi)
        assert 1 <= len(ticks) <= 6 and all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks), (lo, hi, ticks)
    run = detect_like_run(tmp_path / "run")
    with Image.open(run / "results.png") as image:
        # 8 curves (loss, metric and lr columns of DETECT_ROWS): 5 panels a row, 2 rows, and a title line
        assert image.size == (5 * PANEL[0], 2 * PANEL[1] + 40) and image.mode == "RGB"


def test_runs_are_found_with_status_epochs_and_key_metric(tmp_path):
    from kitaeru.ui.runs import Roots, find_runs, oom_recoveries, skipped_inputs

    detect_like_run(tmp_path / "runs" / "detect" / "train")
    # A run killed hard: still "running" on disk, its process gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    died = tmp_path / "runs" / "killed"
    died.mkdir(parents=True)
    (died / "training_result.json").write_text(json.dumps({
        "status": "running", "recipe": "multimodal", "pid": dead.pid, "host": socket.gethostname(),
        "started_at": "2026-01-01T00:00:00", "epochs_completed": 1, "epochs_planned": 5}))
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "training_result.json").write_text("{not json")

    runs = {r.name: r for r in find_runs(Roots.of([tmp_path / "runs"]))}
    assert set(runs) == {"detect/train", "killed", "broken"}
    detect = runs["detect/train"]
    assert (detect.recipe, detect.status, detect.epochs) == ("detect", "completed", "3/3")
    assert detect.key_metric == ("mAP50-95", 0.3)
    assert oom_recoveries(detect.result) == [{"step": "halve batch", "batch": 2}]
    assert skipped_inputs(detect.result) == [{"path": "images/bad.jpg", "reason": "corrupt JPEG"}]
    assert runs["killed"].status == "died" and runs["killed"].epochs == "1/5"
    assert runs["broken"].status == "unreadable" and "training_result.json" in runs["broken"].error


def test_files_outside_the_run_folders_are_refused(tmp_path):
    from kitaeru.ui.maps import image_bytes
    from kitaeru.ui.runs import OutsideRoots, Roots

    root = tmp_path / "runs"
    root.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    (root / "inside.png").write_bytes(b"\x89PNG ok")
    (root / "link.png").symlink_to(secret)
    roots = Roots.of([root])
    assert roots.read_bytes(root / "inside.png") == b"\x89PNG ok"
    for bad in (root / ".." / "secret.png", root / "link.png", "/etc/passwd"):
        with pytest.raises(OutsideRoots):
            roots.resolve(bad)
        assert image_bytes(roots, str(bad)) is None


def test_map_selection_maps_back_to_points():
    from kitaeru.ui.maps import selected_rows

    event = {"selection": {"points": [{"curve_number": 1, "point_index": 0}, {"curve_number": 0, "point_index": 2}]}}
    assert selected_rows(event, [[5, 6, 7], [1, 2]]) == [1, 7]
    assert selected_rows(None, [[1]]) == []


def test_training_commands_of_the_start_form(tmp_path):
    from kitaeru.ui.forms import field_arguments, form_fields, training_command

    fields = form_fields("multimodal")
    args = field_arguments(fields, {"data_dir": "", "epochs": "3", "batch_size": "", "use_sample_data": "on"})
    cmd = training_command("multimodal", args, str(tmp_path), "--seed 4")
    # fields left empty are left out
    assert cmd[1:] == ["-m", "kitaeru", "multimodal", "train", "--output-dir", str(tmp_path), "--use-sample-data",
                       "--epochs", "3", "--seed", "4"]
    with pytest.raises(ValueError, match="not a training recipe"):
        training_command("embed", [], str(tmp_path))
    with pytest.raises(ValueError, match="epochs: 'x' is not a whole number"):
        field_arguments(fields, {"epochs": "x"})


def test_corrupt_results_csv_and_missing_files_are_messages_in_the_pages(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    run = detect_like_run(tmp_path / "runs" / "train")
    (run / "results.csv").write_bytes(b"epoch,loss\n1,0.5,7,8\n\xff\xfe")
    (run / "config.yaml").unlink(missing_ok=True)
    (tmp_path / "runs" / "multimodal").mkdir()
    (tmp_path / "runs" / "multimodal" / "scenes_with_umap.json").write_text("[{\"scene_id\": 1")
    monkeypatch.setenv("KITAERU_UI_RUNS", str(tmp_path / "runs"))
    for page, expected in (("runs", "no resolved config"), ("training", "results.csv: not a text file"),
                           ("map", "scenes_with_umap.json: cannot be read"), ("floorplans", "No LoRA run yet")):
        at = AppTest.from_file(str(APP), default_timeout=guard())
        at.query_params["page"] = page
        at.run()
        assert not at.exception, (page, at.exception)
        messages = " ".join(m.value for kind in ("info", "warning", "error") for m in getattr(at, kind))
        assert expected in messages, (page, messages)


def test_wrong_runs_folder_fails_fast_and_a_used_port_is_refused(cli, tmp_path):
    missing, heavy = kitaeru_with_import_probe("ui", "--runs", tmp_path / "missing")
    assert missing.returncode == 2 and "--runs" in missing.stderr and "no such folder" in missing.stderr
    assert not heavy, sorted(heavy)  # refused before Streamlit (or anything heavy) is imported
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = cli("ui", "--runs", tmp_path, "--port", taken.getsockname()[1])
    assert r.exit_code == 2 and "already in use" in r.stderr


def test_dashboard_starts_prints_its_url_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "kitaeru", "ui", "--runs", str(tmp_path), "--port", "0",
                             "--host", "localhost"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("kitaeru ui: http://localhost:"), line
        import urllib.request

        url = line.split()[2]
        assert urllib.request.urlopen(url + "/_stcore/health", timeout=guard()).read() == b"ok"
        proc.terminate()
        assert proc.wait(timeout=guard()) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    # Streamlit went with it: the port is free again.
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_map_reuses_a_multimodal_runs_umap_and_colours_by_metadata(cli, tmp_path):
    import numpy as np

    from kitaeru.data.vector_db import VectorDB

    rng = np.random.default_rng(0)
    weathers = ["rain", "snow", "clear"] * 4
    scenes = [{"scene_id": f"s{i}", "description": f"scene {i}", "image_path": "", "location": "tokyo",
               "metadata": {"weather": w}, "umap_coords": [float(i), float(-i)]} for i, w in enumerate(weathers)]
    out = tmp_path / "mm"
    out.mkdir()
    VectorDB(scenes=scenes, text_embeddings=rng.normal(size=(12, 8)).astype(np.float32),
             image_embeddings=rng.normal(size=(12, 8)).astype(np.float32)).save(out / "vector_db.json")
    r = cli("map", "--output-dir", out, "--out", tmp_path / "m.png", "--json-out", tmp_path / "m.json", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["umap_reused"] is True and summary["color_by"] == "weather"
    doc = json.loads((tmp_path / "m.json").read_text())
    assert [(p["x"], p["y"]) for p in doc["points"]] == [(float(i), float(-i)) for i in range(12)]
    assert [p["color"] for p in doc["points"]] == weathers
    # Other settings, or the text side, are projected afresh (not run here: UMAP's JIT takes ~15 s).
    from kitaeru.recipes.map.build import load_points, reuses_saved_umap
    from kitaeru.recipes.map.config import MapConfig

    for changed in ({"n_neighbors": 5}, {"modality": "text"}, {"random_state": 1}):
        cfg = MapConfig(output_dir=str(out), **changed)
        assert not reuses_saved_umap(cfg, load_points(cfg)), changed


def test_a_100k_point_map_renders_as_webgl(tmp_path, monkeypatch):
    import numpy as np
    from streamlit.testing.v1 import AppTest

    rng = np.random.default_rng(0)
    n = 100_000
    xs, ys, groups = rng.normal(size=n), rng.normal(size=n), rng.choice(["a", "b", "c"], size=n)
    points = [{"id": i, "x": float(x), "y": float(y), "label": f"img{i}.jpg", "color": str(g)}
              for i, (x, y, g) in enumerate(zip(xs, ys, groups))]
    (tmp_path / "coords.json").write_text(json.dumps({"format": "kitaeru-map/1", "color_by": "cluster", "points": points}))
    monkeypatch.setenv("KITAERU_UI_RUNS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=guard())
    at.query_params["page"] = "map"
    at.run()  # WebGL (scattergl) is what keeps 100k points fast: checked below, the seconds are not
    assert not at.exception and not at.error
    assert at.selectbox(key="map-colour").value == "cluster"
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["type"] for t in figure["data"]} == {"scattergl"} and sum(len(t["x"]) for t in figure["data"]) == n
