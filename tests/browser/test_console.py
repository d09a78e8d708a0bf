"""The operator console in a real headless Chromium against real processes, in both dialects."""

from __future__ import annotations

import json
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import ADMIN_KEY, API_KEY, Face, fresh, screenshot
from tests.browser.pages import (
    all_css,
    chat_body,
    csp_violations,
    css,
    finished,
    fresh_page,
    open_playground,
    press,
    send,
    tab_to,
    wait,
)

pytestmark = pytest.mark.slow

def test_an_account_needs_attention_after_a_challenge_and_a_curl_refresh_brings_it_back(
    browser: Any, face: Face
) -> None:
    driver = browser
    name = fresh("challenged")
    account_id = face.only_account(name)
    face.sim.set_account(name, fault="captcha")
    assert face.api("POST", "/v1/chat/completions", json=chat_body("hi")).status_code >= 400  # finds out

    fresh_page(driver, face.url + "/console")
    css(driver, "#admin-key").send_keys(ADMIN_KEY)
    css(driver, "#admin-form button[type=submit]").click()
    row = f'#account-table tr[data-id="{account_id}"]'
    wait(driver, lambda d: all_css(d, row) and css(d, f"{row} .badge").text == "needs attention")
    assert css(driver, f"{row} td.operator-message").text  # the operator message, as the API gives it
    screenshot(driver, "console", 1280, 800)
    screenshot(driver, "console", 390, 844, mobile=True)

    # Refresh with a request copied as cURL (a new simulator identity, without the fault).
    css(driver, f"{row} button.refresh").click()
    css(driver, 'input[name="source"][value="curl"]').click()
    curl = (
        f"curl '{face.sim.http_url}/' -H 'user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/146.0.0.0 Safari/537.36' -b '_U=" + fresh("fixed") + "; MUID=y'"
    )
    css(driver, "#account-paste").send_keys(curl)
    css(driver, "#account-submit").click()
    wait(driver, lambda d: css(d, f"{row} .badge").text == "ready")
    assert "chrome" in css(driver, f"{row} td:nth-of-type(6)").text.lower()
    assert face.api("POST", "/v1/chat/completions", json=chat_body("hi")).status_code == 200

    # Check: a worker bootstraps the account and runs a short turn; each step is shown.
    css(driver, f"{row} button.check").click()
    report = wait(driver, lambda d: (t := css(d, "#account-result h3").text).startswith("Check of ") and t)
    assert report.endswith(": passed"), css(driver, "#account-result").text
    assert len(all_css(driver, "#account-result .steps li")) >= 2

    # Live shows the gateway's own numbers.
    css(driver, "#tab-live").click()
    wait(driver, lambda d: "1 of 1" in css(d, "#live-tiles").text)
    assert len(all_css(driver, "#live-charts svg.chart")) == 4
    wait(driver, lambda d: all_css(d, "#live-charts rect"))  # the turns of this test are drawn
    minutes = face.admin("GET", "/stats").json()["minutes"]
    assert sum(m["turns"].get("done", 0) for m in minutes) >= 1  # recorded by the worker
    assert any(m["errors"] for m in minutes)  # the challenged turn, by class
    assert any(m["added_first_token_ms"] is not None for m in minutes)
    screenshot(driver, "console-live", 1280, 800)
    assert ADMIN_KEY not in driver.page_source and ADMIN_KEY not in driver.current_url
    assert csp_violations(driver) == []


def test_a_key_created_in_the_console_works_in_the_playground_until_revoked(browser: Any, face: Face) -> None:
    driver = browser
    face.only_account(fresh("keys"))
    fresh_page(driver, face.url + "/console#keys")
    css(driver, "#admin-key").send_keys(ADMIN_KEY)
    css(driver, "#admin-form button[type=submit]").click()
    label = fresh("browser-key")
    css(driver, "#key-label").send_keys(label)
    css(driver, "#key-rpm").send_keys("30")
    css(driver, "#key-submit").click()
    secret = wait(driver, lambda d: css(d, "#secret").get_attribute("value"))
    assert secret.startswith("sk-")
    rows = lambda d: [r for r in all_css(d, "#key-table tbody tr") if label in r.text]  # noqa: E731
    [row] = wait(driver, rows)
    assert "30/min" in row.text
    screenshot(driver, "console-keys", 1280, 800)
    css(driver, "#secret-done").click()
    assert css(driver, "#secret").get_attribute("value") == "" and secret not in driver.page_source

    # The secret works from the playground like any client's key.
    driver.execute_script("window.open('about:blank')")
    console, playground = driver.window_handles[0], driver.window_handles[-1]
    driver.switch_to.window(playground)
    try:
        open_playground(driver, face, secret)
        send(driver, "hello with a managed key")
        driver.switch_to.window(console)
        revoke = next(r for r in all_css(driver, "#key-table tbody tr") if label in r.text)
        button = revoke.find_element(By.CSS_SELECTOR, "button.revoke")
        button.click()
        button.click()
        wait(driver, lambda d: all(label not in r.text for r in all_css(d, "#key-table tbody tr")))
        driver.switch_to.window(playground)
        prompt = css(driver, "#prompt")
        prompt.send_keys("and now?")
        prompt.send_keys(Keys.ENTER)
        error = wait(driver, lambda d: css(d, "#error").is_displayed() and css(d, "#error"))
        assert error.text.startswith("HTTP 401"), error.text
    finally:
        driver.close()
        driver.switch_to.window(console)


