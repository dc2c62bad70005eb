"""The Runs page in a real browser (the real app, headless Chromium): open it from the sidebar,
pick a run and see its loss curves drawn, add a second run and see the two compared.

Needs Debian's ``chromium`` and ``chromium-driver``, as tests/ui/test_browser.py.
"""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from ui_browser import element_with_text, query, screenshot, wait_for

CHART = '[data-testid="stVegaLiteChart"]'


def pick_run(browser: WebDriver, name: str) -> None:
    """Type the run's name into the "Runs to show" multiselect and click its option."""
    box = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="stMultiSelect"] input'),
                   "the run picker")
    box.click()
    box.send_keys(name)
    wait_for(browser, element_with_text('[role="option"]', name), f"the option {name}").click()
    box.send_keys(Keys.ESCAPE)  # close the option list, which would cover the page


def drawn_charts(browser: WebDriver) -> list:
    # vega-embed draws into a canvas (or an svg): present once the chart is really rendered.
    return browser.find_elements(By.CSS_SELECTOR, f"{CHART} canvas, {CHART} svg")


def test_runs_page_shows_curves_and_compares_two_runs(app_url: str, browser: WebDriver, trained_run: str,
                                                     second_run: str) -> None:
    browser.get(app_url)
    wait_for(browser, element_with_text("h1", "Knowledge graphs"), "the home page")
    wait_for(browser, element_with_text('[data-testid="stSidebarNavLink"]', "Runs"), "the Runs link").click()
    wait_for(browser, element_with_text("h1", "Runs"), "the Runs page")

    pick_run(browser, second_run)
    wait_for(browser, lambda d: query(d).get("run") == second_run, f"?run={second_run} in the URL")
    wait_for(browser, element_with_text("h4", "Loss curves"), "the loss curves heading")
    wait_for(browser, drawn_charts, "a drawn vega-lite chart")

    pick_run(browser, trained_run)
    wait_for(browser, lambda d: query(d).get("runs") == f"{second_run},{trained_run}", "?runs=A,B in the URL")
    compared = wait_for(browser, element_with_text("h3", "2 runs compared"), "the comparison")
    wait_for(browser, element_with_text("h4", "Config differences"), "the config differences")
    assert len(wait_for(browser, drawn_charts, "the overlaid curves")) >= 2
    browser.execute_script("arguments[0].scrollIntoView()", compared)
    screenshot(browser, "runs-compared")
