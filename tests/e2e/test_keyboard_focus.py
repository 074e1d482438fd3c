"""By keyboard, focus stays in the conversation: Get feedback, Send, a refused Send and End
never drop it to the page (a screen-reader user would start again from the top)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_chat_drafts import start_practising

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ACTIVE = (
    "() => { const a = document.activeElement;"
    " return a && a !== document.body ? a.id || a.tagName : ''; }"
)


def active_id(page) -> str:
    return page.evaluate(ACTIVE)


def press_on(page, selector: str) -> None:
    page.focus(selector)
    page.keyboard.press("Enter")


def test_focus_stays_in_the_conversation_by_keyboard(page, fake_llm_server) -> None:
    fake_llm_server.reset()
    start_practising(page)
    page.fill("#message-text", "Please fill the tank before you bring the car back.")

    # A refused send (no skill chosen): the learner is back in the box to fix it.
    press_on(page, "#send-button")
    expect(page.locator("#chat-error")).to_contain_text("Pick")
    page.wait_for_function(f"() => ({ACTIVE})() !== ''")
    assert active_id(page) in ("message-text", "send-button")

    page.check("#strategy-assert")
    # Get feedback disables its button while it asks: focus comes back to it.
    press_on(page, "#feedback-button")
    page.wait_for_selector("#feedback-panel-body[data-state=final]", timeout=20_000)
    page.wait_for_function(f"() => ({ACTIVE})() !== ''", timeout=5_000)
    assert active_id(page) == "feedback-button"

    # Send by Enter on the button: the button is disabled until the reply; the box has focus.
    press_on(page, "#send-button")
    page.wait_for_selector("#message-sent", state="attached")
    expect(page.locator("#transcript .msg-partner.msg-complete")).to_have_count(1, timeout=20_000)
    assert active_id(page) == "message-text"

    # End: the composer goes; the summary's heading takes focus.
    press_on(page, ".end-form button")
    page.wait_for_selector("#summary-heading")
    page.wait_for_function(f"() => ({ACTIVE})() === 'summary-heading'", timeout=5_000)


def test_a_form_with_errors_puts_focus_on_them_and_each_link_reaches_its_field(page) -> None:
    page.goto("/practice/situations/new/")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_selector("#form-errors")
    page.wait_for_function(f"() => ({ACTIVE})() === 'form-errors'", timeout=5_000)
    links = page.locator("#form-errors a")
    assert links.count() >= 4  # situation, goal, who it is with, how hard
    for index in range(links.count()):
        target = links.nth(index).get_attribute("href")
        assert page.locator(target).count() == 1, target  # no link to an id that is not there
    for field in ("id_situation", "id_goal", "id_category", "id_difficulty"):
        described = page.get_attribute(f"#{field}", "aria-describedby") or ""
        errors = [page.locator(f"#{i}") for i in described.split() if i.endswith("-error")]
        assert errors and errors[0].inner_text().strip(), field  # its own message, tied to it
