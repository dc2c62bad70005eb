"""The explorer's main flow in a real browser: the real app (``run_ui``) in a subprocess, driven by
headless Chromium through selenium: pick the KG, search on Explore, open an entity, see its triplets.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``);
``./run test`` installs them in CI. Missing, the test fails and says so rather than skipping.
"""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from ui_browser import element_with_text, query, wait_for


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
