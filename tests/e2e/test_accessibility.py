"""What a screen-reader, keyboard or phone user meets on the learner pages, in Chromium: finger-
sized targets at 360 px, a chat error that goes when the conversation ends, and live regions
that say each change once (the feedback panel's short status, the study's Continue status)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from study import services
from tests.e2e.test_chat_drafts import start_practising
from tests.e2e.test_study import _fresh_rate_limits, open_study  # noqa: F401 (autouse fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 360, "height": 740}
TOUCH = 44  # the app's finger-sized target (buttons, skill and check-in choices)

# Every change to a live region's text, as a screen reader would be told it: a MutationObserver
# recording a region's text after each change inside it, and each region added to the page already
# holding text (Chromium may read such a region out as it appears).
RECORD_LIVE = """
() => {
  window.liveChanges = [];
  const LIVE = '[role=status], [role=alert], [role=log], [aria-live]:not([aria-live=off])';
  const note = (region) => window.liveChanges.push(
    {id: region.id, text: region.textContent.trim().replace(/\\s+/g, ' ')});
  new MutationObserver((records) => {
    for (const record of records) {
      const target = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      const region = target && target.closest(LIVE);
      if (region) { note(region); continue; }
      for (const node of record.addedNodes) {
        if (node.nodeType !== 1) continue;
        const added = [...(node.matches(LIVE) ? [node] : []), ...node.querySelectorAll(LIVE)];
        added.filter((r) => r.textContent.trim()).forEach(note);
      }
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


def live_changes(page, region: str) -> list[str]:
    return [c["text"] for c in page.evaluate("window.liveChanges") if c["id"] == region]


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


def test_the_feedback_panel_is_not_live_and_its_short_status_is_said_once_per_change(
    page, fake_llm_server
) -> None:
    fake_llm_server.reset()
    start_practising(page)
    # No live region holds the panel: only the status line and the chat's own regions speak.
    assert page.evaluate(
        "() => !document.getElementById('feedback-panel-body')"
        ".closest('[aria-live]:not([aria-live=off]), [role=status], [role=alert], [role=log]')"
    )
    page.evaluate(RECORD_LIVE)
    # The expert model takes a moment, so the quick check is on screen first.
    fake_llm_server.configure(ttft_ms=1500)
    page.check("#strategy-assert")
    page.fill("#message-text", "Please fill the tank before you bring the car back.")
    page.click("#feedback-button")
    page.wait_for_selector("#feedback-panel-body[data-state=final]", timeout=20_000)
    expect(page.locator("#feedback-status")).to_contain_text("Expert feedback ready")
    page.wait_for_timeout(500)  # anything else the panel's updates would have said
    said = [text for text in live_changes(page, "feedback-status") if text]
    assert said[0].startswith("Quick check ready: "), said
    assert said[-1].startswith("Expert feedback ready: "), said
    assert len(said) == len(set(said)) == 2, said  # each once, nothing repeated
    assert all("skill" in text and len(text) < 120 for text in said), said
    # The panel's own text (the reasoning, the rewrites) was never in a live region.
    reasoning = page.locator("#feedback-panel-body .feedback-skill").first.inner_text()
    assert not any(reasoning[:40] in c["text"] for c in page.evaluate("window.liveChanges"))

    before = len(live_changes(page, "feedback-status"))
    # A message stored empties the panel silently; the next request is announced again.
    page.click("#send-button")
    page.wait_for_selector("#feedback-panel-body[data-state=empty]")
    page.wait_for_timeout(300)
    assert [t for t in live_changes(page, "feedback-status")[before:] if t] == []
    fake_llm_server.reset()


def errors_tied_to_fields(page) -> list[str]:
    """What is wrong with a page's error summary: each link must reach a field (focus lands on it)
    that is described by its own error message beside it, and a text field says it is invalid."""
    problems: list[str] = []
    links = page.locator("#form-errors a")
    assert links.count() > 0
    for index in range(links.count()):
        link = links.nth(index)
        target = link.get_attribute("href")[1:]
        link.click()
        focused = page.evaluate("document.activeElement && document.activeElement.id")
        if focused != target:
            problems.append(f"{target}: the link leaves focus on {focused!r}")
        field = page.locator(f"[id='{target}']")
        described = (field.get_attribute("aria-describedby") or "").split()
        messages = [
            page.locator(f"[id='{i}']").inner_text().strip()
            for i in described
            if page.locator(f"[id='{i}'].error").count()
        ]
        if not any(messages):
            problems.append(f"{target}: no error message tied to it")
        tag = field.evaluate("e => e.tagName")
        if tag in ("INPUT", "TEXTAREA") and field.get_attribute("aria-invalid") != "true":
            problems.append(f"{target}: not marked invalid")
    return problems


def join(page, study) -> None:
    page.goto(f"/s/{study.slug}/?PROLIFIC_PID=a11y-{study.slug}&STUDY_ID=s&SESSION_ID=s")
    page.click("#agree")
    page.wait_for_url("**/step/situations/")


def test_the_study_forms_tie_each_error_to_its_field(page, live_server_url: str) -> None:
    study = open_study("a11y-forms", "simulation", live_server_url)
    join(page, study)
    page.click("#continue")  # nothing filled in
    page.wait_for_selector("#form-errors")
    assert page.locator("#form-errors a").count() == 8  # four fields, two situations
    assert errors_tied_to_fields(page) == []

    # Both valid, but situation 2 is not the harder one: the error sits at its difficulty.
    for prefix, difficulty in (("s1", 7), ("s2", 3)):
        page.fill(f"#id_{prefix}-situation", "My flatmate leaves their dishes in the sink.")
        page.fill(f"#id_{prefix}-goal", "Get my flatmate to wash up the same evening.")
        page.check(f"#id_{prefix}-category_social")
        page.check(f"#id_{prefix}-difficulty_{difficulty}")
    page.click("#continue")
    page.wait_for_selector("#form-errors")
    assert page.locator("#form-errors a").count() == 1
    assert errors_tied_to_fields(page) == []
    page.check("#id_s2-difficulty_8")
    page.click("#continue")

    page.wait_for_url("**/step/pre_s1/")
    page.click("#continue")  # no answer given
    page.wait_for_selector("#form-errors")
    assert page.locator("#form-errors a").count() == len(services.active_items())
    assert errors_tied_to_fields(page) == []


def test_the_study_chats_continue_status_is_one_live_region_said_once(
    page, live_server_url: str, fake_llm_server
) -> None:
    fake_llm_server.reset()
    study = open_study("a11y-continue", "simulation", live_server_url)
    join(page, study)
    for prefix, difficulty in (("s1", 3), ("s2", 7)):
        page.fill(f"#id_{prefix}-situation", "My flatmate leaves their dishes in the sink.")
        page.fill(f"#id_{prefix}-goal", "Get my flatmate to wash up the same evening.")
        page.check(f"#id_{prefix}-category_social")
        page.check(f"#id_{prefix}-difficulty_{difficulty}")
    page.click("#continue")
    for step in ("pre_s1", "pre_s2"):
        page.wait_for_url(f"**/step/{step}/")
        for item in services.active_items():
            page.check(f"#item_{item.key}_4")
        page.click("#continue")
    page.wait_for_url("**/step/eval_s1_pre/")
    page.wait_for_selector("#chat[data-socket=open]")
    page.evaluate(RECORD_LIVE)
    page.evaluate("document.getElementById('continue-hint').dataset.original = '1'")
    with page.expect_response(lambda r: "/status/" in r.url) as polled:
        pass
    assert polled.value.ok
    page.wait_for_timeout(3_500)  # at least one more poll
    assert live_changes(page, "continue-hint") == []  # nothing changed, nothing said

    page.check("#strategy-describe")
    page.fill("#message-text", "The dishes have been in the sink for two weeks. #agree")
    page.click("#send-button")
    page.wait_for_selector("#summary")
    expect(page.locator("#continue")).to_be_enabled(timeout=15_000)
    page.wait_for_timeout(3_500)  # polls that would have come after the change
    said = [text for text in live_changes(page, "continue-hint") if text]
    assert said == ["The conversation has ended. Press Continue for the next step."], said
    # The same element all along: a region re-created by each poll is read out each time, or never.
    assert page.get_attribute("#continue-hint", "data-original") == "1"
    assert page.get_attribute("#continue", "aria-describedby") == "continue-hint"
