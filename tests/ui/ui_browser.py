"""Driving the real explorer in headless Chromium (selenium): finding the browser, waiting for
what Streamlit renders, reading the URL, and saving screenshots as test artefacts.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``);
``./run test`` installs them in CI. Missing, a browser test fails and says so rather than skipping.
Screenshots go to ``test-artefacts/screenshots/`` (or ``$KCLIP_TEST_ARTEFACTS/screenshots``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

ARTEFACTS = Path(os.environ.get("KCLIP_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "test-artefacts"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60  # seconds for any one step; the first page run pays for imports and connecting to Neo4j
T = TypeVar("T")



def require_browser() -> tuple[str, str]:
    browser = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    driver = str(CHROMEDRIVER) if CHROMEDRIVER.exists() else shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("the browser test needs Chromium and its driver: run "
                    "`sudo apt-get install -y chromium chromium-driver` (Debian/Ubuntu), or `./run test`, "
                    "which installs them")
    return browser, driver


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


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the browser's viewport as ``screenshots/NAME.png`` under the artefacts folder."""
    folder = ARTEFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    driver.save_screenshot(str(path))
    return path
