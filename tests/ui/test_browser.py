"""The explorer's main flow in a real browser: the real app (``run_ui``) in a subprocess, driven by
headless Chromium through selenium: pick the KG, search on Explore, open an entity, see its triplets.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``);
``./run test`` installs them in CI. Missing, the test fails and says so rather than skipping.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from kclip.ui.launch import run_ui, wait_until_healthy

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60  # seconds for any one step; the first page run pays for imports and connecting to Neo4j
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_browser() -> tuple[str, str]:
    browser = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    driver = str(CHROMEDRIVER) if CHROMEDRIVER.exists() else shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("the browser test needs Chromium and its driver: run "
                    "`sudo apt-get install -y chromium chromium-driver` (Debian/Ubuntu), or `./run test`, "
                    "which installs them")
    return browser, driver


@pytest.fixture
def app_url(ui_env_vars: dict[str, str]) -> Iterator[str]:
    """The real app, as `kclip ui` starts it, on a free local port; stopped afterwards."""
    port = free_port()
    proc = run_ui("127.0.0.1", port, headless=True, env=ui_env_vars)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", timeout=WAIT, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, find: Callable[[WebDriver], T], what: str) -> T:
    """Poll ``find`` until it returns something truthy; the failure message names ``what``."""
    def attempt(d: WebDriver) -> T | bool:
        try:
            return find(d) or False
        except (StaleElementReferenceException, WebDriverException):
            return False  # Streamlit re-rendered under us; look again

    return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(attempt, f"waiting for {what}")


def element_with_text(css: str, text: str) -> Callable[[WebDriver], WebElement | None]:
    def find(d: WebDriver) -> WebElement | None:
        return next((e for e in d.find_elements(By.CSS_SELECTOR, css) if text in e.text and e.is_displayed()), None)
    return find


def query(driver: WebDriver) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(driver.current_url).query).items()}


def test_main_flow(app_url: str, browser: WebDriver, ui_kg) -> None:
    kg = ui_kg[0]
    # A fresh server's first visit is a deep link: it must still go through app.py's router
    # (page titles in the sidebar), not Streamlit's legacy views/ mode.
    browser.get(app_url + "/explore")
    wait_for(browser, element_with_text("h1", "Explore"), "the Explore page")
    wait_for(browser, element_with_text('[data-testid="stSidebarNavLink"]', "Knowledge graphs"),
             "the router's sidebar").click()
    wait_for(browser, element_with_text("h1", "Knowledge graphs"), "the Knowledge graphs page")

    # Pick the KG in the "Current KG" selectbox.
    picker = wait_for(browser, element_with_text('[data-testid="stSelectbox"]', "Current KG"), "the KG picker")
    box = picker.find_element(By.CSS_SELECTOR, "input")
    box.click()
    # Type to filter, as a user with many KGs would: the option list is virtualised, so an option
    # far down it is not in the page at all until the list is narrowed.
    box.send_keys(kg)
    wait_for(browser, element_with_text('[role="option"]', kg), f"the option {kg}").click()
    wait_for(browser, lambda d: query(d).get("kg") == kg, f"?kg={kg} in the URL")

    # Explore: search for a shape word and open the entity it names.
    wait_for(browser, element_with_text('[data-testid="stSidebarNavLink"]', "Explore"), "the Explore link").click()
    search = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Search entities"]'),
                      "the search box")
    search.send_keys("circle", Keys.ENTER)
    wait_for(browser, element_with_text("button", "name:circle"), "the search hit name:circle").click()

    # The entity view: its id in the URL, its triplets, and neighbours to click on.
    wait_for(browser, lambda d: query(d).get("entity") == "name:circle", "?entity=name:circle in the URL")
    wait_for(browser, element_with_text("h4", "Triplets ("), "the triplets heading")
    wait_for(browser, element_with_text('[data-testid="stMarkdownContainer"]', "← is a —"), "the 'is a' group")
    # Streamlit marks each keyed widget's container with the class st-key-<key>; neighbours are edge-*.
    neighbour = wait_for(browser, element_with_text('[class*="st-key-edge-"] button', "object:"),
                         "a neighbour (an object that is a circle)")
    neighbour.click()
    wait_for(browser, lambda d: query(d).get("entity", "").startswith("object:"), "the neighbour opened")
    wait_for(browser, element_with_text('[data-testid="stMarkdownContainer"]', "— is a →"), "its own triplets")
