"""The learner's draft survives what goes wrong before it is stored: a send the server refuses, and
a reload of the page (what the learner does when the database was away); once stored it is gone
from the box, also after a reload."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DRAFT = "When you borrow the car, please fill the tank before you bring it back."


def start_practising(page) -> None:
    page.goto("/practice/situations/new/")
    page.fill("#id_situation", "My brother borrows my car and brings it back with an empty tank.")
    page.fill("#id_goal", "Get him to fill the tank before he brings it back.")
    page.check("#id_category_family")
    page.check("#id_difficulty_4")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_url("**/practice/c/*/")
    page.wait_for_selector("#chat[data-socket=open]")


def test_a_draft_survives_a_refused_send_and_a_reload_and_goes_once_stored(
    page, fake_llm_server
) -> None:
    fake_llm_server.reset()
    start_practising(page)
    page.fill("#message-text", DRAFT)
    page.click("#send-button")  # no skill chosen: refused, not stored
    expect(page.locator("#chat-error")).to_contain_text("Pick")
    assert page.input_value("#message-text") == DRAFT
    page.reload()
    page.wait_for_selector("#chat[data-socket=open]")
    assert page.input_value("#message-text") == DRAFT  # kept across the reload
    expect(page.locator("#message-count")).to_contain_text(f"{len(DRAFT)} of")
    page.check("#strategy-assert")
    page.click("#send-button")
    expect(page.locator("#transcript .msg-learner .msg-text")).to_have_text([DRAFT], timeout=30_000)
    expect(page.locator("#message-text")).to_have_value("")
    page.reload()
    page.wait_for_selector("#chat[data-socket=open]")
    assert page.input_value("#message-text") == ""  # stored: not offered again
    # The partner's reply is still being written: let it be stored before the test's database is
    # emptied (a TRUNCATE racing the reply's transaction can deadlock the teardown).
    page.wait_for_selector("#transcript .msg-partner.msg-complete", timeout=20_000)


def test_a_draft_stored_before_its_confirmation_arrived_is_not_offered_again(
    page, fake_llm_server
) -> None:
    fake_llm_server.reset()
    start_practising(page)
    page.fill("#message-text", DRAFT)
    # The message is stored, but the page goes before the confirmation reaches it.
    page.evaluate(
        "([key, text]) => sessionStorage.setItem(key, text)",
        [f"imbue-draft:{page.get_attribute('#chat', 'ws-connect')}", DRAFT],
    )
    page.check("#strategy-assert")
    page.click("#send-button")
    expect(page.locator("#transcript .msg-learner .msg-text")).to_have_text([DRAFT], timeout=30_000)
    page.evaluate(
        "([key, text]) => sessionStorage.setItem(key, text)",
        [f"imbue-draft:{page.get_attribute('#chat', 'ws-connect')}", DRAFT],
    )
    page.reload()
    page.wait_for_selector("#chat[data-socket=open]")
    assert page.input_value("#message-text") == ""
    # The partner's reply is still being written: let it be stored before the test's database is
    # emptied (a TRUNCATE racing the reply's transaction can deadlock the teardown).
    page.wait_for_selector("#transcript .msg-partner.msg-complete", timeout=20_000)
