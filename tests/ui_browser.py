"""Driving the real ``kitaeru ui`` in Debian's headless Chromium (selenium): start, pages, widgets,
plotly selections by the points' own pixel positions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from guards import guard

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1300")


def chromium_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} not found: install Debian's browser with 'apt-get install -y chromium chromium-driver'"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


class Dashboard:
    """``kitaeru ui --runs RUNS`` started from ``cwd`` and a Chromium pointed at it."""

    def __init__(self, runs: Path, cwd: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        self.proc = subprocess.Popen([sys.executable, "-m", "kitaeru", "ui", "--runs", str(runs), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd))
        line = self.proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"no URL from kitaeru ui: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = match.group(0)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in FLAGS + (f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.wait = WebDriverWait(self.driver, guard())

    def close(self) -> int:
        self.driver.quit()
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=guard())
        self.stderr = err
        return self.proc.returncode

    # ---- pages and widgets ---------------------------------------------------------------------
    def page(self, name: str, ready: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC

        self.driver.get(f"{self.url}/?page={name}")
        self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ready)))
        time.sleep(1.0)  # let the canvas paint

    def find(self, xpath: str, timeout: float | None = None):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, guard(timeout)).until(EC.presence_of_element_located((By.XPATH, xpath)))

    def text_appears(self, text: str, timeout: float | None = None, *, within: str = ""):
        """The innermost element showing ``text`` (under the element ``within`` names, an XPath)."""
        return self.find(f"{within}//*[contains(normalize-space(.), {_xpath_literal(text)}) and not(*[contains("
                         f"normalize-space(.), {_xpath_literal(text)})])]", timeout)

    def button(self, label: str, *, within: str = ""):
        """The clickable button labelled ``label`` (under the element ``within`` names, an XPath)."""
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.common.by import By

        xpath = f"{within}//button[.//p[normalize-space(text())={_xpath_literal(label)}]]"
        return self.wait.until(EC.element_to_be_clickable((By.XPATH, xpath)))

    @staticmethod
    def expander(label_part: str) -> str:
        """An XPath to the expander whose label contains ``label_part`` (for ``within=``)."""
        return f"//*[@data-testid='stExpander'][.//summary[contains(normalize-space(.), {_xpath_literal(label_part)})]]"

    def visible_text(self, within: str = "") -> str:
        """What the page (or the element ``within`` names) shows now: for a failing test's message."""
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.XPATH, within or "//body")
        return found[0].text if found else f"(nothing at {within})"

    def click(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        time.sleep(0.2)
        element.click()

    def type_into(self, label: str, text: str) -> None:
        from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as EC

        for attempt in range(5):  # a rerun may redraw the field between finding and typing
            try:
                box = self.wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f'input[aria-label="{label}"]')))
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
                box.send_keys(Keys.CONTROL, "a")  # clear() does not reach React's state
                box.send_keys(Keys.DELETE)
                box.send_keys(text)
                return
            except (ElementNotInteractableException, StaleElementReferenceException):
                if attempt == 4:
                    raise
                time.sleep(1.0)

    def choose(self, label: str, option: str) -> None:
        """Pick ``option`` in the selectbox labelled ``label`` (a searchable combobox)."""
        from selenium.webdriver.common.keys import Keys

        box = self.find(f"//label[.//p[normalize-space(text())={_xpath_literal(label)}]]/following-sibling::div"
                        "//input")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        box.click()
        box.send_keys(option)
        self.find(f"//*[@role='option'][contains(normalize-space(.), {_xpath_literal(option)})]")
        box.send_keys(Keys.ENTER)  # the first option matching the typed text
        time.sleep(0.5)

    # ---- plotly ----------------------------------------------------------------------------------
    def chart(self):
        from selenium.webdriver.common.by import By

        element = self.driver.find_element(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] .js-plotly-plot')
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        time.sleep(0.3)
        return element

    def point_pixels(self, trace: int = 0) -> list[tuple[float, float]]:
        """Pixel positions of a trace's points from the chart's centre (plotly's own axes)."""
        return self.driver.execute_script("""
            const gd = arguments[0], fl = gd._fullLayout, box = gd.getBoundingClientRect(), t = gd._fullData[arguments[1]];
            return t.x.map((x, i) => [fl.xaxis._offset + fl.xaxis.l2p(x) - box.width / 2,
                                      fl.yaxis._offset + fl.yaxis.l2p(t.y[i]) - box.height / 2]);""",
                                          self.chart(), trace)

    def drag_lasso(self, pixels: list[tuple[float, float]]) -> None:
        """Pick the lasso tool and draw a lasso round the bounding box of the given points."""
        from selenium.webdriver.common.action_chains import ActionChains

        xs, ys = [p[0] for p in pixels], [p[1] for p in pixels]
        left, right, top, bottom = min(xs) - 12, max(xs) + 12, min(ys) - 12, max(ys) + 12
        path = []
        for (x0, y0), (x1, y1) in zip([(left, top), (right, top), (right, bottom), (left, bottom)],
                                      [(right, top), (right, bottom), (left, bottom), (left, top + 3)]):
            path += [(x0 + (x1 - x0) * k / 6, y0 + (y1 - y0) * k / 6) for k in range(1, 7)]  # plotly samples it
        element = self.chart()
        tool = element.find_element("css selector", '.modebar-btn[data-val="lasso"]')
        tool.click()  # the map's drag is zoom; the lasso is a tool of its own
        time.sleep(0.3)
        chain = ActionChains(self.driver, duration=40).move_to_element_with_offset(element, round(left), round(top))
        chain.click_and_hold()
        here = (round(left), round(top))
        for x, y in path:
            chain.move_by_offset(round(x) - here[0], round(y) - here[1])
            here = (round(x), round(y))
        chain.release().perform()

    def click_point(self, x: float, y: float) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).move_to_element_with_offset(self.chart(), round(x), round(y)).click().perform()


def _xpath_literal(text: str) -> str:
    return f'"{text}"' if '"' not in text else "concat('" + text.replace("'", "', \"'\", '") + "')"