def test_keyboard_only_send_a_message_and_refresh_an_account(browser: Any, face: Face) -> None:
    driver = browser
    name = fresh("keyboard")
    account_id = face.only_account(name)

    fresh_page(driver, face.url + "/")
    tab_to(driver, "#api-key")
    press(driver, API_KEY, Keys.ENTER)
    wait(driver, lambda d: css(d, "#model option").get_attribute("value"))
    tab_to(driver, "#prompt")
    press(driver, "typed without a mouse", Keys.ENTER)
    finished(driver, 0)

    face.sim.set_account(name, fault="captcha")
    face.api("POST", "/v1/chat/completions", json=chat_body("hi"))
    fresh_page(driver, face.url + "/console")
    tab_to(driver, "#admin-key")
    press(driver, ADMIN_KEY, Keys.ENTER)
    row = f'#account-table tr[data-id="{account_id}"]'
    wait(driver, lambda d: all_css(d, row) and css(d, f"{row} .badge").text == "needs attention")
    tab_to(driver, f"{row} button.refresh")
    press(driver, Keys.ENTER)
    assert driver.switch_to.active_element == css(driver, "#account-paste")  # focus moved to the form
    tab_to(driver, 'input[name="source"][value="curl"]', backwards=True)
    press(driver, Keys.ARROW_DOWN, Keys.ARROW_DOWN)  # radio group: cookies
    tab_to(driver, "#account-paste")
    press(driver, f"_U={fresh('typed')}; MUID=z")
    tab_to(driver, "#account-submit")
    press(driver, Keys.ENTER)
    wait(driver, lambda d: css(d, f"{row} .badge").text == "ready")
    assert face.api("POST", "/v1/chat/completions", json=chat_body("hi")).status_code == 200


CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)


def chrome_har(url: str, cookies: str) -> dict[str, Any]:
    """What Chrome's "Save all as HAR" keeps of one request to the upstream."""
    headers = [
        {"name": "cookie", "value": cookies},
        {"name": "sec-ch-ua", "value": '"Chromium";v="146", "Google Chrome";v="146", "Not.A/Brand";v="99"'},
        {"name": "sec-ch-ua-mobile", "value": "?0"},
        {"name": "sec-ch-ua-platform", "value": '"Windows"'},
        {"name": "user-agent", "value": CHROME_UA},
    ]
    entry = {
        "startedDateTime": "2026-12-07T10:00:00.000Z",
        "request": {"method": "GET", "url": f"{url}/", "headers": headers},
    }
    return {"log": {"version": "1.2", "entries": [entry]}}


def test_an_account_added_from_a_har_file_can_be_disabled_and_deleted(
    browser: Any, face: Face, tmp_path: Any
) -> None:
    driver = browser
    face.only_account(fresh("first"))
    har = tmp_path / "copilot.har"
    har.write_text(json.dumps(chrome_har(face.sim.http_url, f"_U={fresh('har')}; MUID=h")))
    fresh_page(driver, face.url + "/console")
    css(driver, "#admin-key").send_keys(ADMIN_KEY, Keys.ENTER)
    wait(driver, lambda d: len(all_css(d, "#account-table tbody tr")) == 1)

    css(driver, "#add-account").click()
    css(driver, 'input[name="source"][value="har"]').click()
    css(driver, "#account-file").send_keys(str(har))
    css(driver, "#account-label").send_keys("from a HAR")
    css(driver, "#account-submit").click()
    shown = css(driver, "#account-result")
    result = wait(driver, lambda d: shown.is_displayed() and shown.text)
    assert "from a HAR: ready" in result and "chrome 146" in result, result
    [added] = [a for a in face.admin("GET", "/accounts").json()["data"] if a["label"] == "from a HAR"]
    assert added["user_agent"] == "chrome 146" and added["client_hints"]
    row = f'#account-table tr[data-id="{added["id"]}"]'
    assert "chrome 146" in css(driver, f"{row} td:nth-of-type(6)").text

    css(driver, f"{row} button.toggle").click()
    wait(driver, lambda d: css(d, f"{row} .badge").text == "disabled")
    stored = {a["id"]: a for a in face.admin("GET", "/accounts").json()["data"]}
    assert stored[added["id"]]["enabled"] is False
    delete = css(driver, f"{row} button.danger")
    delete.click()
    assert delete.text == "Confirm delete"  # nothing happens on the first press
    delete.click()
    wait(driver, lambda d: not all_css(d, row))
    remaining = [a["id"] for a in face.admin("GET", "/accounts").json()["data"]]
    assert len(remaining) == 1 and added["id"] not in remaining


UNLABELLED = """
return [...document.querySelectorAll('input, select, textarea, button')]
  .filter((e) => e.type !== 'hidden' && !e.closest('[hidden]'))
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
  .map((e) => e.outerHTML);
"""


def test_every_control_is_labelled_and_a_phone_never_scrolls_sideways(browser: Any, face: Face) -> None:
    driver = browser
    face.only_account(fresh("phone"))
    for page, ready in (("/", "#model option:not([value=\"\"])"), ("/console", "#account-table tbody tr")):
        fresh_page(driver, face.url + page)
        css(driver, "#api-key" if page == "/" else "#admin-key").send_keys(
            API_KEY if page == "/" else ADMIN_KEY, Keys.ENTER
        )
        wait(driver, lambda d: all_css(d, ready))  # noqa: B023 (called before the loop moves on)
        assert driver.execute_script(UNLABELLED) == [], page
        metrics = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390, f"{page} is {width} px wide on a 390 px phone"
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
