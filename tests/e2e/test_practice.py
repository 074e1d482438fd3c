"""A learner writes a situation, practises three messages watching each reply stream in, and
refreshes mid-reply: nothing is lost and nothing is shown twice."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from simulations.models import Conversation, Message, Situation

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MESSAGES = [
    (
        ["describe"],
        "Three times this month you asked me to cover your Saturday shift on the Friday night, "
        "and each time I cancelled my own plans.",
    ),
    (
        ["express", "assert"],
        "I feel worn out and a bit taken for granted when that happens. Please ask me at least "
        "a week ahead from now on.",
    ),
    (
        ["reinforce", "negotiate"],
        "If you ask a week ahead I can usually say yes, and you will not be stuck. What if we "
        "try that for the next two months and see how it goes?",
    ),
]


def bubbles(page, role: str) -> list[str]:
    return page.locator(f"#transcript .msg-{role} .msg-text").all_inner_texts()


def watch_reply_stream(page, index: int) -> list[int]:
    """Lengths of the visible reply seen while it streamed in (until it is complete)."""
    bubble = page.locator("#transcript .msg-partner").nth(index)
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        classes = bubble.get_attribute("class") or ""
        text = bubble.locator(".msg-text").inner_text()
        if "msg-complete" in classes:
            return seen
        if text and (not seen or len(text) != seen[-1]):
            seen.append(len(text))
        time.sleep(0.03)
    raise AssertionError("the reply did not complete")


def write_and_send(page, strategies: list[str], text: str) -> None:
    for key in strategies:
        page.check(f"#strategy-{key}")
    page.fill("#message-text", text)
    page.click("#send-button")


def test_practise_three_messages_watching_replies_stream_and_refresh_mid_reply(
    page, fake_llm_server
) -> None:
    fake_llm_server.reset()
    # Slow enough to watch: about 12 words a second after a short pause.
    fake_llm_server.configure(ttft_ms=200, tokens_per_s=12)

    page.goto("/practice/situations/new/")
    page.fill(
        "#id_situation",
        "My coworker keeps asking me to cover their weekend shifts at the last minute.",
    )
    page.fill("#id_goal", "Get them to ask me at least a week ahead.")
    page.check("#id_category_work")
    page.check("#id_difficulty_6")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_url("**/practice/c/*/")
    page.wait_for_selector("#chat[data-socket=open]")
    conversation = Conversation.objects.get()
    assert conversation.partner_engine == "llm" and conversation.partner_brief["source"] == "llm"

    for index, (strategies, text) in enumerate(MESSAGES[:2]):
        write_and_send(page, strategies, text)
        lengths = watch_reply_stream(page, index)
        assert len(lengths) >= 3, f"reply {index + 1} arrived in one piece: {lengths}"
        assert lengths == sorted(lengths)
        assert page.input_value("#message-text") == ""  # cleared once stored
        assert not page.is_checked(f"#strategy-{strategies[0]}")
    assert bubbles(page, "learner") == [text for _, text in MESSAGES[:2]]

    strategies, text = MESSAGES[2]
    write_and_send(page, strategies, text)
    # The bubble is replaced when the reply starts, so look it up afresh each time.
    page.wait_for_function(
        """() => {
            const bubbles = document.querySelectorAll("#transcript .msg-partner");
            return bubbles.length === 3 && !bubbles[2].classList.contains("msg-complete")
                && bubbles[2].querySelector(".msg-text").textContent.split(" ").length >= 4;
        }"""
    )
    partial = page.locator("#transcript .msg-partner").nth(2).locator(".msg-text").inner_text()
    page.reload()
    # Straight from the server's page, before the socket adds anything: the words so far.
    after_reload = page.locator("#transcript .msg-partner").nth(2).locator(".msg-text").inner_text()
    assert len(after_reload) >= len(partial)
    page.wait_for_selector("#chat[data-socket=open]")
    expect(page.locator("#transcript .msg-partner.msg-complete")).to_have_count(3)

    messages = list(Message.objects.filter(conversation=conversation).order_by("seq"))
    assert [(m.role, m.state) for m in messages] == [
        ("learner", "complete"),
        ("partner", "complete"),
    ] * 3
    assert all(m.attempts == 1 for m in messages if m.role == "partner")
    assert bubbles(page, "learner") == [text for _, text in MESSAGES]
    assert bubbles(page, "partner") == [m.text for m in messages if m.role == "partner"]
    last = messages[-1].text
    assert last.startswith(partial) and last.startswith(after_reload)
    assert page.locator("#transcript .msg").count() == 6
    requests = [r for r in fake_llm_server.requests() if r["purpose"] == "partner"]
    assert len(requests) == 3  # the refresh did not cause a second reply
    assert page.locator("#message-status").inner_text() == "You have 7 messages left."


def test_practise_without_javascript(browser, live_server_url: str, fake_llm_server) -> None:
    fake_llm_server.reset()
    context = browser.new_context(base_url=live_server_url, java_script_enabled=False)
    page = context.new_page()
    try:
        situation = Situation.objects.create(
            slug="e2e-no-js",
            title="Borrowed car returned empty",
            category="family",
            situation="My brother has returned my car with an empty tank twice this month.",
            goal="Get him to refill the tank before he gives the car back.",
            difficulty=3,
        )
        page.goto("/practice/library/")
        page.get_by_role("button", name=f"Practise this: {situation.title}").click()
        page.wait_for_url("**/practice/c/*/")
        page.check("#checkin-before-7")
        page.click("text=Save how I feel")
        page.check("#strategy-describe")
        page.check("#strategy-assert")
        page.fill("#message-text", MESSAGES[0][1])
        page.click("#send-button")  # the reply is written before the page comes back
        page.wait_for_url("**/practice/c/*/#composer")
        conversation = Conversation.objects.get(situation=situation)
        learner, reply = conversation.messages.order_by("seq")
        assert reply.state == "complete"
        assert bubbles(page, "partner") == [reply.text]
        assert bubbles(page, "learner") == [learner.text]
        assert conversation.checkins.get().intensity == 7
        page.click("text=End the conversation")
        assert "You ended the conversation" in page.locator("#summary").inner_text()
    finally:
        context.close()
