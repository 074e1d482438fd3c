"""In the browser: ask for feedback, use the rewrite, ask again, send; every revision is kept."""

from __future__ import annotations

import pytest
import redis

from feedback import services
from feedback.models import Draft, FeedbackRequest
from imbue import ratelimit
from simulations.models import Message, Situation
from tests.conftest import wait_for


@pytest.fixture(autouse=True)
def _fresh_feedback_limits(settings) -> None:
    """Learner ids restart with every test database; their rate-limit windows must too."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}feedback:*"):
        client.delete(key)


# Weak on purpose, with all five strategies chosen: some skill is sure to get a rewrite.
DRAFT = "sorry, maybe if it's ok you could kind of help with the dishes sometime?"
FINAL = "#feedback-panel-body[data-state='final']"


def practise(page, **fields) -> Situation:
    """A situation of the test's own, opened as a learner does: "Practise" in the library."""
    situation = Situation.objects.create(**fields)
    page.goto("/practice/library/")
    page.get_by_role("button", name=f"Practise this: {situation.title}").click()
    page.wait_for_selector("#chat-form")
    return situation


def wait_for_feedback_socket(page) -> None:
    """Until the page's feedback socket is open (static/js/feedback.js has heard htmx:wsOpen)."""
    page.wait_for_selector("[data-feedback-socket][data-socket='open']", state="attached")


@pytest.mark.django_db(transaction=True)
def test_ask_for_feedback_use_the_rewrite_ask_again_and_send(page, fake_llm):
    situation = practise(
        page,
        slug="e2e-dishes",
        title="Dishes left in the sink",
        category="social",
        situation="My flatmate has left their dishes in the sink for most of the last two weeks.",
        goal="Get my flatmate to wash their dishes the same day.",
        difficulty=4,
    )

    for key in ("describe", "express", "assert", "reinforce", "negotiate"):
        page.check(f"#strategy-{key}")
    page.fill("#message-text", DRAFT)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if "/feedback/c/" in r.url else None)
    wait_for_feedback_socket(page)

    # First request: the expert model's panel replaces the quick offline check.
    page.click("#feedback-button")
    page.wait_for_selector(FINAL)
    panel = page.locator("#feedback-panel-body")
    assert "expert model" in panel.inner_text()
    first_id = panel.get_attribute("data-request-id")
    chips = panel.locator(".chip").all_inner_texts()
    assert chips and set(chips) <= {"Strong", "Weak", "None", "Yes", "No"}

    use = panel.get_by_role("button", name="Use this version").first
    rewrite = use.get_attribute("data-feedback-rewrite")
    use.click()
    assert page.input_value("#message-text") == rewrite
    assert page.input_value("#feedback-used-rewrite") == "1"

    # Second request on the rewritten draft.
    page.click("#feedback-button")
    page.wait_for_selector(f"{FINAL}:not([data-request-id='{first_id}'])")
    second_id = page.get_attribute("#feedback-panel-body", "data-request-id")

    # Send: the message is stored, the panel starts over for the next message.
    page.wait_for_selector("#send-button:not([disabled])")
    page.click("#send-button")
    page.wait_for_selector(".msg-learner")
    page.wait_for_selector("#feedback-panel-body[data-state='empty']")
    assert page.input_value("#feedback-used-rewrite") == ""

    message = Message.objects.get(role="learner", conversation__situation=situation)
    assert message.text == rewrite.strip()
    drafts = list(Draft.objects.filter(conversation=message.conversation).order_by("revision"))
    assert [(d.turn, d.revision, d.used_rewrite) for d in drafts] == [(1, 1, False), (1, 2, True)]
    assert drafts[0].text == DRAFT and drafts[1].text == rewrite.strip()
    services.link_sent_messages(message.conversation)
    assert all(
        d.sent_message_id == message.pk for d in Draft.objects.filter(pk__in=[d.pk for d in drafts])
    )

    requests = FeedbackRequest.objects.filter(draft__in=drafts).order_by("pk")
    assert [str(r.pk) for r in requests] == [first_id, second_id]
    assert all(r.status == "done" and r.engine == "llm" for r in requests)
    # The page reported when each expert panel was on screen: request-to-display latency.
    wait_for(
        lambda: all(r.latency_ms for r in FeedbackRequest.objects.filter(pk__in=requests)),
        10,
        "viewed reports",
    )
    assert len([r for r in fake_llm.requests() if r.get("purpose") == "feedback"]) == 2
    # Both were asked over the open feedback socket: no HTTP request per draft.
    assert posts == []
    # The partner's reply is still being written: let it be stored before the test's database is
    # emptied (a TRUNCATE racing the reply's transaction can deadlock the teardown).
    page.wait_for_selector("#transcript .msg-partner.msg-complete", timeout=20_000)


@pytest.mark.django_db(transaction=True)
def test_a_final_panel_that_beats_the_http_answer_is_kept(page, fake_llm):
    """The expert's panel can reach the page over the socket before the HTTP answer of its own
    request (a request held up by a slow network or a database hiccup); the late answer, the
    quick offline check, must not replace it, since the final panel is never sent again. (Two
    things keep it: htmx swaps the answer into the element it targeted, which the socket's panel
    replaced, and static/js/feedback.js refuses it; this test passes with either alone.)"""
    practise(
        page,
        slug="e2e-late-answer",
        title="A late answer",
        category="work",
        situation="My manager keeps adding tasks to my week without asking what I already have.",
        goal="Agree with my manager which task can wait.",
        difficulty=3,
    )
    page.check("#strategy-describe")
    page.fill("#message-text", DRAFT)

    held: list[str] = []

    def hold_the_answer(route) -> None:
        """Let the request through, but hand its answer to the page only once the expert's
        panel for it is on the page (it came over the socket)."""
        response = route.fetch()
        held.append(response.text())
        page.wait_for_selector(FINAL)
        route.fulfill(response=response)

    page.route("**/feedback/c/*/request/", hold_the_answer)
    # The quick check is answered well before the expert (even by a process still warming up).
    fake_llm.configure(ttft_ms=3000)
    # The page asks over HTTP when its feedback socket is not open (reconnecting, or a proxy
    # that refuses sockets). Told so, the page takes the button's HTTP path while the real
    # socket stays open to bring the expert's panel.
    wait_for_feedback_socket(page)
    page.evaluate(
        "htmx.trigger(document.querySelector('[data-feedback-socket]'), 'htmx:wsClose', {})"
    )
    page.click("#feedback-button")
    # The button is enabled again once htmx has handled the (late) HTTP answer.
    page.wait_for_selector("#feedback-button:not([disabled])")
    assert held and 'data-state="queued"' in held[0], "the HTTP answer was not the quick check"
    panel = page.locator("#feedback-panel-body")
    assert panel.get_attribute("data-state") == "final"
    assert "expert model" in panel.inner_text()
