"""What a screen-reader, keyboard or phone user meets on the learner pages, in Chromium: finger-
sized targets at 360 px, a chat error that goes when the conversation ends, and live regions
that say each change once (the feedback panel's short status, the study's Continue status)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_chat_drafts import start_practising

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 360, "height": 740}
TOUCH = 44  # the app's finger-sized target (buttons, skill and check-in choices)


def boxes(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        selector,
        "els => els.filter(e => e.offsetParent).map(e => {"
        " const r = e.getBoundingClientRect();"
        " return {text: e.textContent.trim(), width: r.width, height: r.height}; })",
    )


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.fixture
def phone(browser, live_server_url: str):
    context = browser.new_context(
        base_url=live_server_url, viewport=PHONE, has_touch=True, is_mobile=True
    )
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def test_on_a_phone_nav_links_the_worksheet_and_the_difficulty_scale_are_finger_sized(
    phone,
) -> None:
    phone.goto("/practice/situations/new/")
    nav = boxes(phone, ".site-header a")
    assert len(nav) >= 3
    difficulty = boxes(phone, "#id_difficulty label")
    assert len(difficulty) == 9
    radios = boxes(phone, "#id_difficulty input[type=radio]")
    for target in nav + difficulty:
        assert target["height"] >= TOUCH and target["width"] >= TOUCH, target
    for radio in radios:  # the circle itself is no speck inside its label
        assert radio["height"] >= 20 and radio["width"] >= 20, radio
    assert fits_the_screen(phone)

    start_practising(phone)
    worksheet = boxes(phone, "#worksheet > summary")
    assert len(worksheet) == 1 and worksheet[0]["height"] >= TOUCH, worksheet
    for target in boxes(phone, ".site-header a"):
        assert target["height"] >= TOUCH, target
    assert fits_the_screen(phone)


def test_the_chats_error_goes_when_the_conversation_ends(page, fake_llm_server) -> None:
    fake_llm_server.reset()
    start_practising(page)
    page.fill("#message-text", "Please fill the tank before you bring the car back.")
    page.click("#send-button")  # no skill chosen: refused
    expect(page.locator("#chat-error")).to_contain_text("Pick")
    page.click(".end-form button")
    page.wait_for_selector("#summary-heading")
    expect(page.locator("#chat-error")).to_be_empty()
    expect(page.locator("#chat-error")).to_be_hidden()
