"""The dashboard's pages on real tiny runs of multimodal, docclass and lora (Streamlit's AppTest), a
training started, stopped and resumed from the page, and the real ``kitaeru ui`` driven by headless
Chromium from another working directory: selections, a click opening an image, generation from a
checkpoint, the live monitor.

All slow: the module trains three tiny models once (about a minute on 2 CPU cores) and shares them.
detect's run folders are covered with its columns in ``test_ui_readers.py``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from guards import guard, wait_until
from ui_browser import Dashboard, chromium_missing

pytestmark = pytest.mark.slow
streamlit_testing = pytest.importorskip("streamlit.testing.v1", reason="Streamlit is an extra: pip install 'kitaeru[ui]'")

APP = Path(__file__).resolve().parents[1] / "src" / "kitaeru" / "ui" / "app.py"
# Far more epochs than a test waits for (each takes ~0.1 s): the run must still be going when Stop comes.
LORA_OPTIONS = ("--epochs 5000 --resolution 32 --batch-size 2 --device cpu --validation-every 0 --checkpoint-every 3 "
                "--checkpoints-total-limit 2")


def _run(*args) -> None:
    from kitaeru.cli import run

    assert run([str(a) for a in args]) == 0, args


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_sd, prepared_floorplans, one_compute_thread) -> Path:
    """One folder of runs: multimodal (its scenes inside the folder), docclass, lora with validation images."""
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    root = tmp_path_factory.mktemp("ui") / "runs"
    scenes = write_sample_scenes(root / "scenes", 12, seed=5)
    _run("multimodal", "train", "-d", scenes, "-o", root / "multimodal", "--epochs", "2", "--embed-dim", "16",
         "--val-fraction", "0.25", "--batch-size", "4")
    generate_documents(root / "pool", 3, seed=11, kinds=["id_card", "passport", "form"])
    _run("docclass", "train", "--cfg-name", "cpu_quickstart", "-d", root / "pool", "-o", root / "docclass",
         "--workers", "1", "--seed", "5")
    _run("lora", "train", "-d", prepared_floorplans, "--pretrained-model", tiny_sd, "-o", root / "lora", "--resolution", "32",
         "--batch-size", "2", "--checkpoint-every", "2", "--device", "cpu", "--seed", "3", "--epochs", "2",
         "--validation-every", "1", "--num-validation-images", "1", "--validation-steps", "2")
    return root


def _app(runs: Path, page: str, monkeypatch):
    monkeypatch.setenv("KITAERU_UI_RUNS", str(runs))
    at = streamlit_testing.AppTest.from_file(str(APP), default_timeout=guard())
    at.query_params["page"] = page
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_every_training_run_has_results_png(runs):
    for folder in (runs / "multimodal", runs / "docclass" / "cpu_quickstart", runs / "lora" / "train"):
        assert (folder / "results.png").stat().st_size > 5_000, folder


def test_runs_page_lists_every_recipe_with_its_evidence(runs, monkeypatch):
    at = _app(runs, "runs", monkeypatch)
    table = at.dataframe[0].value
    by_recipe = {row["recipe"]: row for row in table.to_dict("records")}
    assert set(by_recipe) == {"multimodal", "docclass", "lora"}
    assert {row["status"] for row in by_recipe.values()} == {"completed"}
    assert by_recipe["multimodal"]["epochs"] == "2/2" and by_recipe["multimodal"]["key metric"].startswith("recall_mean")
    assert by_recipe["docclass"]["key metric"].startswith("auroc")
    at.selectbox(key="run-choice").select("docclass/cpu_quickstart").run()
    assert "docclass · docclass/cpu_quickstart" in [s.value for s in at.subheader]
    assert any("config_name" in c.value or "cpu_quickstart" in c.value for c in at.code)  # resolved config.yaml
    assert any("initial_plan" in j.value for j in at.json)  # the resource plan
    assert [m.value for m in at.metric][:2] == ["completed", "2/2"]


def test_training_page_shows_every_run_of_the_chosen_recipe(runs, monkeypatch):
    at = _app(runs, "training", monkeypatch)
    at.selectbox(key="curve-recipe").select("multimodal").run()
    assert at.multiselect(key="curve-runs-multimodal").value == ["multimodal"]
    at.multiselect(key="curve-metrics").set_value(["lr", "train_loss"]).run()
    figures = {f["layout"]["title"]["text"]: f for f in _figures(at)}
    assert {t["name"] for t in figures["lr"]["data"]} == {"multimodal"}
    assert len(figures["train_loss"]["data"][0]["y"]) == 2
    assert figures["lr"]["layout"]["yaxis"]["range"][0] > 0  # a constant lr is not drawn on -1..1


def test_map_page_colours_by_metadata_and_search_highlights_hits(runs, monkeypatch):
    at = _app(runs, "map", monkeypatch)
    assert at.selectbox(key="map-colour").value == "weather"  # a metadata field by default
    (figure,) = _figures(at)
    assert all(t["type"] == "scattergl" for t in figure["data"])
    assert sum(len(t["x"]) for t in figure["data"]) == 12
    at.text_input(key="search-text").input("night, heavy rain")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    (figure,) = _figures(at)
    hits = [t for t in figure["data"] if t["name"] == "search hits"]
    assert hits and len(hits[0]["x"]) == 5
    assert "Search hits" in [s.value for s in at.subheader]
    assert len(at.get("image")) >= 1  # the hits' images, read from the scene folder inside the runs folder


def test_floor_plans_page_shows_validation_images_and_generates(runs, monkeypatch):
    at = _app(runs, "floorplans", monkeypatch)
    assert [c.value for c in at.caption if c.value.startswith("epoch")] == ["epoch 1", "epoch 2"]
    assert at.selectbox(key="fp-adapter").value.endswith("/ final")
    at.number_input(key="fp-w").set_value(1)
    at.number_input(key="fp-h").set_value(2)
    at.number_input(key="fp-steps").set_value(2)
    shown = len(at.get("image"))
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("image")) == shown + 1


def test_training_started_from_the_page_stops_cleanly_and_resumably(runs, tiny_sd, prepared_floorplans, monkeypatch):
    from kitaeru.ui import jobs as J

    at = _app(runs, "training", monkeypatch)
    at.selectbox(key="start-recipe").select("lora").run()
    at.text_input(key="opt-lora-data_dir").input(str(prepared_floorplans))
    at.text_input(key="opt-lora-pretrained_model").input(str(tiny_sd))
    at.text_input(key="opt-lora-out").input(str(runs / "started"))
    at.text_input(key="opt-lora-extra").input(LORA_OPTIONS)
    next(b for b in at.button if b.label == "Start").click().run()
    assert any("started (pid" in s.value for s in at.success), [e.value for e in at.error]
    (job,) = [j for j in J.list_jobs(runs) if j.output_dir == str(runs / "started")]
    try:
        wait_until(lambda: "epoch 1/5000" in J.log_tail(job), "a progress line per epoch in the log (bars off)",
                   proc=J._PROCESSES.get(job.pid))
        at.run()
        next(b for b in at.button if b.label.startswith("Stop")).click().run()
        assert J.wait(job, guard()) == 130
        at.run()
    finally:
        if J.poll(job) is None:
            os.killpg(job.pid, signal.SIGKILL)
    log = Path(job.log).read_text()
    run_dir = runs / "started" / "train"
    assert f"resume with: kitaeru lora train --resume {run_dir}" in log
    assert "Traceback" not in log
    assert json.loads((run_dir / "training_result.json").read_text())["status"] == "interrupted"
    assert (run_dir / "results.png").is_file()
    # The monitor's final state: interrupted, the resume command once, and a Resume button.
    assert any("interrupted (exit 130)" in w.value for w in at.warning)
    assert [c.value for c in at.code].count(f"kitaeru lora train --resume {run_dir}") == 1
    assert any(b.label == "Resume" for b in at.button)


# ---- the real dashboard in Chromium, started from another working directory ----------------------
@pytest.fixture(scope="module")
def dashboard(runs, tmp_path_factory):
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not the folder the runs were trained from
    dash = Dashboard(runs, cwd=elsewhere)
    yield dash
    assert dash.close() == 0, dash.stderr[-2000:]


def test_dashboard_pages_in_a_real_browser(dashboard, runs, tmp_path):
    from selenium.webdriver.common.by import By

    dash = dashboard
    shots = Path(os.environ.get("KITAERU_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    dash.page("runs", '[data-testid="stDataFrame"] canvas')
    dash.choose("Run", "lora/train")  # a completed run: the picture shows no resume command with a tmp path
    dash.text_appears("lora · lora/train")
    dash.find("//*[@data-testid='stMetricValue']")  # the chosen run's status, epochs, key metric, duration
    time.sleep(1.0)
    dash.driver.save_screenshot(str(shots / "ui-runs.png"))
    dash.page("training", '[data-testid="stPlotlyChart"] .main-svg .scatterlayer .trace')
    dash.driver.save_screenshot(str(shots / "ui-training.png"))
    dash.page("map", '[data-testid="stPlotlyChart"] .main-svg .legendtext')
    dash.type_into("Text search", "night, heavy rain")
    dash.click(dash.button("Search"))
    dash.find("//*[contains(@class,'legendtext') and contains(text(),'search hits')]")
    dash.find("//*[@data-testid='stImage']//img")  # the hits' images: the recorded scene folder resolved
    assert "image not available" not in dash.driver.page_source
    time.sleep(1.0)
    dash.driver.save_screenshot(str(shots / "ui-map.png"))
    dash.page("floorplans", '[data-testid="stImage"] img')  # the validation images of the lora run
    dash.driver.save_screenshot(str(shots / "ui-floorplans.png"))
    for name in ("runs", "training", "map", "floorplans"):
        assert (shots / f"ui-{name}.png").stat().st_size > 20_000
    assert not dash.driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def test_a_click_opens_an_image_and_a_lasso_lists_the_selected_rows(dashboard):
    dash = dashboard
    dash.page("map", '[data-testid="stPlotlyChart"] .main-svg .legendtext')
    dash.click_point(*dash.point_pixels(0)[0])  # a click (the map's drag is zoom) opens the point
    dash.text_appears("Point ")
    dash.find("//*[@data-testid='stImage']//img")
    dash.click(dash.button("Find similar"))
    dash.find("//*[contains(@class,'legendtext') and contains(text(),'search hits')]")
    points = dash.point_pixels(0)
    dash.drag_lasso(points)  # the lasso tool, round every point of the first category
    heading = dash.text_appears("Selected: ")
    assert int(heading.text.split()[1]) >= len(points)
    dash.find("//*[@data-testid='stDataFrame']")
    dash.text_appears("Download CSV")
    dash.text_appears("Download ids")


def test_generation_from_a_checkpoint_in_the_browser(dashboard):
    dash = dashboard
    dash.page("floorplans", '[data-testid="stImage"] img')
    dash.choose("Adapter", "checkpoint-4")
    for label, value in (("grid width (cells)", "1"), ("grid height (cells)", "1"), ("steps", "2")):
        dash.type_into(label, value)
    dash.click(dash.button("Generate"))
    dash.text_appears("lora/train / checkpoint-4 · 1×1 cells")
    assert "generation failed" not in dash.driver.page_source


def test_start_live_log_stop_and_resume_in_the_browser(dashboard, runs, tiny_sd, prepared_floorplans):
    from kitaeru.ui import jobs as J

    dash = dashboard
    out = runs / "browser"
    dash.page("training", '[data-testid="stPlotlyChart"]')
    dash.choose("Recipe", "lora")
    dash.type_into("data dir", str(prepared_floorplans))
    dash.type_into("pretrained model", str(tiny_sd))
    dash.type_into("output folder", str(out))
    dash.type_into("more options (as on the command line, e.g. --seed 3 key=value)", LORA_OPTIONS)
    dash.click(dash.button("Start"))
    ours = lambda: [j for j in J.list_jobs(runs) if Path(j.output_dir).resolve() == out.resolve()]  # noqa: E731
    wait_until(lambda: bool(ours()), "the job the form started")
    (job,) = ours()
    # Everything below looks inside this job's own panel: an earlier test's job, listed on the same
    # page (collapsed), shows the same lines and a hidden Resume button.
    panel = dash.expander(job.id)
    try:
        wait_until(lambda: "epoch 2/5000" in J.log_tail(job), "the job's log reaching epoch 2")
        dash.text_appears("epoch 2/5000", within=panel)  # the live log tail
        dash.click(dash.button("Stop (Ctrl-C: resumable)", within=panel))
        wait_until(lambda: J.poll(job) is not None, "the job ending after Stop")
        assert "resume with: kitaeru lora train --resume" in J.log_tail(job), J.log_tail(job)
        dash.text_appears("interrupted (exit 130)", within=panel)
        dash.click(dash.button("Resume", within=panel))
        resume = f"kitaeru lora train --resume {out / 'train'}"
        dash.text_appears(resume)
        wait_until(lambda: any(j.command[3:6] == ["lora", "train", "--resume"] and "/5000: " in J.log_tail(j)
                               for j in J.list_jobs(runs)), "the resumed run training on (new lines in its own log)")
    except Exception as exc:
        raise AssertionError(f"{exc!r}\n--- the job's panel:\n{dash.visible_text(panel)}\n--- its log:\n"
                             f"{J.log_tail(job)}") from exc
    finally:
        for started in J.list_jobs(runs):
            if J.poll(started) is None:
                J.stop_job(started)
                if J.wait(started, guard()) is None:
                    os.killpg(started.pid, signal.SIGKILL)
    resumed = [j for j in J.list_jobs(runs) if j.command[3:6] == ["lora", "train", "--resume"]]
    assert resumed and resumed[0].run_dir == str(out / "train")
