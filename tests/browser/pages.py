"""What the browser tests do with the pages: find, wait, type like a user, read what the API kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import Face


def wait(driver: Any, predicate: Callable[[Any], Any], timeout: float = 30) -> Any:
    ignored = [StaleElementReferenceException]  # a row re-rendered between finding and reading it
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(predicate)


def css(driver: Any, selector: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[WebElement]:
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def fresh_page(driver: Any, url: str) -> None:
    """Open `url` with this origin's storage cleared."""
    driver.get(url)
    driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def open_playground(driver: Any, face: Face, key: str) -> None:
    fresh_page(driver, face.url + "/")
    css(driver, "#api-key").send_keys(key)
    css(driver, "#key-form button[type=submit]").click()
    wait(driver, lambda d: css(d, "#model option").get_attribute("value"))


def send(driver: Any, text: str) -> WebElement:
    """Type a message, send it, wait for the answer to finish; returns the answer's element."""
    before = len(all_css(driver, "#transcript li.assistant"))
    prompt = css(driver, "#prompt")
    prompt.send_keys(text)
    prompt.send_keys(Keys.ENTER)
    return finished(driver, before)


def finished(driver: Any, before: int) -> WebElement:
    def done(d: Any) -> WebElement | None:
        error = css(d, "#error")
        assert error.get_attribute("hidden") is not None, error.text
        return d.execute_script(
            "const answers = document.querySelectorAll('#transcript li.assistant');"
            "const last = answers[answers.length - 1];"
            "return answers.length > arguments[0] && last.dataset.state === 'done' ? last : null;",
            before,
        )

    return wait(driver, done, timeout=60)


def sidebar_ids(driver: Any) -> list[str]:
    return [str(li.get_attribute("data-id")) for li in all_css(driver, "#conversations li")]


def transcript(face: Face, conversation_id: str) -> list[str]:
    items = face.api("GET", f"/v1/conversations/{conversation_id}/items?order=asc")
    assert items.status_code == 200, items.text
    return [item["content"][0]["text"] for item in items.json()["data"]]


def csp_violations(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


def tab_to(driver: Any, selector: str, *, backwards: bool = False, limit: int = 60) -> None:
    """Press Tab (or Shift+Tab) until `selector` has the focus: reachable by keyboard, in order."""
    target = css(driver, selector)
    for _ in range(limit):
        if driver.switch_to.active_element == target:
            return
        chain = ActionChains(driver)
        if backwards:
            chain.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        else:
            chain.send_keys(Keys.TAB).perform()
    raise AssertionError(f"{selector} is not reachable with the keyboard")


def press(driver: Any, *keys: str) -> None:
    """Type into whatever has the focus, as a keyboard would."""
    ActionChains(driver).send_keys(*keys).perform()


def chat_body(text: str) -> dict[str, Any]:
    return {"model": "Balanced", "messages": [{"role": "user", "content": text}]}
