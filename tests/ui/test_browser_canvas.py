"""The entity page's graph canvas in a real browser: the real app (``run_ui``) in a subprocess, driven
by headless Chromium through selenium. Open an entity, see Cytoscape draw it inside the
component's iframe, click a node and press the side panel's expand button, then filter by a
relation; each time the page's "N nodes" caption and the nodes Cytoscape holds must agree.

Needs Debian's ``chromium`` and ``chromium-driver`` (see ``ui_browser.py``).
"""

from __future__ import annotations

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from ui_browser import element_with_text, screenshot, wait_for

COMPONENT_FRAME = 'iframe[title*="st_link_analysis"]'
# The component keeps its Cytoscape instance on its container (Cytoscape's own registry).
CY_NODES = """
const cy = document.getElementById('cy') && document.getElementById('cy')._cyreg && document.getElementById('cy')._cyreg.cy;
if (!cy || cy.nodes().length === 0) return null;
return cy.nodes().map(n => [n.id(), n.data('entity'), n.renderedPosition('x'), n.renderedPosition('y')]);
"""


def shown(driver: WebDriver) -> tuple[int, int] | None:
    """The canvas caption's (nodes, edges), e.g. from "8 nodes, 7 edges shown"."""
    captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stCaptionContainer"]')]
    text = next((c for c in captions if " edges shown" in c), None)
    if text is None:
        return None
    nodes, edges = text.split(" edges shown")[0].split(" nodes, ")
    return int(nodes), int(edges)


def drawn_nodes(driver: WebDriver) -> list[list]:
    """[cytoscape id, entity id, x, y] of each node Cytoscape holds (switches into the component's iframe)."""
    driver.switch_to.default_content()
    frame = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, COMPONENT_FRAME), "the canvas iframe")
    driver.switch_to.frame(frame)
    return wait_for(driver, lambda d: d.execute_script(CY_NODES), "Cytoscape's nodes")


def agree(driver: WebDriver, what: str, expect=lambda n: True) -> int:
    """Wait until the caption's node count satisfies ``expect`` and Cytoscape holds that many nodes."""
    def settled(d: WebDriver) -> int | None:
        d.switch_to.default_content()
        counts = shown(d)
        if counts is None or not expect(counts[0]):
            return None
        drawn = len(drawn_nodes(d))
        d.switch_to.default_content()
        return counts[0] if drawn == counts[0] else None
    return wait_for(driver, settled, what)


def test_canvas_draws_expands_and_filters(app_url: str, browser: WebDriver, ui_kg) -> None:
    kg = ui_kg[0]
    browser.get(f"{app_url}/explore?kg={kg}&entity=name:circle")
    wait_for(browser, element_with_text("h4", "Graph"), "the graph heading")
    first = agree(browser, "the canvas drawn")
    assert first > 1  # the centre and the objects that are circles

    # Inside the iframe: Cytoscape draws on canvas elements; click an object node where it is drawn.
    frame = browser.find_element(By.CSS_SELECTOR, COMPONENT_FRAME)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", frame)
    nodes = drawn_nodes(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "#cy canvas")
    cy_id, entity, x, y = next(n for n in nodes if n[1].startswith("object:"))
    area = browser.find_element(By.ID, "cy")
    # Selenium offsets are from the element's centre; Cytoscape's rendered positions from its corner.
    ActionChains(browser).move_to_element_with_offset(area, x - area.size["width"] / 2,
                                                      y - area.size["height"] / 2).click().perform()
    expand = wait_for(browser, lambda d: next((e for e in d.find_elements(By.ID, "nodeActionsExpand")
                                               if e.is_displayed()), None), "the expand button")
    assert browser.execute_script("return document.getElementById('cy')._cyreg.cy.$(':selected').map(n => n.id())") \
        == [cy_id], f"clicking where {entity} is drawn selects it"
    expand.click()
    grown = agree(browser, f"the neighbours of {entity} added", lambda n: n > first)
    screenshot(browser, "canvas-expanded")

    # Filter one relation: the graph keeps only "is a" triplets joined to the centre.
    browser.switch_to.default_content()
    picker = wait_for(browser, element_with_text('[data-testid="stMultiSelect"]', "Relations shown"),
                      "the relation filter")
    box = picker.find_element(By.CSS_SELECTOR, "input")
    box.click()
    box.send_keys("is a")
    wait_for(browser, element_with_text('[role="option"]', "is a"), "the option 'is a'").click()
    box.send_keys(Keys.ESCAPE)
    filtered = agree(browser, "the graph filtered to 'is a'", lambda n: n < grown)
    assert filtered == first  # only "is a" joins objects to the name circle
    wait_for(browser, element_with_text("h4", "Triplets ("), "the filtered triplet list")
