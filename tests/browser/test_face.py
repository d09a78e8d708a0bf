"""The playground and the console in a real headless Chromium, against real processes.

Each test runs in both upstream dialects (the `face` fixture). What a user sees is checked
in the page; what the gateway did is checked through its APIs (the page must not be
trusted to report on itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import ADMIN_KEY, API_KEY, Face, fresh, screenshot

pytestmark = pytest.mark.slow

# Records, on every DOM change while the last answer is streaming, how much text it shows.
OBSERVE_PAINTS = """
window.partialLengths = [];
new MutationObserver(() => {
  const last = document.querySelector('#transcript li.assistant:last-child');
  if (last && last.dataset.state === 'streaming') {
    window.partialLengths.push(last.querySelector('.content').textContent.length);
  }
}).observe(document.querySelector('#transcript'), {subtree: true, characterData: true, childList: true});
"""


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


def test_a_streamed_chat_arrives_incrementally_continues_branches_on_edit_and_deletes(
    browser: Any, face: Face
) -> None:
    driver = browser
    open_playground(driver, face, API_KEY)
    driver.execute_script(OBSERVE_PAINTS)
    answer = send(driver, "[sim:slow=0.03][sim:long=25] hello there")
    final = answer.find_element(By.CSS_SELECTOR, ".content").text
    assert final == " ".join(f"w{i}" for i in range(1, 26))
    partial = {n for n in driver.execute_script("return window.partialLengths") if 0 < n < len(final)}
    assert len(partial) >= 2, f"the answer was painted only once before it ended: {partial}"

    [conversation_id] = sidebar_ids(driver)
    assert conversation_id.startswith("conv_")
    assert css(driver, "#chat-title").text == "[sim:slow=0.03][sim:long=25] hello there"

    # Continue: the same conversation, now two turns (the page sent its whole history).
    answer = send(driver, "[sim:search] the weather in Paris")
    assert sidebar_ids(driver) == [conversation_id]
    assert len(transcript(face, conversation_id)) == 4
    links = answer.find_elements(By.CSS_SELECTOR, ".citations a")
    assert links and all(str(link.get_attribute("href")).startswith("http") for link in links)

    # Rename it (the conversation's metadata).
    css(driver, f'#conversations li[data-id="{conversation_id}"] button.small').click()
    name = css(driver, f"#rename-{conversation_id}")
    name.clear()
    name.send_keys("Paris weather", Keys.ENTER)
    wait(driver, lambda d: css(d, "#chat-title").text == "Paris weather")
    stored = face.api("GET", f"/v1/conversations/{conversation_id}").json()
    assert stored["metadata"]["title"] == "Paris weather"

    # Edit the second question: the gateway branches; the page shows the branch, the original stays.
    css(driver, '#transcript li.user[data-index="2"] button').click()
    editor = css(driver, "#edit-2")
    editor.clear()
    editor.send_keys("an edited follow-up")
    css(driver, "#transcript form.edit button[type=submit]").click()
    finished(driver, 1)  # the edit replaces the second answer
    wait(driver, lambda d: len(sidebar_ids(d)) == 2)
    branch_id = sidebar_ids(driver)[0]
    assert branch_id != conversation_id
    assert css(driver, f'#conversations li[data-id="{branch_id}"]').get_attribute("class") == "branch"
    assert css(driver, "#branch-note").is_displayed()
    assert css(driver, "#chat-title").text == "Paris weather (branch)"
    shown = [m.text for m in all_css(driver, "#transcript li .content")]
    assert shown[2] == "an edited follow-up" and len(shown) == 4
    branch = transcript(face, branch_id)
    assert branch[:3] == [*transcript(face, conversation_id)[:2], "an edited follow-up"]
    assert len(transcript(face, conversation_id)) == 4  # the original is untouched
    screenshot(driver, "playground", 1280, 800)
    screenshot(driver, "playground", 390, 844, mobile=True)

    # Delete the branch (a second click confirms): gone from the sidebar and from the gateway.
    delete = css(driver, f'#conversations li[data-id="{branch_id}"] button.danger')
    delete.click()
    delete.click()
    wait(driver, lambda d: sidebar_ids(d) == [conversation_id])
    assert face.api("GET", f"/v1/conversations/{branch_id}").status_code == 404

    # Reopen the original from the sidebar: its four messages come back from the API.
    css(driver, f'#conversations li[data-id="{conversation_id}"] button.link').click()
    wait(driver, lambda d: len(all_css(d, "#transcript li.message")) == 4)
    assert API_KEY not in driver.page_source and API_KEY not in driver.current_url
    assert csp_violations(driver) == []


def test_an_account_needs_attention_after_a_challenge_and_a_curl_refresh_brings_it_back(
    browser: Any, face: Face
) -> None:
    driver = browser
    name = fresh("challenged")
    account_id = face.only_account(name)
    face.sim.set_account(name, fault="captcha")
    assert face.api("POST", "/v1/chat/completions", json=_chat("hi")).status_code >= 400  # finds out

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
    assert face.api("POST", "/v1/chat/completions", json=_chat("hi")).status_code == 200

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
    face.api("POST", "/v1/chat/completions", json=_chat("hi"))
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
    assert face.api("POST", "/v1/chat/completions", json=_chat("hi")).status_code == 200


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


def _chat(text: str) -> dict[str, Any]:
    return {"model": "Balanced", "messages": [{"role": "user", "content": text}]}


def test_the_pages_are_strict_about_framing_scripts_and_absence(face: Face) -> None:
    for path in ("/", "/console"):
        page = requests.get(face.url + path, timeout=10)
        assert page.status_code == 200
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert page.headers["X-Frame-Options"] == "DENY"
        assert "<script>" not in page.text and " style=" not in page.text  # no inline code or style
        assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handlers
    assert requests.get(face.url + "/admin/stats", timeout=10).status_code == 401


# A 1x1 PNG: the smallest image the gateway accepts as an attachment.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b4a0e50000000049454e44ae426082"
)
WEATHER_TOOL = (
    '[{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]'
)


def test_tools_an_attached_image_and_a_rate_limit_countdown(browser: Any, face: Face, tmp_path: Any) -> None:
    driver = browser
    face.only_account(fresh("extras"))
    created = face.admin("POST", "/keys", json={"label": "one a minute", "rpm": 1})
    assert created.status_code == 201, created.text
    open_playground(driver, face, created.json()["key"])

    # Tools: pasted definitions go with the message; the emulated call comes back in the answer.
    css(driver, "#tools-panel summary").click()
    css(driver, "#tools").send_keys(WEATHER_TOOL)
    css(driver, "#composer details select").send_keys("required")
    answer = send(driver, "[sim:tools=1] what is the weather in Paris?")
    [call] = answer.find_elements(By.CSS_SELECTOR, ".tool-calls pre")
    assert call.text.startswith("get_weather(") and "city" in call.text

    # The key allows one request a minute: the next is a 429 whose Retry-After counts down.
    prompt = css(driver, "#prompt")
    prompt.send_keys("again", Keys.ENTER)
    error = wait(driver, lambda d: css(d, "#error").is_displayed() and css(d, "#error"))
    assert error.text.startswith("HTTP 429"), error.text
    def countdown(d: Any) -> int | None:
        shown = re.search(r"retry in (\d+) s", css(d, "#status").text)
        return int(shown.group(1)) if shown else None

    start = wait(driver, countdown)
    assert 50 <= start <= 60  # the key's minute window
    wait(driver, lambda d: (left := countdown(d)) is not None and left < start, 5)

    # An attached image goes as a data URI; the upstream saw it.
    face.admin("PATCH", f"/keys/{created.json()['id']}", json={"rpm": None})
    css(driver, "#tools").clear()
    image = tmp_path / "dot.png"
    image.write_bytes(PNG)
    css(driver, "#attach").send_keys(str(image))
    wait(driver, lambda d: "dot.png" in css(d, "#attachment").text)
    answer = send(driver, "what is in this picture?")
    assert "I see an image" in answer.find_element(By.CSS_SELECTOR, ".content").text
    sent = all_css(driver, "#transcript li.user img.attached")
    assert sent and str(sent[-1].get_attribute("src")).startswith("data:image/png;base64,")


def test_a_drawn_image_is_shown_inline_with_its_progress(browser: Any, face: Face) -> None:
    if face.dialect != "copilot":
        pytest.skip("the simulator draws images in the Copilot dialect")
    driver = browser
    face.only_account(fresh("drawing"))
    open_playground(driver, face, API_KEY)
    answer = send(driver, "[sim:image] a lighthouse at dusk")
    [image] = answer.find_elements(By.CSS_SELECTOR, ".images img")
    assert str(image.get_attribute("src")).startswith("http")
    assert answer.find_elements(By.CSS_SELECTOR, ".progress li")  # "Generating an image", as it happened
    assert csp_violations(driver) == []
