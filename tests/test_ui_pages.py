"""The dashboard's pages on real tiny runs of multimodal, docclass and lora (Streamlit's AppTest), a
training started and stopped from the page, and the real ``kitaeru ui`` driven by headless Chromium.

All slow: the module trains three tiny models once (about a minute on 2 CPU cores) and shares them.
detect's run folders are covered with its columns in ``test_ui_readers.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
streamlit_testing = pytest.importorskip("streamlit.testing.v1", reason="Streamlit is an extra: pip install 'kitaeru[ui]'")

APP = Path(__file__).resolve().parents[1] / "src" / "kitaeru" / "ui" / "app.py"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _run(*args) -> None:
    from kitaeru.cli import run

    assert run([str(a) for a in args]) == 0, args


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_sd, prepared_floorplans, one_compute_thread) -> Path:
    """One folder of runs: multimodal (its scenes inside the folder), docclass, lora with validation images."""
    from kitaeru.data.sample_scenes import write_sample_scenes
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
    at = streamlit_testing.AppTest.from_file(str(APP), default_timeout=180)
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


def test_training_page_overlays_runs(runs, monkeypatch):
    at = _app(runs, "training", monkeypatch)
    at.multiselect(key="curve-runs").set_value(["multimodal", "lora/train"]).run()
    at.multiselect(key="curve-metrics").set_value(["lr", "train_loss", "loss"]).run()
    figures = {f["layout"]["title"]["text"]: f for f in _figures(at)}
    assert {t["name"] for t in figures["lr"]["data"]} == {"multimodal", "lora/train"}
    assert len(figures["train_loss"]["data"][0]["y"]) == 2


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
    at.text_input(key="opt-lora--data-dir").input(str(prepared_floorplans))
    at.text_input(key="opt-lora--pretrained-model").input(str(tiny_sd))
    at.number_input(key="opt-lora--epochs").set_value(200)
    at.number_input(key="opt-lora--resolution").set_value(32)
    at.number_input(key="opt-lora--batch-size").set_value(2)
    at.text_input(key="opt-lora--device").input("cpu")
    at.text_input(key="opt-lora-out").input(str(runs / "started"))
    at.text_input(key="opt-lora-extra").input("--validation-every 0 --checkpoint-every 3")
    next(b for b in at.button if b.label == "Start").click().run()
    assert any("started (pid" in s.value for s in at.success), [e.value for e in at.error]
    (job,) = [j for j in J.list_jobs(runs) if j.output_dir == str(runs / "started")]
    try:
        deadline = time.time() + 180
        while not (runs / "started" / "train" / "results.csv").exists():
            assert J.poll(job) is None, J.log_tail(job)
            assert time.time() < deadline, J.log_tail(job)
            time.sleep(0.2)
        at.run()
        next(b for b in at.button if b.label.startswith("Stop")).click().run()
        assert J.wait(job, 60) == 130
    finally:
        if J.poll(job) is None:
            os.killpg(job.pid, signal.SIGKILL)
    log = Path(job.log).read_text()
    assert f"resume with: kitaeru lora train --resume {runs / 'started' / 'train'}" in log
    assert "Traceback" not in log
    result = json.loads((runs / "started" / "train" / "training_result.json").read_text())
    assert result["status"] == "interrupted"
    assert (runs / "started" / "train" / "results.png").is_file()


def _chromium_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} not found: install Debian's browser with 'apt-get install -y chromium chromium-driver'"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def test_dashboard_in_a_real_browser(runs, tmp_path):
    reason = _chromium_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("KITAERU_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "kitaeru", "ui", "--runs", str(runs), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--window-size=1400,1300"):
        options.add_argument(arg)
    driver = None
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line).group(0)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        wait = WebDriverWait(driver, 120)

        def page(name: str, ready: str) -> None:
            driver.get(f"{url}/?page={name}")
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ready)))
            time.sleep(1.0)  # let the canvas paint before the picture

        page("runs", '[data-testid="stDataFrame"] canvas')
        assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]'), "the run's status is not shown"
        driver.save_screenshot(str(shots / "ui-runs.png"))

        page("training", '[data-testid="stPlotlyChart"] .main-svg .scatterlayer .trace')
        driver.save_screenshot(str(shots / "ui-training.png"))

        page("map", '[data-testid="stPlotlyChart"] .main-svg .legendtext')
        box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, 'input[aria-label="Text search"]')))
        box.send_keys("night, heavy rain")
        driver.find_element(By.XPATH, "//button[.//p[text()='Search']]").click()
        wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(@class,'legendtext') and "
                                                             "contains(text(),'search hits')]")))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stImage"] img')))
        time.sleep(1.0)
        driver.save_screenshot(str(shots / "ui-map.png"))

        page("floorplans", '[data-testid="stImage"] img')  # the validation images of the lora run
        driver.save_screenshot(str(shots / "ui-floorplans.png"))
        for name in ("runs", "training", "map", "floorplans"):
            assert (shots / f"ui-{name}.png").stat().st_size > 20_000
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
