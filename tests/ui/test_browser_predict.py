"""Predict and Neighbours in a real browser: the real app (``run_ui``) in a subprocess, driven by
headless Chromium through selenium, on ui-shapes embedded by the session's trained run.

Predict: from an entity on Explore, "Predict links" opens Predict with it as the head; pick a
relation, press Predict, read the answer. Neighbours: a free text, embedded by the run, finds
images (cross-modal). Each flow ends with a screenshot under test-artefacts/screenshots/.
"""

from __future__ import annotations

from typing import Callable

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from ui_browser import element_with_text, query, screenshot, wait_for


def exact(css: str, text: str) -> Callable[[WebDriver], WebElement | None]:
    def find(d: WebDriver) -> WebElement | None:
        return next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.text.strip() == text and e.is_displayed()),
                    None)
    return find


def choose_in_selectbox(browser: WebDriver, label: str, option: str) -> None:
    box = wait_for(browser, element_with_text('[data-testid="stSelectbox"]', label), f"the {label} box")
    field = box.find_element(By.CSS_SELECTOR, "input")
    field.click()
    field.send_keys(option)  # the option list is virtualised: narrow it first
    wait_for(browser, exact('[role="option"]', option), f"the option {option}").click()


def test_predict_then_cross_modal_neighbours(app_url: str, browser: WebDriver, run_embedded_kg, trained_run) -> None:
    # One app for both flows: its process imports torch once, on the first prediction.
    predict_a_tail_with_the_button(app_url, browser, run_embedded_kg)
    cross_modal_neighbours_from_free_text(app_url, browser, run_embedded_kg)


def predict_a_tail_with_the_button(app_url: str, browser: WebDriver, kg: str) -> None:
    browser.get(f"{app_url}/explore?kg={kg}&entity=object:1")
    wait_for(browser, element_with_text("h4", "Triplets ("), "object:1 on Explore")
    wait_for(browser, element_with_text("a", "Predict links"), "the Predict links link").click()
    wait_for(browser, element_with_text("h1", "Predict"), "the Predict page")
    wait_for(browser, lambda d: query(d).get("head") == "object:1", "?head=object:1 in the URL")
    wait_for(browser, element_with_text('[data-testid="stMarkdownContainer"]', "head: "), "the prefilled head")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]'), "nothing before the button"

    choose_in_selectbox(browser, "Relation", "is a")
    wait_for(browser, lambda d: query(d).get("relation") == "is a", "?relation=is a in the URL")
    button = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[class*="st-key-predict_go"] button'),
                      "the Predict button")
    wait_for(browser, lambda d: button.is_enabled(), "the Predict button enabled")
    button.click()
    wait_for(browser, element_with_text("h4", "Top 10 for"), "the answer's heading")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]'), "the answer table")
    wait_for(browser, element_with_text('[data-testid="stCaptionContainer"]', "read from Neo4j"),
             "where the candidates came from")
    screenshot(browser, "predict-tails")


def cross_modal_neighbours_from_free_text(app_url: str, browser: WebDriver, kg: str) -> None:
    browser.get(f"{app_url}/neighbours?kg={kg}")
    wait_for(browser, element_with_text("h1", "Neighbours"), "the Neighbours page")
    wait_for(browser, exact('[data-testid="stRadio"] label', "free text"), "the free-text mode").click()
    wait_for(browser, exact('[data-testid="stRadio"] label', "images"), "the images filter").click()
    field = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="Free text"]'),
                     "the free-text box")
    field.send_keys("a red circle", Keys.ENTER)
    wait_for(browser, element_with_text("h3", "Nearest to the text"), "the mode's heading")
    wait_for(browser, element_with_text('[data-testid="stCaptionContainer"]', "10 nearest images"),
             "ten image neighbours")
    # The cards stream in after the caption: wait for all ten.
    wait_for(browser, lambda d: len([e for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stCaptionContainer"]')
                                     if e.text.startswith("similarity ")]) == 10, "ten similarity captions")
    # Every neighbour is an image entity: each card shows its picture.
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"]')) == 10
    screenshot(browser, "neighbours-free-text")
