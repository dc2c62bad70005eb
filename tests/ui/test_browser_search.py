"""Explore's search in a real browser: matches appear as the user types (no Enter), rows are
compact with image thumbnails, and the pager turns pages. Same fixtures as test_browser.py."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from ui_browser import element_with_text, wait_for

CAPTION = '[data-testid="stCaptionContainer"]'


def search_box(browser: WebDriver):
    # Found afresh each time: a rerun of the panel may replace the element.
    return wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Search entities"]'),
                    "the search box")


def test_search_matches_as_you_type_and_pages(app_url: str, browser: WebDriver, ui_kg) -> None:
    kg, summary = ui_kg
    objects = summary.objects  # each object's id is object:N, so the word "object" finds them all
    browser.get(f"{app_url}/explore?kg={kg}")
    search_box(browser).send_keys("circ")  # no Enter: the box commits after a pause in typing
    wait_for(browser, element_with_text('[class*="st-key-hit-"] button', "name:circle"), "a match for a word's start")

    search_box(browser).send_keys("\b" * 4 + "object")
    # Typing commits at every pause: wait for the page of the whole word, not of a part of it.
    wait_for(browser, element_with_text(CAPTION, f"1–25 of {objects} matches for “object”"), "the first page")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".st-key-explore_search_rows img")) == 25,
             "a thumbnail on each of the 25 rows (objects are image regions)")
    wait_for(browser, element_with_text('[class*="st-key-explore_search_next"] button', "Next"), "Next").click()
    wait_for(browser, element_with_text(CAPTION, f"26–{objects} of {objects} matches for “object”"),
             "the second page")
