"""The playground in a real headless Chromium against real processes, in both dialects.

What a user sees is checked in the page; what the gateway did is checked through its API
(the page is not trusted to report on itself).
"""

from __future__ import annotations

import concurrent.futures
import re
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import API_KEY, Face, fresh, screenshot
from tests.browser.pages import (
    all_css,
    chat_body,
    csp_violations,
    css,
    finished,
    open_playground,
    send,
    sidebar_ids,
    transcript,
    wait,
)

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


def test_a_streamed_chat_arrives_incrementally_continues_branches_on_edit_and_deletes(
    browser: Any, face: Face
) -> None:
    driver = browser
    face.only_account(fresh("chat"))
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

    # Regenerate the last answer: its question goes again without the answer, so that branches too.
    css(driver, '#transcript li.assistant[data-index="3"] button').click()
    finished(driver, 1)
    wait(driver, lambda d: len(sidebar_ids(d)) == 2)
    regenerated = sidebar_ids(driver)[0]
    assert regenerated not in (conversation_id, branch_id)
    assert transcript(face, regenerated)[:3] == transcript(face, conversation_id)[:3]
    assert API_KEY not in driver.page_source and API_KEY not in driver.current_url
    assert csp_violations(driver) == []


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
    created = face.admin("POST", "/keys", json={"label": "extras"})
    assert created.status_code == 201, created.text
    open_playground(driver, face, created.json()["key"])

    # Tools: pasted definitions go with the message; the emulated call comes back in the answer.
    css(driver, "#tools-panel summary").click()
    css(driver, "#tools").send_keys(WEATHER_TOOL)
    css(driver, "#composer details select").send_keys("required")
    answer = send(driver, "[sim:tools=1] what is the weather in Paris?")
    [call] = answer.find_elements(By.CSS_SELECTOR, ".tool-calls pre")
    assert call.text.startswith("get_weather(") and "city" in call.text

    # Now the key allows one request a minute, already spent: a 429 whose Retry-After counts down.
    assert face.admin("PATCH", f"/keys/{created.json()['id']}", json={"rpm": 1}).status_code == 200
    prompt = css(driver, "#prompt")
    prompt.send_keys("again", Keys.ENTER)
    error = wait(driver, lambda d: css(d, "#error").is_displayed() and css(d, "#error"))
    assert error.text.startswith("HTTP 429"), error.text
    def countdown(d: Any) -> int | None:
        shown = re.search(r"retry in (\d+) s", css(d, "#status").text)
        return int(shown.group(1)) if shown else None

    start = wait(driver, countdown)
    assert 0 < start <= 60  # within the key's minute window
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


def test_the_queue_position_shows_while_a_turn_waits_for_the_account(browser: Any, face: Face) -> None:
    driver = browser
    name = fresh("busy")
    account_id = face.only_account(name)
    assert face.admin("PATCH", f"/accounts/{account_id}", json={"max_concurrent": 1}).status_code == 200
    open_playground(driver, face, API_KEY)
    driver.execute_script(
        "window.statuses = [];"
        "new MutationObserver(() => window.statuses.push(document.querySelector('#status').textContent))"
        ".observe(document.querySelector('#status'), {childList: true, characterData: true, subtree: true});"
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long_turn = chat_body("[sim:slow=0.1][sim:long=40] hold the only slot")
        slow = pool.submit(face.api, "POST", "/v1/chat/completions", API_KEY, long_turn)
        wait(driver, lambda d: face.sim.accounts().get(name, {}).get("in_flight") == 1)
        answer = send(driver, "my turn")
        assert slow.result().status_code == 200
    assert "Queued, position 1" in driver.execute_script("return window.statuses")
    assert answer.find_element(By.CSS_SELECTOR, ".content").text


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
